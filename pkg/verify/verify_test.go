package verify_test

import (
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/pkg/verify"
)

func ipnet(s string) net.IPNet {
	ip, n, _ := net.ParseCIDR(s)
	n.IP = ip
	return *n
}

func TestAddrsAndRoutes(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	testutil.Veth(t, ns, "eth0", ns, "peer0")
	l, err := ns.H.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.ParseAddr("10.5.0.2/24")
	if err := ns.H.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	def := ipnet("0.0.0.0/0")
	if err := ns.H.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &def, Gw: net.ParseIP("10.5.0.1")}); err != nil {
		t.Fatal(err)
	}
	ifs := []*current.Interface{{Name: "other"}, {Name: "eth0"}}
	ips := []*current.IPConfig{
		{Address: ipnet("10.5.0.2/24"), Interface: current.Int(1)},
		{Address: ipnet("10.9.9.9/24"), Interface: current.Int(0)}, // another interface's: ignored
	}
	if err := verify.Addrs(ns.H, l, ifs, ips); err != nil {
		t.Fatalf("Addrs: %v", err)
	}
	if err := verify.Addrs(ns.H, l, ifs, []*current.IPConfig{{Address: ipnet("10.5.0.3/24")}}); err == nil {
		t.Fatal("Addrs passed for an address that is not there")
	}
	if err := verify.Addrs(ns.H, l, ifs, []*current.IPConfig{{Address: ipnet("10.5.0.2/25")}}); err == nil {
		t.Fatal("Addrs passed with the wrong prefix length")
	}
	good := []*types.Route{{Dst: def, GW: net.ParseIP("10.5.0.1")}, {Dst: ipnet("10.5.0.0/24")}}
	if err := verify.Routes(ns.H, good); err != nil {
		t.Fatalf("Routes: %v", err)
	}
	for _, bad := range []*types.Route{{Dst: def, GW: net.ParseIP("10.5.0.9")}, {Dst: ipnet("10.6.0.0/16")}} {
		if err := verify.Routes(ns.H, []*types.Route{bad}); err == nil {
			t.Fatalf("Routes passed for missing %v", bad)
		}
	}
}
