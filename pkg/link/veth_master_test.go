package link_test

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/testutil"
)

// TestAddVethHostMaster: the host end joins the master and is up; when
// joining fails the pair is gone.
func TestAddVethHostMaster(t *testing.T) {
	testutil.RequireRoot(t)
	host, cont := testutil.NewNS(t), testutil.NewNS(t)
	if err := host.H.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", TxQLen: -1}}); err != nil {
		t.Fatal(err)
	}
	br, err := host.H.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	v, err := link.AddVeth(host.H, cont.NS, cont.H, link.VethOpts{IfName: "eth0", HostMaster: br.Attrs().Index, HostUp: true, HostNS: host.NS})
	if err != nil {
		t.Fatal(err)
	}
	if v.Attrs().MasterIndex != br.Attrs().Index || v.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("host end master %d up %v, want master %d and up", v.Attrs().MasterIndex, v.Attrs().Flags&net.FlagUp != 0, br.Attrs().Index)
	}
	// The host end comes from the kernel's echo of the create: it must
	// be what a lookup says, with the kernel's default queue length (as
	// the reference leaves it).
	got, err := host.H.LinkByName(v.Attrs().Name)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attrs().Index != v.Attrs().Index || got.Attrs().HardwareAddr.String() != v.Attrs().HardwareAddr.String() {
		t.Errorf("returned index %d mac %s, kernel says %d %s", v.Attrs().Index, v.Attrs().HardwareAddr,
			got.Attrs().Index, got.Attrs().HardwareAddr)
	}
	if got.Attrs().TxQLen != 1000 {
		t.Errorf("host end txqueuelen %d, want the kernel's default 1000", got.Attrs().TxQLen)
	}
	lo, err := host.H.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := link.AddVeth(host.H, cont.NS, cont.H, link.VethOpts{IfName: "eth1", HostMaster: lo.Attrs().Index, HostNS: host.NS}); err == nil {
		t.Fatal("joining lo as a master succeeded")
	}
	if _, err := cont.H.LinkByName("eth1"); err == nil {
		t.Fatal("the pair survived the failed join")
	}
	links, _ := nlsafe.LinkList(host.H)
	if len(links) != 3 { // lo, br0, the first pair's host end
		t.Fatalf("host links %d, want 3", len(links))
	}
}
