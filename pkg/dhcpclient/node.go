package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nlsafe"
)

// Defaults for NodeOptions.
const (
	DefaultTimeout = 20 * time.Second
	// DefaultRouteMetric keeps DHCP routes behind the node's own default
	// route (static: 0, NetworkManager: 100-600, systemd-networkd: 1024),
	// as NetworkManager's per-type metrics keep a secondary NIC's.
	DefaultRouteMetric = 1100
)

// NodeOptions configures a Node.
type NodeOptions struct {
	// Timeout bounds Acquire (default DefaultTimeout).
	Timeout time.Duration
	// RouteMetric is the metric of the routes leases install.
	RouteMetric int
	// Hostname, when set, is sent as option 12.
	Hostname string
	Log      *slog.Logger
}

// Node is the nmstate engine's DHCP client for node interfaces (it
// implements nmstate.DHCPClient): one lease per interface, whose address
// it configures with the lease's lifetimes (so the engine reads the
// interface as dhcp: true) and, when asked, whose routes it installs. It
// renews every lease in the background until Release or until the context
// it was made with ends; then the addresses stay (the node keeps using
// them) and a new Node adopts them with INIT-REBOOT.
type Node struct {
	ctx context.Context
	ns  *netns.NS
	nl  *netlink.Handle
	o   NodeOptions

	ops    sync.Mutex // serialises Acquire and Release
	mu     sync.Mutex // guards leases
	leases map[string]*nodeLease
	wg     sync.WaitGroup
}

// NewNode returns a client for interfaces in ns (nl is a handle bound to
// it) whose leases are maintained until ctx ends.
func NewNode(ctx context.Context, ns *netns.NS, nl *netlink.Handle, o NodeOptions) *Node {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.RouteMetric == 0 {
		o.RouteMetric = DefaultRouteMetric
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Node{ctx: ctx, ns: ns, nl: nl, o: o, leases: map[string]*nodeLease{}}
}

// nodeLease is a lease and what it configured on its interface.
type nodeLease struct {
	*Lease
	n      *Node
	ifName string

	mu     sync.Mutex // guards the fields below
	routes bool       // install the lease's routes (auto-routes)
	addr   *net.IPNet // the address configured
	rts    []netlink.Route

	cancel context.CancelFunc // stops run
	done   chan struct{}      // closed when run returns
}

// Acquire obtains a lease on ifName within the Node's timeout and
// configures it. An interface that already holds a lease keeps it (the
// engine calls Acquire on every apply): its address and routes are only
// re-asserted. An interface with a dynamic address but no lease held here
// (the agent restarted) asks to keep that address (INIT-REBOOT).
func (n *Node) Acquire(ctx context.Context, ifName string, routes bool) (net.IPNet, error) {
	n.ops.Lock()
	defer n.ops.Unlock()
	if nl := n.lookup(ifName); nl != nil {
		if nl.Bound() {
			nl.setRoutes(routes)
			if err := nl.configure(); err != nil {
				return net.IPNet{}, err
			}
			return AddressOf(nl.ACK()), nil
		}
		n.stop(nl) // expired and not yet re-acquired: start over now
		n.drop(nl)
	}
	link, err := n.nl.LinkByName(ifName)
	if err != nil {
		return net.IPNet{}, fmt.Errorf("DHCP on %s: %w", ifName, err)
	}
	ctx, cancel := context.WithTimeout(ctx, n.o.Timeout)
	defer cancel()
	nl := n.newLease(link, routes)
	if err := nl.obtain(ctx, link); err != nil {
		return net.IPNet{}, err
	}
	if err := nl.configure(); err != nil {
		_ = nl.Release()
		nl.unconfigure()
		return net.IPNet{}, err
	}
	n.o.Log.Info("DHCP lease acquired", "if", ifName, "ip", nl.Address(), "expires", nl.Times().Expire)
	n.start(nl)
	return AddressOf(nl.ACK()), nil
}

// newLease identifies the node to the server by its MAC address (client
// ID type 1), fixed for the lease: a bridge's MAC follows its ports.
func (n *Node) newLease(link netlink.Link, routes bool) *nodeLease {
	ifName := link.Attrs().Name
	cfg := Config{IfName: ifName, NS: n.ns, LeaveDown: true, Log: n.o.Log,
		ClientID: append([]byte{1}, link.Attrs().HardwareAddr...),
		Request:  []dhcpv4.OptionCode{dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionStaticRoutingTable}}
	if n.o.Hostname != "" {
		cfg.Provide = []dhcpv4.Option{dhcpv4.OptHostName(n.o.Hostname)}
	}
	return &nodeLease{Lease: New(cfg), n: n, ifName: ifName, routes: routes}
}

// obtain gets the lease: INIT-REBOOT for a dynamic address the interface
// already has, briefly, then the full exchange.
func (nl *nodeLease) obtain(ctx context.Context, link netlink.Link) error {
	old, err := nl.n.dynamicAddrs(link)
	if err != nil {
		return err
	}
	if len(old) == 0 {
		return nl.Acquire(ctx, nil)
	}
	prev := old[0].IP
	rctx, cancel := context.WithTimeout(ctx, min(nl.n.o.Timeout/4, 5*time.Second))
	err = nl.Reboot(rctx, prev)
	cancel()
	switch {
	case err == nil:
		nl.n.o.Log.Info("DHCP lease adopted", "if", nl.ifName, "ip", prev)
		return nil
	case errors.Is(err, ErrGone):
		return err
	case errors.Is(err, ErrRefused):
		// The address is no longer ours: stop using it before asking
		// for another.
		nl.n.o.Log.Info("DHCP server refused the previous address", "if", nl.ifName, "ip", prev)
		if err := nl.n.removeDynamic(nl.ifName); err != nil {
			return err
		}
		return nl.Acquire(ctx, nil)
	}
	// No answer to INIT-REBOOT (some servers stay silent for leases they
	// do not know): ask for the address the long way.
	return nl.Acquire(ctx, prev)
}

func (nl *nodeLease) setRoutes(on bool) {
	nl.mu.Lock()
	nl.routes = on
	nl.mu.Unlock()
}

// configure makes the interface carry the lease: its address with the
// lease's remaining time as valid and preferred lifetime (the kernel drops
// it at expiry even if this process is gone), no other dynamic IPv4
// address (an earlier lease's), and the lease's routes when asked for.
func (nl *nodeLease) configure() error {
	link, err := nl.n.nl.LinkByName(nl.ifName)
	if err != nil {
		return fmt.Errorf("DHCP on %s: %w", nl.ifName, err)
	}
	ack := nl.ACK()
	addr := AddressOf(ack)
	lft := max(int(time.Until(nl.Times().Expire).Seconds()), 1)
	a := &netlink.Addr{IPNet: &addr, ValidLft: lft, PreferedLft: lft}
	if err := nl.n.nl.AddrReplace(link, a); err != nil {
		return fmt.Errorf("DHCP on %s: adding %s: %w", nl.ifName, addr.String(), err)
	}
	old, err := nl.n.dynamicAddrs(link)
	if err != nil {
		return err
	}
	for _, o := range old {
		if !o.IP.Equal(addr.IP) {
			if err := nl.n.nl.AddrDel(link, &o); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("DHCP on %s: removing old %s: %w", nl.ifName, o.IPNet, err)
			}
		}
	}
	nl.mu.Lock()
	defer nl.mu.Unlock()
	nl.addr = &addr
	var want []netlink.Route
	if nl.routes {
		want = nl.n.kernelRoutes(link, addr, Routes(ack))
	}
	return nl.replaceRoutes(want)
}

// replaceRoutes installs want and removes what an earlier configure
// installed that is no longer wanted. nl.mu is held.
func (nl *nodeLease) replaceRoutes(want []netlink.Route) error {
	keep := map[string]bool{}
	for i := range want {
		if err := nl.n.nl.RouteReplace(&want[i]); err != nil {
			return fmt.Errorf("DHCP on %s: route to %v: %w", nl.ifName, dstString(want[i].Dst), err)
		}
		keep[routeKey(want[i])] = true
	}
	for _, r := range nl.rts {
		if !keep[routeKey(r)] {
			if err := nl.n.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("DHCP on %s: removing route to %v: %w", nl.ifName, dstString(r.Dst), err)
			}
		}
	}
	nl.rts = want
	return nil
}

func routeKey(r netlink.Route) string { return fmt.Sprintf("%v|%v", r.Dst, r.Gw) }

func dstString(d *net.IPNet) string {
	if d == nil {
		return "default"
	}
	return d.String()
}

// kernelRoutes turns a lease's routes into routes on link. Routes are
// marked proto dhcp: the engine reports only static ones as config.
func (n *Node) kernelRoutes(link netlink.Link, addr net.IPNet, rs []Route) []netlink.Route {
	var out []netlink.Route
	for _, r := range rs {
		kr := netlink.Route{LinkIndex: link.Attrs().Index, Protocol: unix.RTPROT_DHCP, Priority: n.o.RouteMetric,
			Table: unix.RT_TABLE_MAIN, Src: addr.IP}
		if ones, _ := r.Dst.Mask.Size(); ones > 0 {
			dst := r.Dst
			kr.Dst = &dst
		}
		if r.GW == nil || r.GW.IsUnspecified() {
			kr.Scope = netlink.SCOPE_LINK // RFC 3442: router 0.0.0.0 means on-link
		} else {
			kr.Gw = r.GW
		}
		out = append(out, kr)
	}
	return out
}

// unconfigure removes the lease's address and routes (the interface may
// be gone).
func (nl *nodeLease) unconfigure() {
	nl.mu.Lock()
	defer nl.mu.Unlock()
	_ = nl.replaceRoutes(nil)
	if nl.addr == nil {
		return
	}
	if link, err := nl.n.nl.LinkByName(nl.ifName); err == nil {
		if err := nl.n.nl.AddrDel(link, &netlink.Addr{IPNet: nl.addr}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			nl.n.o.Log.Warn("removing DHCP address", "if", nl.ifName, "ip", nl.addr, "err", err)
		}
	}
	nl.addr = nil
}

// dynamicAddrs are the link's IPv4 addresses with a finite lifetime: on a
// node that knit manages, DHCP's.
func (n *Node) dynamicAddrs(link netlink.Link) ([]netlink.Addr, error) {
	addrs, err := nlsafe.AddrList(n.nl, link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("DHCP on %s: listing addresses: %w", link.Attrs().Name, err)
	}
	var out []netlink.Addr
	for _, a := range addrs {
		if a.ValidLft > 0 && a.ValidLft != infinityLifetime {
			out = append(out, a)
		}
	}
	return out, nil
}

// infinityLifetime is the kernel's "forever" (INFINITY_LIFE_TIME).
const infinityLifetime = 0xFFFFFFFF

// removeDynamic removes ifName's dynamic IPv4 addresses and the DHCP
// routes on it: what an earlier client's lease left when none is held
// here.
func (n *Node) removeDynamic(ifName string) error {
	link, err := n.nl.LinkByName(ifName)
	if err != nil {
		return nil // gone with its addresses
	}
	addrs, err := n.dynamicAddrs(link)
	if err != nil {
		return err
	}
	routes, err := nlsafe.RouteListFiltered(n.nl, netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Protocol: unix.RTPROT_DHCP},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("DHCP on %s: listing routes: %w", ifName, err)
	}
	for _, r := range routes {
		if err := n.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("DHCP on %s: removing route: %w", ifName, err)
		}
	}
	for _, a := range addrs {
		if err := n.nl.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("DHCP on %s: removing %s: %w", ifName, a.IPNet, err)
		}
	}
	return nil
}

// Release stops renewing ifName's lease, sends DHCPRELEASE (from the
// leased address) and removes the address and routes. With no lease held
// it removes dynamic addresses an earlier client left. ctx is not needed:
// a RELEASE is one datagram, bounded by the lease itself.
func (n *Node) Release(_ context.Context, ifName string) error {
	n.ops.Lock()
	defer n.ops.Unlock()
	nl := n.lookup(ifName)
	if nl == nil {
		return n.removeDynamic(ifName)
	}
	n.stop(nl)
	n.drop(nl)
	err := nl.Lease.Release()
	nl.unconfigure()
	switch {
	case errors.Is(err, ErrGone):
		// The interface went first: the server frees the address when
		// the lease expires.
		n.o.Log.Info("interface gone before DHCPRELEASE could be sent", "if", ifName)
	case err != nil:
		n.o.Log.Warn("sending DHCPRELEASE failed", "if", ifName, "err", err)
	default:
		n.o.Log.Info("DHCP lease released", "if", ifName)
	}
	return nil
}

// Wait waits until every lease's maintenance has stopped (after the
// Node's context ended).
func (n *Node) Wait() { n.wg.Wait() }

func (n *Node) lookup(ifName string) *nodeLease {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leases[ifName]
}

// drop forgets nl if it is still the entry for its interface.
func (n *Node) drop(nl *nodeLease) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.leases[nl.ifName] == nl {
		delete(n.leases, nl.ifName)
	}
}

// start records nl and maintains it in the background.
func (n *Node) start(nl *nodeLease) {
	ctx, cancel := context.WithCancel(n.ctx)
	nl.cancel, nl.done = cancel, make(chan struct{})
	n.mu.Lock()
	n.leases[nl.ifName] = nl
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(nl.done)
		n.run(ctx, nl)
	}()
}

// stop ends nl's maintenance and waits for it.
func (n *Node) stop(nl *nodeLease) {
	nl.cancel()
	<-nl.done
}

// run keeps nl alive: renewals refresh the address's lifetimes; at expiry
// the address and routes go and the client starts over, backing off,
// until it has a lease again. It returns when ctx ends or the interface
// is gone.
func (n *Node) run(ctx context.Context, nl *nodeLease) {
	for {
		var gone, expired bool
		nl.Maintain(ctx, Hooks{
			Renewed: func() {
				if err := nl.configure(); err != nil {
					n.o.Log.Warn("configuring renewed DHCP lease", "if", nl.ifName, "err", err)
				}
			},
			Gone:    func() { gone = true },
			Expired: func() { expired = true },
		})
		switch {
		case gone:
			n.drop(nl)
			return
		case !expired:
			return // ctx ended: the address stays, the node uses it
		}
		nl.unconfigure()
		if !n.reacquire(ctx, nl) {
			return
		}
	}
}

// reacquire starts over after an expiry until it gets a lease, waiting
// 1 s doubling to 1 min between attempts; false when ctx ended or the
// interface is gone.
func (n *Node) reacquire(ctx context.Context, nl *nodeLease) bool {
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		actx, cancel := context.WithTimeout(ctx, n.o.Timeout)
		err := nl.Acquire(actx, nil)
		cancel()
		if err == nil {
			n.o.Log.Info("DHCP lease acquired again", "if", nl.ifName, "ip", nl.Address(), "expires", nl.Times().Expire)
			if err := nl.configure(); err != nil {
				n.o.Log.Warn("configuring DHCP lease", "if", nl.ifName, "err", err)
			}
			return true
		}
		if errors.Is(err, ErrGone) {
			n.drop(nl)
			return false
		}
		n.o.Log.Warn("DHCP lease lost, retrying", "if", nl.ifName, "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// Holds reports whether ifName holds a lease of this client (one being
// re-acquired after an expiry counts).
func (n *Node) Holds(ifName string) bool { return n.lookup(ifName) != nil }
