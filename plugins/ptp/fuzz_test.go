package ptp

import (
	"errors"
	"testing"

	"github.com/knit-cni/knit/pkg/cni"
)

// FuzzParse: any config either parses into one ADD can use (IPAM type set,
// MTU not negative, a known backend) or fails with a CNI error code.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"n","type":"ptp","ipam":{"type":"host-local"}}`,
		`{"cniVersion":"0.3.1","name":"n","type":"ptp","ipMasq":true,"ipMasqBackend":"iptables","mtu":1400,"ipam":{"type":"static"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"ptp","ipam":{}}`,
		`{"cniVersion":"1.0.0","name":"n","type":"ptp","ipam":"x"}`,
		`{"cniVersion":"1.0.0","name":"n","type":"ptp","prevResult":{"interfaces":[{"name":"a"}]},"ipam":{"type":"t"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse(data)
		if err != nil {
			var ce *cni.Error
			if !errors.As(err, &ce) || ce.Code == 0 {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		if c.ipamType == "" || c.MTU < 0 {
			t.Fatalf("accepted ipam %q mtu %d", c.ipamType, c.MTU)
		}
		if b := c.IPMasqBackend; b != nil && *b != "nftables" && *b != "iptables" {
			t.Fatalf("accepted backend %q", *b)
		}
		if _, err := c.PrevResult(); err != nil {
			var ce *cni.Error
			if !errors.As(err, &ce) || ce.Code == 0 {
				t.Fatalf("prevResult error without a CNI code: %v", err)
			}
		}
	})
}
