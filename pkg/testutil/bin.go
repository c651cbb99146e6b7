package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// binDir is built once per test process; tests in a package share it.
var binDir struct {
	once sync.Once
	dir  string
	err  error
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// PluginDir returns a directory holding knit's plugin binaries under every
// CNI type name: $KNIT_BIN_DIR if set, else a fresh build of
// cmd/knit-plugin, so a test never runs a stale bin/.
func PluginDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("KNIT_BIN_DIR"); d != "" {
		return d
	}
	binDir.once.Do(func() {
		dir, err := os.MkdirTemp("", "knit-bin-")
		if err != nil {
			binDir.err = err
			return
		}
		bin := filepath.Join(dir, "knit-plugin")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/knit-plugin")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			binDir.err = &buildError{out: string(out), err: err}
			return
		}
		out, err := exec.Command(bin, "list").Output()
		if err != nil {
			binDir.err = err
			return
		}
		for _, name := range strings.Fields(string(out)) {
			if err := os.Link(bin, filepath.Join(dir, name)); err != nil {
				binDir.err = err
				return
			}
		}
		binDir.dir = dir
	})
	if binDir.err != nil {
		t.Fatalf("building plugins: %v", binDir.err)
	}
	return binDir.dir
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// RefDir is where Debian's containernetworking-plugins, the behaviour
// reference, live.
const RefDir = "/usr/lib/cni"

// RequireRef skips side-by-side tests where the reference plugins are not
// installed (make test installs them).
func RequireRef(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(RefDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("reference plugin %s not installed (apt-get install containernetworking-plugins)", p)
	}
	return p
}
