package dhcp_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/chaintest"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/plugins/dhcp"
)

// serverIP is the DHCP server's (and router's) address on every test
// segment.
const serverIP = "10.88.0.1"

// segment is an L2 segment with a dnsmasq namespace on it. Containers
// attach by a veth into a bridge (newBridgeSegment) or by a macvlan on an
// uplink (newMacvlanSegment).
type segment struct {
	sw     *testutil.NS // holds the bridge, or the macvlans' uplink
	srv    *testutil.NS // holds dnsmasq
	bridge bool
	n      int
	// pingCheck keeps dnsmasq's check that an address is unused before
	// offering it (an ICMP echo it waits ~3 s for); off, ADD takes ms.
	pingCheck bool
}

func newBridgeSegment(t *testing.T) *segment {
	t.Helper()
	s := &segment{sw: testutil.NewNS(t), srv: testutil.NewNS(t), bridge: true}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := s.sw.H.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := s.sw.H.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	s.port(t, "d0", s.srv, "eth0")
	chaintest.AddAddr(t, s.srv, "eth0", cidr(serverIP+"/24"))
	return s
}

func newMacvlanSegment(t *testing.T) *segment {
	t.Helper()
	s := &segment{sw: testutil.NewNS(t), srv: testutil.NewNS(t)}
	chaintest.Veth(t, s.sw, "uplink", s.srv, "eth0")
	chaintest.AddAddr(t, s.srv, "eth0", cidr(serverIP+"/24"))
	return s
}

// port connects ns's ifName to the bridge.
func (s *segment) port(t *testing.T, swIf string, ns *testutil.NS, ifName string) {
	t.Helper()
	chaintest.Veth(t, s.sw, swIf, ns, ifName)
	br := chaintest.LinkByName(t, s.sw, "br0")
	if err := s.sw.H.LinkSetMaster(chaintest.LinkByName(t, s.sw, swIf), br); err != nil {
		t.Fatal(err)
	}
}

// container returns a new container namespace with an unconfigured eth0
// on the segment: a bridge port or a macvlan of the uplink.
func (s *segment) container(t *testing.T) *testutil.NS {
	t.Helper()
	s.n++
	c := testutil.NewNS(t)
	if s.bridge {
		s.port(t, fmt.Sprintf("c%d", s.n), c, "eth0")
		return c
	}
	up := chaintest.LinkByName(t, s.sw, "uplink")
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("mv%d", s.n), ParentIndex: up.Attrs().Index,
		Namespace: netlink.NsFd(c.Fd())}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := s.sw.H.LinkAdd(mv); err != nil {
		t.Fatal(err)
	}
	l := chaintest.LinkByName(t, c, mv.Name)
	if err := c.H.LinkSetName(l, "eth0"); err != nil {
		t.Fatal(err)
	}
	return c
}

func cidr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// syncBuffer collects a process's output for polling.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dnsmasq is a DHCP server on a segment.
type dnsmasq struct {
	leases string
	out    *syncBuffer
}

// startDnsmasq serves 10.88.0.50-99 with 2-minute leases (dnsmasq's
// minimum) and the router option; extra adds dnsmasq arguments (e.g. a
// short T1).
func (s *segment) startDnsmasq(t *testing.T, extra ...string) *dnsmasq {
	t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("dnsmasq not installed")
	}
	d := &dnsmasq{leases: filepath.Join(t.TempDir(), "leases"), out: &syncBuffer{}}
	args := []string{"--net=" + s.srv.Path(), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=eth0", "--bind-interfaces", "--dhcp-range=10.88.0.50,10.88.0.99,255.255.255.0,2m",
		"--dhcp-leasefile=" + d.leases, "--dhcp-authoritative", "--user=root", "--pid-file=",
		"--log-facility=-", "--log-dhcp", "--dhcp-option=option:router," + serverIP}
	if !s.pingCheck {
		args = append(args, "--no-ping")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "nsenter", append(args, extra...)...)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", d.out.String())
		}
	})
	poll(t, 5*time.Second, "dnsmasq to start", func() bool { return strings.Contains(d.out.String(), "DHCP, sockets bound") })
	return d
}

// leaseLine is one line of dnsmasq's lease file.
type leaseLine struct {
	Expiry   int64
	MAC, IP  string
	Host, ID string
}

func (d *dnsmasq) leaseFor(t *testing.T, ip string) (leaseLine, bool) {
	t.Helper()
	f, err := os.Open(d.leases)
	if os.IsNotExist(err) {
		return leaseLine{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 && fs[2] == ip {
			exp, _ := strconv.ParseInt(fs[0], 10, 64)
			return leaseLine{Expiry: exp, MAC: fs[1], IP: fs[2], Host: fs[3], ID: fs[4]}, true
		}
	}
	return leaseLine{}, false
}

// poll waits for cond with a deadline.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond) // polling external state
	}
}

// startDaemon runs a daemon in the test process on a temp socket.
func startDaemon(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "dhcp.sock")
	stop, _ := runDaemon(t, sock, "")
	t.Cleanup(stop)
	return sock
}

// runDaemon serves a daemon on sock keeping leases in stateDir, after
// restoring what is there; stop ends it (it may be called twice).
func runDaemon(t *testing.T, sock, stateDir string) (stop func(), restored int) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := dhcp.NewDaemon(ctx, dhcp.DaemonOptions{Timeout: 10 * time.Second, StateDir: stateDir,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	restored, err = d.Restore()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, l) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("daemon: %v", err)
			}
		})
	}, restored
}

// testWriter sends the daemon's log to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
