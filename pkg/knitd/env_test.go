package knitd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/knit-cni/knit/pkg/annotations"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/confgen"
	"github.com/knit-cni/knit/pkg/knitd"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/pkg/testutil/kube"
	"github.com/knit-cni/knit/plugins/bridge"
	"github.com/knit-cni/knit/plugins/hostlocal"
	"github.com/knit-cni/knit/plugins/loopback"
	"github.com/knit-cni/knit/plugins/macvlan"
	"github.com/knit-cni/knit/plugins/static"
)

// testRegistry holds the plugin types knitd runs in-process in these tests.
func testRegistry(host string) cni.Registry {
	return cni.Registry{
		"bridge":     bridge.Plugin{},
		"host-local": hostlocal.Plugin{},
		"macvlan":    macvlan.Plugin{HostNS: host},
		"loopback":   loopback.Plugin{},
		"static":     static.Plugin{},
	}
}

// binaries are built once per test process.
var bins struct {
	once sync.Once
	dir  string // knit shim + knit-plugin multi-call links + test plugins
	err  error
}

// binDir returns the CNI bin dir of the tests: the real knit shim, knit's
// plugins under their type names (what the shim execs on DEL without
// knitd) and the test binary itself as the "recorder" and "blocker" fake
// plugins.
func binDir(t testing.TB) string {
	t.Helper()
	bins.once.Do(func() {
		dir, err := os.MkdirTemp("", "knit-knitd-bin-")
		if err != nil {
			bins.err = err
			return
		}
		build := func(out, pkg string) error {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
			cmd.Dir = testutil.RepoRoot()
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("building %s: %v: %s", pkg, err, b)
			}
			return nil
		}
		if bins.err = build("knit", "./cmd/knit"); bins.err != nil {
			return
		}
		// The exec'd delegates: knit's plugins as `make build` links
		// them ($KNIT_BIN_DIR, else a fresh build of cmd/knit-plugin).
		plugins, err := pluginDir(dir)
		if err != nil {
			// Another package of the tree may be mid-edit: fall back to
			// the reference plugins, which take the same configs.
			fmt.Fprintf(os.Stderr, "WARNING: knit plugins unavailable (%v); exec'd delegates are the reference plugins\n", err)
			plugins = testutil.RefDir
		}
		ents, err := os.ReadDir(plugins)
		if err != nil {
			bins.err = err
			return
		}
		for _, e := range ents {
			if e.Name() == "knit" || e.Name() == "knit-plugin" {
				continue
			}
			if err := os.Symlink(filepath.Join(plugins, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				bins.err = err
				return
			}
		}
		self, err := os.Executable()
		if err != nil {
			bins.err = err
			return
		}
		for _, fake := range []string{"recorder", "blocker"} {
			if err := os.Symlink(self, filepath.Join(dir, fake)); err != nil {
				bins.err = err
				return
			}
		}
		bins.dir = dir
	})
	if bins.err != nil {
		t.Fatalf("test binaries: %v", bins.err)
	}
	return bins.dir
}

// crdOnce installs the NAD CRD from deploy/ once.
var crdOnce struct {
	once sync.Once
	err  error
}

func installCRD(t testing.TB, c *kube.Cluster) {
	t.Helper()
	crdOnce.once.Do(func() {
		b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "deploy", "crd.yaml"))
		if err != nil {
			crdOnce.err = err
			return
		}
		var crd apiextv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(b, &crd); err != nil {
			crdOnce.err = fmt.Errorf("deploy/crd.yaml: %w", err)
			return
		}
		cs, err := apiextclient.NewForConfig(c.Rest)
		if err != nil {
			crdOnce.err = err
			return
		}
		ctx := context.Background()
		if _, err := cs.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, &crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			crdOnce.err = err
			return
		}
		crdOnce.err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
	})
	if crdOnce.err != nil {
		t.Fatalf("NAD CRD: %v", crdOnce.err)
	}
}

var envSeq atomic.Int64

// env is one node: a scratch "host" namespace, a CNI conf/bin/cache dir,
// a knitd serving them, and a namespace of its own in the shared API
// server for its pods and NADs.
type env struct {
	t       *testing.T
	c       *kube.Cluster
	nads    nadclient.Interface
	ns      string
	node    string
	host    *testutil.NS
	dir     string
	confDir string
	bin     string
	data    string // host-local data dir
	cfg     *knitd.Config
	d       *knitd.Daemon
	cancel  context.CancelFunc
	done    chan error
	cniConf *libcni.CNIConfig
	// restOverride, if set, is knitd's API client config (RBAC tests).
	restOverride *rest.Config
}

type envOpt func(*knitd.Config)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	testutil.RequireRoot(t)
	c := kube.Shared(t)
	installCRD(t, c)
	nc, err := nadclient.NewForConfig(c.Rest)
	if err != nil {
		t.Fatal(err)
	}
	n := envSeq.Add(1)
	e := &env{t: t, c: c, nads: nc, ns: fmt.Sprintf("knit-t%d", n), node: fmt.Sprintf("node-%d-%d", os.Getpid(), n),
		host: testutil.NewNS(t), dir: t.TempDir(), bin: binDir(t)}
	e.confDir = filepath.Join(e.dir, "net.d")
	e.data = filepath.Join(e.dir, "ipam")
	for _, d := range []string{e.confDir, e.data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.createNamespace(e.ns)
	e.writeClusterConf("10-cluster.conflist", "1.0.0")
	e.cfg = &knitd.Config{NodeName: e.node, ConfDir: e.confDir, BinDir: e.bin,
		CacheDir: filepath.Join(e.dir, "cache"), Socket: filepath.Join(e.dir, "run", "knitd.sock"),
		MetricsAddr: "127.0.0.1:0", PodWait: knitd.Duration(3 * time.Second),
		GCInterval: knitd.Duration(time.Hour), ConfResync: knitd.Duration(time.Second)}
	for _, o := range opts {
		o(e.cfg)
	}
	e.cfg.SetDefaults()
	// An explicit exec: libcni sets its default lazily, racing when
	// pods are attached in parallel.
	e.cniConf = libcni.NewCNIConfigWithCacheDir([]string{e.bin}, filepath.Join(e.dir, "libcni"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}})
	e.start()
	t.Cleanup(e.stop)
	return e
}

// writeClusterConf writes the cluster network: a bridge with host-local
// addresses from 10.244.0.0/24 (default route via the bridge).
func (e *env) writeClusterConf(name, version string) {
	conf := fmt.Sprintf(`{"cniVersion":%q,"name":"cbr0","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,
		"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.244.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`,
		version, e.data)
	// Written atomically, as a careful installer does.
	tmp := filepath.Join(e.confDir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.confDir, name)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) start() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rc := e.c.Rest
	if e.restOverride != nil {
		rc = e.restOverride
	}
	d, err := knitd.New(e.cfg, knitd.Options{Rest: rc, Registry: testRegistry(e.host.Path()),
		Logger: log, HostNetns: e.host.Path()})
	if err != nil {
		cancel()
		e.t.Fatalf("knitd: %v", err)
	}
	e.d, e.cancel, e.done = d, cancel, make(chan error, 1)
	go func() { e.done <- d.Run(ctx) }()
	select {
	case <-d.Ready():
	case err := <-e.done:
		e.t.Fatalf("knitd exited: %v", err)
	}
	e.waitFor("00-knit.conflist", func() bool {
		_, err := os.Stat(filepath.Join(e.confDir, confgen.FileName))
		return err == nil
	})
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case <-e.done:
	case <-time.After(30 * time.Second):
		e.t.Error("knitd did not stop")
	}
	e.cancel = nil
}

// testWriter sends knitd's log to the test log (shown on failure or -v).
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

func (e *env) createNamespace(name string) {
	e.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := e.c.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatalf("namespace %s: %v", name, err)
	}
}

// nad creates a NetworkAttachmentDefinition in namespace ns (e.ns if "").
func (e *env) nad(ns, name, config string, ann map[string]string) {
	e.t.Helper()
	if ns == "" {
		ns = e.ns
	}
	def := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: config}}
	if _, err := e.nads.K8sCniCncfIoV1().NetworkAttachmentDefinitions(ns).Create(context.Background(), def, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("NAD %s/%s: %v", ns, name, err)
	}
}

// pod is a pod created through the API, scheduled to the env's node, with
// a scratch namespace as its sandbox.
type pod struct {
	*corev1.Pod
	sandbox *testutil.NS
	id      string
}

var podSeq atomic.Int64

func (e *env) pod(name string, ann map[string]string) *pod {
	e.t.Helper()
	return e.podIn(e.ns, name, ann)
}

func (e *env) podIn(ns, name string, ann map[string]string) *pod {
	e.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
		Spec: corev1.PodSpec{NodeName: e.node, Containers: []corev1.Container{{Name: "c", Image: "knit.local/testimage:latest"}}}}
	created, err := e.c.Client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("pod %s: %v", name, err)
	}
	return &pod{Pod: created, sandbox: testutil.NewNS(e.t), id: fmt.Sprintf("sandbox%d%d", os.Getpid(), podSeq.Add(1))}
}

// confList is the generated 00-knit.conflist, as the runtime loads it.
func (e *env) confList() *libcni.NetworkConfigList {
	e.t.Helper()
	l, err := libcni.ConfListFromFile(filepath.Join(e.confDir, confgen.FileName))
	if err != nil {
		e.t.Fatalf("loading %s: %v", confgen.FileName, err)
	}
	return l
}

func (e *env) rt(p *pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: p.id, NetNS: p.sandbox.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.id}, {"K8S_POD_UID", string(p.UID)}}}
}

// add runs ADD the way containerd does (libcni over the generated
// conflist, exec'ing the knit shim), from the scratch host namespace.
func (e *env) add(p *pod) (*current.Result, error) {
	var res types.Result
	err := e.host.Do(func() error {
		var err error
		res, err = e.cniConf.AddNetworkList(context.Background(), e.confList(), e.rt(p))
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (e *env) mustAdd(p *pod) *current.Result {
	e.t.Helper()
	res, err := e.add(p)
	if err != nil {
		e.t.Fatalf("ADD %s: %v", p.Name, err)
	}
	return res
}

func (e *env) del(p *pod) error {
	return e.host.Do(func() error { return e.cniConf.DelNetworkList(context.Background(), e.confList(), e.rt(p)) })
}

func (e *env) check(p *pod) error {
	return e.host.Do(func() error { return e.cniConf.CheckNetworkList(context.Background(), e.confList(), e.rt(p)) })
}

// cniError extracts the CNI error of a failed call.
func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("not a CNI error: %T %v", err, err)
	}
	return te
}

// links lists the interface names in a namespace (lo excluded).
func links(t *testing.T, ns *testutil.NS) []string {
	t.Helper()
	ls, err := nlsafe.LinkList(ns.H)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		if l.Attrs().Name != "lo" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

func link(t *testing.T, ns *testutil.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.H.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v (have %v)", name, err, links(t, ns))
	}
	return l
}

func addrs(t *testing.T, ns *testutil.NS, name string) []string {
	t.Helper()
	as, err := nlsafe.AddrList(ns.H, link(t, ns, name), netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	return out
}

// status waits for the pod's network-status annotation and decodes it.
func (e *env) status(p *pod) []annotations.NetworkStatus {
	e.t.Helper()
	var st []annotations.NetworkStatus
	e.waitFor("network-status of "+p.Name, func() bool {
		got, err := e.c.Client.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		v, ok := got.Annotations[annotations.NetworkStatusKey]
		if !ok {
			return false
		}
		if err := json.Unmarshal([]byte(v), &st); err != nil {
			e.t.Fatalf("network-status %q: %v", v, err)
		}
		return true
	})
	return st
}

// events waits for n events of reason on the pod and returns them.
func (e *env) events(p *pod, reason string, n int) []corev1.Event {
	e.t.Helper()
	var out []corev1.Event
	e.waitFor(fmt.Sprintf("%d %s event(s) on %s", n, reason, p.Name), func() bool {
		list, err := e.c.Client.CoreV1().Events(p.Namespace).List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + p.Name + ",reason=" + reason})
		if err != nil {
			return false
		}
		out = list.Items
		count := 0
		for _, ev := range out {
			count += int(ev.Count)
		}
		return count >= n
	})
	return out
}

// allocations lists host-local's allocated addresses of a network.
func (e *env) allocations(network string) []string {
	ents, err := os.ReadDir(filepath.Join(e.data, network))
	if err != nil {
		return nil
	}
	var out []string
	for _, en := range ents {
		if net.ParseIP(en.Name()) != nil {
			out = append(out, en.Name())
		}
	}
	return out
}

// cacheFiles lists the node cache's entries.
func (e *env) cacheFiles() []string {
	m, _ := filepath.Glob(filepath.Join(e.cfg.CacheDir, "*.json"))
	return m
}

// ipam is a host-local section with its data in the env.
func (e *env) ipam(subnet string) string {
	return fmt.Sprintf(`"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]]}`, e.data, subnet)
}

var getOpts = metav1.GetOptions{}

// pluginDir returns a directory of knit's plugins under their type names.
func pluginDir(tmp string) (string, error) {
	if d := os.Getenv("KNIT_BIN_DIR"); d != "" {
		return d, nil
	}
	dir := filepath.Join(tmp, "plugins")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "knit-plugin")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/knit-plugin")
	cmd.Dir = testutil.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building knit-plugin: %v: %s", err, out)
	}
	out, err := exec.Command(bin, "list").Output()
	if err != nil {
		return "", err
	}
	for _, name := range strings.Fields(string(out)) {
		if err := os.Link(bin, filepath.Join(dir, name)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// startSubprocess runs knitd as a child process (so a test can kill it)
// with the env's config; the in-process one must be stopped.
func (e *env) startSubprocess() *exec.Cmd {
	e.t.Helper()
	self, err := os.Executable()
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := json.Marshal(subprocessConfig{Config: *e.cfg, Kubeconfig: e.c.Kubeconfig, Host: e.host.Path()})
	if err != nil {
		e.t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(e.dir, "knitd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), subprocessEnv+"="+string(b))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	e.waitFor("knitd subprocess socket", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(e.dir, "knitd.log"))
			e.t.Fatalf("knitd subprocess exited: %s", b)
		default:
		}
		c, err := net.Dial("unix", e.cfg.Socket)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return cmd
}

// checkDefaultRoutes asserts that every default-route a network-status
// element lists is a default route of that interface in the pod.
func checkDefaultRoutes(t *testing.T, p *pod, st []annotations.NetworkStatus) {
	t.Helper()
	routes, err := nlsafe.RouteList(p.sandbox.H, nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			l, err := p.sandbox.H.LinkByIndex(r.LinkIndex)
			if err == nil && r.Gw != nil {
				have[r.Gw.String()+" "+l.Attrs().Name] = true
			}
		}
	}
	for _, s := range st {
		for _, gw := range s.DefaultRoute {
			if !have[gw+" "+s.Interface] {
				t.Errorf("%s: network-status says default route via %s dev %s; the pod has %v", p.Name, gw, s.Interface, have)
			}
		}
	}
}
