package nmstate

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/knit-cni/knit/pkg/netns"
)

// Engine reads and applies nmstate documents in one network namespace (the
// node's own in production, a test namespace in tests).
type Engine struct {
	NS *netns.NS
	NL *netlink.Handle
	// ResolvConf is the resolver file dns-resolver reads and writes
	// (default /etc/resolv.conf).
	ResolvConf string
	// DHCP acquires and releases leases for ipv4.dhcp: true; nil rejects
	// such states.
	DHCP DHCPClient
	// VerifyTimeout bounds how long Apply waits for the kernel to match the
	// desired state (default 5 s, nmstate's 5 × 1 s).
	VerifyTimeout time.Duration
	Log           *slog.Logger
}

// DHCPClient runs DHCPv4 on a node interface. A client that also has a
// Holds(ifName string) bool method tells rollback which interfaces hold
// its leases: those get their lease back (or keep it) on rollback, other
// dynamic addresses (another DHCP client's) are left as they are.
type DHCPClient interface {
	// Acquire obtains a lease on ifName and configures the address (with
	// its lease lifetime) and, when routes is true, the default route.
	Acquire(ctx context.Context, ifName string, routes bool) (net.IPNet, error)
	// Release gives the lease on ifName back and removes its address.
	Release(ctx context.Context, ifName string) error
}

// leaseHolder is the optional part of DHCPClient.
type leaseHolder interface{ Holds(ifName string) bool }

// holdsLease reports whether the DHCP client holds a lease on ifName.
func (e *Engine) holdsLease(ifName string) bool {
	h, ok := e.DHCP.(leaseHolder)
	return ok && h.Holds(ifName)
}

func (e *Engine) resolvConf() string {
	if e.ResolvConf == "" {
		return "/etc/resolv.conf"
	}
	return e.ResolvConf
}

func (e *Engine) log() *slog.Logger {
	if e.Log == nil {
		return slog.Default()
	}
	return e.Log
}

func (e *Engine) verifyTimeout() time.Duration {
	if e.VerifyTimeout == 0 {
		return 5 * time.Second
	}
	return e.VerifyTimeout
}
