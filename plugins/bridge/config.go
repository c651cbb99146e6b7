package bridge

import (
	"net"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
)

const defaultBridge = "cni0"

// Config is the bridge plugin's config, key for key the reference's.
type Config struct {
	cni.NetConf
	Bridge              string       `json:"bridge"`
	IsGateway           bool         `json:"isGateway"`
	IsDefaultGateway    bool         `json:"isDefaultGateway"`
	ForceAddress        bool         `json:"forceAddress"`
	IPMasq              bool         `json:"ipMasq"`
	IPMasqBackend       *string      `json:"ipMasqBackend,omitempty"`
	MTU                 int          `json:"mtu"`
	HairpinMode         bool         `json:"hairpinMode"`
	PromiscMode         bool         `json:"promiscMode"`
	Vlan                int          `json:"vlan"`
	VlanTrunk           []*VlanTrunk `json:"vlanTrunk,omitempty"`
	PreserveDefaultVlan bool         `json:"preserveDefaultVlan"`
	MacSpoofChk         bool         `json:"macspoofchk,omitempty"`
	EnableDad           bool         `json:"enabledad,omitempty"`
	DisableContainerIf  bool         `json:"disableContainerInterface,omitempty"`
	PortIsolation       bool         `json:"portIsolation,omitempty"`

	Args struct {
		Cni struct {
			Mac string `json:"mac,omitempty"`
		} `json:"cni,omitempty"`
	} `json:"args,omitempty"`
	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// Derived by parse.
	mac      net.HardwareAddr // from CNI_ARGS, args or runtimeConfig
	vlans    []int            // vlanTrunk expanded, sorted
	ipamType string
}

// VlanTrunk is one vlanTrunk entry: a single id or a minID..maxID range.
type VlanTrunk struct {
	MinID *int `json:"minID,omitempty"`
	MaxID *int `json:"maxID,omitempty"`
	ID    *int `json:"id,omitempty"`
}

// macArgs is CNI_ARGS as the bridge reads it: MAC=… (plus IgnoreUnknown).
type macArgs struct {
	types.CommonArgs
	MAC types.UnmarshallableString
}

// parse decodes and validates a config; envArgs is CNI_ARGS. Nothing in it
// touches the system, so errors leave the host unchanged.
func parse(data []byte, envArgs string) (*Config, error) {
	c := &Config{Bridge: defaultBridge, PreserveDefaultVlan: true}
	if err := cni.ParseConfig(data, c); err != nil {
		return nil, err
	}
	var err error
	if c.ipamType, err = c.IPAMType(); err != nil {
		return nil, err
	}
	if c.IsDefaultGateway {
		c.IsGateway = true
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.vlans, err = expandTrunk(c.VlanTrunk); err != nil {
		return nil, err
	}
	if c.Vlan > 0 && c.vlans != nil {
		return nil, cni.ConfigError("vlanTrunk", "cannot set vlan and vlanTrunk at the same time")
	}
	if c.mac, err = pickMAC(c, envArgs); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) validate() error {
	switch {
	case !validIfName(c.Bridge):
		return cni.ConfigError("bridge", "%q is not a valid interface name", c.Bridge)
	case c.MTU < 0:
		return cni.ConfigError("mtu", "must not be negative, got %d", c.MTU)
	case c.Vlan < 0 || c.Vlan > 4094:
		return cni.ConfigError("vlan", "invalid VLAN ID %d (must be between 0 and 4094)", c.Vlan)
	case c.HairpinMode && c.PromiscMode:
		return cni.ConfigError("promiscMode", "cannot set hairpin mode and promiscuous mode at the same time")
	case c.DisableContainerIf && c.ipamType != "":
		return cni.ConfigError("disableContainerInterface", "cannot use IPAM when the container interface is disabled")
	}
	return checkBackend(c.IPMasqBackend)
}

// checkBackend accepts the reference's two ipMasqBackend values. knit
// always masquerades with nftables; "iptables" is accepted so that configs
// written for the reference keep working, and gets the same nftables rules.
func checkBackend(b *string) error {
	if b == nil {
		return nil
	}
	switch *b {
	case "iptables", "nftables":
		return nil
	}
	return cni.ConfigError("ipMasqBackend", "unknown backend %q (want \"nftables\" or \"iptables\")", *b)
}

// validIfName applies the kernel's interface name rules.
func validIfName(n string) bool {
	return n != "" && len(n) < 16 && n != "." && n != ".." && !strings.ContainsAny(n, "/: \t\n\x00")
}

// expandTrunk turns vlanTrunk into a sorted list of unique VLAN ids.
func expandTrunk(trunk []*VlanTrunk) ([]int, error) {
	set := map[int]bool{}
	for _, t := range trunk {
		if t == nil {
			continue
		}
		if err := addTrunk(set, t); err != nil {
			return nil, err
		}
	}
	if len(set) == 0 {
		return nil, nil
	}
	ids := make([]int, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids, nil
}

func addTrunk(set map[int]bool, t *VlanTrunk) error {
	switch {
	case t.MinID != nil && t.MaxID != nil:
		lo, hi := *t.MinID, *t.MaxID
		if !validVID(lo) {
			return cni.ConfigError("vlanTrunk", "incorrect trunk minID parameter %d", lo)
		}
		if !validVID(hi) {
			return cni.ConfigError("vlanTrunk", "incorrect trunk maxID parameter %d", hi)
		}
		if hi < lo {
			return cni.ConfigError("vlanTrunk", "minID %d is greater than maxID %d", lo, hi)
		}
		for v := lo; v <= hi; v++ {
			set[v] = true
		}
	case t.MinID == nil && t.MaxID != nil:
		return cni.ConfigError("vlanTrunk", "minID and maxID should be configured simultaneously, minID is missing")
	case t.MinID != nil && t.MaxID == nil:
		return cni.ConfigError("vlanTrunk", "minID and maxID should be configured simultaneously, maxID is missing")
	}
	if t.ID != nil {
		if !validVID(*t.ID) {
			return cni.ConfigError("vlanTrunk", "incorrect trunk id parameter %d", *t.ID)
		}
		set[*t.ID] = true
	}
	return nil
}

func validVID(v int) bool { return v > 0 && v <= 4094 }

// pickMAC resolves the container MAC with the reference's precedence:
// runtimeConfig.mac over args.cni.mac over CNI_ARGS MAC=.
func pickMAC(c *Config, envArgs string) (net.HardwareAddr, error) {
	var e macArgs
	if envArgs != "" {
		if err := types.LoadArgs(envArgs, &e); err != nil {
			return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: %v", err)
		}
	}
	field, mac := "CNI_ARGS MAC", string(e.MAC)
	if c.Args.Cni.Mac != "" {
		field, mac = "args.cni.mac", c.Args.Cni.Mac
	}
	if c.RuntimeConfig.Mac != "" {
		field, mac = "runtimeConfig.mac", c.RuntimeConfig.Mac
	}
	if mac == "" {
		return nil, nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, cni.ConfigError(field, "invalid MAC address %q", mac)
	}
	if hw[0]&1 == 1 {
		return nil, cni.ConfigError(field, "%s is a multicast address", mac)
	}
	return hw, nil
}
