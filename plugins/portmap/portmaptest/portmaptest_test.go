package portmaptest_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/portmap/portmaptest"
)

func hostState(t *testing.T, ns *testutil.NS) string {
	t.Helper()
	nft, _ := exec.Command("nsenter", "--net="+ns.Path(), "nft", "list", "ruleset").CombinedOutput()
	return string(nft)
}

// TestPopulate maps a few synthetic containers with knit's binary and with
// the reference, each in a namespace of its own.
func TestPopulate(t *testing.T) {
	testutil.RequireRoot(t)
	bins := map[string]string{"knit": testutil.PluginDir(t) + "/portmap"}
	if ref := testutil.RefDir + "/portmap"; exec.Command("test", "-x", ref).Run() == nil {
		bins["reference"] = ref
	}
	for name, bin := range bins {
		t.Run(name, func(t *testing.T) {
			ns := testutil.NewNS(t)
			if err := portmaptest.Populate(context.Background(), portmaptest.Exec(bin, ns.Path()), 0, 3, "0.4.0", "pop", nil); err != nil {
				t.Fatal(err)
			}
			s := hostState(t, ns)
			for i := range 3 {
				if !strings.Contains(s, fmt.Sprint(portmaptest.BasePort+i)) {
					t.Fatalf("port of container %d not mapped:\n%s", i, s)
				}
			}
		})
	}
}

func TestRequestRange(t *testing.T) {
	if _, err := portmaptest.Request(portmaptest.Max, "1.0.0", "n", nil); err == nil {
		t.Fatal("container beyond Max accepted")
	}
	if a, b := portmaptest.Addr(0), portmaptest.Addr(1); a.Equal(b) || a.String() != "10.128.0.2" {
		t.Fatalf("addresses %s %s", a, b)
	}
}
