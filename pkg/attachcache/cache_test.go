package attachcache

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func entry(cid string) *Entry {
	return &Entry{ContainerID: cid, IfName: "eth0", Netns: "/run/netns/x", PodNamespace: "ns", PodName: "p", PodUID: "u",
		Created: time.Now().UTC(), Attachments: []Attachment{{Network: "cbr0", IfName: "eth0", Default: true,
			Config:        []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`),
			RuntimeConfig: map[string]any{"portMappings": []any{}}, Result: []byte(`{"cniVersion":"1.0.0"}`)}}}
}

func TestWriteReadRemove(t *testing.T) {
	s := &Store{Dir: filepath.Join(t.TempDir(), "cache")}
	if _, err := s.Read("c1", "eth0"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read missing: %v", err)
	}
	e := entry("c1")
	if err := s.Write(e); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read("c1", "eth0")
	if err != nil || got.PodUID != "u" || len(got.Attachments) != 1 || string(got.Attachments[0].Result) != `{"cniVersion":"1.0.0"}` || got.Version != FormatVersion {
		t.Fatalf("read back %+v %v", got, err)
	}
	if err := s.Write(entry("c2")); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("list %d %v", len(list), err)
	}
	// No temp files are left behind.
	if m, _ := filepath.Glob(filepath.Join(s.Dir, ".tmp-*")); len(m) != 0 {
		t.Errorf("temp files left: %v", m)
	}
	if err := s.Remove("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("c1", "eth0"); err != nil {
		t.Errorf("second remove: %v", err)
	}
	// A corrupt file is reported but does not hide the others.
	if err := os.WriteFile(filepath.Join(s.Dir, "bad:eth0.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err = s.List()
	if err == nil || len(list) != 1 {
		t.Errorf("list with a corrupt file: %d %v", len(list), err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "old:eth0.json"), []byte(`{"version":99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read("old", "eth0"); err == nil {
		t.Error("unknown format version accepted")
	}
}

func TestKeys(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	for _, bad := range [][2]string{{"", "eth0"}, {"a/b", "eth0"}, {"..", "eth0"}, {"c", ""}, {"c", "a/b"}, {"c", ".."}, {"a:b", "eth0"}} {
		if err := s.Write(&Entry{ContainerID: bad[0], IfName: bad[1]}); err == nil {
			t.Errorf("%q accepted", bad)
		}
		if _, err := s.Lock(bad[0], bad[1]); err == nil {
			t.Errorf("lock %q accepted", bad)
		}
	}
}

// The lock excludes concurrent holders, and survives the file being
// removed by a holder while others wait.
func TestLock(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	var inside, max atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := s.Lock("c1", "eth0")
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			if n > max.Load() {
				max.Store(n)
			}
			time.Sleep(2 * time.Millisecond) // hold the lock a while: overlap would show
			inside.Add(-1)
			unlock(i%2 == 0)
		}()
	}
	wg.Wait()
	if max.Load() != 1 {
		t.Errorf("%d holders at once", max.Load())
	}
}
