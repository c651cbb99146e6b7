package vrf_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// The same chained config through /usr/lib/cni/vrf and knit's binary gives
// the same result and state: VRF, table, membership, connected routes in
// the VRF table. Debian's 1.1.1 predates route preservation, so the
// attachment here has no gatewayed route. Runs in the full-kernel lane.
func TestSideBySideWithReference(t *testing.T) {
	testutil.RequireKernelFeature(t, "vrf")
	ref := testutil.RequireRef(t, "vrf")
	knit := filepath.Join(testutil.PluginDir(t), "vrf")
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		t.Run(v, func(t *testing.T) {
			var results []map[string]any
			var states [][]string
			for _, bin := range []string{ref, knit} {
				cont, peer := testutil.NewNS(t), testutil.NewNS(t)
				testutil.Veth(t, cont, "net1", peer, "p0")
				attachtest.AddAddr(t, cont, "net1", "10.3.9.2/24")
				prev := attachtest.IPResult(t, "10.3.9.2/24", "10.3.9.1")
				prev.Interfaces = []*current.Interface{{Name: "net1", Sandbox: cont.Path()}}
				prev.IPs[0].Interface = current.Int(0)
				conf := attachtest.Conf(t, v, `"type":"vrf","vrfname":"blue","table":55`, prev)
				req := &cni.Request{Command: cni.CmdAdd, ContainerID: "c1", Netns: cont.Path(), IfName: "net1", Config: conf}
				out, err := testutil.Exec(context.Background(), bin, req)
				if err != nil {
					t.Fatalf("%s ADD: %v", bin, err)
				}
				results = append(results, attachtest.NormalizedResult(t, out, cont.Path()))
				state := append(attachtest.Snapshot(t, cont, "net1"), attachtest.Snapshot(t, cont, "blue")...)
				state = append(state, fmt.Sprintf("master=%v", attachtest.Link(t, cont, "net1").Attrs().MasterIndex == attachtest.Link(t, cont, "blue").Attrs().Index))
				states = append(states, state)
				req.Command = cni.CmdDel
				if _, err := testutil.Exec(context.Background(), bin, req); err != nil {
					t.Fatalf("%s DEL: %v", bin, err)
				}
				attachtest.NoLink(t, cont, "blue")
			}
			if !reflect.DeepEqual(results[0], results[1]) {
				t.Errorf("results differ:\nref  %v\nknit %v", results[0], results[1])
			}
			if !reflect.DeepEqual(states[0], states[1]) {
				t.Errorf("state differs:\nref  %q\nknit %q", states[0], states[1])
			}
		})
	}
}
