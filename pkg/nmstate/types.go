// Package nmstate is knit's node network engine: the nmstate desired-state
// schema (the subset kubernetes-nmstate users write), reading the current
// state from the kernel, and applying a desired state through netlink with
// verification, probes and automatic rollback.
package nmstate

// State is an nmstate document: desired (policy) or current (NNS).
type State struct {
	Interfaces  []Interface  `json:"interfaces,omitempty"`
	Routes      *Routes      `json:"routes,omitempty"`
	RouteRules  *RouteRules  `json:"route-rules,omitempty"`
	DNSResolver *DNSResolver `json:"dns-resolver,omitempty"`
}

// Interface types knit handles.
const (
	TypeEthernet    = "ethernet"
	TypeLinuxBridge = "linux-bridge"
	TypeBond        = "bond"
	TypeVLAN        = "vlan"
	TypeVXLAN       = "vxlan"
	TypeMacVlan     = "mac-vlan"
	TypeMacVtap     = "mac-vtap"
	TypeVeth        = "veth"
	TypeDummy       = "dummy"
	TypeLoopback    = "loopback"
	TypeUnknown     = "unknown"
)

// Interface states.
const (
	StateUp     = "up"
	StateDown   = "down"
	StateAbsent = "absent"
	StateIgnore = "ignore"
)

// Interface is one entry of interfaces. Pointer fields distinguish "not
// mentioned" (keep current) from a value, as nmstate's merge requires;
// pointers to lists distinguish "not mentioned" from "empty" (lists given
// replace the current list).
type Interface struct {
	Name            string           `json:"name"`
	Type            string           `json:"type,omitempty"`
	State           string           `json:"state,omitempty"`
	Description     *string          `json:"description,omitempty"`
	MTU             *int             `json:"mtu,omitempty"`
	MACAddress      *string          `json:"mac-address,omitempty"`
	IPv4            *IPConfig        `json:"ipv4,omitempty"`
	IPv6            *IPConfig        `json:"ipv6,omitempty"`
	Bridge          *Bridge          `json:"bridge,omitempty"`
	LinkAggregation *LinkAggregation `json:"link-aggregation,omitempty"`
	VLAN            *VLAN            `json:"vlan,omitempty"`
	VXLAN           *VXLAN           `json:"vxlan,omitempty"`
	MacVlan         *MacVlan         `json:"mac-vlan,omitempty"`
	MacVtap         *MacVlan         `json:"mac-vtap,omitempty"`
	Veth            *Veth            `json:"veth,omitempty"`
	// Controller is reported in current state for ports (read-only).
	Controller string `json:"controller,omitempty"`
}

// IPConfig is ipv4 or ipv6.
type IPConfig struct {
	Enabled     *bool      `json:"enabled,omitempty"`
	DHCP        *bool      `json:"dhcp,omitempty"`
	Autoconf    *bool      `json:"autoconf,omitempty"`
	Address     *[]Address `json:"address,omitempty"`
	AutoDNS     *bool      `json:"auto-dns,omitempty"`
	AutoRoutes  *bool      `json:"auto-routes,omitempty"`
	AutoGateway *bool      `json:"auto-gateway,omitempty"`
}

// Address is a static address.
type Address struct {
	IP           string `json:"ip"`
	PrefixLength int    `json:"prefix-length"`
}

// Bridge is linux-bridge's settings.
type Bridge struct {
	Options *BridgeOptions `json:"options,omitempty"`
	Port    *[]BridgePort  `json:"port,omitempty"`
}

// BridgeOptions are bridge-wide options.
type BridgeOptions struct {
	STP               *STP  `json:"stp,omitempty"`
	MacAgeingTime     *int  `json:"mac-ageing-time,omitempty"`
	GroupForwardMask  *int  `json:"group-forward-mask,omitempty"`
	MulticastSnooping *bool `json:"multicast-snooping,omitempty"`
}

// STP options.
type STP struct {
	Enabled      *bool `json:"enabled,omitempty"`
	ForwardDelay *int  `json:"forward-delay,omitempty"`
	HelloTime    *int  `json:"hello-time,omitempty"`
	MaxAge       *int  `json:"max-age,omitempty"`
	Priority     *int  `json:"priority,omitempty"`
}

// BridgePort is a bridge port.
type BridgePort struct {
	Name           string          `json:"name"`
	STPHairpinMode *bool           `json:"stp-hairpin-mode,omitempty"`
	STPPathCost    *int            `json:"stp-path-cost,omitempty"`
	STPPriority    *int            `json:"stp-priority,omitempty"`
	VLAN           *BridgePortVLAN `json:"vlan,omitempty"`
}

// BridgePortVLAN is a port's VLAN filtering config.
type BridgePortVLAN struct {
	Mode         string     `json:"mode,omitempty"` // access | trunk
	Tag          *int       `json:"tag,omitempty"`
	EnableNative *bool      `json:"enable-native,omitempty"`
	TrunkTags    []TrunkTag `json:"trunk-tags,omitempty"`
}

// TrunkTag is one id or a range.
type TrunkTag struct {
	ID      *int     `json:"id,omitempty"`
	IDRange *IDRange `json:"id-range,omitempty"`
}

// IDRange is an inclusive VLAN id range.
type IDRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// LinkAggregation is a bond.
type LinkAggregation struct {
	Mode    string            `json:"mode,omitempty"`
	Options map[string]string `json:"options,omitempty"`
	Port    *[]string         `json:"port,omitempty"`
}

// VLAN is an 802.1q sub-interface.
type VLAN struct {
	BaseIface string `json:"base-iface"`
	ID        int    `json:"id"`
}

// VXLAN is a vxlan tunnel.
type VXLAN struct {
	BaseIface       string `json:"base-iface,omitempty"`
	ID              int    `json:"id"`
	Remote          string `json:"remote,omitempty"`
	Local           string `json:"local,omitempty"`
	DestinationPort *int   `json:"destination-port,omitempty"`
	Learning        *bool  `json:"learning,omitempty"`
}

// MacVlan is mac-vlan or mac-vtap.
type MacVlan struct {
	BaseIface   string `json:"base-iface"`
	Mode        string `json:"mode,omitempty"`
	Promiscuous *bool  `json:"promiscuous,omitempty"`
}

// Veth names the peer.
type Veth struct {
	Peer string `json:"peer"`
}

// Routes holds route config (desired) and running (current) lists.
type Routes struct {
	Config  []Route `json:"config,omitempty"`
	Running []Route `json:"running,omitempty"`
}

// Route is one route. In desired state, state: absent makes it a wildcard
// match: every route matching the given fields is removed.
type Route struct {
	Destination      string `json:"destination,omitempty"`
	NextHopInterface string `json:"next-hop-interface,omitempty"`
	NextHopAddress   string `json:"next-hop-address,omitempty"`
	Metric           *int   `json:"metric,omitempty"`
	TableID          *int   `json:"table-id,omitempty"`
	State            string `json:"state,omitempty"`
}

// RouteRules holds policy routing rules.
type RouteRules struct {
	Config []RouteRule `json:"config,omitempty"`
}

// RouteRule is one ip rule.
type RouteRule struct {
	IPFrom     string `json:"ip-from,omitempty"`
	IPTo       string `json:"ip-to,omitempty"`
	Priority   *int   `json:"priority,omitempty"`
	RouteTable *int   `json:"route-table,omitempty"`
	IIF        string `json:"iif,omitempty"`
	FwMark     *int   `json:"fwmark,omitempty"`
	FwMask     *int   `json:"fwmask,omitempty"`
	State      string `json:"state,omitempty"`
}

// DNSResolver is dns-resolver.
type DNSResolver struct {
	Config  *DNSConfig `json:"config,omitempty"`
	Running *DNSConfig `json:"running,omitempty"`
}

// DNSConfig lists servers and search domains.
type DNSConfig struct {
	Server []string `json:"server,omitempty"`
	Search []string `json:"search,omitempty"`
}
