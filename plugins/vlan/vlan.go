// Package vlan is the CNI vlan plugin: an 802.1Q child of a host interface
// in the container, addressed by IPAM. Config keys are those of
// containernetworking/plugins' vlan.
package vlan

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/childlink"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ifattach"
)

// Config is vlan's network configuration.
type Config struct {
	cni.NetConf
	childlink.Config
	// VlanID is required (the reference silently defaults to 0, the
	// priority-tag VLAN, which is rarely what a config without it meant).
	VlanID *int `json:"vlanId"`
}

// Plugin implements cni.Plugin.
type Plugin struct {
	// HostNS is the namespace masters are looked up in; empty means the
	// plugin process's own. Tests point it at a scratch namespace.
	HostNS string
}

func decode(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// parse decodes and validates the config for ADD and CHECK.
func parse(data []byte) (*Config, childlink.Params, error) {
	c, err := decode(data)
	if err != nil {
		return nil, childlink.Params{}, err
	}
	if c.Master == "" {
		return nil, childlink.Params{}, cni.ConfigError("master", "required: the interface to create the VLAN on")
	}
	if c.VlanID == nil {
		return nil, childlink.Params{}, cni.ConfigError("vlanId", "required")
	}
	if *c.VlanID < 0 || *c.VlanID > 4094 {
		return nil, childlink.Params{}, cni.ConfigError("vlanId", "invalid VLAN ID %d, must be [0, 4094]", *c.VlanID)
	}
	p := childlink.Params{Config: c.Config, IPAM: ifattach.IPAMRequired}
	if err := p.Validate(); err != nil {
		return nil, childlink.Params{}, err
	}
	return c, p, nil
}

func (c *Config) kind() childlink.Kind {
	id := *c.VlanID
	return childlink.Kind{
		Type: "vlan",
		New: func(attrs netlink.LinkAttrs) netlink.Link {
			attrs.HardwareAddr = nil
			return &netlink.Vlan{LinkAttrs: attrs, VlanId: id}
		},
		Verify: func(l netlink.Link) error {
			v, ok := l.(*netlink.Vlan)
			if !ok {
				return fmt.Errorf("interface %s is a %s, not a vlan", l.Attrs().Name, l.Type())
			}
			if v.VlanId != id {
				return fmt.Errorf("vlan %s has VLAN ID %d, config says %d", l.Attrs().Name, v.VlanId, id)
			}
			if c.MTU != 0 && l.Attrs().MTU != c.MTU {
				return fmt.Errorf("vlan %s has MTU %d, config says %d", l.Attrs().Name, l.Attrs().MTU, c.MTU)
			}
			return nil
		},
	}
}

// Add creates the VLAN link in the container and addresses it.
func (p Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	c, params, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	return childlink.Add(ctx, req, &c.NetConf, p.HostNS, params, c.kind())
}

// Del deletes the VLAN link and releases its addresses. Unlike the
// reference it does not need the master to still exist.
func (p Plugin) Del(ctx context.Context, req *cni.Request) error {
	c, err := decode(req.Config)
	if err != nil {
		return err
	}
	return childlink.Del(ctx, req, &c.NetConf)
}

// Check compares prevResult with the container's VLAN link.
func (p Plugin) Check(ctx context.Context, req *cni.Request) error {
	c, params, err := parse(req.Config)
	if err != nil {
		return err
	}
	return childlink.Check(ctx, req, &c.NetConf, p.HostNS, params, c.kind())
}

// GC forwards to the IPAM plugin, the only holder of state.
func (p Plugin) GC(ctx context.Context, req *cni.Request, _ []cni.Attachment) error {
	return ifattach.GC(ctx, req)
}

// Status reports the IPAM plugin's readiness.
func (p Plugin) Status(ctx context.Context, req *cni.Request) error {
	return ifattach.Status(ctx, req)
}
