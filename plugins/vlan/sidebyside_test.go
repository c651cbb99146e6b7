package vlan_test

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// The same config through /usr/lib/cni/vlan and knit's binary gives the
// same result (MACs aside) and container state. Runs in the full-kernel
// lane, which ships both.
func TestSideBySideWithReference(t *testing.T) {
	e := newEnv(t)
	ref := attachtest.InHost(t, e.host.Path(), testutil.RequireRef(t, "vlan"))
	knit := attachtest.InHost(t, e.host.Path(), filepath.Join(testutil.PluginDir(t), "vlan"))
	b := body(42, `"mtu":1400,"ipam":{"type":"static","addresses":[{"address":"10.7.42.80/24","gateway":"10.7.42.1"}],"routes":[{"dst":"10.70.0.0/16"}]}`)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		t.Run(v, func(t *testing.T) {
			conf := attachtest.Conf(t, v, b, nil)
			var results []map[string]any
			var states [][]string
			for _, bin := range []string{ref, knit} {
				cont := testutil.NewNS(t)
				req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1", Config: conf}
				if bin == ref {
					req.Path = []string{testutil.RefDir}
				}
				out, err := testutil.Exec(context.Background(), bin, req)
				if err != nil {
					t.Fatalf("%s ADD: %v", bin, err)
				}
				results = append(results, attachtest.NormalizedResult(t, out, cont.Path()))
				states = append(states, attachtest.Snapshot(t, cont, "net1"))
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
