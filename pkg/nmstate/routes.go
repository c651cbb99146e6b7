package nmstate

import (
	"errors"
	"fmt"
	"net"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// applyRoutes removes the routes matching each state: absent entry (a
// wildcard over the fields it gives) and adds the others.
func (e *Engine) applyRoutes(r *Routes) error {
	if r == nil {
		return nil
	}
	for _, want := range r.Config {
		if want.State == StateAbsent {
			if err := e.removeMatchingRoutes(want); err != nil {
				return err
			}
		}
	}
	for _, want := range r.Config {
		if want.State == StateAbsent {
			continue
		}
		rt, err := e.kernelRoute(want)
		if err != nil {
			return err
		}
		if err := e.NL.RouteReplace(rt); err != nil {
			return fmt.Errorf("route %s: %w", want.Destination, err)
		}
	}
	return nil
}

func (e *Engine) kernelRoute(r Route) (*netlink.Route, error) {
	_, dst, err := net.ParseCIDR(r.Destination)
	if err != nil {
		return nil, fmt.Errorf("route destination: %w", err)
	}
	rt := &netlink.Route{Dst: dst, Protocol: unix.RTPROT_STATIC, Table: unix.RT_TABLE_MAIN}
	if r.NextHopInterface != "" {
		l, err := e.NL.LinkByName(r.NextHopInterface)
		if err != nil {
			return nil, fmt.Errorf("route %s: next-hop-interface %s: %w", r.Destination, r.NextHopInterface, err)
		}
		rt.LinkIndex = l.Attrs().Index
	}
	rt.Gw = net.ParseIP(r.NextHopAddress)
	if rt.Gw == nil {
		rt.Scope = netlink.SCOPE_LINK
	}
	if r.Metric != nil {
		rt.Priority = *r.Metric
	}
	if r.TableID != nil && *r.TableID != 0 {
		rt.Table = *r.TableID
	}
	return rt, nil
}

func (e *Engine) removeMatchingRoutes(want Route) error {
	byIndex, err := e.linksByIndex()
	if err != nil {
		return err
	}
	cur, err := e.readRoutes(byIndex)
	if err != nil {
		return err
	}
	for _, have := range cur.Running {
		if !routeMatches(want, have) {
			continue
		}
		rt, err := e.kernelRoute(have)
		if err != nil {
			return err
		}
		rt.Protocol = 0 // match any protocol on delete
		if err := e.NL.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("removing route %s: %w", have.Destination, err)
		}
	}
	return nil
}

// routeMatches: every field the wildcard gives must equal the route's.
func routeMatches(want, have Route) bool {
	if want.Destination != "" && !sameCIDR(want.Destination, have.Destination) {
		return false
	}
	if want.NextHopInterface != "" && want.NextHopInterface != have.NextHopInterface {
		return false
	}
	if want.NextHopAddress != "" && !net.ParseIP(want.NextHopAddress).Equal(net.ParseIP(have.NextHopAddress)) {
		return false
	}
	if want.Metric != nil && (have.Metric == nil || *want.Metric != *have.Metric) {
		return false
	}
	if want.TableID != nil && *want.TableID != 0 && (have.TableID == nil || *want.TableID != *have.TableID) {
		return false
	}
	return true
}

func sameCIDR(a, b string) bool {
	_, x, err1 := net.ParseCIDR(a)
	_, y, err2 := net.ParseCIDR(b)
	return err1 == nil && err2 == nil && x.String() == y.String()
}

func (e *Engine) linksByIndex() (map[int]netlink.Link, error) {
	links, err := nlsafe.LinkList(e.NL)
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	m := make(map[int]netlink.Link, len(links))
	for _, l := range links {
		m[l.Attrs().Index] = l
	}
	return m, nil
}

// applyRules adds rules and removes those matching state: absent entries.
func (e *Engine) applyRules(r *RouteRules) error {
	if r == nil {
		return nil
	}
	for _, want := range r.Config {
		rule := kernelRule(want)
		if want.State == StateAbsent {
			if err := e.NL.RuleDel(rule); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("removing rule: %w", err)
			}
			continue
		}
		if err := e.NL.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding rule: %w", err)
		}
	}
	return nil
}

func kernelRule(r RouteRule) *netlink.Rule {
	rule := netlink.NewRule()
	rule.Src = parseNet(r.IPFrom)
	rule.Dst = parseNet(r.IPTo)
	if rule.Src != nil && rule.Src.IP.To4() == nil || rule.Dst != nil && rule.Dst.IP.To4() == nil {
		rule.Family = netlink.FAMILY_V6
	} else {
		rule.Family = netlink.FAMILY_V4
	}
	if r.Priority != nil {
		rule.Priority = *r.Priority
	}
	if r.RouteTable != nil {
		rule.Table = *r.RouteTable
	} else {
		rule.Table = unix.RT_TABLE_MAIN
	}
	rule.IifName = r.IIF
	if r.FwMark != nil {
		rule.Mark = uint32(*r.FwMark)
	}
	if r.FwMask != nil {
		m := uint32(*r.FwMask)
		rule.Mask = &m
	}
	return rule
}

// parseNet accepts a CIDR or a bare IP (a host prefix).
func parseNet(s string) *net.IPNet {
	if s == "" {
		return nil
	}
	if _, n, err := net.ParseCIDR(s); err == nil {
		return n
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil
	}
	if ip.To4() != nil {
		return &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}
