package vrf_test

// VRFs are missing from the development host's kernel: these tests run in
// the full-kernel lane (make test-kernel), in process.

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/builtin"
)

// attach builds what a main plugin leaves behind: ifName in cont, a veth
// to a fresh peer namespace, subnet 10.3.N.0/24 (.2 in the container, .1
// at the peer), fd00:N::2/64, a route to 10.30.N.0/24 via the peer and the
// prevResult describing it.
func attach(t *testing.T, cont *testutil.NS, ifName string, n int) (*testutil.NS, *current.Result) {
	t.Helper()
	peer := testutil.NewNS(t)
	testutil.Veth(t, cont, ifName, peer, "p0")
	attachtest.AddAddr(t, peer, "p0", fmt.Sprintf("10.3.%d.1/24", n))
	attachtest.AddAddr(t, cont, ifName, fmt.Sprintf("10.3.%d.2/24", n))
	l := attachtest.Link(t, cont, ifName)
	v6 := &netlink.Addr{IPNet: mustCIDR(t, fmt.Sprintf("fd00:%d::2/64", n)), Flags: unix.IFA_F_NODAD}
	if err := cont.H.AddrAdd(l, v6); err != nil {
		t.Fatal(err)
	}
	dst := mustCIDR(t, fmt.Sprintf("10.30.%d.0/24", n))
	if err := cont.H.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP(fmt.Sprintf("10.3.%d.1", n))}); err != nil {
		t.Fatal(err)
	}
	res := attachtest.IPResult(t, fmt.Sprintf("10.3.%d.2/24", n), fmt.Sprintf("10.3.%d.1", n), fmt.Sprintf("10.30.%d.0/24,10.3.%d.1", n, n))
	res.Interfaces = []*current.Interface{{Name: ifName, Mac: l.Attrs().HardwareAddr.String(), Sandbox: cont.Path()}}
	res.IPs[0].Interface = current.Int(0)
	return peer, res
}

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return n
}

func call(t *testing.T, cmd cni.Command, netnsPath, ifName string, config []byte) (types.Result, error) {
	t.Helper()
	req := &cni.Request{Command: cmd, ContainerID: "c1", Netns: netnsPath, IfName: ifName, Config: config}
	return testutil.Call(context.Background(), builtin.Registry(), "vrf", req)
}

func vrfOf(t *testing.T, ns *testutil.NS, name string) *netlink.Vrf {
	t.Helper()
	v, ok := attachtest.Link(t, ns, name).(*netlink.Vrf)
	if !ok {
		t.Fatalf("%s is not a VRF", name)
	}
	return v
}

// routeIn reports whether a route to dst exists in table.
func routeIn(t *testing.T, ns *testutil.NS, dst string, table int) bool {
	t.Helper()
	rs, err := nlsafe.RouteListFiltered(ns.H, netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == dst {
			return true
		}
	}
	return false
}

func TestAddCheckDelEveryVersion(t *testing.T) {
	testutil.RequireKernelFeature(t, "vrf")
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			cont := testutil.NewNS(t)
			_, prev := attach(t, cont, "net1", 1)
			conf := attachtest.Conf(t, v, `"type":"vrf","vrfname":"blue"`, prev)
			r, err := call(t, cni.CmdAdd, cont.Path(), "net1", conf)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if got, want := attachtest.Printed(t, r, v), attachtest.Printed(t, prev, v); !reflect.DeepEqual(got, want) {
				t.Errorf("result %v, want prevResult %v", got, want)
			}
			blue := vrfOf(t, cont, "blue")
			if blue.Table != 1 || blue.Flags&net.FlagUp == 0 {
				t.Errorf("VRF table %d flags %v, want table 1 and up", blue.Table, blue.Flags)
			}
			net1 := attachtest.Link(t, cont, "net1")
			if net1.Attrs().MasterIndex != blue.Index {
				t.Fatal("net1 is not in the VRF")
			}
			attachtest.HasAddr(t, cont, "net1", "fd00:1::2/64")
			if !routeIn(t, cont, "10.30.1.0/24", 1) || routeIn(t, cont, "10.30.1.0/24", unix.RT_TABLE_MAIN) {
				t.Error("the gatewayed route did not move into table 1")
			}
			if !routeIn(t, cont, "10.3.1.0/24", 1) {
				t.Error("no connected route in table 1")
			}
			// Traffic: through the VRF the peer answers; the main table no
			// longer knows the subnet.
			if err := testutil.Ping(cont, "10.3.1.1", "blue"); err != nil {
				t.Errorf("ping through the VRF: %v", err)
			}
			if err := testutil.Ping(cont, "10.3.1.1", ""); err == nil {
				t.Error("the main table still reaches the VRF's subnet")
			}
			if v >= "0.4.0" {
				if _, err := call(t, cni.CmdCheck, cont.Path(), "net1", conf); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			for range 2 {
				if _, err := call(t, cni.CmdDel, cont.Path(), "net1", conf); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			attachtest.NoLink(t, cont, "blue")
			if attachtest.Link(t, cont, "net1").Attrs().MasterIndex != 0 {
				t.Error("net1 still has a master")
			}
		})
	}
}

// The VRF lives while it has members; two VRFs keep overlapping subnets
// apart.
func TestSharedAndOverlappingVRFs(t *testing.T) {
	testutil.RequireKernelFeature(t, "vrf")
	cont := testutil.NewNS(t)
	_, p1 := attach(t, cont, "net1", 1)
	_, p2 := attach(t, cont, "net2", 2)
	blue1 := attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue"`, p1)
	blue2 := attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue"`, p2)
	for _, c := range []struct {
		ifName string
		conf   []byte
	}{{"net1", blue1}, {"net2", blue2}} {
		if _, err := call(t, cni.CmdAdd, cont.Path(), c.ifName, c.conf); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := call(t, cni.CmdDel, cont.Path(), "net1", blue1); err != nil {
		t.Fatal(err)
	}
	if vrfOf(t, cont, "blue").Table != 1 {
		t.Error("VRF changed while it still had a member")
	}
	if _, err := call(t, cni.CmdDel, cont.Path(), "net2", blue2); err != nil {
		t.Fatal(err)
	}
	attachtest.NoLink(t, cont, "blue")

	// Same subnet twice, in two VRFs.
	other := testutil.NewNS(t)
	peerA, pa := attach(t, other, "neta", 5)
	peerB := testutil.NewNS(t)
	testutil.Veth(t, other, "netb", peerB, "p0")
	attachtest.AddAddr(t, peerB, "p0", "10.3.5.1/24")
	_ = peerA
	if _, err := call(t, cni.CmdAdd, other.Path(), "neta", attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"red"`, pa)); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, cni.CmdAdd, other.Path(), "netb", attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"green"`, pa)); err != nil {
		t.Fatal(err)
	}
	attachtest.AddAddr(t, other, "netb", "10.3.5.2/24")
	if red, green := vrfOf(t, other, "red"), vrfOf(t, other, "green"); red.Table == green.Table {
		t.Fatalf("two VRFs share table %d", red.Table)
	}
	for _, vrf := range []string{"red", "green"} {
		if err := testutil.Ping(other, "10.3.5.1", vrf); err != nil {
			t.Errorf("ping in VRF %s: %v", vrf, err)
		}
	}
}

func TestTables(t *testing.T) {
	testutil.RequireKernelFeature(t, "vrf")
	cont := testutil.NewNS(t)
	_, prev := attach(t, cont, "net1", 1)
	if _, err := call(t, cni.CmdAdd, cont.Path(), "net1", attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue","table":100`, prev)); err != nil {
		t.Fatal(err)
	}
	if tb := vrfOf(t, cont, "blue").Table; tb != 100 {
		t.Errorf("table %d, want 100", tb)
	}
	if !routeIn(t, cont, "10.30.1.0/24", 100) {
		t.Error("route not in table 100")
	}
	// The same VRF with another table is refused, and nothing changes.
	_, prev2 := attach(t, cont, "net2", 2)
	_, err := call(t, cni.CmdAdd, cont.Path(), "net2", attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue","table":200`, prev2))
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "table")
	if attachtest.Link(t, cont, "net2").Attrs().MasterIndex != 0 {
		t.Error("refused ADD enslaved net2")
	}
	// A table already holding routes is not picked.
	other := testutil.NewNS(t)
	_, p3 := attach(t, other, "net1", 3)
	lo := attachtest.Link(t, other, "lo")
	if err := other.H.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: mustCIDR(t, "10.99.0.0/16"), Table: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, cni.CmdAdd, other.Path(), "net1", attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue"`, p3)); err != nil {
		t.Fatal(err)
	}
	if tb := vrfOf(t, other, "blue").Table; tb != 2 {
		t.Errorf("picked table %d, want 2 (1 holds routes)", tb)
	}
}

func TestBadInput(t *testing.T) {
	testutil.RequireKernelFeature(t, "vrf")
	cont := testutil.NewNS(t)
	_, prev := attach(t, cont, "net1", 1)
	for name, c := range map[string]struct {
		conf []byte
		word string
	}{
		"no vrfname":  {attachtest.Conf(t, "1.0.0", `"type":"vrf"`, prev), "vrfname"},
		"bad name":    {attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"a/b"`, prev), "vrfname"},
		"no prev":     {attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue"`, nil), "prevResult"},
		"not a VRF":   {attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"lo"`, prev), "vrfname"},
		"table type":  {attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue","table":"x"`, prev), "table"},
		"table range": {attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue","table":-1`, prev), "table"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := call(t, cni.CmdAdd, cont.Path(), "net1", c.conf)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if code := attachtest.Code(err); code != types.ErrInvalidNetworkConfig && code != types.ErrDecodingFailure {
				t.Errorf("code %d (%v)", code, err)
			}
			attachtest.NoLink(t, cont, "blue")
		})
	}
}

// An interface that already has a master is refused; a VRF created for it
// is removed again, an existing one is left as it was. DEL does not take an
// interface off a master that is not the VRF.
func TestFailureRollback(t *testing.T) {
	testutil.RequireKernelFeature(t, "vrf")
	cont := testutil.NewNS(t)
	_, prev := attach(t, cont, "net1", 1)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := cont.H.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := cont.H.LinkSetMaster(attachtest.Link(t, cont, "net1"), br); err != nil {
		t.Fatal(err)
	}
	conf := attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue"`, prev)
	if _, err := call(t, cni.CmdAdd, cont.Path(), "net1", conf); err == nil {
		t.Fatal("ADD of an enslaved interface succeeded")
	}
	attachtest.NoLink(t, cont, "blue")
	if _, err := call(t, cni.CmdAdd, cont.Path(), "nope", conf); err == nil {
		t.Error("ADD for a missing interface succeeded")
	}
	attachtest.NoLink(t, cont, "blue")

	_, prev2 := attach(t, cont, "net2", 2)
	conf2 := attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue"`, prev2)
	if _, err := call(t, cni.CmdAdd, cont.Path(), "net2", conf2); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, cni.CmdAdd, cont.Path(), "net1", conf); err == nil {
		t.Fatal("ADD of an enslaved interface succeeded")
	}
	blue := vrfOf(t, cont, "blue")
	if _, err := call(t, cni.CmdDel, cont.Path(), "net1", conf); err != nil {
		t.Fatal(err)
	}
	if attachtest.Link(t, cont, "net1").Attrs().MasterIndex != attachtest.Link(t, cont, "br0").Attrs().Index {
		t.Error("DEL took net1 off its bridge")
	}
	if attachtest.Link(t, cont, "net2").Attrs().MasterIndex != blue.Index {
		t.Error("the VRF lost its member")
	}
}

func TestDelWithoutNamespace(t *testing.T) {
	conf := []byte(`{"cniVersion":"1.0.0","name":"n","type":"vrf","vrfname":"blue"}`)
	for _, p := range []string{"", "/var/run/netns/knit-gone"} {
		if _, err := call(t, cni.CmdDel, p, "net1", conf); err != nil {
			t.Errorf("DEL with netns %q: %v", p, err)
		}
	}
}

func TestCheckDetectsDrift(t *testing.T) {
	testutil.RequireKernelFeature(t, "vrf")
	cont := testutil.NewNS(t)
	_, prev := attach(t, cont, "net1", 1)
	conf := attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue","table":7`, prev)
	if _, err := call(t, cni.CmdAdd, cont.Path(), "net1", conf); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, cni.CmdCheck, cont.Path(), "net1", conf); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if _, err := call(t, cni.CmdCheck, cont.Path(), "net1", attachtest.Conf(t, "1.0.0", `"type":"vrf","vrfname":"blue","table":8`, prev)); err == nil {
		t.Error("CHECK passed with another table")
	}
	if err := cont.H.LinkSetNoMaster(attachtest.Link(t, cont, "net1")); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, cni.CmdCheck, cont.Path(), "net1", conf); err == nil {
		t.Error("CHECK passed with net1 out of the VRF")
	}
}
