// Package loopback is the CNI loopback plugin: it sets lo up in the
// container (whatever CNI_IFNAME says) and reports its addresses.
package loopback

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// Config is loopback's config: nothing beyond the common keys.
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

// Add sets lo up. In a chain it passes prevResult through unchanged.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	conf, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	t, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	lo, err := t.NL.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("finding lo: %w", err)
	}
	if err := t.NL.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("setting lo up: %w", err)
	}
	if prev, err := conf.PrevResult(); err != nil || prev != nil {
		return prev, err
	}
	return result(t.NL, lo, req)
}

func result(h *netlink.Handle, lo netlink.Link, req *cni.Request) (*current.Result, error) {
	addrs, err := nlsafe.AddrList(h, lo, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing lo addresses: %w", err)
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "lo", Mac: "00:00:00:00:00:00", Sandbox: req.Netns}}}
	for _, a := range addrs {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(0),
			Address: net.IPNet{IP: a.IP, Mask: a.Mask}})
	}
	return res, nil
}

// Del sets lo down; a namespace that is already gone is success.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	if _, err := parse(req.Config); err != nil {
		return err
	}
	if req.Netns == "" {
		return nil
	}
	t, err := netns.OpenTarget(req.Netns)
	if errors.Is(err, netns.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer t.Close()
	lo, err := t.NL.LinkByName("lo")
	if err != nil {
		return nil
	}
	if err := t.NL.LinkSetDown(lo); err != nil {
		return fmt.Errorf("setting lo down: %w", err)
	}
	return nil
}

// Check verifies lo is up.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	if _, err := parse(req.Config); err != nil {
		return err
	}
	t, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return err
	}
	defer t.Close()
	lo, err := t.NL.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("lo is down")
	}
	return nil
}
