package ptp

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/verify"
)

// Check compares prevResult with the container as the reference does: the
// interface named CNI_IFNAME with prevResult's sandbox is a veth with the
// recorded MAC, carrying the result's addresses, and the routes exist.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	cont, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_NETNS: %w", err)
	}
	defer cont.Close()
	if err := ipam.Check(ctx, req, conf.ipamType); err != nil {
		return err
	}
	prev, err := conf.PrevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return cni.ConfigError("prevResult", "required for CHECK")
	}
	found := false
	for _, i := range prev.Interfaces {
		if i.Name != req.IfName || i.Sandbox != req.Netns {
			continue
		}
		found = true
		l, err := cont.NL.LinkByName(i.Name)
		if err != nil {
			return fmt.Errorf("container interface %s not found: %w", i.Name, err)
		}
		if _, ok := l.(*netlink.Veth); !ok {
			return fmt.Errorf("container interface %s is a %s, not a veth", i.Name, l.Type())
		}
		if i.Mac != "" && i.Mac != l.Attrs().HardwareAddr.String() {
			return fmt.Errorf("%s has MAC %s, prevResult says %s", i.Name, l.Attrs().HardwareAddr, i.Mac)
		}
		if err := verify.Addrs(cont.NL, l, prev.Interfaces, prev.IPs); err != nil {
			return err
		}
	}
	if !found {
		return fmt.Errorf("interface %s in sandbox %s is not in prevResult", req.IfName, req.Netns)
	}
	return verify.Routes(cont.NL, prev.Routes)
}
