package tap

import "testing"

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"tap","multiQueue":true,"owner":1000,"group":1001,"mtu":1400,"mac":"02:00:00:00:00:01","bridge":"br0"}`), "")
	f.Add([]byte(`{"cniVersion":"0.3.1","runtimeConfig":{"mac":"01:00:00:00:00:01"},"selinuxcontext":"x"}`), "MAC=02:00:00:00:00:02")
	f.Add([]byte(`{"cniVersion":"1.1.0","owner":-1,"mtu":-3}`), "IgnoreUnknown=1;K8S_POD_NAME=x")
	f.Fuzz(func(t *testing.T, data []byte, args string) {
		c, mac, err := parse(data, args)
		if err != nil {
			return
		}
		if c.MTU < 0 {
			t.Fatalf("accepted MTU %d", c.MTU)
		}
		if mac != nil && (len(mac) != 6 || mac[0]&1 != 0) {
			t.Fatalf("accepted MAC %v", mac)
		}
		if c.flags()&0x0002 == 0 { // IFF_TAP
			t.Fatal("flags without IFF_TAP")
		}
	})
}
