package portmap_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/portmap"
	"github.com/knit-cni/knit/plugins/portmap/portmaptest"
)

// BenchmarkAddDel measures one ADD+DEL (in process) with N other
// containers already mapped. knit's cost must not grow with N: neither
// operation reads anything but the container's own rules.
//
//	go test -run XXX -bench AddDel ./plugins/portmap/
func BenchmarkAddDel(b *testing.B) {
	testutil.RequireRoot(b)
	for _, be := range []string{portmap.BackendNftables, portmap.BackendIptables} {
		for _, n := range []int{10, 100, 500} {
			b.Run(fmt.Sprintf("%s/mapped=%d", be, n), func(b *testing.B) {
				benchAddDel(b, be, n)
			})
		}
	}
}

func benchAddDel(b *testing.B, be string, n int) {
	host := testutil.NewNS(b)
	// As knitd: connections stay open across calls (closing a netfilter
	// socket after a commit waits for an RCU grace period).
	pool := &hostns.NFTPool{}
	b.Cleanup(pool.Close)
	p := portmap.Plugin{HostNS: host.Path(), Conns: pool}
	extra := map[string]any{"backend": be}
	ctx := context.Background()
	if err := portmaptest.Populate(ctx, portmaptest.InProcess(p), 0, n, "1.0.0", "bench", extra); err != nil {
		b.Fatal(err)
	}
	add, err := portmaptest.Request(n, "1.0.0", "bench", extra)
	if err != nil {
		b.Fatal(err)
	}
	del := *add
	del.Command = cni.CmdDel
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := cni.Call(ctx, p, add); err != nil {
			b.Fatal(err)
		}
		if _, err := cni.Call(ctx, p, &del); err != nil {
			b.Fatal(err)
		}
	}
	// CPU time (user+system, the kernel's transaction work included) is
	// steadier than wall time on a shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
