// Package defaultroute applies the networks annotation's "default-route"
// request in a pod's namespace: the pod's default route (per IP family
// requested) goes through the requesting attachment's interface via the
// given gateway, and the default routes the other attachments installed for
// that family are removed — the cluster network's included, as the
// standard says.
package defaultroute

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// Families reports which IP families gateways cover.
func Families(gws []net.IP) (v4, v6 bool) {
	for _, g := range gws {
		if g.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// Apply adjusts the default routes of interface ifName in the namespace at
// nsPath. With gws set, ifName is the requesting attachment: its default
// routes of those families are replaced by routes via gws. Without, the
// default routes of the families v4/v6 through ifName are removed.
func Apply(nsPath, ifName string, gws []net.IP, v4, v6 bool) error {
	t, err := netns.OpenTarget(nsPath)
	if err != nil {
		return err
	}
	defer t.Close()
	link, err := t.NL.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("default-route: interface %s: %w", ifName, err)
	}
	if len(gws) > 0 {
		v4, v6 = Families(gws)
	}
	for _, fam := range families(v4, v6) {
		if err := removeDefaults(t.NL, link, fam); err != nil {
			return err
		}
	}
	for _, gw := range gws {
		if err := addDefault(t.NL, link, gw); err != nil {
			return err
		}
	}
	return nil
}

func families(v4, v6 bool) []int {
	var f []int
	if v4 {
		f = append(f, netlink.FAMILY_V4)
	}
	if v6 {
		f = append(f, netlink.FAMILY_V6)
	}
	return f
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0 && r.Dst.IP.IsUnspecified()
}

func removeDefaults(h *netlink.Handle, link netlink.Link, fam int) error {
	routes, err := nlsafe.RouteList(h, link, fam)
	if err != nil {
		return fmt.Errorf("default-route: listing routes of %s: %w", link.Attrs().Name, err)
	}
	for _, r := range routes {
		if !isDefault(r) || (r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) {
			continue
		}
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("default-route: removing default route via %s: %w", link.Attrs().Name, err)
		}
	}
	return nil
}

func addDefault(h *netlink.Handle, link netlink.Link, gw net.IP) error {
	dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
	if gw.To4() == nil {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw, Scope: netlink.SCOPE_UNIVERSE}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("default-route: via %s dev %s: %w", gw, link.Attrs().Name, err)
	}
	return nil
}

// Installed lists the gateways of the default routes in the namespace's
// main table, by interface name ("" gateway for a direct default route).
func Installed(nsPath string) (map[string][]string, error) {
	t, err := netns.OpenTarget(nsPath)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	routes, err := nlsafe.RouteList(t.NL, nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	names := map[int]string{}
	out := map[string][]string{}
	for _, r := range routes {
		if !isDefault(r) || (r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) {
			continue
		}
		name, ok := names[r.LinkIndex]
		if !ok {
			l, err := t.NL.LinkByIndex(r.LinkIndex)
			if err != nil {
				continue
			}
			name = l.Attrs().Name
			names[r.LinkIndex] = name
		}
		gw := ""
		if r.Gw != nil {
			gw = r.Gw.String()
		}
		out[name] = append(out[name], gw)
	}
	return out, nil
}
