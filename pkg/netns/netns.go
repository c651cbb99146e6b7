// Package netns gives plugins a handle on a network namespace: netlink
// handles bound to it (no thread switching) and, for the few things netlink
// cannot do (sysctls under /proc/sys/net), a locked-thread Do.
package netns

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotExist is returned by Open when the namespace path is gone (DEL after
// the runtime removed the namespace must still succeed).
var ErrNotExist = errors.New("network namespace does not exist")

// NS is an open network namespace.
type NS struct {
	h    netns.NsHandle
	path string
}

// Open opens the namespace at path (a bind mount or /proc/PID/ns/net).
func Open(path string) (*NS, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", path, ErrNotExist)
		}
		return nil, fmt.Errorf("opening netns %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("statfs netns %s: %w", path, err)
	}
	// A bind-mounted netns is on nsfs; /proc/PID/ns/net is on procfs.
	if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not a network namespace", path)
	}
	return &NS{h: netns.NsHandle(fd), path: path}, nil
}

// Current opens the calling thread's namespace; in a plugin, the host's.
func Current() (*NS, error) {
	h, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening current netns: %w", err)
	}
	return &NS{h: h, path: "/proc/self/ns/net"}, nil
}

// Path is where the namespace was opened from.
func (n *NS) Path() string { return n.path }

// Fd is the namespace's file descriptor, e.g. for netlink.NsFd.
func (n *NS) Fd() int { return int(n.h) }

// NsHandle is the namespace as vishvananda/netns knows it, for netlink
// subscriptions.
func (n *NS) NsHandle() netns.NsHandle { return n.h }

// Close releases the namespace.
func (n *NS) Close() error { return n.h.Close() }

// Handle returns a netlink handle whose sockets live in the namespace, so
// link, address and route calls act there from any thread.
func (n *NS) Handle() (*netlink.Handle, error) {
	// Only rtnetlink: without families the library opens a socket per
	// family it knows (route, xfrm, netfilter), switching the thread into
	// the namespace for each. Requests on another family through this
	// handle would go to a socket in the caller's namespace, so callers
	// that need netfilter (conntrack) open their own handle.
	h, err := netlink.NewHandleAt(n.h, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.path, err)
	}
	return h, nil
}

// Do runs fn on an OS thread switched into the namespace. The thread is
// locked for the duration and unlocked only when it is back in its original
// namespace; if switching back fails the thread stays locked, so the Go
// runtime discards it instead of scheduling other goroutines on it.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", n.path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("returning from %s: %w", n.path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Target is an open namespace with a netlink handle inside it: what most
// plugin operations need.
type Target struct {
	*NS
	NL *netlink.Handle
}

// OpenTarget opens the namespace at path and a netlink handle in it.
func OpenTarget(path string) (*Target, error) {
	ns, err := Open(path)
	if err != nil {
		return nil, err
	}
	h, err := ns.Handle()
	if err != nil {
		ns.Close()
		return nil, err
	}
	return &Target{NS: ns, NL: h}, nil
}

// Close releases the handle and the namespace.
func (t *Target) Close() error {
	t.NL.Close()
	return t.NS.Close()
}
