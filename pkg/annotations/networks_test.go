package annotations

import (
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"

	cnitypes "github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

type want struct{ ns, name, ifname string }

func TestParseNetworksForms(t *testing.T) {
	cases := []struct {
		value string
		want  []want
	}{
		{"", nil},
		{"   ", nil},
		{"a", []want{{"pods", "a", ""}}},
		{"a,b", []want{{"pods", "a", ""}, {"pods", "b", ""}}},
		{" other/b@data0 , a ", []want{{"other", "b", "data0"}, {"pods", "a", ""}}},
		{"a@x,a@y,a", []want{{"pods", "a", "x"}, {"pods", "a", "y"}, {"pods", "a", ""}}},
		{`[{"name":"a"}]`, []want{{"pods", "a", ""}}},
		{`[{"name":"a","namespace":"n2","interface":"if1"},{"name":"b"}]`, []want{{"n2", "a", "if1"}, {"pods", "b", ""}}},
		{`[]`, []want{}},
	}
	for _, c := range cases {
		sels, err := ParseNetworks(NetworksKey, c.value, "pods")
		if err != nil {
			t.Errorf("%q: %v", c.value, err)
			continue
		}
		var got []want
		for _, s := range sels {
			got = append(got, want{s.Namespace, s.Name, s.InterfaceRequest})
		}
		if len(got) != len(c.want) || (len(got) > 0 && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("%q: got %v, want %v", c.value, got, c.want)
		}
	}
}

func TestParseNetworksJSONFields(t *testing.T) {
	v := `[{"name":"a","ips":["10.1.1.5/24","fd00::5"],"mac":"02:00:00:00:00:01","infiniband-guid":"00:11:22:33:44:55:66:77",
		"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"TCP"}],"bandwidth":{"ingressRate":10,"ingressBurst":5,"egressRate":1,"egressBurst":1},
		"cni-args":{"k":"v"},"default-route":["10.1.1.1"],"unknownKey":1}]`
	sels, err := ParseNetworks(NetworksKey, v, "pods")
	if err != nil {
		t.Fatal(err)
	}
	s := sels[0]
	if len(s.IPRequest) != 2 || s.MacRequest == "" || s.InfinibandGUIDRequest == "" || len(s.PortMappingsRequest) != 1 ||
		s.BandwidthRequest == nil || s.CNIArgs == nil || (*s.CNIArgs)["k"] != "v" || !s.GatewayRequest[0].Equal(net.ParseIP("10.1.1.1")) {
		t.Errorf("fields not decoded: %+v", s.NetworkSelectionElement)
	}
	if s.Field != NetworksKey+"[0]" || s.Key() != "pods/a" {
		t.Errorf("field %q key %q", s.Field, s.Key())
	}
}

func TestParseNetworksErrors(t *testing.T) {
	cases := []struct {
		value, field string
		decode       bool
	}{
		{`[{"name":`, NetworksKey, true},
		{`{"name":"a"}`, NetworksKey, true},
		{`[1]`, NetworksKey + "[0]", true},
		{`[{"name":"a","ips":"x"}]`, NetworksKey + "[0].ips", true},
		{`[{"name":"a","default-route":["nope"]}]`, NetworksKey + "[0].default-route", true},
		{`a,`, NetworksKey + "[1]", false},
		{`a/b/c`, NetworksKey + "[0]", false},
		{`/a`, NetworksKey + "[0].namespace", false},
		{`a@`, NetworksKey + "[0].interface", false},
		{`a@b@c`, NetworksKey + "[0]", false},
		{`A`, NetworksKey + "[0].name", false},
		{`-a`, NetworksKey + "[0].name", false},
		{strings.Repeat("a", 64), NetworksKey + "[0].name", false},
		{`NS/a`, NetworksKey + "[0].namespace", false},
		{`[{"namespace":"x"}]`, NetworksKey + "[0].name", false},
		{`a@0123456789abcdef`, NetworksKey + "[0].interface", false},
		{`[{"name":"a","interface":"."}]`, NetworksKey + "[0].interface", false},
		{`[{"name":"a","interface":"a b"}]`, NetworksKey + "[0].interface", false},
		{`[{"name":"a","mac":"00:11:22:33:44:55:66:77"}]`, NetworksKey + "[0].mac", false},
		{`[{"name":"a","infiniband-guid":"x"}]`, NetworksKey + "[0].infiniband-guid", false},
		{`[{"name":"a","ips":["10.1.1.300"]}]`, NetworksKey + "[0].ips[0]", false},
		{`[{"name":"a","ips":["10.1.1.1"],"ipam-claim-reference":"c"}]`, NetworksKey + "[0].ips", false},
		{`[{"name":"a","portMappings":[{"hostPort":70000,"containerPort":80}]}]`, NetworksKey + "[0].portMappings[0]", false},
		{`[{"name":"a","portMappings":[{"hostPort":1,"containerPort":80,"protocol":"icmp"}]}]`, NetworksKey + "[0].portMappings[0]", false},
		{`[{"name":"a","portMappings":[null]}]`, NetworksKey + "[0].portMappings[0]", false},
		{`[{"name":"a","bandwidth":{"ingressRate":-1}}]`, NetworksKey + "[0].bandwidth", false},
		{`[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["10.0.0.2"]}]`, NetworksKey + "[1].default-route", false},
	}
	for _, c := range cases {
		_, err := ParseNetworks(NetworksKey, c.value, "pods")
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%q: error %v, want a FieldError", c.value, err)
			continue
		}
		if fe.Field != c.field || fe.Decode != c.decode {
			t.Errorf("%q: field %q decode %v (%v), want %q decode %v", c.value, fe.Field, fe.Decode, err, c.field, c.decode)
		}
	}
}

func TestParseDefaultNetwork(t *testing.T) {
	s, err := ParseDefaultNetwork("calico", "kube-system")
	if err != nil || s.Key() != "kube-system/calico" {
		t.Errorf("got %v %v", s, err)
	}
	s, err = ParseDefaultNetwork(`[{"name":"c","namespace":"x"}]`, "kube-system")
	if err != nil || s.Key() != "x/c" {
		t.Errorf("got %v %v", s, err)
	}
	if s, err := ParseDefaultNetwork("", "kube-system"); s != nil || err != nil {
		t.Errorf("empty: %v %v", s, err)
	}
	if _, err := ParseDefaultNetwork("a,b", "kube-system"); err == nil || !strings.HasPrefix(err.Error(), DefaultNetworkKey) {
		t.Errorf("two networks: %v", err)
	}
}

func mustCIDR(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

func TestStatuses(t *testing.T) {
	// A bridge-like result: host veth, bridge, container interface.
	res := &current.Result{
		Interfaces: []*current.Interface{{Name: "cni0", Mac: "aa:00:00:00:00:01"}, {Name: "veth1", Mac: "aa:00:00:00:00:02"},
			{Name: "eth0", Mac: "aa:00:00:00:00:03", Sandbox: "/run/netns/x"}},
		IPs:    []*current.IPConfig{{Interface: current.Int(2), Address: mustCIDR("10.244.0.5/24"), Gateway: net.ParseIP("10.244.0.1")}},
		Routes: nil,
	}
	res.DNS.Nameservers = []string{"10.96.0.10"}
	st := Statuses("cbr0", "eth0", res, true, nil)
	if len(st) != 1 || st[0].Interface != "eth0" || st[0].Mac != "aa:00:00:00:00:03" || !st[0].Default ||
		!reflect.DeepEqual(st[0].IPs, []string{"10.244.0.5"}) || st[0].DNS.Nameservers[0] != "10.96.0.10" {
		t.Errorf("bridge result: %+v", st)
	}
	// Default route with an explicit gateway, and one taking the IP's.
	_, dst, _ := net.ParseCIDR("0.0.0.0/0")
	res.Routes = []*types100Route{{Dst: *dst, GW: net.ParseIP("10.244.0.254")}}
	st = Statuses("cbr0", "eth0", res, false, nil)
	if !reflect.DeepEqual(st[0].DefaultRoute, []string{"10.244.0.254"}) || st[0].Default {
		t.Errorf("default route: %+v", st[0])
	}
	res.Routes = []*types100Route{{Dst: *dst}}
	if st = Statuses("cbr0", "eth0", res, false, nil); !reflect.DeepEqual(st[0].DefaultRoute, []string{"10.244.0.1"}) {
		t.Errorf("default route without gw: %+v", st[0].DefaultRoute)
	}
	_, other, _ := net.ParseCIDR("10.0.0.0/8")
	res.Routes = []*types100Route{{Dst: *other, GW: net.ParseIP("10.244.0.1")}}
	if st = Statuses("cbr0", "eth0", res, false, nil); st[0].DefaultRoute != nil {
		t.Errorf("non-default route reported: %+v", st[0].DefaultRoute)
	}

	// No sandbox interface: one element named by the requested ifname.
	dev := &nadv1.DeviceInfo{Type: "pci", Pci: &nadv1.PciDevice{PciAddress: "0000:03:00.1"}}
	bare := &current.Result{IPs: []*current.IPConfig{{Address: mustCIDR("192.168.1.5/24")}}}
	st = Statuses("ns/n", "net1", bare, false, dev)
	if len(st) != 1 || st[0].Interface != "net1" || st[0].IPs[0] != "192.168.1.5" || st[0].DeviceInfo != dev {
		t.Errorf("bare result: %+v", st)
	}

	// Two sandbox interfaces: addresses by index; default on the one
	// with a gateway.
	two := &current.Result{Interfaces: []*current.Interface{{Name: "a", Sandbox: "x"}, {Name: "b", Sandbox: "x"}},
		IPs: []*current.IPConfig{{Interface: current.Int(0), Address: mustCIDR("10.0.0.2/24")},
			{Interface: current.Int(1), Address: mustCIDR("10.0.1.2/24"), Gateway: net.ParseIP("10.0.1.1")}}}
	st = Statuses("n", "a", two, true, nil)
	if len(st) != 2 || st[0].IPs[0] != "10.0.0.2" || st[1].IPs[0] != "10.0.1.2" || st[0].Default || !st[1].Default {
		t.Errorf("two interfaces: %+v", st)
	}
	v, err := MarshalStatus(st)
	if err != nil || !strings.Contains(v, `"dns":{}`) || strings.Contains(v, `"default":false`) {
		t.Errorf("encoding %s %v", v, err)
	}
	if v, _ := MarshalStatus(nil); v != "[]" {
		t.Errorf("empty status %q", v)
	}
}

func TestValidIfName(t *testing.T) {
	for _, ok := range []string{"eth0", "net1", "a", "0123456789abcde", "a-b_c.d"} {
		if err := ValidIfName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "0123456789abcdef", "a/b", "a:b", "a b", "a\tb"} {
		if err := ValidIfName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

type types100Route = cnitypes.Route
