package ipvlan

import (
	"testing"

	"github.com/knit-cni/knit/pkg/cni"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"ipvlan","master":"eth0","mode":"l3s","mtu":1400,"ipam":{"type":"static"}}`), false)
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"ipvlan","prevResult":{"interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/24","interface":0}]}}`), false)
	f.Add([]byte(`{"cniVersion":"0.4.0","prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"a"},{"name":"net1","sandbox":"/x"}]}}`), true)
	f.Add([]byte(`{"cniVersion":"0.3.1","mode":"l4","mtu":-1}`), false)
	f.Fuzz(func(t *testing.T, data []byte, check bool) {
		req := &cni.Request{Command: cni.CmdAdd, IfName: "net1", Netns: "/x", Config: data}
		if check {
			req.Command = cni.CmdCheck
		}
		c, p, err := parse(req)
		if err != nil {
			return
		}
		if _, ok := modeOf(c.Mode); !ok {
			t.Fatalf("accepted mode %q", c.Mode)
		}
		if p.MTU < 0 {
			t.Fatalf("accepted MTU %d", p.MTU)
		}
		if p.MAC != nil {
			t.Fatal("ipvlan took a MAC")
		}
	})
}
