// Package hostns gives chained plugins that program the host (firewall, NAT,
// conntrack, sysctls) a handle on the namespace they act in: the calling
// process's own namespace — the host's, for a plugin a runtime exec'd — or an
// explicit one, for knitd and for tests that must never touch the real host.
package hostns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/netns"
)

// LockDir holds the lock files that serialise the
// read-modify-write sequences of concurrent plugin processes.
const LockDir = "/run/knit/lock"

// Host is an open host namespace.
type Host struct {
	// Pool, when set, lends NFT its connections (see NFTPool).
	Pool *NFTPool
	// NL is a netlink handle in the namespace.
	NL *netlink.Handle
	// ns is nil for the calling process's namespace: then nothing needs
	// switching, and exec'd helpers (iptables) run where the process is.
	ns *netns.NS
}

// Open opens the namespace at path, or the calling thread's namespace when
// path is empty.
func Open(path string) (*Host, error) {
	if path == "" {
		nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("netlink handle: %w", err)
		}
		return &Host{NL: nl}, nil
	}
	ns, err := netns.Open(path)
	if err != nil {
		return nil, err
	}
	// Route sockets only: closing a NETLINK_NETFILTER socket waits for
	// pending nftables transactions' RCU grace period.
	nl, err := netlink.NewHandleAt(vns.NsHandle(ns.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	return &Host{NL: nl, ns: ns}, nil
}

// Close releases the namespace.
func (h *Host) Close() error {
	h.NL.Close()
	if h.ns != nil {
		return h.ns.Close()
	}
	return nil
}

// NFT returns an nftables connection in the namespace that reuses one
// netlink socket for all its operations; hand it back with Release.
func (h *Host) NFT() (*nftables.Conn, error) {
	if h.Pool != nil {
		if c := h.Pool.get(); c != nil {
			return c, nil
		}
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if h.ns != nil {
		opts = append(opts, nftables.WithNetNSFd(h.ns.Fd()))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables connection: %w", err)
	}
	return c, nil
}

// Release returns c to the pool when the operation that used it succeeded
// (a failed one may have left messages queued), and closes it otherwise.
func (h *Host) Release(c *nftables.Conn, ok bool) {
	if ok && h.Pool != nil && h.Pool.put(c) {
		return
	}
	_ = c.CloseLasting()
}

// Conntrack returns a netlink handle for conntrack in the namespace.
// Closing it, like any netfilter socket, may wait for an RCU grace period.
func (h *Host) Conntrack() (*netlink.Handle, error) {
	if h.ns == nil {
		return netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	return netlink.NewHandleAt(vns.NsHandle(h.ns.Fd()), unix.NETLINK_NETFILTER)
}

// NFTPool keeps nftables connections to one namespace open across plugin
// calls, for long-running callers (knitd, benchmarks). A connection is
// closed only when the pool is: the kernel makes the close of a netfilter
// socket wait for the grace period of recent transactions, 10-30 ms that a
// short-lived plugin process pays once at exit but a daemon would pay per
// call. Its namespace must be the Host's it is set on.
type NFTPool struct {
	mu   sync.Mutex
	idle []*nftables.Conn
}

func (p *NFTPool) get() *nftables.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		return c
	}
	return nil
}

func (p *NFTPool) put(c *nftables.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= 8 {
		return false
	}
	p.idle = append(p.idle, c)
	return true
}

// Close closes the idle connections.
func (p *NFTPool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		_ = c.CloseLasting()
	}
}

// Do runs fn in the namespace: directly for the process's own namespace,
// on a locked thread switched into it otherwise. Processes fn starts
// (iptables) inherit the namespace.
func (h *Host) Do(fn func() error) error {
	if h.ns == nil {
		return fn()
	}
	return h.ns.Do(fn)
}

// Lock takes an exclusive lock named name, shared by all processes on the
// machine, and returns its release function. Plugins hold it around reads
// that decide what a following write removes. It is one lock per name, not
// per namespace: a machine has one host namespace, and test namespaces
// must not leave a lock file each behind.
func (h *Host) Lock(name string) (func(), error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock dir: %w", err)
	}
	path := filepath.Join(LockDir, name+".lock")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { unix.Close(fd) }, nil
}
