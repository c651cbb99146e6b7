package ifattach

import (
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func ipc(s string, idx *int) *current.IPConfig {
	ip, n, _ := net.ParseCIDR(s)
	n.IP = ip
	return &current.IPConfig{Address: *n, Interface: idx}
}

func route(s string) *types.Route {
	_, n, _ := net.ParseCIDR(s)
	return &types.Route{Dst: *n}
}

func TestMergeAppendsToPrev(t *testing.T) {
	prev := &current.Result{CNIVersion: "0.4.0",
		Interfaces: []*current.Interface{{Name: "eth0"}},
		IPs:        []*current.IPConfig{ipc("10.0.0.2/24", current.Int(0))},
		Routes:     []*types.Route{route("0.0.0.0/0")},
		DNS:        types.DNS{Nameservers: []string{"10.0.0.53"}}}
	addrs := &current.Result{IPs: []*current.IPConfig{ipc("10.1.0.2/24", nil)},
		Routes: []*types.Route{route("10.9.0.0/16"), route("0.0.0.0/0")}}
	res, own := Merge(prev, &current.Interface{Name: "net1"}, addrs, types.DNS{})
	if len(res.Interfaces) != 2 || res.Interfaces[1].Name != "net1" {
		t.Fatalf("interfaces %+v", res.Interfaces)
	}
	if len(res.IPs) != 2 || *res.IPs[0].Interface != 0 || *res.IPs[1].Interface != 1 {
		t.Fatalf("ips %+v", res.IPs)
	}
	if len(res.Routes) != 2 {
		t.Errorf("routes %v: the duplicate default route should appear once", res.Routes)
	}
	if len(own.IPs) != 1 || len(own.Routes) != 2 || own.IPs[0].Address.String() != "10.1.0.2/24" {
		t.Errorf("own %+v", own)
	}
	if res.DNS.Nameservers[0] != "10.0.0.53" || res.CNIVersion != current.ImplementedSpecVersion {
		t.Errorf("dns %v version %s", res.DNS, res.CNIVersion)
	}
	if len(prev.Interfaces) != 1 || *prev.IPs[0].Interface != 0 {
		t.Error("Merge modified prevResult")
	}
}

// Chained use: prevResult's addresses move onto the new link.
func TestMergeChainedMovesAddresses(t *testing.T) {
	prev := &current.Result{Interfaces: []*current.Interface{{Name: "eth0"}},
		IPs: []*current.IPConfig{ipc("10.0.0.2/24", current.Int(0))}}
	chained := &current.Result{IPs: []*current.IPConfig{ipc("10.0.0.2/24", current.Int(0))}}
	res, own := Merge(prev, &current.Interface{Name: "net1"}, chained, types.DNS{})
	if len(res.IPs) != 1 || *res.IPs[0].Interface != 1 || len(own.IPs) != 1 {
		t.Fatalf("ips %+v own %+v", res.IPs, own.IPs)
	}
}

func TestMergeDNSPrecedence(t *testing.T) {
	addrs := &current.Result{DNS: types.DNS{Nameservers: []string{"ipam"}}}
	if res, _ := Merge(nil, &current.Interface{}, addrs, types.DNS{}); res.DNS.Nameservers[0] != "ipam" {
		t.Errorf("IPAM DNS lost: %v", res.DNS)
	}
	if res, _ := Merge(nil, &current.Interface{}, addrs, types.DNS{Nameservers: []string{"conf"}}); res.DNS.Nameservers[0] != "conf" {
		t.Errorf("config DNS did not win: %v", res.DNS)
	}
	if res, _ := Merge(nil, &current.Interface{}, nil, types.DNS{}); !res.DNS.IsEmpty() || len(res.Interfaces) != 1 {
		t.Errorf("L2-only result %+v", res)
	}
}

func TestResolveMACPrecedence(t *testing.T) {
	k := MACKeys{MAC: "02:00:00:00:00:01"}
	for _, c := range []struct {
		args, want string
	}{{"", "02:00:00:00:00:01"}, {"MAC=02:00:00:00:00:02", "02:00:00:00:00:02"}} {
		mac, err := k.ResolveMAC(c.args)
		if err != nil || mac.String() != c.want {
			t.Errorf("args %q: %v %v, want %s", c.args, mac, err, c.want)
		}
	}
	k.RuntimeConfig.MAC = "03:00:00:00:00:01"
	if _, err := k.ResolveMAC(""); err == nil {
		t.Error("multicast MAC accepted")
	}
	if _, err := (&MACKeys{}).ResolveMAC("NOPE=1"); err == nil {
		t.Error("unknown CNI_ARGS key accepted without IgnoreUnknown")
	}
}

func FuzzResolveMAC(f *testing.F) {
	f.Add("02:00:00:00:00:01", "", "", "MAC=02:00:00:00:00:02")
	f.Add("", "zz", "02:00:00:00:00:03", "IgnoreUnknown=1;X=1")
	f.Add("00:11:22:33:44:55:66:77", "", "", "")
	f.Fuzz(func(t *testing.T, mac, rc, args, env string) {
		k := MACKeys{MAC: mac}
		k.RuntimeConfig.MAC = rc
		if args != "" {
			k.Args = &struct {
				CNI struct {
					MAC string `json:"mac,omitempty"`
				} `json:"cni"`
			}{}
			k.Args.CNI.MAC = args
		}
		hw, err := k.ResolveMAC(env)
		if err != nil {
			return
		}
		if hw != nil && (len(hw) != 6 || hw[0]&1 != 0) {
			t.Fatalf("accepted %v", hw)
		}
		if hw == nil && (mac != "" || rc != "" || args != "") {
			t.Fatal("a set MAC was dropped")
		}
	})
}
