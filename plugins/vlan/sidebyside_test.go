package vlan_test

import (
	"path/filepath"
	"testing"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/testutil"
)

// The same config through /usr/lib/cni/vlan and knit's binary gives the
// same result (MACs aside) and container state. Runs in the full-kernel
// lane, which ships both.
func TestSideBySideWithReference(t *testing.T) {
	e := newEnv(t)
	ref := testutil.InHost(t, e.host.Path(), testutil.RequireRef(t, "vlan"))
	knit := testutil.InHost(t, e.host.Path(), filepath.Join(testutil.PluginDir(t), "vlan"))
	b := body(42, `"mtu":1400,"ipam":{"type":"static","addresses":[{"address":"10.7.42.80/24","gateway":"10.7.42.1"}],"routes":[{"dst":"10.70.0.0/16"}]}`)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		t.Run(v, func(t *testing.T) {
			if err := attachtest.SideBySide(t, ref, knit, attachtest.Conf(t, v, b, nil), "net1", nil); err != nil {
				t.Error(err)
			}
		})
	}
}
