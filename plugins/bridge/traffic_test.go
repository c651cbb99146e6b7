package bridge_test

import (
	"context"
	"testing"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/masq"
	"github.com/knit-cni/knit/pkg/nftowner"
	"github.com/knit-cni/knit/pkg/spoofchk"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestTwoContainers: two containers on one bridge reach each other (ICMP
// both families, TCP) and the gateway.
func TestTwoContainers(t *testing.T) {
	w := newWorld(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	cfg := conf("1.0.0", `"bridge":"kbr0","isGateway":true,`+w.ipam("10.20.0.0/24", "fd20::/64"))
	r1, r2 := w.add(c1, "c1", cfg), w.add(c2, "c2", cfg)
	testutil.MustPing(t, c1, ipOf(t, r2, true).String())
	testutil.MustPing(t, c2, ipOf(t, r1, false).String())
	testutil.MustPing(t, c1, "10.20.0.1")
	testutil.MustPing(t, w.host, ipOf(t, r1, true).String())
	got := testutil.ServeOnce(t, c2, ipOf(t, r2, true).String()+":7000")
	testutil.DialGreeting(t, c1, ipOf(t, r2, true).String()+":7000")
	if seen := testutil.Seen(t, got); seen != ipOf(t, r1, true).String() {
		t.Fatalf("c2 saw the connection from %s, want c1's %s", seen, ipOf(t, r1, true))
	}
}

// outside adds a namespace reachable from the scratch host over a veth,
// 192.168.250.2/24 (host side .1): "the world" for masquerade tests.
func outside(t *testing.T, w *world) *testutil.NS {
	out := testutil.NewNS(t)
	testutil.Veth(t, w.host, "up0", out, "wan0")
	attachtest.AddAddr(t, w.host, "up0", "192.168.250.1/24")
	attachtest.AddAddr(t, out, "wan0", "192.168.250.2/24")
	return out
}

// masqRules returns the owner comments of the masquerade rules in the host.
func masqRules(t *testing.T, w *world) []string {
	t.Helper()
	r, err := masq.Owned(w.host.Fd())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestIPMasq: traffic leaving the subnet is masqueraded to the host's
// address, traffic inside it is not; DEL removes exactly its own rules.
func TestIPMasq(t *testing.T) {
	w := newWorld(t)
	out := outside(t, w)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	cfg := conf("1.0.0", `"bridge":"kbr0","isDefaultGateway":true,"ipMasq":true,`+w.ipam("10.21.0.0/24", "fd21::/64"))
	r1, r2 := w.add(c1, "c1", cfg), w.add(c2, "c2", cfg)
	rules := masqRules(t, w)
	if nftowner.CountContainer(rules, "c1") != 2 || nftowner.CountContainer(rules, "c2") != 2 {
		t.Fatalf("masquerade rules %q, want 2 per container", rules)
	}
	got := testutil.ServeOnce(t, out, "192.168.250.2:7001")
	testutil.DialGreeting(t, c1, "192.168.250.2:7001")
	if seen := testutil.Seen(t, got); seen != "192.168.250.1" {
		t.Fatalf("outside saw %s, want the host's 192.168.250.1 (masquerade)", seen)
	}
	got = testutil.ServeOnce(t, c2, ipOf(t, r2, true).String()+":7002")
	testutil.DialGreeting(t, c1, ipOf(t, r2, true).String()+":7002")
	if seen := testutil.Seen(t, got); seen != ipOf(t, r1, true).String() {
		t.Fatalf("c2 saw %s, want c1's own address (no masquerade inside the subnet)", seen)
	}
	w.del(c1, "c1", cfg)
	rules = masqRules(t, w)
	if nftowner.CountContainer(rules, "c1") != 0 || nftowner.CountContainer(rules, "c2") != 2 {
		t.Fatalf("after DEL c1: rules %q, want only c2's two", rules)
	}
	w.del(c2, "c2", cfg)
	if rules = masqRules(t, w); len(rules) != 0 {
		t.Fatalf("after DEL c2: rules %q left", rules)
	}
}

// TestIptablesBackendMapped: ipMasqBackend "iptables" gets the same
// nftables rules.
func TestIptablesBackendMapped(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	w.add(c, "c1", conf("1.0.0", `"bridge":"kbr0","ipMasq":true,"ipMasqBackend":"iptables",`+w.ipam("10.22.0.0/24")))
	if n := nftowner.CountContainer(masqRules(t, w), "c1"); n != 1 {
		t.Fatalf("%d masquerade rules, want 1", n)
	}
}

// spoofRules returns the owner comments of the spoof-check rules in the host.
func spoofRules(t *testing.T, w *world) []string {
	t.Helper()
	r, err := spoofchk.Owned(w.host.Fd())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestMacSpoofChk: frames from the container with another source MAC are
// dropped at the bridge; DEL removes the rule.
func TestMacSpoofChk(t *testing.T) {
	w := newWorld(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	cfg := conf("1.0.0", `"bridge":"kbr0","macspoofchk":true,`+w.ipam("10.23.0.0/24"))
	w.add(c1, "c1", cfg)
	r2 := w.add(c2, "c2", cfg)
	if n := nftowner.CountContainer(spoofRules(t, w), "c1"); n != 1 {
		t.Fatalf("%d spoof-check rules for c1, want 1", n)
	}
	target := ipOf(t, r2, true).String()
	testutil.MustPing(t, c1, target)
	eth0 := link(t, c1, "eth0")
	if err := c1.H.LinkSetHardwareAddr(eth0, []byte{0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f}); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.In(context.Background(), c1, "ip", "neigh", "flush", "all"); err != nil {
		t.Fatal(err)
	}
	testutil.NoPing(t, c1, target)
	w.del(c1, "c1", cfg)
	if rules := spoofRules(t, w); nftowner.CountContainer(rules, "c1") != 0 || nftowner.CountContainer(rules, "c2") != 1 {
		t.Fatalf("after DEL c1: spoof-check rules %q", rules)
	}
}

// TestPortIsolation: isolated ports reach the bridge (gateway) but not
// each other.
func TestPortIsolation(t *testing.T) {
	w := newWorld(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	cfg := conf("1.0.0", `"bridge":"kbr0","isGateway":true,"portIsolation":true,`+w.ipam("10.24.0.0/24"))
	w.add(c1, "c1", cfg)
	r2 := w.add(c2, "c2", cfg)
	testutil.MustPing(t, c1, "10.24.0.1")
	testutil.NoPing(t, c1, ipOf(t, r2, true).String())
	pi, err := w.host.H.LinkGetProtinfo(link(t, w.host, r2.Interfaces[1].Name))
	if err != nil || !pi.Isolated {
		t.Fatalf("port not isolated: %+v %v", pi, err)
	}
}
