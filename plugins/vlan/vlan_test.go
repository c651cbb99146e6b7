package vlan_test

// 802.1Q is missing from the development host's kernel: these tests run in
// the full-kernel lane (make test-kernel), in process, with knit's static
// IPAM.

import (
	"context"
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/builtin"
	"github.com/knit-cni/knit/plugins/vlan"
)

// env: trunk m0 in a scratch host namespace, wired to p0 in a peer
// namespace whose VLAN 42 sub-interface holds 10.7.42.1/24.
type env struct {
	host, peer *testutil.NS
	reg        cni.Registry
	ipam       *attachtest.FakeIPAM
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireKernelFeature(t, "vlan")
	e := &env{host: testutil.NewNS(t), peer: testutil.NewNS(t), ipam: &attachtest.FakeIPAM{}}
	testutil.Veth(t, e.host, "m0", e.peer, "p0")
	p0 := attachtest.Link(t, e.peer, "p0")
	if err := e.peer.H.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "p0.42", ParentIndex: p0.Attrs().Index}, VlanId: 42}); err != nil {
		t.Fatal(err)
	}
	attachtest.AddAddr(t, e.peer, "p0.42", "10.7.42.1/24")
	e.reg = builtin.Registry()
	e.reg["vlan"] = vlan.Plugin{HostNS: e.host.Path()}
	e.reg["fake-ipam"] = e.ipam
	return e
}

func (e *env) call(t *testing.T, cmd cni.Command, cont *testutil.NS, config []byte) (*current.Result, error) {
	t.Helper()
	path := ""
	if cont != nil {
		path = cont.Path()
	}
	req := &cni.Request{Command: cmd, ContainerID: "c1", Netns: path, IfName: "net1", Config: config}
	res, err := testutil.Call(context.Background(), e.reg, "vlan", req)
	if err != nil || res == nil {
		return nil, err
	}
	return attachtest.ResultOf(t, res), nil
}

func body(id int, extra string) string {
	s := fmt.Sprintf(`"type":"vlan","master":"m0","vlanId":%d`, id)
	if extra != "" {
		s += "," + extra
	}
	return s
}

func TestAddCheckDelEveryVersion(t *testing.T) {
	e := newEnv(t)
	for i, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			cont := testutil.NewNS(t)
			addr := fmt.Sprintf("10.7.42.%d/24", 10+i)
			conf := attachtest.Conf(t, v, body(42, `"mtu":1400,`+attachtest.Static(addr, "10.7.42.1")), nil)
			res, err := e.call(t, cni.CmdAdd, cont, conf)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			ips := attachtest.Printed(t, res, v)["ips"].([]any)
			if _, has := ips[0].(map[string]any)["version"]; has != (v < "1.0.0") {
				t.Errorf("ips[].version present=%v in %s", has, v)
			}
			l := attachtest.Link(t, cont, "net1")
			vl, ok := l.(*netlink.Vlan)
			if !ok || vl.VlanId != 42 || vl.MTU != 1400 {
				t.Fatalf("net1 is %T %+v, want VLAN 42 MTU 1400", l, l)
			}
			if vl.ParentIndex != attachtest.Link(t, e.host, "m0").Attrs().Index {
				t.Error("vlan is not on m0")
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Mac != l.Attrs().HardwareAddr.String() || *res.IPs[0].Interface != 0 {
				t.Errorf("result %+v", res)
			}
			if err := testutil.Ping(cont, "10.7.42.1", ""); err != nil {
				t.Errorf("tagged traffic does not reach the peer's VLAN 42: %v", err)
			}
			if v >= "0.4.0" {
				if _, err := e.call(t, cni.CmdCheck, cont, attachtest.WithPrev(t, conf, res)); err != nil {
					t.Errorf("CHECK: %v", err)
				}
				other := attachtest.WithPrev(t, attachtest.Conf(t, v, body(43, `"mtu":1400,`+attachtest.Static(addr, "10.7.42.1")), nil), res)
				if _, err := e.call(t, cni.CmdCheck, cont, other); err == nil {
					t.Error("CHECK passed with another VLAN ID")
				}
			}
			for range 2 {
				if _, err := e.call(t, cni.CmdDel, cont, attachtest.WithPrev(t, conf, res)); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			attachtest.NoLink(t, cont, "net1")
		})
	}
}

// The wrong tag does not reach the peer's VLAN 42.
func TestOtherVLANIsolated(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	if _, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(43, attachtest.Static("10.7.42.20/24", "")), nil)); err != nil {
		t.Fatal(err)
	}
	if err := testutil.Ping(cont, "10.7.42.1", ""); err == nil {
		t.Error("VLAN 43 reached VLAN 42")
	}
}

func TestBadConfig(t *testing.T) {
	e := newEnv(t)
	ipam := attachtest.Static("10.7.42.5/24", "")
	for name, c := range map[string]struct {
		body  string
		words []string
	}{
		"no master":      {`"type":"vlan","vlanId":42,` + ipam, []string{"master"}},
		"missing master": {`"type":"vlan","master":"nope","vlanId":42,` + ipam, []string{`master: link "nope" not found`}},
		"no vlanId":      {`"type":"vlan","master":"m0",` + ipam, []string{"vlanId"}},
		"vlanId 4095":    {body(4095, ipam), []string{"vlanId"}},
		"vlanId -1":      {body(-1, ipam), []string{"vlanId"}},
		"mtu too big":    {body(42, `"mtu":1600,`+ipam), []string{"mtu"}},
		"no ipam":        {body(42, ""), []string{"ipam"}},
	} {
		t.Run(name, func(t *testing.T) {
			cont := testutil.NewNS(t)
			_, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", c.body, nil))
			attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, c.words...)
			if l := attachtest.Links(t, cont); len(l) != 0 {
				t.Errorf("rejected ADD left %v", l)
			}
			if l := attachtest.Links(t, e.host); len(l) != 1 {
				t.Errorf("host has %v, want only m0", l)
			}
		})
	}
}

// VLAN 0 and 4094 are the edges of the valid range.
func TestVLANIDEdges(t *testing.T) {
	e := newEnv(t)
	for _, id := range []int{0, 4094} {
		cont := testutil.NewNS(t)
		if _, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(id, attachtest.Static("10.7.0.5/24", "")), nil)); err != nil {
			t.Fatalf("vlanId %d: %v", id, err)
		}
		if got := attachtest.Link(t, cont, "net1").(*netlink.Vlan).VlanId; got != id {
			t.Errorf("VLAN ID %d, want %d", got, id)
		}
	}
}

func TestFailureRollback(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	e.ipam.Result = attachtest.IPResult(t, "10.7.42.50/24", "", "192.168.0.0/16,172.31.9.9")
	if _, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(42, `"ipam":{"type":"fake-ipam"}`), nil)); err == nil {
		t.Fatal("ADD with an unreachable gateway succeeded")
	}
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("failed ADD left %v", l)
	}
	if adds, dels, _, _ := e.ipam.Counts(); adds != 1 || dels != 1 {
		t.Errorf("IPAM adds=%d dels=%d", adds, dels)
	}
}

// DEL works without the namespace and after the master is gone (the
// reference's DEL looks the master up and fails then).
func TestDelRobust(t *testing.T) {
	e := newEnv(t)
	conf := attachtest.Conf(t, "1.0.0", body(42, `"ipam":{"type":"fake-ipam"}`), nil)
	if _, err := e.call(t, cni.CmdDel, nil, conf); err != nil {
		t.Fatal(err)
	}
	e.ipam.Result = attachtest.IPResult(t, "10.7.42.60/24", "")
	cont := testutil.NewNS(t)
	if _, err := e.call(t, cni.CmdAdd, cont, conf); err != nil {
		t.Fatal(err)
	}
	if err := e.host.H.LinkDel(attachtest.Link(t, e.host, "m0")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(t, cni.CmdDel, cont, conf); err != nil {
		t.Errorf("DEL after the master vanished: %v", err)
	}
	if _, dels, _, _ := e.ipam.Counts(); dels != 2 {
		t.Errorf("IPAM DEL ran %d times, want 2", dels)
	}
}

func TestHostLocal(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	conf := attachtest.Conf(t, "1.0.0", body(42, attachtest.HostLocal(dir, "10.7.42.0/24", "10.7.42.1")), nil)
	cont := testutil.NewNS(t)
	res, err := e.call(t, cni.CmdAdd, cont, conf)
	if err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Allocations(t, dir); len(a) != 1 || a[0] != res.IPs[0].Address.IP.String() {
		t.Fatalf("allocations %v, result %v", a, res.IPs)
	}
	if err := testutil.Ping(cont, "10.7.42.1", ""); err != nil {
		t.Errorf("no traffic: %v", err)
	}
	if _, err := e.call(t, cni.CmdDel, nil, conf); err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Allocations(t, dir); len(a) != 0 {
		t.Errorf("DEL without netns left allocations %v", a)
	}
}
