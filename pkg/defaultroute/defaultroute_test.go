package defaultroute

import (
	"net"
	"sort"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

func addr(t *testing.T, ns *testutil.NS, ifname, cidr string) {
	t.Helper()
	l, err := ns.H.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.H.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
}

func defaults(t *testing.T, ns *testutil.NS, fam int) []string {
	t.Helper()
	rs, err := nlsafe.RouteList(ns.H, nil, fam)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if isDefault(r) {
			l, _ := ns.H.LinkByIndex(r.LinkIndex)
			out = append(out, l.Attrs().Name+"/"+r.Gw.String())
		}
	}
	sort.Strings(out)
	return out
}

func TestApply(t *testing.T) {
	testutil.RequireRoot(t)
	pod, peer := testutil.NewNS(t), testutil.NewNS(t)
	testutil.Veth(t, pod, "eth0", peer, "p0")
	testutil.Veth(t, pod, "net1", peer, "p1")
	addr(t, pod, "eth0", "10.244.0.5/24")
	addr(t, pod, "net1", "10.10.1.5/24")
	eth0, _ := pod.H.LinkByName("eth0")
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	if err := pod.H.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: all, Gw: net.ParseIP("10.244.0.1")}); err != nil {
		t.Fatal(err)
	}
	// The cluster interface loses its IPv4 default route...
	if err := Apply(pod.Path(), "eth0", nil, true, false); err != nil {
		t.Fatal(err)
	}
	if d := defaults(t, pod, netlink.FAMILY_V4); len(d) != 0 {
		t.Fatalf("defaults after removal %v", d)
	}
	// ...and the requesting one gets it.
	if err := Apply(pod.Path(), "net1", []net.IP{net.ParseIP("10.10.1.1")}, false, false); err != nil {
		t.Fatal(err)
	}
	if d := defaults(t, pod, netlink.FAMILY_V4); len(d) != 1 || d[0] != "net1/10.10.1.1" {
		t.Fatalf("defaults %v", d)
	}
	// Applying again is idempotent.
	if err := Apply(pod.Path(), "net1", []net.IP{net.ParseIP("10.10.1.1")}, false, false); err != nil {
		t.Fatal(err)
	}
	if err := Apply(pod.Path(), "eth0", nil, false, true); err != nil { // no IPv6 routes: nothing to do
		t.Fatal(err)
	}
	if d := defaults(t, pod, netlink.FAMILY_V4); len(d) != 1 {
		t.Fatalf("defaults %v", d)
	}
	if got, err := Installed(pod.Path()); err != nil || len(got) != 1 || len(got["net1"]) != 1 || got["net1"][0] != "10.10.1.1" {
		t.Errorf("Installed: %v %v", got, err)
	}
	if err := Apply(pod.Path(), "nope", nil, true, false); err == nil {
		t.Error("missing interface accepted")
	}
	if err := Apply(pod.Path(), "net1", []net.IP{net.ParseIP("192.0.2.1")}, false, false); err == nil {
		t.Error("unreachable gateway accepted")
	}
	if v4, v6 := Families([]net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("fd00::1")}); !v4 || !v6 {
		t.Error("families")
	}
}
