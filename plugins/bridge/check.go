package bridge

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/verify"
)

// Check compares prevResult with the kernel as the reference does: the
// bridge exists with the recorded MAC and promiscuity, the container has a
// veth with the recorded MAC whose peer is a port of the bridge, and the
// container has the result's addresses and routes.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	conf, err := parse(req.Config, req.Args)
	if err != nil {
		return err
	}
	cont, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_NETNS: %w", err)
	}
	defer cont.Close()
	if conf.ipamType != "" {
		if err := ipam.Check(ctx, req, conf.ipamType); err != nil {
			return err
		}
	}
	prev, err := conf.PrevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return cni.ConfigError("prevResult", "required for CHECK")
	}
	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer host.Close()
	return check(host, cont, req, conf, prev)
}

func check(host *netlink.Handle, cont *netns.Target, req *cni.Request, conf *Config, prev *current.Result) error {
	brIf, contIf := findInterfaces(prev, conf.Bridge, req)
	if brIf == nil {
		return fmt.Errorf("bridge %s is not in prevResult", conf.Bridge)
	}
	if contIf == nil {
		return fmt.Errorf("interface %s in sandbox %s is not in prevResult", req.IfName, req.Netns)
	}
	br, err := checkBridge(host, brIf, conf)
	if err != nil {
		return err
	}
	cl, err := checkVeth(cont.NL, contIf)
	if err != nil {
		return fmt.Errorf("container interface: %w", err)
	}
	if err := findPort(host, prev, br, cl); err != nil {
		return err
	}
	if err := verify.Addrs(cont.NL, cl, prev.Interfaces, prev.IPs); err != nil {
		return err
	}
	return verify.Routes(cont.NL, prev.Routes)
}

func findInterfaces(res *current.Result, bridge string, req *cni.Request) (br, cont *current.Interface) {
	for _, i := range res.Interfaces {
		switch {
		case i.Name == bridge && i.Sandbox == "" && br == nil:
			br = i
		case i.Name == req.IfName && i.Sandbox == req.Netns:
			cont = i
		}
	}
	return br, cont
}

func checkBridge(h *netlink.Handle, want *current.Interface, conf *Config) (netlink.Link, error) {
	l, err := h.LinkByName(want.Name)
	if err != nil {
		return nil, fmt.Errorf("bridge %s not found: %w", want.Name, err)
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("%s is a %s, not a bridge", want.Name, l.Type())
	}
	if want.Mac != "" && want.Mac != l.Attrs().HardwareAddr.String() {
		return nil, fmt.Errorf("bridge %s has MAC %s, prevResult says %s", want.Name, l.Attrs().HardwareAddr, want.Mac)
	}
	if promisc := l.Attrs().Promisc != 0; promisc != conf.PromiscMode {
		return nil, fmt.Errorf("bridge %s promiscuous mode is %v, config says %v", want.Name, promisc, conf.PromiscMode)
	}
	return l, nil
}

func checkVeth(h *netlink.Handle, want *current.Interface) (netlink.Link, error) {
	l, err := h.LinkByName(want.Name)
	if err != nil {
		return nil, fmt.Errorf("%s not found: %w", want.Name, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return nil, fmt.Errorf("%s is a %s, not a veth", want.Name, l.Type())
	}
	if want.Mac != "" && want.Mac != l.Attrs().HardwareAddr.String() {
		return nil, fmt.Errorf("%s has MAC %s, prevResult says %s", want.Name, l.Attrs().HardwareAddr, want.Mac)
	}
	return l, nil
}

// findPort looks, among prevResult's host interfaces, for the container
// veth's peer: a veth on the bridge with the recorded MAC. A veth's
// IFLA_LINK is its peer's index, so no namespace switch is needed.
func findPort(h *netlink.Handle, res *current.Result, br, cont netlink.Link) error {
	for _, i := range res.Interfaces {
		if i.Sandbox != "" || i.Name == br.Attrs().Name {
			continue
		}
		l, err := h.LinkByName(i.Name)
		if err != nil {
			continue
		}
		if _, ok := l.(*netlink.Veth); !ok || l.Attrs().Index != cont.Attrs().ParentIndex ||
			l.Attrs().ParentIndex != cont.Attrs().Index || l.Attrs().MasterIndex != br.Attrs().Index {
			continue
		}
		if i.Mac != "" && i.Mac != l.Attrs().HardwareAddr.String() {
			return fmt.Errorf("host veth %s has MAC %s, prevResult says %s", i.Name, l.Attrs().HardwareAddr, i.Mac)
		}
		return nil
	}
	return fmt.Errorf("no veth on bridge %s is the peer of %s", br.Attrs().Name, cont.Attrs().Name)
}
