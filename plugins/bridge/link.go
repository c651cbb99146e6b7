package bridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nlsafe"
	"github.com/knit-cni/knit/pkg/sysctl"
	"github.com/knit-cni/knit/pkg/vethnet"
)

// ensureBridge returns the config's bridge, up, creating it if missing. A
// bridge that exists is reused as it is (MTU, VLAN filtering), like the
// reference does.
func ensureBridge(h *netlink.Handle, c *Config) (*netlink.Bridge, error) {
	l, err := h.LinkByName(c.Bridge)
	if isNotFound(err) {
		l, err = createBridge(h, c)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", c.Bridge, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, errNotBridge(c.Bridge)
	}
	vethnet.DisableRA(br.Name)
	if br.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("setting bridge %s up: %w", br.Name, err)
		}
	}
	if c.PromiscMode && br.Promisc == 0 {
		if err := h.SetPromiscOn(br); err != nil {
			return nil, fmt.Errorf("setting bridge %s promiscuous: %w", br.Name, err)
		}
	}
	return br, nil
}

// createBridge adds the bridge, up, with the kernel's default txqueuelen
// (TxQLen -1: a zero-length queue would break FIFO shapers). Another ADD
// creating it at the same moment is fine.
func createBridge(h *netlink.Handle, c *Config) (netlink.Link, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.Bridge, MTU: c.MTU, TxQLen: -1, Flags: net.FlagUp}}
	if c.Vlan != 0 || c.VlanTrunk != nil {
		on := true
		br.VlanFiltering = &on
	}
	if err := h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("creating: %w", err)
	}
	return h.LinkByName(c.Bridge)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// setupPort applies hairpin, isolation and VLAN settings to a bridge port.
// Options left at their defaults cost no round trip.
func setupPort(h *netlink.Handle, port netlink.Link, c *Config) error {
	name := port.Attrs().Name
	if c.HairpinMode {
		if err := h.LinkSetHairpin(port, true); err != nil {
			return fmt.Errorf("setting hairpin mode on %s: %w", name, err)
		}
	}
	if c.PortIsolation {
		if err := h.LinkSetIsolated(port, true); err != nil {
			return fmt.Errorf("isolating port %s: %w", name, err)
		}
	}
	return setupPortVlans(h, port, c.Vlan, c.vlans, c.PreserveDefaultVlan)
}

// setupPortVlans makes the port an access port of vlan (untagged, PVID) or
// a trunk of vlans (tagged), dropping the default VLAN unless preserved.
// Trunk ids go in ranges: one request per contiguous run.
func setupPortVlans(h *netlink.Handle, port netlink.Link, vlan int, vlans []int, preserve bool) error {
	name := port.Attrs().Name
	if (vlan != 0 || len(vlans) > 0) && !preserve {
		if err := removeDefaultVlan(h, port); err != nil {
			return fmt.Errorf("removing default vlan on %s: %w", name, err)
		}
	}
	if vlan != 0 {
		if err := h.BridgeVlanAdd(port, uint16(vlan), true, true, false, true); err != nil {
			return fmt.Errorf("setting vlan %d on %s: %w", vlan, name, err)
		}
	}
	for _, r := range runs(vlans) {
		var err error
		if r[0] == r[1] {
			err = h.BridgeVlanAdd(port, uint16(r[0]), false, false, false, true)
		} else {
			err = h.BridgeVlanAddRange(port, uint16(r[0]), uint16(r[1]), false, false, false, true)
		}
		if err != nil {
			return fmt.Errorf("adding trunk vlans %d-%d on %s: %w", r[0], r[1], name, err)
		}
	}
	return nil
}

// runs splits sorted ids into [first, last] runs of consecutive ids.
func runs(ids []int) [][2]int {
	var out [][2]int
	for _, id := range ids {
		if n := len(out); n > 0 && out[n-1][1] == id-1 {
			out[n-1][1] = id
			continue
		}
		out = append(out, [2]int{id, id})
	}
	return out
}

func removeDefaultVlan(h *netlink.Handle, port netlink.Link) error {
	all, err := nlsafe.BridgeVlanList(h)
	if err != nil {
		return err
	}
	for _, info := range all[int32(port.Attrs().Index)] {
		if err := h.BridgeVlanDel(port, info.Vid, false, false, false, true); err != nil {
			return err
		}
	}
	return nil
}

// containerSysctls runs inside the container's namespace: IPv6 DAD off
// (hairpin and promiscuous bridges echo neighbour solicitations back) or
// on with enhanced DAD, and gratuitous ARP when the link comes up.
func containerSysctls(ifName string, dad bool) error {
	v6 := "net/ipv6/conf/" + ifName + "/"
	set := [][2]string{{v6 + "accept_dad", "0"}}
	if dad {
		set = [][2]string{{v6 + "enhanced_dad", "1"}, {v6 + "accept_dad", "1"}}
	}
	set = append(set, [2]string{"net/ipv4/conf/" + ifName + "/arp_notify", "1"})
	for _, kv := range set {
		// Missing keys (IPv6 disabled) are skipped, as the reference does.
		if err := sysctl.Set(kv[0], kv[1]); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// errNotBridge reports a bridge name taken by a link of another kind.
func errNotBridge(name string) error {
	return cni.ConfigError("bridge", "%q already exists but is not a bridge", name)
}
