// Package verify compares a CNI result with the kernel for CHECK: the
// addresses on an interface and the routes the result lists, as the
// reference plugins' CHECK does.
package verify

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addrs checks that every address of ips that belongs to link (by
// interface index into ifs, or without an index) is on it, and that a route
// to its subnet exists.
func Addrs(h *netlink.Handle, link netlink.Link, ifs []*current.Interface, ips []*current.IPConfig) error {
	name := link.Attrs().Name
	have, err := nlsafe.AddrList(h, link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	for _, ipc := range ips {
		if ipc.Interface != nil && (*ipc.Interface < 0 || *ipc.Interface >= len(ifs) || ifs[*ipc.Interface].Name != name) {
			continue
		}
		if !hasAddr(have, ipc.Address) {
			return fmt.Errorf("address %s not found on %s", ipc.Address.String(), name)
		}
		subnet := net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
		routes, err := nlsafe.RouteListFiltered(h, familyOf(ipc.Address.IP), anyTable(&subnet), netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing routes to %s: %w", subnet.String(), err)
		}
		if len(routes) == 0 {
			return fmt.Errorf("no route to %s for address %s", subnet.String(), ipc.Address.String())
		}
	}
	return nil
}

// anyTable filters routes to dst in every table: a later plugin in the
// chain may have moved them out of main (sbr does), and CHECK must
// tolerate what later plugins did.
func anyTable(dst *net.IPNet) *netlink.Route {
	return &netlink.Route{Dst: dst, Table: unix.RT_TABLE_UNSPEC}
}

func hasAddr(have []netlink.Addr, want net.IPNet) bool {
	for _, a := range have {
		if a.IPNet != nil && a.IP.Equal(want.IP) && a.Mask.String() == want.Mask.String() {
			return true
		}
	}
	return false
}

// Routes checks that each route of the result exists (same destination and,
// when given, the same gateway) in the namespace behind h.
func Routes(h *netlink.Handle, routes []*types.Route) error {
	for _, r := range routes {
		dst := r.Dst
		found, err := nlsafe.RouteListFiltered(h, familyOf(dst.IP), anyTable(&dst), netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing routes to %s: %w", dst.String(), err)
		}
		if !hasRoute(found, r) {
			return fmt.Errorf("route to %s via %v not found", dst.String(), r.GW)
		}
	}
	return nil
}

func hasRoute(found []netlink.Route, r *types.Route) bool {
	for _, f := range found {
		if r.GW == nil || f.Gw.Equal(r.GW) {
			return true
		}
		for _, nh := range f.MultiPath {
			if nh.Gw.Equal(r.GW) {
				return true
			}
		}
	}
	return false
}

func familyOf(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
