package ifattach

import (
	"net"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
)

// MACKeys are the places a requested MAC address can come from, as the
// reference macvlan and tap read them plus the args.cni convention. Plugin
// configs embed it.
type MACKeys struct {
	MAC  string `json:"mac,omitempty"`
	Args *struct {
		CNI struct {
			MAC string `json:"mac,omitempty"`
		} `json:"cni"`
	} `json:"args,omitempty"`
	RuntimeConfig struct {
		MAC string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// macEnvArgs is the CNI_ARGS key (MAC=...), named as the reference does.
type macEnvArgs struct {
	types.CommonArgs
	MAC types.UnmarshallableString `json:"mac,omitempty"`
}

// ResolveMAC returns the requested MAC, nil for none. Precedence, highest
// first: runtimeConfig.mac (the "mac" capability), args.cni.mac, CNI_ARGS
// MAC, the mac key. A bad value is a config error naming its source.
func (k *MACKeys) ResolveMAC(cniArgs string) (net.HardwareAddr, error) {
	field, val := "mac", k.MAC
	var e macEnvArgs
	if err := types.LoadArgs(cniArgs, &e); err != nil {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: %v", err)
	}
	if e.MAC != "" {
		field, val = "CNI_ARGS MAC", string(e.MAC)
	}
	if k.Args != nil && k.Args.CNI.MAC != "" {
		field, val = "args.cni.mac", k.Args.CNI.MAC
	}
	if k.RuntimeConfig.MAC != "" {
		field, val = "runtimeConfig.mac", k.RuntimeConfig.MAC
	}
	if val == "" {
		return nil, nil
	}
	mac, err := net.ParseMAC(val)
	if err != nil || len(mac) != 6 {
		return nil, cni.ConfigError(field, "invalid MAC address %q", val)
	}
	if mac[0]&1 != 0 {
		return nil, cni.ConfigError(field, "%s is a multicast address", val)
	}
	return mac, nil
}
