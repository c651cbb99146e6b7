package hostlocal

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam/ipargs"
)

// DefaultDataDir is where allocations live unless ipam.dataDir says
// otherwise; the same directory as the reference plugin, so a node can
// switch between the two and keep its allocations.
const DefaultDataDir = "/var/lib/cni/networks"

// Config is the whole network config: an IPAM plugin receives its parent's
// config and reads ipam, runtimeConfig and args from it.
type Config struct {
	cni.NetConf
	IPAM          *IPAMConfig `json:"ipam"`
	RuntimeConfig struct {
		ipargs.RuntimeIPs
		// IPRanges is the "ipRanges" capability: range sets prepended to
		// ipam.ranges.
		IPRanges []RangeSet `json:"ipRanges,omitempty"`
	} `json:"runtimeConfig"`
	Args *ipargs.Args `json:"args,omitempty"`
}

// IPAMConfig is the ipam section. The flat subnet/rangeStart/rangeEnd/
// gateway keys are the legacy single-range form, kept as the first range set.
type IPAMConfig struct {
	Type string `json:"type"`
	Range
	Ranges     []RangeSet     `json:"ranges,omitempty"`
	Routes     []*types.Route `json:"routes,omitempty"`
	DataDir    string         `json:"dataDir,omitempty"`
	ResolvConf string         `json:"resolvConf,omitempty"`
}

// RangeSet is a list of ranges of one family; one address is allocated per
// set.
type RangeSet []Range

// Range is one allocation range as written in the config.
type Range struct {
	Subnet     string `json:"subnet,omitempty"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

// netConf is a parsed, validated config.
type netConf struct {
	conf       *Config
	name       string
	dataDir    string
	sets       []rangeSet
	requested  []ipargs.Addr
	routes     []*types.Route
	resolvConf string
}

// parseStore reads only what locating the network's directory needs: DEL
// and GC must release addresses even when the rest of the config has
// become invalid since ADD.
func parseStore(data []byte) (*Config, string, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, "", err
	}
	if c.IPAM == nil {
		return nil, "", cni.ConfigError("ipam", "missing")
	}
	if err := checkName(c.Name); err != nil {
		return nil, "", err
	}
	dir := c.IPAM.DataDir
	if dir == "" {
		dir = DefaultDataDir
	}
	return &c, dir, nil
}

// checkName rejects network names that are not a single path component,
// since the name is the directory under dataDir.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return cni.ConfigError("name", "%q cannot name a directory under dataDir", name)
	}
	return nil
}

// parse reads and validates the whole config plus the CNI_ARGS of the
// request, as ADD and CHECK need it.
func parse(data []byte, envArgs string) (*netConf, error) {
	c, dir, err := parseStore(data)
	if err != nil {
		return nil, err
	}
	n := &netConf{conf: c, name: c.Name, dataDir: dir,
		routes: c.IPAM.Routes, resolvConf: c.IPAM.ResolvConf}
	if n.requested, err = requested(c, envArgs); err != nil {
		return nil, err
	}
	if n.sets, err = rangeSets(c); err != nil {
		return nil, err
	}
	return n, nil
}

// requested collects the addresses asked for by runtimeConfig.ips,
// args.cni.ips and CNI_ARGS IP. Like the reference, the three are one list
// (every address must be satisfied, one per range set), not alternatives;
// the order only decides which address a range set takes first.
func requested(c *Config, envArgs string) ([]ipargs.Addr, error) {
	env, err := ipargs.LoadEnv(envArgs, false)
	if err != nil {
		return nil, err
	}
	var all []ipargs.Addr
	for _, src := range []struct {
		name  string
		items []string
	}{
		{ipargs.SourceRuntimeConfig, c.RuntimeConfig.IPs},
		{ipargs.SourceArgs, c.Args.IPs()},
		{ipargs.SourceEnv, env.IPs},
	} {
		addrs, err := ipargs.ParseAll(src.name, src.items, false)
		if err != nil {
			return nil, err
		}
		all = append(all, addrs...)
	}
	return dedupe(all), nil
}

func dedupe(addrs []ipargs.Addr) []ipargs.Addr {
	seen := make(map[netip.Addr]bool, len(addrs))
	out := addrs[:0]
	for _, a := range addrs {
		if !seen[a.IP] {
			seen[a.IP] = true
			out = append(out, a)
		}
	}
	return out
}

// rangeSets assembles the range sets in the reference's order —
// runtimeConfig.ipRanges, then the legacy flat range, then ipam.ranges —
// and validates each one and their overlaps.
func rangeSets(c *Config) ([]rangeSet, error) {
	type named struct {
		field string
		set   RangeSet
	}
	var raw []named
	for i, s := range c.RuntimeConfig.IPRanges {
		raw = append(raw, named{fmt.Sprintf("runtimeConfig.ipRanges[%d]", i), s})
	}
	// As in the reference, the flat keys count only when subnet is set.
	if c.IPAM.Subnet != "" {
		raw = append(raw, named{"ipam", RangeSet{c.IPAM.Range}})
	}
	for i, s := range c.IPAM.Ranges {
		raw = append(raw, named{fmt.Sprintf("ipam.ranges[%d]", i), s})
	}
	if len(raw) == 0 {
		return nil, cni.ConfigError("ipam.ranges", "no IP ranges specified (set ipam.ranges or ipam.subnet)")
	}
	sets := make([]rangeSet, len(raw))
	for i, r := range raw {
		s, err := parseSet(r.field, r.set)
		if err != nil {
			return nil, err
		}
		sets[i] = s
	}
	for i := range sets {
		for j := i + 1; j < len(sets); j++ {
			if a, b, ok := sets[i].overlap(sets[j]); ok {
				return nil, cni.ConfigError("ipam.ranges", "range set %d (%s) overlaps with range set %d (%s)", i, a, j, b)
			}
		}
	}
	return sets, nil
}

func parseSet(field string, set RangeSet) (rangeSet, error) {
	if len(set) == 0 {
		return nil, cni.ConfigError(field, "empty range set")
	}
	out := make(rangeSet, len(set))
	for i, r := range set {
		f := fmt.Sprintf("%s[%d]", field, i)
		if field == "ipam" {
			f = field
		}
		p, err := parseRange(f, r)
		if err != nil {
			return nil, err
		}
		if i > 0 && p.subnet.Addr().Is4() != out[0].subnet.Addr().Is4() {
			return nil, cni.ConfigError(field, "mixed address families in one range set (%s and %s)", out[0].subnet, p.subnet)
		}
		out[i] = p
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[i].overlaps(out[j]) {
				return nil, cni.ConfigError(field, "ranges %s and %s overlap", out[i], out[j])
			}
		}
	}
	return out, nil
}

// parseRange validates one range and fills in the reference's defaults:
// gateway = network+1, rangeStart = network+1, rangeEnd = the last address
// (IPv4: the one before broadcast).
func parseRange(field string, r Range) (rng, error) {
	if r.Subnet == "" {
		return rng{}, cni.ConfigError(field+".subnet", "missing")
	}
	subnet, err := netip.ParsePrefix(strings.TrimSpace(r.Subnet))
	if err != nil || subnet.Addr().Is4In6() || subnet.Addr().Zone() != "" {
		return rng{}, cni.ConfigError(field+".subnet", "%q is not a CIDR subnet", r.Subnet)
	}
	if subnet.Masked() != subnet {
		return rng{}, cni.ConfigError(field+".subnet", "%s has host bits set; the network address is %s", subnet, subnet.Masked())
	}
	if subnet.Bits() > subnet.Addr().BitLen()-2 {
		return rng{}, cni.ConfigError(field+".subnet", "network %s is too small to allocate from", subnet)
	}
	out := rng{subnet: subnet, start: subnet.Addr().Next(), end: lastAddr(subnet), gw: subnet.Addr().Next()}
	for _, f := range []struct {
		key, val string
		dst      *netip.Addr
	}{{"gateway", r.Gateway, &out.gw}, {"rangeStart", r.RangeStart, &out.start}, {"rangeEnd", r.RangeEnd, &out.end}} {
		if f.val == "" {
			continue
		}
		ip, err := ipargs.ParseIP(f.val)
		if err != nil {
			return rng{}, cni.ConfigError(field+"."+f.key, "%q: %v", f.val, err)
		}
		if !subnet.Contains(ip) {
			return rng{}, cni.ConfigError(field+"."+f.key, "%s is not in subnet %s", ip, subnet)
		}
		*f.dst = ip
	}
	if out.end.Less(out.start) {
		return rng{}, cni.ConfigError(field+".rangeEnd", "%s is before rangeStart %s", out.end, out.start)
	}
	return out, nil
}

// lastAddr is the subnet's last address, minus the broadcast for IPv4.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		if bits >= 8 {
			bits -= 8
			continue
		}
		b[i] |= 0xff >> bits
		bits = 0
	}
	last, _ := netip.AddrFromSlice(b)
	if last.Is4() {
		last = last.Prev()
	}
	return last
}
