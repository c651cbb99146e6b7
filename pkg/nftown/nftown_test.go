package nftown

import (
	"bytes"
	"strings"
	"testing"
)

func TestOwner(t *testing.T) {
	if got := Owner("net1", "abc", "eth0"); got != "net1/abc/eth0" {
		t.Fatalf("Owner = %q", got)
	}
	long := strings.Repeat("c", 300)
	o := Owner("net1", long, "eth0")
	if len(o) > maxOwner || !strings.HasPrefix(o, NetworkPrefix("net1")) {
		t.Fatalf("long owner %q (%d bytes)", o, len(o))
	}
	if Owner("net1", long, "eth0") == Owner("net1", long, "eth1") {
		t.Fatal("hashed owners collide")
	}
	if o := Owner(`n"x`, "a b", "eth0"); strings.ContainsAny(o, "\" ") {
		t.Fatalf("owner with quotes or spaces: %q", o)
	}
	ln := strings.Repeat("n", 200)
	if o := Owner(ln, "abc", "eth0"); !strings.HasPrefix(o, NetworkPrefix(ln)) || strings.HasPrefix(o, NetworkPrefix("other")) {
		t.Fatalf("long network owner %q", o)
	}
}

func FuzzRecord(f *testing.F) {
	f.Add("dn4", []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, []byte{10, 0, 0, 2, 0, 80, 0, 0}, "net/c/eth0")
	f.Add("fw4", []byte{10, 0, 0, 2}, []byte(nil), "n/#abc")
	f.Fuzz(func(t *testing.T, set string, key, data []byte, owner string) {
		if strings.Contains(set, " ") || set == "" {
			return // set names never hold spaces
		}
		if len(data) == 0 {
			data = nil
		}
		c := recordComment(Elem{Set: set, Key: key, Data: data}, owner)
		e, o, err := parseRecord(c)
		if err != nil {
			t.Fatalf("%q: %v", c, err)
		}
		if e.Set != set || !bytes.Equal(e.Key, key) || !bytes.Equal(e.Data, data) || o != owner {
			t.Fatalf("round trip of %q: %+v %q", c, e, o)
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add("dn4 0600000000500000 0a00000200500000 net/c/eth0")
	f.Add("x y - z")
	f.Fuzz(func(t *testing.T, c string) {
		_, _, _ = parseRecord(c)
		_, _ = parseClaims(nil)
	})
}
