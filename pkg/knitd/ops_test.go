package knitd_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"golang.org/x/sys/unix"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/knit-cni/knit/pkg/annotations"
	"github.com/knit-cni/knit/pkg/knitd"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/pkg/testutil/kube"
)

// 50 pods attached in parallel, each with the cluster network and a
// secondary: all succeed with distinct addresses and statuses, and DEL in
// parallel releases everything.
func TestParallel50(t *testing.T) {
	e := newEnv(t)
	e.bridgeNAD("", "net-a", "bra", "10.10.0.0/16")
	const n = 50
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = e.pod(fmt.Sprintf("par-%d", i), map[string]string{annotations.NetworksKey: "net-a"})
	}
	e.waitFor("informer to see the pods", func() bool {
		for _, p := range pods {
			if _, ok := e.d.PodCached(p.Namespace, p.Name); !ok {
				return false
			}
		}
		return true
	})
	run := func(op func(*pod) error) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := op(p); err != nil {
					errs <- fmt.Errorf("%s: %w", p.Name, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		return time.Since(start)
	}
	took := run(func(p *pod) error { _, err := e.add(p); return err })
	t.Logf("%d ADDs in parallel: %v", n, took)
	if t.Failed() {
		t.FailNow()
	}
	if got := len(e.allocations("cbr0")); got != n {
		t.Errorf("cluster network holds %d addresses, want %d", got, n)
	}
	if got := len(e.allocations("net-a")); got != n {
		t.Errorf("net-a holds %d addresses, want %d", got, n)
	}
	seen := map[string]bool{}
	for _, p := range pods {
		st := e.status(p)
		if len(st) != 2 || len(st[1].IPs) != 1 || seen[st[1].IPs[0]] {
			t.Fatalf("%s: status %+v", p.Name, st)
		}
		seen[st[1].IPs[0]] = true
	}
	took = run(e.del)
	t.Logf("%d DELs in parallel: %v", n, took)
	if a := e.allocations("cbr0"); len(a) != 0 {
		t.Errorf("cluster addresses left: %d", len(a))
	}
	if a := e.allocations("net-a"); len(a) != 0 {
		t.Errorf("net-a addresses left: %d", len(a))
	}
	if c := e.cacheFiles(); len(c) != 0 {
		t.Errorf("cache entries left: %d", len(c))
	}
}

// CHECK passes on a healthy pod and names the network whose interface
// went missing.
func TestCheck(t *testing.T) {
	e := newEnv(t)
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	e.nad("", "net-c", fmt.Sprintf(`{"cniVersion":"1.0.0","type":"bridge","bridge":"brc",%s}`, e.ipam("10.10.3.0/24")), nil)
	p := e.pod("check", map[string]string{annotations.NetworksKey: "net-c"})
	e.mustAdd(p)
	if err := e.check(p); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := p.sandbox.H.LinkDel(link(t, p.sandbox, "net1")); err != nil {
		t.Fatal(err)
	}
	err := e.check(p)
	if err == nil {
		t.Fatal("CHECK passed with net1 gone")
	}
	if te := cniError(t, err); !strings.Contains(te.Msg, e.ns+"/net-c") {
		t.Errorf("CHECK error %q does not name the network", te.Msg)
	}
	if err := e.del(p); err != nil {
		t.Fatal(err)
	}
}

// GC: the runtime's GC tears down attachments of sandboxes not in its
// valid list; knitd's own sweep tears down those of pods deleted from the
// API whose namespace is gone, but keeps (for gcGrace) those whose
// namespace still exists.
func TestGC(t *testing.T) {
	e := newEnv(t, func(c *knitd.Config) {
		c.GCInterval = knitd.Duration(100 * time.Millisecond)
		c.GCGrace = knitd.Duration(time.Hour)
	})
	e.writeClusterConf("10-cluster.conflist", "1.1.0")
	e.waitFor("1.1.0 conflist", func() bool { return e.confList().CNIVersion == "1.1.0" })
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	keep := e.pod("gc-keep", map[string]string{annotations.NetworksKey: "net-a"})
	drop := e.pod("gc-drop", map[string]string{annotations.NetworksKey: "net-a"})
	e.mustAdd(keep)
	e.mustAdd(drop)
	// The runtime lost track of drop (libcni would DEL what it has cached
	// itself): only knit's GC can find its attachments now.
	if err := os.RemoveAll(filepath.Join(e.dir, "libcni")); err != nil {
		t.Fatal(err)
	}
	err := e.host.Do(func() error {
		return e.cniConf.GCNetworkList(context.Background(), e.confList(), &libcni.GCArgs{
			ValidAttachments: []types.GCAttachment{{ContainerID: keep.id, IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if l := links(t, drop.sandbox); len(l) != 0 {
		t.Errorf("GC left the dropped sandbox's links: %v", l)
	}
	if l := links(t, keep.sandbox); len(l) != 2 {
		t.Errorf("GC touched a valid sandbox: %v", l)
	}
	if a := e.allocations("net-a"); len(a) != 1 {
		t.Errorf("net-a allocations after GC: %v", a)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.CacheDir, drop.id+":eth0.json")); !os.IsNotExist(err) {
		t.Errorf("GC left drop's cache entry: %v", err)
	}

	// Pods deleted from the API: one sandbox gone, one still there.
	gone := e.pod("gc-gone", nil)
	stays := e.pod("gc-stays", nil)
	e.mustAdd(gone)
	e.mustAdd(stays)
	for _, p := range []*pod{keep, gone, stays} {
		zero := int64(0) // no kubelet to finish a graceful deletion
		if err := e.c.Client.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
	}
	// The runtime removed gone's namespace without calling DEL (lost).
	goneEntry := e.cacheEntry(gone)
	if err := unmountNS(goneEntry.Netns); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the sweep to collect the pod whose namespace is gone", func() bool {
		_, err := os.Stat(filepath.Join(e.cfg.CacheDir, gone.id+":eth0.json"))
		return os.IsNotExist(err)
	})
	if _, err := os.Stat(filepath.Join(e.cfg.CacheDir, stays.id+":eth0.json")); err != nil {
		t.Errorf("a pod whose namespace exists was collected within gcGrace: %v", err)
	}
	if a := e.allocations("cbr0"); len(a) != 2 { // keep and stays
		t.Errorf("cluster allocations %v, want keep's and stays'", a)
	}
	for _, p := range []*pod{keep, stays} {
		if err := e.del(p); err != nil {
			t.Fatal(err)
		}
	}
}

// unmountNS removes a test namespace's bind mount, as a runtime does.
func unmountNS(path string) error {
	ns, err := os.Open(path)
	if err != nil {
		return err
	}
	ns.Close()
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		return err
	}
	return os.Remove(path)
}

// STATUS: not ready without the readiness indicator file or without knitd.
func TestStatus(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	e := newEnv(t, func(c *knitd.Config) { c.ReadinessIndicatorFile = ready })
	e.writeClusterConf("10-cluster.conflist", "1.1.0")
	e.waitFor("1.1.0 conflist", func() bool { return e.confList().CNIVersion == "1.1.0" })
	status := func() error {
		return e.host.Do(func() error { return e.cniConf.GetStatusNetworkList(context.Background(), e.confList()) })
	}
	err := status()
	if err == nil {
		t.Fatal("STATUS ready without the readiness file")
	}
	if te := cniError(t, err); te.Code != 50 || !strings.Contains(te.Msg, ready) {
		t.Errorf("STATUS %d %q, want 50 naming %s", te.Code, te.Msg, ready)
	}
	p := e.pod("notready", nil)
	if _, err := e.add(p); err == nil || cniError(t, err).Code != types.ErrTryAgainLater {
		t.Errorf("ADD before ready: %v, want code 11", err)
	}
	if err := os.WriteFile(ready, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := status(); err != nil {
		t.Errorf("STATUS when ready: %v", err)
	}
	resp, err := http.Get("http://" + e.d.MetricsAddr() + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/readyz: %v %v", resp, err)
	}
	e.stop()
	err = status()
	if err == nil || cniError(t, err).Code != 50 {
		t.Errorf("STATUS without knitd: %v, want code 50", err)
	}
}

// knitd works with exactly the RBAC of deploy/rbac.yaml (impersonating its
// service account), and that RBAC grants nothing beyond what it needs.
func TestRBAC(t *testing.T) {
	c := kube.Shared(t)
	applyRBAC(t, c.Client)
	sa := rest.CopyConfig(c.Rest)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:kube-system:knit",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}}
	e := newEnv(t)
	e.stop()
	e.restOverride = sa
	e.start()
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	p := e.pod("rbac", map[string]string{annotations.NetworksKey: "net-a"})
	e.mustAdd(p)
	if st := e.status(p); len(st) != 2 {
		t.Errorf("status under knit's RBAC: %+v", st)
	}
	e.events(p, "AddedInterface", 2)
	if err := e.del(p); err != nil {
		t.Fatal(err)
	}
	// Nothing beyond that: no secrets, no NAD writes, no pod deletes.
	cs := kubernetes.NewForConfigOrDie(sa)
	if _, err := cs.CoreV1().Secrets("kube-system").List(context.Background(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("knit may list secrets: %v", err)
	}
	if err := cs.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("knit may delete pods: %v", err)
	}
	nc := nadclient.NewForConfigOrDie(sa)
	if err := nc.K8sCniCncfIoV1().NetworkAttachmentDefinitions(e.ns).Delete(context.Background(), "net-a", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("knit may delete NADs: %v", err)
	}
}

// applyRBAC creates the ServiceAccount, ClusterRole and binding of
// deploy/rbac.yaml.
func applyRBAC(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "deploy", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(b), -1) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		var cerr error
		switch meta.Kind {
		case "ServiceAccount":
			continue // impersonation needs no token
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			_, cerr = cs.RbacV1().ClusterRoles().Create(ctx, &r, metav1.CreateOptions{})
		case "ClusterRoleBinding":
			var r rbacv1.ClusterRoleBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			_, cerr = cs.RbacV1().ClusterRoleBindings().Create(ctx, &r, metav1.CreateOptions{})
		default:
			t.Fatalf("unexpected kind %q in deploy/rbac.yaml", meta.Kind)
		}
		if cerr != nil && !apierrors.IsAlreadyExists(cerr) {
			t.Fatalf("%s: %v", meta.Kind, cerr)
		}
	}
}

// Metrics: request latency and errors by code, in-flight gauge; pprof off.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	p := e.pod("metrics", map[string]string{annotations.NetworksKey: "net-a"})
	e.mustAdd(p)
	bad := e.pod("metrics-bad", map[string]string{annotations.NetworksKey: "nope"})
	if _, err := e.add(bad); err == nil {
		t.Fatal("bad ADD succeeded")
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + e.d.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, m := get("/metrics")
	for _, want := range []string{
		`knit_cni_request_duration_seconds_count{command="ADD",result="ok"} 1`,
		`knit_cni_request_duration_seconds_count{command="ADD",result="error"} 1`,
		`knit_cni_request_errors_total{code="7",command="ADD"} 1`,
		`knit_cni_requests_in_flight{command="ADD"} 0`,
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz %d %q", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Errorf("pprof served without being enabled: %d", code)
	}
	if err := e.del(p); err != nil {
		t.Fatal(err)
	}
}

// The knit conflist follows the cluster network's cniVersion, and knit
// answers the runtime in it: every spec version from 0.3.0 to 1.1.0.
func TestSpecVersions(t *testing.T) {
	e := newEnv(t)
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	for i, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		e.writeClusterConf("10-cluster.conflist", v)
		e.waitFor("conflist version "+v, func() bool {
			l, err := libcni.ConfListFromFile(filepath.Join(e.confDir, "00-knit.conflist"))
			return err == nil && l.CNIVersion == v
		})
		p := e.pod(fmt.Sprintf("v%d", i), map[string]string{annotations.NetworksKey: "net-a"})
		var res types.Result
		err := e.host.Do(func() error {
			var err error
			res, err = e.cniConf.AddNetworkList(context.Background(), e.confList(), e.rt(p))
			return err
		})
		if err != nil {
			t.Fatalf("%s: ADD: %v", v, err)
		}
		if res.Version() != v {
			t.Errorf("%s: result version %s", v, res.Version())
		}
		if v != "0.3.0" && v != "0.3.1" {
			if err := e.check(p); err != nil {
				t.Errorf("%s: CHECK: %v", v, err)
			}
		}
		if v == "1.1.0" {
			if err := e.host.Do(func() error { return e.cniConf.GetStatusNetworkList(context.Background(), e.confList()) }); err != nil {
				t.Errorf("%s: STATUS: %v", v, err)
			}
		}
		if err := e.del(p); err != nil {
			t.Errorf("%s: DEL: %v", v, err)
		}
		e.assertGone(p, "cbr0", "net-a")
	}
}
