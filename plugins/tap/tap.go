// Package tap is the CNI tap plugin: a persistent tap device in the
// container (for a VM or user-space stack running there), optionally a port
// of a bridge in the container and addressed by IPAM. Config keys are those
// of containernetworking/plugins' tap.
package tap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ifattach"
	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/netns"
)

// Config is tap's network configuration.
type Config struct {
	cni.NetConf
	ifattach.MACKeys
	MultiQueue bool `json:"multiQueue"`
	MTU        int  `json:"mtu"`
	// Owner and Group own the device (who may open it); unset means
	// anyone with CAP_NET_ADMIN, as `ip tuntap add` without user/group.
	Owner *uint32 `json:"owner,omitempty"`
	Group *uint32 `json:"group,omitempty"`
	// SelinuxContext is the context the reference creates the device
	// under; see checkSELinux.
	SelinuxContext string `json:"selinuxContext,omitempty"`
	// Bridge is a bridge in the container the tap becomes a port of.
	Bridge string `json:"bridge,omitempty"`
}

// Plugin implements cni.Plugin.
type Plugin struct{}

// selinuxEnforce exists when SELinux is enabled.
const selinuxEnforce = "/sys/fs/selinux/enforce"

func decode(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// parse decodes and validates the config for ADD and CHECK.
func parse(data []byte, cniArgs string) (*Config, net.HardwareAddr, error) {
	c, err := decode(data)
	if err != nil {
		return nil, nil, err
	}
	if c.MTU < 0 {
		return nil, nil, cni.ConfigError("mtu", "invalid MTU %d, must not be negative", c.MTU)
	}
	if err := c.checkSELinux(); err != nil {
		return nil, nil, err
	}
	mac, err := c.ResolveMAC(cniArgs)
	if err != nil {
		return nil, nil, err
	}
	return c, mac, nil
}

// checkSELinux: the reference labels the device by exec'ing `ip` under the
// context. knit does not exec, so where SELinux is on, a context it cannot
// apply is refused rather than ignored; where SELinux is off the context
// has no meaning, as with the reference.
func (c *Config) checkSELinux() error {
	if c.SelinuxContext == "" {
		return nil
	}
	if _, err := os.Stat(selinuxEnforce); err == nil {
		return cni.Errorf(types.ErrUnsupportedField, "selinuxContext: labelling tap devices is not supported")
	}
	return nil
}

// Add creates the tap device in the container and addresses it.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	c, mac, err := parse(req.Config, req.Args)
	if err != nil {
		return nil, err
	}
	cont, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, err
	}
	defer cont.Close()
	br, err := c.bridge(cont)
	if err != nil {
		return nil, err
	}
	s := &ifattach.Setup{Req: req, Conf: &c.NetConf, Cont: cont, IPAM: ifattach.IPAMOptional, Notify: true,
		Create: func(context.Context) (netlink.Link, error) { return c.create(cont, req.IfName, mac, br) }}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s.Run(ctx)
}

// bridge returns the container bridge the config names, nil for none.
func (c *Config) bridge(cont *netns.Target) (netlink.Link, error) {
	if c.Bridge == "" {
		return nil, nil
	}
	l, err := cont.NL.LinkByName(c.Bridge)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, cni.ConfigError("bridge", "link %q not found in the container", c.Bridge)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up bridge %q: %w", c.Bridge, err)
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return nil, cni.ConfigError("bridge", "%q is a %s, not a bridge", c.Bridge, l.Type())
	}
	return l, nil
}

// flags are the TUNSETIFF flags: the reference's netlink path (tap with a
// virtio-net header), multi-queue on request. The application that
// attaches later sets its own header flags; type and multi-queue must match.
func (c *Config) flags() uint16 {
	f := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if c.MultiQueue {
		f |= unix.IFF_MULTI_QUEUE
	}
	return f
}

// create makes the persistent tap named ifName in cont and applies MTU,
// MAC and bridge; the device is removed again if any of that fails.
func (c *Config) create(cont *netns.Target, ifName string, mac net.HardwareAddr, br netlink.Link) (netlink.Link, error) {
	// A tun device is created in the namespace of the thread that opens
	// /dev/net/tun, so this one step runs inside the container.
	if err := cont.Do(func() error { return c.tunCreate(ifName) }); err != nil {
		return nil, err
	}
	l, err := c.configure(cont.NL, ifName, mac, br)
	if err != nil {
		return nil, errors.Join(err, link.DelByName(cont.NL, ifName))
	}
	return l, nil
}

func (c *Config) tunCreate(ifName string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	// Closing a descriptor of a device that is not persistent yet destroys
	// it: every failure below leaves nothing.
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(ifName)
	if err != nil {
		return fmt.Errorf("tap name %q: %w", ifName, err)
	}
	ifr.SetUint16(c.flags())
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("creating tap %s: %w", ifName, err)
	}
	if c.Owner != nil {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, int(*c.Owner)); err != nil {
			return fmt.Errorf("tap %s owner %d: %w", ifName, *c.Owner, err)
		}
	}
	if c.Group != nil {
		if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, int(*c.Group)); err != nil {
			return fmt.Errorf("tap %s group %d: %w", ifName, *c.Group, err)
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("making tap %s persistent: %w", ifName, err)
	}
	return nil
}

func (c *Config) configure(h *netlink.Handle, ifName string, mac net.HardwareAddr, br netlink.Link) (netlink.Link, error) {
	l, err := h.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("looking up new tap %s: %w", ifName, err)
	}
	if c.MTU > 0 {
		if err := h.LinkSetMTU(l, c.MTU); err != nil {
			return nil, fmt.Errorf("tap %s MTU %d: %w", ifName, c.MTU, err)
		}
	}
	if mac != nil {
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, fmt.Errorf("tap %s MAC %s: %w", ifName, mac, err)
		}
	}
	if br != nil {
		if err := h.LinkSetMaster(l, br); err != nil {
			return nil, fmt.Errorf("adding tap %s to bridge %s: %w", ifName, c.Bridge, err)
		}
	}
	return h.LinkByName(ifName)
}

// Del deletes the tap device and releases its addresses.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	c, err := decode(req.Config)
	if err != nil {
		return err
	}
	d := &ifattach.Teardown{Req: req, Conf: &c.NetConf}
	return d.Run(ctx)
}

// Check compares prevResult with the container's tap device: its type,
// queue mode, owner, group and bridge as configured, and its addresses.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	c, _, err := parse(req.Config, req.Args)
	if err != nil {
		return err
	}
	chk := &ifattach.Check{Req: req, Conf: &c.NetConf, Verify: c.verify}
	return chk.Run(ctx)
}

func (c *Config) verify(h *netlink.Handle, l netlink.Link) error {
	name := l.Attrs().Name
	t, ok := l.(*netlink.Tuntap)
	if !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("interface %s is a %s, not a tap", name, l.Type())
	}
	if mq := t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0; mq != c.MultiQueue {
		return fmt.Errorf("tap %s multi-queue is %v, config says %v", name, mq, c.MultiQueue)
	}
	if c.Owner != nil && t.Owner != *c.Owner {
		return fmt.Errorf("tap %s is owned by %d, config says %d", name, t.Owner, *c.Owner)
	}
	if c.Group != nil && t.Group != *c.Group {
		return fmt.Errorf("tap %s has group %d, config says %d", name, t.Group, *c.Group)
	}
	if c.MTU > 0 && l.Attrs().MTU != c.MTU {
		return fmt.Errorf("tap %s has MTU %d, config says %d", name, l.Attrs().MTU, c.MTU)
	}
	if c.Bridge != "" {
		br, err := h.LinkByName(c.Bridge)
		if err != nil || l.Attrs().MasterIndex != br.Attrs().Index {
			return fmt.Errorf("tap %s is not a port of bridge %s", name, c.Bridge)
		}
	}
	return nil
}

// GC forwards to the IPAM plugin, the only holder of state.
func (Plugin) GC(ctx context.Context, req *cni.Request, _ []cni.Attachment) error {
	return ifattach.GC(ctx, req)
}

// Status reports the IPAM plugin's readiness.
func (Plugin) Status(ctx context.Context, req *cni.Request) error {
	return ifattach.Status(ctx, req)
}
