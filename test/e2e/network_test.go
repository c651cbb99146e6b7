//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	networksAnnot      = "k8s.v1.cni.cncf.io/networks"
	networkStatusAnnot = "k8s.v1.cni.cncf.io/network-status"
)

// NetworkStatus is one entry of the network-status annotation (Kubernetes
// Network Custom Resource Definition De-facto Standard v1.3, §5).
type NetworkStatus struct {
	Name         string          `json:"name"`
	Interface    string          `json:"interface,omitempty"`
	IPs          []string        `json:"ips,omitempty"`
	Mac          string          `json:"mac,omitempty"`
	Default      bool            `json:"default,omitempty"`
	DNS          json.RawMessage `json:"dns,omitempty"`
	DeviceInfo   json.RawMessage `json:"device-info,omitempty"`
	DefaultRoute []string        `json:"default-route,omitempty"`
}

func parseNetworkStatus(p *corev1.Pod) ([]NetworkStatus, error) {
	raw, ok := p.Annotations[networkStatusAnnot]
	if !ok {
		return nil, fmt.Errorf("pod %s/%s has no %s annotation", p.Namespace, p.Name, networkStatusAnnot)
	}
	var st []NetworkStatus
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %s is not a JSON list of network statuses: %w (%s)", p.Namespace, p.Name, networkStatusAnnot, err, raw)
	}
	return st, nil
}

// Status returns the pod's network-status, checking what holds for every
// pod: exactly one entry is the default (the cluster network, first, on
// eth0, carrying the pod IP); the others, NADs, are named namespace/name.
// (The cluster network is named after its config when it is no NAD, as
// "cbr0" in seed 000.)
func (c *Cluster) Status(t *testing.T, ns, name string) ([]NetworkStatus, *corev1.Pod) {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	st, err := parseNetworkStatus(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s/%s network-status: %s", ns, name, p.Annotations[networkStatusAnnot])
	defaults := 0
	for _, s := range st {
		if s.Default {
			defaults++
		} else if !strings.Contains(s.Name, "/") {
			t.Errorf("network-status name %q is not namespace/name", s.Name)
		}
	}
	if defaults != 1 || !st[0].Default {
		t.Fatalf("network-status of %s/%s: want exactly one default entry, first; got %+v", ns, name, st)
	}
	if st[0].Interface != "" && st[0].Interface != "eth0" {
		t.Errorf("default network on interface %q, want eth0", st[0].Interface)
	}
	if p.Status.PodIP == "" || !contains(st[0].IPs, p.Status.PodIP) {
		t.Errorf("default network ips %v do not carry the pod IP %q", st[0].IPs, p.Status.PodIP)
	}
	c.checkDefaultRoutes(t, ns, name, st)
	return st, p
}

// checkDefaultRoutes notes entries whose default-route the pod's kernel
// does not have. Not an error: like Multus with the reference plugins, a
// secondary's ipam default route that collides with the cluster network's
// is skipped in the pod ("the first one wins") yet stays in the result the
// status is made from (seed 000's macvlan-conf does that).
func (c *Cluster) checkDefaultRoutes(t *testing.T, ns, name string, st []NetworkStatus) {
	t.Helper()
	routes := c.MustExec(t, ns, name, "ip", "route", "show")
	have := map[string]bool{} // "gw dev"
	for _, l := range strings.Split(routes, "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && f[0] == "default" && f[1] == "via" && f[3] == "dev" {
			have[f[2]+" "+f[4]] = true
		}
	}
	for _, s := range st {
		for _, gw := range s.DefaultRoute {
			if !have[gw+" "+s.Interface] {
				t.Logf("note: %s/%s: network-status lists default-route %s for %s (%s), the pod's routes:\n%s",
					ns, name, gw, s.Name, s.Interface, routes)
			}
		}
	}
}

// attachment returns the network-status entry of interface ifname.
func attachment(t *testing.T, st []NetworkStatus, ifname string) NetworkStatus {
	t.Helper()
	for _, s := range st {
		if s.Interface == ifname {
			return s
		}
	}
	t.Fatalf("network-status has no interface %s: %+v", ifname, st)
	return NetworkStatus{}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Iface is what the kernel inside a pod says about one interface.
type Iface struct {
	Name   string
	Addr   netip.Prefix // the first IPv4 address
	MAC    string
	IfLink int // the peer's ifindex (veth) or the lower device's (macvlan)
}

// PodIface reads one interface from inside the pod.
func (c *Cluster) PodIface(t *testing.T, ns, pod, ifname string) Iface {
	t.Helper()
	out := c.MustExec(t, ns, pod, "sh", "-c",
		fmt.Sprintf("cat /sys/class/net/%[1]s/address /sys/class/net/%[1]s/iflink && ip -o -4 addr show dev %[1]s", ifname))
	lines := strings.SplitN(out, "\n", 3)
	if len(lines) < 3 {
		t.Fatalf("%s/%s %s: unexpected output %q", ns, pod, ifname, out)
	}
	ifc := Iface{Name: ifname, MAC: strings.TrimSpace(lines[0])}
	var err error
	if ifc.IfLink, err = strconv.Atoi(strings.TrimSpace(lines[1])); err != nil {
		t.Fatalf("%s/%s %s iflink %q: %v", ns, pod, ifname, lines[1], err)
	}
	if ifc.Addr, err = firstInet(lines[2]); err != nil {
		t.Fatalf("%s/%s %s: %v", ns, pod, ifname, err)
	}
	return ifc
}

var inetRE = regexp.MustCompile(`\binet (\S+)`)

func firstInet(ipAddrOutput string) (netip.Prefix, error) {
	m := inetRE.FindStringSubmatch(ipAddrOutput)
	if m == nil {
		return netip.Prefix{}, fmt.Errorf("no IPv4 address in %q", ipAddrOutput)
	}
	p, err := netip.ParsePrefix(m[1])
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address %q: %w", m[1], err)
	}
	return p, nil
}

func inRange(a netip.Addr, first, last string) bool {
	lo, hi := netip.MustParseAddr(first), netip.MustParseAddr(last)
	return a.Compare(lo) >= 0 && a.Compare(hi) <= 0
}

// HostLink returns the `ip -o link` line of the link with ifindex idx in node's
// namespace (the host end of a pod's veth).
func (c *Cluster) HostLink(ctx context.Context, node string, idx int) (name, line string, err error) {
	out, err := c.NodeExec(ctx, node, "ip", "-o", "link", "show")
	if err != nil {
		return "", "", err
	}
	prefix := strconv.Itoa(idx) + ": "
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			name, _, _ = strings.Cut(rest, ":")
			name, _, _ = strings.Cut(name, "@")
			return name, l, nil
		}
	}
	return "", "", fmt.Errorf("%s has no link with index %d", node, idx)
}

// linkExists reports whether node has a link named name.
func (c *Cluster) linkExists(ctx context.Context, node, name string) (bool, error) {
	out, err := c.NodeExec(ctx, node, "sh", "-c", "ip -o link show dev "+name+" >/dev/null 2>&1 && echo yes || echo no")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(out) == "yes", nil
}

// Ping pings dst from the pod through ifname (as the seeds do: ping -I net1).
func (c *Cluster) Ping(t *testing.T, ns, pod, ifname string, dst netip.Addr) {
	t.Helper()
	out, err := c.Exec(context.Background(), ns, pod, "ping", "-c", "3", "-W", "2", "-I", ifname, dst.String())
	if err != nil {
		t.Fatalf("ping %s from %s/%s over %s: %v", dst, ns, pod, ifname, err)
	}
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("ping %s from %s/%s over %s lost packets:\n%s", dst, ns, pod, ifname, out)
	}
	t.Logf("%s/%s -I %s -> %s: ok", ns, pod, ifname, dst)
}

// ---------------------------------------------------------------- node CNI state

// Allocation is one host-local lease file: /var/lib/cni/networks/<net>/<ip>
// holding "<containerID>\r\n<ifname>".
type Allocation struct {
	Network, IP, ContainerID, Ifname string
}

// allocationsScript prints "net/ip cid ifname" for every host-local lease on the node.
const allocationsScript = `cd /var/lib/cni/networks 2>/dev/null || exit 0
for f in */*; do
  [ -f "$f" ] || continue
  case "${f##*/}" in lock|last_reserved_ip.*) continue;; esac
  printf '%s %s\n' "$f" "$(tr '\r\n' '  ' <"$f")"
done`

// Allocations lists the host-local leases on node.
func (c *Cluster) Allocations(ctx context.Context, node string) ([]Allocation, error) {
	out, err := c.NodeExec(ctx, node, "sh", "-c", allocationsScript)
	if err != nil {
		return nil, err
	}
	var res []Allocation
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		net, ip, _ := strings.Cut(f[0], "/")
		a := Allocation{Network: net, IP: ip, ContainerID: f[1]}
		if len(f) > 2 {
			a.Ifname = f[2]
		}
		res = append(res, a)
	}
	return res, nil
}

// SandboxID finds the sandbox (CNI container ID) of a pod on node from the
// cluster network's lease of its pod IP.
func (c *Cluster) SandboxID(t *testing.T, node, podIP string) string {
	t.Helper()
	allocs, err := c.Allocations(context.Background(), node)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		if a.IP == podIP && a.Ifname == "eth0" {
			return a.ContainerID
		}
	}
	t.Fatalf("%s: no host-local lease for pod IP %s on eth0 (leases: %+v)", node, podIP, allocs)
	return ""
}

var containerIDRE = regexp.MustCompile(`\b[0-9a-f]{64}\b`)

// stateDirs are where a node keeps per-attachment state: host-local leases
// and libcni's result cache (/var/lib/cni), knit's attachment cache
// (/var/lib/knit).
const stateDirs = "/var/lib/cni /var/lib/knit"

// MentionsOf lists the paths under the node's stateDirs whose name or
// content names the container.
func (c *Cluster) MentionsOf(ctx context.Context, node, containerID string) ([]string, error) {
	out, err := c.NodeExec(ctx, node, "sh", "-c",
		fmt.Sprintf("{ find %[2]s -path '*%[1]s*'; grep -rlF %[1]s %[2]s; } 2>/dev/null | sort -u", containerID, stateDirs))
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// runningContainers lists the IDs of the containerd tasks running on node
// (pod sandboxes and containers).
func (c *Cluster) runningContainers(ctx context.Context, node string) (map[string]bool, error) {
	out, err := c.NodeExec(ctx, node, "ctr", "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[2] == "RUNNING" {
			ids[f[0]] = true
		}
	}
	return ids, nil
}

// Leaks lists CNI state on node that belongs to no running sandbox: paths
// under stateDirs naming a container ID, and host-local leases.
func (c *Cluster) Leaks(ctx context.Context, node string) ([]string, error) {
	live, err := c.runningContainers(ctx, node)
	if err != nil {
		return nil, err
	}
	out, err := c.NodeExec(ctx, node, "sh", "-c", "find "+stateDirs+" -type f 2>/dev/null; true")
	if err != nil {
		return nil, err
	}
	var leaks []string
	for _, path := range strings.Fields(out) {
		for _, id := range containerIDRE.FindAllString(path, -1) {
			if !live[id] {
				leaks = append(leaks, node+":"+path)
			}
		}
	}
	allocs, err := c.Allocations(ctx, node)
	if err != nil {
		return nil, err
	}
	for _, a := range allocs {
		if !live[a.ContainerID] {
			leaks = append(leaks, fmt.Sprintf("%s: lease %s/%s held by %s (%s), not running", node, a.Network, a.IP, a.ContainerID, a.Ifname))
		}
	}
	return leaks, nil
}

// BridgePorts counts the ports of bridge br on node.
func (c *Cluster) BridgePorts(ctx context.Context, node, br string) (int, error) {
	out, err := c.NodeExec(ctx, node, "sh", "-c", "ip -o link show master "+br+" 2>/dev/null || true")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n, nil
}

// errList joins problems into one error (nil when there are none).
func errList(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "\n"))
}
