package nmstate

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/sysctl"
)

// setIP applies ipv4 or ipv6: enabled: false removes every address, an
// address list replaces the static addresses, dhcp runs the DHCP client.
// dhcp: false releases the lease before the static list is applied, so a
// leased address the list names comes back as a static one.
func (e *Engine) setIP(ctx context.Context, l netlink.Link, c *IPConfig, family int) error {
	if c == nil {
		return nil
	}
	name := l.Attrs().Name
	dhcp := family == netlink.FAMILY_V4 && c.DHCP != nil
	if c.Enabled != nil && !*c.Enabled {
		if family == netlink.FAMILY_V4 {
			if err := e.releaseDHCP(ctx, name); err != nil {
				return err
			}
		}
		return e.replaceAddrs(l, family, nil, false)
	}
	if dhcp && !*c.DHCP {
		if err := e.releaseDHCP(ctx, name); err != nil {
			return err
		}
	}
	if c.Address != nil {
		// With dhcp: true the lease's address is the DHCP client's, not
		// part of the static list.
		if err := e.replaceAddrs(l, family, *c.Address, dhcp && *c.DHCP); err != nil {
			return err
		}
	}
	if family == netlink.FAMILY_V6 && c.Autoconf != nil {
		if err := e.setAutoconf(name, *c.Autoconf); err != nil {
			return err
		}
	}
	if dhcp && *c.DHCP {
		return e.acquireDHCP(ctx, name, c)
	}
	return nil
}

// releaseDHCP gives ifName's lease back, if there is a client; no lease
// is fine.
func (e *Engine) releaseDHCP(ctx context.Context, name string) error {
	if e.DHCP == nil {
		return nil
	}
	if err := e.DHCP.Release(ctx, name); err != nil {
		return fmt.Errorf("dhcp release: %w", err)
	}
	return nil
}

func (e *Engine) acquireDHCP(ctx context.Context, name string, c *IPConfig) error {
	if e.DHCP == nil {
		return errors.New("dhcp: no DHCP client configured on this node")
	}
	routes := c.AutoRoutes == nil || *c.AutoRoutes
	if _, err := e.DHCP.Acquire(ctx, name, routes); err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	return nil
}

// replaceAddrs makes the link's non-link-local addresses of a family
// exactly want (lists are replaced, per nmstate), leaving addresses with a
// finite lifetime alone when keepDynamic. Addresses already there are not
// re-added: that would make a DHCP address permanent.
func (e *Engine) replaceAddrs(l netlink.Link, family int, want []Address, keepDynamic bool) error {
	have, err := nlsafe.AddrList(e.NL, l, family)
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	present := map[string]bool{}
	for _, a := range have {
		present[a.IPNet.String()] = true
	}
	wanted := map[string]bool{}
	for _, a := range want {
		ipn := &net.IPNet{IP: net.ParseIP(a.IP), Mask: net.CIDRMask(a.PrefixLength, bits(family))}
		wanted[ipn.String()] = true
		if present[ipn.String()] {
			continue
		}
		addr := &netlink.Addr{IPNet: ipn}
		if family == netlink.FAMILY_V6 {
			addr.Flags = unix.IFA_F_NODAD // a node address is configured, not probed
		}
		if err := e.NL.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("adding %s: %w", ipn, err)
		}
	}
	for _, a := range have {
		if a.IP.IsLinkLocalUnicast() || wanted[a.IPNet.String()] || keepDynamic && isDynamic(a) {
			continue
		}
		if err := e.NL.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("removing %s: %w", a.IPNet, err)
		}
	}
	return nil
}

// isDynamic reports an address with a finite lifetime: DHCP's or
// autoconf's.
func isDynamic(a netlink.Addr) bool {
	return a.ValidLft > 0 && a.ValidLft != infinityLifetime
}

func bits(family int) int {
	if family == netlink.FAMILY_V4 {
		return 32
	}
	return 128
}

func (e *Engine) setAutoconf(name string, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return e.NS.Do(func() error {
		if err := sysctl.Set("net/ipv6/conf/"+name+"/autoconf", v); err != nil {
			return err
		}
		return sysctl.Set("net/ipv6/conf/"+name+"/accept_ra", v)
	})
}
