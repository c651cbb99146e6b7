package hostdevice_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/builtin"
	"github.com/knit-cni/knit/plugins/hostdevice"
)

// env: the "device" hd0 is a veth end in a scratch host namespace; its peer
// p0 = 10.4.0.1/24 lives in a peer namespace.
type env struct {
	host, peer *testutil.NS
	mac        string
	ipam       *attachtest.FakeIPAM
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	e := &env{host: testutil.NewNS(t), peer: testutil.NewNS(t), ipam: &attachtest.FakeIPAM{}}
	testutil.Veth(t, e.host, "hd0", e.peer, "p0")
	attachtest.AddAddr(t, e.peer, "p0", "10.4.0.1/24")
	e.mac = attachtest.Link(t, e.host, "hd0").Attrs().HardwareAddr.String()
	return e
}

func (e *env) bin(t *testing.T, path string) string {
	return testutil.InHost(t, e.host.Path(), path)
}

func (e *env) reg() cni.Registry {
	reg := builtin.Registry()
	reg["host-device"] = hostdevice.Plugin{HostNS: e.host.Path()}
	reg["fake-ipam"] = e.ipam
	return reg
}

func (e *env) call(t *testing.T, cmd cni.Command, netnsPath string, config []byte) (types.Result, error) {
	t.Helper()
	req := &cni.Request{Command: cmd, ContainerID: "c1", Netns: netnsPath, IfName: "net1", Config: config}
	return testutil.Call(context.Background(), e.reg(), "host-device", req)
}

// back asserts hd0 is home: in the host, under its name, with its MAC, and
// not in the container.
func (e *env) back(t *testing.T, cont *testutil.NS) {
	t.Helper()
	l := attachtest.Link(t, e.host, "hd0")
	if l.Attrs().HardwareAddr.String() != e.mac {
		t.Errorf("hd0 came back with MAC %s, want %s", l.Attrs().HardwareAddr, e.mac)
	}
	if cont != nil {
		if l := attachtest.Links(t, cont); len(l) != 0 {
			t.Errorf("container still has %v", l)
		}
	}
}

func TestAddCheckDelEveryVersion(t *testing.T) {
	e := newEnv(t)
	bin := e.bin(t, filepath.Join(testutil.PluginDir(t), "host-device"))
	for i, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			cont := testutil.NewNS(t)
			addr := fmt.Sprintf("10.4.0.%d/24", 10+i)
			conf := attachtest.Conf(t, v, `"type":"host-device","device":"hd0",`+attachtest.Static(addr, "10.4.0.1"), nil)
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1", Config: conf}
			res := testutil.ExecAdd(t, bin, req)
			attachtest.NoLink(t, e.host, "hd0")
			l := attachtest.Link(t, cont, "net1")
			if l.Attrs().Alias != "hd0" || l.Attrs().HardwareAddr.String() != e.mac || l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("net1 alias %q mac %s flags %v", l.Attrs().Alias, l.Attrs().HardwareAddr, l.Attrs().Flags)
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "net1" || res.Interfaces[0].Mac != e.mac ||
				res.Interfaces[0].Sandbox != cont.Path() || len(res.IPs) != 1 || *res.IPs[0].Interface != 0 {
				t.Errorf("result %+v", res)
			}
			attachtest.HasAddr(t, cont, "net1", addr)
			if err := testutil.Ping(cont, "10.4.0.1", ""); err != nil {
				t.Errorf("moved device does not reach the peer: %v", err)
			}
			if v >= "0.4.0" {
				req.Command, req.Config = cni.CmdCheck, attachtest.WithPrev(t, conf, res)
				if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			req.Command, req.Config = cni.CmdDel, attachtest.WithPrev(t, conf, res)
			for range 2 {
				if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			e.back(t, cont)
		})
	}
}

func TestSelectByMAC(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"host-device","hwaddr":"`+e.mac+`"`, nil)
	if _, err := e.call(t, cni.CmdAdd, cont.Path(), conf); err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Link(t, cont, "net1").Attrs().Alias; a != "hd0" {
		t.Errorf("alias %q", a)
	}
	if _, err := e.call(t, cni.CmdDel, cont.Path(), conf); err != nil {
		t.Fatal(err)
	}
	e.back(t, cont)
	_, err := e.call(t, cni.CmdAdd, cont.Path(), attachtest.Conf(t, "1.0.0", `"type":"host-device","hwaddr":"02:de:ad:00:00:01"`, nil))
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "hwaddr")
}

// A container that already has a link named like the device (its own eth0
// next to a host "eth0") gets the device all the same, and keeps its own.
func TestDeviceNameTakenInContainer(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	if err := cont.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "hd0"}}); err != nil {
		t.Fatal(err)
	}
	conf := attachtest.Conf(t, "1.0.0", `"type":"host-device","device":"hd0"`, nil)
	if _, err := e.call(t, cni.CmdAdd, cont.Path(), conf); err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Link(t, cont, "net1").Attrs().Alias; a != "hd0" {
		t.Errorf("alias %q", a)
	}
	if _, err := e.call(t, cni.CmdDel, cont.Path(), conf); err != nil {
		t.Fatal(err)
	}
	attachtest.Link(t, e.host, "hd0")
	if _, ok := attachtest.Link(t, cont, "hd0").(*netlink.Bridge); !ok {
		t.Error("the container's own hd0 changed")
	}
	attachtest.NoLink(t, cont, "net1")
}

// A failed ADD puts the device back as it was: name, alias, up state.
func TestFailureRestoresDevice(t *testing.T) {
	e := newEnv(t)
	hd0 := attachtest.Link(t, e.host, "hd0")
	if err := e.host.H.LinkSetAlias(hd0, "uplink-2"); err != nil {
		t.Fatal(err)
	}
	conf := attachtest.Conf(t, "1.0.0", `"type":"host-device","device":"hd0","ipam":{"type":"fake-ipam"}`, nil)
	for name, setup := range map[string]func(){
		"ipam error": func() { e.ipam.AddErr = cni.Errorf(cni.ErrRangeExhausted, "exhausted") },
		"bad route": func() {
			e.ipam.AddErr = nil
			e.ipam.Result = attachtest.IPResult(t, "10.4.0.50/24", "", "192.168.0.0/16,172.31.9.9")
		},
	} {
		t.Run(name, func(t *testing.T) {
			setup()
			cont := testutil.NewNS(t)
			if _, err := e.call(t, cni.CmdAdd, cont.Path(), conf); err == nil {
				t.Fatal("ADD succeeded")
			}
			e.back(t, cont)
			l := attachtest.Link(t, e.host, "hd0")
			if l.Attrs().Alias != "uplink-2" || l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("hd0 alias %q flags %v, want uplink-2 and up", l.Attrs().Alias, l.Attrs().Flags)
			}
		})
	}
	if adds, dels, _, _ := e.ipam.Counts(); adds != 2 || dels != 1 {
		t.Errorf("IPAM adds=%d dels=%d, want 2, 1", adds, dels)
	}
}

func TestBadConfig(t *testing.T) {
	e := newEnv(t)
	for name, c := range map[string]struct {
		body string
		word string
	}{
		"no selector":     {`"type":"host-device"`, "device"},
		"missing device":  {`"type":"host-device","device":"nope"`, `device: link "nope" not found`},
		"bad hwaddr":      {`"type":"host-device","hwaddr":"xx"`, "hwaddr"},
		"bad kernelpath":  {`"type":"host-device","kernelpath":"/etc"`, "kernelpath"},
		"traversal":       {`"type":"host-device","pciBusID":"../../etc"`, "pciBusID"},
		"missing pci dev": {`"type":"host-device","runtimeConfig":{"deviceID":"0000:ff:1f.7"}`, "pciBusID"},
	} {
		t.Run(name, func(t *testing.T) {
			cont := testutil.NewNS(t)
			_, err := e.call(t, cni.CmdAdd, cont.Path(), attachtest.Conf(t, "1.0.0", c.body, nil))
			attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, c.word)
			e.back(t, cont)
		})
	}
}

func TestIfNameTaken(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	if err := cont.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "net1"}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.call(t, cni.CmdAdd, cont.Path(), attachtest.Conf(t, "1.0.0", `"type":"host-device","device":"hd0"`, nil))
	attachtest.WantCode(t, err, cni.ErrLinkExists)
	if a := attachtest.Link(t, e.host, "hd0").Attrs().Alias; a != "" {
		t.Errorf("hd0 got alias %q from a refused ADD", a)
	}
}

// DEL without a namespace still releases the address (the reference leaks
// it, containernetworking/plugins#1196) and returns an orphaned device,
// back in the host under its container name, to its own name.
func TestDelWithoutNamespace(t *testing.T) {
	e := newEnv(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"host-device","device":"hd0","ipam":{"type":"fake-ipam"}`, nil)
	// What the kernel does when the namespace dies: the device comes home
	// as net1, still carrying its alias.
	hd0 := attachtest.Link(t, e.host, "hd0")
	if err := e.host.H.LinkSetDown(hd0); err != nil {
		t.Fatal(err)
	}
	if err := e.host.H.LinkSetAlias(hd0, "hd0"); err != nil {
		t.Fatal(err)
	}
	if err := e.host.H.LinkSetName(hd0, "net1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", "/var/run/netns/knit-gone"} {
		if _, err := e.call(t, cni.CmdDel, p, conf); err != nil {
			t.Errorf("DEL with netns %q: %v", p, err)
		}
	}
	if _, dels, _, _ := e.ipam.Counts(); dels != 2 {
		t.Errorf("IPAM DEL ran %d times, want 2", dels)
	}
	e.back(t, nil)
	attachtest.NoLink(t, e.host, "net1")
}

// DEL while the host has given the device's name to another link keeps the
// device in the container and fails, so a retry can finish.
func TestDelNameTakenInHost(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"host-device","device":"hd0"`, nil)
	if _, err := e.call(t, cni.CmdAdd, cont.Path(), conf); err != nil {
		t.Fatal(err)
	}
	if err := e.host.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "hd0"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(t, cni.CmdDel, cont.Path(), conf); err == nil {
		t.Fatal("DEL succeeded while hd0 was taken")
	}
	attachtest.Link(t, cont, "net1")
	if err := e.host.H.LinkDel(attachtest.Link(t, e.host, "hd0")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(t, cni.CmdDel, cont.Path(), conf); err != nil {
		t.Fatalf("retried DEL: %v", err)
	}
	e.back(t, cont)
}

func TestCheckDetectsDrift(t *testing.T) {
	e := newEnv(t)
	e.ipam.Result = attachtest.IPResult(t, "10.4.0.60/24", "10.4.0.1")
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"host-device","device":"hd0","ipam":{"type":"fake-ipam"}`, nil)
	res, err := e.call(t, cni.CmdAdd, cont.Path(), conf)
	if err != nil {
		t.Fatal(err)
	}
	withPrev := attachtest.WithPrev(t, conf, res)
	if _, err := e.call(t, cni.CmdCheck, cont.Path(), withPrev); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	l := attachtest.Link(t, cont, "net1")
	if err := cont.H.LinkSetHardwareAddr(l, net.HardwareAddr{2, 0, 0, 0, 0, 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(t, cni.CmdCheck, cont.Path(), withPrev); err == nil {
		t.Error("CHECK passed with another MAC")
	}
}

// knit and the reference produce the same result and container state, and
// each one's DEL undoes the other's ADD (the alias convention is shared).
func TestSideBySideWithReference(t *testing.T) {
	e := newEnv(t)
	ref := e.bin(t, testutil.RequireRef(t, "host-device"))
	knit := e.bin(t, filepath.Join(testutil.PluginDir(t), "host-device"))
	for _, body := range []string{
		`"type":"host-device","device":"hd0"`,
		`"type":"host-device","device":"hd0",` + attachtest.Static("10.4.0.70/24", "10.4.0.1"),
	} {
		for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
			conf := attachtest.Conf(t, v, body, nil)
			var results []map[string]any
			var states [][]string
			for _, pair := range [][2]string{{ref, ref}, {knit, knit}, {ref, knit}, {knit, ref}} {
				cont := testutil.NewNS(t)
				req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1",
					Config: conf, Path: []string{testutil.RefDir}}
				out, err := testutil.Exec(context.Background(), pair[0], req)
				if err != nil {
					t.Fatalf("%s ADD: %v", pair[0], err)
				}
				results = append(results, attachtest.NormalizedResult(t, out, cont.Path()))
				states = append(states, attachtest.Snapshot(t, cont, "net1"))
				req.Command = cni.CmdDel
				if _, err := testutil.Exec(context.Background(), pair[1], req); err != nil {
					t.Fatalf("%s DEL: %v", pair[1], err)
				}
				e.back(t, cont)
				// The reference leaves hd0 down after DEL; tests need it up.
				if err := e.host.H.LinkSetUp(attachtest.Link(t, e.host, "hd0")); err != nil {
					t.Fatal(err)
				}
			}
			if !reflect.DeepEqual(results[0], results[1]) {
				t.Errorf("%s %s: results differ:\nref  %v\nknit %v", v, body, results[0], results[1])
			}
			if !reflect.DeepEqual(states[0], states[1]) {
				t.Errorf("%s %s: state differs:\nref  %q\nknit %q", v, body, states[0], states[1])
			}
		}
	}
}

// With host-local: the address is allocated on ADD and released by a DEL
// that has no namespace any more (the reference's leak, #1196).
func TestHostLocalReleasedWithoutNetns(t *testing.T) {
	e := newEnv(t)
	bin := e.bin(t, filepath.Join(testutil.PluginDir(t), "host-device"))
	dir := t.TempDir()
	conf := attachtest.Conf(t, "1.0.0", `"type":"host-device","device":"hd0",`+attachtest.HostLocal(dir, "10.4.0.0/24", "10.4.0.1"), nil)
	cont := testutil.NewNS(t)
	res := testutil.ExecAdd(t, bin, &cni.Request{ContainerID: "c1", Netns: cont.Path(), IfName: "net1", Config: conf})
	if a := attachtest.Allocations(t, dir); len(a) != 1 || a[0] != res.IPs[0].Address.IP.String() {
		t.Fatalf("allocations %v, result %v", a, res.IPs)
	}
	if err := testutil.Ping(cont, "10.4.0.1", ""); err != nil {
		t.Errorf("no traffic: %v", err)
	}
	// Move it back by hand, as the namespace's death would, then DEL
	// without CNI_NETNS.
	if _, err := e.call(t, cni.CmdDel, cont.Path(), attachtest.Conf(t, "1.0.0", `"type":"host-device","device":"hd0"`, nil)); err != nil {
		t.Fatal(err)
	}
	req := &cni.Request{Command: cni.CmdDel, ContainerID: "c1", IfName: "net1", Config: conf}
	if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Allocations(t, dir); len(a) != 0 {
		t.Errorf("DEL without netns left allocations %v", a)
	}
}
