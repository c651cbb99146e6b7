package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/knit-cni/knit/pkg/confgen"
)

func (b *bench) pod(ctx context.Context, name, networks string) (*corev1.Pod, error) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
		Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": networks}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "knit.local/testimage:latest"}}}}
	return b.cluster.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
}

func rtConf(p *corev1.Pod, id, netns, ifname string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifname,
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", string(p.UID)}}}
}

// latency times ADD and DEL of a pod, knit and the reference taking turns
// in blocks of block iterations (1: every iteration). Pods are created up
// front: a kubelet creates sandboxes for pods that exist, so the API is
// not on the measured path of either side.
//
// A DEL leaves kernel work running after it returns (the sandbox
// namespace's teardown; with knit also the tail of its link removals), and
// that work lands in whatever runs next. In blocks, each measured ADD
// follows the same implementation's DEL, as on a node that runs one of
// them; the first iteration of every block, the one after the switch, is
// not counted. With block 1 every ADD follows the other implementation's
// DEL.
func (b *bench) latency(ctx context.Context, iters, block int) (*latencies, error) {
	list, err := libcni.ConfListFromFile(filepath.Join(b.confDir, confgen.FileName))
	if err != nil {
		return nil, err
	}
	block = max(block, 1)
	warm := 1 // block 1: one warm-up iteration in all
	if block > 1 {
		warm = (iters + block - 2) / (block - 1) // one per block
	}
	pods := make([]*corev1.Pod, iters+warm)
	for i := range pods {
		if pods[i], err = b.pod(ctx, fmt.Sprintf("lat-%d", i), "br-net,mv-net"); err != nil {
			return nil, err
		}
	}
	l := &latencies{}
	if b.profile != "" {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			if err := b.fetchProfile(); err != nil {
				fmt.Println("profile:", err)
			}
		}()
	}
	for start := 0; start < len(pods); start += block {
		end := min(start+block, len(pods))
		knitFirst := (start/block)%2 == 0
		for _, knit := range []bool{knitFirst, !knitFirst} {
			for i := start; i < end; i++ {
				if err := b.once(ctx, l, list, pods[i], i, knit, i == start && (block > 1 || i == 0)); err != nil {
					return nil, err
				}
			}
		}
	}
	return l, nil
}

// once runs one ADD and DEL of p with knit or the reference and records
// the times unless it is a warm-up.
func (b *bench) once(ctx context.Context, l *latencies, list *libcni.NetworkConfigList, p *corev1.Pod, i int, knit, warmUp bool) error {
	var add, del time.Duration
	var err error
	if knit {
		add, del, err = b.knitOnce(ctx, list, p, i)
	} else {
		add, del, err = b.refOnce(ctx, p, i)
	}
	switch {
	case err != nil:
		return err
	case warmUp:
	case knit:
		l.knitAdd, l.knitDel = append(l.knitAdd, add), append(l.knitDel, del)
	default:
		l.refAdd, l.refDel = append(l.refAdd, add), append(l.refDel, del)
	}
	return nil
}

func (b *bench) knitOnce(ctx context.Context, list *libcni.NetworkConfigList, p *corev1.Pod, i int) (add, del time.Duration, err error) {
	sb, err := b.newSandbox()
	if err != nil {
		return 0, 0, err
	}
	defer sb.remove()
	rt := rtConf(p, fmt.Sprintf("knit%d", i), sb.path, "eth0")
	start := time.Now()
	if _, err := b.knit.AddNetworkList(ctx, list, rt); err != nil {
		return 0, 0, fmt.Errorf("knit ADD: %w", err)
	}
	add = time.Since(start)
	start = time.Now()
	if err := b.knit.DelNetworkList(ctx, list, rt); err != nil {
		return 0, 0, fmt.Errorf("knit DEL: %w", err)
	}
	return add, time.Since(start), nil
}

// refOnce attaches the three networks with the reference plugins one
// after the other (eth0, net1, net2) and deletes them in reverse.
func (b *bench) refOnce(ctx context.Context, p *corev1.Pod, i int) (add, del time.Duration, err error) {
	sb, err := b.newSandbox()
	if err != nil {
		return 0, 0, err
	}
	defer sb.remove()
	id := fmt.Sprintf("ref%d", i)
	ifnames := []string{"eth0", "net1", "net2"}
	start := time.Now()
	for j, n := range b.refNets {
		if _, err := b.ref.AddNetworkList(ctx, n, rtConf(p, id, sb.path, ifnames[j])); err != nil {
			return 0, 0, fmt.Errorf("reference ADD %s: %w", n.Name, err)
		}
	}
	add = time.Since(start)
	start = time.Now()
	for j := len(b.refNets) - 1; j >= 0; j-- {
		if err := b.ref.DelNetworkList(ctx, b.refNets[j], rtConf(p, id, sb.path, ifnames[j])); err != nil {
			return 0, 0, fmt.Errorf("reference DEL %s: %w", b.refNets[j].Name, err)
		}
	}
	return add, time.Since(start), nil
}

// memory fills the API with NADs and the node with pods, attaches them all
// and reads knitd's resident memory.
func (b *bench) memory(ctx context.Context, pods, nads int) (*memory, error) {
	for i := range nads {
		conf := fmt.Sprintf(`{"cniVersion":"0.3.1","type":"bridge","bridge":"rssbr%d",%s}`, i%10,
			b.ipam("knit", fmt.Sprintf("10.%d.%d.0/24", 100+i/250, i%250)))
		if err := b.nad(ctx, fmt.Sprintf("rss-%d", i), conf); err != nil {
			return nil, err
		}
	}
	var ps []*corev1.Pod
	for i := range pods {
		p, err := b.pod(ctx, fmt.Sprintf("rss-%d", i), fmt.Sprintf("rss-%d,rss-%d", i%nads, (i+1)%nads))
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	list, err := libcni.ConfListFromFile(filepath.Join(b.confDir, confgen.FileName))
	if err != nil {
		return nil, err
	}
	m := &memory{}
	type attached struct {
		sb *sandbox
		rt *libcni.RuntimeConf
	}
	var done []attached
	defer func() {
		for _, a := range done {
			_ = b.knit.DelNetworkList(ctx, list, a.rt)
			a.sb.remove()
		}
	}()
	// The last pod first: once knitd found it, its informers have seen
	// every object created before it.
	for i := len(ps) - 1; i >= 0; i-- {
		sb, err := b.newSandbox()
		if err != nil {
			return nil, err
		}
		rt := rtConf(ps[i], fmt.Sprintf("rss%d", i), sb.path, "eth0")
		if _, err := b.knit.AddNetworkList(ctx, list, rt); err != nil {
			sb.remove()
			return nil, fmt.Errorf("ADD %s: %w", ps[i].Name, err)
		}
		done = append(done, attached{sb, rt})
		if i == len(ps)-1 {
			if m.idleRSS, _, err = procStatus(b.knitd.Process.Pid); err != nil {
				return nil, err
			}
		}
	}
	if m.attachedRSS, m.hwm, err = procStatus(b.knitd.Process.Pid); err != nil {
		return nil, err
	}
	f, _ := procFields(b.knitd.Process.Pid)
	m.anon, m.file = f["RssAnon:"], f["RssFile:"]
	m.goStats = b.goStats()
	if m.burstHWM, m.burstTime, err = b.burst(ctx, list, burstPods, nads); err != nil {
		return nil, err
	}
	return m, nil
}

// burstPods is how many pods start at once in the burst measurement, on
// top of the attached ones (Multus's daemon has run out of memory under
// bursts: k8snetworkplumbingwg/multus-cni#1346, #1416).
const burstPods = 50

// burst attaches n more pods all at once, as a node starting a deployment
// does, and returns knitd's peak RSS and how long the burst took; the pods
// are deleted again.
func (b *bench) burst(ctx context.Context, list *libcni.NetworkConfigList, n, nads int) (hwm int64, took time.Duration, err error) {
	type call struct {
		sb *sandbox
		rt *libcni.RuntimeConf
	}
	calls := make([]call, n)
	defer func() {
		for _, c := range calls {
			if c.sb != nil {
				_ = b.knit.DelNetworkList(ctx, list, c.rt)
				c.sb.remove()
			}
		}
	}()
	for i := range calls {
		p, err := b.pod(ctx, fmt.Sprintf("burst-%d", i), fmt.Sprintf("rss-%d,rss-%d", i%nads, (i+1)%nads))
		if err != nil {
			return 0, 0, err
		}
		sb, err := b.newSandbox()
		if err != nil {
			return 0, 0, err
		}
		calls[i] = call{sb, rtConf(p, fmt.Sprintf("burst%d", i), sb.path, "eth0")}
	}
	// The last pod's ADD waits for knitd's informer to see it, so the
	// others have been seen too.
	if _, err := b.knit.AddNetworkList(ctx, list, calls[n-1].rt); err != nil {
		return 0, 0, fmt.Errorf("ADD burst-%d: %w", n-1, err)
	}
	errs := make(chan error, n-1)
	start := time.Now()
	for _, c := range calls[:n-1] {
		go func() { _, err := b.knit.AddNetworkList(ctx, list, c.rt); errs <- err }()
	}
	for range n - 1 {
		if e := <-errs; e != nil && err == nil {
			err = fmt.Errorf("burst ADD: %w", e)
		}
	}
	took = time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	_, hwm, err = procStatus(b.knitd.Process.Pid)
	return hwm, took, err
}

// goStats summarises knitd's Go memory from its metrics endpoint.
func (b *bench) goStats() string {
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		for _, k := range []string{"knit_cni_request_duration_seconds_sum{command=\"ADD\",result=\"ok\"} ", "knit_cni_request_duration_seconds_count{command=\"ADD\",result=\"ok\"} "} {
			if strings.HasPrefix(line, k) {
				var v float64
				fmt.Sscan(strings.TrimPrefix(line, k), &v)
				out = append(out, fmt.Sprintf("%s=%g", strings.TrimPrefix(strings.Fields(k)[0], "knit_cni_request_duration_seconds_"), v))
			}
		}
		for _, k := range []string{"go_memstats_heap_inuse_bytes ", "go_memstats_stack_inuse_bytes ", "go_memstats_sys_bytes ", "go_goroutines "} {
			if strings.HasPrefix(line, k) {
				var v float64
				fmt.Sscan(strings.TrimPrefix(line, k), &v)
				if strings.HasSuffix(k, "bytes ") {
					out = append(out, fmt.Sprintf("%s=%.1fMiB", strings.TrimSpace(strings.TrimPrefix(k, "go_memstats_")), v/(1<<20)))
				} else {
					out = append(out, fmt.Sprintf("goroutines=%.0f", v))
				}
			}
		}
	}
	return strings.Join(out, " ")
}

// fetchProfile saves a 10 s CPU profile of knitd.
func (b *bench) fetchProfile() error {
	resp, err := http.Get("http://" + metricsAddr + "/debug/pprof/profile?seconds=10")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.profile, data, 0o644); err != nil {
		return err
	}
	resp2, err := http.Get("http://" + metricsAddr + "/debug/pprof/allocs")
	if err != nil {
		return err
	}
	defer resp2.Body.Close()
	data, err = io.ReadAll(resp2.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(b.profile+".allocs", data, 0o644)
}
