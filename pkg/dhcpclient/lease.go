// Package dhcpclient is knit's DHCPv4 client: one Lease per interface,
// obtained, renewed, rebound and released over a raw socket opened inside
// the interface's network namespace (github.com/insomniacslk/dhcp nclient4
// does the wire work). The CNI dhcp daemon (plugins/dhcp) runs one per
// container attachment; Node runs them on node interfaces for the nmstate
// engine and also configures the addresses and routes.
package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	// ErrGone means the lease's namespace or interface no longer exists:
	// the attachment is gone and so is any reason to keep the lease.
	ErrGone = errors.New("namespace or interface gone")
	// ErrNoAnswer means no DHCP server answered in time.
	ErrNoAnswer = errors.New("no DHCP answer")
	// ErrRefused means the server answered with a NAK.
	ErrRefused = errors.New("DHCP server refused")
)

// Namespace is where a lease's interface lives. *netns.NS is one; a
// namespace opened by path for each exchange is another (see the dhcp
// plugin), so that a lease never keeps a container's namespace alive.
type Namespace interface {
	// Do runs fn on a thread inside the namespace. It returns an error
	// wrapping ErrGone when the namespace no longer exists.
	Do(fn func() error) error
}

// Config says what a lease is for and what its messages carry.
type Config struct {
	IfName string
	NS     Namespace
	// Where names the namespace in messages (empty: not mentioned).
	Where string
	// ClientID is option 61 as sent (type byte first); nil sends none and
	// the server keys the lease on the MAC address.
	ClientID []byte
	// Request lists options asked for besides nclient4's defaults.
	Request []dhcpv4.OptionCode
	// Provide lists options sent (host name, ...); a client identifier
	// among them replaces ClientID.
	Provide []dhcpv4.Option
	// Broadcast asks servers to broadcast their answers.
	Broadcast bool
	// LeaveDown keeps an interface that is administratively down as it
	// is (exchanges then fail) instead of setting it up: on a node the
	// link state is the node's configuration, in a container the plugin
	// may ask before the main plugin set the link up.
	LeaveDown bool
	Log       *slog.Logger
}

// Times are when a lease is to be renewed (T1), rebound (T2) and when it
// expires.
type Times struct{ Renew, Rebind, Expire time.Time }

// Saved is a lease as it can be kept on disk and restored.
type Saved struct {
	Offer, ACK *dhcpv4.DHCPv4
	Times
}

// Lease is one interface's DHCP lease, kept alive by Maintain.
type Lease struct {
	cfg Config

	mu      sync.Mutex // guards the fields below
	cur     *nclient4.Lease
	times   Times
	expired bool
}

// New returns a lease not yet acquired.
func New(cfg Config) *Lease {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Lease{cfg: cfg}
}

// Restore returns a lease taken up from s (e.g. after a restart).
func Restore(cfg Config, s Saved) *Lease {
	l := New(cfg)
	l.cur = &nclient4.Lease{Offer: s.Offer, ACK: s.ACK}
	l.times = s.Times
	return l
}

// label names the interface (and namespace) in messages.
func (l *Lease) label() string {
	if l.cfg.Where == "" {
		return l.cfg.IfName
	}
	return l.cfg.IfName + " in " + l.cfg.Where
}

// clientID is option 61 as actually sent.
func (l *Lease) clientID() []byte {
	id := l.cfg.ClientID
	for _, o := range l.cfg.Provide {
		if o.Code.Code() == dhcpv4.OptionClientIdentifier.Code() {
			id = o.Value.ToBytes()
		}
	}
	return id
}

// modifiers builds the options every message of the lease carries.
func (l *Lease) modifiers() []dhcpv4.Modifier {
	var m []dhcpv4.Modifier
	if l.cfg.ClientID != nil {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(l.cfg.ClientID)))
	}
	m = append(m, dhcpv4.WithRequestedOptions(l.cfg.Request...))
	for _, o := range l.cfg.Provide {
		m = append(m, dhcpv4.WithOption(o))
	}
	if l.cfg.Broadcast {
		m = append(m, dhcpv4.WithBroadcast(true))
	}
	return m
}

// client opens a DHCP client on the interface. The raw socket is created
// on a thread inside the namespace and stays bound to that namespace's
// interface after the thread leaves. src is the source address of what the
// client sends (nil: 0.0.0.0, before the lease is bound).
func (l *Lease) client(ctx context.Context, src net.IP) (*nclient4.Client, error) {
	var c *nclient4.Client
	err := l.cfg.NS.Do(func() error {
		if err := linkUp(ctx, l.cfg.IfName, l.label(), !l.cfg.LeaveDown); err != nil {
			return err
		}
		ifc, err := net.InterfaceByName(l.cfg.IfName)
		if err != nil {
			return fmt.Errorf("interface %s: %w", l.label(), ErrGone)
		}
		raw, err := packet.Listen(ifc, packet.Datagram, unix.ETH_P_IP, nil)
		if err != nil {
			return fmt.Errorf("packet socket on %s: %w", l.cfg.IfName, err)
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

// linkUp sets the interface up (when setUp) and waits, at most 2 s, until
// it is operationally up: before that the kernel drops what is sent on it,
// and every lost DISCOVER costs a retransmission timeout. It runs inside
// the namespace.
func linkUp(ctx context.Context, ifName, label string, setUp bool) error {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("interface %s: %w", label, ErrGone)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if !setUp {
			return fmt.Errorf("interface %s is down", label)
		}
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
			return fmt.Errorf("interface %s: %w", label, ErrGone)
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

// Acquire gets a lease with DISCOVER/OFFER/REQUEST/ACK within ctx. want,
// when set, asks for that address again (rebinding, or a restarted client).
func (l *Lease) Acquire(ctx context.Context, want net.IP) error {
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
			l.cfg.Log.Info("DHCP NAK, starting over", "if", l.label(), "msg", nak.Error())
			if !sleepJitter(ctx, 50*time.Millisecond) {
				return l.exchangeError(ctx.Err(), time.Since(start))
			}
			continue
		}
		if err != nil {
			return l.exchangeError(err, time.Since(start))
		}
		return l.commit(got)
	}
}

// Reboot is RFC 2131's INIT-REBOOT: a client that restarted with an
// address from an earlier lease asks (REQUEST without server identifier,
// broadcast) to keep it. A NAK returns an error wrapping ErrRefused; the
// caller then forgets the address and starts over with Acquire.
func (l *Lease) Reboot(ctx context.Context, ip net.IP) error {
	start := time.Now()
	c, err := l.client(ctx, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	mods := append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithHwAddr(c.InterfaceAddr()),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainName, dhcpv4.OptionDomainNameServer),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
	}, l.modifiers()...)
	req, err := dhcpv4.New(mods...)
	if err != nil {
		return fmt.Errorf("building DHCPREQUEST for %s: %w", l.cfg.IfName, err)
	}
	ack, err := c.SendAndRead(ctx, c.RemoteAddr(), req, nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	if err != nil {
		return l.exchangeError(err, time.Since(start))
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return l.exchangeError(&nclient4.ErrNak{Offer: ack, Nak: ack}, time.Since(start))
	}
	// Renewals need the server identifier, which the ACK carries as an
	// offer would.
	return l.commit(&nclient4.Lease{Offer: ack, ACK: ack, CreationTime: time.Now()})
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

// exchangeError names the interface and, for no answer in time, the time
// waited.
func (l *Lease) exchangeError(err error, waited time.Duration) error {
	var nak *nclient4.ErrNak
	switch {
	case errors.As(err, &nak):
		return fmt.Errorf("%w %s: %v", ErrRefused, l.label(), err)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nclient4.ErrNoResponse):
		return fmt.Errorf("%w on %s within %s: is a DHCP server reachable on that segment?",
			ErrNoAnswer, l.label(), waited.Round(100*time.Millisecond))
	}
	return fmt.Errorf("DHCP on %s: %w", l.cfg.IfName, err)
}

// commit records a lease: its address must come with a subnet mask, and
// T1 and T2 default to 50% and 87.5% of the lease time (RFC 2131 4.4.5).
func (l *Lease) commit(got *nclient4.Lease) error {
	ack := got.ACK
	if ack.YourIPAddr == nil || ack.YourIPAddr.IsUnspecified() {
		return fmt.Errorf("DHCP ACK on %s carries no address", l.cfg.IfName)
	}
	if ack.SubnetMask() == nil {
		return fmt.Errorf("DHCP ACK on %s has no subnet mask option", l.cfg.IfName)
	}
	lt := ack.IPAddressLeaseTime(0)
	if lt <= 0 {
		return fmt.Errorf("DHCP ACK on %s has no lease time", l.cfg.IfName)
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
	l.times = Times{Renew: now.Add(t1), Rebind: now.Add(t2), Expire: now.Add(lt)}
	l.expired = false
	return nil
}

// Renew asks the server that gave the lease to extend it.
func (l *Lease) Renew(ctx context.Context) error {
	l.mu.Lock()
	cur := l.cur
	l.mu.Unlock()
	if cur == nil {
		return fmt.Errorf("no lease on %s to renew", l.cfg.IfName)
	}
	start := time.Now()
	c, err := l.client(ctx, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	got, err := c.Renew(ctx, cur, l.modifiers()...)
	if err != nil {
		return l.exchangeError(err, time.Since(start))
	}
	return l.commit(got)
}

// Release tells the server the address is free. Nothing answers a
// RELEASE, so one send is all there is. It goes to the server's address
// from the leased one: from 0.0.0.0 the server's kernel would drop it as a
// martian. An expired or never acquired lease is nothing to release.
func (l *Lease) Release() error {
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
	var mods []dhcpv4.Modifier
	if id := l.clientID(); id != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(id)))
	}
	return c.Release(cur, mods...)
}

// Hooks tell the lease's owner what maintenance found.
type Hooks struct {
	Gone    func() // the interface or namespace no longer exists
	Renewed func() // the lease has new times (and maybe a new address)
	Expired func() // the lease ran out; Maintain has returned
}

// Maintain renews at T1, rebinds from T2 and gives up at expiry. It
// returns when ctx ends, the interface is gone or the lease expired, after
// calling the matching hook (none when ctx ended).
func (l *Lease) Maintain(ctx context.Context, h Hooks) {
	next := l.Times().Renew
	for {
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		t, now := l.Times(), time.Now()
		var err error
		switch {
		case now.Before(t.Renew):
			next = t.Renew
			continue
		case now.Before(t.Rebind):
			err = attempt(ctx, t.Rebind, l.Renew)
		case now.Before(t.Expire):
			err = attempt(ctx, t.Expire, func(ctx context.Context) error { return l.Acquire(ctx, l.Address()) })
		default:
			l.mu.Lock()
			l.expired = true
			l.mu.Unlock()
			l.cfg.Log.Warn("DHCP lease expired", "if", l.label())
			call(h.Expired)
			return
		}
		switch {
		case err == nil:
			next = l.Times().Renew
			l.cfg.Log.Info("DHCP lease renewed", "if", l.label(), "ip", l.Address(), "expires", l.Times().Expire)
			call(h.Renewed)
		case errors.Is(err, ErrGone):
			l.cfg.Log.Info("interface gone, dropping DHCP lease", "if", l.label(), "err", err)
			call(h.Gone)
			return
		case ctx.Err() != nil:
			return
		default:
			// RFC 2131: retry at half the remaining time, here at least
			// every second and at most every minute.
			left := time.Until(t.Rebind)
			if now.After(t.Rebind) {
				left = time.Until(t.Expire)
			}
			next = time.Now().Add(min(max(left/2, time.Second), time.Minute))
			l.cfg.Log.Warn("DHCP lease renewal failed", "if", l.label(), "err", err, "retry", next)
		}
	}
}

func call(f func()) {
	if f != nil {
		f()
	}
}

// attempt runs one renewal exchange bounded by deadline (and 10 s).
func attempt(ctx context.Context, deadline time.Time, f func(context.Context) error) error {
	if limit := time.Now().Add(10 * time.Second); limit.Before(deadline) {
		deadline = limit
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return f(ctx)
}

// Bound reports whether the lease is held and has not expired.
func (l *Lease) Bound() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur != nil && !l.expired
}

// Times returns the lease's T1, T2 and expiry.
func (l *Lease) Times() Times {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.times
}

// Address is the leased address (nil before the lease is acquired).
func (l *Lease) Address() net.IP {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	return l.cur.ACK.YourIPAddr
}

// ACK is the server's latest ACK (nil before the lease is acquired).
func (l *Lease) ACK() *dhcpv4.DHCPv4 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	return l.cur.ACK
}

// Save returns the lease as Restore takes it (ok false before it is
// acquired).
func (l *Lease) Save() (s Saved, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return Saved{}, false
	}
	return Saved{Offer: l.cur.Offer, ACK: l.cur.ACK, Times: l.times}, true
}
