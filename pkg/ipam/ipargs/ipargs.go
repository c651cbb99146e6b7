// Package ipargs parses the three ways a runtime asks an IPAM plugin for
// specific addresses — the "ips" capability (runtimeConfig.ips), the args
// convention (args.cni.ips) and CNI_ARGS (IP=, GATEWAY=) — the same way for
// every knit IPAM plugin.
package ipargs

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
)

// Where a requested address came from; error messages name it.
const (
	SourceRuntimeConfig = "runtimeConfig.ips"
	SourceArgs          = "args.cni.ips"
	SourceEnv           = "CNI_ARGS IP"
	SourceEnvGateway    = "CNI_ARGS GATEWAY"
)

// RuntimeIPs is the "ips" capability. Plugins embed it in their
// runtimeConfig struct so that other capabilities can sit beside it.
type RuntimeIPs struct {
	IPs []string `json:"ips,omitempty"`
}

// Args is the top-level "args" object of the args-in-network-config
// convention; only args.cni.ips is read.
type Args struct {
	CNI *struct {
		IPs []string `json:"ips,omitempty"`
	} `json:"cni,omitempty"`
}

// IPs returns args.cni.ips, nil when absent.
func (a *Args) IPs() []string {
	if a == nil || a.CNI == nil {
		return nil
	}
	return a.CNI.IPs
}

// Env is what IPAM plugins read from CNI_ARGS: comma-separated IP and
// GATEWAY lists, each item trimmed.
type Env struct {
	IPs      []string
	Gateways []string
}

// envIP and envIPGateway are the key sets types.LoadArgs checks CNI_ARGS
// against: a key outside the set is an error unless IgnoreUnknown is true.
type envIP struct {
	types.CommonArgs
	IP types.UnmarshallableString
}

type envIPGateway struct {
	envIP
	GATEWAY types.UnmarshallableString
}

// LoadEnv parses CNI_ARGS. withGateway adds GATEWAY to the accepted keys
// (static reads it; host-local does not, so there it is an unknown key).
func LoadEnv(args string, withGateway bool) (Env, error) {
	var e envIPGateway
	var err error
	if withGateway {
		err = types.LoadArgs(args, &e)
	} else {
		err = types.LoadArgs(args, &e.envIP)
	}
	if err != nil {
		return Env{}, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: %w", err)
	}
	return Env{IPs: splitList(string(e.IP)), Gateways: splitList(string(e.GATEWAY))}, nil
}

func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var out []string
	for _, item := range strings.Split(s, ",") {
		out = append(out, strings.TrimSpace(item))
	}
	return out
}

// Addr is one requested address.
type Addr struct {
	IP netip.Addr
	// Bits is the prefix length when the address was given as a CIDR, -1
	// when it was a bare IP.
	Bits   int
	Source string
}

// Prefix returns the address with its prefix length (host bits kept); a
// bare IP becomes a host prefix.
func (a Addr) Prefix() netip.Prefix {
	bits := a.Bits
	if bits < 0 {
		bits = a.IP.BitLen()
	}
	return netip.PrefixFrom(a.IP, bits)
}

// ParseAll parses a list of addresses from one source. With needMask every
// item must be a CIDR; otherwise a bare IP is accepted too.
func ParseAll(source string, items []string, needMask bool) ([]Addr, error) {
	out := make([]Addr, 0, len(items))
	for _, s := range items {
		a, err := Parse(source, s, needMask)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Parse parses one address from source (see ParseAll).
func Parse(source, s string, needMask bool) (Addr, error) {
	if strings.Contains(s, "/") {
		p, err := ParseCIDR(s)
		if err != nil {
			return Addr{}, sourceError(source, "%q: %v", s, err)
		}
		return Addr{IP: p.Addr(), Bits: p.Bits(), Source: source}, nil
	}
	if needMask {
		return Addr{}, sourceError(source, "%q is not in CIDR notation (address/prefix-length)", s)
	}
	ip, err := ParseIP(s)
	if err != nil {
		return Addr{}, sourceError(source, "%q: %v", s, err)
	}
	return Addr{IP: ip, Bits: -1, Source: source}, nil
}

// sourceError is code 4 for CNI_ARGS (an environment variable) and code 7
// for the config's own keys.
func sourceError(source, format string, a ...any) error {
	if strings.HasPrefix(source, "CNI_ARGS") {
		e := cni.Errorf(types.ErrInvalidEnvironmentVariables, format, a...)
		e.Msg = source + ": " + e.Msg
		return e
	}
	return cni.ConfigError(source, format, a...)
}

// ParseIP parses a bare IPv4 or IPv6 address. IPv4-mapped IPv6 addresses
// become IPv4 (as the reference plugins canonicalise them); zones are
// rejected since an IPAM address has no scope.
func ParseIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not an IP address")
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("an IPAM address cannot have a zone")
	}
	return ip.Unmap(), nil
}

// ParseCIDR parses address/prefix-length keeping the host bits (the
// address is the one to assign). An IPv4-mapped IPv6 prefix of at least 96
// bits becomes the IPv4 prefix it maps.
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not in CIDR notation (address/prefix-length)")
	}
	if ip := p.Addr(); ip.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("IPv4-mapped prefix shorter than /96")
		}
		return netip.PrefixFrom(ip.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}
