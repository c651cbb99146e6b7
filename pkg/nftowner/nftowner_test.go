package nftowner

import (
	"strings"
	"testing"
)

func TestTags(t *testing.T) {
	a := Owner{Network: "net", ContainerID: "c1", IfName: "eth0"}
	b := Owner{Network: "net", ContainerID: "c1", IfName: "eth1"}
	if a.Tag() == b.Tag() || len(a.Tag()) != len(b.Tag()) {
		t.Fatalf("tags %q %q must differ and share a width", a.Tag(), b.Tag())
	}
	if !strings.HasPrefix(a.Tag(), NetworkTag("net")) || strings.HasPrefix(a.Tag(), NetworkTag("net2")) {
		t.Fatalf("tag %q does not start with its network's", a.Tag())
	}
	long := Owner{Network: strings.Repeat("n", 300), ContainerID: strings.Repeat("c", 64), IfName: "eth0"}
	if c := long.Comment(); len(c) != MaxComment || !strings.HasPrefix(c, long.Tag()) {
		t.Fatalf("long comment %d bytes, want %d starting with the tag", len(c), MaxComment)
	}
	if got := a.Comment(); got != a.Tag()+" net=net id=c1 if=eth0" {
		t.Fatalf("comment %q", got)
	}
	// Network names that are prefixes of each other get unrelated tags.
	if strings.HasPrefix(NetworkTag("ab"), NetworkTag("a")) {
		t.Fatal("network tags are prefixes of each other")
	}
}
