package ipvlan_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/testutil"
)

// The same config through /usr/lib/cni/ipvlan and knit's binary gives the
// same result (MACs aside) and container state. Runs in the full-kernel
// lane, which ships both.
func TestSideBySideWithReference(t *testing.T) {
	e := newEnv(t)
	ref := testutil.InHost(t, e.host.Path(), testutil.RequireRef(t, "ipvlan"))
	knit := testutil.InHost(t, e.host.Path(), filepath.Join(testutil.PluginDir(t), "ipvlan"))
	for name, b := range map[string]string{
		"l2":  body(`"mtu":1400,` + attachtest.Static("10.8.0.80/24", "10.8.0.1")),
		"l3s": body(`"mode":"l3s","ipam":{"type":"static","addresses":[{"address":"10.8.0.81/24","gateway":"10.8.0.1"}],"routes":[{"dst":"0.0.0.0/0"}]}`),
	} {
		for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
			t.Run(fmt.Sprintf("%s/%s", name, v), func(t *testing.T) {
				if err := attachtest.SideBySide(t, ref, knit, attachtest.Conf(t, v, b, nil), "net1", attachtest.WithoutNdiscNotify); err != nil {
					t.Error(err)
				}
			})
		}
	}
}
