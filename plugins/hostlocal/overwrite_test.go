package hostlocal

import (
	"os"
	"path/filepath"
	"testing"
)

// last_reserved_ip and the stamp are rewritten in place; a shorter value
// must not keep the tail of a longer one (the reference parses the whole
// file as an address).
func TestOverwriteInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "last_reserved_ip.0")
	for _, v := range []string{"10.1.0.100", "10.1.0.101", "10.1.0.9", "fd00::1:2"} {
		if err := overwriteFile(path, []byte(v)); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != v {
			t.Fatalf("after writing %q the file says %q (%v)", v, got, err)
		}
	}
}
