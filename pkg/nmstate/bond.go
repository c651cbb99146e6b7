package nmstate

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// bondOption sets one nmstate bond option (kernel bonding names) on a
// netlink Bond whose unset fields are -1, as netlink.NewLinkBond makes them.
type bondOption func(b *netlink.Bond, v string, byName func(string) (int, error)) error

func intOpt(set func(*netlink.Bond, int)) bondOption {
	return func(b *netlink.Bond, v string, _ func(string) (int, error)) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a non-negative integer", v)
		}
		set(b, n)
		return nil
	}
}

func enumOpt[T ~int](m map[string]T, set func(*netlink.Bond, T)) bondOption {
	return func(b *netlink.Bond, v string, _ func(string) (int, error)) error {
		x, ok := m[v]
		if !ok {
			return fmt.Errorf("%q is not one of %s", v, strings.Join(keysOf(m), ", "))
		}
		set(b, x)
		return nil
	}
}

func keysOf[T any](m map[string]T) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// bondOptions are the options knit applies; any other name is an error
// that names it, never silently ignored.
var bondOptions = map[string]bondOption{
	"miimon":            intOpt(func(b *netlink.Bond, n int) { b.Miimon = n }),
	"updelay":           intOpt(func(b *netlink.Bond, n int) { b.UpDelay = n }),
	"downdelay":         intOpt(func(b *netlink.Bond, n int) { b.DownDelay = n }),
	"use_carrier":       intOpt(func(b *netlink.Bond, n int) { b.UseCarrier = n }),
	"arp_interval":      intOpt(func(b *netlink.Bond, n int) { b.ArpInterval = n }),
	"resend_igmp":       intOpt(func(b *netlink.Bond, n int) { b.ResendIgmp = n }),
	"num_grat_arp":      intOpt(func(b *netlink.Bond, n int) { b.NumPeerNotif = n }),
	"num_unsol_na":      intOpt(func(b *netlink.Bond, n int) { b.NumPeerNotif = n }),
	"all_slaves_active": intOpt(func(b *netlink.Bond, n int) { b.AllSlavesActive = n }),
	"min_links":         intOpt(func(b *netlink.Bond, n int) { b.MinLinks = n }),
	"lp_interval":       intOpt(func(b *netlink.Bond, n int) { b.LpInterval = n }),
	"packets_per_slave": intOpt(func(b *netlink.Bond, n int) { b.PacketsPerSlave = n }),
	"tlb_dynamic_lb":    intOpt(func(b *netlink.Bond, n int) { b.TlbDynamicLb = n }),
	"ad_actor_sys_prio": intOpt(func(b *netlink.Bond, n int) { b.AdActorSysPrio = n }),
	"ad_user_port_key":  intOpt(func(b *netlink.Bond, n int) { b.AdUserPortKey = n }),
	"xmit_hash_policy":  enumOpt(netlink.StringToBondXmitHashPolicyMap, func(b *netlink.Bond, x netlink.BondXmitHashPolicy) { b.XmitHashPolicy = x }),
	"lacp_rate":         enumOpt(netlink.StringToBondLacpRateMap, func(b *netlink.Bond, x netlink.BondLacpRate) { b.LacpRate = x }),
	"ad_select":         enumOpt(netlink.StringToBondAdSelectMap, func(b *netlink.Bond, x netlink.BondAdSelect) { b.AdSelect = x }),
	"arp_validate":      enumOpt(netlink.StringToBondArpValidateMap, func(b *netlink.Bond, x netlink.BondArpValidate) { b.ArpValidate = x }),
	"arp_all_targets":   enumOpt(netlink.StringToBondArpAllTargetsMap, func(b *netlink.Bond, x netlink.BondArpAllTargets) { b.ArpAllTargets = x }),
	"primary_reselect":  enumOpt(netlink.StringToBondPrimaryReselectMap, func(b *netlink.Bond, x netlink.BondPrimaryReselect) { b.PrimaryReselect = x }),
	"fail_over_mac":     enumOpt(netlink.StringToBondFailOverMacMap, func(b *netlink.Bond, x netlink.BondFailOverMac) { b.FailOverMac = x }),
	"arp_ip_target": func(b *netlink.Bond, v string, _ func(string) (int, error)) error {
		for _, s := range strings.Split(v, ",") {
			ip := net.ParseIP(strings.TrimSpace(s))
			if ip == nil {
				return fmt.Errorf("%q is not an IP", s)
			}
			b.ArpIpTargets = append(b.ArpIpTargets, ip)
		}
		return nil
	},
	"primary": func(b *netlink.Bond, v string, byName func(string) (int, error)) error {
		idx, err := byName(v)
		b.Primary = idx
		return err
	},
}

// validateBondOptions rejects unknown option names at parse time.
func validateBondOptions(opts map[string]string) error {
	for k := range opts {
		if _, ok := bondOptions[k]; !ok {
			return fmt.Errorf("link-aggregation.options.%s: unsupported bond option (supported: %s)", k,
				strings.Join(keysOf(bondOptions), ", "))
		}
	}
	return nil
}

// setBondOptions fills b's fields from the options.
func (e *Engine) setBondOptions(b *netlink.Bond, opts map[string]string) error {
	byName := func(name string) (int, error) {
		l, err := e.NL.LinkByName(name)
		if err != nil {
			return 0, fmt.Errorf("no interface %s", name)
		}
		return l.Attrs().Index, nil
	}
	for _, k := range keysOf(opts) {
		if err := bondOptions[k](b, opts[k], byName); err != nil {
			return fmt.Errorf("link-aggregation.options.%s: %w", k, err)
		}
	}
	return nil
}

// liveBondOptions are the options changed in place on an existing bond
// (with ports, up), by their IFLA_BOND_* attribute; the others can only be
// given when the bond is created.
var liveBondOptions = map[string]int{"miimon": nl.IFLA_BOND_MIIMON, "updelay": nl.IFLA_BOND_UPDELAY,
	"downdelay": nl.IFLA_BOND_DOWNDELAY, "min_links": nl.IFLA_BOND_MIN_LINKS}

// modifyBond applies changed options to an existing bond.
func (e *Engine) modifyBond(l netlink.Link, la *LinkAggregation) error {
	if la == nil || len(la.Options) == 0 {
		return nil
	}
	cur, ok := l.(*netlink.Bond)
	if !ok {
		return fmt.Errorf("%s is not a bond", l.Attrs().Name)
	}
	have := bondOptionsOf(cur)
	for _, k := range keysOf(la.Options) {
		v := la.Options[k]
		if have[k] == v {
			continue
		}
		attr, live := liveBondOptions[k]
		if !live {
			return fmt.Errorf("link-aggregation.options.%s: can only be set when the bond is created", k)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("link-aggregation.options.%s: %q is not a non-negative integer", k, v)
		}
		if err := e.setInfoData(l, "bond", attr, nl.Uint32Attr(uint32(n))); err != nil {
			return fmt.Errorf("link-aggregation.options.%s: %w", k, err)
		}
	}
	return nil
}

// bondOptionsOf reports the options a current-state reader shows.
func bondOptionsOf(b *netlink.Bond) map[string]string {
	// Only options every mode accepts at any time: the state a rollback
	// writes back must be settable on a bond with ports.
	return map[string]string{
		"miimon":    strconv.Itoa(b.Miimon),
		"updelay":   strconv.Itoa(b.UpDelay),
		"downdelay": strconv.Itoa(b.DownDelay),
		"min_links": strconv.Itoa(b.MinLinks),
	}
}
