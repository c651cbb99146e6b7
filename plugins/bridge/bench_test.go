package bridge_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/bridge"
	"github.com/knit-cni/knit/plugins/hostlocal"
)

// BenchmarkExecAddDel measures one ADD plus one DEL of the exec'd plugin
// with host-local, knit's against the reference's, forked from a thread
// inside the scratch host (no wrapper processes in the measurement).
//
//	go test -run XXX -bench ExecAddDel ./plugins/bridge
func BenchmarkExecAddDel(b *testing.B) {
	testutil.RequireRoot(b)
	dir := testutil.PluginDir(b)
	for _, impl := range []struct{ name, bin, path string }{
		{"knit", dir + "/bridge", dir},
		{"reference", testutil.RequireRef(b, "bridge"), testutil.RefDir},
	} {
		for _, tc := range []struct{ name, opts, ranges string }{
			{"gateway", `"isGateway":true`, `[{"subnet":"10.90.0.0/16"}]`},
			{"masq", `"isDefaultGateway":true,"ipMasq":true`, `[{"subnet":"10.90.0.0/16"}]`},
			{"dualstack", `"isDefaultGateway":true`, `[{"subnet":"10.90.0.0/16"}],[{"subnet":"fd90::/64"}]`},
		} {
			b.Run(impl.name+"/"+tc.name, func(b *testing.B) {
				host, c := testutil.NewNS(b), testutil.NewNS(b)
				cfg := conf("1.0.0", fmt.Sprintf(`"bridge":"kbr0",%s,"ipam":{"type":"host-local","dataDir":%q,"ranges":[%s]}`, tc.opts, b.TempDir(), tc.ranges))
				req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "eth0", Config: cfg, Path: []string{impl.path}}
				for b.Loop() {
					for _, cmd := range []cni.Command{cni.CmdAdd, cni.CmdDel} {
						req.Command = cmd
						err := host.Do(func() error {
							_, err := testutil.Exec(context.Background(), impl.bin, req)
							return err
						})
						if err != nil {
							b.Fatalf("%s: %v", cmd, err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkAddDel measures one in-process ADD plus DEL with host-local, as
// knitd calls the plugin (no process start): the plugin's own cost.
//
//	go test -run XXX -bench 'AddDel$' -cpuprofile cpu.out ./plugins/bridge
func BenchmarkAddDel(b *testing.B) {
	testutil.RequireRoot(b)
	host, c := testutil.NewNS(b), testutil.NewNS(b)
	reg := cni.Registry{"bridge": bridge.Plugin{}, "host-local": hostlocal.Plugin{}}
	cfg := conf("1.0.0", fmt.Sprintf(`"bridge":"kbr0","isGateway":true,"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.90.0.0/16"}`, b.TempDir()))
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "eth0", Config: cfg, Delegate: reg}
	for b.Loop() {
		for _, cmd := range []cni.Command{cni.CmdAdd, cni.CmdDel} {
			req.Command = cmd
			err := host.Do(func() error {
				_, err := cni.Call(context.Background(), bridge.Plugin{}, req)
				return err
			})
			if err != nil {
				b.Fatalf("%s: %v", cmd, err)
			}
		}
	}
}

// BenchmarkAdd is BenchmarkAddDel's ADD alone (DEL runs with the timer
// stopped): the part of a pod's start-up the plugin costs in knitd.
//
//	go test -run XXX -bench 'Add$' ./plugins/bridge
func BenchmarkAdd(b *testing.B) {
	testutil.RequireRoot(b)
	host, c := testutil.NewNS(b), testutil.NewNS(b)
	reg := cni.Registry{"bridge": bridge.Plugin{}, "host-local": hostlocal.Plugin{}}
	cfg := conf("1.0.0", fmt.Sprintf(`"bridge":"kbr0","isGateway":true,"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.90.0.0/16"}`, b.TempDir()))
	req := &cni.Request{ContainerID: "c1", Netns: c.Path(), IfName: "eth0", Config: cfg, Delegate: reg}
	call := func(cmd cni.Command) {
		req.Command = cmd
		err := host.Do(func() error {
			_, err := cni.Call(context.Background(), bridge.Plugin{}, req)
			return err
		})
		if err != nil {
			b.Fatalf("%s: %v", cmd, err)
		}
	}
	for b.Loop() {
		call(cni.CmdAdd)
		b.StopTimer()
		call(cni.CmdDel)
		b.StartTimer()
	}
}
