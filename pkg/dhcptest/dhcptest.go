// Package dhcptest runs a real DHCP server (Debian's dnsmasq) in a test
// namespace and reads its lease file, for tests of knit's DHCP clients.
package dhcptest

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// Defaults of a Server: it sits at ServerIP/24 and leases from
// RangeStart-RangeEnd, with itself as router.
const (
	ServerIP   = "10.88.0.1"
	RangeStart = "10.88.0.50"
	RangeEnd   = "10.88.0.99"
)

// InRange reports whether ip is one the server leases.
func InRange(ip net.IP) bool {
	v := ip.To4()
	lo, hi := net.ParseIP(RangeStart).To4(), net.ParseIP(RangeEnd).To4()
	return v != nil && bytes.Compare(v, lo) >= 0 && bytes.Compare(v, hi) <= 0
}

// Server is dnsmasq serving DHCP on one interface of a namespace.
type Server struct {
	NS     *testutil.NS
	Leases string // the lease file
	args   []string
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs dnsmasq on ifName in ns (giving ifName ServerIP/24 if it
// has no address yet) with 2-minute leases (dnsmasq's minimum), the router
// option and no ping check before offering; extra adds dnsmasq arguments
// (e.g. "--dhcp-option=58,3" for a 3 s T1). It is stopped at cleanup.
func Start(t testing.TB, ns *testutil.NS, ifName string, extra ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("dnsmasq not installed")
	}
	l, err := ns.H.LinkByName(ifName)
	if err != nil {
		t.Fatalf("dnsmasq interface: %v", err)
	}
	if addrs, _ := nlsafe.AddrList(ns.H, l, netlink.FAMILY_V4); len(addrs) == 0 {
		a, _ := netlink.ParseAddr(ServerIP + "/24")
		if err := ns.H.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{NS: ns, Leases: filepath.Join(t.TempDir(), "leases")}
	s.args = append([]string{"--net=" + ns.Path(), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=" + ifName, "--bind-interfaces", "--dhcp-range=" + RangeStart + "," + RangeEnd + ",255.255.255.0,2m",
		"--dhcp-leasefile=" + s.Leases, "--dhcp-authoritative", "--user=root", "--pid-file=",
		"--log-facility=-", "--log-dhcp", "--no-ping", "--dhcp-option=option:router," + ServerIP}, extra...)
	s.start(t)
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", s.out.String())
		}
	})
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.out, s.cancel, s.done = &syncBuffer{}, cancel, make(chan struct{})
	cmd := exec.CommandContext(ctx, "nsenter", s.args...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	Poll(t, 5*time.Second, "dnsmasq to start", func() bool { return strings.Contains(s.out.String(), "DHCP, sockets bound") })
}

// Stop ends dnsmasq (the lease file stays); it may be called twice.
func (s *Server) Stop() {
	s.cancel()
	<-s.done
}

// Restart runs dnsmasq again after Stop, with the same lease file.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}

// Log is what dnsmasq printed so far.
func (s *Server) Log() string { return s.out.String() }

// Lease is one line of dnsmasq's lease file.
type Lease struct {
	Expiry   int64
	MAC, IP  string
	Host, ID string
}

// All returns the lease file's entries.
func (s *Server) All(t testing.TB) []Lease {
	t.Helper()
	f, err := os.Open(s.Leases)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Lease
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 {
			exp, _ := strconv.ParseInt(fs[0], 10, 64)
			out = append(out, Lease{Expiry: exp, MAC: fs[1], IP: fs[2], Host: fs[3], ID: fs[4]})
		}
	}
	return out
}

// LeaseFor returns the lease of ip, if the server holds one.
func (s *Server) LeaseFor(t testing.TB, ip string) (Lease, bool) {
	t.Helper()
	for _, l := range s.All(t) {
		if l.IP == ip {
			return l, true
		}
	}
	return Lease{}, false
}

// Poll waits for cond with a deadline.
func Poll(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond) // polling external state
	}
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
