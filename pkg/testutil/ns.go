// Package testutil sets up real network namespaces and runs plugins, in
// process and exec'd, for knit's tests.
package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/netns"
)

// NS is a test network namespace bind-mounted under a temp dir.
type NS struct {
	*netns.NS
	H *netlink.Handle // netlink handle inside the namespace
}

// NewNS creates a fresh network namespace with lo up, removed at cleanup.
func NewNS(t testing.TB) *NS {
	t.Helper()
	path := filepath.Join(nsDir(t), fmt.Sprintf("ns-%s", nextID(t)))
	if err := makeNS(path); err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	n, err := netns.Open(path)
	if err != nil {
		t.Fatalf("opening netns: %v", err)
	}
	h, err := n.Handle()
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up: %v", err)
	}
	t.Cleanup(func() {
		h.Close()
		n.Close()
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
	})
	return &NS{NS: n, H: h}
}

func nsDir(t testing.TB) string {
	dir := filepath.Join(os.TempDir(), "knit-test-netns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("netns dir: %v", err)
	}
	return dir
}

func nextID(t testing.TB) string {
	f, err := os.CreateTemp(nsDir(t), "id-")
	if err != nil {
		t.Fatalf("netns id: %v", err)
	}
	f.Close()
	os.Remove(f.Name())
	return filepath.Base(f.Name())[3:]
}

// makeNS creates a namespace on a locked thread and bind-mounts it at path,
// leaving the test's threads where they were.
func makeNS(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		merr := unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
		if err := vns.Set(orig); err != nil {
			errc <- errors.Join(merr, err) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- merr
	}()
	return <-errc
}

// RequireRoot skips tests that need root (they all do, but go vet on a
// developer laptop should not fail).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
}

// Veth creates a veth pair with one end (name a) in ns1 and the other (name
// b) in ns2, both up: a stand-in NIC and its switch port.
func Veth(t testing.TB, ns1 *NS, a string, ns2 *NS, b string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b, PeerNamespace: netlink.NsFd(ns2.Fd())}
	if err := ns1.H.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s: %v", a, b, err)
	}
	for _, x := range []struct {
		ns   *NS
		name string
	}{{ns1, a}, {ns2, b}} {
		l, err := x.ns.H.LinkByName(x.name)
		if err == nil {
			err = x.ns.H.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("veth %s up: %v", x.name, err)
		}
	}
}
