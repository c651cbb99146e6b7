package ifattach

import (
	"context"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// Check is one CHECK of a plugin that created a container link: prevResult
// is compared with the kernel, as the reference plugins do.
type Check struct {
	Req  *cni.Request
	Conf *cni.NetConf
	// Verify checks what only the plugin knows about the link (its type,
	// mode, VLAN id, MTU, master), through h in the container. nil checks
	// nothing more.
	Verify func(h *netlink.Handle, l netlink.Link) error
}

// Run runs the IPAM plugin's CHECK, then checks that prevResult's
// interface for CNI_IFNAME is in the container with its MAC, that its
// addresses are on it and that prevResult's routes exist.
func (c *Check) Run(ctx context.Context) error {
	ipamType, err := c.Conf.IPAMType()
	if err != nil {
		return err
	}
	if ipamType != "" {
		if err := ipam.Check(ctx, c.Req, ipamType); err != nil {
			return err
		}
	}
	prev, err := c.Conf.PrevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return cni.ConfigError("prevResult", "required for CHECK")
	}
	idx, iface := FindIface(prev, c.Req.IfName, c.Req.Netns)
	if iface == nil {
		return fmt.Errorf("prevResult has no interface %q in sandbox %q", c.Req.IfName, c.Req.Netns)
	}
	cont, err := netns.OpenTarget(c.Req.Netns)
	if err != nil {
		return err
	}
	defer cont.Close()
	l, err := cont.NL.LinkByName(iface.Name)
	if err != nil {
		return fmt.Errorf("interface %q of prevResult not found in the container: %w", iface.Name, err)
	}
	if iface.Mac != "" && iface.Mac != l.Attrs().HardwareAddr.String() {
		return fmt.Errorf("interface %s has MAC %s, prevResult says %s", iface.Name, l.Attrs().HardwareAddr, iface.Mac)
	}
	if c.Verify != nil {
		if err := c.Verify(cont.NL, l); err != nil {
			return err
		}
	}
	if err := CheckAddrs(cont.NL, l, prev, idx); err != nil {
		return err
	}
	return CheckRoutes(cont.NL, prev.Routes)
}

// FindIface returns the index and entry of prevResult's interface named
// ifName in sandbox, or -1 and nil.
func FindIface(res *current.Result, ifName, sandbox string) (int, *current.Interface) {
	for i, intf := range res.Interfaces {
		if intf.Name == ifName && intf.Sandbox == sandbox {
			return i, intf
		}
	}
	return -1, nil
}

// CheckAddrs verifies that every address of res pointing at interface idx
// (or at no interface) is on l, with its prefix length.
func CheckAddrs(h *netlink.Handle, l netlink.Link, res *current.Result, idx int) error {
	addrs, err := nlsafe.AddrList(h, l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface != idx {
			continue
		}
		if !hasAddr(addrs, ip.Address) {
			return fmt.Errorf("address %s of prevResult is not on %s", ip.Address.String(), l.Attrs().Name)
		}
	}
	return nil
}

func hasAddr(addrs []netlink.Addr, want net.IPNet) bool {
	for _, a := range addrs {
		if a.IP.Equal(want.IP) && prefixLen(a.IPNet) == prefixLen(&want) {
			return true
		}
	}
	return false
}

// CheckRoutes verifies that each route exists in some table (a later plugin
// in the chain, such as vrf, may have moved it out of main), with its
// gateway when it names one.
func CheckRoutes(h *netlink.Handle, routes []*types.Route) error {
	for _, r := range routes {
		fam := netlink.FAMILY_V4
		if r.Dst.IP.To4() == nil {
			fam = netlink.FAMILY_V6
		}
		have, err := nlsafe.RouteListFiltered(h, fam, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing routes: %w", err)
		}
		if !hasRoute(have, r) {
			return fmt.Errorf("route %s of prevResult is not in the routing tables", r.String())
		}
	}
	return nil
}

func hasRoute(have []netlink.Route, want *types.Route) bool {
	for _, k := range have {
		if !sameDst(k.Dst, &want.Dst) {
			continue
		}
		if want.Table != nil && k.Table != *want.Table {
			continue
		}
		if want.GW == nil || k.Gw.Equal(want.GW) {
			return true
		}
		for _, nh := range k.MultiPath {
			if nh.Gw.Equal(want.GW) {
				return true
			}
		}
	}
	return false
}

// sameDst compares destinations; netlink reports a default route with a nil
// or an all-zero destination depending on version.
func sameDst(k, want *net.IPNet) bool {
	if k == nil {
		return prefixLen(want) == 0
	}
	return k.IP.Equal(want.IP) && prefixLen(k) == prefixLen(want)
}

// prefixLen is n's prefix length, whether an IPv4 mask is held in 4 or 16
// bytes.
func prefixLen(n *net.IPNet) int {
	m := n.Mask
	if len(m) == net.IPv6len && n.IP.To4() != nil {
		m = m[12:]
	}
	ones, _ := m.Size()
	return ones
}
