package static

import (
	"testing"
)

// FuzzParse: arbitrary configs and CNI_ARGS never panic, and accepted
// addresses are valid prefixes.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"s","ipam":{"type":"static","addresses":[{"address":"10.5.0.2/24","gateway":"10.5.0.1"}]}}`), "IP=10.6.0.2/24;GATEWAY=10.6.0.1")
	f.Add([]byte(`{"cniVersion":"0.4.0","name":"s","runtimeConfig":{"ips":["fd00::1/64"]},"args":{"cni":{"ips":["10.0.0.1/8"]}},"ipam":{"addresses":[{"address":"::ffff:1.2.3.4/120"}]}}`), "IgnoreUnknown=1;X=y")
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"s","ipam":{}}`), "IP=,;GATEWAY=")
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		_, addrs, err := parse(conf, args)
		if err != nil {
			return
		}
		for _, a := range addrs {
			if !a.prefix.IsValid() || a.prefix.Addr().Zone() != "" || a.prefix.Addr().Is4In6() {
				t.Fatalf("accepted %v", a.prefix)
			}
		}
	})
}
