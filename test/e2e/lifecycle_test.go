//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// A pod with the cluster network, a macvlan and a bridge attachment: deleting
// it releases every lease and removes every host-side link, and nothing in
// the node's stateDirs names its sandbox any more. The bridge network is its
// own (not seed 002's multus-br1, whose addresses the seed 002 case pings).
func (c *Cluster) testPodDeletion(t *testing.T, node string) {
	ns := c.Namespace(t, "delete")
	c.DumpOnFailure(t, node)
	ctx := context.Background()
	c.Apply(t, ns, seeds+"000-macvlan-conf.yaml", nil)
	c.CreateNAD(t, ns, "e2e-bridge", `{"cniVersion": "1.0.0", "type": "bridge", "bridge": "e2ebr0",
		"ipam": {"type": "host-local", "ranges": [[{"subnet": "192.168.73.0/24"}]]}}`)
	c.CreatePod(t, testPod(ns, "victim", node, "macvlan-conf,e2e-bridge"))
	pod := c.WaitReady(t, ns, "victim")[0]
	st, _ := c.Status(t, ns, "victim")
	if len(st) != 3 {
		t.Fatalf("network-status: want 3 attachments, got %+v", st)
	}
	sandbox := c.SandboxID(t, node, pod.Status.PodIP)

	// What the pod holds on the node: a lease per attachment ...
	allocs, err := c.Allocations(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{} // ifname -> network/ip
	for _, a := range allocs {
		if a.ContainerID == sandbox {
			held[a.Ifname] = a.Network + "/" + a.IP
		}
	}
	if len(held) != 3 || !strings.HasPrefix(held["net1"], "macvlan-conf/") || !strings.HasPrefix(held["net2"], "e2e-bridge/") {
		t.Fatalf("leases of sandbox %s: %v, want eth0 (cluster), net1 (macvlan-conf), net2 (e2e-bridge)", sandbox, held)
	}
	// ... and the host ends of its two veths (eth0 on cni0, net2 on e2ebr0).
	var hostLinks []string
	for ifname, br := range map[string]string{"eth0": "cni0", "net2": "e2ebr0"} {
		name, line, err := c.HostLink(ctx, node, c.PodIface(t, ns, "victim", ifname).IfLink)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(line, " master "+br+" ") {
			t.Errorf("host end of %s not on %s: %s", ifname, br, line)
		}
		hostLinks = append(hostLinks, name)
	}
	before, err := c.MentionsOf(ctx, node, sandbox)
	if err != nil || len(before) == 0 {
		t.Fatalf("nothing under /var/lib/cni names sandbox %s (%v): the check below would prove nothing", sandbox, err)
	}
	t.Logf("sandbox %s on %s: leases %v, host links %v, state %v", sandbox[:12], node, held, hostLinks, before)

	c.DeletePod(t, ns, "victim")
	err = poll(ctx, releaseWait, func(ctx context.Context) error {
		left, err := c.MentionsOf(ctx, node, sandbox)
		if err != nil {
			return err
		}
		for _, l := range hostLinks {
			if ok, err := c.linkExists(ctx, node, l); err != nil || ok {
				left = append(left, "link "+l)
			}
		}
		return errList(left)
	})
	if err != nil {
		t.Fatalf("after deleting the pod, %s still has: %v", node, err)
	}
}

// knitd on node is restarted (its pod deleted, the DaemonSet makes a new one)
// while pods on that node are created and deleted: the pods created during
// the outage get their networks once knitd is back (kubelet retries), the
// ones deleted during it release everything (DEL from knit's node cache), and
// nothing leaks.
func (c *Cluster) testKnitdRestart(t *testing.T, node string) {
	ns := c.Namespace(t, "restart")
	c.DumpOnFailure(t, node)
	ctx := context.Background()
	c.Apply(t, ns, seeds+"000-macvlan-conf.yaml", nil)
	ds := c.knitd()
	old := c.readyDaemonPod(t, node, "")

	sandboxes := map[string]string{} // pod -> sandbox
	record := func(pods ...*corev1.Pod) {
		for _, p := range pods {
			sandboxes[p.Name] = c.SandboxID(t, node, p.Status.PodIP)
		}
	}
	for _, n := range []string{"before-1", "before-2"} {
		c.CreatePod(t, testPod(ns, n, node, "macvlan-conf"))
	}
	record(c.WaitReady(t, ns, "before-1", "before-2")...)

	t.Logf("deleting %s/%s (knitd on %s)", old.Namespace, old.Name, node)
	if err := c.Client.CoreV1().Pods(ds.Namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete knitd pod: %v", err)
	}
	c.waitNotServing(t, old)
	// The outage: one pod goes, three come.
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "before-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"during-1", "during-2", "during-3"} {
		c.CreatePod(t, testPod(ns, n, node, "macvlan-conf"))
	}
	fresh := c.readyDaemonPod(t, node, old.UID)
	t.Logf("knitd back on %s: %s", node, fresh.Name)

	c.WaitGone(t, ns, "before-1")
	record(c.WaitReady(t, ns, "during-1", "during-2", "during-3")...)
	// And after it: one more of each.
	c.CreatePod(t, testPod(ns, "after-1", node, "macvlan-conf"))
	c.DeletePod(t, ns, "before-2")
	record(c.WaitReady(t, ns, "after-1")...)

	for _, n := range []string{"during-1", "during-2", "during-3", "after-1"} {
		st, _ := c.Status(t, ns, n)
		ifc := c.PodIface(t, ns, n, "net1")
		checkMacvlanConfAddr(t, ifc)
		checkAttachment(t, attachment(t, st, "net1"), ns+"/macvlan-conf", ifc)
	}
	for _, n := range []string{"during-1", "during-2", "during-3", "after-1"} {
		if err := c.Client.CoreV1().Pods(ns).Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"during-1", "during-2", "during-3", "after-1"} {
		c.WaitGone(t, ns, n)
	}
	err := poll(ctx, releaseWait, func(ctx context.Context) error {
		var left []string
		for pod, id := range sandboxes {
			m, err := c.MentionsOf(ctx, node, id)
			if err != nil {
				return err
			}
			for _, p := range m {
				left = append(left, pod+": "+p)
			}
		}
		return errList(left)
	})
	if err != nil {
		t.Fatalf("after the pods are gone, %s still has: %v", node, err)
	}
}

// readyDaemonPod waits for a Ready knitd pod on node whose UID is not notUID.
func (c *Cluster) readyDaemonPod(t *testing.T, node string, notUID types.UID) *corev1.Pod {
	t.Helper()
	var found *corev1.Pod
	err := poll(context.Background(), knitdReadyWait, func(ctx context.Context) error {
		pods, err := c.daemonPods(ctx, c.knitd(), node)
		if err != nil {
			return err
		}
		for i := range pods {
			p := &pods[i]
			if p.UID != notUID && p.DeletionTimestamp == nil && podReady(p) {
				found = p
				return nil
			}
		}
		return fmt.Errorf("no Ready knitd pod on %s among %d", node, len(pods))
	})
	if err != nil {
		t.Fatalf("knitd on %s: %v", node, err)
	}
	return found
}

// waitNotServing waits until the deleted knitd pod is gone or not Ready, so
// that what follows happens while knitd is down.
func (c *Cluster) waitNotServing(t *testing.T, old *corev1.Pod) {
	t.Helper()
	err := poll(context.Background(), podGoneWait, func(ctx context.Context) error {
		p, err := c.Client.CoreV1().Pods(old.Namespace).Get(ctx, old.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		case p.UID != old.UID || !podReady(p):
			return nil
		}
		return errors.New("still Ready")
	})
	if err != nil {
		t.Fatalf("knitd pod %s: %v", old.Name, err)
	}
}

// portsAccountedFor: cni0 has one port per running pod of the node (hostNetwork
// pods aside), br1 has ens35 plus one per bridge attachment to br1 that the
// running pods' network-status lists.
func (c *Cluster) portsAccountedFor(ctx context.Context, node string) error {
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return fmt.Errorf("list pods on %s: %w", node, err)
	}
	// br1 (with its port ens35) exists only on the nodes seed 002's policy
	// selects.
	want := map[string]int{"cni0": 0, "br1": 0}
	if out, err := c.NodeExec(ctx, node, "sh", "-c", "ip -o link show br1 2>/dev/null || true"); err != nil {
		return err
	} else if strings.TrimSpace(out) != "" {
		want["br1"] = 1
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			return fmt.Errorf("pod %s/%s on %s is %s: waiting for it to settle", p.Namespace, p.Name, node, p.Status.Phase)
		}
		want["cni0"]++
		st, err := parseNetworkStatus(p)
		if err != nil {
			continue // a pod from before knit: the cluster network only
		}
		for _, s := range st {
			if s.Default {
				continue
			}
			if br, err := c.nadBridge(ctx, s.Name); err == nil {
				want[br]++
			}
		}
	}
	var problems []string
	for br, n := range map[string]int{"cni0": want["cni0"], "br1": want["br1"]} {
		got, err := c.BridgePorts(ctx, node, br)
		if err != nil {
			return err
		}
		if got != n {
			problems = append(problems, fmt.Sprintf("%s: %s has %d ports, the running pods account for %d", node, br, got, n))
		}
	}
	return errList(problems)
}

// nadBridge returns the bridge a NAD (ns/name) attaches to, or an error when
// it is not a bridge NAD.
func (c *Cluster) nadBridge(ctx context.Context, nsName string) (string, error) {
	ns, name, _ := strings.Cut(nsName, "/")
	nad, err := c.Dynamic.Resource(nadGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("NAD %s: %w", nsName, err)
	}
	raw, _, _ := unstructured.NestedString(nad.Object, "spec", "config")
	var conf struct {
		Type    string `json:"type"`
		Bridge  string `json:"bridge"`
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(raw), &conf); err != nil {
		return "", fmt.Errorf("NAD %s config: %w", nsName, err)
	}
	if len(conf.Plugins) > 0 {
		conf.Type, conf.Bridge = conf.Plugins[0].Type, conf.Plugins[0].Bridge
	}
	if conf.Type != "bridge" {
		return "", fmt.Errorf("NAD %s is %s", nsName, conf.Type)
	}
	if conf.Bridge == "" {
		return "cni0", nil
	}
	return conf.Bridge, nil
}
