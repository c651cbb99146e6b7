package nmstate

import (
	"context"
	"strings"
	"testing"

	"github.com/knit-cni/knit/pkg/testutil"
)

// applyAndCheck applies y and returns the current state entry of name.
func applyAndCheck(t *testing.T, n *node, y, name string) Interface {
	t.Helper()
	if err := n.eng.Apply(context.Background(), mustParse(t, y)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	// Idempotent: the same document again changes nothing and passes.
	if err := n.eng.Apply(context.Background(), mustParse(t, y)); err != nil {
		t.Fatalf("re-apply: %v", err)
	}
	cur, err := n.eng.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range cur.Interfaces {
		if ifc.Name == name {
			return ifc
		}
	}
	t.Fatalf("%s not in current state", name)
	return Interface{}
}

func TestMacVlanAndVxlanAndVeth(t *testing.T) {
	n := newNode(t)
	mv := applyAndCheck(t, n, `
interfaces:
- name: mv0
  type: mac-vlan
  mac-vlan: {base-iface: ens35, mode: bridge}
  ipv4: {enabled: true, address: [{ip: 10.80.0.2, prefix-length: 24}]}
`, "mv0")
	if mv.MacVlan == nil || mv.MacVlan.BaseIface != "ens35" || mv.MacVlan.Mode != "bridge" {
		t.Fatalf("mv0 = %+v", mv.MacVlan)
	}
	vx := applyAndCheck(t, n, `
interfaces:
- name: vx10
  type: vxlan
  vxlan: {id: 10, base-iface: ens35, remote: 10.80.0.9, destination-port: 4789}
`, "vx10")
	if vx.VXLAN == nil || vx.VXLAN.ID != 10 || vx.VXLAN.Remote != "10.80.0.9" || *vx.VXLAN.DestinationPort != 4789 {
		t.Fatalf("vx10 = %+v", vx.VXLAN)
	}
	ve := applyAndCheck(t, n, "interfaces:\n- {name: v0, type: veth, veth: {peer: v1}}\n- {name: v1, type: veth, veth: {peer: v0}}\n", "v0")
	if ve.Veth == nil || ve.Veth.Peer != "v1" {
		t.Fatalf("v0 = %+v", ve.Veth)
	}
	if err := n.eng.Apply(context.Background(), mustParse(t, "interfaces:\n- {name: v0, state: absent}\n- {name: v1, state: absent}\n")); err != nil {
		t.Fatalf("absent veth pair: %v", err)
	}
}

func TestBondVlanDummy(t *testing.T) {
	testutil.RequireKernelFeature(t, "bond")
	testutil.RequireKernelFeature(t, "vlan")
	testutil.RequireKernelFeature(t, "dummy")
	n := newNode(t)
	d := applyAndCheck(t, n, `
interfaces:
- {name: d0, type: dummy, ipv4: {enabled: true, address: [{ip: 10.81.0.1, prefix-length: 24}]}}
- {name: d1, type: dummy}
- {name: d2, type: dummy}
`, "d0")
	if d.Type != TypeDummy || len(*d.IPv4.Address) != 1 {
		t.Fatalf("d0 = %+v", d)
	}
	bond := applyAndCheck(t, n, `
interfaces:
- name: bond0
  type: bond
  link-aggregation: {mode: active-backup, options: {miimon: "100"}, port: [d1, d2]}
`, "bond0")
	if bond.LinkAggregation == nil || bond.LinkAggregation.Mode != "active-backup" || len(*bond.LinkAggregation.Port) != 2 ||
		bond.LinkAggregation.Options["miimon"] != "100" {
		t.Fatalf("bond0 = %+v", bond.LinkAggregation)
	}
	bond = applyAndCheck(t, n, "interfaces:\n- {name: bond0, link-aggregation: {options: {miimon: \"200\", updelay: \"400\"}}}\n", "bond0")
	if o := bond.LinkAggregation.Options; o["miimon"] != "200" || o["updelay"] != "400" {
		t.Fatalf("bond0 options = %v", o)
	}
	vl := applyAndCheck(t, n, "interfaces:\n- {name: bond0.100, type: vlan, vlan: {base-iface: bond0, id: 100}}\n", "bond0.100")
	if vl.VLAN == nil || vl.VLAN.ID != 100 || vl.VLAN.BaseIface != "bond0" {
		t.Fatalf("vlan = %+v", vl.VLAN)
	}
	// Replacing the port list drops d2 from the bond.
	bond = applyAndCheck(t, n, "interfaces:\n- {name: bond0, link-aggregation: {port: [d1]}}\n", "bond0")
	if len(*bond.LinkAggregation.Port) != 1 {
		t.Fatalf("ports = %v", *bond.LinkAggregation.Port)
	}
	d2, _ := n.H.LinkByName("d2")
	if d2.Attrs().MasterIndex != 0 {
		t.Fatal("d2 still enslaved")
	}
	// A failing change on top (vlan on a missing base) leaves the bond and
	// its vlan exactly as they were.
	before, _ := n.eng.Read()
	err := n.eng.Apply(context.Background(), mustParse(t, `
interfaces:
- {name: bond0, mtu: 1400}
- {name: x.5, type: vlan, vlan: {base-iface: nosuch, id: 5}}
`))
	if err == nil {
		t.Fatal("apply with a missing base-iface succeeded")
	}
	after, _ := n.eng.Read()
	if l, _ := n.H.LinkByName("bond0"); l.Attrs().MTU == 1400 {
		t.Fatal("bond0 mtu not rolled back")
	}
	if len(before.Interfaces) != len(after.Interfaces) {
		t.Fatalf("interfaces %d before, %d after rollback", len(before.Interfaces), len(after.Interfaces))
	}
}

func TestBondOptionUnknownNamed(t *testing.T) {
	_, err := Parse([]byte("interfaces:\n- {name: b, type: bond, link-aggregation: {mode: balance-rr, options: {miimonn: \"1\"}}}\n"))
	if err == nil || !strings.Contains(err.Error(), "miimonn") {
		t.Fatalf("err = %v, want it to name miimonn", err)
	}
}

func TestBridgePortVLANs(t *testing.T) {
	testutil.RequireKernelFeature(t, "bridge-vlan-filtering")
	n := newNode(t)
	br := applyAndCheck(t, n, `
interfaces:
- {name: t0, type: veth, veth: {peer: t1}}
- name: br0
  type: linux-bridge
  bridge:
    port:
    - {name: ens35, vlan: {mode: access, tag: 10}}
    - name: t0
      vlan:
        mode: trunk
        enable-native: true
        tag: 5
        trunk-tags: [{id: 20}, {id-range: {min: 30, max: 32}}]
`, "br0")
	ports := map[string]*BridgePortVLAN{}
	for _, p := range *br.Bridge.Port {
		ports[p.Name] = p.VLAN
	}
	if v := ports["ens35"]; v == nil || v.Mode != VLANAccess || *v.Tag != 10 {
		t.Fatalf("ens35 vlan = %+v", v)
	}
	if v := ports["t0"]; v == nil || v.Mode != VLANTrunk || *v.Tag != 5 || len(v.TrunkTags) != 4 {
		t.Fatalf("t0 vlan = %+v", v)
	}
	// Replacing the access tag removes the old one.
	br = applyAndCheck(t, n, "interfaces:\n- name: br0\n  bridge: {port: [{name: ens35, vlan: {mode: access, tag: 11}}, {name: t0}]}\n", "br0")
	for _, p := range *br.Bridge.Port {
		if p.Name == "ens35" && (p.VLAN == nil || *p.VLAN.Tag != 11) {
			t.Fatalf("ens35 vlan = %+v, want access 11", p.VLAN)
		}
	}
}
