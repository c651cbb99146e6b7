package ptp_test

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nftowner"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestEveryVersion runs ADD, CHECK and DEL (twice) through the binary in
// every spec version and checks the result and both ends' routing.
func TestEveryVersion(t *testing.T) {
	bin, dir := knitBin(t)
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			w := newWorld(t)
			c := testutil.NewNS(t)
			cfg := conf(v, w.ipam("10.60.0.0/24"))
			req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: c.Path(), IfName: "eth0", Config: cfg}
			out, err := w.exec(bin, req, dir)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var raw struct {
				CNIVersion string           `json:"cniVersion"`
				IPs        []map[string]any `json:"ips"`
			}
			if err := json.Unmarshal(out, &raw); err != nil || raw.CNIVersion != v || len(raw.IPs) != 1 {
				t.Fatalf("result %s: %v", out, err)
			}
			if _, has := raw.IPs[0]["version"]; has != (v < "1.0.0") || raw.IPs[0]["interface"] != float64(1) {
				t.Fatalf("%s: ip %v", v, raw.IPs[0])
			}
			res := testutil.DecodeResult(t, cfg, out)
			if len(res.Interfaces) != 2 || !strings.HasPrefix(res.Interfaces[0].Name, "veth") ||
				res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != c.Path() {
				t.Fatalf("interfaces %s", mustJSON(t, res.Interfaces))
			}
			checkRouting(t, w, c, res.Interfaces[0].Name)
			if v >= "0.4.0" {
				req.Command, req.Config = cni.CmdCheck, attachtest.WithPrev(t, cfg, res)
				if _, err := w.exec(bin, req, dir); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			req.Command, req.Config = cni.CmdDel, attachtest.WithPrev(t, cfg, res)
			for i := range 2 {
				if _, err := w.exec(bin, req, dir); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			attachtest.NoLink(t, c, "eth0")
			attachtest.NoLink(t, w.host, res.Interfaces[0].Name)
			if w.held("10.60.0.2") {
				t.Fatal("address still held after DEL")
			}
		})
	}
}

// checkRouting checks the reference's ptp layout for 10.60.0.2/24 via
// 10.60.0.1.
func checkRouting(t *testing.T, w *world, c *testutil.NS, hostVeth string) {
	t.Helper()
	eth0, hv := link(t, c, "eth0"), link(t, w.host, hostVeth)
	if got := addrs(t, c.H, eth0); !reflect.DeepEqual(got, []string{"10.60.0.2/24"}) {
		t.Fatalf("container addresses %v", got)
	}
	want := []string{"0.0.0.0/0 via 10.60.0.1 scope universe", "10.60.0.0/24 via 10.60.0.1 scope universe src 10.60.0.2",
		"10.60.0.1/32 scope link src 10.60.0.2"}
	if got := linkRoutes(t, c.H, eth0); !reflect.DeepEqual(got, want) {
		t.Fatalf("container routes\n%q\nwant\n%q", got, want)
	}
	if got := addrs(t, w.host.H, hv); !reflect.DeepEqual(got, []string{"10.60.0.1/32"}) {
		t.Fatalf("host veth addresses %v", got)
	}
	if got := linkRoutes(t, w.host.H, hv); !reflect.DeepEqual(got, []string{"10.60.0.2/32 scope host"}) {
		t.Fatalf("host routes %q", got)
	}
	if testutil.Sysctl(t, w.host, "net/ipv4/ip_forward") != "1" {
		t.Fatal("forwarding off")
	}
}

// TestTraffic: host and container reach each other in both families, and
// two containers reach each other through the host (ICMP and TCP).
func TestTraffic(t *testing.T) {
	w := newWorld(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	cfg := conf("1.0.0", `"mtu":1400,`+w.ipam("10.61.0.0/24", "fd61::/64"))
	r1, r2 := w.add(c1, "c1", cfg), w.add(c2, "c2", cfg)
	for _, v4 := range []bool{true, false} {
		testutil.MustPing(t, w.host, ipOf(t, r1, v4).String())
		gw := "10.61.0.1"
		if !v4 {
			gw = "fd61::1"
		}
		testutil.MustPing(t, c1, gw)
		testutil.MustPing(t, c1, ipOf(t, r2, v4).String())
	}
	got := testutil.ServeOnce(t, c2, ipOf(t, r2, true).String()+":7100")
	testutil.DialGreeting(t, c1, ipOf(t, r2, true).String()+":7100")
	if seen := testutil.Seen(t, got); seen != ipOf(t, r1, true).String() {
		t.Fatalf("c2 saw %s, want c1's %s", seen, ipOf(t, r1, true))
	}
	for _, l := range []netlink.Link{link(t, c1, "eth0"), link(t, w.host, r1.Interfaces[0].Name)} {
		if l.Attrs().MTU != 1400 {
			t.Fatalf("%s MTU %d, want 1400", l.Attrs().Name, l.Attrs().MTU)
		}
	}
	for _, ns := range []*testutil.NS{c1, w.host} {
		as, _ := nlsafe.AddrList(ns.H, nil, netlink.FAMILY_V6)
		for _, a := range as {
			if a.Flags&unix.IFA_F_TENTATIVE != 0 && !a.IP.IsLinkLocalUnicast() {
				t.Fatalf("%s tentative in %s: ADD must not leave DAD pending", a.IPNet, ns.Path())
			}
		}
	}
}

// TestIPMasq: traffic to the outside is masqueraded; DEL removes exactly
// the container's rules.
func TestIPMasq(t *testing.T) {
	w := newWorld(t)
	out := testutil.NewNS(t)
	testutil.Veth(t, w.host, "up0", out, "wan0")
	attachtest.AddAddr(t, w.host, "up0", "192.168.251.1/24")
	attachtest.AddAddr(t, out, "wan0", "192.168.251.2/24")
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	cfg := conf("1.0.0", `"ipMasq":true,`+w.ipam("10.62.0.0/24"))
	w.add(c1, "c1", cfg)
	w.add(c2, "c2", cfg)
	if r := masqRules(t, w); nftowner.CountContainer(r, "c1") != 1 || nftowner.CountContainer(r, "c2") != 1 {
		t.Fatalf("masquerade rules %q", r)
	}
	got := testutil.ServeOnce(t, out, "192.168.251.2:7101")
	testutil.DialGreeting(t, c1, "192.168.251.2:7101")
	if seen := testutil.Seen(t, got); seen != "192.168.251.1" {
		t.Fatalf("outside saw %s, want the host's 192.168.251.1", seen)
	}
	w.del(c1, "c1", cfg)
	if r := masqRules(t, w); nftowner.CountContainer(r, "c1") != 0 || nftowner.CountContainer(r, "c2") != 1 {
		t.Fatalf("after DEL c1: %q", r)
	}
}

// TestRollback: a failure after IPAM (no gateway to route through)
// releases the address and leaves no veth; an exhausted range leaves
// nothing either.
func TestRollback(t *testing.T) {
	w := newWorld(t)
	fake := &attachtest.FakeIPAM{Result: attachtest.IPResult(t, "10.63.0.5/24", "")}
	w.reg["fake"] = fake
	c := testutil.NewNS(t)
	_, err := w.call(cni.CmdAdd, c, "c1", conf("1.0.0", `"ipMasq":true,"ipam":{"type":"fake"}`))
	attachtest.WantCode(t, err, 7, "gateway")
	if _, dels, _, _ := fake.Counts(); dels != 1 {
		t.Fatalf("IPAM DEL %d times, want 1", dels)
	}
	if l := attachtest.Links(t, w.host); len(l) != 0 {
		t.Fatalf("host links %v left", l)
	}
	attachtest.NoLink(t, c, "eth0")

	ipam := `"ipam":{"type":"host-local","dataDir":"` + w.data + `","ranges":[[{"subnet":"10.63.1.0/24","rangeStart":"10.63.1.9","rangeEnd":"10.63.1.9"}]]}`
	w.add(c, "c1", conf("1.0.0", ipam))
	c2 := testutil.NewNS(t)
	if _, err := w.call(cni.CmdAdd, c2, "c2", conf("1.0.0", ipam)); err == nil {
		t.Fatal("ADD succeeded on an exhausted range")
	}
	if l := attachtest.Links(t, w.host); len(l) != 1 {
		t.Fatalf("host links %v, want only c1's veth", l)
	}
	attachtest.NoLink(t, c2, "eth0")
}

// TestDelNamespaceGone: DEL succeeds without the namespace and still
// releases the address and the masquerade rules.
func TestDelNamespaceGone(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	cfg := conf("1.0.0", `"ipMasq":true,`+w.ipam("10.64.0.0/24"))
	res := w.add(c, "c1", cfg)
	path := c.Path()
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := w.do(&cni.Request{Command: cni.CmdDel, ContainerID: "c1", Netns: path, IfName: "eth0", Config: cfg}); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	if w.held(ipOf(t, res, true).String()) {
		t.Fatal("address still held")
	}
	if r := masqRules(t, w); len(r) != 0 {
		t.Fatalf("masquerade rules left: %q", r)
	}
}

// TestConfigErrors: bad input fails with the right code and creates nothing.
func TestConfigErrors(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	for _, tc := range []struct {
		name, config string
		code         uint
		field        string
	}{
		{"no ipam", `{"cniVersion":"1.0.0","name":"n","type":"ptp"}`, 7, "ipam"},
		{"mtu", `{"cniVersion":"1.0.0","name":"n","type":"ptp","mtu":-5,` + w.ipam("10.65.0.0/24") + `}`, 7, "mtu"},
		{"backend", `{"cniVersion":"1.0.0","name":"n","type":"ptp","ipMasqBackend":"ipfw",` + w.ipam("10.65.0.0/24") + `}`, 7, "ipMasqBackend"},
		{"type", `{"cniVersion":"1.0.0","name":"n","type":"ptp","ipMasq":1}`, 6, "ipMasq"},
		{"version", `{"cniVersion":"0.0.9","name":"n","type":"ptp"}`, 1, ""},
	} {
		_, err := w.call(cni.CmdAdd, c, "c1", []byte(tc.config))
		attachtest.WantCode(t, err, tc.code, tc.field)
		if l := attachtest.Links(t, w.host); len(l) != 0 {
			t.Fatalf("%s: host links %v", tc.name, l)
		}
	}
}

// TestCheck: CHECK passes after ADD, fails on drift or without prevResult.
func TestCheck(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	cfg := conf("1.0.0", w.ipam("10.66.0.0/24"))
	res := w.add(c, "c1", cfg)
	check := func(r *current.Result) error {
		_, err := w.call(cni.CmdCheck, c, "c1", attachtest.WithPrev(t, cfg, r))
		return err
	}
	if err := check(res); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if _, err := w.call(cni.CmdCheck, c, "c1", cfg); err == nil {
		t.Fatal("CHECK passed without prevResult")
	}
	eth0 := link(t, c, "eth0")
	gw := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &res.Routes[0].Dst, Gw: res.IPs[0].Gateway}
	if err := c.H.RouteDel(gw); err != nil {
		t.Fatal(err)
	}
	if check(res) == nil {
		t.Fatal("CHECK passed without the default route")
	}
}

// TestGC removes the rules and addresses of attachments not listed.
func TestGC(t *testing.T) {
	w := newWorld(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	body := `"ipMasq":true,` + w.ipam("10.67.0.0/24")
	w.add(c1, "c1", conf("1.1.0", body))
	w.add(c2, "c2", conf("1.1.0", body))
	gc := conf("1.1.0", body+`,"cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth0"}]`)
	if _, err := w.do(&cni.Request{Command: cni.CmdGC, Config: gc}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if r := masqRules(t, w); nftowner.CountContainer(r, "c1") != 0 || nftowner.CountContainer(r, "c2") != 1 {
		t.Fatalf("after GC: %q", r)
	}
	if w.held("10.67.0.2") || !w.held("10.67.0.3") {
		t.Fatal("GC did not release exactly c1's address")
	}
}

// TestChained appends to prevResult.
func TestChained(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	prev := &current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "lo", Sandbox: c.Path()}}}
	res := w.add(c, "c1", attachtest.Conf(t, "1.0.0", `"type":"ptp",`+w.ipam("10.68.0.0/24"), prev))
	if len(res.Interfaces) != 3 || res.Interfaces[2].Name != "eth0" || *res.IPs[0].Interface != 2 {
		t.Fatalf("result %s", mustJSON(t, res))
	}
}
