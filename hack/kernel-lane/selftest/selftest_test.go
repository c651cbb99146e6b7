// Package selftest is the full-kernel lane's own end-to-end check: it creates
// the link types the development host's kernel lacks, which only pass inside
// the lane's VM (on the host they skip via testutil.RequireKernelFeature).
//
//	CGO_ENABLED=0 go test -c -o /tmp/selftest.test ./hack/kernel-lane/selftest
//	hack/kernel-lane/run.sh -- /tmp/selftest.test -test.v
//	hack/kernel-lane/run.sh -e KNIT_LANE_SELFTEST_FAIL=1 -- /tmp/selftest.test -test.run Fail   # must FAIL
package selftest

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// newNS returns a netlink handle in a fresh network namespace, closed at
// cleanup (the namespace goes away with its last reference).
func newNS(t *testing.T) *netlink.Handle {
	t.Helper()
	type res struct {
		ns  vns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{err: err}
			return
		}
		defer orig.Close()
		ns, err := vns.New()
		if err == nil {
			if serr := vns.Set(orig); serr != nil {
				ch <- res{err: serr} // thread stays locked and is discarded
				return
			}
		}
		runtime.UnlockOSThread()
		ch <- res{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("new netns: %v", r.err)
	}
	h, err := netlink.NewHandleAt(r.ns, unix.NETLINK_ROUTE)
	if err != nil {
		r.ns.Close()
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(func() { h.Close(); r.ns.Close() })
	return h
}

func add(t *testing.T, h *netlink.Handle, l netlink.Link) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(l); err != nil {
		t.Fatalf("add %s link %s: %v", l.Type(), l.Attrs().Name, err)
	}
	got, err := h.LinkByName(l.Attrs().Name)
	if err != nil {
		t.Fatalf("%s link %s not found after creation: %v", l.Type(), l.Attrs().Name, err)
	}
	if got.Type() != l.Type() {
		t.Fatalf("link %s has type %q, want %q", l.Attrs().Name, got.Type(), l.Type())
	}
	if err := h.LinkSetUp(got); err != nil {
		t.Fatalf("set %s up: %v", l.Attrs().Name, err)
	}
	return got
}

func attrs(name string, parent int) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name = name
	a.ParentIndex = parent
	return a
}

func TestLaneEnv(t *testing.T) {
	if !testutil.InKernelLane() {
		t.Skip("not in the full-kernel lane")
	}
	if os.Geteuid() != 0 {
		t.Fatal("lane tests must run as root")
	}
	for _, p := range []string{"/tmp", "/run/netns", "/var/run/netns", "/proc/sys/net/ipv4/ip_forward", "/etc/hosts", "/dev/net/tun"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("guest setup: %v", err)
		}
	}
	if err := os.WriteFile(os.TempDir()+"/lane-write-check", []byte("x"), 0o644); err != nil {
		t.Errorf("writable TMPDIR: %v", err)
	}
}

func TestLaneLinks(t *testing.T) {
	testutil.RequireRoot(t)
	for _, f := range []string{"dummy", "ipvlan", "vlan", "bond", "vrf", "bridge-vlan-filtering"} {
		testutil.RequireKernelFeature(t, f)
	}
	h := newNS(t)

	parent := add(t, h, &netlink.Dummy{LinkAttrs: attrs("eth0", 0)})
	idx := parent.Attrs().Index
	add(t, h, &netlink.IPVlan{LinkAttrs: attrs("ipvl0", idx), Mode: netlink.IPVLAN_MODE_L2})
	add(t, h, &netlink.Vlan{LinkAttrs: attrs("eth0.100", idx), VlanId: 100})

	bond := netlink.NewLinkBond(attrs("bond0", 0))
	bond.Mode = netlink.BOND_MODE_ACTIVE_BACKUP
	b := add(t, h, bond)
	slave := add(t, h, &netlink.Dummy{LinkAttrs: attrs("eth1", 0)})
	if err := h.LinkSetDown(slave); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMasterByIndex(slave, b.Attrs().Index); err != nil {
		t.Fatalf("enslave eth1 to bond0: %v", err)
	}

	v := add(t, h, &netlink.Vrf{LinkAttrs: attrs("vrf-blue", 0), Table: 1001})
	if got := v.(*netlink.Vrf).Table; got != 1001 {
		t.Errorf("vrf table = %d, want 1001", got)
	}

	on := true
	br := add(t, h, &netlink.Bridge{LinkAttrs: attrs("br0", 0), VlanFiltering: &on})
	port := add(t, h, &netlink.Dummy{LinkAttrs: attrs("eth2", 0)})
	if err := h.LinkSetMaster(port, br); err != nil {
		t.Fatalf("bridge port: %v", err)
	}
	if err := h.BridgeVlanAdd(port, 42, false, false, false, true); err != nil {
		t.Fatalf("bridge vlan add: %v", err)
	}
	vl, err := nlsafe.BridgeVlanList(h)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, info := range vl[int32(port.Attrs().Index)] {
		found = found || info.Vid == 42
	}
	if !found {
		t.Errorf("vid 42 not on eth2: %v", vl)
	}

	links, err := nlsafe.LinkList(h)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, l := range links {
		types[l.Attrs().Name] = l.Type()
	}
	want := map[string]string{
		"eth0": "dummy", "ipvl0": "ipvlan", "eth0.100": "vlan", "bond0": "bond",
		"eth1": "dummy", "vrf-blue": "vrf", "br0": "bridge", "eth2": "dummy",
	}
	for name, typ := range want {
		if types[name] != typ {
			t.Errorf("link %s: type %q, want %q (all: %v)", name, types[name], typ, types)
		}
	}
}

// TestLaneFail fails on purpose when KNIT_LANE_SELFTEST_FAIL=1, to check
// that the lane reports a failing test binary as a failure.
func TestLaneFail(t *testing.T) {
	if os.Getenv("KNIT_LANE_SELFTEST_FAIL") != "1" {
		t.Skip("set KNIT_LANE_SELFTEST_FAIL=1 to check the lane reports failures")
	}
	t.Fatal("deliberate failure (KNIT_LANE_SELFTEST_FAIL=1)")
}
