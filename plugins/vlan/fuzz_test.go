package vlan

import "testing"

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"vlan","master":"eth0","vlanId":42,"mtu":1400,"ipam":{"type":"static"}}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"vlan","master":"eth0","vlanId":4095}`))
	f.Add([]byte(`{"cniVersion":"0.3.0","master":"","vlanId":-1}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","master":"x","vlanId":1.5}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, p, err := parse(data)
		if err != nil {
			return
		}
		if c.Master == "" || p.Master == "" {
			t.Fatal("accepted a config without master")
		}
		if c.VlanID == nil || *c.VlanID < 0 || *c.VlanID > 4094 {
			t.Fatalf("accepted vlanId %v", c.VlanID)
		}
		if p.MTU < 0 {
			t.Fatalf("accepted MTU %d", p.MTU)
		}
		c.kind() // must not panic once parse accepted the config
	})
}
