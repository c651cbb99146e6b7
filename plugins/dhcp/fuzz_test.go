package dhcp

import (
	"errors"
	"net/rpc"
	"testing"

	"github.com/knit-cni/knit/pkg/cni"
)

func FuzzConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"macvlan","ipam":{"type":"dhcp","daemonSocketPath":"/x.sock","timeout":"3s",
		"provide":[{"option":"host-name","fromArg":"K8S_POD_NAME"},{"option":"60","value":"knit"}],
		"request":[{"option":"121"},{"skipDefault":true,"option":"subnet-mask"}]}}`), "IgnoreUnknown=1;K8S_POD_NAME=web-0")
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"n","ipam":{"type":"dhcp","timeout":2.5,"request":[{"option":"255"}]}}`), "")
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"dhcp","provide":[{"option":"dhcp-client-identifier","value":""}]}}`), "a=b=c;;=")
	f.Fuzz(func(t *testing.T, data []byte, args string) {
		c, err := parse(data)
		if err != nil {
			return
		}
		if c.IPAM == nil || c.IPAM.Timeout < 0 || c.IPAM.Timeout > Duration(maxTimeout) {
			t.Fatalf("accepted %+v", c.IPAM)
		}
		o, err := prepare(args, c.IPAM)
		if err != nil {
			var ce *cni.Error
			if !errors.As(err, &ce) || ce.Code != 7 {
				t.Fatalf("option error %v is not a config error", err)
			}
			return
		}
		for _, p := range o.provide {
			if len(p.Value.ToBytes()) > 255 || p.Code.Code() == 0 || p.Code.Code() == 255 || p.Code.Code() == 53 {
				t.Fatalf("accepted provide option %v", p)
			}
		}
		seen := map[uint8]bool{}
		for _, r := range o.request {
			if seen[r.Code()] {
				t.Fatalf("option %d requested twice", r.Code())
			}
			seen[r.Code()] = true
		}
		if c.socketPath("") == "" {
			t.Fatal("no socket path")
		}
	})
}

// FuzzWire: a CNI error survives the trip through net/rpc's strings.
func FuzzWire(f *testing.F) {
	f.Add(uint(11), "no DHCP answer on eth0: is a server there?")
	f.Add(uint(7), "ipam.provide[0]: value: x")
	f.Fuzz(func(t *testing.T, code uint, msg string) {
		code %= 1000
		in := &cni.Error{Code: code, Msg: msg}
		out := unwire("DHCP.Allocate", rpc.ServerError(wire(in).Error()))
		var ce *cni.Error
		if !errors.As(out, &ce) || ce.Code != code || ce.Msg != msg {
			t.Fatalf("round trip of %d %q gave %v", code, msg, out)
		}
	})
}
