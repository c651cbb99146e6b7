package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knit-cni/knit/pkg/cni"
)

// Helpers that act from inside a test namespace: a plugin binary run as if
// the namespace were the host, commands (ping, nft, ip) run there, and
// the traffic checks tests make between namespaces.

// InHost returns the path of a wrapper that runs bin (a plugin binary)
// inside the namespace at nsPath, as if that were the host: a plugin
// creates links from, finds masters in and writes firewall rules to the
// namespace it runs in. The wrapper has bin's base name, which the
// multi-call binary dispatches on, so it can also stand in a CNI_PATH
// directory for runtimes (libcni) that exec plugins by name.
func InHost(t testing.TB, nsPath, bin string) string {
	t.Helper()
	w := filepath.Join(t.TempDir(), filepath.Base(bin))
	script := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=%s %s \"$@\"\n", nsPath, bin)
	if err := os.WriteFile(w, []byte(script), 0o755); err != nil {
		t.Fatalf("writing wrapper: %v", err)
	}
	return w
}

// ExecIn is Exec with the plugin running inside ns (nsenter --net), which
// plays the host namespace: where a plugin finds host-side veths, creates
// ifbs and installs firewall rules.
func ExecIn(ctx context.Context, ns *NS, bin string, req *cni.Request) ([]byte, error) {
	return run(exec.CommandContext(ctx, "nsenter", "--net="+ns.Path(), bin), bin, req)
}

// In runs a command inside ns (nsenter --net) and returns its combined
// output.
func In(ctx context.Context, ns *NS, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path(), name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %v in %s: %w: %s", name, args, ns.Path(), err, out.String())
	}
	return out.Bytes(), nil
}

// Ping sends one ICMP echo from ns to ip (optionally from a source address
// or interface with -I) and reports whether a reply came back within 1 s.
func Ping(ns *NS, ip string, from string) error {
	args := []string{"-c1", "-W1", "-n"}
	if from != "" {
		args = append(args, "-I", from)
	}
	_, err := In(context.Background(), ns, "ping", append(args, ip)...)
	return err
}

// MustPing fails unless ns reaches ip within 5 s of retries: a fresh
// bridge port may still be learning, a neighbour still resolving.
func MustPing(t testing.TB, ns *NS, ip string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if err = Ping(ns, ip, ""); err == nil {
			return
		}
	}
	t.Fatalf("ping %s from %s: %v", ip, ns.Path(), err)
}

// NoPing fails if ns can reach ip.
func NoPing(t testing.TB, ns *NS, ip string) {
	t.Helper()
	if err := Ping(ns, ip, ""); err == nil {
		t.Fatalf("ping %s from %s succeeded, want failure", ip, ns.Path())
	}
}

// Sysctl reads a sysctl (a path under /proc/sys) inside ns.
func Sysctl(t testing.TB, ns *NS, key string) string {
	t.Helper()
	var v []byte
	err := ns.Do(func() error {
		var err error
		v, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	})
	if err != nil {
		t.Fatalf("sysctl %s: %v", key, err)
	}
	return strings.TrimSpace(string(v))
}

// Greeting is what a ServeOnce server sends each connection.
const Greeting = "hello"

// ServeOnce listens on addr (TCP) inside ns, greets the first connection
// and reports its remote address (without the port): the address a
// client's traffic arrives from, after any NAT.
func ServeOnce(t testing.TB, ns *NS, addr string) <-chan string {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_, _ = c.Write([]byte(Greeting))
		got <- host
	}()
	return got
}

// DialGreeting connects from inside ns to a ServeOnce server at addr and
// reads its greeting.
func DialGreeting(t testing.TB, ns *NS, addr string) {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns.Path(), err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, len(Greeting))
	if _, err := c.Read(buf); err != nil || string(buf) != Greeting {
		t.Fatalf("reading from %s: %q %v", addr, buf, err)
	}
}

// Seen waits (5 s at most) for a ServeOnce server's report.
func Seen(t testing.TB, got <-chan string) string {
	t.Helper()
	select {
	case s := <-got:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no connection")
		return ""
	}
}
