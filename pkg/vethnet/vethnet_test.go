package vethnet

import (
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestMerge(t *testing.T) {
	res := &current.Result{
		Interfaces: []*current.Interface{{Name: "br"}, {Name: "veth"}, {Name: "eth0"}},
		IPs:        []*current.IPConfig{{Address: net.IPNet{IP: net.IPv4(10, 0, 0, 2), Mask: net.CIDRMask(24, 32)}, Interface: current.Int(2)}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}},
	}
	if got := Merge(nil, res); got != res {
		t.Fatal("Merge without prevResult must return the result")
	}
	prev := &current.Result{CNIVersion: "1.0.0", Interfaces: []*current.Interface{{Name: "lo"}},
		IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}, Interface: current.Int(0)}},
		DNS: types.DNS{Nameservers: []string{"1.1.1.1"}}}
	got := Merge(prev, res)
	if len(got.Interfaces) != 4 || got.Interfaces[3].Name != "eth0" || len(got.IPs) != 2 || *got.IPs[1].Interface != 3 ||
		*got.IPs[0].Interface != 0 || len(got.Routes) != 1 || got.DNS.Nameservers[0] != "1.1.1.1" {
		t.Fatalf("merged %+v", got)
	}
	if len(prev.Interfaces) != 1 || len(prev.IPs) != 1 {
		t.Fatal("Merge modified prevResult")
	}
	res.DNS = types.DNS{Domain: "example"}
	if got := Merge(prev, res); got.DNS.Domain != "example" {
		t.Fatal("the plugin's DNS must replace prevResult's")
	}
}
