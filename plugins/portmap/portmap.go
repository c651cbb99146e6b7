// Package portmap is the CNI portmap plugin: a chained plugin that forwards
// host ports to the container addresses of prevResult (the portMappings
// capability), with nftables (default) or iptables.
//
// Unlike the reference it does no work at all for a pod without mappings,
// only ever translates traffic addressed to the host itself, keeps each
// attachment's rules apart so that DEL costs the same with 10 or 10,000
// other mappings (cni#605), and leaves nothing behind after a failed ADD.
package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/nftown"
	"github.com/knit-cni/knit/pkg/sysctl"
)

// Plugin implements cni.Plugin and cni.GarbageCollector.
type Plugin struct {
	// HostNS is the path of the network namespace whose NAT rules the
	// plugin programs. Empty means the calling process's own — the
	// host's, when a runtime execs the plugin. knitd and tests set it.
	HostNS string
	// Conns, when set, keeps nftables connections open across calls; it
	// must belong to HostNS. Long-running callers (knitd) set it.
	Conns *hostns.NFTPool
}

// contIPs are the container's addresses that mappings forward to.
type contIPs struct{ v4, v6 *net.IPNet }

type backend interface {
	add(s *settings, owner string, ips contIPs) error
	del(owner string) error
	check(s *settings, owner string, ips contIPs) error
	gc(network string, valid map[string]bool) error
}

// open opens the host namespace and the backend; done releases them,
// told whether the operation succeeded.
func (p Plugin) open(s *settings) (*hostns.Host, backend, func(ok bool), error) {
	host, err := hostns.Open(p.HostNS)
	if err != nil {
		return nil, nil, nil, err
	}
	host.Pool = p.Conns
	if s.backend == BackendIptables {
		return host, iptBackend{host: host}, func(bool) { host.Close() }, nil
	}
	b, err := newNFT(host)
	if err != nil {
		host.Close()
		return nil, nil, nil, err
	}
	return host, b, func(ok bool) { b.close(ok); host.Close() }, nil
}

// Add forwards the mapped ports and passes prevResult through.
func (p Plugin) Add(ctx context.Context, req *cni.Request) (_ types.Result, err error) {
	s, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	prev, err := s.PrevResult()
	if err != nil {
		return nil, err
	}
	if prev == nil {
		return nil, cni.ConfigError("prevResult", "portmap must be called as a chained plugin")
	}
	ips := containerIPs(prev, req.IfName)
	if !hasWork(s, ips) {
		return prev, nil // no mappings: no table, no round trip
	}
	host, be, done, err := p.open(s)
	if err != nil {
		return nil, err
	}
	defer func() { done(err == nil) }()
	owner := nftown.Owner(s.Name, req.ContainerID, req.IfName)
	if err := be.add(s, owner, ips); err != nil {
		return nil, fmt.Errorf("portmap: %w", err)
	}
	if err := enableLocalnet(host, s, ips); err != nil {
		return nil, errors.Join(fmt.Errorf("portmap: %w", err), be.del(owner))
	}
	// Stale conntrack entries would keep sending a mapped UDP port's
	// traffic where it went before; failures only delay convergence.
	flushUDPConntrack(host, s, ips)
	return prev, nil
}

// Del removes this attachment's rules. Without mappings there is nothing
// to do, as in the reference; GC collects what a DEL without runtimeConfig
// could not.
func (p Plugin) Del(ctx context.Context, req *cni.Request) (err error) {
	s, err := parse(req.Config)
	if err != nil {
		return err
	}
	if len(s.maps) == 0 {
		return nil
	}
	_, be, done, err := p.open(s)
	if err != nil {
		return err
	}
	defer func() { done(err == nil) }()
	return be.del(nftown.Owner(s.Name, req.ContainerID, req.IfName))
}

// Check verifies the rules ADD installed for prevResult.
func (p Plugin) Check(ctx context.Context, req *cni.Request) (err error) {
	s, err := parse(req.Config)
	if err != nil {
		return err
	}
	prev, err := s.PrevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return cni.ConfigError("prevResult", "CHECK needs prevResult")
	}
	ips := containerIPs(prev, req.IfName)
	if !hasWork(s, ips) {
		return nil
	}
	_, be, done, err := p.open(s)
	if err != nil {
		return err
	}
	defer func() { done(err == nil) }()
	return be.check(s, nftown.Owner(s.Name, req.ContainerID, req.IfName), ips)
}

// GC removes the rules of this network's attachments that are not valid.
func (p Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) (err error) {
	s, err := parse(req.Config)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, a := range valid {
		keep[nftown.Owner(s.Name, a.ContainerID, a.IfName)] = true
	}
	_, be, done, err := p.open(s)
	if err != nil {
		return err
	}
	defer func() { done(err == nil) }()
	return be.gc(s.Name, keep)
}

// containerIPs picks the first IPv4 and IPv6 address of the container
// interface ifName from prevResult, skipping host-side interfaces, as the
// reference.
func containerIPs(res *current.Result, ifName string) contIPs {
	var ips contIPs
	for _, ipc := range res.IPs {
		if i := ipc.Interface; i != nil && *i >= 0 && *i < len(res.Interfaces) {
			ifc := res.Interfaces[*i]
			if ifc.Name != ifName || ifc.Sandbox == "" {
				continue
			}
		}
		a := ipc.Address
		switch {
		case a.IP.To4() != nil && ips.v4 == nil:
			ips.v4 = &net.IPNet{IP: a.IP.To4(), Mask: mask4(a.Mask)}
		case a.IP.To4() == nil && ips.v6 == nil:
			ips.v6 = &net.IPNet{IP: a.IP, Mask: a.Mask}
		}
	}
	return ips
}

// mask4 is an IPv4 address's mask in its 4-byte form.
func mask4(m net.IPMask) net.IPMask {
	if len(m) == net.IPv6len {
		return m[12:]
	}
	if len(m) != net.IPv4len {
		return net.CIDRMask(32, 32)
	}
	return m
}

func hasWork(s *settings, ips contIPs) bool {
	return (ips.v4 != nil && hasFamilyWork(s, true)) || (ips.v6 != nil && hasFamilyWork(s, false))
}

func hasFamilyWork(s *settings, v4 bool) bool {
	for _, m := range s.maps {
		if (v4 && m.family4) || (!v4 && m.family6) {
			return true
		}
	}
	return false
}

// enableLocalnet lets 127/8-sourced connections (host processes dialing
// localhost:hostPort) leave through the interface that routes to the
// container, where they are masqueraded.
func enableLocalnet(host *hostns.Host, s *settings, ips contIPs) error {
	if !s.snat || ips.v4 == nil || !hasFamilyWork(s, true) {
		return nil
	}
	routes, err := host.NL.RouteGet(ips.v4.IP)
	if err != nil || len(routes) == 0 {
		return nil // no route yet: nothing to enable, as the reference
	}
	link, err := host.NL.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return nil
	}
	key := "net/ipv4/conf/" + link.Attrs().Name + "/route_localnet"
	return host.Do(func() error { return sysctl.Set(key, "1") })
}

func flushUDPConntrack(host *hostns.Host, s *settings, ips contIPs) {
	var filters [2][]netlink.CustomConntrackFilter
	for _, m := range s.maps {
		if m.proto != unix.IPPROTO_UDP {
			continue
		}
		for fi, ok := range []bool{ips.v4 != nil && m.family4, ips.v6 != nil && m.family6} {
			f := &netlink.ConntrackFilter{}
			if ok && f.AddProtocol(unix.IPPROTO_UDP) == nil && f.AddPort(netlink.ConntrackOrigDstPort, m.hostPort) == nil {
				filters[fi] = append(filters[fi], f)
			}
		}
	}
	if len(filters[0])+len(filters[1]) == 0 {
		return
	}
	nl, err := host.Conntrack()
	if err != nil {
		return
	}
	defer nl.Close()
	for fi, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if len(filters[fi]) > 0 {
			_, _ = nl.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filters[fi]...)
		}
	}
}
