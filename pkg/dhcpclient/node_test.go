package dhcpclient

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/dhcptest"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/nmstate"
	"github.com/knit-cni/knit/pkg/testutil"
)

var _ nmstate.DHCPClient = (*Node)(nil)

// env is a node namespace whose NIC ens35 is on one segment with a DHCP
// server's namespace.
type env struct {
	node *testutil.NS
	seg  *testutil.NS
	srv  *dhcptest.Server
}

func newEnv(t *testing.T, server bool, extra ...string) *env {
	t.Helper()
	testutil.RequireRoot(t)
	e := &env{node: testutil.NewNS(t), seg: testutil.NewNS(t)}
	testutil.Veth(t, e.node, "ens35", e.seg, "eth0")
	if server {
		e.srv = dhcptest.Start(t, e.seg, "eth0", extra...)
	}
	return e
}

// client returns a Node for the env's node namespace, stopped (and
// waited for) at cleanup; cancel stops it earlier, as an agent exiting.
func (e *env) client(t *testing.T, timeout time.Duration) (*Node, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := NewNode(ctx, e.node.NS, e.node.H, NodeOptions{Timeout: timeout, Hostname: "node41",
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	t.Cleanup(func() { cancel(); n.Wait() })
	return n, cancel
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := e.node.H.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// addr returns ifName's IPv4 address ip, if present.
func (e *env) addr(t *testing.T, ifName string, ip net.IP) (netlink.Addr, bool) {
	t.Helper()
	addrs, err := nlsafe.AddrList(e.node.H, e.link(t, ifName), netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return a, true
		}
	}
	return netlink.Addr{}, false
}

// defaultRoute returns the node's IPv4 default route, if any.
func (e *env) defaultRoute(t *testing.T) (netlink.Route, bool) {
	t.Helper()
	rs, err := nlsafe.RouteList(e.node.H, nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			return r, true
		}
	}
	return netlink.Route{}, false
}

func ping(t *testing.T, ns *testutil.NS, ip string) error {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+ns.Path(), "ping", "-c1", "-W1", ip).CombinedOutput()
	if err != nil {
		return errors.New(string(out))
	}
	return nil
}

func TestAcquireConfiguresRenewsReleases(t *testing.T) {
	e := newEnv(t, true, "--dhcp-option=58,3")
	c, _ := e.client(t, 10*time.Second)
	ctx := context.Background()
	got, err := c.Acquire(ctx, "ens35", true)
	if err != nil {
		t.Fatal(err)
	}
	if ones, _ := got.Mask.Size(); !dhcptest.InRange(got.IP) || ones != 24 {
		t.Fatalf("lease %s not from the server's range", got.String())
	}
	a, ok := e.addr(t, "ens35", got.IP)
	if !ok || a.ValidLft <= 0 || a.ValidLft > 120 || a.PreferedLft <= 0 || a.PreferedLft > 120 {
		t.Fatalf("address %+v: want %s with the lease's lifetime", a, got.IP)
	}
	r, ok := e.defaultRoute(t)
	if !ok || !r.Gw.Equal(net.ParseIP(dhcptest.ServerIP)) || r.Priority != DefaultRouteMetric || r.Protocol != unix.RTPROT_DHCP {
		t.Fatalf("default route %+v, want via the router, metric %d, proto dhcp", r, DefaultRouteMetric)
	}
	mac := e.link(t, "ens35").Attrs().HardwareAddr.String()
	l, ok := e.srv.LeaseFor(t, got.IP.String())
	if !ok || l.MAC != mac || l.ID != "01:"+mac || l.Host != "node41" {
		t.Fatalf("server lease %+v, want MAC %s, client ID 01:MAC, host node41", l, mac)
	}
	if err := ping(t, e.node, dhcptest.ServerIP); err != nil {
		t.Fatalf("ping the server from the leased address: %v", err)
	}
	// Acquire again is a no-op: same lease, nothing new on the server.
	again, err := c.Acquire(ctx, "ens35", true)
	if err != nil || !again.IP.Equal(got.IP) || len(e.srv.All(t)) != 1 {
		t.Fatalf("repeated Acquire: %v %v, server leases %+v", again, err, e.srv.All(t))
	}
	// Renewals at T1 (2 s) move the server's expiry and refresh the
	// address's lifetime.
	dhcptest.Poll(t, 10*time.Second, "a renewal", func() bool {
		x, ok := e.srv.LeaseFor(t, got.IP.String())
		return ok && x.Expiry >= l.Expiry+2
	})
	dhcptest.Poll(t, 3*time.Second, "the address lifetime refreshed", func() bool {
		a, ok := e.addr(t, "ens35", got.IP)
		return ok && a.ValidLft >= 118
	})
	// auto-routes off drops the route, keeps the address.
	if _, err := c.Acquire(ctx, "ens35", false); err != nil {
		t.Fatal(err)
	}
	if r, ok := e.defaultRoute(t); ok {
		t.Fatalf("default route %+v left with routes off", r)
	}
	if _, ok := e.addr(t, "ens35", got.IP); !ok {
		t.Fatal("address gone with routes off")
	}
	for range 2 {
		if err := c.Release(ctx, "ens35"); err != nil {
			t.Fatalf("release: %v", err)
		}
	}
	dhcptest.Poll(t, 5*time.Second, "the server to drop the lease", func() bool {
		_, ok := e.srv.LeaseFor(t, got.IP.String())
		return !ok
	})
	if _, ok := e.addr(t, "ens35", got.IP); ok || c.Holds("ens35") {
		t.Fatal("address or lease left after release")
	}
}

func TestNoServerTimesOut(t *testing.T) {
	e := newEnv(t, false)
	c, _ := e.client(t, 1500*time.Millisecond)
	start := time.Now()
	_, err := c.Acquire(context.Background(), "ens35", true)
	took := time.Since(start)
	if !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), "ens35") {
		t.Fatalf("err = %v, want no answer naming ens35", err)
	}
	if took < 1400*time.Millisecond || took > 3*time.Second {
		t.Fatalf("Acquire took %v with a 1.5 s timeout", took)
	}
	addrs, _ := nlsafe.AddrList(e.node.H, e.link(t, "ens35"), netlink.FAMILY_V4)
	if len(addrs) != 0 || c.Holds("ens35") {
		t.Fatalf("left behind: %v", addrs)
	}
	if _, err := c.Acquire(context.Background(), "nope0", true); err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Fatalf("missing interface: %v", err)
	}
}

// A restarted agent adopts the address it left with INIT-REBOOT: no
// DISCOVER, the same address, the server's lease extended.
func TestRestartAdoptsLease(t *testing.T) {
	e := newEnv(t, true)
	c1, stop := e.client(t, 10*time.Second)
	got, err := c1.Acquire(context.Background(), "ens35", true)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	c1.Wait()
	if _, ok := e.addr(t, "ens35", got.IP); !ok {
		t.Fatal("stopping the agent removed the address")
	}
	discovers, acks := strings.Count(e.srv.Log(), "DHCPDISCOVER"), strings.Count(e.srv.Log(), "DHCPACK")
	c2, _ := e.client(t, 10*time.Second)
	again, err := c2.Acquire(context.Background(), "ens35", true)
	if err != nil {
		t.Fatal(err)
	}
	if !again.IP.Equal(got.IP) || strings.Count(e.srv.Log(), "DHCPDISCOVER") != discovers || strings.Count(e.srv.Log(), "DHCPACK") != acks+1 {
		t.Fatalf("after restart got %s (had %s), want one REQUEST/ACK; server log:\n%s", again.IP, got.IP, e.srv.Log())
	}
	if len(e.srv.All(t)) != 1 {
		t.Fatalf("server leases %+v", e.srv.All(t))
	}
	if a, ok := e.addr(t, "ens35", got.IP); !ok || a.ValidLft < 110 {
		t.Fatalf("adopted address %+v", a)
	}
	if err := c2.Release(context.Background(), "ens35"); err != nil {
		t.Fatal(err)
	}
	dhcptest.Poll(t, 5*time.Second, "the release", func() bool { _, ok := e.srv.LeaseFor(t, got.IP.String()); return !ok })
}

// A dynamic address the server refuses (not its to give) is dropped for a
// fresh lease.
func TestRefusedAddressStartsOver(t *testing.T) {
	e := newEnv(t, true)
	stale := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.88.0.200"), Mask: net.CIDRMask(24, 32)}, ValidLft: 100, PreferedLft: 100}
	if err := e.node.H.AddrAdd(e.link(t, "ens35"), stale); err != nil {
		t.Fatal(err)
	}
	c, _ := e.client(t, 10*time.Second)
	got, err := c.Acquire(context.Background(), "ens35", false)
	if err != nil {
		t.Fatal(err)
	}
	if !dhcptest.InRange(got.IP) {
		t.Fatalf("got %s", got.IP)
	}
	if _, ok := e.addr(t, "ens35", stale.IP); ok {
		t.Fatal("refused address kept")
	}
	if !strings.Contains(e.srv.Log(), "DHCPNAK") {
		t.Fatalf("no NAK in the server log:\n%s", e.srv.Log())
	}
}

// When renewals fail until the lease runs out, the address and route go;
// the client keeps trying and configures a lease again once the server is
// back.
func TestExpiryRemovesAddressAndRecovers(t *testing.T) {
	e := newEnv(t, true, "--dhcp-option=58,3")
	c, _ := e.client(t, 3*time.Second)
	got, err := c.Acquire(context.Background(), "ens35", true)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Stop()
	// Shorten the lease (dnsmasq's shortest is 2 min): at T1 (3 s) it is
	// past rebinding, expiring a second later.
	l := c.lookup("ens35").Lease
	now := time.Now()
	l.mu.Lock()
	l.times = Times{Renew: now, Rebind: now.Add(time.Second), Expire: now.Add(4 * time.Second)}
	l.mu.Unlock()
	dhcptest.Poll(t, 10*time.Second, "the expired address to go", func() bool {
		_, ok := e.addr(t, "ens35", got.IP)
		return !ok
	})
	if r, ok := e.defaultRoute(t); ok {
		t.Fatalf("route %+v left after expiry", r)
	}
	if !c.Holds("ens35") {
		t.Fatal("client gave up the interface")
	}
	e.srv.Restart(t)
	dhcptest.Poll(t, 20*time.Second, "a lease again", func() bool {
		addrs, _ := nlsafe.AddrList(e.node.H, e.link(t, "ens35"), netlink.FAMILY_V4)
		_, route := e.defaultRoute(t)
		return len(addrs) == 1 && dhcptest.InRange(addrs[0].IP) && route
	})
}
