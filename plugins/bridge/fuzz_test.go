package bridge

import (
	"errors"
	"testing"

	"github.com/knit-cni/knit/pkg/cni"
)

// FuzzParse: any config and CNI_ARGS either parse into a config that holds
// the invariants ADD relies on, or fail with a CNI error code, never a
// panic.
func FuzzParse(f *testing.F) {
	for _, s := range []struct{ conf, args string }{
		{`{"cniVersion":"1.0.0","name":"n","type":"bridge"}`, ""},
		{`{"cniVersion":"1.0.0","name":"n","type":"bridge","bridge":"br0","isDefaultGateway":true,"ipMasq":true,"ipMasqBackend":"nftables","mtu":1400,"hairpinMode":true,"ipam":{"type":"host-local","subnet":"10.1.0.0/16"}}`, "IgnoreUnknown=1;MAC=0a:00:00:00:00:01"},
		{`{"cniVersion":"0.3.1","name":"n","type":"bridge","vlanTrunk":[{"id":5},{"minID":10,"maxID":20}],"preserveDefaultVlan":false}`, ""},
		{`{"cniVersion":"0.4.0","name":"n","type":"bridge","vlan":42,"promiscMode":true,"runtimeConfig":{"mac":"0a:00:00:00:00:02"},"args":{"cni":{"mac":"0a:00:00:00:00:03"}}}`, "MAC=zz"},
		{`{"cniVersion":"1.1.0","name":"n","type":"bridge","disableContainerInterface":true,"portIsolation":true,"macspoofchk":true,"enabledad":true,"forceAddress":true}`, ""},
		{`{"cniVersion":"1.0.0","vlanTrunk":[{"minID":1}]}`, "A=B"},
	} {
		f.Add([]byte(s.conf), s.args)
	}
	f.Fuzz(func(t *testing.T, data []byte, args string) {
		c, err := parse(data, args)
		if err != nil {
			var ce *cni.Error
			if !errors.As(err, &ce) || ce.Code == 0 {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		switch {
		case !validIfName(c.Bridge):
			t.Fatalf("accepted bridge name %q", c.Bridge)
		case c.Vlan < 0 || c.Vlan > 4094 || c.MTU < 0:
			t.Fatalf("accepted vlan %d mtu %d", c.Vlan, c.MTU)
		case c.HairpinMode && c.PromiscMode:
			t.Fatal("accepted hairpin with promisc")
		case c.DisableContainerIf && c.ipamType != "":
			t.Fatal("accepted disableContainerInterface with IPAM")
		case c.Vlan > 0 && len(c.vlans) > 0:
			t.Fatal("accepted vlan with vlanTrunk")
		case c.IsDefaultGateway && !c.IsGateway:
			t.Fatal("isDefaultGateway without isGateway")
		case c.mac != nil && (len(c.mac) != 6 || c.mac[0]&1 == 1):
			t.Fatalf("accepted MAC %s", c.mac)
		}
		for i, v := range c.vlans {
			if !validVID(v) || (i > 0 && c.vlans[i-1] >= v) {
				t.Fatalf("trunk %v not sorted unique valid ids", c.vlans)
			}
		}
		if _, err := decode(data); err != nil {
			t.Fatalf("decode rejects what parse accepted: %v", err)
		}
	})
}
