package chain

import (
	"context"
	"testing"
)

// FuzzParse: any config parses into a runnable network or fails with a
// CNI error; a parsed network re-encodes and parses again to the same
// shape, and builds a plugin config for every plugin.
func FuzzParse(f *testing.F) {
	for _, s := range []string{list, `{"cniVersion":"0.3.1","name":"s","type":"bridge"}`, `{"plugins":[{"type":"a"}]}`,
		`{"type":"x","capabilities":{"ips":true},"args":{"cni":{"a":1}}}`, `{"disableCheck":"true","plugins":[{"type":"a"}]}`,
		`{`, `null`, `{"plugins":null}`, `{"type":""}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Parse(data)
		if err != nil {
			return
		}
		b, err := n.Marshal()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		n2, err := Parse(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if len(n2.Plugins) != len(n.Plugins) || n2.Name != n.Name || n2.CNIVersion != n.CNIVersion {
			t.Fatalf("round trip changed the network: %s", b)
		}
		for _, p := range n.Plugins {
			if p.Type == "" {
				t.Fatal("plugin without type")
			}
			if _, err := n.pluginConf(p, map[string]any{"ips": []string{"1.1.1.1"}}, []byte(`{}`), nil); err != nil {
				t.Fatalf("plugin conf: %v", err)
			}
		}
		_ = n.MergeCNIArgs(map[string]any{"k": "v"})
		_ = n.Del(context.Background(), &fake{}, Runtime{}, nil, nil)
	})
}
