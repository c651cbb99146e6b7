package hostlocal_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

const dualStack = `"ranges":[[{"subnet":"10.1.0.0/28"}],[{"subnet":"fd00:9::/124","gateway":"fd00:9::f"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]`

// TestSideBySide runs the same sequence through knit and the reference on
// separate data dirs, for every spec version both speak: the printed
// results and the files left on disk must be the same.
func TestSideBySide(t *testing.T) {
	ref, knit := refBin(t), knitBin(t)
	for _, v := range cni.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			k, r := newEnv(t, dualStack), newEnv(t, dualStack)
			k.version, r.version = v, v
			steps := []struct {
				cmd  cni.Command
				cid  string
				args string
			}{
				{cni.CmdAdd, "a", ""}, {cni.CmdAdd, "b", "IP=10.1.0.9"}, {cni.CmdAdd, "c", ""},
				{cni.CmdDel, "a", ""}, {cni.CmdAdd, "d", ""}, {cni.CmdDel, "a", ""}, {cni.CmdAdd, "e", ""},
			}
			for _, s := range steps {
				kout, kerr := k.exec(knit, s.cmd, s.cid, "eth0", s.args)
				if kerr != nil {
					t.Fatalf("knit %s %s: %v", s.cmd, s.cid, kerr)
				}
				checkShape(t, v, s.cmd, kout)
				if v == "1.1.0" { // the reference (1.1.1) stops at 1.0.0
					continue
				}
				rout, rerr := r.exec(ref, s.cmd, s.cid, "eth0", s.args)
				if rerr != nil {
					t.Fatalf("reference %s %s: %v", s.cmd, s.cid, rerr)
				}
				if s.cmd == cni.CmdAdd && !reflect.DeepEqual(normalize(t, kout), normalize(t, rout)) {
					t.Fatalf("%s %s: knit %s\nreference %s", s.cmd, s.cid, kout, rout)
				}
			}
			if v != "1.1.0" {
				if kf, rf := diskState(t, k.netDir()), diskState(t, r.netDir()); !reflect.DeepEqual(kf, rf) {
					t.Fatalf("on disk: knit %q\nreference %q", kf, rf)
				}
			}
		})
	}
}

// checkShape asserts the result carries ips[].version exactly for the
// spec versions that have it.
func checkShape(t *testing.T, v string, cmd cni.Command, out []byte) {
	t.Helper()
	if cmd != cni.CmdAdd {
		return
	}
	var raw struct {
		CNIVersion string           `json:"cniVersion"`
		IPs        []map[string]any `json:"ips"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.CNIVersion != v || len(raw.IPs) != 2 {
		t.Fatalf("result %s", out)
	}
	_, has := raw.IPs[0]["version"]
	if want := v < "1.0.0"; has != want {
		t.Fatalf("%s: ips[].version present = %v: %s", v, has, out)
	}
}

// diskState is the network directory as the reference sees it (knit's
// index left out).
func diskState(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// TestInterop shares one data dir between knit and the reference.
func TestInterop(t *testing.T) {
	ref, knit := refBin(t), knitBin(t)
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	a := firstIP(e.execAdd(ref, "a")) // reference allocates first
	b := firstIP(e.execAdd(ref, "b"))
	if _, err := e.exec(knit, cni.CmdDel, "a", "eth0", ""); err != nil {
		t.Fatalf("knit DEL of a reference allocation: %v", err)
	}
	if _, ok := e.files()[a]; ok {
		t.Fatalf("knit DEL left %s", a)
	}
	c := firstIP(e.execAdd(knit, "c"))
	if c == b {
		t.Fatalf("knit handed out the reference's %s", b)
	}
	if _, err := e.exec(knit, cni.CmdCheck, "b", "eth0", ""); err != nil {
		t.Fatalf("knit CHECK of a reference allocation: %v", err)
	}
	// Make c's address the reference's next candidate: it must skip it.
	prev := netip.MustParseAddr(c).Prev().String()
	os.WriteFile(filepath.Join(e.netDir(), "last_reserved_ip.0"), []byte(prev), 0o644)
	d := firstIP(e.execAdd(ref, "d"))
	if want := netip.MustParseAddr(c).Next().String(); d != want {
		t.Fatalf("reference got %s, want %s (after knit's %s)", d, want, c)
	}
	if d == b || d == c {
		t.Fatalf("reference handed out %s, held by b or c", d)
	}
	if _, err := e.exec(ref, cni.CmdDel, "c", "eth0", ""); err != nil {
		t.Fatalf("reference DEL of a knit allocation: %v", err)
	}
	if _, err := e.exec(knit, cni.CmdDel, "b", "eth0", ""); err != nil {
		t.Fatal(err)
	}
	e.wantFiles(map[string]string{d: "d\r\neth0"})
	if _, err := e.exec(ref, cni.CmdCheck, "d", "eth0", ""); err != nil {
		t.Fatalf("reference CHECK: %v", err)
	}
}

// TestIndexRebuildAfterReference makes the reference free an address and
// give the same address to another container between two knit calls (same
// names on disk, different owner): knit must notice and release it for
// the new owner.
func TestIndexRebuildAfterReference(t *testing.T) {
	ref, knit := refBin(t), knitBin(t)
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	x := firstIP(e.execAdd(knit, "x"))
	e.execAdd(knit, "other")
	if _, err := e.exec(ref, cni.CmdDel, "x", "eth0", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.exec(ref, cni.CmdAdd, "y", "eth0", "IP="+x); err != nil {
		t.Fatal(err)
	}
	if _, err := e.exec(knit, cni.CmdCheck, "x", "eth0", ""); err == nil {
		t.Fatal("knit CHECK still finds x's address")
	}
	if _, err := e.exec(knit, cni.CmdDel, "y", "eth0", ""); err != nil {
		t.Fatal(err)
	}
	if len(e.files()) != 1 {
		t.Fatalf("files after knit DEL of y: %q", e.files())
	}
	// And in process (the same code, no process boundary).
	e.execAdd(ref, "z")
	e.mustDel("z", "eth0")
	e.mustDel("other", "eth0")
	e.wantFiles(map[string]string{})
}

func TestConcurrentInProcess(t *testing.T) {
	e := newEnv(t, `"ranges":[[{"subnet":"10.1.0.0/25"}],[{"subnet":"fd00:5::/64"}]]`)
	const n = 64
	results := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			res, err := e.add(fmt.Sprintf("c%d", i), "eth0", "")
			if err != nil {
				errs <- err
				return
			}
			results[i] = res.IPs[0].Address.IP.String() + " " + res.IPs[1].Address.IP.String()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkUnique(t, results)
	if got := len(e.files()); got != 2*n {
		t.Fatalf("%d files, want %d", got, 2*n)
	}
	for i := range n {
		wg.Go(func() {
			if err := e.call(cni.CmdDel, fmt.Sprintf("c%d", i), "eth0"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	e.wantFiles(map[string]string{})
}

// TestConcurrentExec runs knit and reference processes at once on one
// directory: the shared flock must keep every address unique.
func TestConcurrentExec(t *testing.T) {
	ref, knit := refBin(t), knitBin(t)
	e := newEnv(t, `"subnet":"10.1.0.0/24"`)
	const n = 32
	results := make([]string, n)
	bins := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		bins[i] = knit
		if i%4 == 3 {
			bins[i] = ref
		}
		wg.Go(func() {
			out, err := e.exec(bins[i], cni.CmdAdd, fmt.Sprintf("c%d", i), "eth0", "")
			if err != nil {
				t.Errorf("%s ADD c%d: %v", bins[i], i, err)
				return
			}
			results[i] = firstIP(testutil.DecodeResult(t, e.config(), out))
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	checkUnique(t, results)
	want := map[string]string{}
	for i, ip := range results {
		want[ip] = fmt.Sprintf("c%d\r\neth0", i)
	}
	e.wantFiles(want)
	for i := range n { // each releases what the other one allocated
		wg.Go(func() {
			bin := knit
			if bins[i] == knit && i%2 == 0 {
				bin = ref
			}
			if _, err := e.exec(bin, cni.CmdDel, fmt.Sprintf("c%d", i), "eth0", ""); err != nil {
				t.Errorf("DEL c%d: %v", i, err)
			}
		})
	}
	wg.Wait()
	e.wantFiles(map[string]string{})
}

func checkUnique(t *testing.T, results []string) {
	t.Helper()
	seen := map[string]int{}
	for i, r := range results {
		if j, dup := seen[r]; dup {
			t.Fatalf("c%d and c%d both got %s", i, j, r)
		}
		seen[r] = i
	}
}

func TestExecErrorsAndGC(t *testing.T) {
	knit := knitBin(t)
	e := newEnv(t, `"subnet":"10.1.0.0/30"`)
	e.version = "1.1.0"
	e.execAdd(knit, "a")
	_, err := e.exec(knit, cni.CmdAdd, "b", "eth0", "")
	te, ok := err.(*types.Error)
	if !ok || te.Code != cni.ErrRangeExhausted {
		t.Fatalf("exhausted: %v", err)
	}
	e.ipam = `"subnet":"10.1.0.0/24","rangeStart":"10.2.0.1"`
	_, err = e.exec(knit, cni.CmdAdd, "b", "eth0", "")
	if te, ok := err.(*types.Error); !ok || te.Code != types.ErrInvalidNetworkConfig {
		t.Fatalf("bad config: %v", err)
	}
	e.ipam = `"subnet":"10.1.0.0/30"`
	var conf map[string]any
	json.Unmarshal(e.config(), &conf)
	conf["cni.dev/valid-attachments"] = []map[string]string{{"containerID": "other", "ifname": "eth0"}}
	gc, _ := json.Marshal(conf)
	if _, err := testutil.Exec(context.Background(), knit, &cni.Request{Command: cni.CmdGC, Config: gc}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	e.wantFiles(map[string]string{})
	if got := diskState(t, e.netDir()); got["last_reserved_ip.0"] != "10.1.0.2" {
		t.Fatalf("GC touched last_reserved_ip: %q", got)
	}
}
