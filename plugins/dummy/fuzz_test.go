package dummy

import (
	"testing"

	"github.com/knit-cni/knit/pkg/cni"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"dummy","ipam":{"type":"static","addresses":[{"address":"10.0.0.2/32"}]}}`))
	f.Add([]byte(`{"cniVersion":"0.3.0","ipam":null}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","ipam":{"type":5}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse(data)
		if err != nil {
			return
		}
		ok := false
		for _, v := range cni.SupportedVersions() {
			ok = ok || v == c.CNIVersion
		}
		if !ok {
			t.Fatalf("accepted cniVersion %q", c.CNIVersion)
		}
		_, _ = c.IPAMType() // must not panic
	})
}
