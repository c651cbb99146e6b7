// Package dummy is the CNI dummy plugin: a dummy link in the container
// carrying the IPAM plugin's addresses (a stable address that is never
// down). Config keys are those of containernetworking/plugins' dummy.
package dummy

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ifattach"
	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/netns"
)

// Config is dummy's network configuration: the common keys; ipam is
// required.
type Config struct {
	cni.NetConf
}

// Plugin implements cni.Plugin.
type Plugin struct{}

func parse(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Add creates the dummy link in the container and addresses it.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	c, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	cont, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, err
	}
	defer cont.Close()
	s := &ifattach.Setup{Req: req, Conf: &c.NetConf, Cont: cont, IPAM: ifattach.IPAMRequired,
		Create: func(context.Context) (netlink.Link, error) { return create(cont, req.IfName) }}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s.Run(ctx)
}

func create(cont *netns.Target, ifName string) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ifName
	if err := cont.NL.LinkAdd(&netlink.Dummy{LinkAttrs: attrs}); err != nil {
		return nil, fmt.Errorf("creating dummy %s: %w", ifName, err)
	}
	l, err := cont.NL.LinkByName(ifName)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("looking up new dummy %s: %w", ifName, err), link.DelByName(cont.NL, ifName))
	}
	return l, nil
}

// Del deletes the dummy link and releases its addresses.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	c, err := parse(req.Config)
	if err != nil {
		return err
	}
	d := &ifattach.Teardown{Req: req, Conf: &c.NetConf}
	return d.Run(ctx)
}

// Check compares prevResult with the container's dummy link, which must be
// up.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	c, err := parse(req.Config)
	if err != nil {
		return err
	}
	if t, err := c.IPAMType(); err != nil || t == "" {
		if err == nil {
			err = cni.ConfigError("ipam", "an IPAM configuration with a type is required")
		}
		return err
	}
	chk := &ifattach.Check{Req: req, Conf: &c.NetConf, Verify: func(_ *netlink.Handle, l netlink.Link) error {
		if _, ok := l.(*netlink.Dummy); !ok {
			return fmt.Errorf("interface %s is a %s, not a dummy", l.Attrs().Name, l.Type())
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("interface %s is down", l.Attrs().Name)
		}
		return nil
	}}
	return chk.Run(ctx)
}

// GC forwards to the IPAM plugin, the only holder of state.
func (Plugin) GC(ctx context.Context, req *cni.Request, _ []cni.Attachment) error {
	return ifattach.GC(ctx, req)
}

// Status reports the IPAM plugin's readiness.
func (Plugin) Status(ctx context.Context, req *cni.Request) error {
	return ifattach.Status(ctx, req)
}
