package knitd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/annotations"
	"github.com/knit-cni/knit/pkg/attachcache"
)

// assertGone checks a pod left nothing: no links in its namespace, no
// addresses held on the networks, no cache entry.
func (e *env) assertGone(p *pod, networks ...string) {
	e.t.Helper()
	if l := links(e.t, p.sandbox); len(l) != 0 {
		e.t.Errorf("%s: links left: %v", p.Name, l)
	}
	for _, nw := range networks {
		if a := e.allocations(nw); len(a) != 0 {
			e.t.Errorf("%s: addresses still allocated: %v", nw, a)
		}
	}
	if c := e.cacheFiles(); len(c) != 0 {
		e.t.Errorf("cache entries left: %v", c)
	}
}

// With the API server down, DEL completes from the node cache, and an ADD
// of a pod the informer already knows still works (its network-status is
// written once the API server is back).
func TestAPIServerDown(t *testing.T) {
	e := newEnv(t)
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	p := e.pod("apidown", map[string]string{annotations.NetworksKey: "net-a"})
	e.mustAdd(p)
	e.status(p)
	later := e.pod("apidown-later", map[string]string{annotations.NetworksKey: "net-a"})
	e.waitFor("informer to see the second pod", func() bool { _, ok := e.d.PodCached(later.Namespace, later.Name); return ok })

	e.c.StopAPIServer()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = e.c.StartAPIServer(context.Background())
		}
	})
	if err := e.del(p); err != nil {
		t.Fatalf("DEL with the API server down: %v", err)
	}
	if l := links(t, p.sandbox); len(l) != 0 {
		t.Errorf("links left: %v", l)
	}
	e.mustAdd(later)
	if l := links(t, later.sandbox); !slices.Contains(l, "net1") {
		t.Errorf("ADD with the API server down: links %v", l)
	}
	if err := e.c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	if st := e.status(later); len(st) != 2 {
		t.Errorf("status after the API came back: %+v", st)
	}
	if err := e.del(later); err != nil {
		t.Fatal(err)
	}
	e.assertGone(later, "cbr0", "net-a")
}

// With knitd down: ADD fails fast with "try again later" naming the
// socket, DEL still completes from the node cache (the shim execs the
// delegates itself), and after knitd is back ADD works again.
func TestKnitdDown(t *testing.T) {
	e := newEnv(t)
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	p := e.pod("down", map[string]string{annotations.NetworksKey: "net-a,net-a"})
	e.mustAdd(p)
	e.stop()

	q := e.pod("down-add", map[string]string{annotations.NetworksKey: "net-a"})
	start := time.Now()
	_, err := e.add(q)
	if err == nil {
		t.Fatal("ADD without knitd succeeded")
	}
	te := cniError(t, err)
	if te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, e.cfg.Socket) {
		t.Errorf("ADD without knitd: %d %q, want 11 naming %s", te.Code, te.Msg, e.cfg.Socket)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ADD without knitd took %v", d)
	}
	if err := e.del(p); err != nil {
		t.Fatalf("DEL without knitd: %v", err)
	}
	e.assertGone(p, "cbr0", "net-a")
	if _, err := os.Stat(e.cfg.Socket); err == nil {
		// The socket file of a dead knitd may remain; the shim must not care.
		t.Log("stale socket file present")
	}
	e.start()
	e.mustAdd(q)
	if err := e.del(q); err != nil {
		t.Fatal(err)
	}
	e.assertGone(q, "cbr0", "net-a")
}

// knitd killed in the middle of an ADD: the ADD fails cleanly (code 11),
// the restarted knitd tears down what the interrupted ADD made, the
// runtime's retry succeeds, and after DEL nothing is left.
func TestKnitdKilledDuringAdd(t *testing.T) {
	e := newEnv(t)
	e.stop()
	cmd := e.startSubprocess()
	e.bridgeNAD("", "net-a", "bra", "10.10.1.0/24")
	started, fifo, release := filepath.Join(e.dir, "started"), filepath.Join(e.dir, "fifo"), filepath.Join(e.dir, "release")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	e.nad("", "slow", fmt.Sprintf(`{"cniVersion":"1.0.0","type":"blocker","started":%q,"fifo":%q,"release":%q}`, started, fifo, release), nil)
	p := e.pod("killed", map[string]string{annotations.NetworksKey: "net-a,slow"})
	errc := make(chan error, 1)
	go func() { _, err := e.add(p); errc <- err }()
	e.waitFor("the blocker plugin to start", func() bool { _, err := os.Stat(started); return err == nil })
	// Mid-ADD: the cluster network and net-a are attached, slow is not.
	entry := e.cacheEntry(p)
	if entry.Complete || len(entry.Attachments) != 3 {
		t.Fatalf("cache during ADD: complete %v, %d attachments", entry.Complete, len(entry.Attachments))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	if err == nil {
		t.Fatal("ADD succeeded although knitd was killed")
	}
	if te := cniError(t, err); te.Code != types.ErrTryAgainLater {
		t.Errorf("ADD error %d %q, want 11", te.Code, te.Msg)
	}
	if l := links(t, p.sandbox); len(l) != 2 {
		t.Errorf("before the restart, the interrupted ADD's links are there: %v", l)
	}
	// Let the orphaned blocker finish, and future ADDs pass.
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
		f.Close()
	}
	e.startSubprocess()
	e.waitFor("the restarted knitd to tear the interrupted ADD down", func() bool {
		return len(links(t, p.sandbox)) == 0 && len(e.allocations("cbr0")) == 0 && len(e.allocations("net-a")) == 0 && len(e.cacheFiles()) == 0
	})
	e.mustAdd(p)
	if l := links(t, p.sandbox); len(l) != 2 { // the blocker makes no link
		t.Errorf("retried ADD: links %v", l)
	}
	if entry := e.cacheEntry(p); !entry.Complete || len(entry.Attachments) != 3 {
		t.Errorf("cache after the retried ADD: complete %v, %d attachments", entry.Complete, len(entry.Attachments))
	}
	if err := e.del(p); err != nil {
		t.Fatal(err)
	}
	e.assertGone(p, "cbr0", "net-a")
}

func (e *env) cacheEntry(p *pod) *attachcache.Entry {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.cfg.CacheDir, p.id+":eth0.json"))
	if err != nil {
		e.t.Fatalf("cache entry: %v", err)
	}
	var entry attachcache.Entry
	if err := json.Unmarshal(b, &entry); err != nil {
		e.t.Fatal(err)
	}
	return &entry
}
