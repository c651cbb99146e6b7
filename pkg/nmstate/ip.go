package nmstate

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/sysctl"
)

// setIP applies ipv4 or ipv6: enabled: false removes every address, an
// address list replaces the static addresses, dhcp runs the DHCP client.
func (e *Engine) setIP(ctx context.Context, l netlink.Link, c *IPConfig, family int) error {
	if c == nil {
		return nil
	}
	name := l.Attrs().Name
	if c.Enabled != nil && !*c.Enabled {
		if family == netlink.FAMILY_V4 && e.DHCP != nil {
			_ = e.DHCP.Release(ctx, name) // no lease is fine
		}
		return e.replaceAddrs(l, family, nil)
	}
	if c.Address != nil {
		if err := e.replaceAddrs(l, family, *c.Address); err != nil {
			return err
		}
	}
	if family == netlink.FAMILY_V6 && c.Autoconf != nil {
		if err := e.setAutoconf(name, *c.Autoconf); err != nil {
			return err
		}
	}
	if family == netlink.FAMILY_V4 && c.DHCP != nil {
		return e.setDHCP(ctx, name, c)
	}
	return nil
}

func (e *Engine) setDHCP(ctx context.Context, name string, c *IPConfig) error {
	if e.DHCP == nil {
		if *c.DHCP {
			return errors.New("dhcp: no DHCP client configured on this node")
		}
		return nil
	}
	if !*c.DHCP {
		return e.DHCP.Release(ctx, name)
	}
	routes := c.AutoRoutes == nil || *c.AutoRoutes
	if _, err := e.DHCP.Acquire(ctx, name, routes); err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	return nil
}

// replaceAddrs makes the link's non-link-local addresses of a family
// exactly want (lists are replaced, per nmstate).
func (e *Engine) replaceAddrs(l netlink.Link, family int, want []Address) error {
	have, err := e.NL.AddrList(l, family)
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	wanted := map[string]bool{}
	for _, a := range want {
		ipn := &net.IPNet{IP: net.ParseIP(a.IP), Mask: net.CIDRMask(a.PrefixLength, bits(family))}
		wanted[ipn.String()] = true
		addr := &netlink.Addr{IPNet: ipn}
		if family == netlink.FAMILY_V6 {
			addr.Flags = unix.IFA_F_NODAD // a node address is configured, not probed
		}
		if err := e.NL.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("adding %s: %w", ipn, err)
		}
	}
	for _, a := range have {
		if a.IP.IsLinkLocalUnicast() || wanted[a.IPNet.String()] {
			continue
		}
		if err := e.NL.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("removing %s: %w", a.IPNet, err)
		}
	}
	return nil
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
