// Package static is the static IPAM plugin: it returns the addresses,
// routes and DNS its config (or the runtime) names, and holds no state.
package static

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam/ipargs"
)

// Config is the whole network config (an IPAM plugin receives its
// parent's config).
type Config struct {
	cni.NetConf
	IPAM          *IPAMConfig `json:"ipam"`
	RuntimeConfig struct {
		ipargs.RuntimeIPs
	} `json:"runtimeConfig"`
	Args *ipargs.Args `json:"args,omitempty"`
}

// IPAMConfig is the ipam section.
type IPAMConfig struct {
	Type      string         `json:"type"`
	Addresses []Address      `json:"addresses,omitempty"`
	Routes    []*types.Route `json:"routes,omitempty"`
	DNS       types.DNS      `json:"dns"`
}

// Address is one configured address: a CIDR and an optional gateway.
type Address struct {
	Address string `json:"address"`
	Gateway string `json:"gateway,omitempty"`
}

// addr is a validated address.
type addr struct {
	prefix netip.Prefix // the address with its prefix length
	gw     netip.Addr   // invalid when none
}

// Plugin implements cni.Plugin.
type Plugin struct{}

// parse validates the config and CNI_ARGS and returns the addresses to
// hand out, with the reference's precedence: runtimeConfig.ips replaces
// everything, else args.cni.ips does, else the configured addresses
// followed by CNI_ARGS IP (whose gateways CNI_ARGS GATEWAY sets).
func parse(data []byte, envArgs string) (*Config, []addr, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, nil, err
	}
	if c.IPAM == nil {
		return nil, nil, cni.ConfigError("ipam", "missing")
	}
	env, err := ipargs.LoadEnv(envArgs, true)
	if err != nil {
		return nil, nil, err
	}
	conf, err := configured(c.IPAM.Addresses)
	if err != nil {
		return nil, nil, err
	}
	fromEnv, err := envAddrs(env)
	if err != nil {
		return nil, nil, err
	}
	for _, src := range []struct {
		name  string
		items []string
	}{{ipargs.SourceRuntimeConfig, c.RuntimeConfig.IPs}, {ipargs.SourceArgs, c.Args.IPs()}} {
		if len(src.items) == 0 {
			continue
		}
		list, err := ipargs.ParseAll(src.name, src.items, true)
		return &c, fromRequested(list), err
	}
	return &c, append(conf, fromEnv...), nil
}

func configured(list []Address) ([]addr, error) {
	out := make([]addr, 0, len(list))
	for i, a := range list {
		field := fmt.Sprintf("ipam.addresses[%d]", i)
		p, err := ipargs.ParseCIDR(a.Address)
		if err != nil {
			return nil, cni.ConfigError(field+".address", "%q: %v", a.Address, err)
		}
		x := addr{prefix: p}
		if a.Gateway != "" {
			if x.gw, err = ipargs.ParseIP(a.Gateway); err != nil {
				return nil, cni.ConfigError(field+".gateway", "%q: %v", a.Gateway, err)
			}
		}
		out = append(out, x)
	}
	return out, nil
}

// envAddrs turns CNI_ARGS IP into addresses; each CNI_ARGS GATEWAY becomes
// the gateway of the CNI_ARGS addresses whose subnet holds it (a later one
// wins), as in the reference.
func envAddrs(env ipargs.Env) ([]addr, error) {
	list, err := ipargs.ParseAll(ipargs.SourceEnv, env.IPs, true)
	if err != nil {
		return nil, err
	}
	out := fromRequested(list)
	for _, g := range env.Gateways {
		gw, err := ipargs.Parse(ipargs.SourceEnvGateway, g, false)
		if err != nil {
			return nil, err
		}
		if gw.Bits >= 0 {
			return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "%s: %q is not a bare IP address", ipargs.SourceEnvGateway, g)
		}
		for i := range out {
			if out[i].prefix.Masked().Contains(gw.IP) {
				out[i].gw = gw.IP
			}
		}
	}
	return out, nil
}

func fromRequested(list []ipargs.Addr) []addr {
	out := make([]addr, len(list))
	for i, a := range list {
		out[i] = addr{prefix: a.Prefix()}
	}
	return out
}

// Add returns the addresses. An IPAM plugin ignores prevResult on ADD: its
// caller merges the result itself.
func (Plugin) Add(_ context.Context, req *cni.Request) (types.Result, error) {
	c, addrs, err := parse(req.Config, req.Args)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: c.IPAM.Routes, DNS: c.IPAM.DNS}
	for _, a := range addrs {
		ipc := &current.IPConfig{Address: net.IPNet{IP: a.prefix.Addr().AsSlice(),
			Mask: net.CIDRMask(a.prefix.Bits(), a.prefix.Addr().BitLen())}}
		if a.gw.IsValid() {
			ipc.Gateway = a.gw.AsSlice()
		}
		res.IPs = append(res.IPs, ipc)
	}
	return res, nil
}

// Del has nothing to release. It checks only that the config decodes, so
// a config whose addresses became invalid can still be torn down.
func (Plugin) Del(_ context.Context, req *cni.Request) error {
	var c Config
	return cni.ParseConfig(req.Config, &c)
}

// Check verifies that prevResult carries every address this config hands
// out, with the same prefix length and, where one is configured, the same
// gateway.
func (Plugin) Check(_ context.Context, req *cni.Request) error {
	c, addrs, err := parse(req.Config, req.Args)
	if err != nil {
		return err
	}
	prev, err := c.PrevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return cni.ConfigError("prevResult", "required for CHECK")
	}
	for _, a := range addrs {
		if err := findIn(prev, a); err != nil {
			return err
		}
	}
	return nil
}

func findIn(prev *current.Result, a addr) error {
	for _, ipc := range prev.IPs {
		ip, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok || ip.Unmap() != a.prefix.Addr() {
			continue
		}
		if ones, _ := ipc.Address.Mask.Size(); ones != a.prefix.Bits() {
			return fmt.Errorf("static: prevResult has %s, config says %s", ipc.Address.String(), a.prefix)
		}
		if a.gw.IsValid() && !ipc.Gateway.Equal(a.gw.AsSlice()) {
			return fmt.Errorf("static: prevResult gateway of %s is %v, config says %s", a.prefix, ipc.Gateway, a.gw)
		}
		return nil
	}
	return fmt.Errorf("static: address %s missing from prevResult", a.prefix)
}
