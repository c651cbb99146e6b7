package macvlan_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/builtin"
	"github.com/knit-cni/knit/plugins/macvlan"
)

// env is a scratch "host" namespace whose interface m0 (the master) is a
// veth to a peer namespace holding p0 = 10.9.0.1/24: the wire and the
// machine at its other end.
type env struct {
	host, peer *testutil.NS
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	e := &env{host: testutil.NewNS(t), peer: testutil.NewNS(t)}
	testutil.Veth(t, e.host, "m0", e.peer, "p0")
	attachtest.AddAddr(t, e.peer, "p0", "10.9.0.1/24")
	return e
}

// bin is knit's macvlan binary, run inside the env's host namespace.
func (e *env) bin(t *testing.T) string {
	return testutil.InHost(t, e.host.Path(), filepath.Join(testutil.PluginDir(t), "macvlan"))
}

func (e *env) reg(ipam *attachtest.FakeIPAM) cni.Registry {
	reg := builtin.Registry()
	reg["macvlan"] = macvlan.Plugin{HostNS: e.host.Path()}
	if ipam != nil {
		reg["fake-ipam"] = ipam
	}
	return reg
}

func (e *env) call(t *testing.T, reg cni.Registry, cmd cni.Command, cont *testutil.NS, config []byte) (types.Result, error) {
	t.Helper()
	netnsPath := ""
	if cont != nil {
		netnsPath = cont.Path()
	}
	req := &cni.Request{Command: cmd, ContainerID: "c1", Netns: netnsPath, IfName: "net1", Config: config}
	return testutil.Call(context.Background(), reg, "macvlan", req)
}

func body(extra string) string {
	s := `"type":"macvlan","master":"m0"`
	if extra != "" {
		s += "," + extra
	}
	return s
}

func TestAddCheckDelEveryVersion(t *testing.T) {
	e := newEnv(t)
	bin := e.bin(t)
	for i, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			cont := testutil.NewNS(t)
			addr := fmt.Sprintf("10.9.0.%d/24", 10+i)
			conf := attachtest.Conf(t, v, body(attachtest.Static(addr, "10.9.0.1")), nil)
			req := &cni.Request{ContainerID: "c1", Netns: cont.Path(), IfName: "net1", Config: conf}
			out, err := testutil.Exec(context.Background(), bin, withCmd(req, cni.CmdAdd))
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			checkVersionShape(t, out, v)
			res := testutil.DecodeResult(t, conf, out)
			l := attachtest.Link(t, cont, "net1")
			mv, ok := l.(*netlink.Macvlan)
			if !ok || mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
				t.Fatalf("net1 is %T %+v, want a bridge-mode macvlan", l, l)
			}
			if mv.ParentIndex != attachtest.Link(t, e.host, "m0").Attrs().Index {
				t.Errorf("parent index %d is not m0's", mv.ParentIndex)
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "net1" || res.Interfaces[0].Sandbox != cont.Path() ||
				res.Interfaces[0].Mac != l.Attrs().HardwareAddr.String() {
				t.Errorf("interfaces = %+v", res.Interfaces[0])
			}
			if len(res.IPs) != 1 || res.IPs[0].Address.String() != addr || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 0 {
				t.Errorf("ips = %+v", res.IPs)
			}
			attachtest.HasAddr(t, cont, "net1", addr)
			if err := testutil.Ping(cont, "10.9.0.1", ""); err != nil {
				t.Errorf("container cannot reach the peer: %v", err)
			}
			if v >= "0.4.0" {
				creq := withCmd(req, cni.CmdCheck)
				creq.Config = attachtest.WithPrev(t, conf, res)
				if _, err := testutil.Exec(context.Background(), bin, creq); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			for range 2 {
				dreq := withCmd(req, cni.CmdDel)
				dreq.Config = attachtest.WithPrev(t, conf, res)
				if _, err := testutil.Exec(context.Background(), bin, dreq); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			attachtest.NoLink(t, cont, "net1")
		})
	}
}

func withCmd(req *cni.Request, cmd cni.Command) *cni.Request {
	c := *req
	c.Command = cmd
	return &c
}

// checkVersionShape asserts the printed result is in version v: ips carry
// "version" before 1.0.0 and not after.
func checkVersionShape(t *testing.T, out []byte, v string) {
	t.Helper()
	var raw struct {
		CNIVersion string           `json:"cniVersion"`
		IPs        []map[string]any `json:"ips"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.CNIVersion != v {
		t.Errorf("cniVersion %q, want %q", raw.CNIVersion, v)
	}
	for _, ip := range raw.IPs {
		if _, has := ip["version"]; has != (v < "1.0.0") {
			t.Errorf("%s: ips[].version present=%v", v, has)
		}
	}
}

// Two containers with bridge-mode macvlans on one master reach each other
// and the peer.
func TestBridgeModeContainersTalk(t *testing.T) {
	e := newEnv(t)
	bin := e.bin(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	for i, c := range []*testutil.NS{c1, c2} {
		conf := attachtest.Conf(t, "1.0.0", body(`"mode":"bridge",`+attachtest.Static(fmt.Sprintf("10.9.0.%d/24", 21+i), "")), nil)
		testutil.ExecAdd(t, bin, &cni.Request{ContainerID: fmt.Sprintf("c%d", i), Netns: c.Path(), IfName: "net1", Config: conf})
	}
	for _, p := range []struct {
		from *testutil.NS
		to   string
	}{{c1, "10.9.0.22"}, {c2, "10.9.0.21"}, {c1, "10.9.0.1"}, {c2, "10.9.0.1"}} {
		if err := testutil.Ping(p.from, p.to, ""); err != nil {
			t.Errorf("ping %s: %v", p.to, err)
		}
	}
}

// Private mode isolates macvlans of one master from each other; the peer
// stays reachable.
func TestPrivateModeIsolates(t *testing.T) {
	e := newEnv(t)
	reg := e.reg(nil)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	for i, c := range []*testutil.NS{c1, c2} {
		conf := attachtest.Conf(t, "1.0.0", body(`"mode":"private"`), nil)
		if _, err := e.call(t, reg, cni.CmdAdd, c, conf); err != nil {
			t.Fatal(err)
		}
		attachtest.AddAddr(t, c, "net1", fmt.Sprintf("10.9.0.%d/24", 31+i))
		if m := attachtest.Link(t, c, "net1").(*netlink.Macvlan).Mode; m != netlink.MACVLAN_MODE_PRIVATE {
			t.Fatalf("mode %d, want private", m)
		}
	}
	if err := testutil.Ping(c1, "10.9.0.1", ""); err != nil {
		t.Errorf("private macvlan cannot reach the peer: %v", err)
	}
	if err := testutil.Ping(c1, "10.9.0.32", ""); err == nil {
		t.Error("private macvlans reached each other")
	}
}

// VEPA sends even local traffic to the wire: the containers reach each
// other only because the switch (a hairpin bridge port in the peer) sends
// it back.
func TestVEPAModeHairpins(t *testing.T) {
	e := newEnv(t)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := e.peer.H.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	p0 := attachtest.Link(t, e.peer, "p0")
	if err := e.peer.H.LinkSetMaster(p0, br); err != nil {
		t.Fatal(err)
	}
	if err := e.peer.H.LinkSetHairpin(p0, true); err != nil {
		t.Fatal(err)
	}
	if err := e.peer.H.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	reg := e.reg(nil)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	for i, c := range []*testutil.NS{c1, c2} {
		if _, err := e.call(t, reg, cni.CmdAdd, c, attachtest.Conf(t, "1.0.0", body(`"mode":"vepa"`), nil)); err != nil {
			t.Fatal(err)
		}
		attachtest.AddAddr(t, c, "net1", fmt.Sprintf("10.9.0.%d/24", 41+i))
		if m := attachtest.Link(t, c, "net1").(*netlink.Macvlan).Mode; m != netlink.MACVLAN_MODE_VEPA {
			t.Fatalf("mode %d, want vepa", m)
		}
	}
	if err := testutil.Ping(c1, "10.9.0.42", ""); err != nil {
		t.Errorf("vepa macvlans did not reach each other through the hairpin: %v", err)
	}
}

// Passthru takes the master for one macvlan only; a second one fails and
// leaves nothing behind.
func TestPassthru(t *testing.T) {
	e := newEnv(t)
	reg := e.reg(nil)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", body(`"mode":"passthru"`), nil)
	if _, err := e.call(t, reg, cni.CmdAdd, c1, conf); err != nil {
		t.Fatal(err)
	}
	if m := attachtest.Link(t, c1, "net1").(*netlink.Macvlan).Mode; m != netlink.MACVLAN_MODE_PASSTHRU {
		t.Fatalf("mode %d, want passthru", m)
	}
	if _, err := e.call(t, reg, cni.CmdAdd, c2, conf); err == nil {
		t.Fatal("second passthru macvlan on one master succeeded")
	}
	if l := attachtest.Links(t, c2); len(l) != 0 {
		t.Fatalf("failed ADD left %v", l)
	}
}

func TestDefaultMasterIsDefaultRouteLink(t *testing.T) {
	e := newEnv(t)
	attachtest.AddAddr(t, e.host, "m0", "10.9.0.2/24")
	m0 := attachtest.Link(t, e.host, "m0")
	if err := e.host.H.RouteAdd(&netlink.Route{LinkIndex: m0.Attrs().Index, Gw: []byte{10, 9, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"macvlan"`, nil)
	if _, err := e.call(t, e.reg(nil), cni.CmdAdd, cont, conf); err != nil {
		t.Fatal(err)
	}
	if p := attachtest.Link(t, cont, "net1").Attrs().ParentIndex; p != m0.Attrs().Index {
		t.Errorf("parent %d, want m0 (%d)", p, m0.Attrs().Index)
	}
	// Without a default route there is no master to pick: a config error.
	bare := testutil.NewNS(t)
	reg := builtin.Registry()
	reg["macvlan"] = macvlan.Plugin{HostNS: bare.Path()}
	_, err := e.call(t, reg, cni.CmdAdd, testutil.NewNS(t), conf)
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "master")
}

func TestLinkInContainer(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	testutil.Veth(t, cont, "cm0", e.peer, "p1")
	conf := attachtest.Conf(t, "1.0.0", `"type":"macvlan","master":"cm0","linkInContainer":true`, nil)
	res, err := e.call(t, e.reg(nil), cni.CmdAdd, cont, conf)
	if err != nil {
		t.Fatal(err)
	}
	if p := attachtest.Link(t, cont, "net1").Attrs().ParentIndex; p != attachtest.Link(t, cont, "cm0").Attrs().Index {
		t.Errorf("parent %d is not the container's cm0", p)
	}
	if _, err := e.call(t, e.reg(nil), cni.CmdCheck, cont, attachtest.WithPrev(t, conf, res)); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// m0 exists only in the host: with linkInContainer it is not found.
	_, err = e.call(t, e.reg(nil), cni.CmdAdd, testutil.NewNS(t),
		attachtest.Conf(t, "1.0.0", body(`"linkInContainer":true`), nil))
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, `master: link "m0" not found`)
}

func TestMTU(t *testing.T) {
	e := newEnv(t)
	reg := e.reg(nil)
	cont := testutil.NewNS(t)
	if _, err := e.call(t, reg, cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(`"mtu":1400`), nil)); err != nil {
		t.Fatal(err)
	}
	if m := attachtest.Link(t, cont, "net1").Attrs().MTU; m != 1400 {
		t.Errorf("MTU %d, want 1400", m)
	}
	for _, mtu := range []string{"1501", "-1"} {
		other := testutil.NewNS(t)
		_, err := e.call(t, reg, cni.CmdAdd, other, attachtest.Conf(t, "1.0.0", body(`"mtu":`+mtu), nil))
		attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "mtu")
		if l := attachtest.Links(t, other); len(l) != 0 {
			t.Errorf("rejected ADD left %v", l)
		}
	}
}

// The MAC comes from runtimeConfig, args.cni, CNI_ARGS or the config, in
// that order of precedence.
func TestMAC(t *testing.T) {
	e := newEnv(t)
	reg := e.reg(nil)
	cases := []struct {
		name, extra, args, want string
	}{
		{"config", `"mac":"02:00:00:00:00:01"`, "", "02:00:00:00:00:01"},
		{"CNI_ARGS", `"mac":"02:00:00:00:00:01"`, "IgnoreUnknown=1;MAC=02:00:00:00:00:02", "02:00:00:00:00:02"},
		{"args", `"mac":"02:00:00:00:00:01","args":{"cni":{"mac":"02:00:00:00:00:03"}}`, "MAC=02:00:00:00:00:02", "02:00:00:00:00:03"},
		{"runtimeConfig", `"args":{"cni":{"mac":"02:00:00:00:00:03"}},"runtimeConfig":{"mac":"02:00:00:00:00:04"}`, "MAC=02:00:00:00:00:02", "02:00:00:00:00:04"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cont := testutil.NewNS(t)
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1", Args: c.args,
				Config: attachtest.Conf(t, "1.0.0", body(c.extra), nil)}
			res, err := testutil.Call(context.Background(), reg, "macvlan", req)
			if err != nil {
				t.Fatal(err)
			}
			if got := attachtest.Link(t, cont, "net1").Attrs().HardwareAddr.String(); got != c.want {
				t.Errorf("MAC %s, want %s", got, c.want)
			}
			if got := attachtest.ResultOf(t, res).Interfaces[0].Mac; got != c.want {
				t.Errorf("result MAC %s, want %s", got, c.want)
			}
		})
	}
	_, err := e.call(t, reg, cni.CmdAdd, testutil.NewNS(t), attachtest.Conf(t, "1.0.0", body(`"runtimeConfig":{"mac":"zz"}`), nil))
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "runtimeConfig.mac")
}

func TestBadConfig(t *testing.T) {
	e := newEnv(t)
	bin := e.bin(t)
	cases := []struct {
		name  string
		conf  string
		code  uint
		words []string
	}{
		{"missing master", `{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"nope"}`, types.ErrInvalidNetworkConfig, []string{`master: link "nope" not found`}},
		{"bad mode", `{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"m0","mode":"weird"}`, types.ErrInvalidNetworkConfig, []string{"mode"}},
		{"bad mtu type", `{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"m0","mtu":"x"}`, types.ErrDecodingFailure, []string{"mtu"}},
		{"bad json", `{"cniVersion":`, types.ErrDecodingFailure, nil},
		{"bad version", `{"cniVersion":"7.0.0","name":"n","type":"macvlan","master":"m0"}`, types.ErrIncompatibleCNIVersion, nil},
		{"unknown CNI_ARGS", `{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"m0"}`, types.ErrInvalidEnvironmentVariables, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cont := testutil.NewNS(t)
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1", Config: []byte(c.conf)}
			if c.name == "unknown CNI_ARGS" {
				req.Args = "FOO=1"
			}
			_, err := testutil.Exec(context.Background(), bin, req)
			attachtest.WantCode(t, err, c.code, c.words...)
			if l := attachtest.Links(t, cont); len(l) != 0 {
				t.Errorf("rejected ADD left %v in the container", l)
			}
			if l := attachtest.Links(t, e.host); len(l) != 1 {
				t.Errorf("host has %v, want only m0", l)
			}
		})
	}
}

func TestIfNameTaken(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	if err := cont.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "net1"}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.call(t, e.reg(nil), cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(""), nil))
	attachtest.WantCode(t, err, cni.ErrLinkExists, "net1")
	if _, ok := attachtest.Link(t, cont, "net1").(*netlink.Bridge); !ok {
		t.Error("the existing net1 was replaced")
	}
}

// The name being taken in the host namespace does not matter: the link is
// created straight into the container.
func TestHostNameClashIsFine(t *testing.T) {
	e := newEnv(t)
	if err := e.host.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "net1"}}); err != nil {
		t.Fatal(err)
	}
	cont := testutil.NewNS(t)
	if _, err := e.call(t, e.reg(nil), cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(""), nil)); err != nil {
		t.Fatal(err)
	}
	if _, ok := attachtest.Link(t, cont, "net1").(*netlink.Macvlan); !ok {
		t.Error("net1 in the container is not the macvlan")
	}
	if _, ok := attachtest.Link(t, e.host, "net1").(*netlink.Bridge); !ok {
		t.Error("the host's net1 changed")
	}
}

func TestIPAMFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	ipam := &attachtest.FakeIPAM{AddErr: cni.Errorf(cni.ErrRangeExhausted, "no addresses")}
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"fake-ipam"}`), nil)
	_, err := e.call(t, e.reg(ipam), cni.CmdAdd, cont, conf)
	attachtest.WantCode(t, err, cni.ErrRangeExhausted)
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("failed ADD left %v", l)
	}
}

// A failure after IPAM (a route whose gateway is unreachable) removes the
// link and releases the allocation.
func TestConfigureFailureReleasesIPAM(t *testing.T) {
	e := newEnv(t)
	ipam := &attachtest.FakeIPAM{Result: attachtest.IPResult(t, "10.9.0.50/24", "", "192.168.77.0/24,172.31.0.1")}
	cont := testutil.NewNS(t)
	_, err := e.call(t, e.reg(ipam), cni.CmdAdd, cont, attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"fake-ipam"}`), nil))
	if err == nil {
		t.Fatal("ADD with an unreachable route gateway succeeded")
	}
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("failed ADD left %v", l)
	}
	if adds, dels, _, _ := ipam.Counts(); adds != 1 || dels != 1 {
		t.Errorf("IPAM adds=%d dels=%d, want 1 and 1", adds, dels)
	}
}

// DEL releases the allocation whatever state the namespace is in, and
// succeeds.
func TestDelWithoutNamespace(t *testing.T) {
	e := newEnv(t)
	ipam := &attachtest.FakeIPAM{}
	conf := attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"fake-ipam"}`), nil)
	reg := e.reg(ipam)
	for _, path := range []string{"", "/var/run/netns/knit-does-not-exist"} {
		req := &cni.Request{Command: cni.CmdDel, ContainerID: "c1", Netns: path, IfName: "net1", Config: conf}
		if _, err := testutil.Call(context.Background(), reg, "macvlan", req); err != nil {
			t.Errorf("DEL with netns %q: %v", path, err)
		}
	}
	if _, dels, _, _ := ipam.Counts(); dels != 2 {
		t.Errorf("IPAM DEL ran %d times, want 2", dels)
	}
	// DEL of a config ADD would reject (unknown master) still works.
	bad := attachtest.Conf(t, "1.0.0", `"type":"macvlan","master":"gone"`, nil)
	if _, err := e.call(t, reg, cni.CmdDel, testutil.NewNS(t), bad); err != nil {
		t.Errorf("DEL with a vanished master: %v", err)
	}
}

// Given prevResult, ADD returns it with the macvlan, its address and
// routes appended; the address points at the new interface.
func TestPrevResultPassThrough(t *testing.T) {
	e := newEnv(t)
	ipam := &attachtest.FakeIPAM{Result: attachtest.IPResult(t, "10.9.0.60/24", "10.9.0.1", "10.99.0.0/16")}
	prev := attachtest.IPResult(t, "192.168.5.2/24", "192.168.5.1", "0.0.0.0/0")
	prev.Interfaces = []*current.Interface{{Name: "eth0", Sandbox: "/x"}}
	prev.IPs[0].Interface = current.Int(0)
	prev.DNS = types.DNS{Nameservers: []string{"192.168.5.53"}}
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"fake-ipam"}`), prev)
	r, err := e.call(t, e.reg(ipam), cni.CmdAdd, cont, conf)
	if err != nil {
		t.Fatal(err)
	}
	res := attachtest.ResultOf(t, r)
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != "eth0" || res.Interfaces[1].Name != "net1" {
		t.Fatalf("interfaces = %+v", res.Interfaces)
	}
	if len(res.IPs) != 2 || *res.IPs[0].Interface != 0 || *res.IPs[1].Interface != 1 || res.IPs[1].Address.String() != "10.9.0.60/24" {
		t.Fatalf("ips = %+v", res.IPs)
	}
	if len(res.Routes) != 2 || len(res.DNS.Nameservers) != 1 {
		t.Fatalf("routes %v dns %v", res.Routes, res.DNS)
	}
	attachtest.HasAddr(t, cont, "net1", "10.9.0.60/24")
}

func TestCheckDetectsDrift(t *testing.T) {
	e := newEnv(t)
	ipam := &attachtest.FakeIPAM{Result: attachtest.IPResult(t, "10.9.0.70/24", "10.9.0.1", "10.99.0.0/16")}
	reg := e.reg(ipam)
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"fake-ipam"}`), nil)
	r, err := e.call(t, reg, cni.CmdAdd, cont, conf)
	if err != nil {
		t.Fatal(err)
	}
	checkConf := attachtest.WithPrev(t, conf, r)
	if _, err := e.call(t, reg, cni.CmdCheck, cont, checkConf); err != nil {
		t.Fatalf("CHECK of a fresh attachment: %v", err)
	}
	if _, _, checks, _ := ipam.Counts(); checks != 1 {
		t.Errorf("IPAM CHECK ran %d times, want 1", checks)
	}
	// Another mode in the config than on the link.
	vepa := attachtest.WithPrev(t, attachtest.Conf(t, "1.0.0", body(`"mode":"vepa","ipam":{"type":"fake-ipam"}`), nil), r)
	if _, err := e.call(t, reg, cni.CmdCheck, cont, vepa); err == nil {
		t.Error("CHECK passed with the wrong mode")
	}
	// No prevResult.
	_, err = e.call(t, reg, cni.CmdCheck, cont, conf)
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "prevResult")
	// A route removed.
	routes, _ := nlsafe.RouteList(cont.H, nil, netlink.FAMILY_V4)
	for _, rt := range routes {
		if rt.Dst != nil && rt.Dst.String() == "10.99.0.0/16" {
			if err := cont.H.RouteDel(&rt); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := e.call(t, reg, cni.CmdCheck, cont, checkConf); err == nil {
		t.Error("CHECK passed without the route")
	}
	// The address removed.
	l := attachtest.Link(t, cont, "net1")
	a, _ := netlink.ParseAddr("10.9.0.70/24")
	if err := cont.H.AddrDel(l, a); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(t, reg, cni.CmdCheck, cont, checkConf); err == nil {
		t.Error("CHECK passed without the address")
	}
}

func TestGCAndStatusForwardToIPAM(t *testing.T) {
	e := newEnv(t)
	ipam := &attachtest.FakeIPAM{}
	conf := attachtest.Conf(t, "1.1.0", body(`"ipam":{"type":"fake-ipam"},"cni.dev/valid-attachments":[]`), nil)
	req := &cni.Request{Command: cni.CmdGC, Config: conf}
	if _, err := testutil.Call(context.Background(), e.reg(ipam), "macvlan", req); err != nil {
		t.Fatal(err)
	}
	if _, _, _, gcs := ipam.Counts(); gcs != 1 {
		t.Errorf("IPAM GC ran %d times, want 1", gcs)
	}
	req.Command = cni.CmdStatus
	if _, err := testutil.Call(context.Background(), e.reg(ipam), "macvlan", req); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	// Without IPAM there is nothing to collect.
	req = &cni.Request{Command: cni.CmdGC, Config: attachtest.Conf(t, "1.1.0", body(""), nil)}
	if _, err := testutil.Call(context.Background(), e.reg(nil), "macvlan", req); err != nil {
		t.Errorf("GC without IPAM: %v", err)
	}
}

// L2-only (no ipam): an up interface without addresses, as the reference.
func TestNoIPAM(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	r, err := e.call(t, e.reg(nil), cni.CmdAdd, cont, attachtest.Conf(t, "0.3.1", body(""), nil))
	if err != nil {
		t.Fatal(err)
	}
	if res := attachtest.ResultOf(t, r); len(res.IPs) != 0 || len(res.Interfaces) != 1 {
		t.Errorf("result %+v", res)
	}
	if attachtest.Link(t, cont, "net1").Attrs().Flags&1 == 0 {
		t.Error("net1 is down")
	}
}

// With host-local, the common IPAM: two containers get distinct addresses
// and reach each other; DEL releases them; a failed ADD (a route whose
// gateway is unreachable) leaves no allocation and no link.
func TestHostLocal(t *testing.T) {
	e := newEnv(t)
	bin := e.bin(t)
	dir := t.TempDir()
	conf := attachtest.Conf(t, "1.0.0", body(attachtest.HostLocal(dir, "10.9.0.0/24", "10.9.0.1")), nil)
	var conts []*testutil.NS
	var addrs []string
	for i := range 2 {
		cont := testutil.NewNS(t)
		res := testutil.ExecAdd(t, bin, &cni.Request{ContainerID: fmt.Sprintf("c%d", i), Netns: cont.Path(), IfName: "net1", Config: conf})
		addrs = append(addrs, res.IPs[0].Address.IP.String())
		attachtest.HasAddr(t, cont, "net1", res.IPs[0].Address.String())
		conts = append(conts, cont)
	}
	if addrs[0] == addrs[1] || len(attachtest.Allocations(t, dir)) != 2 {
		t.Fatalf("addresses %v, allocations %v", addrs, attachtest.Allocations(t, dir))
	}
	if err := testutil.Ping(conts[0], addrs[1], ""); err != nil {
		t.Errorf("containers do not reach each other: %v", err)
	}
	for i, cont := range conts {
		req := &cni.Request{Command: cni.CmdDel, ContainerID: fmt.Sprintf("c%d", i), Netns: cont.Path(), IfName: "net1", Config: conf}
		if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
			t.Fatal(err)
		}
	}
	if a := attachtest.Allocations(t, dir); len(a) != 0 {
		t.Errorf("DEL left allocations %v", a)
	}
	bad := attachtest.Conf(t, "1.0.0", body(`"ipam":{"type":"host-local","dataDir":"`+dir+`","ranges":[[{"subnet":"10.9.0.0/24"}]],`+
		`"routes":[{"dst":"192.168.0.0/16","gw":"172.31.9.9"}]}`), nil)
	cont := testutil.NewNS(t)
	if _, err := testutil.Exec(context.Background(), bin, &cni.Request{Command: cni.CmdAdd, ContainerID: "c9", Netns: cont.Path(), IfName: "net1", Config: bad}); err == nil {
		t.Fatal("ADD with an unreachable route gateway succeeded")
	}
	if a := attachtest.Allocations(t, dir); len(a) != 0 {
		t.Errorf("failed ADD left allocations %v", a)
	}
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("failed ADD left %v", l)
	}
}
