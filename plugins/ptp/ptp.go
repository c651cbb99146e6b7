// Package ptp is the CNI ptp plugin: the container gets one end of a veth
// pair and reaches everything through the host, which routes to it. As the
// reference (containernetworking/plugins ptp) does it:
//
//   - container: the IPAM address with its prefix, but instead of the
//     connected route, "gw/32 dev eth0 scope link src IP" and
//     "subnet via gw src IP", so every destination (the subnet too) is
//     reached through the gateway; plus the IPAM routes;
//   - host: the gateway address as a /32 (/128) on the host veth and a
//     host route "IP/32 dev veth scope host"; forwarding on.
//
// Unlike the reference it does not wait for IPv6 DAD: addresses on both
// ends of the point-to-point link are added with IFA_F_NODAD. ipMasq uses
// nftables as the bridge plugin does (ipMasqBackend "iptables" accepted and
// mapped), a failed ADD undoes everything, DEL removes the masquerade rules
// even when the namespace is gone, and GC is implemented. IPAM results
// without a gateway are rejected (ptp routes through it).
package ptp

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
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/masq"
	"github.com/knit-cni/knit/pkg/vethnet"
)

// Config is ptp's config, key for key the reference's.
type Config struct {
	cni.NetConf
	IPMasq        bool    `json:"ipMasq"`
	IPMasqBackend *string `json:"ipMasqBackend,omitempty"`
	MTU           int     `json:"mtu"`

	ipamType string
}

// Plugin implements cni.Plugin and cni.GarbageCollector. It acts on the
// network namespace it runs in as the host side.
type Plugin struct{}

// containerIndex is the container interface's position in the result.
const containerIndex = 1

func parse(data []byte) (*Config, error) {
	c, err := decode(data)
	if err != nil {
		return nil, err
	}
	switch {
	case c.ipamType == "":
		return nil, cni.ConfigError("ipam", "ptp needs an IPAM plugin (ipam.type)")
	case c.MTU < 0:
		return nil, cni.ConfigError("mtu", "must not be negative, got %d", c.MTU)
	case c.IPMasqBackend != nil && *c.IPMasqBackend != "nftables" && *c.IPMasqBackend != "iptables":
		// knit masquerades with nftables either way; "iptables" is
		// accepted so that configs written for the reference keep working.
		return nil, cni.ConfigError("ipMasqBackend", "unknown backend %q (want \"nftables\" or \"iptables\")", *c.IPMasqBackend)
	}
	return c, nil
}

// decode reads a config without the checks ADD needs, for DEL and GC.
func decode(data []byte) (*Config, error) {
	c := &Config{}
	if err := cni.ParseConfig(data, c); err != nil {
		return nil, err
	}
	var err error
	c.ipamType, err = c.IPAMType()
	return c, err
}

// Add runs IPAM, creates the veth pair and routes both ways. A failure
// undoes all of it.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	conf, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	prev, err := conf.PrevResult()
	if err != nil {
		return nil, err
	}
	a, err := vethnet.Open(req, conf.Name)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	res, err := add(ctx, a, conf)
	if err != nil {
		a.Rollback()
		return nil, err
	}
	return vethnet.Merge(prev, res), nil
}

func add(ctx context.Context, a *vethnet.Attach, conf *Config) (*current.Result, error) {
	res, err := a.IPAM(ctx, conf.ipamType)
	if err != nil {
		return nil, err
	}
	gws := make([]net.IP, 0, len(res.IPs))
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil {
			return nil, cni.ConfigError("ipam", "no gateway for %s: ptp routes through the gateway address", ipc.Address.String())
		}
		ipc.Interface = current.Int(containerIndex)
		gws = append(gws, ipc.Gateway)
	}
	if err := vethnet.EnableForwardFor(gws); err != nil {
		return nil, err
	}
	hostVeth, contLink, err := a.AddVeth(conf.MTU, nil, 0)
	if err != nil {
		return nil, err
	}
	res.CNIVersion = current.ImplementedSpecVersion
	res.Interfaces = []*current.Interface{
		{Name: hostVeth.Attrs().Name, Mac: hostVeth.Attrs().HardwareAddr.String()},
		{Name: a.Req.IfName, Mac: contLink.Attrs().HardwareAddr.String(), Sandbox: a.Req.Netns},
	}
	if err := configureContainer(a.Cont.NL, contLink, res); err != nil {
		return nil, err
	}
	if err := configureHost(a.Host, hostVeth, res); err != nil {
		return nil, err
	}
	if conf.IPMasq {
		if err := a.Masquerade(ctx, res.IPs); err != nil {
			return nil, err
		}
	}
	if vethnet.DNSSet(conf.DNS) {
		res.DNS = conf.DNS
	}
	return res, nil
}

// configureContainer adds the addresses, link up and IPAM routes, then
// swaps each subnet's connected route for a route via the gateway.
func configureContainer(h *netlink.Handle, l netlink.Link, res *current.Result) error {
	if err := ipam.ConfigureLink(h, l, res, false); err != nil {
		return err
	}
	idx := l.Attrs().Index
	for _, ipc := range res.IPs {
		subnet := net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
		connected := &netlink.Route{LinkIndex: idx, Dst: &subnet, Scope: netlink.SCOPE_NOWHERE}
		if err := vethnet.IgnoreMissing(h.RouteDel(connected)); err != nil {
			return fmt.Errorf("removing connected route %s: %w", subnet.String(), err)
		}
		bits := hostBits(ipc.Address.IP)
		for _, r := range []*netlink.Route{
			{LinkIndex: idx, Dst: &net.IPNet{IP: ipc.Gateway, Mask: net.CIDRMask(bits, bits)}, Scope: netlink.SCOPE_LINK, Src: ipc.Address.IP},
			{LinkIndex: idx, Dst: &subnet, Scope: netlink.SCOPE_UNIVERSE, Gw: ipc.Gateway, Src: ipc.Address.IP},
		} {
			if err := h.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("adding route %s: %w", r.Dst.String(), err)
			}
		}
	}
	return nil
}

// configureHost puts each gateway on the host veth as a host address and
// routes each container address to the veth.
func configureHost(h *netlink.Handle, veth netlink.Link, res *current.Result) error {
	for _, ipc := range res.IPs {
		bits := hostBits(ipc.Address.IP)
		gw := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Gateway, Mask: net.CIDRMask(bits, bits)}}
		if bits == 128 {
			gw.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(veth, gw); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s to %s: %w", gw.IPNet.String(), veth.Attrs().Name, err)
		}
		dst := &net.IPNet{IP: ipc.Address.IP, Mask: net.CIDRMask(bits, bits)}
		r := &netlink.Route{LinkIndex: veth.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_HOST}
		if err := h.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding host route %s: %w", dst.String(), err)
		}
	}
	return nil
}

func hostBits(ip net.IP) int {
	if ip.To4() != nil {
		return 32
	}
	return 128
}

// Del removes the container's veth (the host end, its address and route go
// with it), the masquerade rules and the IPAM allocation. What is already
// gone, including the namespace, is success.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	conf, err := decode(req.Config)
	if err != nil {
		return err
	}
	var rules []vethnet.RuleFunc
	if conf.IPMasq {
		rules = append(rules, masq.Teardown)
	}
	return vethnet.Del(ctx, req, conf.Name, conf.ipamType, rules...)
}

// GC removes masquerade rules of this network's attachments that are not
// in valid and passes GC on to the IPAM plugin.
func (Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) error {
	conf, err := decode(req.Config)
	if err != nil {
		return err
	}
	return vethnet.GC(ctx, req, conf.Name, conf.ipamType, valid, masq.GC)
}
