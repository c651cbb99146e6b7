package masq_test

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/masq"
	"github.com/knit-cni/knit/pkg/nftowner"
	"github.com/knit-cni/knit/pkg/testutil"
)

func cidr(t *testing.T, s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return *n
}

func ruleset(t *testing.T, ns *testutil.NS) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+ns.Path(), "nft", "list", "table", "inet", masq.Table).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		t.Fatalf("nft: %v %s", err, out)
	}
	return string(out)
}

func owned(t *testing.T, ns *testutil.NS) []string {
	t.Helper()
	r, err := masq.Owned(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSetupTeardownGC: rules read back as nft(8) writes them; repeated
// setups keep one copy of the fixed rules; teardown and GC remove exactly
// their owners' rules.
func TestSetupTeardownGC(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	ctx := context.Background()
	a := nftowner.Owner{Network: "net1", ContainerID: "a", IfName: "eth0"}
	b := nftowner.Owner{Network: "net1", ContainerID: "b", IfName: "eth0"}
	other := nftowner.Owner{Network: "net2", ContainerID: "a", IfName: "eth0"}
	for _, x := range []struct {
		o     nftowner.Owner
		addrs []net.IPNet
	}{
		{a, []net.IPNet{cidr(t, "10.1.0.5/24"), cidr(t, "fd01::5/64")}},
		{b, []net.IPNet{cidr(t, "10.1.0.6/24")}},
		{other, []net.IPNet{cidr(t, "10.2.0.5/16")}},
	} {
		if err := masq.Setup(ctx, conn(t, ns), x.o, x.addrs); err != nil {
			t.Fatal(err)
		}
	}
	rs := ruleset(t, ns)
	for _, want := range []string{
		"ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 masquerade",
		"ip6 saddr fd01::5 ip6 daddr != fd01::/64 masquerade",
		"ip saddr 10.2.0.5 ip daddr != 10.2.0.0/16 masquerade",
		"ip daddr 224.0.0.0/4 return", "ip6 daddr ff00::/8 return", "goto masq_checks",
		"type nat hook postrouting priority srcnat",
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	if n := strings.Count(rs, "goto masq_checks"); n != 1 {
		t.Errorf("%d copies of the postrouting rules", n)
	}
	if err := masq.Teardown(ctx, conn(t, ns), a); err != nil {
		t.Fatal(err)
	}
	if got := owned(t, ns); len(got) != 2 || !strings.HasPrefix(got[0], b.Tag()) || !strings.HasPrefix(got[1], other.Tag()) {
		t.Fatalf("after teardown of a: %q", got)
	}
	if err := masq.GC(ctx, conn(t, ns), "net1", []cni.Attachment{{ContainerID: "a", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	if got := owned(t, ns); len(got) != 1 || !strings.HasPrefix(got[0], other.Tag()) {
		t.Fatalf("after GC of net1: %q, want net2's rule only", got)
	}
	for range 2 { // idempotent, and fine without a table
		if err := masq.Teardown(ctx, conn(t, ns), a); err != nil {
			t.Fatal(err)
		}
	}
	empty := testutil.NewNS(t)
	if err := masq.Teardown(ctx, conn(t, empty), a); err != nil {
		t.Fatalf("teardown without a table: %v", err)
	}
	if err := masq.GC(ctx, conn(t, empty), "net1", nil); err != nil {
		t.Fatalf("GC without a table: %v", err)
	}
}

// TestRepair: a table without knit's chains (created by hand, or left
// half-deleted) is repaired by Setup.
func TestRepair(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	if out, err := exec.Command("nsenter", "--net="+ns.Path(), "nft", "add", "table", "inet", masq.Table).CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	o := nftowner.Owner{Network: "n", ContainerID: "c", IfName: "eth0"}
	if err := masq.Setup(context.Background(), conn(t, ns), o, []net.IPNet{cidr(t, "10.8.0.2/24")}); err != nil {
		t.Fatal(err)
	}
	rs := ruleset(t, ns)
	if !strings.Contains(rs, "goto masq_checks") || !strings.Contains(rs, "ip saddr 10.8.0.2") {
		t.Fatalf("not repaired:\n%s", rs)
	}
}

// TestCanceled: a canceled context changes nothing.
func TestCanceled(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o := nftowner.Owner{Network: "n", ContainerID: "c", IfName: "eth0"}
	if err := masq.Setup(ctx, conn(t, ns), o, []net.IPNet{cidr(t, "10.9.0.2/24")}); err == nil {
		t.Fatal("Setup ran with a canceled context")
	}
	if got := owned(t, ns); len(got) != 0 {
		t.Fatalf("rules %q", got)
	}
}

// conn opens an nftables connection in ns, closed at cleanup.
func conn(t *testing.T, ns *testutil.NS) *nftables.Conn {
	t.Helper()
	c, err := nftowner.Open(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseLasting() })
	return c
}
