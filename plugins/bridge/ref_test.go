package bridge_test

import (
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"sort"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestSideBySide runs the reference bridge and knit's on the same config,
// each in its own scratch host, and compares the normalized results and
// the kernel state they leave: interfaces and their order, addresses,
// routes, bridge membership, port flags, MTUs and sysctls; with ipMasq,
// what an outside server sees.
func TestSideBySide(t *testing.T) {
	ref := testutil.RequireRef(t, "bridge")
	testutil.RequireRef(t, "host-local")
	bin, dir := knitBin(t, "bridge")
	cases := []struct{ name, body string }{
		{"default-gateway-dualstack", `"isDefaultGateway":true,"hairpinMode":true,"mtu":1400,%s`},
		{"gateway-with-routes", `"isGateway":true,%s`},
		{"l3-masq", `"isDefaultGateway":true,"ipMasq":true,%s`},
		{"promisc", `"promiscMode":true,%s`},
		{"enabledad", `"enabledad":true,%s`},
		{"l2", `"ipam":{}`},
	}
	for _, tc := range cases {
		for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
			t.Run(tc.name+"/"+v, func(t *testing.T) {
				rw, kw := newWorld(t), newWorld(t)
				rc, kc := testutil.NewNS(t), testutil.NewNS(t)
				mk := func(w *world) []byte {
					body := tc.body
					if strings.Contains(body, "%s") {
						ipam := fmt.Sprintf(`"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.40.0.0/24"}],[{"subnet":"fd40::/64"}]],"routes":[{"dst":"192.168.99.0/24"},{"dst":"fd99::/64"}]}`, w.data)
						if strings.HasPrefix(tc.name, "default") || tc.name == "l3-masq" {
							ipam = fmt.Sprintf(`"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.40.0.0/24"}],[{"subnet":"fd40::/64"}]]}`, w.data)
						}
						body = fmt.Sprintf(body, ipam)
					}
					return conf(v, `"bridge":"kbr0",`+body)
				}
				rcfg, kcfg := mk(rw), mk(kw)
				rout := sideAdd(t, rw, ref, rc, rcfg, testutil.RefDir)
				kout := sideAdd(t, kw, bin, kc, kcfg, dir)
				if rn, kn := normalize(t, rout, rc), normalize(t, kout, kc); rn != kn {
					t.Errorf("results differ\nreference: %s\nknit:      %s", rn, kn)
				}
				rs, ks := snapshot(t, rw, rc, testutil.DecodeResult(t, rcfg, rout)), snapshot(t, kw, kc, testutil.DecodeResult(t, kcfg, kout))
				if !reflect.DeepEqual(rs, ks) {
					t.Errorf("kernel state differs\nreference: %s\nknit:      %s", mustJSON(t, rs), mustJSON(t, ks))
				}
				if tc.name == "l3-masq" {
					for _, w := range []*world{rw, kw} {
						c := rc
						if w == kw {
							c = kc
						}
						out := outside(t, w)
						got := testutil.ServeOnce(t, out, "192.168.250.2:7010")
						testutil.DialGreeting(t, c, "192.168.250.2:7010")
						if seen := testutil.Seen(t, got); seen != "192.168.250.1" {
							t.Errorf("outside saw %s, want masquerade to 192.168.250.1", seen)
						}
					}
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

// normalize replaces what differs by construction between two runs (MACs,
// the random host veth name, the sandbox path) and drops an empty dns.
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
		if _, ok := i["mac"]; ok {
			i["mac"] = "MAC"
		}
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

// state is the kernel state ADD is compared on.
type state struct {
	ContAddrs, ContRoutes, BridgeAddrs []string
	ContMTU, PortMTU, BridgeMTU        int
	ContUp, PortOnBridge, Hairpin      bool
	BridgePromisc                      bool
	Sysctls                            map[string]string
}

func snapshot(t *testing.T, w *world, c *testutil.NS, res *current.Result) state {
	t.Helper()
	eth0, br := link(t, c, "eth0"), link(t, w.host, "kbr0")
	port := link(t, w.host, res.Interfaces[1].Name)
	pi, err := w.host.H.LinkGetProtinfo(port)
	if err != nil {
		t.Fatal(err)
	}
	s := state{
		ContAddrs: addrs(t, c.H, eth0), BridgeAddrs: addrs(t, w.host.H, br), ContRoutes: routes(t, c.H),
		ContMTU: eth0.Attrs().MTU, PortMTU: port.Attrs().MTU, BridgeMTU: br.Attrs().MTU,
		ContUp: eth0.Attrs().Flags&net.FlagUp != 0, PortOnBridge: port.Attrs().MasterIndex == br.Attrs().Index,
		Hairpin: pi.Hairpin, BridgePromisc: br.Attrs().Promisc != 0, Sysctls: map[string]string{},
	}
	for _, k := range []string{"net/ipv6/conf/eth0/accept_dad", "net/ipv4/conf/eth0/arp_notify", "net/ipv6/conf/eth0/enhanced_dad"} {
		s.Sysctls["container "+k] = testutil.Sysctl(t, c, k)
	}
	for _, k := range []string{"net/ipv6/conf/kbr0/accept_ra", "net/ipv6/conf/" + port.Attrs().Name + "/accept_ra",
		"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		s.Sysctls["host "+strings.Replace(k, port.Attrs().Name, "VETH", 1)] = testutil.Sysctl(t, w.host, k)
	}
	return s
}

// addrs lists a link's addresses other than link-local, flags ignored.
func addrs(t *testing.T, h *netlink.Handle, l netlink.Link) []string {
	t.Helper()
	as, err := nlsafe.AddrList(h, l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		if !a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IPNet.String())
		}
	}
	sort.Strings(out)
	return out
}

// routes lists the main table's routes other than link-local ones.
func routes(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	rs, err := nlsafe.RouteListFiltered(h, netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, fmt.Sprintf("%v via %v scope %v src %v proto %d", r.Dst, r.Gw, r.Scope, r.Src, r.Protocol))
	}
	sort.Strings(out)
	return out
}
