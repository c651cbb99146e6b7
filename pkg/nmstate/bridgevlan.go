package nmstate

import (
	"fmt"
	"sort"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// Bridge port VLAN modes.
const (
	VLANAccess = "access"
	VLANTrunk  = "trunk"
)

// setPortVLANs applies the port list's vlan settings: a bridge any of whose
// ports has one gets VLAN filtering, and each such port's VLANs are
// replaced by what the settings say (access: one untagged PVID; trunk:
// tagged ids, plus the native VLAN untagged as PVID when enable-native).
func (e *Engine) setPortVLANs(br netlink.Link, ifc *Interface) error {
	if ifc.Bridge == nil || ifc.Bridge.Port == nil || !anyPortVLAN(*ifc.Bridge.Port) {
		return nil
	}
	if err := e.setVlanFiltering(br); err != nil {
		return err
	}
	current, err := nlsafe.BridgeVlanList(e.NL)
	if err != nil {
		return fmt.Errorf("listing bridge vlans: %w", err)
	}
	for _, p := range *ifc.Bridge.Port {
		if p.VLAN == nil {
			continue
		}
		if err := e.setPortVLAN(p, current); err != nil {
			return fmt.Errorf("port %s vlan: %w", p.Name, err)
		}
	}
	return nil
}

func anyPortVLAN(ports []BridgePort) bool {
	for _, p := range ports {
		if p.VLAN != nil {
			return true
		}
	}
	return false
}

func (e *Engine) setPortVLAN(p BridgePort, current map[int32][]*nl.BridgeVlanInfo) error {
	l, err := e.NL.LinkByName(p.Name)
	if err != nil {
		return err
	}
	want, err := wantedVLANs(p.VLAN)
	if err != nil {
		return err
	}
	for _, v := range current[int32(l.Attrs().Index)] {
		if w, ok := want[v.Vid]; ok && w == v.Flags&(nl.BRIDGE_VLAN_INFO_PVID|nl.BRIDGE_VLAN_INFO_UNTAGGED) {
			delete(want, v.Vid) // already as wanted
			continue
		}
		if err := e.NL.BridgeVlanDel(l, v.Vid, false, false, false, false); err != nil {
			return fmt.Errorf("removing vlan %d: %w", v.Vid, err)
		}
	}
	for _, vid := range sortedVIDs(want) {
		flags := want[vid]
		pvid, untagged := flags&nl.BRIDGE_VLAN_INFO_PVID != 0, flags&nl.BRIDGE_VLAN_INFO_UNTAGGED != 0
		if err := e.NL.BridgeVlanAdd(l, vid, pvid, untagged, false, false); err != nil {
			return fmt.Errorf("adding vlan %d: %w", vid, err)
		}
	}
	return nil
}

// wantedVLANs maps each VLAN id a port setting asks for to its flags.
func wantedVLANs(v *BridgePortVLAN) (map[uint16]uint16, error) {
	native := uint16(nl.BRIDGE_VLAN_INFO_PVID | nl.BRIDGE_VLAN_INFO_UNTAGGED)
	want := map[uint16]uint16{}
	switch v.Mode {
	case VLANAccess, "":
		if v.Tag == nil {
			return nil, fmt.Errorf("tag: required in access mode")
		}
		want[uint16(*v.Tag)] = native
	case VLANTrunk:
		for _, t := range v.TrunkTags {
			switch {
			case t.ID != nil:
				want[uint16(*t.ID)] = 0
			case t.IDRange != nil:
				for id := t.IDRange.Min; id <= t.IDRange.Max; id++ {
					want[uint16(id)] = 0
				}
			}
		}
		if v.EnableNative != nil && *v.EnableNative {
			if v.Tag == nil {
				return nil, fmt.Errorf("tag: required with enable-native")
			}
			want[uint16(*v.Tag)] = native
		}
	default:
		return nil, fmt.Errorf("mode: %q is not access or trunk", v.Mode)
	}
	return want, nil
}

func sortedVIDs(m map[uint16]uint16) []uint16 {
	out := make([]uint16, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// portVLANs reads the ports' VLAN settings of a filtering bridge.
func (e *Engine) portVLANs(br *netlink.Bridge, ports []BridgePort) error {
	if br.VlanFiltering == nil || !*br.VlanFiltering {
		return nil
	}
	all, err := nlsafe.BridgeVlanList(e.NL)
	if err != nil {
		return fmt.Errorf("listing bridge vlans: %w", err)
	}
	for i := range ports {
		l, err := e.NL.LinkByName(ports[i].Name)
		if err != nil {
			continue
		}
		ports[i].VLAN = vlanSetting(all[int32(l.Attrs().Index)])
	}
	return nil
}

// vlanSetting turns a port's kernel VLAN list back into nmstate's form.
func vlanSetting(vlans []*nl.BridgeVlanInfo) *BridgePortVLAN {
	if len(vlans) == 0 {
		return nil
	}
	var native *int
	var trunk []TrunkTag
	for _, v := range vlans {
		id := int(v.Vid)
		if v.PortVID() && v.EngressUntag() {
			native = &id
			continue
		}
		trunk = append(trunk, TrunkTag{ID: &id})
	}
	if len(trunk) == 0 {
		return &BridgePortVLAN{Mode: VLANAccess, Tag: native}
	}
	s := &BridgePortVLAN{Mode: VLANTrunk, TrunkTags: trunk}
	if native != nil {
		on := true
		s.Tag, s.EnableNative = native, &on
	}
	return s
}

// sameVLAN compares a wanted port VLAN setting with the current one.
func sameVLAN(want, have *BridgePortVLAN) bool {
	if want == nil {
		return true
	}
	if have == nil {
		return false
	}
	w, err1 := wantedVLANs(want)
	h, err2 := wantedVLANs(have)
	if err1 != nil || err2 != nil || len(w) != len(h) {
		return false
	}
	for k, v := range w {
		if h[k] != v {
			return false
		}
	}
	return true
}
