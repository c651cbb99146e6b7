package testutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"testing"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// KernelLaneEnv is set to "1" by the full-kernel lane (hack/kernel-lane,
// make test-kernel) for the test binaries it runs inside its VM.
const KernelLaneEnv = "KNIT_KERNEL_LANE"

// InKernelLane reports whether the test process runs in the full-kernel lane.
func InKernelLane() bool { return os.Getenv(KernelLaneEnv) == "1" }

var (
	// ErrUnknownKernelFeature: the feature name is not one KernelFeatures lists.
	ErrUnknownKernelFeature = errors.New("unknown kernel feature")
	// ErrKernelFeatureMissing: the running kernel lacks the feature.
	ErrKernelFeatureMissing = errors.New("kernel lacks feature")
)

// RequireKernelFeature makes a test depend on a kernel feature (a link type,
// qdisc or bridge option, see KernelFeatures) that the development host's
// kernel may lack. If the kernel has it, it returns. If not, the test is
// skipped on the host, and fails in the full-kernel lane (KNIT_KERNEL_LANE=1),
// whose kernel must have everything: a lane run can never pass because a
// feature was missing. An unknown feature name fails the test. It implies
// root (probing needs CAP_NET_ADMIN).
//
// The probe creates a throwaway link in a fresh network namespace, once per
// feature per test process.
func RequireKernelFeature(t testing.TB, feature string) {
	t.Helper()
	requireKernelFeature(t, feature, kernelProbes, InKernelLane())
}

func requireKernelFeature(t testing.TB, feature string, c *probeCache, inLane bool) {
	t.Helper()
	if _, ok := featureProbe(feature); !ok {
		t.Fatalf("RequireKernelFeature(%q): %v (known: %v)", feature, ErrUnknownKernelFeature, KernelFeatures())
	}
	err := c.get(feature)
	switch {
	case err == nil:
		return
	case inLane:
		t.Fatalf("full-kernel lane: kernel feature %s unavailable: %v", feature, err)
	case errors.Is(err, ErrKernelFeatureMissing):
		t.Skipf("kernel lacks %s: this test runs in the full-kernel lane (make test-kernel) [%v]", feature, err)
	default:
		t.Skipf("cannot probe kernel feature %s (%v): this test runs in the full-kernel lane (make test-kernel)", feature, err)
	}
}

// ProbeKernelFeature reports whether the running kernel supports feature:
// nil if it does, an error wrapping ErrKernelFeatureMissing if it lacks it,
// ErrUnknownKernelFeature for a name KernelFeatures doesn't list, or another
// error when the probe itself could not run (e.g. not root). Results are
// cached for the life of the process.
func ProbeKernelFeature(feature string) error {
	if _, ok := featureProbe(feature); !ok {
		return fmt.Errorf("%w %q", ErrUnknownKernelFeature, feature)
	}
	return kernelProbes.get(feature)
}

// KernelFeatures lists the feature names RequireKernelFeature knows.
func KernelFeatures() []string {
	names := []string{
		"veth", "bridge", "bridge-vlan-filtering", "macvlan", "macvtap",
		"ipvlan", "ipvtap", "vlan", "bond", "dummy", "vrf", "vxlan", "geneve",
		"gre", "gretap", "ipip", "ifb", "tbf", "htb", "ingress",
	}
	sort.Strings(names)
	return names
}

// probeCache memoizes one probe per feature. The kernel does not change under
// a running test binary, and a probe costs a netns plus a few netlink round
// trips (noticeable under the lane's emulated CPU), so every test in the
// process shares the results. It is safe for concurrent use (t.Parallel).
type probeCache struct {
	probe func(feature string) error

	mu      sync.Mutex
	entries map[string]*probeEntry
}

type probeEntry struct {
	once sync.Once
	err  error
}

func newProbeCache(probe func(string) error) *probeCache {
	return &probeCache{probe: probe, entries: map[string]*probeEntry{}}
}

func (c *probeCache) get(feature string) error {
	c.mu.Lock()
	e, ok := c.entries[feature]
	if !ok {
		e = &probeEntry{}
		c.entries[feature] = e
	}
	c.mu.Unlock()
	e.once.Do(func() { e.err = c.probe(feature) })
	return e.err
}

// kernelProbes is the package's only mutable global: the per-process probe
// memo described at probeCache (a sync.Once per feature behind a mutex).
var kernelProbes = newProbeCache(probeKernelFeature)

// probeFunc creates a throwaway object of one feature in an empty network
// namespace reached through h (probeKernelFeature deletes it afterwards). It
// must only use h: e.g. netlink's Tuntap creation ioctls in the calling
// thread's namespace, so tun/tap is not probed.
type probeFunc func(h *netlink.Handle) error

func featureProbe(feature string) (probeFunc, bool) {
	switch feature {
	case "veth":
		return func(h *netlink.Handle) error {
			return addLink(h, &netlink.Veth{LinkAttrs: attrs("probe0"), PeerName: "probe1"})
		}, true
	case "bridge":
		return linkProbe(&netlink.Bridge{LinkAttrs: attrs("probe0")}), true
	case "bridge-vlan-filtering":
		return probeBridgeVlanFiltering, true
	case "dummy":
		return linkProbe(&netlink.Dummy{LinkAttrs: attrs("probe0")}), true
	case "bond":
		return linkProbe(netlink.NewLinkBond(attrs("probe0"))), true
	case "vrf":
		return linkProbe(&netlink.Vrf{LinkAttrs: attrs("probe0"), Table: 4242}), true
	case "vxlan":
		return linkProbe(&netlink.Vxlan{LinkAttrs: attrs("probe0"), VxlanId: 42, Port: 4789}), true
	case "geneve":
		return linkProbe(&netlink.Geneve{LinkAttrs: attrs("probe0"), ID: 42, Remote: net.IPv4(192, 0, 2, 1)}), true
	case "gre":
		return linkProbe(&netlink.Gretun{LinkAttrs: attrs("probe0"), Local: net.IPv4(192, 0, 2, 2), Remote: net.IPv4(192, 0, 2, 1)}), true
	case "gretap":
		return linkProbe(&netlink.Gretap{LinkAttrs: attrs("probe0"), Local: net.IPv4(192, 0, 2, 2), Remote: net.IPv4(192, 0, 2, 1)}), true
	case "ipip":
		return linkProbe(&netlink.Iptun{LinkAttrs: attrs("probe0"), Local: net.IPv4(192, 0, 2, 2), Remote: net.IPv4(192, 0, 2, 1)}), true
	case "ifb":
		return linkProbe(&netlink.Ifb{LinkAttrs: attrs("probe0")}), true
	case "macvlan":
		return childProbe(func(p int) netlink.Link {
			return &netlink.Macvlan{LinkAttrs: childAttrs(p), Mode: netlink.MACVLAN_MODE_BRIDGE}
		}), true
	case "macvtap":
		return childProbe(func(p int) netlink.Link {
			return &netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: childAttrs(p), Mode: netlink.MACVLAN_MODE_BRIDGE}}
		}), true
	case "ipvlan":
		return childProbe(func(p int) netlink.Link {
			return &netlink.IPVlan{LinkAttrs: childAttrs(p), Mode: netlink.IPVLAN_MODE_L2}
		}), true
	case "ipvtap":
		return childProbe(func(p int) netlink.Link {
			return &netlink.IPVtap{IPVlan: netlink.IPVlan{LinkAttrs: childAttrs(p), Mode: netlink.IPVLAN_MODE_L2}}
		}), true
	case "vlan":
		return childProbe(func(p int) netlink.Link {
			return &netlink.Vlan{LinkAttrs: childAttrs(p), VlanId: 42}
		}), true
	case "tbf":
		return qdiscProbe(func(p int) netlink.Qdisc {
			return &netlink.Tbf{QdiscAttrs: rootQdisc(p), Rate: 1 << 20, Limit: 1 << 16, Buffer: 1 << 14}
		}), true
	case "htb":
		return qdiscProbe(func(p int) netlink.Qdisc { return netlink.NewHtb(rootQdisc(p)) }), true
	case "ingress":
		return qdiscProbe(func(p int) netlink.Qdisc {
			return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
				LinkIndex: p, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS,
			}}
		}), true
	}
	return nil, false
}

func attrs(name string) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name = name
	return a
}

func childAttrs(parent int) netlink.LinkAttrs {
	a := attrs("probe0")
	a.ParentIndex = parent
	return a
}

func rootQdisc(link int) netlink.QdiscAttrs {
	return netlink.QdiscAttrs{LinkIndex: link, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}
}

// addLink creates l; EOPNOTSUPP (the kernel's answer for an unknown link
// kind or option) means the kernel lacks the feature.
func addLink(h *netlink.Handle, l netlink.Link) error {
	if err := h.LinkAdd(l); err != nil {
		return classify(fmt.Errorf("creating %s link: %w", l.Type(), err))
	}
	return nil
}

func classify(err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%w: %w", ErrKernelFeatureMissing, err)
	}
	return err
}

func linkProbe(l netlink.Link) probeFunc {
	return func(h *netlink.Handle) error { return addLink(h, l) }
}

// parentLink creates a veth pair to stack a child link on (veth rather than
// dummy: dummy is one of the features that may be missing).
func parentLink(h *netlink.Handle) (int, error) {
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs("probep"), PeerName: "probeq"}); err != nil {
		return 0, fmt.Errorf("creating veth parent link: %w", err)
	}
	p, err := h.LinkByName("probep")
	if err != nil {
		return 0, err
	}
	return p.Attrs().Index, nil
}

func childProbe(child func(parent int) netlink.Link) probeFunc {
	return func(h *netlink.Handle) error {
		p, err := parentLink(h)
		if err != nil {
			return err
		}
		return addLink(h, child(p))
	}
}

func qdiscProbe(q func(link int) netlink.Qdisc) probeFunc {
	return func(h *netlink.Handle) error {
		p, err := parentLink(h)
		if err != nil {
			return err
		}
		qd := q(p)
		if err := h.QdiscAdd(qd); err != nil {
			err = fmt.Errorf("adding %s qdisc: %w", qd.Type(), err)
			// An unknown qdisc kind is ENOENT (no such scheduler module).
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("%w: %w", ErrKernelFeatureMissing, err)
			}
			return err
		}
		return nil
	}
}

func probeBridgeVlanFiltering(h *netlink.Handle) error {
	on := true
	if err := addLink(h, &netlink.Bridge{LinkAttrs: attrs("probe0"), VlanFiltering: &on}); err != nil {
		return err
	}
	l, err := h.LinkByName("probe0")
	if err != nil {
		return err
	}
	if br, ok := l.(*netlink.Bridge); !ok || br.VlanFiltering == nil || !*br.VlanFiltering {
		return fmt.Errorf("%w: bridge created but vlan_filtering reads back off", ErrKernelFeatureMissing)
	}
	return nil
}

// probeKernelFeature runs a feature's probe in a new, empty network namespace
// and removes what it created.
func probeKernelFeature(feature string) error {
	probe, ok := featureProbe(feature)
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownKernelFeature, feature)
	}
	if os.Geteuid() != 0 {
		return errors.New("probing needs root")
	}
	h, ns, err := newProbeNS()
	if err != nil {
		return err
	}
	defer ns.Close()
	defer h.Close()
	perr := probe(h)
	links, err := nlsafe.LinkList(h)
	if err == nil {
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				_ = h.LinkDel(l) // the namespace's teardown removes leftovers anyway
			}
		}
	}
	return perr
}

// newProbeNS creates an empty network namespace and a netlink handle in it,
// on a locked OS thread that is put back into its original namespace (or, if
// that fails, left locked so the runtime discards it).
func newProbeNS() (*netlink.Handle, vns.NsHandle, error) {
	type res struct {
		h   *netlink.Handle
		ns  vns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: fmt.Errorf("probe netns: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := vns.New()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: fmt.Errorf("probe netns: %w", err)}
			return
		}
		if err := vns.Set(orig); err != nil {
			ns.Close()
			ch <- res{err: fmt.Errorf("probe netns: restoring thread: %w", err)} // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		if err != nil {
			ns.Close()
			ch <- res{err: fmt.Errorf("probe netns: netlink handle: %w", err)}
			return
		}
		ch <- res{h: h, ns: ns}
	}()
	r := <-ch
	return r.h, r.ns, r.err
}
