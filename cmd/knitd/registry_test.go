package main

import (
	"maps"
	"slices"
	"testing"

	"github.com/knit-cni/knit/plugins/builtin"
)

// knitd runs every built-in type in-process but dhcp: a type added to the
// built-ins must be added here too (or it would be exec'd).
func TestRegistryIsBuiltinsButDHCP(t *testing.T) {
	want := builtin.Registry()
	delete(want, "dhcp")
	got := registry()
	if g, w := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(g, w) {
		t.Errorf("knitd's in-process types %v, want %v", g, w)
	}
	if _, ok := got["dhcp"]; ok {
		t.Error("dhcp runs in-process")
	}
}
