package nmstate

import (
	"strings"

	"github.com/vishvananda/netlink"
)

// kindToType maps a netlink link kind to an nmstate interface type.
func kindToType(l netlink.Link) string {
	switch l.Type() {
	case "bridge":
		return TypeLinuxBridge
	case "bond":
		return TypeBond
	case "vlan":
		return TypeVLAN
	case "vxlan":
		return TypeVXLAN
	case "macvlan":
		return TypeMacVlan
	case "macvtap":
		return TypeMacVtap
	case "veth":
		return TypeVeth
	case "dummy":
		return TypeDummy
	case "device":
		if l.Attrs().EncapType == "loopback" {
			return TypeLoopback
		}
		return TypeEthernet
	}
	return TypeUnknown
}

var macvlanModes = map[string]netlink.MacvlanMode{"vepa": netlink.MACVLAN_MODE_VEPA, "bridge": netlink.MACVLAN_MODE_BRIDGE,
	"private": netlink.MACVLAN_MODE_PRIVATE, "passthru": netlink.MACVLAN_MODE_PASSTHRU, "source": netlink.MACVLAN_MODE_SOURCE}

func macvlanMode(s string) (netlink.MacvlanMode, bool) {
	m, ok := macvlanModes[strings.ToLower(s)]
	return m, ok
}

func macvlanModeName(m netlink.MacvlanMode) string {
	for k, v := range macvlanModes {
		if v == m {
			return k
		}
	}
	return ""
}

func bondMode(s string) (netlink.BondMode, bool) {
	m := netlink.StringToBondMode(s)
	return m, m != netlink.BOND_MODE_UNKNOWN
}
