package firewall_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/firewall"
	"github.com/knit-cni/knit/plugins/portmap/portmaptest"
)

func fwReq(b *testing.B, i int, cmd cni.Command) *cni.Request {
	prev, err := portmaptest.Result(i).GetAsVersion("1.0.0")
	if err != nil {
		b.Fatal(err)
	}
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "bench", "type": "firewall", "prevResult": prev})
	return &cni.Request{Command: cmd, ContainerID: portmaptest.ContainerID(i), IfName: "eth0", Config: conf}
}

// BenchmarkAddDel measures one ADD+DEL (in process, nftables) with N other
// containers' rules present; it must not grow with N.
func BenchmarkAddDel(b *testing.B) {
	testutil.RequireRoot(b)
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("nftables/present=%d", n), func(b *testing.B) {
			host := testutil.NewNS(b)
			pool := &hostns.NFTPool{}
			b.Cleanup(pool.Close)
			p := firewall.Plugin{HostNS: host.Path(), Conns: pool}
			ctx := context.Background()
			for i := range n {
				if _, err := cni.Call(ctx, p, fwReq(b, i, cni.CmdAdd)); err != nil {
					b.Fatal(err)
				}
			}
			add, del := fwReq(b, n, cni.CmdAdd), fwReq(b, n, cni.CmdDel)
			cpu0 := cpuTime()
			for b.Loop() {
				if _, err := cni.Call(ctx, p, add); err != nil {
					b.Fatal(err)
				}
				if _, err := cni.Call(ctx, p, del); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
