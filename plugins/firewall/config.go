package firewall

import (
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
)

// Backends.
const (
	BackendNftables  = "nftables"
	BackendIptables  = "iptables"
	backendFirewalld = "firewalld"
)

// Ingress policies, as the reference.
const (
	// PolicyOpen accepts every inbound connection (the default).
	PolicyOpen = "open"
	// PolicySameBridge drops traffic between this bridge and other bridges
	// that have a policy; traffic within the bridge passes.
	PolicySameBridge = "same-bridge"
	// PolicyIsolated is same-bridge that also drops traffic between ports
	// of the same bridge (Docker's enable_icc=false).
	PolicyIsolated = "isolated"
)

// DefaultAdminChain is the chain admins put their own rules in.
const DefaultAdminChain = "CNI-ADMIN"

// Config is the firewall plugin's config; keys are the reference's.
type Config struct {
	cni.NetConf
	Backend string `json:"backend,omitempty"`
	// IptablesAdminChainName names the admin chain (in knit's nftables
	// table with the nftables backend, in the filter table with iptables).
	IptablesAdminChainName string `json:"iptablesAdminChainName,omitempty"`
	// FirewalldZone is accepted for compatibility; knit has no firewalld
	// backend.
	FirewalldZone string `json:"firewalldZone,omitempty"`
	IngressPolicy string `json:"ingressPolicy,omitempty"`
}

type settings struct {
	*Config
	backend string
	admin   string
	policy  string
	prev    *current.Result
}

func parse(data []byte) (*settings, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	s := &settings{Config: &c, backend: BackendNftables, admin: DefaultAdminChain, policy: PolicyOpen}
	switch c.Backend {
	case "", BackendNftables:
	case BackendIptables:
		s.backend = BackendIptables
	case backendFirewalld:
		return nil, cni.ConfigError("backend", "firewalld is not supported by knit (it talks to the kernel directly); use %q or %q",
			BackendNftables, BackendIptables)
	default:
		return nil, cni.ConfigError("backend", "%q is not a backend; use %q or %q", c.Backend, BackendNftables, BackendIptables)
	}
	switch c.IngressPolicy {
	case "", PolicyOpen:
	case PolicySameBridge, PolicyIsolated:
		s.policy = c.IngressPolicy
	default:
		return nil, cni.ConfigError("ingressPolicy", "%q is not %q, %q or %q", c.IngressPolicy, PolicyOpen, PolicySameBridge, PolicyIsolated)
	}
	if a := c.IptablesAdminChainName; a != "" {
		if err := checkAdminChain(a); err != nil {
			return nil, err
		}
		s.admin = a
	}
	prev, err := c.PrevResult()
	if err != nil {
		return nil, err
	}
	s.prev = prev
	return s, nil
}

// checkAdminChain rejects names iptables cannot hold and names of knit's
// own chains.
func checkAdminChain(a string) error {
	if len(a) > 28 || strings.ContainsAny(a, " \t\n\"'") {
		return cni.ConfigError("iptablesAdminChainName", "%q is not a chain name (at most 28 characters, no spaces or quotes)", a)
	}
	for _, reserved := range []string{chainForward, chainAdmin} {
		if a == reserved {
			return cni.ConfigError("iptablesAdminChainName", "%q is a chain of knit's own", a)
		}
	}
	for _, p := range []string{"o-", "ip4-", "ip6-", "iso-", "KNIT-"} {
		if strings.HasPrefix(a, p) {
			return cni.ConfigError("iptablesAdminChainName", "%q starts with %q, reserved for knit's chains", a, p)
		}
	}
	return nil
}

// bridgeName is the interface the ingress policy applies to: the first of
// prevResult's interfaces, the bridge when chained after bridge, as the
// reference.
func (s *settings) bridgeName() (string, error) {
	if s.policy == PolicyOpen {
		return "", nil
	}
	if s.prev == nil || len(s.prev.Interfaces) == 0 || s.prev.Interfaces[0] == nil || s.prev.Interfaces[0].Name == "" {
		return "", cni.ConfigError("ingressPolicy", "%q needs a bridge as prevResult's first interface; chain firewall after bridge", s.policy)
	}
	name := s.prev.Interfaces[0].Name
	if len(name) > 15 || strings.ContainsAny(name, "/ *") {
		return "", cni.ConfigError("prevResult", "interface %q is not a bridge name", name)
	}
	return name, nil
}
