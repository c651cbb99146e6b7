package dhcp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// DefaultStateDir keeps the daemon's leases across restarts. It is under
// /run: after a reboot no namespace they were for exists.
const DefaultStateDir = "/run/cni/knit/dhcp"

// DaemonMain runs `dhcp daemon [flags]` (args are the flags) until SIGTERM
// or SIGINT and returns the exit status. The flags are the reference's.
func DaemonMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("dhcp daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pidfile := fs.String("pidfile", "", "optional path to write the daemon's PID to")
	hostPrefix := fs.String("hostprefix", "", "optional prefix to the host's root (netns paths are looked up under it)")
	socket := fs.String("socketpath", DefaultSocketPath, "unix socket to serve plugins on")
	broadcast := fs.Bool("broadcast", false, "ask DHCP servers to broadcast their answers")
	timeout := fs.Duration("timeout", 10*time.Second, "time to get a lease on ADD when the config sets no ipam.timeout")
	_ = fs.Duration("resendmax", 62*time.Second, "accepted for compatibility; retransmissions stop at the timeout")
	stateDir := fs.String("statedir", DefaultStateDir, "where leases are kept so a restarted daemon renews them (empty: nowhere)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := runDaemon(ctx, *socket, *pidfile, DaemonOptions{HostPrefix: *hostPrefix, Timeout: *timeout,
		Broadcast: *broadcast, StateDir: *stateDir, Logger: log}); err != nil {
		log.Error("dhcp daemon", "err", err)
		return 1
	}
	return 0
}

func runDaemon(ctx context.Context, socket, pidfile string, o DaemonOptions) error {
	if pidfile != "" {
		if !filepath.IsAbs(pidfile) {
			return fmt.Errorf("pidfile %q: path not absolute", pidfile)
		}
		if err := os.WriteFile(pidfile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("writing pidfile: %w", err)
		}
		defer os.Remove(pidfile)
	}
	l, cleanup, err := listen(o.HostPrefix + socket)
	if err != nil {
		return err
	}
	defer cleanup()
	d := NewDaemon(ctx, o)
	n, err := d.Restore()
	if err != nil {
		o.Logger.Warn("restoring leases", "err", err)
	}
	o.Logger.Info("dhcp daemon serving", "socket", l.Addr().String(), "restored", n)
	return d.Serve(ctx, l)
}

// listen returns the listener systemd passed (socket activation) or a new
// unix socket. A socket file nobody answers on is a leftover and replaced;
// one a live daemon answers on is an error.
func listen(path string) (net.Listener, func(), error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) && os.Getenv("LISTEN_FDS") == "1" {
		l, err := net.FileListener(os.NewFile(3, "systemd-socket"))
		return l, func() {}, err
	}
	if c, err := rpc.DialHTTP("unix", path); err == nil {
		c.Close()
		return nil, nil, fmt.Errorf("another dhcp daemon is serving %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("removing stale socket: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, nil, err
	}
	// Only root may ask for leases in arbitrary namespaces.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, nil, err
	}
	return l, func() { l.Close(); os.Remove(path) }, nil
}
