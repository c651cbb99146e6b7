// Package firewall is the CNI firewall plugin: a chained plugin that lets
// traffic to and from the container addresses of prevResult through the
// host's forwarding path, applies the bridge's ingress policy (open,
// same-bridge, isolated) and keeps an admin chain for the operator's own
// rules, with nftables (default) or iptables.
package firewall

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/hostns"
	"github.com/knit-cni/knit/pkg/nftown"
)

// Plugin implements cni.Plugin and cni.GarbageCollector.
type Plugin struct {
	// HostNS is the path of the network namespace whose firewall the
	// plugin programs; empty means the calling process's own (the host's
	// when a runtime execs the plugin). knitd and tests set it.
	HostNS string
	// Conns, when set, keeps nftables connections open across calls; it
	// must belong to HostNS. Long-running callers (knitd) set it.
	Conns *hostns.NFTPool
}

type backend interface {
	add(s *settings, owner, bridge string) error
	del(owner, bridge string) error
	check(s *settings, owner, bridge string) error
	gc(network string, valid map[string]bool) error
}

// open opens the host namespace and the backend; done releases them,
// told whether the operation succeeded.
func (p Plugin) open(s *settings) (backend, func(ok bool), error) {
	host, err := hostns.Open(p.HostNS)
	if err != nil {
		return nil, nil, err
	}
	host.Pool = p.Conns
	if s.backend == BackendIptables {
		return iptBackend{host: host}, func(bool) { host.Close() }, nil
	}
	b, err := newNFT(host)
	if err != nil {
		host.Close()
		return nil, nil, err
	}
	return b, func(ok bool) { b.close(ok); host.Close() }, nil
}

// Add installs the container's rules and passes prevResult through.
func (p Plugin) Add(ctx context.Context, req *cni.Request) (_ types.Result, err error) {
	s, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	if s.prev == nil {
		return nil, cni.ConfigError("prevResult", "firewall must be called as a chained plugin")
	}
	bridge, err := s.bridgeName()
	if err != nil {
		return nil, err
	}
	if len(s.prev.IPs) == 0 && bridge == "" {
		return s.prev, nil // nothing to allow or isolate: leave the host alone
	}
	be, done, err := p.open(s)
	if err != nil {
		return nil, err
	}
	defer func() { done(err == nil) }()
	if err := be.add(s, nftown.Owner(s.Name, req.ContainerID, req.IfName), bridge); err != nil {
		return nil, fmt.Errorf("firewall: %w", err)
	}
	return s.prev, nil
}

// Del removes the container's rules; it needs no prevResult (0.3.x runtimes
// send none). A bridge's ingress policy goes with the bridge.
func (p Plugin) Del(ctx context.Context, req *cni.Request) (err error) {
	s, err := parse(req.Config)
	if err != nil {
		return err
	}
	bridge, err := s.bridgeName()
	if err != nil {
		bridge = "" // no prevResult: the policy stays until GC
	}
	be, done, err := p.open(s)
	if err != nil {
		return err
	}
	defer func() { done(err == nil) }()
	return be.del(nftown.Owner(s.Name, req.ContainerID, req.IfName), bridge)
}

// Check verifies the rules ADD installed for prevResult.
func (p Plugin) Check(ctx context.Context, req *cni.Request) (err error) {
	s, err := parse(req.Config)
	if err != nil {
		return err
	}
	if s.prev == nil {
		return cni.ConfigError("prevResult", "CHECK needs prevResult")
	}
	bridge, err := s.bridgeName()
	if err != nil {
		return err
	}
	be, done, err := p.open(s)
	if err != nil {
		return err
	}
	defer func() { done(err == nil) }()
	return be.check(s, nftown.Owner(s.Name, req.ContainerID, req.IfName), bridge)
}

// GC removes the rules of this network's attachments that are not valid.
func (p Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) (err error) {
	s, err := parse(req.Config)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, a := range valid {
		keep[nftown.Owner(s.Name, a.ContainerID, a.IfName)] = true
	}
	be, done, err := p.open(s)
	if err != nil {
		return err
	}
	defer func() { done(err == nil) }()
	return be.gc(s.Name, keep)
}
