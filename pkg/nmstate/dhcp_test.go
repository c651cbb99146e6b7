package nmstate_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/dhcpclient"
	"github.com/knit-cni/knit/pkg/dhcptest"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/nmstate"
	"github.com/knit-cni/knit/pkg/testutil"
)

// seed002 is the desiredState of seed 002's br1-ens35 policy, verbatim.
const seed002 = `
interfaces:
  - name: br1
    description: Linux bridge with ens35 as a port
    type: linux-bridge
    state: up
    ipv4:
      dhcp: true
      enabled: true
    bridge:
      options:
        stp:
          enabled: false
      port:
        - name: ens35
`

// dhcpNode is a node namespace whose NIC ens35 shares a segment with a
// dnsmasq namespace (when server), and an engine with knit's DHCP client.
type dhcpNode struct {
	*testutil.NS
	srv    *dhcptest.Server
	eng    *nmstate.Engine
	client *dhcpclient.Node
}

func newDHCPNode(t *testing.T, server bool, timeout time.Duration, extra ...string) *dhcpNode {
	t.Helper()
	testutil.RequireRoot(t)
	n := &dhcpNode{NS: testutil.NewNS(t)}
	seg := testutil.NewNS(t)
	testutil.Veth(t, n.NS, "ens35", seg, "eth0")
	if server {
		n.srv = dhcptest.Start(t, seg, "eth0", extra...)
	}
	// The kernel adds ens35's IPv6 link-local address a moment after
	// carrier; state read before that would not compare with state after.
	dhcptest.Poll(t, 5*time.Second, "ens35's link-local address", func() bool {
		l, err := n.H.LinkByName("ens35")
		if err != nil {
			return false
		}
		addrs, _ := nlsafe.AddrList(n.H, l, netlink.FAMILY_V6)
		return len(addrs) > 0
	})
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.9.9.9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	ctx, cancel := context.WithCancel(context.Background())
	n.client = dhcpclient.NewNode(ctx, n.NS.NS, n.H, dhcpclient.NodeOptions{Timeout: timeout, Log: log})
	t.Cleanup(func() { cancel(); n.client.Wait() })
	n.eng = &nmstate.Engine{NS: n.NS.NS, NL: n.H, ResolvConf: resolv, DHCP: n.client, Log: log}
	return n
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func parse(t *testing.T, y string) *nmstate.State {
	t.Helper()
	s, err := nmstate.Parse([]byte(y))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return s
}

func (n *dhcpNode) read(t *testing.T) *nmstate.State {
	t.Helper()
	s, err := n.eng.Read()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func iface(s *nmstate.State, name string) *nmstate.Interface {
	for i := range s.Interfaces {
		if s.Interfaces[i].Name == name {
			return &s.Interfaces[i]
		}
	}
	return nil
}

// leased checks br1 as Read reports it: dhcp: true and one address from
// the server's range, which it returns.
func (n *dhcpNode) leased(t *testing.T) string {
	t.Helper()
	br := iface(n.read(t), "br1")
	if br == nil || br.IPv4 == nil || br.IPv4.DHCP == nil || !*br.IPv4.DHCP || !*br.IPv4.Enabled {
		t.Fatalf("br1 not reported as dhcp: true: %+v", br)
	}
	addrs := *br.IPv4.Address
	if len(addrs) != 1 || !dhcptest.InRange(net.ParseIP(addrs[0].IP)) || addrs[0].PrefixLength != 24 {
		t.Fatalf("br1 addresses %+v, want one from the server's range", addrs)
	}
	return addrs[0].IP
}

// released checks that the server dropped ip's lease and br1 (if it
// exists) carries no dynamic address.
func (n *dhcpNode) released(t *testing.T, ip string) {
	t.Helper()
	dhcptest.Poll(t, 5*time.Second, "the server to drop "+ip, func() bool { _, ok := n.srv.LeaseFor(t, ip); return !ok })
	if br := iface(n.read(t), "br1"); br != nil && (*br.IPv4.DHCP || len(*br.IPv4.Address) > 0) {
		t.Fatalf("br1 still has %+v", br.IPv4)
	}
	if n.client.Holds("br1") {
		t.Fatal("the client still holds br1's lease")
	}
}

func js(s *nmstate.State) string {
	b, _ := json.Marshal(s.Interfaces)
	return string(b)
}

func ping(ns *testutil.NS, ip string) error {
	out, err := exec.Command("nsenter", "--net="+ns.Path(), "ping", "-c1", "-W1", ip).CombinedOutput()
	if err != nil {
		return errors.New(string(out))
	}
	return nil
}

// TestSeed002DHCP applies seed 002's policy verbatim: br1 gets ens35 as
// its port and a lease from the segment's server, renewed in the
// background; dhcp: false, enabled: false and state: absent release it.
func TestSeed002DHCP(t *testing.T) {
	n := newDHCPNode(t, true, 10*time.Second, "--dhcp-option=58,3")
	ctx := context.Background()
	if err := n.eng.Apply(ctx, parse(t, seed002)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	ip := n.leased(t)
	br, _ := n.H.LinkByName("br1")
	port, _ := n.H.LinkByName("ens35")
	if port.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatal("ens35 is not br1's port")
	}
	l, ok := n.srv.LeaseFor(t, ip)
	if !ok || l.MAC != br.Attrs().HardwareAddr.String() {
		t.Fatalf("server lease %+v for %s, want br1's MAC %s", l, ip, br.Attrs().HardwareAddr)
	}
	var gw bool
	for _, r := range n.read(t).Routes.Running {
		gw = gw || r.Destination == "0.0.0.0/0" && r.NextHopAddress == dhcptest.ServerIP && r.NextHopInterface == "br1"
	}
	if !gw {
		t.Fatalf("no default route via the lease's router on br1: %+v", n.read(t).Routes.Running)
	}
	if err := ping(n.NS, dhcptest.ServerIP); err != nil {
		t.Fatalf("ping the server over br1: %v", err)
	}
	dhcptest.Poll(t, 10*time.Second, "a renewal", func() bool {
		x, ok := n.srv.LeaseFor(t, ip)
		return ok && x.Expiry >= l.Expiry+2
	})
	// Idempotent: the same lease, nothing new on the server.
	if err := n.eng.Apply(ctx, parse(t, seed002)); err != nil {
		t.Fatalf("re-apply: %v", err)
	}
	if again := n.leased(t); again != ip || len(n.srv.All(t)) != 1 {
		t.Fatalf("re-apply: %s (had %s), server leases %+v", again, ip, n.srv.All(t))
	}
	for _, off := range []string{
		"interfaces:\n- name: br1\n  ipv4: {dhcp: false}\n",
		"interfaces:\n- name: br1\n  ipv4: {enabled: false}\n",
		"interfaces:\n- name: br1\n  state: absent\n",
	} {
		if err := n.eng.Apply(ctx, parse(t, off)); err != nil {
			t.Fatalf("%q: %v", off, err)
		}
		n.released(t, ip)
		if err := n.eng.Apply(ctx, parse(t, seed002)); err != nil {
			t.Fatalf("apply after %q: %v", off, err)
		}
		ip = n.leased(t)
	}
	if _, err := n.H.LinkByName("br1"); err != nil {
		t.Fatal("br1 not recreated")
	}
}

// A probe failing after the change rolls it back, and the lease the change
// took goes back to the server.
func TestDHCPRollbackReleasesLease(t *testing.T) {
	n := newDHCPNode(t, true, 10*time.Second)
	before := n.read(t)
	probe := nmstate.Probe{Name: "api-server", Run: func(context.Context) error {
		if _, err := n.H.LinkByName("br1"); err == nil {
			return errors.New("unreachable")
		}
		return nil
	}}
	err := n.eng.Apply(context.Background(), parse(t, seed002), probe)
	var ae *nmstate.ApplyError
	if !errors.As(err, &ae) || ae.Stage != "probe api-server" || ae.RollbackErr != nil {
		t.Fatalf("apply error = %v, want a rolled-back probe failure", err)
	}
	if !strings.Contains(n.srv.Log(), "DHCPACK") {
		t.Fatal("no lease was taken")
	}
	dhcptest.Poll(t, 5*time.Second, "the release", func() bool { return len(n.srv.All(t)) == 0 })
	if !strings.Contains(n.srv.Log(), "DHCPRELEASE") || n.client.Holds("br1") {
		t.Fatalf("lease not released; server log:\n%s", n.srv.Log())
	}
	if after := n.read(t); !reflect.DeepEqual(before, after) {
		t.Fatalf("not restored:\nbefore %s\nafter  %s", js(before), js(after))
	}
}

// Rolling back a change to an interface that holds a lease keeps the
// lease (or takes one again when the change had released it).
func TestDHCPRollbackKeepsHeldLease(t *testing.T) {
	n := newDHCPNode(t, true, 10*time.Second)
	ctx := context.Background()
	if err := n.eng.Apply(ctx, parse(t, seed002)); err != nil {
		t.Fatal(err)
	}
	ip := n.leased(t)
	before := n.read(t)
	for _, change := range []string{
		"interfaces:\n- name: br1\n  mtu: 1400\n",
		"interfaces:\n- name: br1\n  ipv4: {dhcp: false}\n",
	} {
		changed := false
		probe := nmstate.Probe{Name: "api-server", Run: func(context.Context) error {
			if changed {
				return errors.New("unreachable")
			}
			changed = true
			return nil
		}}
		err := n.eng.Apply(ctx, parse(t, change), probe)
		var ae *nmstate.ApplyError
		if !errors.As(err, &ae) || ae.Stage != "probe api-server" || ae.RollbackErr != nil {
			t.Fatalf("%q: apply error = %v, want a rolled-back probe failure", change, err)
		}
		after := n.read(t)
		if got := n.leased(t); got != ip {
			// dnsmasq gives a client back its address; only that makes
			// the state comparable.
			t.Fatalf("%q: br1 has %s after rollback, had %s", change, got, ip)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("%q: not restored:\nbefore %s\nafter  %s", change, js(before), js(after))
		}
		if _, ok := n.srv.LeaseFor(t, ip); !ok || !n.client.Holds("br1") {
			t.Fatalf("%q: lease lost in the rollback", change)
		}
	}
}

// No server answers: Acquire times out, the apply fails naming br1 and the
// node is as it was.
func TestDHCPNoServerRollsBack(t *testing.T) {
	n := newDHCPNode(t, false, 2*time.Second)
	before := n.read(t)
	start := time.Now()
	err := n.eng.Apply(context.Background(), parse(t, seed002))
	took := time.Since(start)
	var ae *nmstate.ApplyError
	if !errors.As(err, &ae) || ae.Stage != "apply" || ae.RollbackErr != nil || !errors.Is(err, dhcpclient.ErrNoAnswer) {
		t.Fatalf("apply error = %v, want a rolled-back DHCP timeout", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "br1") || !strings.Contains(msg, "no DHCP answer") {
		t.Fatalf("message %q should name br1 and say no DHCP server answered", msg)
	}
	if took > 5*time.Second {
		t.Fatalf("apply took %v with a 2 s DHCP timeout", took)
	}
	if _, err := n.H.LinkByName("br1"); err == nil {
		t.Fatal("br1 left behind")
	}
	port, _ := n.H.LinkByName("ens35")
	addrs, _ := nlsafe.AddrList(n.H, port, netlink.FAMILY_V4)
	if port.Attrs().MasterIndex != 0 || len(addrs) != 0 {
		t.Fatal("ens35 not restored")
	}
	if after := n.read(t); !reflect.DeepEqual(before, after) {
		t.Fatalf("not restored:\nbefore %s\nafter  %s", js(before), js(after))
	}
}
