package macvlan_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// The same config through /usr/lib/cni/macvlan and knit's gives the same
// result (MACs aside) and the same kernel state in the container.
func TestSideBySideWithReference(t *testing.T) {
	e := newEnv(t)
	ref := attachtest.InHost(t, e.host.Path(), testutil.RequireRef(t, "macvlan"))
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
				conf := attachtest.Conf(t, v, b, nil)
				var results []map[string]any
				var states [][]string
				for _, bin := range []string{ref, knit} {
					cont := testutil.NewNS(t)
					req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1",
						Config: conf, Path: []string{testutil.RefDir}}
					if bin == knit {
						req.Path = nil
					}
					out, err := testutil.Exec(context.Background(), bin, req)
					if err != nil {
						t.Fatalf("%s ADD: %v", bin, err)
					}
					results = append(results, attachtest.NormalizedResult(t, out, cont.Path()))
					states = append(states, withoutNdiscNotify(attachtest.Snapshot(t, cont, "net1")))
					req.Command = cni.CmdDel
					if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
						t.Fatalf("%s DEL: %v", bin, err)
					}
					attachtest.NoLink(t, cont, "net1")
				}
				if !reflect.DeepEqual(results[0], results[1]) {
					t.Errorf("results differ:\nref  %v\nknit %v", results[0], results[1])
				}
				if !reflect.DeepEqual(states[0], states[1]) {
					t.Errorf("kernel state differs:\nref  %q\nknit %q", states[0], states[1])
				}
			})
		}
	}
}

// withoutNdiscNotify drops the ndisc_notify sysctl: Debian's 1.1.1 predates
// the reference setting it (upstream macvlan sets it, as knit does).
func withoutNdiscNotify(state []string) []string {
	var out []string
	for _, l := range state {
		if !strings.Contains(l, "ndisc_notify") {
			out = append(out, l)
		}
	}
	return out
}
