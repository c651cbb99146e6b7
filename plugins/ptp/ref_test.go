package ptp_test

import (
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestSideBySide runs the reference ptp and knit's on the same config in
// separate scratch hosts and compares normalized results and the routing
// both leave on each end, MTUs and sysctls.
func TestSideBySide(t *testing.T) {
	ref := testutil.RequireRef(t, "ptp")
	testutil.RequireRef(t, "host-local")
	bin, dir := knitBin(t)
	for _, tc := range []struct{ name, body string }{
		{"v4", `"mtu":1400,%s`},
		{"dualstack-masq", `"ipMasq":true,%s`},
	} {
		for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
			t.Run(tc.name+"/"+v, func(t *testing.T) {
				rw, kw := newWorld(t), newWorld(t)
				rc, kc := testutil.NewNS(t), testutil.NewNS(t)
				mk := func(w *world) []byte {
					subnets := []string{"10.70.0.0/24"}
					if strings.HasPrefix(tc.name, "dual") {
						subnets = append(subnets, "fd70::/64")
					}
					return conf(v, fmt.Sprintf(tc.body, w.ipam(subnets...)))
				}
				rcfg, kcfg := mk(rw), mk(kw)
				rout := sideAdd(t, rw, ref, rc, rcfg, testutil.RefDir)
				kout := sideAdd(t, kw, bin, kc, kcfg, dir)
				if rn, kn := normalize(t, rout, rc), normalize(t, kout, kc); rn != kn {
					t.Errorf("results differ\nreference: %s\nknit:      %s", rn, kn)
				}
				rs := snapshot(t, rw, rc, testutil.DecodeResult(t, rcfg, rout))
				ks := snapshot(t, kw, kc, testutil.DecodeResult(t, kcfg, kout))
				if !reflect.DeepEqual(rs, ks) {
					t.Errorf("kernel state differs\nreference: %s\nknit:      %s", mustJSON(t, rs), mustJSON(t, ks))
				}
			})
		}
	}
}

func sideAdd(t *testing.T, w *world, bin string, c *testutil.NS, cfg []byte, dir string) []byte {
	t.Helper()
	req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: c.Path(), IfName: "eth0", Config: cfg}
	out, err := w.exec(bin, req, dir)
	if err != nil {
		t.Fatalf("%s ADD: %v", bin, err)
	}
	return out
}

func normalize(t *testing.T, out []byte, c *testutil.NS) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if d, ok := m["dns"].(map[string]any); ok && len(d) == 0 {
		delete(m, "dns")
	}
	ifs, _ := m["interfaces"].([]any)
	for _, i := range ifs {
		i := i.(map[string]any)
		i["mac"] = "MAC"
		if strings.HasPrefix(i["name"].(string), "veth") {
			i["name"] = "VETH"
		}
		if i["sandbox"] == c.Path() {
			i["sandbox"] = "SANDBOX"
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

type state struct {
	ContAddrs, ContRoutes, HostAddrs, HostRoutes []string
	ContMTU, HostMTU                             int
	ContUp, HostUp                               bool
	Sysctls                                      map[string]string
}

func snapshot(t *testing.T, w *world, c *testutil.NS, res *current.Result) state {
	t.Helper()
	eth0, hv := link(t, c, "eth0"), link(t, w.host, res.Interfaces[0].Name)
	s := state{
		ContAddrs: addrs(t, c.H, eth0), ContRoutes: linkRoutes(t, c.H, eth0),
		HostAddrs: addrs(t, w.host.H, hv), HostRoutes: linkRoutes(t, w.host.H, hv),
		ContMTU: eth0.Attrs().MTU, HostMTU: hv.Attrs().MTU,
		ContUp: eth0.Attrs().Flags&net.FlagUp != 0, HostUp: hv.Attrs().Flags&net.FlagUp != 0,
		Sysctls: map[string]string{},
	}
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv6/conf/" + hv.Attrs().Name + "/accept_ra"} {
		s.Sysctls["host "+strings.Replace(k, hv.Attrs().Name, "VETH", 1)] = testutil.Sysctl(t, w.host, k)
	}
	return s
}
