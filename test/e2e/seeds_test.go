//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/knit-cni/knit/pkg/testutil"
)

// The seed walkthroughs' YAML lives in examples/seeds, verbatim except the
// image (the local test image, imagePullPolicy: Never); see README.md.
const seeds = "examples/seeds/"

// Seed 000: macvlan-conf and samplepod as given: eth0 from the cluster
// network, net1 from macvlan-conf with an address from .200–.216, and a
// network-status naming both, the cluster network as the default.
func (c *Cluster) testSeed000(t *testing.T, node string) {
	ns := c.Namespace(t, "seed000")
	c.DumpOnFailure(t, node)
	c.Apply(t, ns, seeds+"000-macvlan-conf.yaml", nil)
	c.Apply(t, ns, seeds+"000-samplepod.yaml", onNode(node))
	c.WaitReady(t, ns, "samplepod")

	ipa := c.MustExec(t, ns, "samplepod", "ip", "a")
	t.Logf("kubectl exec samplepod -- ip a\n%s", ipa)
	for _, ifname := range []string{"lo", "eth0", "net1"} {
		if !regexp.MustCompile(`(?m)^\d+: ` + ifname + `[@:]`).MatchString(ipa) {
			t.Errorf("samplepod has no %s", ifname)
		}
	}
	net1 := c.PodIface(t, ns, "samplepod", "net1")
	checkMacvlanConfAddr(t, net1)
	t.Logf("kubectl exec samplepod -- ip route\n%s", c.MustExec(t, ns, "samplepod", "ip", "route"))

	st, _ := c.Status(t, ns, "samplepod")
	if len(st) != 2 {
		t.Fatalf("network-status: want the cluster network and macvlan-conf, got %+v", st)
	}
	checkAttachment(t, attachment(t, st, "net1"), ns+"/macvlan-conf", net1)
}

// Seed 000, the same NAD twice: net1 and net2, two addresses from the range.
func (c *Cluster) testSeed000Twice(t *testing.T, node string) {
	ns := c.Namespace(t, "seed000-twice")
	c.DumpOnFailure(t, node)
	c.Apply(t, ns, seeds+"000-macvlan-conf.yaml", nil)
	c.Apply(t, ns, seeds+"000-samplepod-twice.yaml", onNode(node))
	c.WaitReady(t, ns, "samplepod")

	net1 := c.PodIface(t, ns, "samplepod", "net1")
	net2 := c.PodIface(t, ns, "samplepod", "net2")
	checkMacvlanConfAddr(t, net1)
	checkMacvlanConfAddr(t, net2)
	if net1.Addr.Addr() == net2.Addr.Addr() || net1.MAC == net2.MAC {
		t.Errorf("net1 %+v and net2 %+v share an address or MAC", net1, net2)
	}
	st, _ := c.Status(t, ns, "samplepod")
	if len(st) != 3 {
		t.Fatalf("network-status: want the cluster network and macvlan-conf twice, got %+v", st)
	}
	checkAttachment(t, attachment(t, st, "net1"), ns+"/macvlan-conf", net1)
	checkAttachment(t, attachment(t, st, "net2"), ns+"/macvlan-conf", net2)
}

func checkMacvlanConfAddr(t *testing.T, ifc Iface) {
	t.Helper()
	if !inRange(ifc.Addr.Addr(), "192.168.1.200", "192.168.1.216") || ifc.Addr.Bits() != 24 {
		t.Errorf("%s has %s, want an address of 192.168.1.200–216/24", ifc.Name, ifc.Addr)
	}
}

// checkAttachment compares a network-status entry with the kernel's view of
// the interface: name ns/nad, the address (without prefix, per the standard)
// and the MAC.
func checkAttachment(t *testing.T, s NetworkStatus, name string, ifc Iface) {
	t.Helper()
	if s.Name != name || s.Default {
		t.Errorf("%s: network-status entry %+v, want name %s, not default", ifc.Name, s, name)
	}
	if len(s.IPs) != 1 || s.IPs[0] != ifc.Addr.Addr().String() {
		t.Errorf("%s: network-status ips %v, want [%s]", ifc.Name, s.IPs, ifc.Addr.Addr())
	}
	if !strings.EqualFold(s.Mac, ifc.MAC) {
		t.Errorf("%s: network-status mac %q, kernel says %s", ifc.Name, s.Mac, ifc.MAC)
	}
}

// Seed 001, traffic split: sampleapp-1 on ipvlan-conf-1 (node a),
// sampleapp-dual on both networks (node b), sampleapp-2 on ipvlan-conf-2
// (node a). The dual-homed pod reaches each peer over the interface of the
// peer's subnet. ipvlan where the kernel has it; macvlan here (the
// development VM's kernel has no ipvlan), same names and subnets.
func (c *Cluster) testSeed001(t *testing.T, a, b string) {
	manifest := seeds + "001-ipvlan-conf.yaml"
	if err := testutil.ProbeKernelFeature("ipvlan"); err != nil {
		t.Logf("kernel without ipvlan (%v): seed 001's networks as macvlan (%s001-macvlan-conf.yaml)", err, seeds)
		manifest = seeds + "001-macvlan-conf.yaml"
		// ipvlan would need eth0 to itself (an ipvlan master cannot also be a
		// macvlan master, as for macvlan-conf): only macvlan runs alongside.
		t.Parallel()
	}
	ns := c.Namespace(t, "seed001")
	c.DumpOnFailure(t, a, b)
	c.Apply(t, ns, manifest, nil)
	apps := c.Apply(t, ns, seeds+"001-sampleapps.yaml", func(o *unstructured.Unstructured) {
		node := a
		if o.GetName() == "sampleapp-dual" {
			node = b
		}
		onNode(node)(o)
	})
	app2 := testPod(ns, "sampleapp-2", a, "ipvlan-conf-2")
	c.CreatePod(t, app2)
	c.WaitReady(t, ns, "sampleapp-1", "sampleapp-dual", "sampleapp-2")

	app1net1 := c.PodIface(t, ns, "sampleapp-1", "net1")
	app2net1 := c.PodIface(t, ns, "sampleapp-2", "net1")
	dual := c.distinct(t, ns, "sampleapp-dual", b, func() { c.recreate(t, apps[1]) },
		map[string]string{"net1": "ipvlan-conf-1", "net2": "ipvlan-conf-2"})
	check := func(ifc Iface, first, last string) {
		if !inRange(ifc.Addr.Addr(), first, last) || ifc.Addr.Bits() != 24 {
			t.Errorf("%s has %s, want an address of %s–%s/24", ifc.Name, ifc.Addr, first, last)
		}
	}
	check(app1net1, "10.0.4.70", "10.0.4.80")
	check(app2net1, "10.0.6.70", "10.0.6.80")
	check(dual["net1"], "10.0.4.70", "10.0.4.80")
	check(dual["net2"], "10.0.6.70", "10.0.6.80")

	st, _ := c.Status(t, ns, "sampleapp-dual")
	checkAttachment(t, attachment(t, st, "net1"), ns+"/ipvlan-conf-1", dual["net1"])
	checkAttachment(t, attachment(t, st, "net2"), ns+"/ipvlan-conf-2", dual["net2"])

	// The split: each subnet is reached through its own interface.
	for dst, dev := range map[netip.Addr]string{app1net1.Addr.Addr(): "net1", app2net1.Addr.Addr(): "net2"} {
		out := c.MustExec(t, ns, "sampleapp-dual", "ip", "route", "get", dst.String())
		if !strings.Contains(out, " dev "+dev+" ") {
			t.Errorf("sampleapp-dual routes %s via %q, want dev %s", dst, strings.TrimSpace(out), dev)
		}
	}
	c.Ping(t, ns, "sampleapp-dual", "net1", app1net1.Addr.Addr())
	c.Ping(t, ns, "sampleapp-dual", "net2", app2net1.Addr.Addr())
	c.Ping(t, ns, "sampleapp-1", "net1", dual["net1"].Addr.Addr())
	c.Ping(t, ns, "sampleapp-2", "net1", dual["net2"].Addr.Addr())
}

// Seed 002: the bridge NAD multus-br1 on br1 (ens35 as its port), net-pod1
// and net-pod2 on different nodes ping each other over net1.
func (c *Cluster) testSeed002(t *testing.T, a, b string) {
	ns := c.Namespace(t, "seed002")
	c.DumpOnFailure(t, a, b)
	c.Apply(t, ns, seeds+"002-multus-br1.yaml", nil)
	pods := c.Apply(t, ns, seeds+"002-demo-app.yaml", func(o *unstructured.Unstructured) {
		podOnNode("net-pod1", a)(o)
		podOnNode("net-pod2", b)(o)
	})
	c.WaitReady(t, ns, "net-pod1", "net-pod2")
	// Both pods' addresses unique on the segment (make demo's pods may be on it too).
	br1 := map[string]string{"net1": "multus-br1"}
	c.distinct(t, ns, "net-pod2", b, func() { c.recreate(t, pods[1]) }, br1)
	p1 := c.distinct(t, ns, "net-pod1", a, func() { c.recreate(t, pods[0]) }, br1)["net1"]
	p2 := c.PodIface(t, ns, "net-pod2", "net1")
	for _, ifc := range []Iface{p1, p2} {
		if !inRange(ifc.Addr.Addr(), "192.168.72.240", "192.168.72.250") || ifc.Addr.Bits() != 24 {
			t.Errorf("net1 has %s, want an address of 192.168.72.240–250/24", ifc.Addr)
		}
	}
	// net1's host end is a port of br1 on each node.
	for node, ifc := range map[string]Iface{a: p1, b: p2} {
		_, line, err := c.HostLink(context.Background(), node, ifc.IfLink)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(line, " master br1 ") {
			t.Errorf("%s: host end of net1 is not on br1: %s", node, line)
		}
	}
	for pod, ifc := range map[string]Iface{"net-pod1": p1, "net-pod2": p2} {
		st, _ := c.Status(t, ns, pod)
		checkAttachment(t, attachment(t, st, "net1"), ns+"/multus-br1", ifc)
	}
	c.Ping(t, ns, "net-pod1", "net1", p2.Addr.Addr())
	c.Ping(t, ns, "net-pod2", "net1", p1.Addr.Addr())
}

// recreate creates a manifest's pod again (after it was deleted).
func (c *Cluster) recreate(t *testing.T, o *unstructured.Unstructured) {
	t.Helper()
	if err := c.create(context.Background(), o.DeepCopy()); err != nil {
		t.Fatal(err)
	}
}

// distinct reads the pod's interfaces (ifname -> network name) and, while
// one of their addresses is leased on another node for the same network,
// deletes the pod and creates it again (recreate). host-local leases per
// node, so on a fresh cluster two nodes hand out the same first address of a
// range (in the seed's cluster, with history, the pods got .243 and .241),
// and pods elsewhere (make demo's, in another namespace) may hold the same
// network's addresses; after a release host-local moves on to the next one.
func (c *Cluster) distinct(t *testing.T, ns, pod, node string, recreate func(), networks map[string]string) map[string]Iface {
	t.Helper()
	for attempt := 0; ; attempt++ {
		taken := c.leasedElsewhere(t, node)
		got, clash := map[string]Iface{}, ""
		for ifn, network := range networks {
			ifc := c.PodIface(t, ns, pod, ifn)
			got[ifn] = ifc
			if other, ok := taken[network+"/"+ifc.Addr.Addr().String()]; ok {
				clash = fmt.Sprintf("%s %s (network %s) is also leased on %s", ifn, ifc.Addr.Addr(), network, other)
			}
		}
		if clash == "" {
			return got
		}
		if attempt == 5 {
			t.Fatalf("%s/%s: %s, still after %d recreations", ns, pod, clash, attempt)
		}
		t.Logf("%s/%s: %s (host-local is per node): recreating the pod", ns, pod, clash)
		c.DeletePod(t, ns, pod)
		// The old sandbox must be torn down before the new pod comes up: a
		// duplicate address still answering ARP on the segment would be
		// cached by the new pod's peers.
		c.waitReleased(t, node, networks, got)
		recreate()
		c.WaitReady(t, ns, pod)
	}
}

// leasedElsewhere maps "network/ip" to the node leasing it, for every node but node.
func (c *Cluster) leasedElsewhere(t *testing.T, node string) map[string]string {
	t.Helper()
	taken := map[string]string{}
	for _, n := range c.Nodes {
		if n == node {
			continue
		}
		allocs, err := c.Allocations(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range allocs {
			taken[a.Network+"/"+a.IP] = n
		}
	}
	return taken
}

// waitReleased polls until none of ifaces' addresses is leased on node any
// more (the sandbox's CNI DEL ran).
func (c *Cluster) waitReleased(t *testing.T, node string, networks map[string]string, ifaces map[string]Iface) {
	t.Helper()
	err := poll(context.Background(), releaseWait, func(ctx context.Context) error {
		allocs, err := c.Allocations(ctx, node)
		if err != nil {
			return err
		}
		held := map[string]bool{}
		for _, a := range allocs {
			held[a.Network+"/"+a.IP] = true
		}
		for ifn, network := range networks {
			if key := network + "/" + ifaces[ifn].Addr.Addr().String(); held[key] {
				return fmt.Errorf("%s still leased on %s", key, node)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
