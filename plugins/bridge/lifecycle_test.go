package bridge_test

import (
	"os"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/attachtest"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nftowner"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// bridgePorts lists the links enslaved to kbr0 in the scratch host.
func bridgePorts(t *testing.T, w *world) []string {
	t.Helper()
	br, err := w.host.H.LinkByName("kbr0")
	if err != nil {
		return nil
	}
	all, err := nlsafe.LinkList(w.host.H)
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, l := range all {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports
}

// TestDelWithNamespaceGone: DEL succeeds when the namespace is gone (or not
// given) and still releases the address and the masquerade rules.
func TestDelWithNamespaceGone(t *testing.T) {
	for _, emptyPath := range []bool{false, true} {
		w := newWorld(t)
		c := testutil.NewNS(t)
		cfg := conf("1.0.0", `"bridge":"kbr0","ipMasq":true,"macspoofchk":true,`+w.ipam("10.30.0.0/24"))
		w.add(c, "c1", cfg)
		path := c.Path()
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		req := &cni.Request{Command: cni.CmdDel, ContainerID: "c1", IfName: "eth0", Config: cfg}
		if !emptyPath {
			req.Netns = path
		}
		for range 2 {
			if _, err := w.do("bridge", req); err != nil {
				t.Fatalf("DEL (netns path %q): %v", req.Netns, err)
			}
		}
		if w.held("10.30.0.2") {
			t.Fatal("address still held")
		}
		if r := masqRules(t, w); len(r) != 0 {
			t.Fatalf("masquerade rules left: %q", r)
		}
		if r := spoofRules(t, w); len(r) != 0 {
			t.Fatalf("spoof-check rules left: %q", r)
		}
	}
}

// TestRollbackIPAMExhausted: when IPAM fails, ADD leaves no veth, no
// bridge port and no container interface (the reference leaves the host
// veth on the bridge).
func TestRollbackIPAMExhausted(t *testing.T) {
	w := newWorld(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	ipam := `"ipam":{"type":"host-local","dataDir":"` + w.data + `","ranges":[[{"subnet":"10.31.0.0/24","rangeStart":"10.31.0.10","rangeEnd":"10.31.0.10"}]]}`
	cfg := conf("1.0.0", `"bridge":"kbr0","ipMasq":true,"macspoofchk":true,`+ipam)
	w.add(c1, "c1", cfg)
	before := w.hostLinks()
	if _, err := w.call(cni.CmdAdd, c2, "c2", "eth0", cfg, ""); err == nil {
		t.Fatal("ADD succeeded with the range exhausted")
	}
	if after := w.hostLinks(); len(after) != len(before) {
		t.Fatalf("host links %v after the failed ADD, before %v", after, before)
	}
	if p := bridgePorts(t, w); len(p) != 1 {
		t.Fatalf("bridge ports %v, want only c1's", p)
	}
	attachtest.NoLink(t, c2, "eth0")
	if n := nftowner.CountContainer(spoofRules(t, w), "c2"); n != 0 {
		t.Fatalf("%d spoof-check rules left for c2", n)
	}
	if !w.held("10.31.0.10") {
		t.Fatal("c1 lost its address")
	}
}

// TestRollbackAfterIPAM: a failure after IPAM (a conflicting bridge
// address) releases the allocation and removes the veth and the rules.
func TestRollbackAfterIPAM(t *testing.T) {
	w := newWorld(t)
	fake := &attachtest.FakeIPAM{Result: attachtest.IPResult(t, "10.32.0.5/24", "10.32.0.1")}
	w.reg["fake"] = fake
	if err := w.host.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kbr0", TxQLen: -1}}); err != nil {
		t.Fatal(err)
	}
	attachtest.AddAddr(t, w.host, "kbr0", "10.32.9.1/24")
	c := testutil.NewNS(t)
	cfg := conf("1.0.0", `"bridge":"kbr0","isGateway":true,"macspoofchk":true,"ipam":{"type":"fake"}`)
	_, err := w.call(cni.CmdAdd, c, "c1", "eth0", cfg, "")
	if err == nil {
		t.Fatal("ADD succeeded over a conflicting bridge address")
	}
	if adds, dels, _, _ := fake.Counts(); adds != 1 || dels != 1 {
		t.Fatalf("IPAM ADD %d DEL %d, want 1 and 1", adds, dels)
	}
	if p := bridgePorts(t, w); len(p) != 0 {
		t.Fatalf("bridge ports %v left", p)
	}
	attachtest.NoLink(t, c, "eth0")
	if r := spoofRules(t, w); len(r) != 0 {
		t.Fatalf("spoof-check rules left: %q", r)
	}
}

// TestIPAMWithoutAddress: an IPAM result with no address fails ADD and is
// released.
func TestIPAMWithoutAddress(t *testing.T) {
	w := newWorld(t)
	fake := &attachtest.FakeIPAM{Result: &current.Result{CNIVersion: current.ImplementedSpecVersion}}
	w.reg["fake"] = fake
	c := testutil.NewNS(t)
	_, err := w.call(cni.CmdAdd, c, "c1", "eth0", conf("1.0.0", `"bridge":"kbr0","ipam":{"type":"fake"}`), "")
	if err == nil {
		t.Fatal("ADD succeeded without an address")
	}
	if _, dels, _, _ := fake.Counts(); dels != 1 {
		t.Fatalf("IPAM DEL called %d times, want 1", dels)
	}
	attachtest.NoLink(t, c, "eth0")
	if p := bridgePorts(t, w); len(p) != 0 {
		t.Fatalf("bridge ports %v left", p)
	}
}

// TestContainerIfExists: an existing interface name in the container is
// an error that does not touch it or run IPAM.
func TestContainerIfExists(t *testing.T) {
	w := newWorld(t)
	fake := &attachtest.FakeIPAM{Result: attachtest.IPResult(t, "10.33.0.5/24", "10.33.0.1")}
	w.reg["fake"] = fake
	c := testutil.NewNS(t)
	testutil.Veth(t, c, "eth0", c, "other0")
	_, err := w.call(cni.CmdAdd, c, "c1", "eth0", conf("1.0.0", `"bridge":"kbr0","ipam":{"type":"fake"}`), "")
	attachtest.WantCode(t, err, cni.ErrLinkExists, "eth0")
	if adds, _, _, _ := fake.Counts(); adds != 0 {
		t.Fatalf("IPAM ran %d times", adds)
	}
	if _, ok := link(t, c, "eth0").(*netlink.Veth); !ok {
		t.Fatal("existing eth0 replaced")
	}
}

// TestGC: GC removes the rules and addresses of attachments not in the
// valid list and keeps the others; it is passed on to IPAM.
func TestGC(t *testing.T) {
	w := newWorld(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	cfg := conf("1.1.0", `"bridge":"kbr0","ipMasq":true,"macspoofchk":true,`+w.ipam("10.34.0.0/24"))
	w.add(c1, "c1", cfg)
	w.add(c2, "c2", cfg)
	gc := conf("1.1.0", `"bridge":"kbr0","ipMasq":true,"macspoofchk":true,`+w.ipam("10.34.0.0/24")+
		`,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]`)
	if _, err := w.call(cni.CmdGC, nil, "", "", gc, ""); err != nil {
		t.Fatalf("GC: %v", err)
	}
	m, s := masqRules(t, w), spoofRules(t, w)
	if nftowner.CountContainer(m, "c1") != 1 || nftowner.CountContainer(m, "c2") != 0 || nftowner.CountContainer(s, "c1") != 1 || nftowner.CountContainer(s, "c2") != 0 {
		t.Fatalf("after GC: masquerade %q, spoof-check %q; want c1's only", m, s)
	}
	if !w.held("10.34.0.2") || w.held("10.34.0.3") {
		t.Fatal("GC did not release exactly c2's address")
	}
	fake := &attachtest.FakeIPAM{}
	w.reg["fake"] = fake
	if _, err := w.call(cni.CmdGC, nil, "", "", conf("1.1.0", `"ipam":{"type":"fake"},"cni.dev/valid-attachments":[]`), ""); err != nil {
		t.Fatal(err)
	}
	if _, _, _, gcs := fake.Counts(); gcs != 1 {
		t.Fatalf("IPAM GC called %d times, want 1", gcs)
	}
}

// TestCheckDetectsDrift: CHECK passes on what ADD did and fails once the
// container's address, the recorded MAC or the port are wrong.
func TestCheckDetectsDrift(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	cfg := conf("1.0.0", `"bridge":"kbr0","isDefaultGateway":true,`+w.ipam("10.35.0.0/24"))
	res := w.add(c, "c1", cfg)
	check := func() error {
		_, err := w.call(cni.CmdCheck, c, "c1", "eth0", attachtest.WithPrev(t, cfg, res), "")
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("CHECK after ADD: %v", err)
	}
	good := res.Interfaces[2].Mac
	res.Interfaces[2].Mac = "0a:00:00:00:00:99"
	if check() == nil {
		t.Fatal("CHECK passed with a wrong container MAC")
	}
	res.Interfaces[2].Mac = good
	if _, err := w.call(cni.CmdCheck, c, "c1", "eth0", cfg, ""); err == nil {
		t.Fatal("CHECK passed without prevResult")
	}
	hv := link(t, w.host, res.Interfaces[1].Name)
	if err := w.host.H.LinkSetNoMaster(hv); err != nil {
		t.Fatal(err)
	}
	if check() == nil {
		t.Fatal("CHECK passed with the host veth off the bridge")
	}
	if err := w.host.H.LinkSetMaster(hv, link(t, w.host, "kbr0")); err != nil {
		t.Fatal(err)
	}
	if err := check(); err != nil {
		t.Fatalf("CHECK after repair: %v", err)
	}
	a, _ := netlink.ParseAddr("10.35.0.2/24")
	if err := c.H.AddrDel(link(t, c, "eth0"), a); err != nil {
		t.Fatal(err)
	}
	if check() == nil {
		t.Fatal("CHECK passed without the container's address")
	}
}

// TestChained: given a prevResult, ADD appends its interfaces after it and
// points its IPs at the shifted container index.
func TestChained(t *testing.T) {
	w := newWorld(t)
	c := testutil.NewNS(t)
	prev := &current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "lo", Sandbox: c.Path()}}}
	cfg := attachtest.Conf(t, "1.0.0", `"type":"bridge","bridge":"kbr0",`+w.ipam("10.36.0.0/24"), prev)
	res := w.add(c, "c1", cfg)
	if len(res.Interfaces) != 4 || res.Interfaces[0].Name != "lo" || res.Interfaces[3].Name != "eth0" {
		t.Fatalf("interfaces %s", mustJSON(t, res.Interfaces))
	}
	if len(res.IPs) != 1 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 3 {
		t.Fatalf("ips %s, want interface 3", mustJSON(t, res.IPs))
	}
	attachtest.HasAddr(t, c, "eth0", "10.36.0.2/24")
}

// TestGatewayOnBridgeWithoutPorts: a bridge whose ports all left has MAC
// 00:00:…; adding the gateway address must still work (the reference
// fails pinning the bridge MAC then).
func TestGatewayOnBridgeWithoutPorts(t *testing.T) {
	w := newWorld(t)
	c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
	l3 := conf("1.0.0", `"bridge":"kbr0",`+w.ipam("10.37.0.0/24"))
	w.add(c1, "c1", l3)
	w.del(c1, "c1", l3)
	if mac := link(t, w.host, "kbr0").Attrs().HardwareAddr; len(mac) != 0 {
		t.Fatalf("bridge MAC %s after its last port left, want 00:00:00:00:00:00 (what this test is about)", mac)
	}
	res := w.add(c2, "c2", conf("1.0.0", `"bridge":"kbr0","isGateway":true,`+w.ipam("10.37.0.0/24")))
	if res.Interfaces[0].Mac == "" {
		t.Fatal("no bridge MAC in the result")
	}
	testutil.MustPing(t, c2, "10.37.0.1")
}
