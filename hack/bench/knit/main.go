// Command knit (hack/bench/knit) measures knit's meta-plugin path against
// a thin meta-plugin calling the reference plugins:
//
//   - ADD and DEL latency of a pod with the cluster network (bridge +
//     host-local) and two secondaries (bridge + host-local, macvlan +
//     host-local): through the real knit shim and a knitd subprocess, vs.
//     the Debian reference plugins exec'd one network after the other the
//     way Multus thin does; both driven by libcni as containerd drives
//     them, alternating every iteration;
//   - knitd's resident memory with 110 pods on its node and 100 NADs.
//
// It runs its own etcd and kube-apiserver (pkg/testutil/kube) and must run
// as root in a network and mount namespace of its own, which plays the
// host:
//
//	unshare --net --mount -- sh -c 'mount -t tmpfs none /run && go run ./hack/bench/knit -knit bin'
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	knitDir := flag.String("knit", "bin", "knit's bin dir: knit, knitd, knit-plugin and its links (make build)")
	refDir := flag.String("ref", "/usr/lib/cni", "reference plugins")
	iters := flag.Int("n", 40, "measured iterations per implementation")
	block := flag.Int("block", 10, "knit and the reference take turns every this many iterations (1: every iteration); see latency")
	pods := flag.Int("rss-pods", 110, "pods on the node for the memory measurement")
	nads := flag.Int("rss-nads", 100, "NADs for the memory measurement")
	profile := flag.String("cpuprofile", "", "write a CPU profile of knitd during the latency loop to this file, and its allocation profile to FILE.allocs")
	flag.Parse()
	if err := run(context.Background(), *knitDir, *refDir, *iters, *block, *pods, *nads, *profile); err != nil {
		slog.Error("knit bench", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, knitDir, refDir string, iters, block, pods, nads int, profile string) error {
	knitAbs, err := filepath.Abs(knitDir)
	if err != nil {
		return err
	}
	b, err := setup(ctx, knitAbs, refDir, profile)
	if err != nil {
		return err
	}
	defer b.close()
	fmt.Printf("knit meta-plugin bench: pod = cluster network (bridge+host-local) + bridge+host-local + macvlan+host-local\n")
	fmt.Printf("knit and the reference take turns every %d iteration(s)\n", block)
	lat, err := b.latency(ctx, iters, block)
	if err != nil {
		return err
	}
	lat.print()
	mem, err := b.memory(ctx, pods, nads)
	if err != nil {
		return err
	}
	mem.print(pods, nads)
	return nil
}

// stats are the durations of one measurement.
type stats []time.Duration

func (s stats) pct(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := append(stats(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c[int(p*float64(len(c)-1)+0.5)]
}

type latencies struct {
	knitAdd, knitDel, refAdd, refDel stats
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func (l *latencies) print() {
	row := func(name string, s stats) {
		fmt.Printf("  %-34s median %9s   p90 %9s   (n=%d)\n", name, ms(s.pct(0.5)), ms(s.pct(0.9)), len(s))
	}
	fmt.Println("latency (libcni exec, as containerd):")
	row("knit ADD (shim -> knitd)", l.knitAdd)
	row("reference ADD (3 networks, thin)", l.refAdd)
	row("knit DEL", l.knitDel)
	row("reference DEL", l.refDel)
	ratio := func(a, b stats) float64 { return float64(a.pct(0.5)) / float64(b.pct(0.5)) }
	fmt.Printf("  ratio reference/knit: ADD %.2fx, DEL %.2fx (goal: ADD >= 3x)\n", ratio(l.refAdd, l.knitAdd), ratio(l.refDel, l.knitDel))
}

type memory struct {
	idleRSS, attachedRSS, hwm int64
	burstHWM                  int64
	burstTime                 time.Duration
	anon, file                int64
	goStats                   string
}

func (m *memory) print(pods, nads int) {
	mib := func(kb int64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }
	fmt.Printf("knitd memory with %d pods and %d NADs:\n", pods, nads)
	fmt.Printf("  RSS, caches filled, 1 attached %s\n", mib(m.idleRSS))
	fmt.Printf("  RSS, all pods attached         %s (goal: < 30 MiB)\n", mib(m.attachedRSS))
	fmt.Printf("  peak RSS (VmHWM)               %s\n", mib(m.hwm))
	fmt.Printf("  of which anonymous / file      %s / %s\n", mib(m.anon), mib(m.file))
	if m.goStats != "" {
		fmt.Printf("  Go runtime: %s\n", m.goStats)
	}
	fmt.Printf("  then %d more pods at once: peak %s (the %d ADDs took %s)\n", burstPods, mib(m.burstHWM), burstPods-1, m.burstTime.Round(time.Millisecond))
}

// procStatus reads VmRSS and VmHWM (kB) of a process.
func procStatus(pid int) (rss, hwm int64, err error) {
	st, err := procFields(pid)
	return st["VmRSS:"], st["VmHWM:"], err
}

// procFields reads the kB fields of /proc/PID/status.
func procFields(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == "kB" {
			var v int64
			fmt.Sscan(f[1], &v)
			out[f[0]] = v
		}
	}
	return out, nil
}
