package confgen

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const flannel = `{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel","delegate":{"isDefaultGateway":true}},
	{"type":"portmap","capabilities":{"portMappings":true}},{"type":"bandwidth","capabilities":{"bandwidth":true}}]}`

func opts(dir string) Options {
	return Options{ConfDir: dir, Socket: "/run/knit/knitd.sock", CacheDir: "/var/lib/knit/cache"}
}

func read(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSync(t *testing.T) {
	dir := t.TempDir()
	// Nothing to base on: no file.
	if src, _, err := Sync(opts(dir)); src != nil || err != nil {
		t.Fatalf("empty dir: %v %v", src, err)
	}
	write(t, dir, "10-flannel.conflist", flannel)
	write(t, dir, "20-other.conf", `{"cniVersion":"1.0.0","name":"other","type":"bridge"}`)
	write(t, dir, "05-broken.conf", `{`)
	write(t, dir, ".hidden.conf", `{"cniVersion":"1.0.0","name":"h","type":"bridge"}`)
	src, skipped, err := Sync(opts(dir))
	if err != nil || src == nil || filepath.Base(src.Path) != "10-flannel.conflist" || len(skipped) != 1 {
		t.Fatalf("source %+v skipped %v err %v", src, skipped, err)
	}
	m := read(t, dir)
	plugin := m["plugins"].([]any)[0].(map[string]any)
	caps := plugin["capabilities"].(map[string]any)
	if m["cniVersion"] != "0.3.1" || m["name"] != NetworkName || plugin["type"] != "knit" || plugin["socket"] != "/run/knit/knitd.sock" ||
		caps["portMappings"] != true || caps["bandwidth"] != true || plugin["clusterNetwork"] != src.Path {
		t.Errorf("generated %v", m)
	}
	st1, _ := os.Stat(filepath.Join(dir, FileName))
	// Unchanged input: the file is not rewritten.
	if _, _, err := Sync(opts(dir)); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(filepath.Join(dir, FileName))
	if !st1.ModTime().Equal(st2.ModTime()) || !os.SameFile(st1, st2) {
		t.Error("unchanged config rewritten")
	}
	// Own file is never the source, even when it sorts first.
	os.Remove(filepath.Join(dir, "10-flannel.conflist"))
	src, _, _ = Sync(opts(dir))
	if filepath.Base(src.Path) != "20-other.conf" || read(t, dir)["cniVersion"] != "1.0.0" {
		t.Errorf("after removal: %v %v", src.Path, read(t, dir)["cniVersion"])
	}
	// Version override and an unsupported cluster version.
	o := opts(dir)
	o.CNIVersion = "1.1.0"
	if _, _, err := Sync(o); err != nil || read(t, dir)["cniVersion"] != "1.1.0" {
		t.Error("override")
	}
	write(t, dir, "20-other.conf", `{"cniVersion":"0.2.0","name":"other","type":"bridge"}`)
	if _, _, _ = Sync(opts(dir)); read(t, dir)["cniVersion"] != "1.0.0" {
		t.Error("unsupported cluster version not replaced")
	}
	// Only a config being rewritten (unparsable): knit's file stays.
	os.Remove(filepath.Join(dir, "20-other.conf"))
	if src, _, err := Sync(opts(dir)); src != nil || !errors.Is(err, ErrNoUsableConfig) {
		t.Fatalf("only a broken config: %v %v", src, err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Error("00-knit.conflist removed while the cluster config is unparsable")
	}
	// No cluster network left: knit's file goes too.
	os.Remove(filepath.Join(dir, "05-broken.conf"))
	if src, _, err := Sync(opts(dir)); src != nil || err != nil {
		t.Fatal(src, err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Error("00-knit.conflist kept without a cluster network")
	}
}

// Watch regenerates on changes without waiting for the resync period.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "10-a.conflist", flannel)
	var mu sync.Mutex
	var last *Source
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Watch(ctx, opts(dir), time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)), func(s *Source) {
			mu.Lock()
			last = s
			mu.Unlock()
		})
	}()
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out: %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	version := func() any {
		b, err := os.ReadFile(filepath.Join(dir, FileName))
		if err != nil {
			return nil
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m["cniVersion"]
	}
	waitFor("initial file", func() bool { return version() == "0.3.1" })
	write(t, dir, "10-a.conflist", `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"ptp"}]}`)
	waitFor("regenerated file", func() bool { return version() == "1.0.0" })
	os.Remove(filepath.Join(dir, FileName)) // someone deletes it: it comes back
	waitFor("recreated file", func() bool { return version() == "1.0.0" })
	os.Remove(filepath.Join(dir, "10-a.conflist"))
	waitFor("removed file", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return version() == nil && last == nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
