package dhcpclient

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ack(t testing.TB, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.ParseIP("10.88.0.60")), dhcpv4.WithNetmask(net.CIDRMask(24, 32))}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func routeStrings(rs []Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Dst.String()+" via "+r.GW.String())
	}
	return out
}

func TestRoutes(t *testing.T) {
	router := dhcpv4.WithRouter(net.ParseIP("10.88.0.1"))
	static := dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionStaticRoutingTable, []byte{172, 16, 0, 0, 10, 88, 0, 2}))
	_, dst, _ := net.ParseCIDR("192.168.5.0/24")
	_, dflt, _ := net.ParseCIDR("0.0.0.0/0")
	classless := dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
		&dhcpv4.Route{Dest: dst, Router: net.IPv4zero.To4()}, &dhcpv4.Route{Dest: dflt, Router: net.ParseIP("10.88.0.3")}))
	for name, c := range map[string]struct {
		mods []dhcpv4.Modifier
		want []string
	}{
		"none":                   {nil, nil},
		"router":                 {[]dhcpv4.Modifier{router}, []string{"0.0.0.0/0 via 10.88.0.1"}},
		"static then router":     {[]dhcpv4.Modifier{router, static}, []string{"172.16.0.0/16 via 10.88.0.2", "0.0.0.0/0 via 10.88.0.1"}},
		"classless wins (3442)":  {[]dhcpv4.Modifier{router, static, classless}, []string{"192.168.5.0/24 via 0.0.0.0", "0.0.0.0/0 via 10.88.0.3"}},
		"truncated static table": {[]dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionStaticRoutingTable, []byte{1, 2, 3}))}, nil},
	} {
		got := routeStrings(Routes(ack(t, c.mods...)))
		if len(got) != len(c.want) {
			t.Errorf("%s: routes %v, want %v", name, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: routes %v, want %v", name, got, c.want)
			}
		}
	}
	if a := AddressOf(ack(t)); a.String() != "10.88.0.60/24" {
		t.Errorf("address %s", a.String())
	}
}

// FuzzRoutes: whatever a server sends, reading the lease's routes and
// address does not panic, and every route has a destination.
func FuzzRoutes(f *testing.F) {
	f.Add(ack(f, dhcpv4.WithRouter(net.ParseIP("10.88.0.1"))).ToBytes())
	f.Add(ack(f, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionStaticRoutingTable, []byte{172, 16, 0, 0, 10, 88, 0, 2, 9}))).ToBytes())
	f.Add(ack(f, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClasslessStaticRoute, []byte{24, 192, 168, 5, 0, 0, 0, 0}))).ToBytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		_ = AddressOf(m)
		_ = Gateway(m)
		for _, r := range Routes(m) {
			if r.Dst.IP == nil || r.Dst.Mask == nil {
				t.Fatalf("route without destination: %+v", r)
			}
		}
	})
}
