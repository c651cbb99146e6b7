package dhcpclient

import (
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Route is a route a lease gives. A zero GW (0.0.0.0 in option 121) means
// the destination is on the link.
type Route struct {
	Dst net.IPNet
	GW  net.IP
}

// AddressOf is the leased address with the lease's subnet mask.
func AddressOf(ack *dhcpv4.DHCPv4) net.IPNet {
	return net.IPNet{IP: ack.YourIPAddr.To4(), Mask: ack.SubnetMask()}
}

// Gateway is the lease's first router (nil when it names none).
func Gateway(ack *dhcpv4.DHCPv4) net.IP {
	if r := ack.Router(); len(r) > 0 {
		return r[0].To4()
	}
	return nil
}

// Routes are the lease's routes: classless static routes (option 121)
// when present, which then replace the router and static routes (RFC
// 3442), else static routes (option 33) and a default route via the
// router.
func Routes(ack *dhcpv4.DHCPv4) []Route {
	var out []Route
	if cl := ack.ClasslessStaticRoute(); len(cl) > 0 {
		for _, r := range cl {
			out = append(out, Route{Dst: *r.Dest, GW: r.Router})
		}
		return out
	}
	out = staticRoutes(ack.Options.Get(dhcpv4.OptionStaticRoutingTable))
	if gw := Gateway(ack); gw != nil {
		out = append(out, Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw})
	}
	return out
}

// staticRoutes decodes option 33: pairs of classful destination and
// router.
func staticRoutes(b []byte) []Route {
	var out []Route
	for ; len(b) >= 8; b = b[8:] {
		dst := net.IP(append([]byte(nil), b[0:4]...))
		out = append(out, Route{Dst: net.IPNet{IP: dst, Mask: dst.DefaultMask()}, GW: net.IP(append([]byte(nil), b[4:8]...))})
	}
	return out
}
