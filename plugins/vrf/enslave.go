package vrf

import (
	"errors"
	"fmt"
	"math"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// enslave puts l into vrf. Enslaving flushes the link's routes and, unless
// keep_addr_on_down is set, its IPv6 addresses: both are saved first, the
// addresses put back and the routes re-added in the VRF's table (the
// kernel recreates connected and local routes there by itself). If that
// fails the link is released again, with its routes back in main.
func enslave(h *netlink.Handle, l netlink.Link, vrf *netlink.Vrf) error {
	name := l.Attrs().Name
	if m := l.Attrs().MasterIndex; m != 0 {
		if m == vrf.Index {
			return nil
		}
		master, err := h.LinkByIndex(m)
		if err != nil {
			return fmt.Errorf("interface %s already has a master (index %d)", name, m)
		}
		return fmt.Errorf("interface %s already has a master: %s", name, master.Attrs().Name)
	}
	addrs, err := nlsafe.AddrList(h, l, netlink.FAMILY_V6)
	if err != nil {
		return fmt.Errorf("listing IPv6 addresses of %s: %w", name, err)
	}
	routes, err := movableRoutes(h, l)
	if err != nil {
		return err
	}
	if err := h.LinkSetMaster(l, vrf); err != nil {
		return fmt.Errorf("adding %s to VRF %s: %w", name, vrf.Name, err)
	}
	err = restore(h, l, addrs, routes, int(vrf.Table))
	if err != nil {
		err = errors.Join(err, h.LinkSetNoMaster(l), restore(h, l, addrs, routes, unix.RT_TABLE_MAIN))
		return fmt.Errorf("moving %s's addresses and routes into VRF %s: %w", name, vrf.Name, err)
	}
	return nil
}

// movableRoutes are the routes through l in the main table that the kernel
// does not recreate by itself: scope universe (gatewayed and other
// unicast routes), of both families.
func movableRoutes(h *netlink.Handle, l netlink.Link) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_UNIVERSE}
	rs, err := nlsafe.RouteListFiltered(h, netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_SCOPE)
	if err != nil {
		return nil, fmt.Errorf("listing routes of %s: %w", l.Attrs().Name, err)
	}
	var out []netlink.Route
	for _, r := range rs {
		if r.Type != unix.RTN_UNICAST || r.Protocol == unix.RTPROT_KERNEL {
			continue // IPv6 connected and multicast routes come back by themselves
		}
		out = append(out, r)
	}
	return out, nil
}

// restore puts back IPv6 addresses the link lost and adds routes in table.
func restore(h *netlink.Handle, l netlink.Link, addrs []netlink.Addr, routes []netlink.Route, table int) error {
	have, err := nlsafe.AddrList(h, l, netlink.FAMILY_V6)
	if err != nil {
		return fmt.Errorf("listing IPv6 addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() || containsAddr(have, a) {
			continue
		}
		re := netlink.Addr{IPNet: a.IPNet, Flags: a.Flags | unix.IFA_F_NODAD}
		if err := h.AddrAdd(l, &re); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("restoring %s: %w", a.IPNet, err)
		}
	}
	for _, r := range routes {
		r.Table = table
		if err := h.RouteAdd(&r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("route %s via %s in table %d: %w", r.Dst, r.Gw, table, err)
		}
	}
	return nil
}

func containsAddr(have []netlink.Addr, a netlink.Addr) bool {
	for _, x := range have {
		if x.Equal(a) {
			return true
		}
	}
	return false
}

// freeTable returns the lowest table id, from 1, that no VRF uses (the
// reference's choice) and that also holds no routes and is not one of the
// kernel's own, so a new VRF never shares a table with another router.
func freeTable(h *netlink.Handle) (uint32, error) {
	used := map[uint32]bool{}
	links, err := nlsafe.LinkList(h)
	if err != nil {
		return 0, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if v, ok := l.(*netlink.Vrf); ok {
			used[v.Table] = true
		}
	}
	routes, err := nlsafe.RouteListFiltered(h, netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		used[uint32(r.Table)] = true
	}
	for t := uint32(1); t < math.MaxUint32; t++ {
		if !used[t] && t != unix.RT_TABLE_DEFAULT && t != unix.RT_TABLE_MAIN && t != unix.RT_TABLE_LOCAL {
			return t, nil
		}
	}
	return 0, errors.New("no free routing table for the VRF")
}
