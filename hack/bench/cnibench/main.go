// Command cnibench measures exec'd CNI ADD and DEL latency of knit's plugins
// against the reference plugins (Debian containernetworking-plugins) in one
// run, alternating implementations every iteration so both see the same
// machine state, and prints medians and knit/reference ratios.
//
// It must run as root in a network namespace of its own (make bench wraps it
// in `unshare --net`): plugins act on the namespace they run in, and that
// namespace plays the host.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

type impl struct {
	name string
	dir  string // CNI bin dir
}

type scenario struct {
	name   string
	plugin string
	conf   func(dataDir string) string
	held   int
}

func main() {
	knitDir := flag.String("knit", "bin", "knit's CNI bin dir")
	refDir := flag.String("ref", "/usr/lib/cni", "reference CNI bin dir")
	iters := flag.Int("n", 40, "iterations per implementation and scenario")
	held := flag.Int("held", 2000, "addresses already held in the 'held' scenarios")
	only := flag.String("only", "", "run only scenarios whose name contains this")
	flag.Parse()
	ctx := context.Background()
	if err := run(ctx, *knitDir, *refDir, *iters, *held, *only); err != nil {
		slog.Error("cnibench", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, knitDir, refDir string, iters, held int, only string) error {
	knitAbs, err := filepath.Abs(knitDir)
	if err != nil {
		return err
	}
	impls := []impl{{"knit", knitAbs}, {"reference", refDir}}
	if err := setupHost(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "cnibench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	fmt.Printf("%-28s %-10s %10s %10s %10s\n", "scenario", "impl", "ADD p50", "DEL p50", "ADD+DEL")
	for _, sc := range scenarios(held) {
		if only != "" && !strings.Contains(sc.name, only) {
			continue
		}
		if err := runScenario(ctx, sc, impls, work, iters); err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	if only == "" || strings.Contains("portmap", only) {
		return runPortmap(ctx, impls, iters, []int{100, 400})
	}
	return nil
}

func scenarios(held int) []scenario {
	bridge := func(dataDir string) string {
		return `{"cniVersion":"1.0.0","name":"benchbr","type":"bridge","bridge":"benchbr0","isGateway":true,
"ipam":{"type":"host-local","subnet":"10.123.0.0/16","dataDir":"` + dataDir + `"}}`
	}
	macvlan := func(dataDir string) string {
		return `{"cniVersion":"1.0.0","name":"benchmv","type":"macvlan","master":"benchup0","mode":"bridge",
"ipam":{"type":"host-local","subnet":"10.124.0.0/16","dataDir":"` + dataDir + `"}}`
	}
	return []scenario{
		{"bridge+host-local", "bridge", bridge, 0},
		{"macvlan+host-local", "macvlan", macvlan, 0},
		{fmt.Sprintf("bridge+host-local/%d held", held), "bridge", bridge, held},
		{fmt.Sprintf("macvlan+host-local/%d held", held), "macvlan", macvlan, held},
	}
}

// setupHost gives the bench namespace an uplink for macvlan to sit on: a
// veth whose peer stays in the same namespace (no traffic leaves it).
func setupHost() error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "benchup0", "type", "veth", "peer", "name", "benchup1"},
		{"link", "set", "benchup0", "up"},
		{"link", "set", "benchup1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

type samples struct{ add, del []time.Duration }

func runScenario(ctx context.Context, sc scenario, impls []impl, work string, iters int) error {
	data := map[string]string{}
	for _, im := range impls {
		d := filepath.Join(work, sc.name, im.name)
		if err := prefill(filepath.Join(d, netName(sc)), sc.held); err != nil {
			return err
		}
		data[im.name] = d
	}
	res := map[string]*samples{}
	for _, im := range impls {
		res[im.name] = &samples{}
	}
	const warmup = 3
	for i := 0; i < iters+warmup; i++ {
		for j := range impls {
			im := impls[(i+j)%len(impls)] // alternate who goes first
			add, del, err := once(ctx, im, sc, data[im.name], i)
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			if i >= warmup {
				res[im.name].add = append(res[im.name].add, add)
				res[im.name].del = append(res[im.name].del, del)
			}
		}
	}
	report(sc.name, impls, res)
	return nil
}

// report prints each implementation's medians and knit/reference ratios.
func report(name string, impls []impl, res map[string]*samples) {
	k, r := res["knit"], res["reference"]
	for _, im := range impls {
		s := res[im.name]
		fmt.Printf("%-28s %-10s %10s %10s %10s\n", name, im.name, ms(median(s.add)), ms(median(s.del)),
			ms(median(s.add)+median(s.del)))
	}
	fmt.Printf("%-28s %-10s %10.2f %10.2f %10.2f\n", name, "ratio",
		ratio(median(k.add), median(r.add)), ratio(median(k.del), median(r.del)),
		ratio(median(k.add)+median(k.del), median(r.add)+median(r.del)))
}

func netName(sc scenario) string {
	if sc.plugin == "bridge" {
		return "benchbr"
	}
	return "benchmv"
}

// prefill writes held allocations in the reference host-local layout (one
// file per address holding "<containerID>\r\n<ifname>"), which both
// implementations read.
func prefill(dir string, held int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := 0; i < held; i++ {
		for _, prefix := range []string{"10.123", "10.124"} {
			ip := fmt.Sprintf("%s.%d.%d", prefix, 100+i/250, 1+i%250)
			body := fmt.Sprintf("held%d\r\neth0", i)
			if err := os.WriteFile(filepath.Join(dir, ip), []byte(body), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func once(ctx context.Context, im impl, sc scenario, dataDir string, i int) (add, del time.Duration, err error) {
	nsName := fmt.Sprintf("cnibench-%s-%d", im.name, i)
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", nsName).Run()
	conf := sc.conf(dataDir)
	env := []string{"CNI_CONTAINERID=bench" + fmt.Sprint(i), "CNI_NETNS=/run/netns/" + nsName,
		"CNI_IFNAME=eth0", "CNI_PATH=" + im.dir}
	bin := filepath.Join(im.dir, sc.plugin)
	add, err = timed(ctx, bin, append(env, "CNI_COMMAND=ADD"), conf)
	if err != nil {
		return 0, 0, err
	}
	del, err = timed(ctx, bin, append(env, "CNI_COMMAND=DEL"), conf)
	return add, del, err
}

func timed(ctx context.Context, bin string, env []string, conf string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(conf)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %v: %s", bin, env[len(env)-1], err, out)
	}
	return d, nil
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }
