package nmstate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Verify waits (up to VerifyTimeout) for the kernel to match every field the
// desired state gives, and returns the first difference if it never does.
func (e *Engine) Verify(ctx context.Context, d *State) error {
	deadline := time.Now().Add(e.verifyTimeout())
	for {
		cur, err := e.Read()
		if err != nil {
			return err
		}
		diff := compare(d, cur)
		if diff == nil || time.Now().After(deadline) {
			return diff
		}
		select {
		case <-ctx.Done():
			return errors.Join(diff, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func compare(d, cur *State) error {
	byName := map[string]*Interface{}
	for i := range cur.Interfaces {
		byName[cur.Interfaces[i].Name] = &cur.Interfaces[i]
	}
	for i := range d.Interfaces {
		want := &d.Interfaces[i]
		if err := compareIface(want, byName[want.Name]); err != nil {
			return fmt.Errorf("%s: %w", want.Name, err)
		}
	}
	if err := compareRoutes(d.Routes, cur.Routes); err != nil {
		return err
	}
	return compareDNS(d.DNSResolver, cur.DNSResolver)
}

func compareIface(want, have *Interface) error {
	switch {
	case want.State == StateIgnore:
		return nil
	case want.State == StateAbsent:
		if have != nil && have.Type != TypeEthernet && have.Type != TypeLoopback {
			return errors.New("still exists, desired absent")
		}
		return nil
	case have == nil:
		return errors.New("does not exist")
	}
	if err := compareAttrs(want, have); err != nil {
		return err
	}
	if err := compareIP("ipv4", want.IPv4, have.IPv4); err != nil {
		return err
	}
	if err := compareIP("ipv6", want.IPv6, have.IPv6); err != nil {
		return err
	}
	return comparePorts(want, have)
}

func compareAttrs(want, have *Interface) error {
	wantState := want.State
	if wantState == "" {
		wantState = StateUp
	}
	if have.State != wantState {
		return fmt.Errorf("state is %s, desired %s", have.State, wantState)
	}
	if want.Type != "" && want.Type != have.Type {
		return fmt.Errorf("type is %s, desired %s", have.Type, want.Type)
	}
	if want.MTU != nil && (have.MTU == nil || *want.MTU != *have.MTU) {
		return fmt.Errorf("mtu is %v, desired %d", deref(have.MTU), *want.MTU)
	}
	if want.MACAddress != nil && (have.MACAddress == nil || !strings.EqualFold(*want.MACAddress, *have.MACAddress)) {
		return fmt.Errorf("mac-address is %v, desired %s", deref(have.MACAddress), *want.MACAddress)
	}
	if want.Description != nil && *want.Description != deref(have.Description) {
		return fmt.Errorf("description is %q, desired %q", deref(have.Description), *want.Description)
	}
	if want.VLAN != nil && (have.VLAN == nil || *want.VLAN != *have.VLAN) {
		return fmt.Errorf("vlan is %+v, desired %+v", have.VLAN, *want.VLAN)
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func compareIP(family string, want, have *IPConfig) error {
	if want == nil {
		return nil
	}
	var got []Address
	if have != nil && have.Address != nil {
		got = *have.Address
	}
	if want.Enabled != nil && !*want.Enabled && len(got) > 0 {
		return fmt.Errorf("%s: disabled but has addresses %v", family, got)
	}
	if want.DHCP != nil && *want.DHCP && len(got) == 0 {
		return fmt.Errorf("%s: dhcp gave no address yet", family)
	}
	if want.Address != nil && (want.DHCP == nil || !*want.DHCP) && !sameAddrs(*want.Address, got) {
		return fmt.Errorf("%s: addresses are %v, desired %v", family, got, *want.Address)
	}
	return nil
}

func sameAddrs(a, b []Address) bool {
	norm := func(l []Address) []string {
		out := make([]string, 0, len(l))
		for _, x := range l {
			out = append(out, fmt.Sprintf("%s/%d", net.ParseIP(x.IP), x.PrefixLength))
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(a), norm(b))
}

func comparePorts(want, have *Interface) error {
	if want.Bridge != nil {
		if have.Bridge == nil {
			return errors.New("is not a bridge")
		}
		if want.Bridge.Port != nil {
			var w []string
			for _, p := range *want.Bridge.Port {
				w = append(w, p.Name)
			}
			if err := sameNames("bridge.port", w, bridgePortNames(have.Bridge)); err != nil {
				return err
			}
		}
		if err := comparePortVLANs(want.Bridge, have.Bridge); err != nil {
			return err
		}
		if o := want.Bridge.Options; o != nil && o.STP != nil && o.STP.Enabled != nil {
			got := have.Bridge.Options.STP.Enabled
			if *got != *o.STP.Enabled {
				return fmt.Errorf("bridge.options.stp.enabled is %v, desired %v", *got, *o.STP.Enabled)
			}
		}
	}
	if la := want.LinkAggregation; la != nil {
		if have.LinkAggregation == nil {
			return errors.New("is not a bond")
		}
		for k, v := range la.Options {
			if got, reported := have.LinkAggregation.Options[k]; reported && got != v {
				return fmt.Errorf("link-aggregation.options.%s is %s, desired %s", k, got, v)
			}
		}
		if la.Port != nil {
			return sameNames("link-aggregation.port", *la.Port, deref(have.LinkAggregation.Port))
		}
	}
	return nil
}

func comparePortVLANs(want, have *Bridge) error {
	if want.Port == nil {
		return nil
	}
	got := map[string]*BridgePortVLAN{}
	for _, p := range deref(have.Port) {
		got[p.Name] = p.VLAN
	}
	for _, p := range *want.Port {
		if !sameVLAN(p.VLAN, got[p.Name]) {
			return fmt.Errorf("bridge.port %s vlan is %+v, desired %+v", p.Name, got[p.Name], p.VLAN)
		}
	}
	return nil
}

func bridgePortNames(b *Bridge) []string {
	var out []string
	for _, p := range deref(b.Port) {
		out = append(out, p.Name)
	}
	return out
}

func sameNames(field string, want, have []string) error {
	w, h := slices.Clone(want), slices.Clone(have)
	slices.Sort(w)
	slices.Sort(h)
	if !slices.Equal(w, h) {
		return fmt.Errorf("%s is %v, desired %v", field, h, w)
	}
	return nil
}

func compareRoutes(want, have *Routes) error {
	if want == nil {
		return nil
	}
	for _, w := range want.Config {
		found := false
		for _, h := range have.Running {
			if routeMatches(w, h) {
				found = true
				break
			}
		}
		if w.State == StateAbsent && found {
			return fmt.Errorf("route %s still present, desired absent", w.Destination)
		}
		if w.State != StateAbsent && !found {
			return fmt.Errorf("route %s via %s not present", w.Destination, w.NextHopAddress)
		}
	}
	return nil
}

func compareDNS(want, have *DNSResolver) error {
	if want == nil || want.Config == nil {
		return nil
	}
	if !slices.Equal(want.Config.Server, have.Config.Server) || !slices.Equal(want.Config.Search, have.Config.Search) {
		return fmt.Errorf("dns-resolver is %+v, desired %+v", *have.Config, *want.Config)
	}
	return nil
}
