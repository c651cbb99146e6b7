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
	"github.com/vishvananda/netlink/nl"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
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
	// HostNS is the namespace the host handle is bound to, when that is
	// not the calling thread's (the pair is created from a socket there).
	HostNS *netns.NS
}

// ErrExists reports that the container already has the requested name.
func ErrExists(ifName string) error {
	return &cni.Error{Code: cni.ErrLinkExists, Msg: fmt.Sprintf("container already has an interface named %q", ifName)}
}

// AddVeth creates a veth pair from the host namespace (host's; see
// VethOpts.HostNS) with its peer created directly inside cont, so no thread
// ever switches namespaces. It returns the host end. The
// pair is removed again if anything after the create fails.
func AddVeth(host *netlink.Handle, cont *netns.NS, contH *netlink.Handle, o VethOpts) (*netlink.Veth, error) {
	for range 5 {
		name, err := RandomName("veth")
		if err != nil {
			return nil, err
		}
		hv, err := createVeth(name, o, cont)
		if errors.Is(err, unix.EEXIST) {
			// One end's name is taken. Looking only now saves every ADD
			// a round trip.
			if _, cerr := contH.LinkByName(o.IfName); cerr == nil {
				return nil, ErrExists(o.IfName)
			}
			continue // host name collision: pick another
		}
		if err != nil {
			// The master is set in the creating request, so a failure to
			// join it leaves no pair; deleting by name covers older kernels.
			_ = DelByName(host, name)
			return nil, fmt.Errorf("creating veth %s/%s: %w", name, o.IfName, err)
		}
		if hv == nil { // a kernel that does not echo the new link (< 6.3)
			if hv, err = hostEnd(host, name); err != nil {
				_ = DelByName(host, name) // takes the container end with it
				return nil, err
			}
		}
		return hv, nil
	}
	return nil, fmt.Errorf("could not find a free host veth name")
}

// createVeth sends one RTM_NEWLINK for the pair, from the calling thread's
// namespace or o.HostNS: the host end named name, up and enslaved to its
// master as asked, the peer created in cont. The library's LinkAdd needs
// three more round trips for the same (a lookup for the index, a separate
// set-master, then our lookup of the result); here NLM_F_ECHO makes the
// kernel answer with the new host end. It returns nil without error when
// the kernel did not echo. Both ends keep the kernel's default txqueuelen,
// as the reference plugins leave it.
func createVeth(name string, o VethOpts, cont *netns.NS) (*netlink.Veth, error) {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK|unix.NLM_F_ECHO)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	if o.HostUp {
		msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	if o.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(o.MTU))))
	}
	if o.HostMaster > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(o.HostMaster))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(o.IfName))
	if o.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(o.MTU)))
	}
	if o.MAC != nil {
		peer.AddRtAttr(unix.IFLA_ADDRESS, []byte(o.MAC))
	}
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(cont.Fd())))
	req.AddData(info)
	msgs, err := execEcho(o.HostNS, req)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		l, err := netlink.LinkDeserialize(nil, m)
		if err != nil {
			return nil, fmt.Errorf("reading new veth %s: %w", name, err)
		}
		if hv, ok := l.(*netlink.Veth); ok && hv.Name == name {
			// The echo is sent before the master is set.
			hv.MasterIndex = o.HostMaster
			return hv, nil
		}
	}
	return nil, nil
}

// execEcho sends req on a route socket in ns (nil: the calling thread's)
// and returns the RTM_NEWLINK messages the kernel echoes before its ack.
// The library's Execute stops at the first echoed message and would miss
// the error that follows it when the request fails after the link was
// registered (a master it cannot join).
func execEcho(ns *netns.NS, req *nl.NetlinkRequest) ([][]byte, error) {
	target := vns.None()
	if ns != nil {
		target = ns.NsHandle()
	}
	s, err := nl.GetNetlinkSocketAt(target, vns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	defer s.Close()
	if err := s.SetReceiveTimeout(&nl.SocketTimeoutTv); err != nil {
		return nil, err
	}
	if err := s.Send(req); err != nil {
		return nil, err
	}
	pid, err := s.GetPid()
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for {
		msgs, from, err := s.Receive()
		if err != nil {
			return nil, err
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq || m.Header.Pid != pid {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, errors.New("short netlink error message")
				}
				if errno := int32(nl.NativeEndian().Uint32(m.Data[:4])); errno != 0 {
					return nil, unix.Errno(-errno)
				}
				return out, nil
			case unix.RTM_NEWLINK:
				out = append(out, m.Data)
			}
		}
	}
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
		routes, err := nlsafe.RouteListFiltered(h, fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
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
