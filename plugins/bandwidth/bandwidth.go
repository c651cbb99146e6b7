// Package bandwidth is the CNI bandwidth meta plugin. Chained after a
// plugin that connects the container with a veth pair (bridge, ptp), it
// limits traffic on the host end of the pair: ingress (to the container)
// with a token bucket (TBF) on the host veth, egress (from the container)
// by redirecting what the host veth receives to an ifb device that has the
// token bucket.
package bandwidth

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// Plugin implements cni.Plugin and cni.GarbageCollector.
type Plugin struct{}

// ifbPrefix starts every ifb name, as in the reference.
const ifbPrefix = "bwp"

// aliasPrefix marks the ifbs knit owns; GC touches no others.
const aliasPrefix = "knit-bandwidth "

// ifbName derives the attachment's ifb name. The reference hashes network
// name and container ID only, so two attachments of one network in one pod
// collide; the interface name is part of the hash here.
func ifbName(network, containerID, ifName string) string {
	sum := sha512.Sum512([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return (ifbPrefix + hex.EncodeToString(sum[:]))[:15]
}

// owner is what an ifb's alias records, so GC knows whose it is.
type owner struct {
	Network     string `json:"n"`
	ContainerID string `json:"c"`
	IfName      string `json:"i"`
}

func (o owner) alias() string {
	b, _ := json.Marshal(o)
	return aliasPrefix + string(b)
}

func parseAlias(alias string) (owner, bool) {
	var o owner
	rest, ok := strings.CutPrefix(alias, aliasPrefix)
	if !ok || json.Unmarshal([]byte(rest), &o) != nil {
		return o, false
	}
	return o, true
}

func newShaper(h *netlink.Handle, host netlink.Link, network string, req *cni.Request) *shaper {
	return &shaper{h: h, host: host, ifb: ifbName(network, req.ContainerID, req.IfName),
		o: owner{Network: network, ContainerID: req.ContainerID, IfName: req.IfName}}
}

// hostHandle returns a netlink handle in the plugin's own namespace, where
// the host end of the veth lives.
func hostHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return h, nil
}

// Add installs the shaping and returns prevResult with the ifb added when
// egress is limited. A failure removes whatever was installed.
func (Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	conf, err := parse(req.Config)
	if err != nil {
		return nil, err
	}
	lim, err := conf.limits()
	if err != nil {
		return nil, err
	}
	prev, err := conf.PrevResult()
	if err != nil {
		return nil, err
	}
	if lim == nil && prev == nil {
		return &current.Result{CNIVersion: current.ImplementedSpecVersion}, nil
	}
	if lim == nil {
		return prev, nil // nothing to shape: pass through
	}
	if prev == nil {
		return nil, cni.ConfigError("prevResult", "bandwidth is a chained plugin: list it after bridge or ptp")
	}
	h, err := hostHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	host, err := hostVeth(h, req, prev)
	if err != nil {
		return nil, err
	}
	sh := newShaper(h, host, conf.Name, req)
	ifbIf, err := sh.install(lim)
	if err != nil {
		return nil, errors.Join(err, sh.remove())
	}
	if ifbIf != nil {
		prev.Interfaces = append(prev.Interfaces, ifbIf)
	}
	return prev, nil
}

// hostVeth finds the host end of the container interface's veth pair and
// checks prevResult lists it as a host interface.
func hostVeth(h *netlink.Handle, req *cni.Request, prev *current.Result) (netlink.Link, error) {
	t, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	cont, err := t.NL.LinkByName(req.IfName)
	if err != nil {
		return nil, fmt.Errorf("finding %s in the container: %w", req.IfName, err)
	}
	if _, ok := cont.(*netlink.Veth); !ok {
		return nil, cni.ConfigError("type", "bandwidth needs a veth pair, but container interface %s is a %s "+
			"with no host-side peer to shape on: chain bandwidth after bridge or ptp", req.IfName, cont.Type())
	}
	peer, err := h.LinkByIndex(cont.Attrs().ParentIndex)
	if err == nil && (peer.Type() != "veth" || peer.Attrs().ParentIndex != cont.Attrs().Index) {
		err = errors.New("index names another link")
	}
	if err != nil {
		return nil, cni.ConfigError("prevResult", "the veth peer of %s is not in this (host) namespace: %v", req.IfName, err)
	}
	for _, i := range prev.Interfaces {
		if i.Sandbox == "" && i.Name == peer.Attrs().Name {
			return peer, nil
		}
	}
	return nil, cni.ConfigError("prevResult", "host veth %s (peer of %s) is not among prevResult's host interfaces", peer.Attrs().Name, req.IfName)
}

// Del removes the ifb and, when the host veth is still there, the qdiscs.
// A namespace or link that is gone is success.
func (Plugin) Del(ctx context.Context, req *cni.Request) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	h, err := hostHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	sh := newShaper(h, nil, conf.Name, req)
	if prev, perr := conf.PrevResult(); perr == nil && prev != nil && req.Netns != "" {
		// Best effort: without the veth there are no qdiscs to remove.
		sh.host, _ = hostVeth(h, req, prev)
	}
	return sh.remove()
}

// Check verifies the qdiscs, the redirect and the ifb match the limits.
func (Plugin) Check(ctx context.Context, req *cni.Request) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	lim, err := conf.limits()
	if err != nil || lim == nil {
		return err
	}
	prev, err := conf.PrevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return cni.ConfigError("prevResult", "bandwidth is a chained plugin: CHECK needs prevResult")
	}
	h, err := hostHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	host, err := hostVeth(h, req, prev)
	if err != nil {
		return err
	}
	sh := newShaper(h, host, conf.Name, req)
	return sh.check(lim)
}

// GC deletes the ifbs of this network whose attachment is not valid.
func (Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	h, err := hostHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := nlsafe.LinkList(h)
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	keep := map[cni.Attachment]bool{}
	for _, a := range valid {
		keep[a] = true
	}
	var errs []error
	for _, l := range links {
		o, ok := parseAlias(l.Attrs().Alias)
		if !ok || l.Type() != "ifb" || o.Network != conf.Name || keep[cni.Attachment{ContainerID: o.ContainerID, IfName: o.IfName}] {
			continue
		}
		errs = append(errs, link.DelByName(h, l.Attrs().Name))
	}
	return errors.Join(errs...)
}
