package annotations

import (
	"encoding/json"
	"testing"
)

// FuzzParseNetworks: any annotation value either fails with a FieldError
// or yields selections that satisfy every rule the parser promises.
func FuzzParseNetworks(f *testing.F) {
	for _, s := range []string{"a", "a,b", "ns/a@if1", " a , b@x ", "a@", "a/b/c", `[{"name":"a"}]`,
		`[{"name":"a","interface":"net5","ips":["10.0.0.1/24"],"mac":"02:00:00:00:00:01","default-route":["10.0.0.1"]}]`,
		`[{"name":"a","portMappings":[{"hostPort":1,"containerPort":2}],"bandwidth":{"ingressRate":1}}]`,
		`[{"name":"a","cni-args":{"x":[1,2]}}]`, `{"name":"a"}`, `[`, "\"", `[{"name":"a","ips":["1.1.1.1"],"ipam-claim-reference":"c"}]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		sels, err := ParseNetworks(NetworksKey, value, "pods")
		if err != nil {
			if _, ok := err.(*FieldError); !ok {
				t.Fatalf("error %T %v is not a FieldError", err, err)
			}
			return
		}
		gws := 0
		for _, s := range sels {
			if !ValidName(s.Name) || !ValidName(s.Namespace) {
				t.Fatalf("invalid name accepted: %q/%q", s.Namespace, s.Name)
			}
			if s.InterfaceRequest != "" && ValidIfName(s.InterfaceRequest) != nil {
				t.Fatalf("invalid interface accepted: %q", s.InterfaceRequest)
			}
			if len(s.IPRequest) > 0 && s.IPAMClaimReference != "" {
				t.Fatal("ips with ipam-claim-reference accepted")
			}
			if len(s.GatewayRequest) > 0 {
				gws++
			}
			if _, err := json.Marshal(s.NetworkSelectionElement); err != nil {
				t.Fatalf("selection does not re-encode: %v", err)
			}
		}
		if gws > 1 {
			t.Fatal("two default-routes accepted")
		}
	})
}
