package dummy_test

// dummy links are missing from the development host's kernel: these tests
// run in the full-kernel lane (make test-kernel), in process, with knit's
// static IPAM.

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/builtin"
)

type env struct {
	reg  cni.Registry
	ipam *attachtest.FakeIPAM
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireKernelFeature(t, "dummy")
	e := &env{reg: builtin.Registry(), ipam: &attachtest.FakeIPAM{}}
	e.reg["fake-ipam"] = e.ipam
	return e
}

func (e *env) call(t *testing.T, cmd cni.Command, netnsPath string, config []byte) (*current.Result, error) {
	t.Helper()
	req := &cni.Request{Command: cmd, ContainerID: "c1", Netns: netnsPath, IfName: "dummy0", Config: config}
	res, err := testutil.Call(context.Background(), e.reg, "dummy", req)
	if err != nil || res == nil {
		return nil, err
	}
	return attachtest.ResultOf(t, res), nil
}

func TestAddCheckDelEveryVersion(t *testing.T) {
	e := newEnv(t)
	for i, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			cont, peer := testutil.NewNS(t), testutil.NewNS(t)
			addr := fmt.Sprintf("10.6.0.%d/32", 10+i)
			conf := attachtest.Conf(t, v, `"type":"dummy",`+attachtest.Static(addr, ""), nil)
			res, err := e.call(t, cni.CmdAdd, cont.Path(), conf)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			ips := attachtest.Printed(t, res, v)["ips"].([]any)
			if _, has := ips[0].(map[string]any)["version"]; has != (v < "1.0.0") {
				t.Errorf("ips[].version present=%v in %s", has, v)
			}
			l := attachtest.Link(t, cont, "dummy0")
			if _, ok := l.(*netlink.Dummy); !ok || l.Attrs().Flags&net.FlagUp == 0 {
				t.Fatalf("dummy0 is %T, flags %v", l, l.Attrs().Flags)
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Sandbox != cont.Path() || *res.IPs[0].Interface != 0 {
				t.Errorf("result %+v", res)
			}
			// Reach the dummy's address from outside through a veth.
			testutil.Veth(t, cont, "eth0", peer, "p0")
			attachtest.AddAddr(t, cont, "eth0", "10.66.0.2/24")
			attachtest.AddAddr(t, peer, "p0", "10.66.0.1/24")
			_, dst, _ := net.ParseCIDR(addr)
			if err := peer.H.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP("10.66.0.2")}); err != nil {
				t.Fatal(err)
			}
			if err := testutil.Ping(peer, dst.IP.String(), ""); err != nil {
				t.Errorf("dummy address unreachable: %v", err)
			}
			if v >= "0.4.0" {
				if _, err := e.call(t, cni.CmdCheck, cont.Path(), attachtest.WithPrev(t, conf, res)); err != nil {
					t.Errorf("CHECK: %v", err)
				}
				if err := cont.H.LinkSetDown(l); err != nil {
					t.Fatal(err)
				}
				if _, err := e.call(t, cni.CmdCheck, cont.Path(), attachtest.WithPrev(t, conf, res)); err == nil {
					t.Error("CHECK passed with the dummy down")
				}
			}
			for range 2 {
				if _, err := e.call(t, cni.CmdDel, cont.Path(), attachtest.WithPrev(t, conf, res)); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			attachtest.NoLink(t, cont, "dummy0")
		})
	}
}

func TestIPAMRequired(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	_, err := e.call(t, cni.CmdAdd, cont.Path(), attachtest.Conf(t, "1.0.0", `"type":"dummy"`, nil))
	attachtest.WantCode(t, err, types.ErrInvalidNetworkConfig, "ipam")
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("rejected ADD left %v", l)
	}
}

func TestFailureRollback(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"dummy","ipam":{"type":"fake-ipam"}`, nil)
	e.ipam.AddErr = cni.Errorf(cni.ErrRangeExhausted, "exhausted")
	_, err := e.call(t, cni.CmdAdd, cont.Path(), conf)
	attachtest.WantCode(t, err, cni.ErrRangeExhausted)
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("failed ADD left %v", l)
	}
	e.ipam.AddErr = nil
	e.ipam.Result = attachtest.IPResult(t, "10.6.1.2/24", "", "192.168.0.0/16,172.31.9.9")
	if _, err := e.call(t, cni.CmdAdd, cont.Path(), conf); err == nil {
		t.Fatal("ADD with an unreachable gateway succeeded")
	}
	if l := attachtest.Links(t, cont); len(l) != 0 {
		t.Errorf("failed ADD left %v", l)
	}
	if adds, dels, _, _ := e.ipam.Counts(); adds != 2 || dels != 1 {
		t.Errorf("IPAM adds=%d dels=%d, want 2, 1", adds, dels)
	}
}

func TestIfNameTaken(t *testing.T) {
	e := newEnv(t)
	cont := testutil.NewNS(t)
	if err := cont.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "dummy0"}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.call(t, cni.CmdAdd, cont.Path(), attachtest.Conf(t, "1.0.0", `"type":"dummy",`+attachtest.Static("10.6.2.2/32", ""), nil))
	attachtest.WantCode(t, err, cni.ErrLinkExists)
}

func TestDelWithoutNamespace(t *testing.T) {
	e := newEnv(t)
	conf := attachtest.Conf(t, "1.0.0", `"type":"dummy","ipam":{"type":"fake-ipam"}`, nil)
	for _, p := range []string{"", "/var/run/netns/knit-gone"} {
		if _, err := e.call(t, cni.CmdDel, p, conf); err != nil {
			t.Errorf("DEL with netns %q: %v", p, err)
		}
	}
	if _, dels, _, _ := e.ipam.Counts(); dels != 2 {
		t.Errorf("IPAM DEL ran %d times, want 2", dels)
	}
}

func TestHostLocal(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	conf := attachtest.Conf(t, "1.0.0", `"type":"dummy",`+attachtest.HostLocal(dir, "10.6.5.0/24", ""), nil)
	cont := testutil.NewNS(t)
	res, err := e.call(t, cni.CmdAdd, cont.Path(), conf)
	if err != nil {
		t.Fatal(err)
	}
	attachtest.HasAddr(t, cont, "dummy0", res.IPs[0].Address.String())
	if a := attachtest.Allocations(t, dir); len(a) != 1 {
		t.Fatalf("allocations %v", a)
	}
	if _, err := e.call(t, cni.CmdDel, cont.Path(), conf); err != nil {
		t.Fatal(err)
	}
	if a := attachtest.Allocations(t, dir); len(a) != 0 {
		t.Errorf("DEL left allocations %v", a)
	}
}
