// Package sbr is the CNI source-based-routing meta plugin. Chained after
// the plugin that created an interface, it makes traffic from that
// interface's addresses use a routing table of its own: `ip rule from
// <addr> lookup N`, with the interface's routes (and a default route via its
// gateway) moved from the main table into table N. So a pod with several
// interfaces answers on each from the right one.
package sbr

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
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// firstTable is where the search for a free table starts, as in the
// reference.
const firstTable = 100

// Config is sbr's config, keyed as containernetworking/plugins' sbr.
type Config struct {
	cni.NetConf
	// Table, when set, is the table the rules point at; the interface's
	// routes are expected there already (CNI 1.1 route tables) and are not
	// moved.
	Table *int `json:"table,omitempty"`
}

// Plugin implements cni.Plugin and cni.GarbageCollector.
type Plugin struct{}

func parse(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	if c.Table != nil {
		t := *c.Table
		if t <= 0 || t >= unix.RT_TABLE_COMPAT && t <= unix.RT_TABLE_LOCAL || t > 1<<31-1 {
			return nil, cni.ConfigError("table", "%d is not a usable routing table (reserved or out of range)", t)
		}
	}
	return &c, nil
}

// ipsOf returns prevResult's addresses of ifName; an address without an
// interface index belongs to it, as in the reference.
func ipsOf(res *current.Result, ifName string) []*current.IPConfig {
	var out []*current.IPConfig
	for _, ipc := range res.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i >= 0 && i < len(res.Interfaces) && res.Interfaces[i].Name != ifName {
				continue
			}
		}
		out = append(out, ipc)
	}
	return out
}

func hostMask(ip net.IP) net.IPMask {
	if ip.To4() != nil {
		return net.CIDRMask(32, 32)
	}
	return net.CIDRMask(128, 128)
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func load(req *cni.Request) (*Config, []*current.IPConfig, *current.Result, error) {
	conf, err := parse(req.Config)
	if err != nil {
		return nil, nil, nil, err
	}
	prev, err := conf.PrevResult()
	if err != nil {
		return nil, nil, nil, err
	}
	if prev == nil {
		return nil, nil, nil, cni.ConfigError("prevResult", "sbr is a chained plugin: list it after the plugin that creates %s", req.IfName)
	}
	ips := ipsOf(prev, req.IfName)
	if len(ips) == 0 {
		return nil, nil, nil, cni.ConfigError("prevResult", "no IP addresses for %s to route by source", req.IfName)
	}
	return conf, ips, prev, nil
}

// Add installs the rules and the table; on failure it undoes them.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	conf, ips, prev, err := load(req)
	if err != nil {
		return nil, err
	}
	t, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	unlock, err := lockNetns(t.NS)
	if err != nil {
		return nil, err
	}
	defer unlock()
	link, err := t.NL.LinkByName(req.IfName)
	if err != nil {
		return nil, fmt.Errorf("finding %s in the container: %w", req.IfName, err)
	}
	r := &router{h: t.NL, link: link}
	if err := r.setup(ips, conf.Table); err != nil {
		return nil, errors.Join(err, r.undo())
	}
	return prev, nil
}

// Del removes the rules from the interface's addresses and the table's
// routes through the interface. A namespace or link that is gone is
// success: its rules went with it or are found by address.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	if req.Netns == "" {
		return nil
	}
	t, err := netns.OpenTarget(req.Netns)
	if errors.Is(err, netns.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer t.Close()
	unlock, err := lockNetns(t.NS)
	if err != nil {
		return err
	}
	defer unlock()
	addrs := delAddrs(t.NL, req.IfName, conf)
	return teardown(t.NL, req.IfName, addrs, conf.Table)
}

// delAddrs collects the addresses whose rules DEL removes: prevResult's
// for the interface and those still on the link.
func delAddrs(h *netlink.Handle, ifName string, conf *Config) []net.IP {
	var out []net.IP
	if prev, err := conf.PrevResult(); err == nil && prev != nil {
		for _, ipc := range ipsOf(prev, ifName) {
			out = append(out, ipc.Address.IP)
		}
	}
	if l, err := h.LinkByName(ifName); err == nil {
		if as, err := nlsafe.AddrList(h, l, netlink.FAMILY_ALL); err == nil {
			for _, a := range as {
				out = append(out, a.IP)
			}
		}
	}
	return out
}

// Check verifies a rule for each address and, for a table sbr chose, the
// default route via each gateway in it.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	conf, ips, _, err := load(req)
	if err != nil {
		return err
	}
	t, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return err
	}
	defer t.Close()
	link, err := t.NL.LinkByName(req.IfName)
	if err != nil {
		return fmt.Errorf("finding %s in the container: %w", req.IfName, err)
	}
	for _, ipc := range ips {
		table, err := ruleTable(t.NL, ipc.Address.IP)
		if err != nil {
			return err
		}
		if conf.Table != nil && table != *conf.Table {
			return fmt.Errorf("rule from %s looks up table %d, configured %d", ipc.Address.IP, table, *conf.Table)
		}
		if conf.Table == nil && ipc.Gateway != nil {
			if err := checkDefault(t.NL, link, table, ipc.Gateway); err != nil {
				return err
			}
		}
	}
	return nil
}

// ruleTable returns the table of the source rule for ip.
func ruleTable(h *netlink.Handle, ip net.IP) (int, error) {
	rules, err := nlsafe.RuleList(h, family(ip))
	if err != nil {
		return 0, fmt.Errorf("listing rules: %w", err)
	}
	for _, r := range rules {
		if isSrcRule(r, ip) {
			return r.Table, nil
		}
	}
	return 0, fmt.Errorf("no rule from %s", ip)
}

func isSrcRule(r netlink.Rule, ip net.IP) bool {
	if r.Src == nil || !r.Src.IP.Equal(ip) {
		return false
	}
	ones, bits := r.Src.Mask.Size()
	return ones == bits
}

func checkDefault(h *netlink.Handle, link netlink.Link, table int, gw net.IP) error {
	routes, err := nlsafe.RouteListFiltered(h, family(gw), &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing table %d: %w", table, err)
	}
	for _, r := range routes {
		if isDefault(r.Dst) && r.Gw.Equal(gw) && r.LinkIndex == link.Attrs().Index {
			return nil
		}
	}
	return fmt.Errorf("table %d has no default route via %s on %s", table, gw, link.Attrs().Name)
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// GC has nothing to collect: sbr's rules and tables live in the
// container's namespace and are destroyed with it. It only validates the
// config, so a broken config is still reported.
func (Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) error {
	_, err := parse(req.Config)
	return err
}
