package link

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestMain lets the test binary serve as Remove's helper process: Remove
// re-executes /proc/self/exe, which is this binary.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == HelperName {
		os.Exit(HelperMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// pair creates a veth pair, host end in host, "eth0" in cont, and returns
// cont as a Target (closed at cleanup) with eth0's index.
func pair(t *testing.T) (host, cont *testutil.NS, tgt *netns.Target, idx int) {
	t.Helper()
	host, cont = testutil.NewNS(t), testutil.NewNS(t)
	testutil.Veth(t, host, "veth0", cont, "eth0")
	tgt, err := netns.OpenTarget(cont.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tgt.Close() })
	l, err := cont.H.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return host, cont, tgt, l.Attrs().Index
}

func requireGone(t *testing.T, ns *testutil.NS, name string) {
	t.Helper()
	if _, err := ns.H.LinkByName(name); err == nil {
		t.Fatalf("%s still in %s", name, ns.Path())
	}
}

// Remove returns with the link (and its veth peer) gone, whichever deleter
// finishes the request; a second Remove, and one of a link that never
// existed, succeed.
func TestRemove(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{
		{"goroutine", context.Background()},
		{"helper process", WithHelperProcess(context.Background())},
		// A helper that fails, or exits without deleting, leaves the job
		// to Remove's synchronous fallback.
		{"failing helper", withHelper(context.Background(), "/bin/false")},
		{"helper doing nothing", withHelper(context.Background(), "/bin/true")},
		{"missing helper", withHelper(context.Background(), "/nonexistent")},
	} {
		t.Run(c.name, func(t *testing.T) {
			host, cont, tgt, _ := pair(t)
			if err := Remove(c.ctx, tgt, "eth0"); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			requireGone(t, cont, "eth0")
			requireGone(t, host, "veth0")
			if err := Remove(c.ctx, tgt, "eth0"); err != nil {
				t.Fatalf("second Remove: %v", err)
			}
			if err := Remove(c.ctx, tgt, "nosuch0"); err != nil {
				t.Fatalf("Remove of a missing link: %v", err)
			}
		})
	}
}

// The deleter works on the link's index: a link created under the same
// name as soon as the old one left the namespace (an ADD racing the end of
// a DEL) survives the deleter's request.
func TestDeleterSparesNewLinkOfSameName(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{
		{"goroutine", context.Background()},
		{"helper process", WithHelperProcess(context.Background())},
	} {
		t.Run(c.name, func(t *testing.T) {
			host, cont, tgt, idx := pair(t)
			w, err := watchLinks(tgt.NS)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			d, err := startDelete(c.ctx, tgt.NS, idx)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.waitDeleted(context.Background(), idx); err != nil {
				t.Fatalf("no RTM_DELLINK announcement: %v", err)
			}
			testutil.Veth(t, host, "veth1", cont, "eth0")
			if err := <-d.done; err != nil {
				t.Fatalf("deleter: %v", err)
			}
			l, err := cont.H.LinkByName("eth0")
			if err != nil {
				t.Fatalf("the new eth0 is gone: %v", err)
			}
			if l.Attrs().Index == idx {
				t.Fatalf("new eth0 reuses index %d", idx)
			}
		})
	}
}

// The helper exits on its own once its request returns, with a status
// that says whether the link was deleted (already gone counts).
func TestHelperExits(t *testing.T) {
	testutil.RequireRoot(t)
	_, cont, tgt, idx := pair(t)
	d, err := startHelper("/proc/self/exe", tgt.NS, idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-d.done; err != nil {
		t.Fatalf("helper: %v", err)
	}
	requireGone(t, cont, "eth0")
	d, err = startHelper("/proc/self/exe", tgt.NS, idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-d.done; err != nil {
		t.Fatalf("helper for a link already gone: %v", err)
	}
	if code := HelperMain([]string{"x"}); code != 2 {
		t.Fatalf("HelperMain with a bad index: exit %d, want 2", code)
	}
}

// A cancelled context ends the wait: Remove deletes synchronously.
func TestRemoveCancelled(t *testing.T) {
	testutil.RequireRoot(t)
	_, cont, tgt, _ := pair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Remove(withHelper(ctx, "/bin/sleep"), tgt, "eth0"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	requireGone(t, cont, "eth0")
}

// Remove reports a link it cannot delete.
func TestRemoveFails(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNS(t)
	tgt, err := netns.OpenTarget(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	// lo cannot be deleted (EOPNOTSUPP).
	err = Remove(context.Background(), tgt, "lo")
	if err == nil {
		t.Fatal("removing lo succeeded")
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		t.Fatalf("unexpected error %v", err)
	}
	if _, err := ns.H.LinkByName("lo"); err != nil {
		t.Fatalf("lo: %v", err)
	}
}
