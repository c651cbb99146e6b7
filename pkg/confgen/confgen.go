// Package confgen writes the node's 00-knit.conflist, the config that makes
// the container runtime call knit. Like Multus, it is derived from the
// first other config in the CNI conf dir — the cluster network: knit takes
// its cniVersion (so the runtime speaks the version the cluster network
// does) and its plugins' capabilities (so the runtime passes runtimeConfig
// such as portMappings, which knit forwards to the cluster network only).
// It is regenerated whenever that file changes and removed when no cluster
// network config is left.
package confgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/knit-cni/knit/pkg/chain"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nad"
)

// FileName is the generated config; "00-" sorts it first, so runtimes
// pick it over the cluster network's own file.
const FileName = "00-knit.conflist"

// NetworkName is the generated network's name.
const NetworkName = "knit-cni-network"

// Options configure the generated plugin object.
type Options struct {
	ConfDir  string
	Socket   string
	CacheDir string
	// CNIVersion, if set, overrides the version taken from the cluster
	// network.
	CNIVersion string
}

// ErrNoUsableConfig: the conf dir has configs, but none parses.
var ErrNoUsableConfig = errors.New("no usable CNI config")

// Source is the cluster network config the generated file is based on.
type Source struct {
	Path    string
	Network *chain.Network
}

// Find returns the first config file of the conf dir other than knit's own
// that parses, in the order runtimes read them. Files that do not parse
// are skipped and reported in skipped. No file at all is (nil, nil, nil).
func Find(dir string) (src *Source, skipped []error, err error) {
	files, err := nad.ConfFiles(dir, FileName)
	if err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		n, err := nad.LoadFile(f)
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		return &Source{Path: f, Network: n}, skipped, nil
	}
	return nil, skipped, nil
}

// Render builds the content of 00-knit.conflist for a cluster network.
func Render(o Options, src *Source) ([]byte, error) {
	version := o.CNIVersion
	if version == "" {
		version = src.Network.CNIVersion
		if !supported(version) {
			version = "1.0.0"
		}
	}
	plugin := map[string]any{
		"type":           "knit",
		"socket":         o.Socket,
		"cacheDir":       o.CacheDir,
		"clusterNetwork": src.Path,
	}
	if caps := src.Network.Capabilities(); len(caps) > 0 {
		plugin["capabilities"] = caps
	}
	conf := map[string]any{
		"cniVersion": version,
		"name":       NetworkName,
		"plugins":    []any{plugin},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func supported(v string) bool {
	for _, s := range cni.SupportedVersions() {
		if s == v {
			return true
		}
	}
	return false
}

// Sync regenerates 00-knit.conflist from the conf dir: it is rewritten (
// atomically) only when its content changes, and removed when there is no
// cluster network config. It returns the source used (nil if none).
func Sync(o Options) (*Source, []error, error) {
	src, skipped, err := Find(o.ConfDir)
	if err != nil {
		return nil, skipped, err
	}
	path := filepath.Join(o.ConfDir, FileName)
	if src == nil && len(skipped) > 0 {
		// Configs exist but none parses: most likely one is being
		// rewritten in place. Keep the current file rather than let the
		// runtime bypass knit meanwhile.
		return nil, skipped, fmt.Errorf("%w: %v", ErrNoUsableConfig, errors.Join(skipped...))
	}
	if src == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, skipped, fmt.Errorf("removing %s: %w", path, err)
		}
		return nil, skipped, nil
	}
	content, err := Render(o, src)
	if err != nil {
		return nil, skipped, err
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
		return src, skipped, nil
	}
	return src, skipped, writeAtomic(path, content)
}

// writeAtomic writes through a temp file whose name runtimes ignore (a dot
// file without a config extension), so they never read a partial config.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".knit-tmp-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Chmod(0o644)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, werr)
	}
	return nil
}

// Watch keeps 00-knit.conflist in sync until ctx ends: on every change in
// the conf dir (fsnotify) and every resync period (a safety net for
// filesystems without inotify). onChange gets the current source after
// every sync (nil when there is none).
func Watch(ctx context.Context, o Options, resync time.Duration, log *slog.Logger, onChange func(*Source)) error {
	if err := os.MkdirAll(o.ConfDir, 0o755); err != nil {
		return fmt.Errorf("conf dir: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", o.ConfDir, err)
	}
	defer w.Close()
	if err := w.Add(o.ConfDir); err != nil {
		return fmt.Errorf("watching %s: %w", o.ConfDir, err)
	}
	sync := func() {
		src, skipped, err := Sync(o)
		for _, s := range skipped {
			log.Warn("skipping unusable CNI config", "err", s)
		}
		if err != nil {
			log.Error("generating "+FileName, "err", err)
			return
		}
		onChange(src)
	}
	sync()
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-w.Events:
			if b := filepath.Base(ev.Name); b == "" || b[0] == '.' {
				continue // temp files (ours and others')
			}
			// Our own rewrite also lands here; Sync finds it unchanged.
			sync()
		case err := <-w.Errors:
			log.Warn("conf dir watch", "err", err)
		case <-tick.C:
			sync()
		}
	}
}
