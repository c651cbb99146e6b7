package knitd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/knit-cni/knit/pkg/confgen"
)

// Install puts knit on a node the way the DaemonSet's init container does:
// the knit shim and knit's multi-call plugin binary go into the CNI bin
// dir, the plugin linked under every type name it reports (`knit-plugin
// list`), each file replaced atomically so a runtime never execs a
// half-written one; then 00-knit.conflist is generated once (knitd keeps
// it in sync later). It returns the names installed.
func Install(from string, cfg *Config) ([]string, error) {
	out, err := exec.Command(filepath.Join(from, "knit-plugin"), "list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing plugin types: %w", err)
	}
	if err := os.MkdirAll(cfg.BinDir, 0o755); err != nil {
		return nil, fmt.Errorf("bin dir: %w", err)
	}
	names := []string{"knit", "knit-plugin"}
	for _, n := range names {
		if err := copyAtomic(filepath.Join(from, n), filepath.Join(cfg.BinDir, n)); err != nil {
			return nil, err
		}
	}
	for _, n := range strings.Fields(string(out)) {
		if n == "knit" || strings.ContainsAny(n, "/.") {
			continue
		}
		if err := linkAtomic(filepath.Join(cfg.BinDir, "knit-plugin"), filepath.Join(cfg.BinDir, n)); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	if *cfg.GenerateConf {
		o := confgen.Options{ConfDir: cfg.ConfDir, Socket: cfg.Socket, CacheDir: cfg.CacheDir, CNIVersion: cfg.CNIVersion}
		if err := os.MkdirAll(cfg.ConfDir, 0o755); err != nil {
			return nil, fmt.Errorf("conf dir: %w", err)
		}
		if _, _, err := confgen.Sync(o); err != nil && !errors.Is(err, confgen.ErrNoUsableConfig) {
			return nil, err
		}
	}
	return names, nil
}

// linkAtomic makes dst a hard link of src, replacing dst atomically.
func linkAtomic(src, dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-link")
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		return fmt.Errorf("installing %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("installing %s: %w", dst, err)
	}
	return nil
}

func copyAtomic(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return fmt.Errorf("installing %s: %w", dst, err)
	}
	_, werr := io.Copy(tmp, in)
	if werr == nil {
		werr = tmp.Chmod(0o755)
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), dst)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("installing %s: %w", dst, werr)
	}
	return nil
}
