package nmstate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Probe is a check run after a change is applied and verified; if any
// fails the change is rolled back (gateway ping, API server reachable, ...).
type Probe struct {
	Name string
	Run  func(ctx context.Context) error
}

// ApplyError says how an apply failed and whether the rollback restored the
// previous state.
type ApplyError struct {
	Stage       string // "apply", "verify" or "probe <name>"
	Err         error
	RollbackErr error
}

func (e *ApplyError) Error() string {
	msg := fmt.Sprintf("%s failed: %v", e.Stage, e.Err)
	if e.RollbackErr != nil {
		return msg + fmt.Sprintf("; rollback failed too: %v", e.RollbackErr)
	}
	return msg + "; rolled back to the previous state"
}

func (e *ApplyError) Unwrap() error { return e.Err }

// Apply makes the namespace match desired: it snapshots the current state,
// applies the change through netlink, verifies the kernel matches, runs the
// probes, and restores the snapshot if any step fails. Only probes that
// pass before the change are run after it (as kubernetes-nmstate does): a
// node without a reachable gateway must still be configurable.
func (e *Engine) Apply(ctx context.Context, desired *State, probes ...Probe) error {
	if err := desired.Validate(); err != nil {
		return &ApplyError{Stage: "validate", Err: err}
	}
	probes = e.passingProbes(ctx, probes)
	snap, err := e.snapshot()
	if err != nil {
		return err
	}
	fail := func(stage string, err error) error {
		e.log().Warn("nmstate apply failed, rolling back", "stage", stage, "err", err)
		return &ApplyError{Stage: stage, Err: err, RollbackErr: e.rollback(ctx, snap, desired)}
	}
	if err := e.apply(ctx, desired); err != nil {
		return fail("apply", err)
	}
	if err := e.Verify(ctx, desired); err != nil {
		return fail("verify", err)
	}
	for _, p := range probes {
		if err := p.Run(ctx); err != nil {
			return fail("probe "+p.Name, err)
		}
	}
	return nil
}

// snapshotState is what rollback restores.
type snapshotState struct {
	state      *State
	routes     []namedRoute
	resolvConf []byte
	hadResolv  bool
	// dynamic holds, per interface on which the DHCP client holds a
	// lease, its dynamic addresses ("ip/prefix"): the client's, not
	// static ones.
	dynamic map[string]map[string]bool
	// broadcast is each IPv4 address's broadcast ("" for none), which the
	// nmstate model does not carry but an exact restore must.
	broadcast map[string]string
}

func (e *Engine) snapshot() (*snapshotState, error) {
	s, err := e.Read()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	routes, err := e.kernelRoutes()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	dynamic, err := e.dynamicAddrs(s)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	bcast, err := e.broadcasts()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	b, rerr := os.ReadFile(e.resolvConf())
	return &snapshotState{state: s, routes: routes, resolvConf: b, hadResolv: rerr == nil, dynamic: dynamic,
		broadcast: bcast}, nil
}

// dynamicAddrs lists the IPv4 addresses with a finite lifetime of the
// interfaces the DHCP client holds a lease on.
func (e *Engine) dynamicAddrs(s *State) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	for _, ifc := range s.Interfaces {
		if !e.holdsLease(ifc.Name) {
			continue
		}
		l, err := e.NL.LinkByName(ifc.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ifc.Name, err)
		}
		addrs, err := nlsafe.AddrList(e.NL, l, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		out[ifc.Name] = map[string]bool{}
		for _, a := range addrs {
			if isDynamic(a) {
				ones, _ := a.Mask.Size()
				out[ifc.Name][fmt.Sprintf("%s/%d", a.IP, ones)] = true
			}
		}
	}
	return out, nil
}

func (e *Engine) apply(ctx context.Context, d *State) error {
	if err := e.removeAbsent(ctx, d); err != nil {
		return err
	}
	if err := e.createMissing(d); err != nil {
		return err
	}
	for i := range d.Interfaces {
		ifc := &d.Interfaces[i]
		if ifc.State == StateAbsent || ifc.State == StateIgnore {
			continue
		}
		if err := e.configure(ctx, ifc); err != nil {
			return fmt.Errorf("%s: %w", ifc.Name, err)
		}
	}
	if err := e.applyRoutes(d.Routes); err != nil {
		return err
	}
	if err := e.applyRules(d.RouteRules); err != nil {
		return err
	}
	return e.applyDNS(d.DNSResolver)
}

func (e *Engine) removeAbsent(ctx context.Context, d *State) error {
	for _, ifc := range d.Interfaces {
		if ifc.State != StateAbsent {
			continue
		}
		l, err := e.NL.LinkByName(ifc.Name)
		if err != nil {
			continue // already absent
		}
		// The RELEASE has to go out before the link does.
		if err := e.releaseDHCP(ctx, ifc.Name); err != nil {
			return fmt.Errorf("%s: %w", ifc.Name, err)
		}
		t := kindToType(l)
		if t == TypeEthernet || t == TypeLoopback {
			// A NIC cannot be deleted; absent deactivates it.
			if err := e.NL.LinkSetDown(l); err != nil {
				return fmt.Errorf("%s: setting down: %w", ifc.Name, err)
			}
			continue
		}
		if err := e.NL.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("%s: deleting: %w", ifc.Name, err)
		}
	}
	return nil
}

// createMissing creates the virtual interfaces that do not exist yet, in
// as many passes as dependencies (base-iface) need.
func (e *Engine) createMissing(d *State) error {
	pending := map[string]*Interface{}
	for i := range d.Interfaces {
		ifc := &d.Interfaces[i]
		if ifc.State == StateAbsent || ifc.State == StateIgnore {
			continue
		}
		if _, err := e.NL.LinkByName(ifc.Name); err != nil {
			pending[ifc.Name] = ifc
		}
	}
	for len(pending) > 0 {
		progress := false
		for name, ifc := range pending {
			parent := baseIface(ifc)
			if parent != "" {
				if _, waiting := pending[parent]; waiting {
					continue
				}
			}
			// A veth's peer appears with it: skip what exists by now.
			if _, err := e.NL.LinkByName(name); err != nil {
				if err := e.create(ifc); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			delete(pending, name)
			progress = true
		}
		if !progress {
			return fmt.Errorf("interfaces depend on each other in a cycle: %v", keys(pending))
		}
	}
	return nil
}

func keys(m map[string]*Interface) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func baseIface(ifc *Interface) string {
	switch {
	case ifc.VLAN != nil:
		return ifc.VLAN.BaseIface
	case ifc.VXLAN != nil:
		return ifc.VXLAN.BaseIface
	case ifc.MacVlan != nil:
		return ifc.MacVlan.BaseIface
	case ifc.MacVtap != nil:
		return ifc.MacVtap.BaseIface
	}
	return ""
}

func (e *Engine) create(ifc *Interface) error {
	attrs := netlink.LinkAttrs{Name: ifc.Name}
	if ifc.MTU != nil {
		attrs.MTU = *ifc.MTU
	}
	l, err := e.newLink(ifc, attrs)
	if err != nil {
		return err
	}
	if err := e.NL.LinkAdd(l); err != nil {
		return fmt.Errorf("creating %s: %w", ifc.Type, err)
	}
	return nil
}

func (e *Engine) parentIndex(name string) (int, error) {
	p, err := e.NL.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("base-iface %q: %w", name, err)
	}
	return p.Attrs().Index, nil
}

func (e *Engine) newLink(ifc *Interface, attrs netlink.LinkAttrs) (netlink.Link, error) {
	switch ifc.Type {
	case TypeLinuxBridge:
		return &netlink.Bridge{LinkAttrs: attrs}, nil
	case TypeDummy:
		return &netlink.Dummy{LinkAttrs: attrs}, nil
	case TypeBond:
		b := netlink.NewLinkBond(attrs)
		if la := ifc.LinkAggregation; la != nil {
			if la.Mode != "" {
				b.Mode, _ = bondMode(la.Mode)
			}
			if err := e.setBondOptions(b, la.Options); err != nil {
				return nil, err
			}
		}
		return b, nil
	case TypeVeth:
		if ifc.Veth == nil || ifc.Veth.Peer == "" {
			return nil, errors.New("veth.peer: required to create a veth")
		}
		return &netlink.Veth{LinkAttrs: attrs, PeerName: ifc.Veth.Peer}, nil
	case TypeVLAN:
		idx, err := e.parentIndex(ifc.VLAN.BaseIface)
		attrs.ParentIndex = idx
		return &netlink.Vlan{LinkAttrs: attrs, VlanId: ifc.VLAN.ID}, err
	case TypeVXLAN:
		return e.newVxlan(ifc.VXLAN, attrs)
	case TypeMacVlan, TypeMacVtap:
		return e.newMacvlan(ifc, attrs)
	case "":
		return nil, errors.New("type: required to create an interface that does not exist")
	}
	return nil, fmt.Errorf("type: %s interfaces cannot be created; %s does not exist", ifc.Type, ifc.Name)
}

func (e *Engine) newVxlan(x *VXLAN, attrs netlink.LinkAttrs) (netlink.Link, error) {
	v := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: x.ID, Learning: true, Port: 4789}
	if x.DestinationPort != nil {
		v.Port = *x.DestinationPort
	}
	if x.Learning != nil {
		v.Learning = *x.Learning
	}
	if x.BaseIface != "" {
		idx, err := e.parentIndex(x.BaseIface)
		if err != nil {
			return nil, err
		}
		v.VtepDevIndex = idx
	}
	v.Group = net.ParseIP(x.Remote)
	v.SrcAddr = net.ParseIP(x.Local)
	return v, nil
}

func (e *Engine) newMacvlan(ifc *Interface, attrs netlink.LinkAttrs) (netlink.Link, error) {
	m := ifc.MacVlan
	if ifc.Type == TypeMacVtap {
		m = ifc.MacVtap
	}
	if m == nil {
		return nil, fmt.Errorf("%s: settings required to create it", ifc.Type)
	}
	idx, err := e.parentIndex(m.BaseIface)
	if err != nil {
		return nil, err
	}
	attrs.ParentIndex = idx
	mode := netlink.MACVLAN_MODE_VEPA // nmstate's and the kernel's default
	if m.Mode != "" {
		mode, _ = macvlanMode(m.Mode)
	}
	mv := netlink.Macvlan{LinkAttrs: attrs, Mode: mode}
	if ifc.Type == TypeMacVtap {
		return &netlink.Macvtap{Macvlan: mv}, nil
	}
	return &mv, nil
}

// configure merges one named interface's given fields into the kernel.
func (e *Engine) configure(ctx context.Context, ifc *Interface) error {
	l, err := e.NL.LinkByName(ifc.Name)
	if err != nil {
		return fmt.Errorf("looking up: %w", err)
	}
	if err := e.setAttrs(l, ifc); err != nil {
		return err
	}
	if l.Type() == "bond" {
		if err := e.modifyBond(l, ifc.LinkAggregation); err != nil {
			return err
		}
	}
	if err := e.setPorts(l, ifc); err != nil {
		return err
	}
	if err := e.setPortVLANs(l, ifc); err != nil {
		return err
	}
	if ifc.State == StateDown {
		// Down deactivates the interface: its lease goes first, while
		// the RELEASE can still be sent.
		if err := e.releaseDHCP(ctx, ifc.Name); err != nil {
			return err
		}
	}
	if err := e.setState(l, ifc); err != nil {
		return err
	}
	if err := e.setIP(ctx, l, ifc.IPv4, netlink.FAMILY_V4); err != nil {
		return fmt.Errorf("ipv4: %w", err)
	}
	if err := e.setIP(ctx, l, ifc.IPv6, netlink.FAMILY_V6); err != nil {
		return fmt.Errorf("ipv6: %w", err)
	}
	return nil
}

func (e *Engine) setAttrs(l netlink.Link, ifc *Interface) error {
	a := l.Attrs()
	if ifc.MTU != nil && *ifc.MTU != a.MTU {
		if err := e.NL.LinkSetMTU(l, *ifc.MTU); err != nil {
			return fmt.Errorf("mtu: %w", err)
		}
	}
	if ifc.MACAddress != nil {
		mac, _ := net.ParseMAC(*ifc.MACAddress)
		if !strings.EqualFold(mac.String(), a.HardwareAddr.String()) {
			if err := e.NL.LinkSetHardwareAddr(l, mac); err != nil {
				return fmt.Errorf("mac-address: %w", err)
			}
		}
	}
	if ifc.Description != nil && *ifc.Description != a.Alias {
		if err := e.NL.LinkSetAlias(l, *ifc.Description); err != nil {
			return fmt.Errorf("description: %w", err)
		}
	}
	if b := ifc.Bridge; b != nil && b.Options != nil && b.Options.STP != nil && b.Options.STP.Enabled != nil {
		if err := e.setBridgeSTP(l, *b.Options.STP.Enabled); err != nil {
			return fmt.Errorf("bridge.options.stp: %w", err)
		}
	}
	return nil
}

// setPorts replaces a bridge's or bond's port list when one is given.
func (e *Engine) setPorts(l netlink.Link, ifc *Interface) error {
	var want []string
	switch {
	case ifc.Bridge != nil && ifc.Bridge.Port != nil:
		for _, p := range *ifc.Bridge.Port {
			want = append(want, p.Name)
		}
	case ifc.LinkAggregation != nil && ifc.LinkAggregation.Port != nil:
		want = *ifc.LinkAggregation.Port
	default:
		return nil
	}
	all, err := nlsafe.LinkList(e.NL)
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	isBond := l.Type() == "bond"
	wanted := map[string]bool{}
	for _, name := range want {
		wanted[name] = true
		p, err := e.NL.LinkByName(name)
		if err != nil {
			return fmt.Errorf("port %s: %w", name, err)
		}
		if p.Attrs().MasterIndex == l.Attrs().Index {
			continue
		}
		if isBond { // the bonding driver only enslaves links that are down
			_ = e.NL.LinkSetDown(p)
		}
		if err := e.NL.LinkSetMaster(p, l); err != nil {
			return fmt.Errorf("port %s: %w", name, err)
		}
		if err := e.NL.LinkSetUp(p); err != nil {
			return fmt.Errorf("port %s up: %w", name, err)
		}
	}
	for _, p := range all {
		if p.Attrs().MasterIndex == l.Attrs().Index && !wanted[p.Attrs().Name] && !isPodVeth(p) {
			if err := e.NL.LinkSetNoMaster(p); err != nil {
				return fmt.Errorf("removing port %s: %w", p.Attrs().Name, err)
			}
		}
	}
	return nil
}

func (e *Engine) setState(l netlink.Link, ifc *Interface) error {
	switch ifc.State {
	case StateUp, "":
		// nmstate's default state for a listed interface is up.
		if err := e.NL.LinkSetUp(l); err != nil {
			return fmt.Errorf("state up: %w", err)
		}
	case StateDown:
		if err := e.NL.LinkSetDown(l); err != nil {
			return fmt.Errorf("state down: %w", err)
		}
	}
	return nil
}

func (e *Engine) passingProbes(ctx context.Context, probes []Probe) []Probe {
	var ok []Probe
	for _, p := range probes {
		if err := p.Run(ctx); err != nil {
			e.log().Info("probe skipped: it fails before the change", "probe", p.Name, "err", err)
			continue
		}
		ok = append(ok, p)
	}
	return ok
}
