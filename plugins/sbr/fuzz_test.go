package sbr

import "testing"

func FuzzConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"sbr","table":5001,"prevResult":{"interfaces":[{"name":"net1","sandbox":"/x"}],"ips":[{"address":"10.2.0.2/24","gateway":"10.2.0.1","interface":0}]}}`), "net1")
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"n","type":"sbr","prevResult":{"ips":[{"version":"6","address":"fd00::2/64","interface":7}]}}`), "eth0")
	f.Add([]byte(`{"cniVersion":"1.1.0","table":255}`), "a")
	f.Fuzz(func(t *testing.T, data []byte, ifName string) {
		c, err := parse(data)
		if err != nil {
			return
		}
		if c.Table != nil && (*c.Table <= 0 || *c.Table == 254 || *c.Table == 255) {
			t.Fatalf("accepted reserved table %d", *c.Table)
		}
		prev, err := c.PrevResult()
		if err != nil || prev == nil {
			return
		}
		for _, ipc := range ipsOf(prev, ifName) {
			if ipc.Interface != nil {
				i := *ipc.Interface
				if i >= 0 && i < len(prev.Interfaces) && prev.Interfaces[i].Name != ifName {
					t.Fatalf("address of %s picked for %s", prev.Interfaces[i].Name, ifName)
				}
			}
			_ = hostMask(ipc.Address.IP)
		}
	})
}
