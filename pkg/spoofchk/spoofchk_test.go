package spoofchk_test

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nftowner"
	"github.com/knit-cni/knit/pkg/spoofchk"
	"github.com/knit-cni/knit/pkg/testutil"
)

func ruleset(t *testing.T, ns *testutil.NS) string {
	t.Helper()
	out, _ := exec.Command("nsenter", "--net="+ns.Path(), "nft", "list", "table", "bridge", spoofchk.Table).CombinedOutput()
	return string(out)
}

// TestSetupTeardownGC: the rule reads back as nft(8) writes it; teardown
// and GC remove exactly their owners'.
func TestSetupTeardownGC(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	ctx := context.Background()
	mac, _ := net.ParseMAC("0a:58:0a:01:00:05")
	a := nftowner.Owner{Network: "net1", ContainerID: "a", IfName: "eth0"}
	b := nftowner.Owner{Network: "net1", ContainerID: "b", IfName: "eth0"}
	if err := spoofchk.Setup(ctx, conn(t, ns), a, "veth1234", mac); err != nil {
		t.Fatal(err)
	}
	if err := spoofchk.Setup(ctx, conn(t, ns), b, "veth5678", mac); err != nil {
		t.Fatal(err)
	}
	rs := ruleset(t, ns)
	for _, want := range []string{
		`iifname "veth1234" ether saddr != 0a:58:0a:01:00:05 drop comment "` + a.Comment() + `"`,
		"type filter hook prerouting priority dstnat; policy accept;",
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	if err := spoofchk.Teardown(ctx, conn(t, ns), a); err != nil {
		t.Fatal(err)
	}
	if rs = ruleset(t, ns); strings.Contains(rs, "veth1234") || !strings.Contains(rs, "veth5678") {
		t.Fatalf("after teardown of a:\n%s", rs)
	}
	if err := spoofchk.GC(ctx, conn(t, ns), "net1", []cni.Attachment{}); err != nil {
		t.Fatal(err)
	}
	if rs = ruleset(t, ns); strings.Contains(rs, "veth5678") {
		t.Fatalf("after GC:\n%s", rs)
	}
	if err := spoofchk.Teardown(ctx, conn(t, testutil.NewNS(t)), a); err != nil {
		t.Fatalf("teardown without a table: %v", err)
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
