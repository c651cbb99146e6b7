// Package ifattach is the ADD/DEL/CHECK flow shared by the plugins that put
// one new link into a container (macvlan, ipvlan, vlan, host-device, dummy,
// tap): create the link, run IPAM, configure addresses and routes, build the
// result on top of prevResult, and undo every step when a later one fails.
// How the link comes to exist is the plugin's business (Setup.Create).
package ifattach

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/sysctl"
)

// IPAMMode says what a plugin does without an ipam section.
type IPAMMode int

const (
	// IPAMOptional: no ipam section gives an L2-only interface, set up
	// without addresses (macvlan, host-device, tap).
	IPAMOptional IPAMMode = iota
	// IPAMRequired: no ipam section is a config error (vlan, dummy, ipvlan
	// unless PrevIPs supplies addresses).
	IPAMRequired
)

// Setup is one ADD of a plugin that creates a container link.
type Setup struct {
	Req  *cni.Request
	Conf *cni.NetConf
	// Cont is the container namespace, already open.
	Cont *netns.Target
	// Create makes the link named Req.IfName inside Cont. Run has checked
	// that the name is free.
	Create func(ctx context.Context) (netlink.Link, error)
	// Remove undoes Create when a later step fails; nil deletes the link.
	Remove func(ctx context.Context) error
	IPAM   IPAMMode
	// PrevIPs: without an ipam section, the addresses (and routes) of
	// prevResult move onto the new link instead (chained ipvlan).
	PrevIPs bool
	// Notify turns on arp_notify/ndisc_notify so that neighbours learn the
	// new link's MAC at once (macvlan, ipvlan, tap: their MAC is new on the
	// wire).
	Notify bool
}

// Validate checks the parts of the config Run depends on, before anything
// changes: plugins call it with their own validation, ahead of Run.
func (s *Setup) Validate() error {
	_, _, err := s.addressSource()
	return err
}

// addressSource returns the IPAM type to run ("" for none) and, for chained
// use, the prevResult whose addresses the link takes over.
func (s *Setup) addressSource() (string, *current.Result, error) {
	ipamType, err := s.Conf.IPAMType()
	if err != nil {
		return "", nil, err
	}
	prev, err := s.Conf.PrevResult()
	if err != nil {
		return "", nil, err
	}
	if ipamType != "" {
		return ipamType, nil, nil
	}
	if s.PrevIPs && prev != nil && len(prev.IPs) > 0 {
		return "", prev, nil
	}
	if s.IPAM == IPAMRequired {
		return "", nil, cni.ConfigError("ipam", "an IPAM configuration with a type is required")
	}
	return "", nil, nil
}

// Run creates the link, gives it addresses and returns the result: the
// config's prevResult (if any) with the new interface, its addresses and
// routes appended. On error everything it did is undone.
func (s *Setup) Run(ctx context.Context) (res *current.Result, err error) {
	ipamType, chained, err := s.addressSource()
	if err != nil {
		return nil, err
	}
	prev, err := s.Conf.PrevResult()
	if err != nil {
		return nil, err
	}
	ifName := s.Req.IfName
	if _, lerr := s.Cont.NL.LinkByName(ifName); lerr == nil {
		return nil, link.ErrExists(ifName)
	}
	l, err := s.Create(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.remove(ctx))
		}
	}()
	addrs, err := s.addresses(ctx, ipamType, chained)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && ipamType != "" {
			err = errors.Join(err, ipam.Del(ctx, s.Req, ipamType))
		}
	}()
	res, own := Merge(prev, s.iface(l), addrs, s.Conf.DNS)
	if err := s.configure(l, own); err != nil {
		return nil, err
	}
	return res, nil
}

// addresses returns what the link is to carry: an IPAM allocation, the
// chained prevResult's configuration, or nothing (L2 only).
func (s *Setup) addresses(ctx context.Context, ipamType string, chained *current.Result) (*current.Result, error) {
	switch {
	case ipamType != "":
		return ipam.Add(ctx, s.Req, ipamType)
	case chained != nil:
		return &current.Result{IPs: chained.IPs, Routes: chained.Routes}, nil
	}
	return nil, nil
}

func (s *Setup) iface(l netlink.Link) *current.Interface {
	return &current.Interface{Name: s.Req.IfName, Mac: l.Attrs().HardwareAddr.String(), Sandbox: s.Req.Netns}
}

func (s *Setup) remove(ctx context.Context) error {
	if s.Remove != nil {
		return s.Remove(ctx)
	}
	return link.DelByName(s.Cont.NL, s.Req.IfName)
}

// configure applies own (a result holding only the new link's addresses and
// routes) to the link l that Create made, and sets it up.
func (s *Setup) configure(l netlink.Link, own *current.Result) error {
	ifName := s.Req.IfName
	if len(own.IPs) == 0 {
		if err := s.Cont.NL.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting %s up: %w", ifName, err)
		}
		return nil
	}
	if s.Notify {
		// Best effort, as the reference: IPv6 may be disabled.
		_ = s.Cont.Do(func() error {
			_ = sysctl.Set("net/ipv4/conf/"+ifName+"/arp_notify", "1")
			_ = sysctl.Set("net/ipv6/conf/"+ifName+"/ndisc_notify", "1")
			return nil
		})
	}
	return ipam.ConfigureLink(s.Cont.NL, l, own, false)
}

// Merge returns the result of a plugin that added iface with the addresses
// and routes of addrs (may be nil): prev with them appended (a new result
// when prev is nil), each address pointing at iface. own is the same
// interface list with only the new addresses and routes, for
// ipam.ConfigureLink. The config's dns wins over the IPAM plugin's.
func Merge(prev *current.Result, iface *current.Interface, addrs *current.Result, dns types.DNS) (res, own *current.Result) {
	res = &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if prev != nil {
		cp := *prev
		res = &cp
		res.CNIVersion = current.ImplementedSpecVersion
		res.Interfaces = append([]*current.Interface(nil), prev.Interfaces...)
		res.IPs = nil
		for _, ip := range prev.IPs {
			if addrs == nil || !contains(addrs.IPs, ip) {
				res.IPs = append(res.IPs, ip)
			}
		}
		res.Routes = append([]*types.Route(nil), prev.Routes...)
	}
	idx := len(res.Interfaces)
	res.Interfaces = append(res.Interfaces, iface)
	own = &current.Result{Interfaces: res.Interfaces}
	if addrs != nil {
		for _, ip := range addrs.IPs {
			c := *ip
			c.Interface = current.Int(idx)
			res.IPs = append(res.IPs, &c)
			own.IPs = append(own.IPs, &c)
		}
		for _, r := range addrs.Routes {
			if !containsRoute(res.Routes, r) {
				res.Routes = append(res.Routes, r)
			}
		}
		own.Routes = addrs.Routes
		if dns.IsEmpty() {
			dns = addrs.DNS
		}
	}
	if !dns.IsEmpty() {
		res.DNS = dns
	}
	return res, own
}

// contains reports whether ips has ip's address; chained ipvlan moves the
// previous plugin's addresses onto its own link rather than repeating them.
func contains(ips []*current.IPConfig, ip *current.IPConfig) bool {
	for _, x := range ips {
		if x == ip || x.Address.String() == ip.Address.String() {
			return true
		}
	}
	return false
}

func containsRoute(rs []*types.Route, r *types.Route) bool {
	for _, x := range rs {
		if x == r || x.String() == r.String() {
			return true
		}
	}
	return false
}
