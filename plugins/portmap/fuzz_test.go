package portmap

import (
	"net"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"n","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}`,
		`{"cniVersion":"0.3.1","name":"n","type":"portmap","snat":false,"masqAll":true,"markMasqBit":31,"runtimeConfig":{"portMappings":[{"hostPort":53,"containerPort":53,"protocol":"UDP","hostIP":"::"}]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"portmap","backend":"iptables","externalSetMarkChain":"KUBE-MARK-MASQ","conditionsV4":["!","-d","192.0.2.0/24"]}`,
		`{"cniVersion":"1.0.0","name":"n","type":"portmap","conditionsV4":["ip daddr != 10.0.0.1","iifname","\"eth*\""],"conditionsV6":["meta mark 0x10"]}`,
		`{"cniVersion":"1.0.0","name":"n","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":65535,"protocol":"sctp","hostIP":"192.0.2.1"}]},"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}`,
		`{"cniVersion":"1.0.0","markMasqBit":-1}`,
		`{"runtimeConfig":{"portMappings":[{"hostPort":0}]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parse(data)
		if err != nil {
			return
		}
		if s.markBit > 31 || (s.backend != BackendNftables && s.backend != BackendIptables) {
			t.Fatalf("accepted mark bit %d backend %q", s.markBit, s.backend)
		}
		if s.setMark != "" && s.backend != BackendIptables {
			t.Fatal("external mark chain accepted with nftables")
		}
		for _, m := range s.maps {
			if m.hostPort == 0 || m.containerPort == 0 || (m.proto != unix.IPPROTO_TCP && m.proto != unix.IPPROTO_UDP && m.proto != unix.IPPROTO_SCTP) {
				t.Fatalf("accepted mapping %+v", m)
			}
			if m.hostIP != nil && m.hostIP.IsUnspecified() {
				t.Fatalf("unspecified host IP kept as a restriction: %+v", m)
			}
		}
		// Generating rules for the accepted config must work too.
		ips := contIPs{v4: &net.IPNet{IP: net.IPv4(10, 0, 0, 2).To4(), Mask: net.CIDRMask(24, 32)},
			v6: &net.IPNet{IP: net.ParseIP("fd00::2"), Mask: net.CIDRMask(64, 128)}}
		for _, e := range ownerElems(s, ips) {
			if len(e.Key) == 0 || len(e.Key) > 24 || len(e.Data) > 20 {
				t.Fatalf("element %+v", e)
			}
		}
		for _, ch := range []string{chainPre, chainOut, chainPreD, chainOutD, chainHairp, chainPost} {
			for _, r := range staticRules(s, ch, 1<<s.markBit) {
				marshalAll(t, r)
			}
		}
		if s.backend == BackendIptables {
			_ = iptDNATRules(s, ips.v4, "X")
			_ = iptEntryRules(s, "o", ips.v6)
		}
	})
}

func FuzzConditions(f *testing.F) {
	for _, s := range []string{"ip saddr 10.0.0.0/8", "ip daddr != 192.0.2.1 iifname eth0", `meta oifname "br-*"`,
		"ip6 saddr fd00::/64", "mark ne 0x4000", "tcp dport 80", `iifname "unterminated`, "ip saddr { 1.2.3.4 }", "meta"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, v4 bool) {
		exprs, err := parseConditions([]string{s}, v4)
		if err != nil {
			return
		}
		marshalAll(t, exprs)
	})
}

func marshalAll(t *testing.T, exprs []expr.Any) {
	t.Helper()
	for _, e := range exprs {
		if _, err := expr.Marshal(unix.NFPROTO_INET, e); err != nil {
			t.Fatalf("expression %#v does not marshal: %v", e, err)
		}
	}
}
