package knitd

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/knit-cni/knit/pkg/confgen"
)

func TestInstall(t *testing.T) {
	from, root := t.TempDir(), t.TempDir()
	w := func(name, content string) {
		if err := os.WriteFile(filepath.Join(from, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w("knit", "shim")
	// The image may not keep hard links: names come from `knit-plugin list`.
	w("knit-plugin", "#!/bin/sh\n[ \"$1\" = list ] && printf 'bridge\\nhost-local\\n'\n")
	w("knitd", "daemon")
	cfg := &Config{NodeName: "n", BinDir: filepath.Join(root, "opt/cni/bin"), ConfDir: filepath.Join(root, "etc/cni/net.d")}
	cfg.SetDefaults()
	if err := os.MkdirAll(cfg.ConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.ConfDir, "10-cluster.conflist"),
		[]byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// An older binary in place is replaced.
	if err := os.MkdirAll(cfg.BinDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.BinDir, "bridge"), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	names, err := Install(from, cfg)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"bridge", "host-local", "knit", "knit-plugin"}) {
		t.Errorf("installed %v", names)
	}
	plugin, _ := os.Stat(filepath.Join(cfg.BinDir, "knit-plugin"))
	for _, n := range []string{"knit", "knit-plugin", "bridge", "host-local"} {
		st, err := os.Stat(filepath.Join(cfg.BinDir, n))
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if n != "knit" && !os.SameFile(st, plugin) {
			t.Errorf("%s is not the plugin binary", n)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.BinDir, "knit")); string(b) != "shim" {
		t.Errorf("knit: %q", b)
	}
	if _, err := os.Stat(filepath.Join(cfg.BinDir, "knitd")); err == nil {
		t.Error("knitd installed into the CNI bin dir")
	}
	if m, _ := filepath.Glob(filepath.Join(cfg.BinDir, ".*")); len(m) != 0 {
		t.Errorf("temp files left: %v", m)
	}
	if _, err := os.Stat(filepath.Join(cfg.ConfDir, confgen.FileName)); err != nil {
		t.Errorf("conflist not generated: %v", err)
	}
	if _, err := Install(t.TempDir(), cfg); err == nil {
		t.Error("install from an empty dir succeeded")
	}
}
