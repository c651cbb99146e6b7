// Package vethnet is what the bridge and ptp plugins share: both give a
// container one end of a veth pair and keep the other in the namespace they
// run in (the host's), run IPAM, may masquerade the container's addresses,
// and must undo all of it when a later step fails.
package vethnet

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/ipam"
	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/pkg/masq"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nftowner"
	"github.com/knit-cni/knit/pkg/sysctl"
)

// Attach is one ADD in progress: a netlink handle in the host namespace
// (the calling thread's), the open container namespace, and the steps to
// undo if the ADD fails.
type Attach struct {
	Req   *cni.Request
	Owner nftowner.Owner
	Host  *netlink.Handle
	Cont  *netns.Target
	undo  []func()
	nft   *nftables.Conn // opened on first use
}

// Open opens the request's container namespace and a host handle.
func Open(req *cni.Request, network string) (*Attach, error) {
	cont, err := netns.OpenTarget(req.Netns)
	if err != nil {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_NETNS: %w", err)
	}
	// Route sockets only: a handle without families opens xfrm and
	// netfilter sockets too, which nothing here uses.
	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		cont.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &Attach{Req: req, Host: host, Cont: cont,
		Owner: nftowner.Owner{Network: network, ContainerID: req.ContainerID, IfName: req.IfName}}, nil
}

// Close releases the handles.
func (a *Attach) Close() {
	if a.nft != nil {
		_ = a.nft.CloseLasting()
	}
	a.Host.Close()
	a.Cont.Close()
}

// NFT returns a connection to nftables in the host namespace, opened once
// per ADD.
func (a *Attach) NFT() (*nftables.Conn, error) {
	if a.nft == nil {
		c, err := nftowner.Open(0)
		if err != nil {
			return nil, err
		}
		a.nft = c
	}
	return a.nft, nil
}

// OnFail records how to undo a step that succeeded.
func (a *Attach) OnFail(f func()) { a.undo = append(a.undo, f) }

// Rollback undoes the recorded steps, newest first.
func (a *Attach) Rollback() {
	for i := len(a.undo) - 1; i >= 0; i-- {
		a.undo[i]()
	}
	a.undo = nil
}

// AddVeth creates the pair with the host end up (and on master, if
// non-zero), its accept_ra off as the reference has it, and returns the
// host end and the container end.
func (a *Attach) AddVeth(mtu int, mac net.HardwareAddr, master int) (netlink.Link, netlink.Link, error) {
	v, err := link.AddVeth(a.Host, a.Cont.NS, a.Cont.NL, link.VethOpts{IfName: a.Req.IfName, MTU: mtu,
		MAC: mac, HostMaster: master, HostUp: true})
	if err != nil {
		return nil, nil, err
	}
	a.OnFail(func() { _ = a.Host.LinkDel(v) }) // takes the container end with it
	DisableRA(v.Attrs().Name)
	c, err := a.Cont.NL.LinkByName(a.Req.IfName)
	if err != nil {
		return nil, nil, fmt.Errorf("looking up %s in the container: %w", a.Req.IfName, err)
	}
	return v, c, nil
}

// IPAM runs the IPAM plugin's ADD, to be released if the ADD fails. Unlike
// ipam.Add, the release is armed as soon as the plugin answered, so a
// result this plugin rejects (no address) is released too.
func (a *Attach) IPAM(ctx context.Context, ipamType string) (*current.Result, error) {
	raw, err := a.Req.Delegate.Delegate(ctx, ipamType, a.Req.WithConfig(cni.CmdAdd, a.Req.Config))
	if err != nil {
		return nil, err
	}
	a.OnFail(func() { _ = ipam.Del(context.Background(), a.Req, ipamType) })
	res, err := cni.AsCurrent(raw)
	if err != nil {
		return nil, err
	}
	if len(res.IPs) == 0 {
		return nil, cni.Errorf(types.ErrInternal, "IPAM plugin %s returned no IP configuration", ipamType)
	}
	return res, nil
}

// Masquerade sets up ipMasq for the result's addresses.
func (a *Attach) Masquerade(ctx context.Context, ips []*current.IPConfig) error {
	addrs := make([]net.IPNet, 0, len(ips))
	for _, ipc := range ips {
		addrs = append(addrs, ipc.Address)
	}
	c, err := a.NFT()
	if err != nil {
		return err
	}
	if err := masq.Setup(ctx, c, a.Owner, addrs); err != nil {
		return err
	}
	a.OnFail(func() { _ = masq.Teardown(context.Background(), c, a.Owner) })
	return nil
}

// DNSSet reports whether a config has any DNS setting: only then does it
// replace what the IPAM plugin returned.
func DNSSet(d types.DNS) bool {
	return d.Nameservers != nil || d.Search != nil || d.Options != nil || d.Domain != ""
}

// Merge appends this plugin's result to a chain's prevResult: interfaces
// after the earlier ones (IP interface indexes shifted to match), IPs and
// routes appended, DNS replaced when this plugin has any.
func Merge(prev, res *current.Result) *current.Result {
	if prev == nil {
		return res
	}
	off := len(prev.Interfaces)
	for _, ipc := range res.IPs {
		if ipc.Interface != nil {
			ipc.Interface = current.Int(*ipc.Interface + off)
		}
	}
	out := *prev
	out.CNIVersion = current.ImplementedSpecVersion
	out.Interfaces = append(append([]*current.Interface(nil), prev.Interfaces...), res.Interfaces...)
	out.IPs = append(append([]*current.IPConfig(nil), prev.IPs...), res.IPs...)
	out.Routes = append(append([]*types.Route(nil), prev.Routes...), res.Routes...)
	if DNSSet(res.DNS) {
		out.DNS = res.DNS
	}
	return &out
}

// DisableRA sets accept_ra=0 on a host link, as the reference does for the
// bridge and host veths (the plugin owns their routes); like it, failures
// (IPv6 disabled) are ignored.
func DisableRA(name string) {
	_ = sysctl.Set("net/ipv6/conf/"+name+"/accept_ra", "0")
}

// EnableForward turns on forwarding for IPv4 or IPv6 in the calling
// thread's namespace, writing only when it is off.
func EnableForward(v4 bool) error {
	key := "net/ipv6/conf/all/forwarding"
	if v4 {
		key = "net/ipv4/ip_forward"
	}
	if v, err := sysctl.Get(key); err == nil && v == "1" {
		return nil
	}
	if err := sysctl.Set(key, "1"); err != nil {
		return fmt.Errorf("enabling forwarding: %w", err)
	}
	return nil
}

// EnableForwardFor enables forwarding for each family among ips.
func EnableForwardFor(ips []net.IP) error {
	v4, v6 := false, false
	for _, ip := range ips {
		if ip.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	if v4 {
		if err := EnableForward(true); err != nil {
			return err
		}
	}
	if v6 {
		return EnableForward(false)
	}
	return nil
}

// RuleFunc removes an owner's rules (masq.Teardown, spoofchk.Teardown).
type RuleFunc func(ctx context.Context, c *nftables.Conn, o nftowner.Owner) error

// Del is a DEL of a veth plugin: the owner's firewall rules, the IPAM
// allocation, then the container link (the host end goes with it). Every
// step runs even if another failed; everything already gone, including the
// namespace, is success.
//
// IPAM DEL runs while the link still exists, as in the reference plugins:
// the dhcp IPAM sends its DHCPRELEASE through it. The link's removal returns
// as soon as the kernel has taken it out of the namespace (link.Remove).
func Del(ctx context.Context, req *cni.Request, network, ipamType string, rules ...RuleFunc) error {
	owner := nftowner.Owner{Network: network, ContainerID: req.ContainerID, IfName: req.IfName}
	var errs []error
	if len(rules) > 0 {
		c, err := nftowner.Open(0)
		if err == nil {
			defer c.CloseLasting()
			for _, f := range rules {
				errs = append(errs, f(ctx, c, owner))
			}
		}
		errs = append(errs, err)
	}
	if ipamType != "" {
		errs = append(errs, ipam.Del(ctx, req, ipamType))
	}
	errs = append(errs, DelContainerLink(ctx, req.Netns, req.IfName))
	return errors.Join(errs...)
}

// DelContainerLink deletes ifName in the namespace at path; a missing
// path, namespace or link is success (DEL after the runtime cleaned up).
// It uses only handles bound to that namespace, so any goroutine may run it.
func DelContainerLink(ctx context.Context, path, ifName string) error {
	if path == "" {
		return nil
	}
	t, err := netns.OpenTarget(path)
	if errors.Is(err, netns.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer t.Close()
	if err := link.Remove(ctx, t, ifName); err != nil {
		return fmt.Errorf("container interface: %w", err)
	}
	return nil
}

// GCFunc removes a network's rules for attachments not in valid (masq.GC,
// spoofchk.GC).
type GCFunc func(ctx context.Context, c *nftables.Conn, network string, valid []cni.Attachment) error

// GC runs the GC functions on one nftables connection, then passes GC on
// to the config's IPAM plugin, if it has one.
func GC(ctx context.Context, req *cni.Request, network, ipamType string, valid []cni.Attachment, fns ...GCFunc) error {
	var errs []error
	c, err := nftowner.Open(0)
	if err == nil {
		defer c.CloseLasting()
		for _, f := range fns {
			errs = append(errs, f(ctx, c, network, valid))
		}
	}
	errs = append(errs, err)
	if ipamType != "" {
		_, err := req.Delegate.Delegate(ctx, ipamType, req.WithConfig(cni.CmdGC, req.Config))
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// IgnoreMissing treats "no such route/address" as done: removing what is
// already gone.
func IgnoreMissing(err error) error {
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EADDRNOTAVAIL) {
		return nil
	}
	return err
}
