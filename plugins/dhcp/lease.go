package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/dhcpclient"
	"github.com/knit-cni/knit/pkg/netns"
)

// lease is one attachment's DHCP lease (the exchanges are dhcpclient's),
// kept alive by maintain.
type lease struct {
	*dhcpclient.Lease
	id          string // client ID
	network     string
	containerID string
	ifName      string
	netns       string // path as the daemon sees it (host prefix applied)
	opts        *options
	log         *slog.Logger

	cancel context.CancelFunc // stops maintain
	done   chan struct{}      // closed when maintain returns
}

// newLease returns the attachment's lease, not yet acquired (or restored
// from saved when that is set). Every message carries the client ID (type
// 0 + ID, as the reference), what is provided (which may override the
// client ID) and the parameter request list.
func newLease(id, network, containerID, ifName, nsPath string, opts *options, broadcast bool, log *slog.Logger, saved *dhcpclient.Saved) *lease {
	cfg := dhcpclient.Config{IfName: ifName, NS: pathNS(nsPath), Where: nsPath, ClientID: append([]byte{0}, id...),
		Request: opts.request, Provide: opts.provide, Broadcast: broadcast, Log: log.With("client", id)}
	l := &lease{id: id, network: network, containerID: containerID, ifName: ifName, netns: nsPath, opts: opts, log: log}
	if saved != nil {
		l.Lease = dhcpclient.Restore(cfg, *saved)
	} else {
		l.Lease = dhcpclient.New(cfg)
	}
	return l
}

// pathNS is a container's namespace opened by path for each exchange, so
// the daemon never keeps one alive.
type pathNS string

func (p pathNS) Do(fn func() error) error {
	ns, err := netns.Open(string(p))
	if errors.Is(err, netns.ErrNotExist) {
		return fmt.Errorf("netns %s: %w", string(p), dhcpclient.ErrGone)
	}
	if err != nil {
		return err
	}
	defer ns.Close()
	return ns.Do(fn)
}

// acquire gets a lease within ctx; no answer in time or a refusal is "try
// again later", naming the interface (and the time waited).
func (l *lease) acquire(ctx context.Context) error {
	err := l.Acquire(ctx, nil)
	if errors.Is(err, dhcpclient.ErrNoAnswer) || errors.Is(err, dhcpclient.ErrRefused) {
		return cni.Errorf(types.ErrTryAgainLater, "%w", err)
	}
	return err
}

// hooks tell the daemon what maintenance found.
type hooks struct {
	gone    func() // the attachment no longer exists
	renewed func() // the lease has new times
}

// maintain keeps the lease alive until ctx ends or the attachment is gone.
// At expiry it sets the interface down (as the reference): its address is
// no longer its own.
func (l *lease) maintain(ctx context.Context, h hooks) {
	defer close(l.done)
	l.Maintain(ctx, dhcpclient.Hooks{Gone: h.gone, Renewed: h.renewed, Expired: l.setDown})
}

// exists reports ErrGone when the lease's namespace or interface is gone.
func (l *lease) exists() error {
	t, err := netns.OpenTarget(l.netns)
	if errors.Is(err, netns.ErrNotExist) {
		return fmt.Errorf("netns %s: %w", l.netns, dhcpclient.ErrGone)
	}
	if err != nil {
		return err
	}
	defer t.Close()
	if _, err := t.NL.LinkByName(l.ifName); err != nil {
		return fmt.Errorf("interface %s in %s: %w", l.ifName, l.netns, dhcpclient.ErrGone)
	}
	return nil
}

func (l *lease) setDown() {
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
	return l.Bound() && l.netns == netns
}

// result is the lease as an IPAM result: the address with its mask and
// the router as gateway, the lease's routes (dhcpclient.Routes), DNS from
// options 6 and 15.
func (l *lease) result() *current.Result {
	ack := l.ACK()
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	ipc := &current.IPConfig{Address: dhcpclient.AddressOf(ack), Gateway: dhcpclient.Gateway(ack)}
	res.IPs = []*current.IPConfig{ipc}
	for _, r := range dhcpclient.Routes(ack) {
		res.Routes = append(res.Routes, &types.Route{Dst: r.Dst, GW: r.GW})
	}
	for _, ip := range ack.DNS() {
		res.DNS.Nameservers = append(res.DNS.Nameservers, ip.String())
	}
	res.DNS.Domain = ack.DomainName()
	return res
}
