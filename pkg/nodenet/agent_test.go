package nodenet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	api "github.com/knit-cni/knit/api/nmstate"
	"github.com/knit-cni/knit/pkg/nmstate"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/pkg/testutil/kube"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctrl.SetLogger(logr.FromSlogHandler(slog.Default().Handler()))
	os.Exit(kube.Main(m))
}

// env is a control plane with the nmstate CRDs and a client.
type env struct {
	c  *kube.Cluster
	cl client.Client
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testutil.RequireRoot(t)
	c := kube.Shared(t)
	installCRDs(t, c)
	s, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(c.Rest, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return &env{c: c, cl: cl}
}

func installCRDs(t testing.TB, c *kube.Cluster) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "deploy/nmstate/crds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cs := apiext.NewForConfigOrDie(c.Rest)
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	ctx := context.Background()
	for {
		var crd apiextv1.CustomResourceDefinition
		if err := dec.Decode(&crd); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		_, err := cs.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, &crd, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("CRD %s: %v", crd.Name, err)
		}
		err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
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
		if err != nil {
			t.Fatalf("CRD %s not established: %v", crd.Name, err)
		}
	}
}

// testNode is a Node object plus a namespace playing that node, with a
// stand-in NIC ens35, and its agent running.
type testNode struct {
	name string
	ns   *testutil.NS
	eng  *nmstate.Engine
}

func (e *env) startNode(t testing.TB, name string, lbls map[string]string) *testNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	if err := e.cl.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	n := &testNode{name: name, ns: testutil.NewNS(t)}
	seg := testutil.NewNS(t)
	testutil.Veth(t, n.ns, "ens35", seg, "peer0")
	n.eng = &nmstate.Engine{NS: n.ns.NS, NL: n.ns.H, ResolvConf: filepath.Join(t.TempDir(), "resolv.conf"), VerifyTimeout: time.Second}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e.c.Rest, Options{NodeName: name, Engine: n.eng}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent %s: %v", name, err)
		}
		_ = e.cl.Delete(context.Background(), node)
	})
	return n
}

func policy(t testing.TB, y string) *api.NodeNetworkConfigurationPolicy {
	t.Helper()
	var p api.NodeNetworkConfigurationPolicy
	if err := yaml.Unmarshal([]byte(y), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// waitPolicy polls until the policy's true condition is want.
func (e *env) waitPolicy(t testing.TB, name string, want api.ConditionType, reason api.ConditionReason) *api.NodeNetworkConfigurationPolicy {
	t.Helper()
	var p api.NodeNetworkConfigurationPolicy
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := e.cl.Get(ctx, types.NamespacedName{Name: name}, &p); err != nil {
			return false, nil
		}
		c, ok := trueCondition(p.Status.Conditions)
		last = fmt.Sprintf("%+v", p.Status.Conditions)
		return ok && c.Type == want && c.Reason == reason, nil
	})
	if err != nil {
		t.Fatalf("policy %s never %s/%s; conditions %s", name, want, reason, last)
	}
	return &p
}

// The seed's policy with a static address in place of dhcp (DHCP has its
// own test): br1 with port ens35 on the labelled nodes only.
const seedPolicy = `
apiVersion: nmstate.io/v1
kind: NodeNetworkConfigurationPolicy
metadata:
  name: br1-ens35
spec:
  nodeSelector:
    external-network: "true"
  desiredState:
    interfaces:
      - name: br1
        description: Linux bridge with ens35 as a port
        type: linux-bridge
        state: up
        ipv4:
          address: [{ip: 192.168.72.50, prefix-length: 24}]
          enabled: true
        bridge:
          options:
            stp:
              enabled: false
          port:
            - name: ens35
`

func TestPolicyOnLabelledNodes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	n1 := e.startNode(t, "pn1", map[string]string{"external-network": "true"})
	n2 := e.startNode(t, "pn2", map[string]string{"external-network": "true"})
	n3 := e.startNode(t, "pn3", nil)
	// Agents are up once they have reported their nodes.
	for _, n := range []*testNode{n1, n2, n3} {
		e.waitNNS(t, n.name, false)
	}
	p := policy(t, seedPolicy)
	start := time.Now()
	if err := e.cl.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cl.Delete(context.Background(), p) })
	got := e.waitPolicy(t, p.Name, api.Available, api.SuccessfullyConfigured)
	t.Logf("policy Available on 2 nodes %s after creation", time.Since(start))
	if got.Status.UnavailableNodeCount != 0 {
		t.Errorf("unavailableNodeCount = %d after completion", got.Status.UnavailableNodeCount)
	}
	for _, n := range []*testNode{n1, n2} {
		br, err := n.ns.H.LinkByName("br1")
		if err != nil {
			t.Fatalf("%s: br1 missing: %v", n.name, err)
		}
		port, _ := n.ns.H.LinkByName("ens35")
		if port.Attrs().MasterIndex != br.Attrs().Index {
			t.Fatalf("%s: ens35 not in br1", n.name)
		}
		var nnce api.NodeNetworkConfigurationEnactment
		if err := e.cl.Get(ctx, types.NamespacedName{Name: n.name + ".br1-ens35"}, &nnce); err != nil {
			t.Fatalf("enactment: %v", err)
		}
		if c, _ := trueCondition(nnce.Status.Conditions); c.Type != api.Available || nnce.Labels[LabelPolicy] != "br1-ens35" {
			t.Fatalf("enactment %s: %+v labels %v", nnce.Name, c, nnce.Labels)
		}
	}
	if _, err := n3.ns.H.LinkByName("br1"); err == nil {
		t.Fatal("br1 created on an unlabelled node")
	}
	// Every node with an agent reports its state, with br1 where it exists.
	for _, n := range []*testNode{n1, n2, n3} {
		e.waitNNS(t, n.name, n != n3)
	}
}

func (e *env) waitNNS(t testing.TB, node string, wantBr1 bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var nns api.NodeNetworkState
		if err := e.cl.Get(ctx, types.NamespacedName{Name: node}, &nns); err != nil {
			return false, nil
		}
		s := string(nns.Status.CurrentState.Raw)
		return strings.Contains(s, `"ens35"`) && strings.Contains(s, `"name":"br1"`) == wantBr1, nil
	})
	if err != nil {
		t.Fatalf("NodeNetworkState %s never showed ens35 (and br1=%v)", node, wantBr1)
	}
}

func TestFailingPolicyIsDegradedAndRolledBack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	n := e.startNode(t, "fn1", map[string]string{"bad": "true"})
	p := policy(t, `
apiVersion: nmstate.io/v1
kind: NodeNetworkConfigurationPolicy
metadata: {name: bad-port}
spec:
  nodeSelector: {bad: "true"}
  desiredState:
    interfaces:
    - {name: br9, type: linux-bridge, bridge: {port: [{name: nosuchnic}]}}
`)
	if err := e.cl.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cl.Delete(context.Background(), p) })
	e.waitPolicy(t, p.Name, api.Degraded, api.FailedToConfigure)
	var nnce api.NodeNetworkConfigurationEnactment
	if err := e.cl.Get(ctx, types.NamespacedName{Name: "fn1.bad-port"}, &nnce); err != nil {
		t.Fatal(err)
	}
	c, _ := trueCondition(nnce.Status.Conditions)
	if c.Type != api.Failing || !strings.Contains(c.Message, "nosuchnic") {
		t.Fatalf("enactment condition %+v, want Failing naming nosuchnic", c)
	}
	if _, err := n.ns.H.LinkByName("br9"); err == nil {
		t.Fatal("br9 left behind")
	}
}

func TestUnknownFieldFailsNamingIt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.startNode(t, "un1", map[string]string{"typo": "true"})
	p := policy(t, `
apiVersion: nmstate.io/v1
kind: NodeNetworkConfigurationPolicy
metadata: {name: typo}
spec:
  nodeSelector: {typo: "true"}
  desiredState:
    interfaces:
    - {name: br5, type: linux-bridge, brdige: {}}
`)
	if err := e.cl.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cl.Delete(context.Background(), p) })
	e.waitPolicy(t, p.Name, api.Degraded, api.FailedToConfigure)
	var nnce api.NodeNetworkConfigurationEnactment
	if err := e.cl.Get(ctx, types.NamespacedName{Name: "un1.typo"}, &nnce); err != nil {
		t.Fatal(err)
	}
	if c, _ := trueCondition(nnce.Status.Conditions); !strings.Contains(c.Message, "brdige") {
		t.Fatalf("message %q does not name the unknown field", c.Message)
	}
}

func TestNoMatchingNode(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.startNode(t, "nm1", nil)
	p := policy(t, strings.Replace(seedPolicy, "external-network", "nowhere", 1))
	p.Name = "nowhere"
	if err := e.cl.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cl.Delete(context.Background(), p) })
	e.waitPolicy(t, p.Name, api.Available, api.NoMatchingNode)
}

// BenchmarkPolicyToAvailable measures creating the seed's br1 policy until
// it is Available on 3 labelled nodes (maxUnavailable 50%: two at a time).
// Between iterations br1 is removed again, untimed.
func BenchmarkPolicyToAvailable(b *testing.B) {
	e := newEnv(b)
	var nodes []*testNode
	for i := 1; i <= 3; i++ {
		nodes = append(nodes, e.startNode(b, fmt.Sprintf("bn%d", i), map[string]string{"bench": "true"}))
	}
	for _, n := range nodes {
		e.waitNNS(b, n.name, false)
	}
	ctx := context.Background()
	absent, _ := nmstate.Parse([]byte("interfaces:\n- {name: br1, state: absent}\n"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := policy(b, strings.Replace(seedPolicy, "external-network", "bench", 1))
		p.Name = fmt.Sprintf("bench-%d", i)
		start := time.Now()
		if err := e.cl.Create(ctx, p); err != nil {
			b.Fatal(err)
		}
		e.waitPolicy(b, p.Name, api.Available, api.SuccessfullyConfigured)
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "ms/policy")
		b.StopTimer()
		if err := e.cl.Delete(ctx, p); err != nil {
			b.Fatal(err)
		}
		for _, n := range nodes {
			if err := n.eng.Apply(ctx, absent); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
}
