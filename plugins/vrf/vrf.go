// Package vrf is the CNI vrf meta plugin: it enslaves the container
// interface a previous plugin created (CNI_IFNAME) to a VRF in the
// container, creating the VRF on first use and deleting it with its last
// member. Config keys are those of containernetworking/plugins' vrf; routes
// the earlier plugins put on the interface move into the VRF's table, as
// the reference does since it preserves routes.
package vrf

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// Config is vrf's network configuration.
type Config struct {
	cni.NetConf
	// VRFName is the VRF to add the interface to.
	VRFName string `json:"vrfname"`
	// Table is the VRF's routing table; 0 picks the first free one when the
	// VRF is created.
	Table uint32 `json:"table"`
}

// Plugin implements cni.Plugin.
type Plugin struct{}

func decode(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	if c.VRFName == "" {
		return nil, cni.ConfigError("vrfname", "required: the VRF to add the interface to")
	}
	if len(c.VRFName) > 15 || !validName(c.VRFName) {
		return nil, cni.ConfigError("vrfname", "%q is not a valid interface name", c.VRFName)
	}
	return &c, nil
}

func validName(s string) bool {
	if s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// parse decodes the config for ADD and CHECK, which need prevResult.
func parse(data []byte) (*Config, error) {
	c, err := decode(data)
	if err != nil {
		return nil, err
	}
	prev, err := c.PrevResult()
	if err != nil {
		return nil, err
	}
	if prev == nil {
		return nil, cni.ConfigError("prevResult", "missing prevResult from earlier plugin")
	}
	return c, nil
}

// Add enslaves CNI_IFNAME to the VRF (created if needed), keeping its IPv6
// addresses and moving its routes into the VRF table. It returns prevResult
// unchanged. On failure the interface is released and a VRF it created is
// removed.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	c, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	prev, err := c.PrevResult()
	if err != nil {
		return nil, err
	}
	cont, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, err
	}
	defer cont.Close()
	l, err := cont.NL.LinkByName(req.IfName)
	if err != nil {
		return nil, fmt.Errorf("interface %q from the previous plugin not found in the container: %w", req.IfName, err)
	}
	vrf, created, err := c.ensureVRF(cont.NL)
	if err != nil {
		return nil, err
	}
	if err := enslave(cont.NL, l, vrf); err != nil {
		if created {
			err = errors.Join(err, cont.NL.LinkDel(vrf))
		}
		return nil, err
	}
	return prev, nil
}

// ensureVRF returns the named VRF, creating it (up) when missing.
func (c *Config) ensureVRF(h *netlink.Handle) (*netlink.Vrf, bool, error) {
	vrf, err := findVRF(h, c.VRFName)
	if err != nil {
		return nil, false, err
	}
	if vrf != nil {
		if c.Table != 0 && vrf.Table != c.Table {
			return nil, false, cni.ConfigError("table", "VRF %s already exists with routing table %d, not %d", c.VRFName, vrf.Table, c.Table)
		}
		return vrf, false, nil
	}
	table := c.Table
	if table == 0 {
		if table, err = freeTable(h); err != nil {
			return nil, false, err
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = c.VRFName
	if err := h.LinkAdd(&netlink.Vrf{LinkAttrs: attrs, Table: table}); err != nil {
		return nil, false, fmt.Errorf("creating VRF %s (table %d): %w", c.VRFName, table, err)
	}
	vrf, err = findVRF(h, c.VRFName)
	if err == nil && vrf == nil {
		err = fmt.Errorf("VRF %s vanished after creation", c.VRFName)
	}
	if err == nil {
		err = h.LinkSetUp(vrf)
	}
	if err != nil {
		if vrf != nil {
			err = errors.Join(err, h.LinkDel(vrf))
		}
		return nil, false, fmt.Errorf("setting up VRF %s: %w", c.VRFName, err)
	}
	return vrf, true, nil
}

// findVRF returns the VRF named name, nil if there is no link of that name.
func findVRF(h *netlink.Handle, name string) (*netlink.Vrf, error) {
	l, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up VRF %s: %w", name, err)
	}
	vrf, ok := l.(*netlink.Vrf)
	if !ok {
		return nil, cni.ConfigError("vrfname", "%s exists and is a %s, not a VRF", name, l.Type())
	}
	return vrf, nil
}

// Del releases CNI_IFNAME from the VRF and deletes the VRF when it was the
// last member. A missing namespace, VRF or interface is success; an
// interface enslaved to something else is left alone.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	c, err := decode(req.Config)
	if err != nil {
		return err
	}
	if req.Netns == "" {
		return nil
	}
	cont, err := netns.OpenTarget(req.Netns)
	if errors.Is(err, netns.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer cont.Close()
	vrf, err := findVRF(cont.NL, c.VRFName)
	if err != nil || vrf == nil {
		var ce *cni.Error
		if errors.As(err, &ce) {
			return nil // the name belongs to something else: not ours
		}
		return err
	}
	if l, err := cont.NL.LinkByName(req.IfName); err == nil && l.Attrs().MasterIndex == vrf.Index {
		if err := cont.NL.LinkSetNoMaster(l); err != nil {
			return fmt.Errorf("releasing %s from VRF %s: %w", req.IfName, c.VRFName, err)
		}
	}
	members, err := members(cont.NL, vrf)
	if err != nil || len(members) > 0 {
		return err
	}
	if err := cont.NL.LinkDel(vrf); err != nil {
		return fmt.Errorf("deleting VRF %s: %w", c.VRFName, err)
	}
	return nil
}

// Check verifies the VRF exists (with the configured table) and holds
// CNI_IFNAME.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	c, err := parse(req.Config)
	if err != nil {
		return err
	}
	cont, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return err
	}
	defer cont.Close()
	vrf, err := findVRF(cont.NL, c.VRFName)
	if err != nil {
		return err
	}
	if vrf == nil {
		return fmt.Errorf("VRF %s not found", c.VRFName)
	}
	if c.Table != 0 && vrf.Table != c.Table {
		return fmt.Errorf("VRF %s has table %d, config says %d", c.VRFName, vrf.Table, c.Table)
	}
	l, err := cont.NL.LinkByName(req.IfName)
	if err != nil {
		return fmt.Errorf("interface %s not found: %w", req.IfName, err)
	}
	if l.Attrs().MasterIndex != vrf.Index {
		return fmt.Errorf("interface %s is not in VRF %s", req.IfName, c.VRFName)
	}
	return nil
}

func members(h *netlink.Handle, vrf *netlink.Vrf) ([]netlink.Link, error) {
	links, err := nlsafe.LinkList(h)
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		if l.Attrs().MasterIndex == vrf.Index {
			out = append(out, l)
		}
	}
	return out, nil
}
