package ipvlan_test

// ipvlan is missing from the development host's kernel: these tests run in
// the full-kernel lane (make test-kernel), in process (the lane has no Go
// toolchain to build plugin binaries), with knit's static IPAM.

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
	"github.com/knit-cni/knit/plugins/ipvlan"
)

// env: master m0 in a scratch host namespace, wired to p0 = 10.8.0.1/24 in
// a peer namespace.
type env struct {
	host, peer *testutil.NS
	reg        cni.Registry
	ipam       *attachtest.FakeIPAM
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireKernelFeature(t, "ipvlan")
	e := &env{host: testutil.NewNS(t), peer: testutil.NewNS(t), ipam: &attachtest.FakeIPAM{}}
	testutil.Veth(t, e.host, "m0", e.peer, "p0")
	attachtest.AddAddr(t, e.peer, "p0", "10.8.0.1/24")
	e.reg = builtin.Registry()
	e.reg["ipvlan"] = ipvlan.Plugin{HostNS: e.host.Path()}
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
	res, err := testutil.Call(context.Background(), e.reg, "ipvlan", req)
	if err != nil || res == nil {
		return nil, err
	}
	return attachtest.ResultOf(t, res), nil
}

func body(extra string) string {
	s := `"type":"ipvlan","master":"m0"`
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
			addr := fmt.Sprintf("10.8.0.%d/24", 10+i)
			conf := attachtest.Conf(t, v, body(attachtest.Static(addr, "10.8.0.1")), nil)
			res, err := e.call(t, cni.CmdAdd, cont, conf)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			printed := attachtest.Printed(t, res, v)
			if printed["cniVersion"] != v {
				t.Errorf("cniVersion %v", printed["cniVersion"])
			}
			ips := printed["ips"].([]any)
			if _, has := ips[0].(map[string]any)["version"]; has != (v < "1.0.0") {
				t.Errorf("ips[].version present=%v in %s", has, v)
			}
			l := attachtest.Link(t, cont, "net1")
			iv, ok := l.(*netlink.IPVlan)
			if !ok || iv.Mode != netlink.IPVLAN_MODE_L2 {
				t.Fatalf("net1 is %T %+v, want an l2 ipvlan", l, l)
			}
			m0 := attachtest.Link(t, e.host, "m0")
			if iv.ParentIndex != m0.Attrs().Index || iv.HardwareAddr.String() != m0.Attrs().HardwareAddr.String() {
				t.Errorf("parent %d mac %s, want m0's %d %s", iv.ParentIndex, iv.HardwareAddr, m0.Attrs().Index, m0.Attrs().HardwareAddr)
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Sandbox != cont.Path() || len(res.IPs) != 1 || *res.IPs[0].Interface != 0 {
				t.Errorf("result %+v", res)
			}
			attachtest.HasAddr(t, cont, "net1", addr)
			if err := testutil.Ping(cont, "10.8.0.1", ""); err != nil {
				t.Errorf("ipvlan cannot reach the peer: %v", err)
			}
			if v >= "0.4.0" {
				if _, err := e.call(t, cni.CmdCheck, cont, attachtest.WithPrev(t, conf, res)); err != nil {
					t.Errorf("CHECK: %v", err)
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

// Containers on one master reach each other in every mode.
func TestModes(t *testing.T) {
	for i, c := range []struct {
		mode string
		want netlink.IPVlanMode
	}{{"l2", netlink.IPVLAN_MODE_L2}, {"l3", netlink.IPVLAN_MODE_L3}, {"l3s", netlink.IPVLAN_MODE_L3S}} {
		t.Run(c.mode, func(t *testing.T) {
			e := newEnv(t)
			c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
			for j, cont := range []*testutil.NS{c1, c2} {
				addr := fmt.Sprintf("10.8.%d.%d/24", i+1, 21+j)
				if _, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(`"mode":"`+c.mode+`",`+attachtest.Static(addr, "")), nil)); err != nil {
					t.Fatal(err)
				}
				if m := attachtest.Link(t, cont, "net1").(*netlink.IPVlan).Mode; m != c.want {
					t.Fatalf("mode %d, want %d", m, c.want)
				}
			}
			if err := testutil.Ping(c1, fmt.Sprintf("10.8.%d.22", i+1), ""); err != nil {
				t.Errorf("%s ipvlans did not reach each other: %v", c.mode, err)
			}
		})
	}
}

func TestIPAMRequired(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	_, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(""), nil))
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "ipam")
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("rejected ADD left %v", l)
	}
}

func TestBadConfig(t *testing.T) {
	e := newEnv(t)
	for name, c := range map[string]struct {
		body  string
		words []string
	}{
		"missing master": {`"type":"ipvlan","master":"nope",` + attachtest.Static("10.8.0.5/24", ""), []string{`master: link "nope" not found`}},
		"bad mode":       {body(`"mode":"l4",` + attachtest.Static("10.8.0.5/24", "")), []string{"mode"}},
		"mtu too big":    {body(`"mtu":9000,` + attachtest.Static("10.8.0.5/24", "")), []string{"mtu"}},
	} {
		t.Run(name, func(t *testing.T) {
			cont := testutil.NewNS(t)
			_, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", c.body, nil))
			attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, c.words...)
			if l := attachtest.Links(t, cont); len(l) != 0 {
				t.Errorf("rejected ADD left %v", l)
			}
		})
	}
}

// Chained: no master and no ipam. The master is prevResult's interface
// and the ipvlan takes over its addresses and routes.
func TestChained(t *testing.T) {
	e := newEnv(t)
	prev := attachtest.IPResult(t, "10.8.0.30/24", "10.8.0.1", "10.50.0.0/16")
	prev.Interfaces = []*current.Interface{{Name: "m0"}}
	prev.IPs[0].Interface = current.Int(0)
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"ipvlan"`, prev)
	res, err := e.call(t, cni.CmdAdd, cont, conf)
	if err != nil {
		t.Fatal(err)
	}
	if p := attachtest.Link(t, cont, "net1").Attrs().ParentIndex; p != attachtest.Link(t, e.host, "m0").Attrs().Index {
		t.Errorf("chained ipvlan is not on prevResult's m0")
	}
	attachtest.HasAddr(t, cont, "net1", "10.8.0.30/24")
	if len(res.Interfaces) != 2 || res.Interfaces[1].Name != "net1" || len(res.IPs) != 1 || *res.IPs[0].Interface != 1 {
		t.Fatalf("result %+v ips %+v", res.Interfaces, res.IPs)
	}
	if err := testutil.Ping(cont, "10.8.0.1", ""); err != nil {
		t.Errorf("chained ipvlan cannot reach the peer: %v", err)
	}
	if _, err := e.call(t, cni.CmdCheck, cont, attachtest.WithPrev(t, conf, res)); err != nil {
		t.Errorf("CHECK of the chained ipvlan: %v", err)
	}
	// prevResult without a single interface to chain on.
	prev.Interfaces = append(prev.Interfaces, &current.Interface{Name: "x"})
	_, err = e.call(t, cni.CmdAdd, testutil.NewNS(t), attachtest.Conf(t, "1.0.0", `"type":"ipvlan"`, prev))
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "master")
}

func TestLinkInContainer(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	testutil.Veth(t, cont, "cm0", e.peer, "p1")
	conf := attachtest.Conf(t, "1.0.0", `"type":"ipvlan","master":"cm0","linkInContainer":true,`+attachtest.Static("10.8.0.40/24", ""), nil)
	res, err := e.call(t, cni.CmdAdd, cont, conf)
	if err != nil {
		t.Fatal(err)
	}
	if p := attachtest.Link(t, cont, "net1").Attrs().ParentIndex; p != attachtest.Link(t, cont, "cm0").Attrs().Index {
		t.Errorf("ipvlan is not on the container's cm0")
	}
	if _, err := e.call(t, cni.CmdCheck, cont, attachtest.WithPrev(t, conf, res)); err != nil {
		t.Errorf("CHECK: %v", err)
	}
}

func TestFailureRollback(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	e.ipam.AddErr = cni.Errorf(cni.ErrRangeExhausted, "exhausted")
	_, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"fake-ipam"}`), nil))
	attachtest.WantCode(t, err, cni.ErrRangeExhausted)
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("failed ADD left %v", l)
	}
	e.ipam.AddErr = nil
	e.ipam.Result = attachtest.IPResult(t, "10.8.0.50/24", "", "192.168.0.0/16,172.31.9.9")
	if _, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"fake-ipam"}`), nil)); err == nil {
		t.Fatal("ADD with an unreachable gateway succeeded")
	}
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("failed ADD left %v", l)
	}
	if adds, dels, _, _ := e.ipam.Counts(); adds != 2 || dels != 1 {
		t.Errorf("IPAM adds=%d dels=%d, want 2, 1", adds, dels)
	}
}

func TestDelWithoutNamespace(t *testing.T) {
	e := newEnv(t)
	conf := attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"fake-ipam"}`), nil)
	if _, err := e.call(t, cni.CmdDel, nil, conf); err != nil {
		t.Fatal(err)
	}
	if _, dels, _, _ := e.ipam.Counts(); dels != 1 {
		t.Errorf("IPAM DEL ran %d times", dels)
	}
}

func TestCheckWrongMode(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	res, err := e.call(t, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(attachtest.Static("10.8.0.60/24", "")), nil))
	if err != nil {
		t.Fatal(err)
	}
	l3 := attachtest.WithPrev(t, attachtest.Conf(t, "1.0.0", body(`"mode":"l3",`+attachtest.Static("10.8.0.60/24", "")), nil), res)
	if _, err := e.call(t, cni.CmdCheck, cont, l3); err == nil {
		t.Error("CHECK passed with another mode")
	}
}

func TestHostLocal(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	conf := attachtest.Conf(t, "1.0.0", body(attachtest.HostLocal(dir, "10.8.0.0/24", "10.8.0.1")), nil)
	cont := testutil.NewNS(t)
	res, err := e.call(t, cni.CmdAdd, cont, conf)
	if err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Allocations(t, dir); len(a) != 1 || a[0] != res.IPs[0].Address.IP.String() {
		t.Fatalf("allocations %v, result %v", a, res.IPs)
	}
	if err := testutil.Ping(cont, "10.8.0.1", ""); err != nil {
		t.Errorf("no traffic: %v", err)
	}
	if _, err := e.call(t, cni.CmdDel, cont, conf); err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Allocations(t, dir); len(a) != 0 {
		t.Errorf("DEL left allocations %v", a)
	}
}
