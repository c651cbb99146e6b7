package macvlan_test

import (
	"fmt"
	"testing"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/testutil"
)

// The same config through /usr/lib/cni/macvlan and knit's gives the same
// result (MACs aside) and the same kernel state in the container.
func TestSideBySideWithReference(t *testing.T) {
	e := newEnv(t)
	ref := testutil.InHost(t, e.host.Path(), testutil.RequireRef(t, "macvlan"))
	knit := e.bin(t)
	cases := map[string]string{
		"l2 only":     body(`"mode":"private"`),
		"static ipam": body(`"mtu":1400,` + attachtest.Static("10.9.0.80/24", "10.9.0.1")),
		"routes": body(`"ipam":{"type":"static","addresses":[{"address":"10.9.0.81/24","gateway":"10.9.0.1"}],` +
			`"routes":[{"dst":"0.0.0.0/0"},{"dst":"10.100.0.0/16","gw":"10.9.0.254"}]}`),
	}
	for name, b := range cases {
		for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
			t.Run(fmt.Sprintf("%s/%s", name, v), func(t *testing.T) {
				if err := attachtest.SideBySide(t, ref, knit, attachtest.Conf(t, v, b, nil), "net1", attachtest.WithoutNdiscNotify); err != nil {
					t.Error(err)
				}
			})
		}
	}
}
