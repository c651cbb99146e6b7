package vrf

import "testing"

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"vrf","vrfname":"blue","table":100,"prevResult":{"interfaces":[{"name":"net1"}]}}`))
	f.Add([]byte(`{"cniVersion":"0.4.0","vrfname":"a/b"}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","vrfname":"0123456789abcdef","table":-1}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","vrfname":"blue","prevResult":{"ips":[{"address":"10.0.0.2/24"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decode(data)
		if err != nil {
			return
		}
		if c.VRFName == "" || len(c.VRFName) > 15 || !validName(c.VRFName) {
			t.Fatalf("accepted vrfname %q", c.VRFName)
		}
		if p, err := parse(data); err == nil {
			if prev, err := p.PrevResult(); err != nil || prev == nil {
				t.Fatalf("parse accepted a config without a usable prevResult: %v", err)
			}
		}
	})
}
