package portmap

import (
	"fmt"
	"net"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
)

// Backends.
const (
	BackendNftables = "nftables"
	BackendIptables = "iptables"
)

// DefaultMarkBit is the packet mark bit that asks for masquerading, as the
// reference: Kubernetes uses 14 and 15, Calico 20-31.
const DefaultMarkBit = 13

// PortMapping is one entry of the portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Config is portmap's config; the keys are the reference plugin's.
type Config struct {
	cni.NetConf
	SNAT                 *bool     `json:"snat,omitempty"`
	ConditionsV4         *[]string `json:"conditionsV4,omitempty"`
	ConditionsV6         *[]string `json:"conditionsV6,omitempty"`
	MasqAll              bool      `json:"masqAll,omitempty"`
	MarkMasqBit          *int      `json:"markMasqBit,omitempty"`
	ExternalSetMarkChain *string   `json:"externalSetMarkChain,omitempty"`
	Backend              string    `json:"backend,omitempty"`
	RuntimeConfig        struct {
		PortMaps []PortMapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// mapping is a validated PortMapping.
type mapping struct {
	hostPort, containerPort uint16
	proto                   byte
	protoName               string
	// hostIP is nil for "any local address" (absent or unspecified);
	// family4/family6 say which container families the entry applies to.
	hostIP           net.IP
	family4, family6 bool
}

// settings is a parsed and validated Config.
type settings struct {
	*Config
	snat     bool
	markBit  uint
	setMark  string // externalSetMarkChain, iptables only
	backend  string
	maps     []mapping
	cond     [2][]expr.Any // nftables conditions, [0] IPv4, [1] IPv6
	rawCond  [2][]string   // iptables conditions
	hasConds [2]bool
}

func parse(data []byte) (*settings, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	s := &settings{Config: &c, snat: c.SNAT == nil || *c.SNAT, markBit: DefaultMarkBit, backend: BackendNftables}
	if err := s.parseBackend(); err != nil {
		return nil, err
	}
	if err := s.parseMark(); err != nil {
		return nil, err
	}
	if err := s.parseConditions(); err != nil {
		return nil, err
	}
	for i, pm := range c.RuntimeConfig.PortMaps {
		m, err := parseMapping(pm)
		if err != nil {
			err.Msg = fmt.Sprintf("runtimeConfig.portMappings[%d].%s", i, err.Msg)
			return nil, err
		}
		s.maps = append(s.maps, m)
	}
	return s, nil
}

func (s *settings) parseBackend() error {
	switch s.Backend {
	case "", BackendNftables:
	case BackendIptables:
		s.backend = BackendIptables
	default:
		return cni.ConfigError("backend", "%q is not a backend; use %q or %q", s.Backend, BackendNftables, BackendIptables)
	}
	return nil
}

func (s *settings) parseMark() error {
	if s.MarkMasqBit != nil && s.ExternalSetMarkChain != nil {
		return cni.ConfigError("markMasqBit", "cannot be set together with externalSetMarkChain")
	}
	if b := s.MarkMasqBit; b != nil {
		if *b < 0 || *b > 31 {
			return cni.ConfigError("markMasqBit", "%d is not a mark bit (0-31)", *b)
		}
		s.markBit = uint(*b)
	}
	if e := s.ExternalSetMarkChain; e != nil {
		if s.backend != BackendIptables {
			return cni.ConfigError("externalSetMarkChain", "names an iptables chain and needs backend %q", BackendIptables)
		}
		if *e == "" || strings.ContainsAny(*e, " \t\n") || len(*e) > 28 {
			return cni.ConfigError("externalSetMarkChain", "%q is not an iptables chain name", *e)
		}
		s.setMark = *e
	}
	return nil
}

func (s *settings) parseConditions() error {
	for i, c := range []*[]string{s.ConditionsV4, s.ConditionsV6} {
		if c == nil || len(*c) == 0 {
			continue
		}
		field := [2]string{"conditionsV4", "conditionsV6"}[i]
		s.hasConds[i] = true
		if s.backend == BackendIptables {
			for _, tok := range *c {
				if tok == "" {
					return cni.ConfigError(field, "empty iptables argument")
				}
			}
			s.rawCond[i] = *c
			continue
		}
		exprs, err := parseConditions(*c, i == 0)
		if err != nil {
			return cni.ConfigError(field, "%v", err)
		}
		s.cond[i] = exprs
	}
	return nil
}

func parseMapping(pm PortMapping) (mapping, *cni.Error) {
	m := mapping{family4: true, family6: true}
	if pm.HostPort <= 0 || pm.HostPort > 65535 {
		return m, cni.ConfigError("hostPort", "%d is not a port number", pm.HostPort)
	}
	if pm.ContainerPort <= 0 || pm.ContainerPort > 65535 {
		return m, cni.ConfigError("containerPort", "%d is not a port number", pm.ContainerPort)
	}
	m.hostPort, m.containerPort = uint16(pm.HostPort), uint16(pm.ContainerPort)
	m.protoName = strings.ToLower(pm.Protocol)
	switch m.protoName {
	case "tcp":
		m.proto = unix.IPPROTO_TCP
	case "udp":
		m.proto = unix.IPPROTO_UDP
	case "sctp":
		m.proto = unix.IPPROTO_SCTP
	default:
		return m, cni.ConfigError("protocol", "%q is not tcp, udp or sctp", pm.Protocol)
	}
	if pm.HostIP == "" {
		return m, nil
	}
	ip := net.ParseIP(pm.HostIP)
	if ip == nil {
		return m, cni.ConfigError("hostIP", "%q is not an IP address", pm.HostIP)
	}
	// A host IP of one family restricts the mapping to container addresses
	// of that family, as in the reference; the unspecified address means
	// any local address of its family.
	m.family4, m.family6 = ip.To4() != nil, ip.To4() == nil
	if !ip.IsUnspecified() {
		m.hostIP = ip
	}
	return m, nil
}
