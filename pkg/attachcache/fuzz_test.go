package attachcache

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadEntry: a corrupt or foreign cache file never crashes the reader
// (knitd at startup, the shim on DEL); what is accepted re-encodes.
func FuzzReadEntry(f *testing.F) {
	f.Add([]byte(`{"version":1,"containerID":"c","ifname":"eth0","complete":true,"attachments":[{"network":"n","ifname":"eth0","config":{},"result":{}}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "c:eth0.json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		e, err := readFile(p)
		if err != nil {
			return
		}
		s := &Store{Dir: dir}
		e.ContainerID, e.IfName = "c2", "eth0"
		if err := s.Write(e); err != nil {
			t.Fatalf("accepted entry does not re-encode: %v", err)
		}
	})
}
