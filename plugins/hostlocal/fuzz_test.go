package hostlocal

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func netIPString(ip netip.Addr) string { return net.IP(ip.AsSlice()).String() }

// FuzzParse feeds arbitrary configs and CNI_ARGS to the parser: it must
// never panic, and whatever it accepts must be a usable allocation plan.
func FuzzParse(f *testing.F) {
	seeds := []struct{ conf, args string }{
		{`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`, ""},
		{`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.5","rangeEnd":"10.0.0.9","gateway":"10.0.0.254"}],[{"subnet":"fd00::/64"}]]}}`, "IP=10.0.0.6"},
		{`{"cniVersion":"0.3.1","name":"n","runtimeConfig":{"ips":["10.0.0.7/24"],"ipRanges":[[{"subnet":"10.1.0.0/16"}]]},"args":{"cni":{"ips":["fd00::5"]}},"ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`, "IgnoreUnknown=1;K8S_POD_NAME=x"},
		{`{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"::ffff:10.0.0.0/120"}]]}}`, "IP=a,b"},
		{`{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[]]}}`, "IP"},
	}
	for _, s := range seeds {
		f.Add([]byte(s.conf), s.args)
	}
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		n, err := parse(conf, args)
		if err != nil {
			return
		}
		if len(n.sets) == 0 || n.name == "" || strings.Contains(n.name, "/") {
			t.Fatalf("accepted %+v", n)
		}
		for _, s := range n.sets {
			for _, r := range s {
				if !r.subnet.Contains(r.start) || !r.subnet.Contains(r.end) || !r.subnet.Contains(r.gw) || r.end.Less(r.start) {
					t.Fatalf("bad range %+v", r)
				}
				if r.start.Is4() != s[0].start.Is4() {
					t.Fatal("mixed families accepted")
				}
			}
			// The iterator visits a bounded, non-empty prefix of addresses
			// inside the set.
			k := 0
			for ip, ri := range s.candidates(netip.Addr{}) {
				if !s[ri].contains(ip) || ip == s[ri].gw {
					t.Fatalf("candidate %s outside %v or the gateway", ip, s[ri])
				}
				if k++; k > 50 {
					break
				}
			}
		}
		if _, err := assignRequested(n); err == nil {
			for _, a := range n.requested {
				if !a.IP.IsValid() {
					t.Fatal("invalid requested address accepted")
				}
			}
		}
	})
}

func FuzzResolvConf(f *testing.F) {
	f.Add("nameserver 1.1.1.1\nsearch a b\noptions x\ndomain d\n# c\n")
	f.Fuzz(func(t *testing.T, s string) {
		dns, err := parseResolvConf(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, n := range dns.Nameservers {
			if n == "" || strings.ContainsAny(n, " \t\n") {
				t.Fatalf("nameserver %q", n)
			}
		}
	})
}
