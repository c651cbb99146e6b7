package link

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/netns"
)

// Removing a link on DEL.
//
// The kernel takes a deleted veth or macvlan out of its namespace within
// half a millisecond: it unlists the link, flushes its addresses and routes,
// detaches it from its bridge, announces RTM_DELLINK to listeners and
// releases the RTNL lock. The RTM_DELLINK request itself returns 13-20 ms
// later, after netdev_run_todo has waited for an RCU barrier and for the
// link's last references. Nothing a DEL's caller can observe depends on
// that tail (the name is free for the next ADD, the addresses are gone), so
// Remove waits for the announcement and leaves the blocked request to
// someone else:
//
//   - in a long-running process (knitd calling plugins in process), a
//     goroutine with a netlink handle of its own;
//   - in an exec'd plugin, which must exit for its caller to go on and whose
//     exit would wait for a thread blocked in the request, a helper process:
//     this binary re-executed as HelperName (see WithHelperProcess), in a
//     session of its own with /dev/null as stdio, so it holds none of the
//     runtime's pipes. It sends the one request and exits when the kernel
//     answers.
//
// The deleter gets the link's index, never its name: once the link is gone
// an ADD may create a new one under the same name, which must survive.
// Whatever goes wrong with the deleter (the helper cannot start, fails, or
// the announcement does not come within removeWait), Remove deletes the link
// itself, synchronously, and reports what that says; a link already gone is
// success, so a repeated DEL stays idempotent.

// HelperName is the name (argv[0]) under which a binary started by Remove
// must run HelperMain.
const HelperName = "knit-link-remove"

// removeWait bounds how long Remove waits for the kernel's announcement
// before it deletes the link synchronously.
const removeWait = time.Second

type helperKey struct{}

// WithHelperProcess returns a context under which Remove hands the tail of a
// link deletion to a helper process instead of a goroutine. Only a process
// about to exit (an exec'd plugin) whose binary dispatches HelperName to
// HelperMain should set it.
//
// The helper outlives the plugin and is reparented to the nearest subreaper
// or to init, which reap it. A caller that is PID 1 (a daemon running
// plugins as a container's init, like Multus's thick daemon) gets the
// orphan back and may never reap it: under such a parent ctx is returned
// unchanged, and the plugin's exit waits for its deletions as it would
// without a helper.
func WithHelperProcess(ctx context.Context) context.Context {
	if os.Getppid() == 1 {
		return ctx
	}
	return withHelper(ctx, "/proc/self/exe")
}

// withHelper names the helper's executable: this binary, whatever it was
// started as (tests substitute failing ones).
func withHelper(ctx context.Context, path string) context.Context {
	return context.WithValue(ctx, helperKey{}, path)
}

// Remove deletes the link called name in t's namespace, if there is one,
// and returns once the kernel has taken it out of the namespace (see the
// comment above). A missing link is success.
func Remove(ctx context.Context, t *netns.Target, name string) error {
	w, err := watchLinks(t.NS)
	if err != nil {
		return DelByName(t.NL, name)
	}
	defer w.Close()
	l, err := t.NL.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	idx := l.Attrs().Index
	d, err := startDelete(ctx, t.NS, idx)
	if err != nil {
		return delIndex(t.NL, idx, name)
	}
	gone := make(chan error, 1)
	go func() { gone <- w.waitDeleted(ctx, idx) }()
	select {
	case err := <-gone:
		if err == nil {
			return nil
		}
	case <-d.done:
	case <-ctx.Done():
	}
	// No announcement (lost, late, or the deleter ended first, maybe
	// without deleting): delete synchronously, which also says whether the
	// link is gone.
	d.stop()
	return delIndex(t.NL, idx, name)
}

// delIndex deletes link idx; already gone is success.
func delIndex(h *netlink.Handle, idx int, name string) error {
	err := h.LinkDel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}})
	if err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// deleter is a link deletion under way elsewhere: done receives its
// outcome, stop abandons it.
type deleter struct {
	done <-chan error
	stop func()
}

func startDelete(ctx context.Context, ns *netns.NS, idx int) (*deleter, error) {
	if path, ok := ctx.Value(helperKey{}).(string); ok {
		return startHelper(path, ns, idx)
	}
	// A handle of its own: the caller closes t once Remove returns, while
	// the request is still blocked.
	h, err := ns.Handle()
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		defer h.Close()
		done <- delIndex(h, idx, strconv.Itoa(idx))
	}()
	return &deleter{done: done, stop: func() {}}, nil
}

// startHelper starts the helper (path, as HelperName) with the namespace as
// fd 3.
func startHelper(path string, ns *netns.NS, idx int) (*deleter, error) {
	fd, err := unix.Dup(ns.Fd())
	if err != nil {
		return nil, fmt.Errorf("dup netns: %w", err)
	}
	f := os.NewFile(uintptr(fd), ns.Path())
	defer f.Close()
	cmd := &exec.Cmd{
		Path:        path,
		Args:        []string{HelperName, strconv.Itoa(idx)},
		Env:         []string{}, // not the plugin's CNI_* variables
		ExtraFiles:  []*os.File{f},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting link removal helper: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return &deleter{done: done, stop: func() { _ = cmd.Process.Kill() }}, nil
}

// HelperMain is the helper process's main: args are the index of the link
// to delete in the namespace open as fd 3. It returns the exit code.
func HelperMain(args []string) int {
	// Named for ps (at most 15 bytes): exec'd as /proc/self/exe, it would
	// show as "exe".
	if comm, err := unix.BytePtrFromString("knit-link-rm"); err == nil {
		_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(comm)), 0, 0, 0)
	}
	if len(args) != 1 {
		return 2
	}
	idx, err := strconv.Atoi(args[0])
	if err != nil || idx <= 0 {
		return 2
	}
	h, err := netlink.NewHandleAt(vns.NsHandle(3), unix.NETLINK_ROUTE)
	if err != nil {
		return 1
	}
	if err := delIndex(h, idx, args[0]); err != nil {
		return 1
	}
	return 0
}

// linkWatch is a socket in a namespace subscribed to its link
// announcements.
type linkWatch struct{ f *os.File }

func watchLinks(ns *netns.NS) (*linkWatch, error) {
	fd := -1
	err := ns.Do(func() error {
		s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		if err := unix.Bind(s, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
			unix.Close(s)
			return err
		}
		fd = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("watching links in %s: %w", ns.Path(), err)
	}
	// Non-blocking, so reads go through the runtime's poller: deadlines
	// apply and Close wakes a pending read.
	return &linkWatch{f: os.NewFile(uintptr(fd), "rtnetlink")}, nil
}

func (w *linkWatch) Close() error { return w.f.Close() }

// waitDeleted returns nil once the kernel announces link idx deleted, or an
// error at the deadline (removeWait, or ctx's if sooner), when the watch is
// closed, or when announcements were lost (ENOBUFS).
func (w *linkWatch) waitDeleted(ctx context.Context, idx int) error {
	deadline := time.Now().Add(removeWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return err
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.RTM_DELLINK && len(m.Data) >= unix.SizeofIfInfomsg &&
				int(nl.DeserializeIfInfomsg(m.Data).Index) == idx {
				return nil
			}
		}
	}
}
