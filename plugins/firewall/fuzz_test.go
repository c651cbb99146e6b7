package firewall

import (
	"testing"
)

func FuzzParseConfig(f *testing.F) {
	prev := `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"br0"},{"name":"veth1"},{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.0.0.2/24","interface":2},{"address":"fd00::2/64","interface":2}]}`
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"n","type":"firewall",` + prev + `}`,
		`{"cniVersion":"0.4.0","name":"n","type":"firewall","backend":"iptables","iptablesAdminChainName":"MY-ADMIN","ingressPolicy":"isolated",` + prev + `}`,
		`{"cniVersion":"1.1.0","name":"n","type":"firewall","backend":"firewalld","firewalldZone":"trusted"}`,
		`{"cniVersion":"1.0.0","ingressPolicy":"same-bridge","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":""}]}}`,
		`{"iptablesAdminChainName":"o-x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parse(data)
		if err != nil {
			return
		}
		if s.backend != BackendNftables && s.backend != BackendIptables {
			t.Fatalf("accepted backend %q", s.backend)
		}
		if s.policy != PolicyOpen && s.policy != PolicySameBridge && s.policy != PolicyIsolated {
			t.Fatalf("accepted policy %q", s.policy)
		}
		if checkAdminChain(s.admin) != nil {
			t.Fatalf("accepted admin chain %q", s.admin)
		}
		if br, err := s.bridgeName(); err == nil && s.policy != PolicyOpen && (br == "" || len(br) > 15) {
			t.Fatalf("accepted bridge name %q", br)
		}
		for _, e := range ownerElems(s) {
			if len(e.Key) != 4 && len(e.Key) != 16 {
				t.Fatalf("element %+v", e)
			}
		}
		if s.prev != nil {
			for _, ip := range families(s) {
				for _, a := range ip {
					_ = addrRules("o", a)
				}
			}
		}
	})
}
