package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/netns"
)

// errGone means the lease's namespace or interface no longer exists: the
// attachment is gone and so is any reason to keep the lease.
var errGone = errors.New("namespace or interface gone")

// lease is one attachment's DHCP lease, kept alive by maintain.
type lease struct {
	id          string // client ID
	network     string
	containerID string
	ifName      string
	netns       string // path as the daemon sees it (host prefix applied)
	opts        *options
	broadcast   bool
	log         *slog.Logger

	mu       sync.Mutex // guards the fields below
	cur      *nclient4.Lease
	renewAt  time.Time
	rebindAt time.Time
	expireAt time.Time
	expired  bool
	cancel   context.CancelFunc // stops maintain
	done     chan struct{}      // closed when maintain returns
}

// modifiers builds the options every message of the lease carries: the
// client ID (type 0 + ID, as the reference), what is provided (which may
// override the client ID) and the parameter request list.
func (l *lease) modifiers() []dhcpv4.Modifier {
	m := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{0}, l.id...))),
		dhcpv4.WithRequestedOptions(l.opts.request...),
	}
	for _, o := range l.opts.provide {
		m = append(m, dhcpv4.WithOption(o))
	}
	if l.broadcast {
		m = append(m, dhcpv4.WithBroadcast(true))
	}
	return m
}

// client opens a DHCP client on the lease's interface. The raw socket is
// created on a thread inside the container's namespace and stays bound to
// that namespace's interface after the thread leaves; the namespace is
// opened by path each time, so the daemon never keeps one alive. src is
// the source address of what the client sends (nil: 0.0.0.0, before the
// lease is bound).
func (l *lease) client(ctx context.Context, src net.IP) (*nclient4.Client, error) {
	ns, err := netns.Open(l.netns)
	if errors.Is(err, netns.ErrNotExist) {
		return nil, fmt.Errorf("netns %s: %w", l.netns, errGone)
	}
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	var c *nclient4.Client
	err = ns.Do(func() error {
		if err := linkUp(ctx, l.ifName, l.netns); err != nil {
			return err
		}
		ifc, err := net.InterfaceByName(l.ifName)
		if err != nil {
			return fmt.Errorf("interface %s in %s: %w", l.ifName, l.netns, errGone)
		}
		raw, err := packet.Listen(ifc, packet.Datagram, unix.ETH_P_IP, nil)
		if err != nil {
			return fmt.Errorf("packet socket on %s: %w", l.ifName, err)
		}
		conn := nclient4.NewBroadcastUDPConn(raw, &net.UDPAddr{IP: src, Port: nclient4.ClientPort})
		c, err = nclient4.NewWithConn(conn, ifc.HardwareAddr, nclient4.WithTimeout(perTry(ctx)), nclient4.WithRetry(-1))
		if err != nil {
			conn.Close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// linkUp sets the interface up (the main plugin may call IPAM before it
// does, as the reference's do) and waits, at most 2 s, until it is
// operationally up: before that the kernel drops what is sent on it, and
// every lost DISCOVER costs a retransmission timeout.
func linkUp(ctx context.Context, ifName, nsPath string) error {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("interface %s in %s: %w", ifName, nsPath, errGone)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting %s up: %w", ifName, err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	for link.Attrs().OperState != netlink.OperUp && link.Attrs().OperState != netlink.OperUnknown && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling the link state
		if link, err = netlink.LinkByName(ifName); err != nil {
			return fmt.Errorf("interface %s in %s: %w", ifName, nsPath, errGone)
		}
	}
	return nil
}

// perTry is the first wait for an answer; nclient4 doubles it on each
// retransmission until ctx ends.
func perTry(ctx context.Context) time.Duration {
	d := time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*d {
		d = max(time.Until(dl)/2, 100*time.Millisecond)
	}
	return d
}

// acquire gets a lease with DISCOVER/OFFER/REQUEST/ACK within ctx. want,
// when set, asks for that address again (rebinding).
func (l *lease) acquire(ctx context.Context, want net.IP) error {
	start := time.Now()
	c, err := l.client(ctx, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	mods := l.modifiers()
	if want != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)))
	}
	for {
		got, err := c.Request(ctx, mods...)
		var nak *nclient4.ErrNak
		if errors.As(err, &nak) && ctx.Err() == nil {
			// RFC 2131 3.1: after a NAK the client starts over. Servers
			// NAK when they offered one address to two clients at once.
			l.log.Info("DHCP NAK, starting over", "client", l.id, "msg", nak.Error())
			if !sleepJitter(ctx, 50*time.Millisecond) {
				return l.requestError(ctx.Err(), time.Since(start))
			}
			continue
		}
		if err != nil {
			return l.requestError(err, time.Since(start))
		}
		return l.commit(got)
	}
}

// sleepJitter waits up to max (random, so clients NAK'd together do not
// ask together again) or until ctx ends; it reports whether ctx is live.
func sleepJitter(ctx context.Context, max time.Duration) bool {
	t := time.NewTimer(rand.N(max))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// requestError turns a failed exchange into a CNI error: no answer in time
// is "try again later" naming the interface and the time waited.
func (l *lease) requestError(err error, waited time.Duration) error {
	var nak *nclient4.ErrNak
	switch {
	case errors.As(err, &nak):
		return cni.Errorf(types.ErrTryAgainLater, "DHCP server refused %s in %s: %v", l.ifName, l.netns, err)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nclient4.ErrNoResponse):
		return cni.Errorf(types.ErrTryAgainLater, "no DHCP answer on %s in %s within %s: is a DHCP server reachable on that segment?",
			l.ifName, l.netns, waited.Round(100*time.Millisecond))
	}
	return fmt.Errorf("DHCP on %s: %w", l.ifName, err)
}

// commit records a lease: its address must come with a subnet mask, and
// T1 and T2 default to 50% and 87.5% of the lease time (RFC 2131 4.4.5).
func (l *lease) commit(got *nclient4.Lease) error {
	ack := got.ACK
	if ack.YourIPAddr == nil || ack.YourIPAddr.IsUnspecified() {
		return fmt.Errorf("DHCP ACK on %s carries no address", l.ifName)
	}
	if ack.SubnetMask() == nil {
		return fmt.Errorf("DHCP ACK on %s has no subnet mask option", l.ifName)
	}
	lt := ack.IPAddressLeaseTime(0)
	if lt <= 0 {
		return fmt.Errorf("DHCP ACK on %s has no lease time", l.ifName)
	}
	t2 := ack.IPAddressRebindingTime(lt * 7 / 8)
	if t2 <= 0 || t2 > lt {
		t2 = lt * 7 / 8
	}
	t1 := ack.IPAddressRenewalTime(lt / 2)
	if t1 <= 0 || t1 > t2 {
		t1 = lt / 2
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil && l.cur.Offer != nil && got.Offer == nil {
		got.Offer = l.cur.Offer
	}
	l.cur = got
	l.renewAt, l.rebindAt, l.expireAt = now.Add(t1), now.Add(t2), now.Add(lt)
	l.expired = false
	return nil
}

// renew asks the server that gave the lease to extend it.
func (l *lease) renew(ctx context.Context) error {
	l.mu.Lock()
	cur := l.cur
	l.mu.Unlock()
	start := time.Now()
	c, err := l.client(ctx, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	got, err := c.Renew(ctx, cur, l.modifiers()...)
	if err != nil {
		return l.requestError(err, time.Since(start))
	}
	return l.commit(got)
}

// release tells the server the address is free. Nothing answers a
// RELEASE, so one send is all there is. It goes to the server's address
// from the leased one: from 0.0.0.0 the server's kernel would drop it as a
// martian.
func (l *lease) release() error {
	l.mu.Lock()
	cur, expired := l.cur, l.expired
	l.mu.Unlock()
	if cur == nil || expired {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := l.client(ctx, cur.ACK.YourIPAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Release(cur, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{0}, l.id...))))
}

// hooks tell the daemon what maintenance found.
type hooks struct {
	gone    func() // the attachment no longer exists
	renewed func() // the lease has new times
}

// maintain renews at T1, rebinds from T2 and gives up at expiry, when it
// sets the interface down (as the reference): its address is no longer
// its own. It returns when ctx ends or the attachment is gone.
func (l *lease) maintain(ctx context.Context, h hooks) {
	defer close(l.done)
	next := l.times().renew
	for {
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		t, now := l.times(), time.Now()
		var err error
		switch {
		case now.Before(t.renew):
			next = t.renew
			continue
		case now.Before(t.rebind):
			err = l.attempt(ctx, t.rebind, func(ctx context.Context) error { return l.renew(ctx) })
		case now.Before(t.expire):
			err = l.attempt(ctx, t.expire, func(ctx context.Context) error { return l.acquire(ctx, l.address()) })
		default:
			l.expire()
			return
		}
		switch {
		case err == nil:
			next = l.times().renew
			l.log.Info("lease renewed", "client", l.id, "ip", l.address(), "expires", l.times().expire)
			h.renewed()
		case errors.Is(err, errGone):
			l.log.Info("attachment gone, dropping lease", "client", l.id, "err", err)
			h.gone()
			return
		default:
			// RFC 2131: retry at half the remaining time, here at least
			// every second and at most every minute.
			left := time.Until(t.rebind)
			if now.After(t.rebind) {
				left = time.Until(t.expire)
			}
			next = time.Now().Add(min(max(left/2, time.Second), time.Minute))
			l.log.Warn("lease renewal failed", "client", l.id, "err", err, "retry", next)
		}
	}
}

// attempt runs one renewal exchange bounded by deadline (and 10 s).
func (l *lease) attempt(ctx context.Context, deadline time.Time, f func(context.Context) error) error {
	if limit := time.Now().Add(10 * time.Second); limit.Before(deadline) {
		deadline = limit
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return f(ctx)
}

// exists reports errGone when the lease's namespace or interface is gone.
func (l *lease) exists() error {
	t, err := netns.OpenTarget(l.netns)
	if errors.Is(err, netns.ErrNotExist) {
		return fmt.Errorf("netns %s: %w", l.netns, errGone)
	}
	if err != nil {
		return err
	}
	defer t.Close()
	if _, err := t.NL.LinkByName(l.ifName); err != nil {
		return fmt.Errorf("interface %s in %s: %w", l.ifName, l.netns, errGone)
	}
	return nil
}

func (l *lease) expire() {
	l.mu.Lock()
	l.expired = true
	l.mu.Unlock()
	l.log.Warn("lease expired, setting interface down", "client", l.id, "if", l.ifName)
	ns, err := netns.Open(l.netns)
	if err != nil {
		return
	}
	defer ns.Close()
	if h, err := ns.Handle(); err == nil {
		if link, err := h.LinkByName(l.ifName); err == nil {
			_ = h.LinkSetDown(link)
		}
		h.Close()
	}
}

// boundIn reports whether the lease is live for the namespace.
func (l *lease) boundIn(netns string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur != nil && !l.expired && l.netns == netns
}

type leaseTimes struct{ renew, rebind, expire time.Time }

func (l *lease) times() leaseTimes {
	l.mu.Lock()
	defer l.mu.Unlock()
	return leaseTimes{l.renewAt, l.rebindAt, l.expireAt}
}

func (l *lease) address() net.IP {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	return l.cur.ACK.YourIPAddr
}

// result is the lease as an IPAM result: the address with its mask and
// the router as gateway; routes from classless static routes (option 121)
// when present, which then replace the router and static routes (RFC
// 3442), else static routes (option 33) and a default route via the
// router; DNS from options 6 and 15.
func (l *lease) result() *current.Result {
	l.mu.Lock()
	ack := l.cur.ACK
	l.mu.Unlock()
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	ipc := &current.IPConfig{Address: net.IPNet{IP: ack.YourIPAddr.To4(), Mask: ack.SubnetMask()}}
	var gw net.IP
	if r := ack.Router(); len(r) > 0 {
		gw = r[0].To4()
		ipc.Gateway = gw
	}
	res.IPs = []*current.IPConfig{ipc}
	if cl := ack.ClasslessStaticRoute(); len(cl) > 0 {
		for _, r := range cl {
			res.Routes = append(res.Routes, &types.Route{Dst: *r.Dest, GW: r.Router})
		}
	} else {
		res.Routes = staticRoutes(ack.Options.Get(dhcpv4.OptionStaticRoutingTable))
		if gw != nil {
			res.Routes = append(res.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw})
		}
	}
	for _, ip := range ack.DNS() {
		res.DNS.Nameservers = append(res.DNS.Nameservers, ip.String())
	}
	res.DNS.Domain = ack.DomainName()
	return res
}

// staticRoutes decodes option 33: pairs of classful destination and
// router.
func staticRoutes(b []byte) []*types.Route {
	var out []*types.Route
	for ; len(b) >= 8; b = b[8:] {
		dst := net.IP(append([]byte(nil), b[0:4]...))
		out = append(out, &types.Route{Dst: net.IPNet{IP: dst, Mask: dst.DefaultMask()}, GW: net.IP(append([]byte(nil), b[4:8]...))})
	}
	return out
}
