//go:build e2e

// Package e2e runs the seed walkthroughs and knit's lifecycle guarantees on the
// local multi-node cluster (hack/cluster) through the Kubernetes API, with knit
// installed from deploy/. `make e2e` (hack/e2e.sh) starts the cluster when it is
// not up, deploys knit and runs `go test -tags e2e ./test/e2e`.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

// Deadlines. Generous for a loaded 2-core CI machine; every wait is a poll.
const (
	pollEvery      = 250 * time.Millisecond
	podReadyWait   = 120 * time.Second // includes kubelet's ~10 s backoff after a failed sandbox
	podGoneWait    = 90 * time.Second
	releaseWait    = 60 * time.Second // CNI DEL done after the pod object is gone
	knitdReadyWait = 120 * time.Second
	execWait       = 30 * time.Second
)

var nadGVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}

// Cluster is the local cluster under test. It is filled once by connect and
// read-only afterwards, so parallel subtests share it.
type Cluster struct {
	Root    string // repository root
	Config  *rest.Config
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Nodes   []string // Ready nodes, sorted: node1, node2, ...
	Knit    []*appsv1.DaemonSet
}

// connect reaches the cluster through _output/kubeconfig (or $E2E_KUBECONFIG)
// and checks that knit's DaemonSets from deploy/ are rolled out.
func connect(t *testing.T) *Cluster {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := os.Getenv("E2E_KUBECONFIG")
	if kubeconfig == "" {
		kubeconfig = filepath.Join(root, "_output", "kubeconfig")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("no cluster (%v): run `make e2e` or `make cluster-up`", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	c := &Cluster{Root: root, Config: cfg}
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if c.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c.Nodes, err = c.readyNodes(ctx); err != nil {
		t.Fatal(err)
	}
	if len(c.Nodes) < 2 {
		t.Fatalf("need at least 2 Ready nodes, have %v", c.Nodes)
	}
	if c.Knit, err = c.knitDaemonSets(ctx); err != nil {
		t.Fatalf("knit is not deployed: %v (hack/e2e.sh deploys it with kubectl apply -f deploy/)", err)
	}
	return c
}

func repoRoot() (string, error) {
	if r := os.Getenv("KNIT_ROOT"); r != "" {
		return r, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repo root: %w", err)
	}
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "hack", "cluster", "cluster.sh")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("repo root not found above %s (set KNIT_ROOT)", wd)
}

func (c *Cluster) readyNodes(ctx context.Context) ([]string, error) {
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes (is the cluster up? make cluster-up): %w", err)
	}
	var names []string
	for _, n := range list.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				names = append(names, n.Name)
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

// knitDaemonSets returns the DaemonSets that deploy/*.yaml define, as the API
// server has them, and fails unless each is fully rolled out.
func (c *Cluster) knitDaemonSets(ctx context.Context) ([]*appsv1.DaemonSet, error) {
	dir := os.Getenv("KNIT_DEPLOY_DIR") // as for hack/knit-deploy.sh
	if dir == "" {
		dir = filepath.Join(c.Root, "deploy")
	}
	objs, err := decodeDir(dir)
	if err != nil {
		return nil, err
	}
	var out []*appsv1.DaemonSet
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		ds, err := c.Client.AppsV1().DaemonSets(o.GetNamespace()).Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("daemonset %s/%s: %w", o.GetNamespace(), o.GetName(), err)
		}
		if ds.Status.DesiredNumberScheduled == 0 || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled {
			return nil, fmt.Errorf("daemonset %s/%s: %d of %d ready", ds.Namespace, ds.Name,
				ds.Status.NumberReady, ds.Status.DesiredNumberScheduled)
		}
		out = append(out, ds)
	}
	if len(out) == 0 {
		return nil, errors.New("deploy/ defines no DaemonSet")
	}
	return out, nil
}

// knitd returns the DaemonSet of the node daemon: the one named after knitd
// when deploy/ has several.
func (c *Cluster) knitd() *appsv1.DaemonSet {
	for _, ds := range c.Knit {
		if strings.Contains(ds.Name, "knit") {
			return ds
		}
	}
	return c.Knit[0]
}

// daemonPods lists the pods of ds on node.
func (c *Cluster) daemonPods(ctx context.Context, ds *appsv1.DaemonSet, node string) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("daemonset %s selector: %w", ds.Name, err)
	}
	list, err := c.Client.CoreV1().Pods(ds.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: sel.String(), FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("list %s pods on %s: %w", ds.Name, node, err)
	}
	return list.Items, nil
}

// decodeDir decodes every YAML/JSON object in the files directly in dir (not
// subdirectories), the way `kubectl apply -f dir/` reads them.
func decodeDir(dir string) ([]*unstructured.Unstructured, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		objs, err := decodeFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// decodeFile decodes a multi-document YAML (or JSON) file, skipping empty documents.
func decodeFile(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open manifest: %w", err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode %s: %w", path, err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// Namespace creates a fresh namespace for one test and deletes it (waiting
// until it is gone, so that everything its pods held is released) when the
// test ends.
func (c *Cluster) Namespace(t *testing.T, prefix string) string {
	t.Helper()
	ctx := context.Background()
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-" + prefix + "-", Labels: map[string]string{"knit-e2e": "true"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { c.deleteNamespace(t, ns.Name) })
	// The ServiceAccount admission plugin rejects pods until the namespace's
	// default ServiceAccount exists.
	err = poll(ctx, 30*time.Second, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("namespace %s: default ServiceAccount: %v", ns.Name, err)
	}
	return ns.Name
}

func (c *Cluster) deleteNamespace(t *testing.T, ns string) {
	if os.Getenv("E2E_KEEP_NAMESPACES") == "1" {
		t.Logf("E2E_KEEP_NAMESPACES=1: keeping namespace %s", ns)
		return
	}
	ctx := context.Background()
	// Pods first, with a short grace (they exit on SIGTERM): the namespace
	// controller waits out the pods' grace periods (30 s for samplepod) before
	// it looks again.
	grace := int64(1)
	err := c.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace}, metav1.ListOptions{})
	if err != nil {
		t.Errorf("delete pods of %s: %v", ns, err)
	}
	err = poll(ctx, podGoneWait, func(ctx context.Context) error {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil && len(pods.Items) > 0 {
			err = fmt.Errorf("%d pods left", len(pods.Items))
		}
		return err
	})
	if err != nil {
		t.Errorf("pods of %s: %v", ns, err)
	}
	if err := c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete namespace %s: %v", ns, err)
		return
	}
	err = poll(ctx, podGoneWait, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return gone(err)
	})
	if err != nil {
		t.Errorf("namespace %s not gone: %v", ns, err)
	}
}

// Apply creates the objects of an examples/ manifest in ns, after mutate (may
// be nil) adjusted each one. Only Pods and NetworkAttachmentDefinitions are
// expected there.
func (c *Cluster) Apply(t *testing.T, ns, manifest string, mutate func(*unstructured.Unstructured)) []*unstructured.Unstructured {
	t.Helper()
	objs, err := decodeFile(filepath.Join(c.Root, manifest))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		o.SetNamespace(ns)
		if mutate != nil {
			mutate(o)
		}
		if err := c.create(context.Background(), o); err != nil {
			t.Fatalf("%s: %v", manifest, err)
		}
	}
	return objs
}

// CreateNAD creates a NetworkAttachmentDefinition with the given CNI config.
func (c *Cluster) CreateNAD(t *testing.T, ns, name, config string) {
	t.Helper()
	o := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"config": config},
	}}
	if err := c.create(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) create(ctx context.Context, o *unstructured.Unstructured) error {
	switch o.GetKind() {
	case "NetworkAttachmentDefinition":
		_, err := c.Dynamic.Resource(nadGVR).Namespace(o.GetNamespace()).Create(ctx, o, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create NAD %s: %w", o.GetName(), err)
		}
		return nil
	case "Pod":
		var pod corev1.Pod
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &pod); err != nil {
			return fmt.Errorf("pod %s: %w", o.GetName(), err)
		}
		_, err := c.Client.CoreV1().Pods(pod.Namespace).Create(ctx, &pod, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create pod %s: %w", pod.Name, err)
		}
		return nil
	}
	return fmt.Errorf("unexpected kind %s in an e2e manifest", o.GetKind())
}

// onNode pins Pods to node (the seeds leave placement to the scheduler; the
// tests need to know which node holds what).
func onNode(node string) func(*unstructured.Unstructured) {
	return func(o *unstructured.Unstructured) {
		if o.GetKind() == "Pod" {
			_ = unstructured.SetNestedField(o.Object, node, "spec", "nodeName")
		}
	}
}

// podOnNode pins the named pod to node and leaves the other objects alone.
func podOnNode(name, node string) func(*unstructured.Unstructured) {
	return func(o *unstructured.Unstructured) {
		if o.GetKind() == "Pod" && o.GetName() == name {
			_ = unstructured.SetNestedField(o.Object, node, "spec", "nodeName")
		}
	}
}

// testPod is a minimal pod on node with the networks annotation.
func testPod(ns, name, node, networks string) *corev1.Pod {
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": networks}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name: "c", Image: "knit.local/testimage:latest", ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sh", "-c", "trap : TERM INT; sleep infinity & wait"},
			}},
		},
	}
}

// CreatePod creates pod (a copy, so the caller can create it again).
func (c *Cluster) CreatePod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	p := pod.DeepCopy()
	if _, err := c.Client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
}

// WaitReady waits for the pods to be Ready and returns them in order. On
// timeout it prints their status, events and the logs of their nodes.
func (c *Cluster) WaitReady(t *testing.T, ns string, names ...string) []*corev1.Pod {
	t.Helper()
	ctx := context.Background()
	out := make([]*corev1.Pod, len(names))
	for i, name := range names {
		var last *corev1.Pod
		err := poll(ctx, podReadyWait, func(ctx context.Context) error {
			p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			last = p
			if !podReady(p) {
				return fmt.Errorf("phase %s", p.Status.Phase)
			}
			return nil
		})
		if err != nil {
			c.describePod(t, ns, name, last)
			t.Fatalf("pod %s/%s not Ready: %v", ns, name, err)
		}
		out[i] = last
	}
	return out
}

// gone turns the error of a Get into nil when the object is gone.
func gone(getErr error) error {
	switch {
	case apierrors.IsNotFound(getErr):
		return nil
	case getErr == nil:
		return errors.New("still exists")
	}
	return getErr
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// DeletePod deletes a pod and waits until the API server no longer has it
// (kubelet has stopped its sandbox, i.e. CNI DEL ran).
func (c *Cluster) DeletePod(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	err := c.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s/%s: %v", ns, name, err)
	}
	c.WaitGone(t, ns, name)
}

// WaitGone waits until the pod object is gone.
func (c *Cluster) WaitGone(t *testing.T, ns, name string) {
	t.Helper()
	err := poll(context.Background(), podGoneWait, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return gone(err)
	})
	if err != nil {
		t.Fatalf("pod %s/%s still there: %v", ns, name, err)
	}
}

// Exec runs cmd in the pod's first container and returns its stdout.
func (c *Cluster) Exec(ctx context.Context, ns, pod string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, execWait)
	defer cancel()
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return "", fmt.Errorf("exec %v in %s/%s: %w", cmd, ns, pod, err)
	}
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return stdout.String(), fmt.Errorf("exec %v in %s/%s: %w (stdout %q, stderr %q)", cmd, ns, pod, err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// MustExec is Exec failing the test on error.
func (c *Cluster) MustExec(t *testing.T, ns, pod string, cmd ...string) string {
	t.Helper()
	out, err := c.Exec(context.Background(), ns, pod, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// NodeExec runs a command inside a node (hack/cluster/node-exec).
func (c *Cluster) NodeExec(ctx context.Context, node string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, execWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.Root, "hack", "cluster", "node-exec"), append([]string{node}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("node-exec %s %v: %w: %s", node, args, err, stderr.String())
	}
	return stdout.String(), nil
}

// DumpOnFailure prints, if the test failed, knitd's logs and the kubelet log
// of each node.
func (c *Cluster) DumpOnFailure(t *testing.T, nodes ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range nodes {
			c.dumpNode(t, n)
		}
	})
}

func (c *Cluster) dumpNode(t *testing.T, node string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ds := range c.Knit {
		pods, err := c.daemonPods(ctx, ds, node)
		if err != nil {
			t.Logf("%s: %v", node, err)
		}
		for i := range pods {
			c.dumpPodLogs(ctx, t, node, &pods[i])
		}
	}
	kubelet := filepath.Join(c.Root, "_output", "cluster", node, "logs", "kubelet.log")
	t.Logf("===== %s: %s (last 80 lines)\n%s", node, kubelet, tailFile(kubelet, 80))
}

// dumpPodLogs logs the tail of every container's log of p (and of its
// previous instance when it restarted), as `kubectl logs` shows it.
func (c *Cluster) dumpPodLogs(ctx context.Context, t *testing.T, node string, p *corev1.Pod) {
	var names []string
	for _, ctr := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		names = append(names, ctr.Name)
	}
	for _, name := range names {
		for _, prev := range []bool{true, false} {
			if prev && !restarted(p) {
				continue
			}
			tail := int64(150)
			b, err := c.Client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{
				Container: name, TailLines: &tail, Previous: prev}).DoRaw(ctx)
			if err != nil {
				b = []byte(err.Error())
			}
			t.Logf("===== %s: kubectl -n %s logs %s -c %s (previous=%v, last %d lines)\n%s", node, p.Namespace, p.Name, name, prev, tail, b)
		}
	}
}

func restarted(p *corev1.Pod) bool {
	for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if s.RestartCount > 0 {
			return true
		}
	}
	return false
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// describePod logs what `kubectl describe pod` would show that matters here:
// phase, conditions, container states, annotations and events. (The node's
// logs come from DumpOnFailure.)
func (c *Cluster) describePod(t *testing.T, ns, name string, p *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if p == nil {
		t.Logf("pod %s/%s: never seen", ns, name)
		return
	}
	t.Logf("pod %s/%s on %s: phase %s, conditions %+v, containers %+v, annotations %v",
		ns, name, p.Spec.NodeName, p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses, p.Annotations)
	evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err == nil {
		for _, e := range evs.Items {
			t.Logf("  event %s %s x%d: %s", e.Type, e.Reason, e.Count, e.Message)
		}
	}
}

// poll calls cond every pollEvery until it returns nil or the deadline
// passes; on timeout the error says what cond last reported.
func poll(ctx context.Context, timeout time.Duration, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last error
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		// Keep what cond said before the deadline cut its last call short.
		if last == nil || ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still not done after %v: %w", timeout, last)
		case <-tick.C:
		}
	}
}
