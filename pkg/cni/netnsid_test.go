package cni_test

import (
	"path/filepath"
	"testing"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/testutil"
)

// CheckNetns refuses the caller's own namespace for ADD, DEL and CHECK
// (code 8) unless CNI_NETNS_OVERRIDE is set, and leaves other namespaces,
// missing paths and other commands alone.
func TestCheckNetns(t *testing.T) {
	testutil.RequireRoot(t)
	own, err := cni.OwnNetnsID()
	if err != nil {
		t.Fatal(err)
	}
	other := testutil.NewNS(t).Path()
	cases := []struct {
		name    string
		req     cni.Request
		refused bool
	}{
		{"add-own", cni.Request{Command: cni.CmdAdd, Netns: "/proc/self/ns/net"}, true},
		{"del-own", cni.Request{Command: cni.CmdDel, Netns: "/proc/self/ns/net"}, true},
		{"check-own", cni.Request{Command: cni.CmdCheck, Netns: "/proc/self/ns/net"}, true},
		{"override", cni.Request{Command: cni.CmdAdd, Netns: "/proc/self/ns/net", NetnsOverride: true}, false},
		{"gc", cni.Request{Command: cni.CmdGC, Netns: "/proc/self/ns/net"}, false},
		{"other", cni.Request{Command: cni.CmdAdd, Netns: other}, false},
		{"gone", cni.Request{Command: cni.CmdDel, Netns: filepath.Join(t.TempDir(), "gone")}, false},
		{"empty", cni.Request{Command: cni.CmdDel}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := cni.CheckNetns(&c.req, own)
			if !c.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if ce, ok := err.(*cni.Error); !ok || ce.Code != 8 {
				t.Fatalf("err = %v, want a CNI error with code 8", err)
			}
		})
	}
	for _, v := range []string{"1", "true", "TRUE"} {
		if !cni.IsNetnsOverride(v) {
			t.Errorf("CNI_NETNS_OVERRIDE=%s not an override", v)
		}
	}
	if cni.IsNetnsOverride("0") || cni.IsNetnsOverride("") {
		t.Error("0 or empty taken as an override")
	}
}
