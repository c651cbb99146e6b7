// Package ipam runs a config's IPAM plugin through the request's delegator
// and applies an IPAM result to an interface.
package ipam

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
)

// Add runs the IPAM plugin's ADD with the whole plugin config and returns
// its result in the newest version. It rejects results without addresses,
// since every caller needs at least one.
func Add(ctx context.Context, req *cni.Request, ipamType string) (*current.Result, error) {
	res, err := req.Delegate.Delegate(ctx, ipamType, req.WithConfig(cni.CmdAdd, req.Config))
	if err != nil {
		return nil, err
	}
	cur, err := cni.AsCurrent(res)
	if err != nil {
		return nil, err
	}
	if len(cur.IPs) == 0 {
		return nil, cni.Errorf(types.ErrInternal, "IPAM plugin %s returned no IP configuration", ipamType)
	}
	return cur, nil
}

// Del runs the IPAM plugin's DEL.
func Del(ctx context.Context, req *cni.Request, ipamType string) error {
	_, err := req.Delegate.Delegate(ctx, ipamType, req.WithConfig(cni.CmdDel, req.Config))
	return err
}

// Check runs the IPAM plugin's CHECK.
func Check(ctx context.Context, req *cni.Request, ipamType string) error {
	_, err := req.Delegate.Delegate(ctx, ipamType, req.WithConfig(cni.CmdCheck, req.Config))
	return err
}

// ConfigureLink gives link (through h, a handle in the container's
// namespace) the result's addresses that point at it, sets it up and adds
// the result's routes. IPv6 addresses skip duplicate address detection
// (IFA_F_NODAD) when dad is false, so the caller never waits for them to
// leave the tentative state.
func ConfigureLink(h *netlink.Handle, link netlink.Link, res *current.Result, dad bool) error {
	ifName := link.Attrs().Name
	var gw4, gw6 net.IP
	for _, ipc := range res.IPs {
		if !pointsAt(ipc, res.Interfaces, ifName) {
			continue
		}
		addr := &netlink.Addr{IPNet: &ipc.Address}
		if ipc.Address.IP.To4() == nil {
			if !dad {
				addr.Flags = unix.IFA_F_NODAD
			}
			if gw6 == nil {
				gw6 = ipc.Gateway
			}
		} else if gw4 == nil {
			gw4 = ipc.Gateway
		}
		if err := h.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s to %s: %w", ipc.Address.String(), ifName, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", ifName, err)
	}
	for _, r := range res.Routes {
		if err := AddRoute(h, link, r, gw4, gw6); err != nil {
			return err
		}
	}
	return nil
}

// AddRoute adds one result route through link; a route without a gateway
// goes via the interface's gateway of the same family, as the reference
// plugins do.
func AddRoute(h *netlink.Handle, link netlink.Link, r *types.Route, gw4, gw6 net.IP) error {
	gw := r.GW
	if gw == nil {
		if r.Dst.IP.To4() != nil {
			gw = gw4
		} else {
			gw = gw6
		}
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &r.Dst, Gw: gw,
		MTU: r.MTU, AdvMSS: r.AdvMSS, Priority: r.Priority, Scope: netlink.SCOPE_UNIVERSE}
	if r.Table != nil {
		route.Table = *r.Table
	}
	if r.Scope != nil {
		route.Scope = netlink.Scope(*r.Scope)
	}
	if err := h.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding route %s via %v on %s: %w", r.Dst.String(), gw, link.Attrs().Name, err)
	}
	return nil
}

// pointsAt reports whether ipc belongs to ifName. An IP without an
// interface index belongs to the only interface a single-link plugin adds.
func pointsAt(ipc *current.IPConfig, ifs []*current.Interface, ifName string) bool {
	if ipc.Interface == nil {
		return true
	}
	i := *ipc.Interface
	return i >= 0 && i < len(ifs) && ifs[i].Name == ifName
}
