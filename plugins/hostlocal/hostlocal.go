// Package hostlocal is the host-local IPAM plugin: it allocates addresses
// from configured ranges and records them on the node's disk in the
// reference plugin's layout (so the two can share a directory), with an
// index that keeps ADD and DEL from reading every allocation.
package hostlocal

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
)

// Plugin implements cni.Plugin and cni.GarbageCollector.
type Plugin struct{}

var _ cni.GarbageCollector = Plugin{}

// Add allocates one address per range set. An IPAM plugin ignores
// prevResult on ADD: its caller merges the returned addresses itself.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	n, err := parse(req.Config, req.Args)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: n.routes}
	if n.resolvConf != "" {
		if res.DNS, err = readResolvConf(n.resolvConf); err != nil {
			return nil, err
		}
	}
	s, err := openStore(ctx, n.dataDir, n.name, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	got, err := s.allocate(n, req.ContainerID, req.IfName)
	if err != nil {
		return nil, err
	}
	for _, g := range got {
		res.IPs = append(res.IPs, &current.IPConfig{
			Address: net.IPNet{IP: g.ip.AsSlice(), Mask: net.CIDRMask(g.r.subnet.Bits(), g.ip.BitLen())},
			Gateway: g.r.gw.AsSlice(),
		})
	}
	return res, nil
}

func readResolvConf(path string) (types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return types.DNS{}, cni.ConfigError("ipam.resolvConf", "%v", err)
	}
	defer f.Close()
	dns, err := parseResolvConf(f)
	if err != nil {
		return types.DNS{}, cni.ConfigError("ipam.resolvConf", "reading %s: %v", path, err)
	}
	return dns, nil
}

// Del releases every address the attachment holds in the network. It
// needs only the network's name and dataDir from the config, so it works
// when the ranges have changed or become invalid since ADD, and it is a
// no-op when nothing is held.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	c, dataDir, err := parseStore(req.Config)
	if err != nil {
		return err
	}
	s, err := openStore(ctx, dataDir, c.Name, false)
	if err != nil || s == nil {
		return err
	}
	defer s.close()
	return s.release(req.ContainerID, req.IfName)
}

// Check verifies the attachment still holds addresses on disk and that
// every prevResult address inside this network's ranges is one of them.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	n, err := parse(req.Config, req.Args)
	if err != nil {
		return err
	}
	prev, err := n.conf.PrevResult()
	if err != nil {
		return err
	}
	s, err := openStore(ctx, n.dataDir, n.name, false)
	if err != nil {
		return err
	}
	var held []netip.Addr
	if s != nil {
		held, err = s.held(req.ContainerID, req.IfName)
		s.close()
		if err != nil {
			return err
		}
	}
	if len(held) == 0 {
		return fmt.Errorf("host-local: no address allocated to container %s interface %s in network %s", req.ContainerID, req.IfName, n.name)
	}
	return checkPrev(n, prev, held)
}

func checkPrev(n *netConf, prev *current.Result, held []netip.Addr) error {
	if prev == nil {
		return nil
	}
	for _, ipc := range prev.IPs {
		ip, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		inRanges := slices.ContainsFunc(n.sets, func(s rangeSet) bool { return s.rangeFor(ip) >= 0 })
		if inRanges && !slices.Contains(held, ip) {
			return fmt.Errorf("host-local: prevResult address %s is not allocated to this attachment in network %s", ip, n.name)
		}
	}
	return nil
}

// GC releases every address whose owner is not one of the valid
// attachments. It reads the address files themselves (not the index), as
// GC is rare and must be right even after foreign edits, then rewrites the
// index from what is left.
func (Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) error {
	c, dataDir, err := parseStore(req.Config)
	if err != nil {
		return err
	}
	s, err := openStore(ctx, dataDir, c.Name, false)
	if err != nil || s == nil {
		return err
	}
	defer s.close()
	keep := make(map[string]bool, 2*len(valid))
	for _, a := range valid {
		keep[ownerKey(a.ContainerID, a.IfName)] = true
		keep[legacyKey(a.ContainerID)] = true
	}
	owners, err := s.scan()
	if err != nil {
		return err
	}
	for ip, owner := range owners {
		if !keep[owner] {
			if _, err := s.remove(ip); err != nil {
				return err
			}
			delete(owners, ip)
		}
	}
	return s.writeIndex(owners)
}
