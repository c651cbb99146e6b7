package bridge_test

import (
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// portVlans returns a port's VLANs as "vid" or "vid:pvid,untagged".
func portVlans(t *testing.T, w *world, port string) []string {
	t.Helper()
	all, err := nlsafe.BridgeVlanList(w.host.H)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range all[int32(link(t, w.host, port).Attrs().Index)] {
		s := strconv.Itoa(int(v.Vid))
		if v.PortVID() {
			s += ":pvid"
		}
		if v.EngressUntag() {
			s += ",untagged"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func vlanFiltering(t *testing.T, w *world) bool {
	br, ok := link(t, w.host, "kbr0").(*netlink.Bridge)
	return ok && br.VlanFiltering != nil && *br.VlanFiltering
}

// TestVlanAccess: vlan makes the port an untagged access port of the VLAN
// on a VLAN-filtering bridge, keeping VLAN 1 unless preserveDefaultVlan is
// false; containers on the same VLAN talk.
func TestVlanAccess(t *testing.T) {
	testutil.RequireKernelFeature(t, "bridge-vlan-filtering")
	for _, preserve := range []bool{true, false} {
		w := newWorld(t)
		c1, c2 := testutil.NewNS(t), testutil.NewNS(t)
		body := `"bridge":"kbr0","vlan":100,` + w.ipam("10.50.0.0/24")
		if !preserve {
			body = `"preserveDefaultVlan":false,` + body
		}
		r1 := w.add(c1, "c1", conf("1.0.0", body))
		r2 := w.add(c2, "c2", conf("1.0.0", body))
		if !vlanFiltering(t, w) {
			t.Fatal("bridge created without vlan_filtering")
		}
		got := portVlans(t, w, r1.Interfaces[1].Name)
		keptDefault := len(got) > 0 && (got[0] == "1" || strings.HasPrefix(got[0], "1,"))
		if got[len(got)-1] != "100:pvid,untagged" || keptDefault != preserve || len(got) > 2 {
			t.Fatalf("preserveDefaultVlan=%v: port VLANs %v, want 100 as untagged PVID and VLAN 1 kept=%v", preserve, got, preserve)
		}
		testutil.MustPing(t, c1, ipOf(t, r2, true).String())
	}
}

// TestVlanTrunk: vlanTrunk makes the port a tagged trunk of the listed and
// ranged VLANs.
func TestVlanTrunk(t *testing.T) {
	testutil.RequireKernelFeature(t, "bridge-vlan-filtering")
	w := newWorld(t)
	c := testutil.NewNS(t)
	res := w.add(c, "c1", conf("1.0.0", `"bridge":"kbr0","preserveDefaultVlan":false,"vlanTrunk":[{"id":7},{"minID":10,"maxID":12}],"ipam":{}`))
	if got, want := portVlans(t, w, res.Interfaces[1].Name), []string{"10", "11", "12", "7"}; !equal(got, want) {
		t.Fatalf("trunk VLANs %v, want %v", got, want)
	}
}

// TestVlanGateway: with vlan and isGateway the gateway address goes on the
// bridge's "<bridge>.<vlan>" interface, reported as the fourth interface.
func TestVlanGateway(t *testing.T) {
	testutil.RequireKernelFeature(t, "bridge-vlan-filtering")
	w := newWorld(t)
	c := testutil.NewNS(t)
	res := w.add(c, "c1", conf("1.0.0", `"bridge":"kbr0","vlan":200,"isGateway":true,`+w.ipam("10.51.0.0/24")))
	if len(res.Interfaces) != 4 || res.Interfaces[3].Name != "kbr0.200" {
		t.Fatalf("interfaces %s", mustJSON(t, res.Interfaces))
	}
	testutil.MustPing(t, c, "10.51.0.1")
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
