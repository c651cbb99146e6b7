// Package chaintest builds the state a main plugin (bridge, ptp) would leave
// behind, so chained plugins (tuning, bandwidth, sbr) can be tested without
// depending on those plugins: a veth pair between a "host" and a
// "container" test namespace, addresses on both ends, and the prevResult
// describing them in any spec version.
package chaintest

import (
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/testutil"
)

// Attachment is one veth attachment: HostIf in Host, ContIf in Cont.
type Attachment struct {
	Host, Cont     *testutil.NS
	HostIf, ContIf string
	HostAddr       *net.IPNet // gateway side, on HostIf
	ContAddr       *net.IPNet // on ContIf
	// Result is the prevResult a ptp-like main plugin would have returned:
	// interfaces [host veth, container veth], the container address with
	// the host address as gateway, a default route.
	Result *current.Result
}

// VethOpts configures NewVeth. Zero values pick defaults.
type VethOpts struct {
	Host, Cont *testutil.NS // created when nil
	HostIf     string       // default "hveth0"
	ContIf     string       // default "eth0"
	HostAddr   string       // default "10.77.0.1/24"
	ContAddr   string       // default "10.77.0.2/24"
	// NoDefaultRoute leaves the default route via HostAddr out of the
	// container and of Result.
	NoDefaultRoute bool
}

// NewVeth creates the attachment. Everything lives in test namespaces and
// disappears with them.
func NewVeth(t testing.TB, o VethOpts) *Attachment {
	t.Helper()
	a := &Attachment{Host: o.Host, Cont: o.Cont, HostIf: or(o.HostIf, "hveth0"), ContIf: or(o.ContIf, "eth0")}
	if a.Host == nil {
		a.Host = testutil.NewNS(t)
	}
	if a.Cont == nil {
		a.Cont = testutil.NewNS(t)
	}
	a.HostAddr = mustCIDR(t, or(o.HostAddr, "10.77.0.1/24"))
	a.ContAddr = mustCIDR(t, or(o.ContAddr, "10.77.0.2/24"))
	Veth(t, a.Host, a.HostIf, a.Cont, a.ContIf)
	AddAddr(t, a.Host, a.HostIf, a.HostAddr)
	AddAddr(t, a.Cont, a.ContIf, a.ContAddr)
	hl := LinkByName(t, a.Host, a.HostIf)
	cl := LinkByName(t, a.Cont, a.ContIf)
	a.Result = &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: a.HostIf, Mac: hl.Attrs().HardwareAddr.String()},
			{Name: a.ContIf, Mac: cl.Attrs().HardwareAddr.String(), Sandbox: a.Cont.Path()},
		},
		IPs: []*current.IPConfig{{Interface: current.Int(1), Address: *a.ContAddr, Gateway: a.HostAddr.IP}},
	}
	if !o.NoDefaultRoute {
		dst := defaultDst(a.ContAddr.IP)
		r := &netlink.Route{LinkIndex: cl.Attrs().Index, Dst: dst, Gw: a.HostAddr.IP}
		if err := a.Cont.H.RouteAdd(r); err != nil {
			t.Fatalf("default route in container: %v", err)
		}
		a.Result.Routes = []*types.Route{{Dst: *dst, GW: a.HostAddr.IP}}
	}
	return a
}

func defaultDst(ip net.IP) *net.IPNet {
	if ip.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func mustCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatalf("bad CIDR %q: %v", s, err)
	}
	n.IP = ip
	return n
}

// Veth is testutil.Veth that also waits until both ends are
// operationally up: until the kernel's link watcher (which runs at most
// once a second) has activated a new link, it drops what is sent on it.
func Veth(t testing.TB, ns1 *testutil.NS, a string, ns2 *testutil.NS, b string) {
	t.Helper()
	testutil.Veth(t, ns1, a, ns2, b)
	WaitUp(t, ns1, a)
	WaitUp(t, ns2, b)
}

// WaitUp polls until the link is operationally up (5 s at most).
func WaitUp(t testing.TB, ns *testutil.NS, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := LinkByName(t, ns, name)
		if l.Attrs().OperState == netlink.OperUp {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not up after 5 s (state %s)", name, l.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond) // polling the link state
	}
}

// AddAddr adds addr to the link named ifName in ns, without DAD.
func AddAddr(t testing.TB, ns *testutil.NS, ifName string, addr *net.IPNet) {
	t.Helper()
	l := LinkByName(t, ns, ifName)
	a := &netlink.Addr{IPNet: addr}
	if addr.IP.To4() == nil {
		a.Flags = 0x80 // IFA_F_NODAD: the address is usable at once
	}
	if err := ns.H.AddrAdd(l, a); err != nil {
		t.Fatalf("adding %s to %s: %v", addr, ifName, err)
	}
}

// LinkByName looks a link up in ns or fails the test.
func LinkByName(t testing.TB, ns *testutil.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.H.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

// Conf returns body (a JSON object without cniVersion/name) with
// cniVersion, name and, when prev is not nil, prevResult converted to
// version injected: the config a runtime hands a chained plugin.
func Conf(t testing.TB, version, name, body string, prev types.Result) []byte {
	t.Helper()
	m := map[string]any{}
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("test config %s: %v", body, err)
	}
	m["cniVersion"] = version
	m["name"] = name
	if prev != nil {
		pr, err := prev.GetAsVersion(version)
		if err != nil {
			t.Fatalf("prevResult as %s: %v", version, err)
		}
		raw, err := json.Marshal(pr)
		if err != nil {
			t.Fatal(err)
		}
		m["prevResult"] = json.RawMessage(raw)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
