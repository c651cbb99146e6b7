//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

var (
	nncpGVR = schema.GroupVersionResource{Group: "nmstate.io", Version: "v1", Resource: "nodenetworkconfigurationpolicies"}
	nnsGVR  = schema.GroupVersionResource{Group: "nmstate.io", Version: "v1beta1", Resource: "nodenetworkstates"}
	nnceGVR = schema.GroupVersionResource{Group: "nmstate.io", Version: "v1beta1", Resource: "nodenetworkconfigurationenactments"}
)

const policyWait = 90 * time.Second

// testSeed002Policy is seed 002 verbatim: label two nodes
// external-network=true, apply br1-ens35, and see it Available with br1
// (port ens35, a DHCP address from the segment's server) on exactly those
// nodes, and a NodeNetworkState for every node.
func (c *Cluster) testSeed002Policy(t *testing.T, a, b string) {
	c.DumpOnFailure(t, c.Nodes...)
	ctx := context.Background()
	for _, n := range []string{a, b} {
		c.label(t, n, "external-network", "true")
	}
	start := time.Now()
	c.applyPolicy(t, "examples/seeds/002-nncp-br1.yaml")
	c.waitPolicy(t, "br1-ens35", "Available", "SuccessfullyConfigured")
	t.Logf("br1-ens35 Available %v after apply", time.Since(start).Round(time.Millisecond))
	for _, n := range c.Nodes {
		out, err := c.NodeExec(ctx, n, "sh", "-c", "ip -o link show ens35; ip -o -4 addr show br1 2>/dev/null || true")
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		labelled := n == a || n == b
		if got := strings.Contains(out, "master br1"); got != labelled {
			t.Errorf("%s: ens35 in br1 = %v, want %v:\n%s", n, got, labelled, out)
		}
		if labelled && !strings.Contains(out, "inet 10.77.1.") {
			t.Errorf("%s: br1 has no DHCP address from the ext segment:\n%s", n, out)
		}
	}
	// kubectl get nns: one per node, each reporting ens35.
	err := poll(ctx, policyWait, func(ctx context.Context) error {
		for _, n := range c.Nodes {
			nns, err := c.Dynamic.Resource(nnsGVR).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("nns %s: %w", n, err)
			}
			raw, _ := json.Marshal(nns.Object["status"])
			if !strings.Contains(string(raw), `"ens35"`) {
				return fmt.Errorf("nns %s does not report ens35", n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testPolicyRollback applies a policy that takes node's eth0 address away,
// cutting it off from the API server and its gateway. The agent's probes
// fail, the change is rolled back, the policy is Degraded with the reason,
// and the node stays Ready with its address.
func (c *Cluster) testPolicyRollback(t *testing.T, node string) {
	c.DumpOnFailure(t, node)
	ctx := context.Background()
	c.label(t, node, "e2e-cut-off", "true")
	before, err := c.NodeExec(ctx, node, "ip", "-o", "-4", "addr", "show", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	p := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "nmstate.io/v1", "kind": "NodeNetworkConfigurationPolicy",
		"metadata": map[string]any{"name": "e2e-cut-off"},
		"spec": map[string]any{
			"nodeSelector": map[string]any{"e2e-cut-off": "true"},
			"desiredState": map[string]any{"interfaces": []any{
				map[string]any{"name": "eth0", "ipv4": map[string]any{"enabled": false}},
			}},
		},
	}}
	if _, err := c.Dynamic.Resource(nncpGVR).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Dynamic.Resource(nncpGVR).Delete(context.Background(), "e2e-cut-off", metav1.DeleteOptions{})
	})
	c.waitPolicy(t, "e2e-cut-off", "Degraded", "FailedToConfigure")
	nnce, err := c.Dynamic.Resource(nnceGVR).Get(ctx, node+".e2e-cut-off", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if msg := trueConditionMessage(nnce); !strings.Contains(msg, "probe") || !strings.Contains(msg, "rolled back") {
		t.Errorf("enactment message %q does not report a failed probe and a rollback", msg)
	}
	after, err := c.NodeExec(ctx, node, "ip", "-o", "-4", "addr", "show", "eth0")
	if err != nil || fields(after) != fields(before) {
		t.Fatalf("eth0 not restored: before %q after %q (%v)", before, after, err)
	}
	err = poll(ctx, policyWait, func(ctx context.Context) error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("%s not Ready", node)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fields drops the volatile lifetime columns of `ip -o addr` output.
func fields(s string) string {
	s, _, _ = strings.Cut(s, "valid_lft")
	return strings.Join(strings.Fields(s), " ")
}

func (c *Cluster) label(t *testing.T, node, k, v string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, k, v)
	_, err := c.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// applyPolicy creates (or replaces) the policies in a manifest.
func (c *Cluster) applyPolicy(t *testing.T, manifest string) {
	t.Helper()
	objs, err := decodeFile(filepath.Join(c.Root, manifest))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, o := range objs {
		_, err := c.Dynamic.Resource(nncpGVR).Create(ctx, o, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			cur, gerr := c.Dynamic.Resource(nncpGVR).Get(ctx, o.GetName(), metav1.GetOptions{})
			if gerr != nil {
				t.Fatal(gerr)
			}
			o.SetResourceVersion(cur.GetResourceVersion())
			_, err = c.Dynamic.Resource(nncpGVR).Update(ctx, o, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatalf("%s: %v", manifest, err)
		}
	}
}

// waitPolicy polls until the policy's True condition has type and reason
// (what `kubectl get nncp` prints as STATUS and REASON).
func (c *Cluster) waitPolicy(t *testing.T, name, typ, reason string) {
	t.Helper()
	var last string
	err := poll(context.Background(), policyWait, func(ctx context.Context) error {
		p, err := c.Dynamic.Resource(nncpGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		gotType, gotReason := trueCondition(p)
		last = gotType + "/" + gotReason
		if gotType != typ || gotReason != reason {
			return fmt.Errorf("policy %s is %s, want %s/%s", name, last, typ, reason)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func trueCondition(o *unstructured.Unstructured) (typ, reason string) {
	conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["status"] == "True" {
			typ, _ = m["type"].(string)
			reason, _ = m["reason"].(string)
		}
	}
	return typ, reason
}

func trueConditionMessage(o *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["status"] == "True" {
			msg, _ := m["message"].(string)
			return msg
		}
	}
	return ""
}
