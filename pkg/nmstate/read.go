package nmstate

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Read returns the namespace's current state, as NodeNetworkState reports
// it. Host-side veths of pods are left out: they come and go with pods and
// would make the report churn.
func (e *Engine) Read() (*State, error) {
	links, err := nlsafe.LinkList(e.NL)
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	s := &State{}
	for _, l := range links {
		if isPodVeth(l) {
			continue
		}
		ifc, err := e.readInterface(l, links, byIndex)
		if err != nil {
			return nil, err
		}
		s.Interfaces = append(s.Interfaces, *ifc)
	}
	sort.Slice(s.Interfaces, func(i, j int) bool { return s.Interfaces[i].Name < s.Interfaces[j].Name })
	if s.Routes, err = e.readRoutes(byIndex); err != nil {
		return nil, err
	}
	if s.RouteRules, err = e.readRules(); err != nil {
		return nil, err
	}
	s.DNSResolver = readResolvConf(e.resolvConf())
	return s, nil
}

// isPodVeth matches the host side of a pod's veth by the name CNI plugins
// give it, as kubernetes-nmstate's default interface filter ("!veth*")
// does. A veth's peer being in another namespace says nothing: a node NIC
// can be one (the local cluster's nodes use exactly that).
func isPodVeth(l netlink.Link) bool {
	return l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, "veth")
}

func (e *Engine) readInterface(l netlink.Link, all []netlink.Link, byIndex map[int]netlink.Link) (*Interface, error) {
	a := l.Attrs()
	ifc := &Interface{Name: a.Name, Type: kindToType(l), State: StateDown}
	if a.Flags&net.FlagUp != 0 {
		ifc.State = StateUp
	}
	mtu := a.MTU
	ifc.MTU = &mtu
	if len(a.HardwareAddr) > 0 {
		mac := strings.ToUpper(a.HardwareAddr.String())
		ifc.MACAddress = &mac
	}
	if a.Alias != "" {
		d := a.Alias
		ifc.Description = &d
	}
	if m, ok := byIndex[a.MasterIndex]; ok {
		ifc.Controller = m.Attrs().Name
	}
	var err error
	if ifc.IPv4, err = e.readIP(l, netlink.FAMILY_V4); err != nil {
		return nil, err
	}
	if ifc.IPv6, err = e.readIP(l, netlink.FAMILY_V6); err != nil {
		return nil, err
	}
	if err := e.readTypeSpecific(ifc, l, all, byIndex); err != nil {
		return nil, err
	}
	return ifc, nil
}

func (e *Engine) readTypeSpecific(ifc *Interface, l netlink.Link, all []netlink.Link, byIndex map[int]netlink.Link) error {
	parent := func() string {
		if p, ok := byIndex[l.Attrs().ParentIndex]; ok {
			return p.Attrs().Name
		}
		return ""
	}
	switch v := l.(type) {
	case *netlink.Bridge:
		stp, err := e.bridgeSTP(l)
		if err != nil {
			return err
		}
		ports := []BridgePort{}
		for _, p := range portsOf(l, all) {
			ports = append(ports, BridgePort{Name: p})
		}
		if err := e.portVLANs(v, ports); err != nil {
			return err
		}
		ifc.Bridge = &Bridge{Options: &BridgeOptions{STP: &STP{Enabled: &stp}}, Port: &ports}
	case *netlink.Bond:
		ports := portsOf(l, all)
		ifc.LinkAggregation = &LinkAggregation{Mode: v.Mode.String(), Port: &ports, Options: bondOptionsOf(v)}
	case *netlink.Vlan:
		ifc.VLAN = &VLAN{BaseIface: parent(), ID: v.VlanId}
	case *netlink.Vxlan:
		port := v.Port
		learning := v.Learning
		x := &VXLAN{ID: v.VxlanId, DestinationPort: &port, Learning: &learning}
		if b, ok := byIndex[v.VtepDevIndex]; ok {
			x.BaseIface = b.Attrs().Name
		}
		if v.Group != nil {
			x.Remote = v.Group.String()
		}
		if v.SrcAddr != nil {
			x.Local = v.SrcAddr.String()
		}
		ifc.VXLAN = x
	case *netlink.Macvtap:
		ifc.MacVtap = &MacVlan{BaseIface: parent(), Mode: macvlanModeName(v.Mode)}
	case *netlink.Macvlan:
		ifc.MacVlan = &MacVlan{BaseIface: parent(), Mode: macvlanModeName(v.Mode)}
	case *netlink.Veth:
		if p, ok := byIndex[l.Attrs().ParentIndex]; ok {
			ifc.Veth = &Veth{Peer: p.Attrs().Name}
		}
	}
	return nil
}

// portsOf lists a controller's ports, leaving out pods' veths: they are
// CNI's, not the node's configuration.
func portsOf(controller netlink.Link, all []netlink.Link) []string {
	ports := []string{}
	for _, l := range all {
		if l.Attrs().MasterIndex == controller.Attrs().Index && !isPodVeth(l) {
			ports = append(ports, l.Attrs().Name)
		}
	}
	sort.Strings(ports)
	return ports
}

// readIP reports static and DHCP addresses. Addresses with a finite
// lifetime came from DHCP or autoconf; link-local IPv6 is the kernel's own.
func (e *Engine) readIP(l netlink.Link, family int) (*IPConfig, error) {
	addrs, err := nlsafe.AddrList(e.NL, l, family)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
	}
	list := []Address{}
	dynamic := false
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		list = append(list, Address{IP: a.IP.String(), PrefixLength: ones})
		dynamic = dynamic || isDynamic(a)
	}
	enabled := len(list) > 0 || dynamic
	if family == netlink.FAMILY_V6 {
		enabled = len(addrs) > 0
	}
	c := &IPConfig{Enabled: &enabled, Address: &list}
	if family == netlink.FAMILY_V4 {
		c.DHCP = &dynamic
	} else {
		c.Autoconf = &dynamic
	}
	return c, nil
}

// infinityLifetime is the kernel's "forever" (INFINITY_LIFE_TIME).
const infinityLifetime = 0xFFFFFFFF

func (e *Engine) readRoutes(byIndex map[int]netlink.Link) (*Routes, error) {
	routes, err := nlsafe.RouteListFiltered(e.NL, netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	r := &Routes{Config: []Route{}, Running: []Route{}}
	for _, rt := range routes {
		if rt.Table == unix.RT_TABLE_LOCAL || rt.Type != unix.RTN_UNICAST {
			continue
		}
		l, ok := byIndex[rt.LinkIndex]
		if !ok || isPodVeth(l) {
			continue
		}
		out := routeFromKernel(rt, l.Attrs().Name)
		r.Running = append(r.Running, out)
		if rt.Protocol == unix.RTPROT_STATIC || rt.Protocol == unix.RTPROT_BOOT {
			r.Config = append(r.Config, out)
		}
	}
	return r, nil
}

func routeFromKernel(rt netlink.Route, dev string) Route {
	metric, table := rt.Priority, rt.Table
	out := Route{NextHopInterface: dev, Metric: &metric, TableID: &table}
	if rt.Dst != nil {
		out.Destination = rt.Dst.String()
	} else if rt.Family == netlink.FAMILY_V6 {
		out.Destination = "::/0"
	} else {
		out.Destination = "0.0.0.0/0"
	}
	if rt.Gw != nil {
		out.NextHopAddress = rt.Gw.String()
	}
	return out
}

func (e *Engine) readRules() (*RouteRules, error) {
	rules, err := nlsafe.RuleList(e.NL, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing rules: %w", err)
	}
	out := &RouteRules{Config: []RouteRule{}}
	for _, r := range rules {
		// The kernel's own rules (local, main, default) are not config.
		if r.Table == unix.RT_TABLE_LOCAL || r.Table == unix.RT_TABLE_MAIN || r.Table == unix.RT_TABLE_DEFAULT {
			continue
		}
		out.Config = append(out.Config, ruleFromKernel(r))
	}
	return out, nil
}

func ruleFromKernel(r netlink.Rule) RouteRule {
	prio, table := r.Priority, r.Table
	out := RouteRule{Priority: &prio, RouteTable: &table, IIF: r.IifName}
	if r.Src != nil {
		out.IPFrom = r.Src.String()
	}
	if r.Dst != nil {
		out.IPTo = r.Dst.String()
	}
	if r.Mark != 0 {
		m := int(r.Mark)
		out.FwMark = &m
	}
	return out
}

func readResolvConf(path string) *DNSResolver {
	f, err := os.Open(path)
	if err != nil {
		return &DNSResolver{Config: &DNSConfig{}, Running: &DNSConfig{}}
	}
	defer f.Close()
	c := &DNSConfig{Server: []string{}, Search: []string{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			c.Server = append(c.Server, fields[1])
		case "search":
			c.Search = append(c.Search, fields[1:]...)
		}
	}
	running := *c
	return &DNSResolver{Config: c, Running: &running}
}
