package nmstate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelRoutes are the routes rollback restores, with their links by name
// because a recreated link gets a new index.
type namedRoute struct {
	route netlink.Route
	link  string
}

func (e *Engine) kernelRoutes() ([]namedRoute, error) {
	byIndex, err := e.linksByIndex()
	if err != nil {
		return nil, err
	}
	routes, err := nlsafe.RouteListFiltered(e.NL, netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	var out []namedRoute
	for _, r := range routes {
		l, ok := byIndex[r.LinkIndex]
		// Kernel-made routes (proto kernel, local table) come back with
		// their addresses; pod routes are not the node's to restore.
		if !ok || isPodVeth(l) || r.Table == unix.RT_TABLE_LOCAL || r.Protocol == unix.RTPROT_KERNEL || r.Type != unix.RTN_UNICAST {
			continue
		}
		out = append(out, namedRoute{route: r, link: l.Attrs().Name})
	}
	return out, nil
}

func routeKey(r namedRoute) string {
	return fmt.Sprintf("%d|%v|%v|%s|%d", r.route.Table, r.route.Dst, r.route.Gw, r.link, r.route.Priority)
}

// rollback restores the snapshot for everything the desired state touched:
// interfaces it created are deleted, the ones it changed get their previous
// attributes, ports, addresses back; routes, rules and the resolver file are
// restored as they were.
func (e *Engine) rollback(ctx context.Context, snap *snapshotState, desired *State) error {
	before := map[string]Interface{}
	for _, ifc := range snap.state.Interfaces {
		before[ifc.Name] = ifc
	}
	var errs []error
	for _, ifc := range desired.Interfaces {
		// Leases the change took go back first: the RELEASE goes out on
		// the interface, which may be deleted next.
		if ifc.IPv4 != nil && deref(ifc.IPv4.DHCP) && e.tookLease(snap, ifc.Name) {
			errs = append(errs, e.releaseDHCP(ctx, ifc.Name))
		}
		if _, existed := before[ifc.Name]; !existed {
			if l, err := e.NL.LinkByName(ifc.Name); err == nil {
				errs = append(errs, e.NL.LinkDel(l))
			}
		}
	}
	restore := &State{}
	for name := range touched(desired, before) {
		if b, ok := before[name]; ok {
			restore.Interfaces = append(restore.Interfaces, restoreSpec(b, snap))
		}
	}
	if err := e.apply(ctx, restore); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, e.restoreBroadcasts(snap.broadcast), e.restoreRoutes(snap.routes), e.restoreRules(snap.state.RouteRules), e.restoreResolv(snap))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return e.Verify(ctx, restore)
}

// tookLease reports whether the change took a lease on ifName: the
// client holds one now and did not before (a client that cannot say is
// assumed to).
func (e *Engine) tookLease(snap *snapshotState, ifName string) bool {
	if _, held := snap.dynamic[ifName]; held {
		return false
	}
	h, ok := e.DHCP.(leaseHolder)
	return !ok || h.Holds(ifName)
}

// touched is every interface whose state the desired change may have
// altered: those it names, their ports, and the ports' old controllers.
func touched(d *State, before map[string]Interface) map[string]bool {
	t := map[string]bool{}
	for _, ifc := range d.Interfaces {
		if ifc.State == StateIgnore {
			continue
		}
		t[ifc.Name] = true
		if ifc.Bridge != nil {
			for _, p := range deref(ifc.Bridge.Port) {
				t[p.Name] = true
			}
		}
		if ifc.LinkAggregation != nil {
			for _, p := range deref(ifc.LinkAggregation.Port) {
				t[p] = true
			}
		}
	}
	for _, b := range before { // ports that were on a touched controller
		if t[b.Controller] {
			t[b.Name] = true
		}
	}
	for name := range t { // and controllers a touched port was on
		if c := before[name].Controller; c != "" {
			t[c] = true
		}
	}
	return t
}

// restoreSpec turns a snapshot entry into a desired entry that recreates
// it exactly: attributes, full address lists and port lists, and the DHCP
// lease (kept if the change left it, acquired again if it released it).
func restoreSpec(b Interface, snap *snapshotState) Interface {
	r := b
	r.Controller = ""
	if r.Description == nil {
		empty := ""
		r.Description = &empty
	}
	r.IPv4 = staticOnly(b.IPv4)
	if _, held := snap.dynamic[b.Name]; held {
		r.IPv4 = restoreDHCP(b, snap)
	}
	r.IPv6 = staticOnly(b.IPv6)
	if r.Type == TypeEthernet || r.Type == TypeLoopback || r.Type == TypeUnknown {
		r.Type = ""
	}
	return r
}

// staticOnly keeps the address list; dhcp and autoconf flags from current
// state describe where addresses came from, not what to run.
func staticOnly(c *IPConfig) *IPConfig {
	if c == nil {
		return nil
	}
	return &IPConfig{Address: c.Address}
}

// restoreDHCP is ipv4 of an interface that had a lease of the DHCP
// client: dhcp with the routes it had, and its static addresses only.
func restoreDHCP(b Interface, snap *snapshotState) *IPConfig {
	dyn := snap.dynamic[b.Name]
	static := []Address{}
	for _, a := range deref(b.IPv4.Address) {
		if !dyn[fmt.Sprintf("%s/%d", a.IP, a.PrefixLength)] {
			static = append(static, a)
		}
	}
	routes := false
	for _, r := range snap.routes {
		routes = routes || r.link == b.Name && r.route.Protocol == unix.RTPROT_DHCP
	}
	on := true
	return &IPConfig{DHCP: &on, Address: &static, AutoRoutes: &routes}
}

func (e *Engine) restoreRoutes(want []namedRoute) error {
	have, err := e.kernelRoutes()
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, r := range want {
		wanted[routeKey(r)] = true
	}
	var errs []error
	present := map[string]bool{}
	for _, r := range have {
		present[routeKey(r)] = true
		if !wanted[routeKey(r)] {
			rt := r.route
			if err := e.NL.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("removing route %v: %w", rt.Dst, err))
			}
		}
	}
	for _, r := range want {
		if present[routeKey(r)] {
			continue
		}
		rt := r.route
		l, err := e.NL.LinkByName(r.link)
		if err != nil {
			errs = append(errs, fmt.Errorf("restoring route %v: %w", rt.Dst, err))
			continue
		}
		rt.LinkIndex = l.Attrs().Index
		if err := e.NL.RouteAdd(&rt); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("restoring route %v: %w", rt.Dst, err))
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) restoreRules(want *RouteRules) error {
	have, err := e.readRules()
	if err != nil {
		return err
	}
	key := func(r RouteRule) string {
		return fmt.Sprintf("%s|%s|%d|%d|%s|%d", r.IPFrom, r.IPTo, deref(r.Priority), deref(r.RouteTable), r.IIF, deref(r.FwMark))
	}
	wanted, present := map[string]bool{}, map[string]bool{}
	for _, r := range want.Config {
		wanted[key(r)] = true
	}
	var errs []error
	for _, r := range have.Config {
		present[key(r)] = true
		if !wanted[key(r)] {
			if err := e.NL.RuleDel(kernelRule(r)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing rule: %w", err))
			}
		}
	}
	for _, r := range want.Config {
		if !present[key(r)] {
			if err := e.NL.RuleAdd(kernelRule(r)); err != nil && !errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("restoring rule: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) restoreResolv(snap *snapshotState) error {
	if !snap.hadResolv {
		err := os.Remove(e.resolvConf())
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	cur, err := os.ReadFile(e.resolvConf())
	if err == nil && string(cur) == string(snap.resolvConf) {
		return nil
	}
	return writeFileAtomic(e.resolvConf(), snap.resolvConf)
}

// addrKey names an IPv4 address on a link: "eth0 10.0.0.1/24".
func addrKey(link string, a netlink.Addr) string { return link + " " + a.IPNet.String() }

// broadcasts records every IPv4 address's broadcast address.
func (e *Engine) broadcasts() (map[string]string, error) {
	addrs, err := nlsafe.AddrList(e.NL, nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	byIndex, err := e.linksByIndex()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, a := range addrs {
		l, ok := byIndex[a.LinkIndex]
		if !ok {
			continue
		}
		out[addrKey(l.Attrs().Name, a)] = ipString(a.Broadcast)
	}
	return out, nil
}

func ipString(ip net.IP) string {
	if ip == nil || ip.IsUnspecified() {
		return ""
	}
	return ip.String()
}

// restoreBroadcasts puts back the broadcast addresses the restore's
// re-added addresses lost: netlink fills one in when none is given, while
// the address may have had none (iproute2 adds none unless asked).
func (e *Engine) restoreBroadcasts(want map[string]string) error {
	have, err := e.broadcasts()
	if err != nil {
		return err
	}
	var errs []error
	for key, b := range have {
		w, ok := want[key]
		if !ok || w == b {
			continue
		}
		link, cidr, _ := strings.Cut(key, " ")
		l, err := e.NL.LinkByName(link)
		if err != nil {
			continue
		}
		addr, err := netlink.ParseAddr(cidr)
		if err != nil {
			continue
		}
		// Replace does not change a broadcast; delete and add does.
		if err := e.NL.AddrDel(l, addr); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s: %w", key, err))
			continue
		}
		// Set after the delete: the library rewrites the field it is given.
		addr.Broadcast = net.IPv4zero // no broadcast
		if w != "" {
			addr.Broadcast = net.ParseIP(w)
		}
		if err := e.NL.AddrAdd(l, addr); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}
