// Package ipvlan is the CNI ipvlan plugin: an ipvlan child of a host
// interface in the container. Config keys are those of
// containernetworking/plugins' ipvlan, including its chained use: with no
// master, the master is prevResult's only interface, and with no ipam the
// link takes over prevResult's addresses.
package ipvlan

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/childlink"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ifattach"
)

// Config is ipvlan's network configuration.
type Config struct {
	cni.NetConf
	childlink.Config
	// Mode is l2 (default), l3 or l3s.
	Mode string `json:"mode"`
}

// Plugin implements cni.Plugin.
type Plugin struct {
	// HostNS is the namespace masters are looked up in; empty means the
	// plugin process's own. Tests point it at a scratch namespace.
	HostNS string
}

// modeOf maps the config's mode to the kernel's; "" is l2.
func modeOf(s string) (netlink.IPVlanMode, bool) {
	switch s {
	case "", "l2":
		return netlink.IPVLAN_MODE_L2, true
	case "l3":
		return netlink.IPVLAN_MODE_L3, true
	case "l3s":
		return netlink.IPVLAN_MODE_L3S, true
	}
	return 0, false
}

func decode(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// parse decodes and validates the config for ADD and CHECK.
func parse(req *cni.Request) (*Config, childlink.Params, error) {
	c, err := decode(req.Config)
	if err != nil {
		return nil, childlink.Params{}, err
	}
	if _, ok := modeOf(c.Mode); !ok {
		return nil, childlink.Params{}, cni.ConfigError("mode", "unknown ipvlan mode %q (l2, l3, l3s)", c.Mode)
	}
	if err := c.chainedMaster(req); err != nil {
		return nil, childlink.Params{}, err
	}
	p := childlink.Params{Config: c.Config, DefaultMaster: true, IPAM: ifattach.IPAMRequired, PrevIPs: true, Notify: true}
	if err := p.Validate(); err != nil {
		return nil, childlink.Params{}, err
	}
	return c, p, nil
}

// chainedMaster fills in an empty master from prevResult, as the
// reference: a chained ipvlan sits on the single interface the previous
// plugin made. Without prevResult the default-route link is used. CHECK's
// prevResult is ADD's result, which also holds the ipvlan itself: the
// master is the interface before it (the reference's CHECK cannot find a
// chained master at all).
func (c *Config) chainedMaster(req *cni.Request) error {
	if c.Master != "" {
		return nil
	}
	prev, err := c.PrevResult()
	if err != nil || prev == nil {
		return err
	}
	if req.Command == cni.CmdCheck {
		for _, intf := range prev.Interfaces {
			if intf.Name != req.IfName || intf.Sandbox != req.Netns {
				c.Master = intf.Name
				return nil
			}
		}
		return nil
	}
	if len(prev.Interfaces) != 1 || prev.Interfaces[0].Name == "" {
		return cni.ConfigError("master", "not set, and prevResult lacks a single named interface to chain on")
	}
	c.Master = prev.Interfaces[0].Name
	return nil
}

func (c *Config) kind() childlink.Kind {
	mode, _ := modeOf(c.Mode)
	return childlink.Kind{
		Type: "ipvlan",
		New: func(attrs netlink.LinkAttrs) netlink.Link {
			// ipvlan children share the master's MAC.
			attrs.HardwareAddr = nil
			return &netlink.IPVlan{LinkAttrs: attrs, Mode: mode}
		},
		Verify: func(l netlink.Link) error {
			v, ok := l.(*netlink.IPVlan)
			if !ok {
				return fmt.Errorf("interface %s is a %s, not an ipvlan", l.Attrs().Name, l.Type())
			}
			if v.Mode != mode {
				return fmt.Errorf("ipvlan %s is in mode %d, config says %q", l.Attrs().Name, v.Mode, c.Mode)
			}
			return nil
		},
	}
}

// Add creates the ipvlan in the container and addresses it.
func (p Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	c, params, err := parse(req)
	if err != nil {
		return nil, err
	}
	return childlink.Add(ctx, req, &c.NetConf, p.HostNS, params, c.kind())
}

// Del deletes the ipvlan and releases its addresses.
func (p Plugin) Del(ctx context.Context, req *cni.Request) error {
	c, err := decode(req.Config)
	if err != nil {
		return err
	}
	return childlink.Del(ctx, req, &c.NetConf)
}

// Check compares prevResult with the container's ipvlan.
func (p Plugin) Check(ctx context.Context, req *cni.Request) error {
	c, params, err := parse(req)
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
