package bridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/vethnet"
)

// containerIndex is the container interface's position in the result.
const containerIndex = 2

// calcGateways points every IP at the container interface, fills in missing
// gateways (the subnet's first address) when the bridge is the gateway,
// adds one default route per family for isDefaultGateway unless IPAM gave
// one, and returns the gateway addresses the bridge must carry.
func calcGateways(res *current.Result, c *Config) ([]net.IPNet, error) {
	var gws []net.IPNet
	haveDefault := map[bool]bool{} // by "is IPv4"
	for _, ipc := range res.IPs {
		v4 := ipc.Address.IP.To4() != nil
		if !v4 && len(ipc.Address.IP) != net.IPv6len {
			return nil, fmt.Errorf("IPAM returned an invalid address %v", ipc.Address)
		}
		ipc.Interface = current.Int(containerIndex)
		if ipc.Gateway == nil && c.IsGateway {
			ipc.Gateway = firstIP(ipc.Address)
		}
		if c.IsDefaultGateway && !haveDefault[v4] {
			haveDefault[v4] = true
			if !hasDefaultRoute(res.Routes, v4) {
				res.Routes = append(res.Routes, &types.Route{Dst: defaultNet(v4), GW: ipc.Gateway})
			}
		}
		if c.IsGateway {
			gws = append(gws, net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask})
		}
	}
	return gws, nil
}

func firstIP(n net.IPNet) net.IP {
	ip := n.IP.Mask(n.Mask)
	next := make(net.IP, len(ip))
	copy(next, ip)
	for i := len(next) - 1; i >= 0; i-- {
		next[i]++
		if next[i] != 0 {
			break
		}
	}
	return next
}

func defaultNet(v4 bool) net.IPNet {
	if v4 {
		return net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

func hasDefaultRoute(routes []*types.Route, v4 bool) bool {
	want := defaultNet(v4)
	for _, r := range routes {
		if r.GW != nil && r.Dst.String() == want.String() {
			return true
		}
	}
	return false
}

// setupGateway puts the gateway addresses on the bridge (or, with vlan, on
// the bridge's VLAN gateway interface) and enables forwarding.
func (a *attach) setupGateway(gws []net.IPNet) error {
	if len(gws) == 0 {
		return nil
	}
	var target netlink.Link = a.br
	if a.conf.Vlan != 0 {
		l, err := ensureVlanGateway(a.Host, a.br, a.conf)
		if err != nil {
			return fmt.Errorf("vlan gateway interface: %w", err)
		}
		target = l
		a.res.Interfaces = append(a.res.Interfaces, &current.Interface{Name: l.Attrs().Name, Mac: l.Attrs().HardwareAddr.String()})
	}
	if err := ensureAddrs(a.Host, target, gws, a.conf.ForceAddress); err != nil {
		return err
	}
	ips := make([]net.IP, 0, len(gws))
	for _, gw := range gws {
		ips = append(ips, gw.IP)
	}
	return vethnet.EnableForwardFor(ips)
}

// ensureAddrs gives l each gateway address. An IPv4 address, or an IPv6
// one overlapping gw, that differs from gw is an error unless force, which
// replaces it (forceAddress). If an address was added, l's MAC is pinned,
// so the bridge no longer follows the lowest port MAC as ports come and go.
func ensureAddrs(h *netlink.Handle, l netlink.Link, gws []net.IPNet, force bool) error {
	have, err := nlsafe.AddrList(h, l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	added := false
	for _, gw := range gws {
		var did bool
		if have, did, err = ensureAddr(h, l, have, gw, force); err != nil {
			return err
		}
		added = added || did
	}
	if !added {
		return nil
	}
	return pinMAC(h, l)
}

// pinMAC sets l's MAC to the one it had before this ADD's port joined (as
// the reference does). A bridge whose ports all left had MAC 00:00:…
// then, which the kernel rejects; it gets its current MAC instead.
func pinMAC(h *netlink.Handle, l netlink.Link) error {
	mac := l.Attrs().HardwareAddr
	if len(mac) == 0 {
		cur, err := h.LinkByIndex(l.Attrs().Index)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", l.Attrs().Name, err)
		}
		mac = cur.Attrs().HardwareAddr
	}
	if err := h.LinkSetHardwareAddr(l, mac); err != nil {
		return fmt.Errorf("pinning MAC %s of %s: %w", mac, l.Attrs().Name, err)
	}
	return nil
}

func ensureAddr(h *netlink.Handle, l netlink.Link, have []netlink.Addr, gw net.IPNet, force bool) ([]netlink.Addr, bool, error) {
	v4 := gw.IP.To4() != nil
	kept := make([]netlink.Addr, 0, len(have)+1)
	for _, a := range have {
		if (a.IP.To4() != nil) != v4 {
			kept = append(kept, a)
			continue
		}
		if a.IPNet.String() == gw.String() {
			return have, false, nil
		}
		if !v4 && !a.IPNet.Contains(gw.IP) && !gw.Contains(a.IP) {
			kept = append(kept, a)
			continue
		}
		if !force {
			return nil, false, fmt.Errorf("%q already has an IP address different from %v", l.Attrs().Name, gw.String())
		}
		if err := h.AddrDel(l, &a); err != nil {
			return nil, false, fmt.Errorf("removing %s from %s: %w", a.IPNet, l.Attrs().Name, err)
		}
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &gw}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, false, fmt.Errorf("adding %s to %s: %w", gw.String(), l.Attrs().Name, err)
	}
	return append(kept, netlink.Addr{IPNet: &gw}), true, nil
}

// ensureVlanGateway returns the bridge's gateway interface for the VLAN,
// "<bridge>.<vlan>", creating it as the reference does: a veth pair in the
// host namespace whose other end is an access port of the VLAN.
func ensureVlanGateway(h *netlink.Handle, br *netlink.Bridge, c *Config) (netlink.Link, error) {
	name := fmt.Sprintf("%s.%d", br.Name, c.Vlan)
	l, err := h.LinkByName(name)
	if err == nil || !isNotFound(err) {
		return l, err
	}
	self, err := netns.Current()
	if err != nil {
		return nil, err
	}
	defer self.Close()
	port, err := link.AddVeth(h, self, h, link.VethOpts{IfName: name, MTU: br.MTU, HostMaster: br.Index, HostUp: true})
	if err != nil {
		return nil, err
	}
	if err := setupPortVlans(h, port, c.Vlan, nil, c.PreserveDefaultVlan); err != nil {
		_ = h.LinkDel(port)
		return nil, err
	}
	if l, err = h.LinkByName(name); err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		_ = h.LinkDel(port)
		return nil, fmt.Errorf("setting %s up: %w", name, err)
	}
	return l, nil
}
