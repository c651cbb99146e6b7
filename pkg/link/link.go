// Package link holds the link helpers several plugins share: veth pairs
// across namespaces, host-side names, and the default-route interface.
package link

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/netns"
)

// RandomName returns prefix plus 8 random hex digits ("veth1a2b3c4d"), the
// host-side naming the reference plugins use.
func RandomName(prefix string) (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random link name: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}

// VethOpts describes a veth pair with one end in a container.
type VethOpts struct {
	IfName string // container side
	MTU    int
	MAC    net.HardwareAddr // container side, optional
	// HostMaster, when non-zero, is the ifindex of a master (a bridge) the
	// host end joins right after the pair is created; if joining fails the
	// pair is removed.
	HostMaster int
	// HostUp sets the host end up in the creating request.
	HostUp bool
}

// ErrExists reports that the container already has the requested name.
func ErrExists(ifName string) error {
	return &cni.Error{Code: cni.ErrLinkExists, Msg: fmt.Sprintf("container already has an interface named %q", ifName)}
}

// AddVeth creates a veth pair from the host namespace (host) with its peer
// created directly inside cont, so no thread ever switches namespaces. It
// returns the host end. The pair is removed again if anything after the
// create fails.
func AddVeth(host *netlink.Handle, cont *netns.NS, contH *netlink.Handle, o VethOpts) (*netlink.Veth, error) {
	for range 5 {
		name, err := RandomName("veth")
		if err != nil {
			return nil, err
		}
		err = host.LinkAdd(vethRequest(name, o, cont))
		if errors.Is(err, unix.EEXIST) {
			// One end's name is taken. Looking only now saves every ADD
			// a round trip.
			if _, cerr := contH.LinkByName(o.IfName); cerr == nil {
				return nil, ErrExists(o.IfName)
			}
			continue // host name collision: pick another
		}
		if err != nil {
			// With HostMaster the pair exists when joining the master fails.
			_ = DelByName(host, name)
			return nil, fmt.Errorf("creating veth %s/%s: %w", name, o.IfName, err)
		}
		hv, err := hostEnd(host, name)
		if err != nil {
			_ = DelByName(host, name) // takes the container end with it
			return nil, err
		}
		return hv, nil
	}
	return nil, fmt.Errorf("could not find a free host veth name")
}

// vethRequest is the pair to create. The library sets the master (after
// looking the new link up by name, which it does anyway).
func vethRequest(name string, o VethOpts, cont *netns.NS) *netlink.Veth {
	attrs := netlink.LinkAttrs{Name: name, MTU: o.MTU, MasterIndex: o.HostMaster}
	if o.HostUp {
		attrs.Flags = net.FlagUp
	}
	v := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         o.IfName,
		PeerNamespace:    netlink.NsFd(cont.Fd()),
		PeerHardwareAddr: o.MAC,
	}
	if o.MTU > 0 {
		v.PeerMTU = uint32(o.MTU)
	}
	return v
}

// hostEnd looks up the new pair's host end.
func hostEnd(host *netlink.Handle, name string) (*netlink.Veth, error) {
	l, err := host.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up new veth %s: %w", name, err)
	}
	hv, ok := l.(*netlink.Veth)
	if !ok {
		return nil, fmt.Errorf("%s is not a veth", name)
	}
	return hv, nil
}

// PeerIndex returns the ifindex of a veth's peer, in whatever namespace the
// peer lives.
func PeerIndex(h *netlink.Handle, l netlink.Link) (int, error) {
	v, ok := l.(*netlink.Veth)
	if !ok {
		return 0, fmt.Errorf("%s is not a veth", l.Attrs().Name)
	}
	idx, err := netlink.VethPeerIndex(v)
	if err != nil {
		return 0, fmt.Errorf("peer of %s: %w", l.Attrs().Name, err)
	}
	return idx, nil
}

// DefaultRouteLink returns the link of the first IPv4 default route in the
// handle's namespace, then IPv6: macvlan's and ipvlan's default master.
func DefaultRouteLink(h *netlink.Handle) (netlink.Link, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst)) && r.LinkIndex > 0 {
				return h.LinkByIndex(r.LinkIndex)
			}
		}
	}
	return nil, errors.New("no default route to pick a master interface from")
}

func isZeroMask(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// DelByName deletes a link if it exists: DEL paths must not fail on links
// that are already gone.
func DelByName(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}
