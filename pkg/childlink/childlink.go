// Package childlink is what macvlan, ipvlan and vlan share: a link that is
// the child of a master interface (in the host namespace, or in the
// container with linkInContainer), created straight into the container
// under its final name, then addressed through ifattach.
package childlink

import (
	"context"
	"errors"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ifattach"
	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/netns"
)

// Config holds the config keys the three plugins share, with the reference
// plugins' names.
type Config struct {
	Master          string `json:"master"`
	MTU             int    `json:"mtu"`
	LinkInContainer bool   `json:"linkInContainer,omitempty"`
}

// Validate checks what can be checked without looking at the kernel.
func (c *Config) Validate() error {
	if c.MTU < 0 {
		return cni.ConfigError("mtu", "invalid MTU %d, must not be negative", c.MTU)
	}
	return nil
}

// Kind is what differs between the child link types.
type Kind struct {
	Type string // "macvlan", for messages
	// New returns the link to create from attrs (name, parent, MTU, MAC and
	// target namespace already set).
	New func(attrs netlink.LinkAttrs) netlink.Link
	// Verify compares an existing link with the config for CHECK: its type
	// and type-specific settings.
	Verify func(l netlink.Link) error
}

// Params are one request's settings.
type Params struct {
	Config
	MAC net.HardwareAddr
	// DefaultMaster: an empty master means the namespace's default-route
	// link (macvlan, ipvlan); otherwise master is required.
	DefaultMaster bool
	IPAM          ifattach.IPAMMode
	PrevIPs       bool
	Notify        bool
}

// Add creates the child link in the container and addresses it.
func Add(ctx context.Context, req *cni.Request, conf *cni.NetConf, hostNS string, p Params, k Kind) (*current.Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	host, cont, err := open(hostNS, req.Netns)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	defer cont.Close()
	master, err := Master(host, cont, p)
	if err != nil {
		return nil, err
	}
	if mtu := master.Attrs().MTU; p.MTU > mtu {
		return nil, cni.ConfigError("mtu", "invalid MTU %d, must be [0, master MTU(%d)]", p.MTU, mtu)
	}
	s := &ifattach.Setup{Req: req, Conf: conf, Cont: cont, IPAM: p.IPAM, PrevIPs: p.PrevIPs, Notify: p.Notify,
		Create: func(context.Context) (netlink.Link, error) { return create(host, cont, req.IfName, master, p, k) }}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s.Run(ctx)
}

// Del deletes the link and releases its addresses; see ifattach.Teardown.
func Del(ctx context.Context, req *cni.Request, conf *cni.NetConf) error {
	d := &ifattach.Teardown{Req: req, Conf: conf}
	return d.Run(ctx)
}

// Check verifies prevResult against the kernel: the master exists, the link
// is its child of the right kind, and addresses and routes are in place.
func Check(ctx context.Context, req *cni.Request, conf *cni.NetConf, hostNS string, p Params, k Kind) error {
	host, cont, err := open(hostNS, req.Netns)
	if err != nil {
		return err
	}
	defer host.Close()
	defer cont.Close()
	master, err := Master(host, cont, p)
	if err != nil {
		return err
	}
	c := &ifattach.Check{Req: req, Conf: conf, Verify: func(_ *netlink.Handle, l netlink.Link) error {
		if l.Attrs().ParentIndex != master.Attrs().Index {
			return fmt.Errorf("%s %s is not a child of master %s", k.Type, l.Attrs().Name, master.Attrs().Name)
		}
		return k.Verify(l)
	}}
	return c.Run(ctx)
}

func open(hostNS, contNS string) (host, cont *netns.Target, err error) {
	host, err = ifattach.OpenHost(hostNS)
	if err != nil {
		return nil, nil, err
	}
	cont, err = netns.OpenTarget(contNS)
	if err != nil {
		host.Close()
		return nil, nil, err
	}
	return host, cont, nil
}

// Master returns the master link: by name, or the default-route link, in
// the host namespace or (linkInContainer) the container's. Not finding it is
// a config error naming the master field.
func Master(host, cont *netns.Target, p Params) (netlink.Link, error) {
	h := host.NL
	if p.LinkInContainer {
		h = cont.NL
	}
	if p.Master == "" {
		if !p.DefaultMaster {
			return nil, cni.ConfigError("master", "required: the name of the interface to create the link on")
		}
		l, err := link.DefaultRouteLink(h)
		if err != nil {
			return nil, cni.ConfigError("master", "not set, and %v", err)
		}
		return l, nil
	}
	l, err := h.LinkByName(p.Master)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, cni.ConfigError("master", "link %q not found", p.Master)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up master %q: %w", p.Master, err)
	}
	return l, nil
}

// create makes the child of master named ifName directly inside cont: the
// request carries the container's namespace (IFLA_NET_NS_FD) while the
// parent index is resolved in the namespace the request is sent from, so
// nothing ever appears in the host namespace.
func create(host, cont *netns.Target, ifName string, master netlink.Link, p Params, k Kind) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ifName
	attrs.ParentIndex = master.Attrs().Index
	attrs.MTU = p.MTU
	attrs.HardwareAddr = p.MAC
	h := cont.NL
	if !p.LinkInContainer {
		h = host.NL
		attrs.Namespace = netlink.NsFd(cont.Fd())
	}
	err := h.LinkAdd(k.New(attrs))
	if errors.Is(err, unix.EEXIST) && !p.LinkInContainer {
		// Old kernels check the new name against the sending namespace:
		// the reference's "kernel bug" temporary name.
		err = createRenamed(h, cont, attrs, k, ifName)
	}
	if err != nil {
		return nil, fmt.Errorf("creating %s %s on %s: %w", k.Type, ifName, master.Attrs().Name, err)
	}
	l, err := cont.NL.LinkByName(ifName)
	if err != nil {
		_ = link.DelByName(cont.NL, ifName)
		return nil, fmt.Errorf("looking up new %s %s: %w", k.Type, ifName, err)
	}
	return l, nil
}

func createRenamed(h *netlink.Handle, cont *netns.Target, attrs netlink.LinkAttrs, k Kind, ifName string) error {
	tmp, err := link.RandomName("knit")
	if err != nil {
		return err
	}
	attrs.Name = tmp
	if err := h.LinkAdd(k.New(attrs)); err != nil {
		return err
	}
	l, err := cont.NL.LinkByName(tmp)
	if err == nil {
		err = cont.NL.LinkSetName(l, ifName)
	}
	if err != nil {
		_ = link.DelByName(cont.NL, tmp)
		return fmt.Errorf("renaming %s to %s: %w", tmp, ifName, err)
	}
	return nil
}
