// Package macvlan is the CNI macvlan plugin: a macvlan child of a host
// interface ("master") in the container, optionally addressed by IPAM.
// Config keys are those of containernetworking/plugins' macvlan.
package macvlan

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/childlink"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ifattach"
)

// Config is macvlan's network configuration.
type Config struct {
	cni.NetConf
	childlink.Config
	ifattach.MACKeys
	// Mode is bridge (default), private, vepa or passthru.
	Mode string `json:"mode"`
}

// Plugin implements cni.Plugin.
type Plugin struct {
	// HostNS is the namespace masters are looked up in and links created
	// from; empty means the plugin process's own (the host's). Tests point
	// it at a scratch namespace.
	HostNS string
}

// modeOf maps the config's mode to the kernel's; "" is bridge.
func modeOf(s string) (netlink.MacvlanMode, bool) {
	switch s {
	case "", "bridge":
		return netlink.MACVLAN_MODE_BRIDGE, true
	case "private":
		return netlink.MACVLAN_MODE_PRIVATE, true
	case "vepa":
		return netlink.MACVLAN_MODE_VEPA, true
	case "passthru":
		return netlink.MACVLAN_MODE_PASSTHRU, true
	}
	return 0, false
}

// decode parses the config without semantic checks: DEL must work with a
// config that ADD would reject.
func decode(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// parse decodes and validates the config for ADD and CHECK, and resolves
// the MAC from its four sources (runtimeConfig > args > CNI_ARGS > mac).
func parse(data []byte, cniArgs string) (*Config, childlink.Params, error) {
	c, err := decode(data)
	if err != nil {
		return nil, childlink.Params{}, err
	}
	if _, ok := modeOf(c.Mode); !ok {
		return nil, childlink.Params{}, cni.ConfigError("mode", "unknown macvlan mode %q (bridge, private, vepa, passthru)", c.Mode)
	}
	mac, err := c.ResolveMAC(cniArgs)
	if err != nil {
		return nil, childlink.Params{}, err
	}
	p := childlink.Params{Config: c.Config, MAC: mac, DefaultMaster: true, IPAM: ifattach.IPAMOptional, Notify: true}
	if err := p.Validate(); err != nil {
		return nil, childlink.Params{}, err
	}
	return c, p, nil
}

func (c *Config) kind() childlink.Kind {
	mode, _ := modeOf(c.Mode)
	return childlink.Kind{
		Type: "macvlan",
		New: func(attrs netlink.LinkAttrs) netlink.Link {
			return &netlink.Macvlan{LinkAttrs: attrs, Mode: mode}
		},
		Verify: func(l netlink.Link) error {
			m, ok := l.(*netlink.Macvlan)
			if !ok {
				return fmt.Errorf("interface %s is a %s, not a macvlan", l.Attrs().Name, l.Type())
			}
			if m.Mode != mode {
				return fmt.Errorf("macvlan %s is in mode %s, config says %s", l.Attrs().Name, modeName(m.Mode), modeName(mode))
			}
			return nil
		},
	}
}

func modeName(m netlink.MacvlanMode) string {
	for _, name := range []string{"bridge", "private", "vepa", "passthru"} {
		if v, _ := modeOf(name); v == m {
			return name
		}
	}
	return fmt.Sprintf("mode(%d)", m)
}

// Add creates the macvlan in the container, on the master (default: the
// host's default-route interface), with the IPAM plugin's addresses if the
// config has an ipam section.
func (p Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	c, params, err := parse(req.Config, req.Args)
	if err != nil {
		return nil, err
	}
	return childlink.Add(ctx, req, &c.NetConf, p.HostNS, params, c.kind())
}

// Del deletes the macvlan and releases its addresses.
func (p Plugin) Del(ctx context.Context, req *cni.Request) error {
	c, err := decode(req.Config)
	if err != nil {
		return err
	}
	return childlink.Del(ctx, req, &c.NetConf)
}

// Check compares prevResult with the container's macvlan.
func (p Plugin) Check(ctx context.Context, req *cni.Request) error {
	c, params, err := parse(req.Config, req.Args)
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
