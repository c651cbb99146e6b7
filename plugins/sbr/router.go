package sbr

import (
	"errors"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// router sets up one interface's source routing and remembers what it did
// so a failed ADD can be undone.
type router struct {
	h     *netlink.Handle
	link  netlink.Link
	rules []*netlink.Rule
	added []netlink.Route // routes put into the table
	moved []netlink.Route // routes taken out of the main table
}

// setup adds a rule per address to the table (cfgTable or the first free
// one from 100); with a chosen table it also adds the default routes via
// the gateways and moves the interface's main-table routes there.
func (r *router) setup(ips []*current.IPConfig, cfgTable *int) error {
	table := 0
	if cfgTable != nil {
		table = *cfgTable
	} else {
		var err error
		if table, err = freeTable(r.h); err != nil {
			return err
		}
	}
	for _, ipc := range ips {
		rule := netlink.NewRule()
		rule.Table = table
		rule.Family = family(ipc.Address.IP)
		rule.Src = &net.IPNet{IP: ipc.Address.IP, Mask: hostMask(ipc.Address.IP)}
		if err := r.h.RuleAdd(rule); err != nil {
			return fmt.Errorf("adding rule from %s to table %d: %w", ipc.Address.IP, table, err)
		}
		r.rules = append(r.rules, rule)
	}
	if cfgTable != nil {
		return nil // the routes are the previous plugin's to place
	}
	if err := r.defaults(ips, table); err != nil {
		return err
	}
	return r.move(table)
}

// defaults adds a default route via each address's gateway to the table,
// since the main plugin may not have added one.
func (r *router) defaults(ips []*current.IPConfig, table int) error {
	for _, ipc := range ips {
		if ipc.Gateway == nil {
			continue
		}
		dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if ipc.Gateway.To4() == nil {
			dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		rt := netlink.Route{Dst: dst, Gw: ipc.Gateway, Table: table, LinkIndex: r.link.Attrs().Index}
		if err := r.h.RouteReplace(&rt); err != nil {
			return fmt.Errorf("adding default route via %s to table %d: %w", ipc.Gateway, table, err)
		}
		r.added = append(r.added, rt)
	}
	return nil
}

// move copies the interface's main-table routes into the table, then
// deletes them from main (all copies first, so routes that depend on each
// other, like a gateway's subnet route, go in together).
func (r *router) move(table int) error {
	filter := &netlink.Route{LinkIndex: r.link.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	routes, err := nlsafe.RouteListFiltered(r.h, netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing routes of %s: %w", r.link.Attrs().Name, err)
	}
	for _, rt := range routes {
		c := rt
		c.Table = table
		c.Flags = 0 // flags of kernel-made routes are refused on add
		if err := r.h.RouteReplace(&c); err != nil {
			return fmt.Errorf("copying route %s to table %d: %w", rt.Dst, table, err)
		}
		r.added = append(r.added, c)
	}
	for _, rt := range routes {
		if err := r.h.RouteDel(&rt); err != nil && !gone(err) {
			return fmt.Errorf("deleting route %s from main: %w", rt.Dst, err)
		}
		r.moved = append(r.moved, rt)
	}
	return nil
}

// undo reverses setup: routes back to main, table routes and rules gone.
func (r *router) undo() error {
	var errs []error
	for _, rt := range r.moved {
		rt.Flags = 0
		if err := r.h.RouteReplace(&rt); err != nil {
			errs = append(errs, fmt.Errorf("restoring route %s: %w", rt.Dst, err))
		}
	}
	for i := len(r.added) - 1; i >= 0; i-- {
		if err := r.h.RouteDel(&r.added[i]); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting route %s: %w", r.added[i].Dst, err))
		}
	}
	for _, rule := range r.rules {
		if err := r.h.RuleDel(rule); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting rule from %s: %w", rule.Src, err))
		}
	}
	return errors.Join(errs...)
}

// gone reports errors that mean the object is already absent.
func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}

// freeTable returns the first table from 100 that no rule points at and no
// route is in.
func freeTable(h *netlink.Handle) (int, error) {
	rules, err := nlsafe.RuleList(h, netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("listing rules: %w", err)
	}
	routes, err := nlsafe.RouteListFiltered(h, netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, fmt.Errorf("listing routes: %w", err)
	}
	used := map[int]bool{}
	for _, r := range rules {
		used[r.Table] = true
	}
	for _, r := range routes {
		used[r.Table] = true
	}
	t := firstTable
	for used[t] {
		t++
	}
	return t, nil
}

// teardown deletes the source rules of addrs and, in the tables they
// pointed at (tables sbr chose, not a configured one), the routes through
// the interface.
func teardown(h *netlink.Handle, ifName string, addrs []net.IP, cfgTable *int) error {
	rules, err := nlsafe.RuleList(h, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing rules: %w", err)
	}
	var errs []error
	tables := map[int]bool{}
	for _, rule := range rules {
		for _, ip := range addrs {
			if !isSrcRule(rule, ip) || (cfgTable != nil && rule.Table != *cfgTable) {
				continue
			}
			if err := h.RuleDel(&rule); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("deleting rule from %s: %w", ip, err))
			}
			tables[rule.Table] = true
			break
		}
	}
	link, err := h.LinkByName(ifName)
	if err != nil || cfgTable != nil {
		return errors.Join(errs...) // the link took its routes with it
	}
	for table := range tables {
		if table < firstTable || table >= unix.RT_TABLE_COMPAT && table <= unix.RT_TABLE_LOCAL {
			continue // not a table sbr picks: main, local or a user's
		}
		filter := &netlink.Route{LinkIndex: link.Attrs().Index, Table: table}
		routes, err := nlsafe.RouteListFiltered(h, netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rt := range routes {
			if err := h.RouteDel(&rt); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("deleting route %s from table %d: %w", rt.Dst, table, err))
			}
		}
	}
	return errors.Join(errs...)
}

// lockNetns serialises sbr calls on one namespace: two interfaces set up
// at once must not pick the same free table.
func lockNetns(ns *netns.NS) (func(), error) {
	fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s to lock it: %w", ns.Path(), err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("locking %s: %w", ns.Path(), err)
	}
	return func() { unix.Close(fd) }, nil
}
