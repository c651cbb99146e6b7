package ifattach

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/netns"
)

// Teardown is one DEL of a plugin that created a container link.
type Teardown struct {
	Req  *cni.Request
	Conf *cni.NetConf
	// Remove takes the link named Req.IfName out of the container; it must
	// succeed when the link is already gone. nil deletes it.
	Remove func(ctx context.Context, cont *netns.Target) error
}

// Run releases the IPAM allocation, then removes the link when the
// namespace still exists; both steps run even if the other failed.
//
// IPAM DEL comes first, while the link exists, as in the reference
// plugins: the dhcp IPAM sends its DHCPRELEASE through it. The allocation
// is released also when there is no namespace any more (no CNI_NETNS, or the
// path is gone): the reference host-device leaks it then
// (containernetworking/plugins#1196). The default removal returns as soon as
// the kernel has taken the link out of the namespace (link.Remove).
func (d *Teardown) Run(ctx context.Context) error {
	ipamType, err := d.Conf.IPAMType()
	if err != nil {
		return err
	}
	var errs []error
	if ipamType != "" {
		errs = append(errs, ipam.Del(ctx, d.Req, ipamType))
	}
	return errors.Join(append(errs, d.removeLink(ctx))...)
}

func (d *Teardown) removeLink(ctx context.Context) error {
	if d.Req.Netns == "" {
		return nil
	}
	cont, err := netns.OpenTarget(d.Req.Netns)
	if errors.Is(err, netns.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer cont.Close()
	if d.Remove != nil {
		return d.Remove(ctx, cont)
	}
	return link.Remove(ctx, cont, d.Req.IfName)
}

// GC forwards GC to the config's IPAM plugin, which holds the only state
// these plugins have: links die with their namespace.
func GC(ctx context.Context, req *cni.Request) error {
	return forward(ctx, req, cni.CmdGC)
}

// Status forwards STATUS to the config's IPAM plugin: the plugin is ready
// when its address source is.
func Status(ctx context.Context, req *cni.Request) error {
	return forward(ctx, req, cni.CmdStatus)
}

func forward(ctx context.Context, req *cni.Request, cmd cni.Command) error {
	var conf cni.NetConf
	if err := cni.ParseConfig(req.Config, &conf); err != nil {
		return err
	}
	ipamType, err := conf.IPAMType()
	if err != nil || ipamType == "" {
		return err
	}
	_, err = req.Delegate.Delegate(ctx, ipamType, req.WithConfig(cmd, req.Config))
	return err
}

// OpenHost opens the namespace a plugin treats as the host's: path, or the
// caller's own namespace when path is empty (a plugin runs in the host's).
// Tests point plugins at a scratch namespace this way.
func OpenHost(path string) (*netns.Target, error) {
	if path != "" {
		return netns.OpenTarget(path)
	}
	ns, err := netns.Current()
	if err != nil {
		return nil, err
	}
	// The calling thread is in this namespace already: a plain handle
	// spares NewHandleAt's switch there and back.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &netns.Target{NS: ns, NL: h}, nil
}
