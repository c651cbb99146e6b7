package nmstate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"sigs.k8s.io/yaml"
)

// Parse decodes a desired state from YAML or JSON. Unknown fields are
// errors that name the field, as nmstate's schema denies them.
func Parse(data []byte) (*State, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("desired state: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var s State
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("desired state: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks what the schema alone cannot: names, known types and
// states, addresses, and that each type-specific section fits the type.
func (s *State) Validate() error {
	seen := map[string]bool{}
	for i := range s.Interfaces {
		ifc := &s.Interfaces[i]
		if err := ifc.validate(); err != nil {
			return fmt.Errorf("interfaces[%d] (%s): %w", i, ifc.Name, err)
		}
		if seen[ifc.Name] {
			return fmt.Errorf("interfaces[%d]: %s listed twice", i, ifc.Name)
		}
		seen[ifc.Name] = true
	}
	if s.Routes != nil {
		for i, r := range s.Routes.Config {
			if err := r.validate(); err != nil {
				return fmt.Errorf("routes.config[%d]: %w", i, err)
			}
		}
	}
	if s.RouteRules != nil {
		for i, r := range s.RouteRules.Config {
			if err := r.validate(); err != nil {
				return fmt.Errorf("route-rules.config[%d]: %w", i, err)
			}
		}
	}
	return nil
}

var knownTypes = map[string]bool{TypeEthernet: true, TypeLinuxBridge: true, TypeBond: true, TypeVLAN: true,
	TypeVXLAN: true, TypeMacVlan: true, TypeMacVtap: true, TypeVeth: true, TypeDummy: true, TypeLoopback: true}

func (ifc *Interface) validate() error {
	if ifc.Name == "" || len(ifc.Name) > 15 || strings.ContainsAny(ifc.Name, "/: \t\n") {
		return fmt.Errorf("name: invalid interface name %q", ifc.Name)
	}
	switch ifc.State {
	case "", StateUp, StateDown, StateAbsent, StateIgnore:
	default:
		return fmt.Errorf("state: %q is not one of up, down, absent, ignore", ifc.State)
	}
	if ifc.Type != "" && !knownTypes[ifc.Type] {
		return fmt.Errorf("type: unsupported interface type %q", ifc.Type)
	}
	if err := ifc.validateSections(); err != nil {
		return err
	}
	for _, ipc := range []struct {
		name string
		c    *IPConfig
		v4   bool
	}{{"ipv4", ifc.IPv4, true}, {"ipv6", ifc.IPv6, false}} {
		if err := ipc.c.validate(ipc.v4); err != nil {
			return fmt.Errorf("%s: %w", ipc.name, err)
		}
	}
	if ifc.MACAddress != nil {
		if _, err := net.ParseMAC(*ifc.MACAddress); err != nil {
			return fmt.Errorf("mac-address: %w", err)
		}
	}
	if ifc.MTU != nil && (*ifc.MTU < 68 || *ifc.MTU > 65535) {
		return fmt.Errorf("mtu: %d out of range 68-65535", *ifc.MTU)
	}
	return nil
}

// validateSections rejects a type-specific section on another type, and
// a creatable type without the section it needs.
func (ifc *Interface) validateSections() error {
	sections := map[string]bool{TypeLinuxBridge: ifc.Bridge != nil, TypeBond: ifc.LinkAggregation != nil,
		TypeVLAN: ifc.VLAN != nil, TypeVXLAN: ifc.VXLAN != nil, TypeMacVlan: ifc.MacVlan != nil,
		TypeMacVtap: ifc.MacVtap != nil, TypeVeth: ifc.Veth != nil}
	for t, present := range sections {
		if present && ifc.Type != "" && ifc.Type != t {
			return fmt.Errorf("type: %s settings given for an interface of type %s", t, ifc.Type)
		}
	}
	if ifc.VLAN != nil && (ifc.VLAN.ID < 0 || ifc.VLAN.ID > 4094 || ifc.VLAN.BaseIface == "") {
		return fmt.Errorf("vlan: needs base-iface and an id in 0-4094")
	}
	if ifc.VXLAN != nil && (ifc.VXLAN.ID < 0 || ifc.VXLAN.ID > 1<<24-1) {
		return fmt.Errorf("vxlan.id: %d out of range", ifc.VXLAN.ID)
	}
	for _, m := range []*MacVlan{ifc.MacVlan, ifc.MacVtap} {
		if m != nil && m.BaseIface == "" {
			return fmt.Errorf("base-iface: required")
		}
		if m == nil || m.Mode == "" {
			continue
		}
		if _, ok := macvlanMode(m.Mode); !ok {
			return fmt.Errorf("mode: unknown mode %q", m.Mode)
		}
	}
	if la := ifc.LinkAggregation; la != nil {
		if _, ok := bondMode(la.Mode); la.Mode != "" && !ok {
			return fmt.Errorf("link-aggregation.mode: unknown mode %q", la.Mode)
		}
		if err := validateBondOptions(la.Options); err != nil {
			return err
		}
	}
	return nil
}

func (c *IPConfig) validate(v4 bool) error {
	if c == nil || c.Address == nil {
		return nil
	}
	for i, a := range *c.Address {
		ip := net.ParseIP(a.IP)
		if ip == nil || (ip.To4() != nil) != v4 {
			return fmt.Errorf("address[%d].ip: %q is not an IPv%s address", i, a.IP, map[bool]string{true: "4", false: "6"}[v4])
		}
		if max := map[bool]int{true: 32, false: 128}[v4]; a.PrefixLength < 0 || a.PrefixLength > max {
			return fmt.Errorf("address[%d].prefix-length: %d out of range", i, a.PrefixLength)
		}
	}
	return nil
}

func (r *Route) validate() error {
	if r.State != "" && r.State != StateAbsent {
		return fmt.Errorf("state: only absent is allowed, got %q", r.State)
	}
	if r.Destination != "" {
		if _, _, err := net.ParseCIDR(r.Destination); err != nil {
			return fmt.Errorf("destination: %w", err)
		}
	} else if r.State != StateAbsent {
		return fmt.Errorf("destination: required")
	}
	if r.NextHopAddress != "" && net.ParseIP(r.NextHopAddress) == nil {
		return fmt.Errorf("next-hop-address: %q is not an IP", r.NextHopAddress)
	}
	return nil
}

func (r *RouteRule) validate() error {
	if r.State != "" && r.State != StateAbsent {
		return fmt.Errorf("state: only absent is allowed, got %q", r.State)
	}
	for name, v := range map[string]string{"ip-from": r.IPFrom, "ip-to": r.IPTo} {
		if v == "" {
			continue
		}
		if _, _, err := net.ParseCIDR(v); err != nil && net.ParseIP(v) == nil {
			return fmt.Errorf("%s: %q is neither an IP nor a CIDR", name, v)
		}
	}
	return nil
}
