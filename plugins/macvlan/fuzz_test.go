package macvlan

import (
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"eth0","mode":"vepa","mtu":1400}`), "")
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"n","type":"macvlan","mac":"02:00:00:00:00:01","ipam":{"type":"static"}}`), "MAC=02:00:00:00:00:02")
	f.Add([]byte(`{"cniVersion":"1.1.0","runtimeConfig":{"mac":"zz"},"args":{"cni":{"mac":"02:00:00:00:00:03"}}}`), "IgnoreUnknown=1;X=y")
	f.Add([]byte(`{"cniVersion":"1.0.0","linkInContainer":true,"mtu":-5,"prevResult":{"interfaces":[]}}`), "")
	f.Fuzz(func(t *testing.T, data []byte, args string) {
		c, p, err := parse(data, args)
		if err != nil {
			return
		}
		if _, ok := modeOf(c.Mode); !ok {
			t.Fatalf("accepted mode %q", c.Mode)
		}
		if p.MTU < 0 {
			t.Fatalf("accepted MTU %d", p.MTU)
		}
		if p.MAC != nil && len(p.MAC) != 6 {
			t.Fatalf("accepted MAC %v", p.MAC)
		}
		if _, err := decode(data); err != nil {
			t.Fatalf("parse accepted what decode rejects: %v", err)
		}
	})
}
