package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/rpc"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/dhcpclient"
)

// Daemon holds the leases of every attachment on the node and keeps them
// alive. Plugins reach it over a unix socket with net/rpc, the same wire
// protocol as the reference daemon ("DHCP.Allocate" and "DHCP.Release"
// with skel.CmdArgs), plus "DHCP.Check" and "DHCP.GC".
type Daemon struct {
	ctx        context.Context // the daemon's life; maintenance stops with it
	hostPrefix string
	timeout    time.Duration
	broadcast  bool
	stateDir   string
	log        *slog.Logger

	ops    keyedMutex // one operation per attachment at a time
	mu     sync.Mutex
	leases map[string]*lease // by client ID
	wg     sync.WaitGroup
}

// keyedMutex serialises operations per key and forgets idle keys.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu    sync.Mutex
	users int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.users++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.users--; e.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

func opKey(containerID, ifName string) string { return containerID + "\x00" + ifName }

// DaemonOptions configures a Daemon.
type DaemonOptions struct {
	// HostPrefix is prepended to namespace paths (the daemon runs in a
	// container with the host's root mounted there).
	HostPrefix string
	// Timeout bounds ADD when the config sets no ipam.timeout.
	Timeout time.Duration
	// Broadcast asks servers to broadcast their answers.
	Broadcast bool
	// StateDir, when set, keeps the leases on disk so that a restarted
	// daemon goes on renewing them (see Restore).
	StateDir string
	Logger   *slog.Logger
}

// NewDaemon returns a daemon whose leases live until ctx ends.
func NewDaemon(ctx context.Context, o DaemonOptions) *Daemon {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Daemon{ctx: ctx, hostPrefix: o.HostPrefix, timeout: o.Timeout, broadcast: o.Broadcast,
		stateDir: o.StateDir, log: o.Logger, leases: map[string]*lease{}}
}

// Handler serves the daemon's RPC at net/rpc's default HTTP path.
func (d *Daemon) Handler() (http.Handler, error) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("DHCP", &service{d: d}); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(rpc.DefaultRPCPath, srv)
	return mux, nil
}

// Serve answers plugins on l until ctx ends, then waits for the lease
// goroutines. Leases are not released on the way out: the containers
// still use their addresses.
func (d *Daemon) Serve(ctx context.Context, l net.Listener) error {
	h, err := d.Handler()
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err = srv.Serve(l)
	d.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Wait waits until every lease goroutine has stopped (after ctx ended).
func (d *Daemon) Wait() { d.wg.Wait() }

// request is what one RPC asks about.
type request struct {
	conf  *Config
	opts  *options
	id    string
	netns string
}

func (d *Daemon) parse(args *skel.CmdArgs, needNetns bool) (*request, error) {
	conf, err := parse(args.StdinData)
	if err != nil {
		return nil, err
	}
	opts, err := prepare(args.Args, conf.IPAM)
	if err != nil {
		return nil, err
	}
	r := &request{conf: conf, opts: opts, id: clientID(args.ContainerID, conf.Name, args.IfName)}
	if args.Netns != "" {
		if !filepath.IsAbs(args.Netns) {
			return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_NETNS %q is not an absolute path", args.Netns)
		}
		r.netns = d.hostPrefix + args.Netns
	} else if needNetns {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required")
	}
	return r, nil
}

// allocate returns the attachment's lease, acquiring it if needed.
func (d *Daemon) allocate(args *skel.CmdArgs) (*current.Result, error) {
	r, err := d.parse(args, true)
	if err != nil {
		return nil, err
	}
	timeout := d.timeout
	if t := time.Duration(r.conf.IPAM.Timeout); t > 0 {
		timeout = t
	}
	if l := d.lookup(r.id); l != nil {
		if l.boundIn(r.netns) {
			return l.result(), nil // a repeated ADD: same lease
		}
		d.stop(l) // the same attachment in a new namespace: start over
		d.drop(l)
	}
	l := newLease(r.id, r.conf.Name, args.ContainerID, args.IfName, r.netns, r.opts, d.broadcast, d.log, nil)
	d.mu.Lock()
	d.leases[r.id] = l
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(d.ctx, timeout)
	defer cancel()
	if err := l.acquire(ctx); err != nil {
		d.drop(l)
		return nil, err
	}
	d.log.Info("lease acquired", "client", l.id, "ip", l.Address(), "expires", l.Times().Expire)
	if err := d.save(l); err != nil {
		d.log.Warn("saving lease", "client", l.id, "err", err)
	}
	d.start(l)
	return l.result(), nil
}

// start runs the lease's maintenance in the background.
func (d *Daemon) start(l *lease) {
	ctx, cancel := context.WithCancel(d.ctx)
	l.cancel, l.done = cancel, make(chan struct{})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		l.maintain(ctx, hooks{
			gone: func() { d.drop(l) },
			renewed: func() {
				if err := d.save(l); err != nil {
					d.log.Warn("saving lease", "client", l.id, "err", err)
				}
			},
		})
	}()
}

// stop ends the lease's maintenance and waits for it.
func (d *Daemon) stop(l *lease) {
	if l.cancel == nil {
		return
	}
	l.cancel()
	<-l.done
	l.cancel = nil
}

// drop forgets the lease if it is still the entry for its client ID.
func (d *Daemon) drop(l *lease) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.leases[l.id] == l {
		delete(d.leases, l.id)
		d.forget(l)
	}
}

func (d *Daemon) lookup(id string) *lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.leases[id]
}

// release stops the lease and tells the server; an unknown lease is fine.
func (d *Daemon) release(args *skel.CmdArgs) error {
	r, err := d.parse(args, false)
	if err != nil {
		return err
	}
	l := d.lookup(r.id)
	if l == nil {
		return nil
	}
	d.stop(l)
	d.drop(l)
	switch err := l.Release(); {
	case errors.Is(err, dhcpclient.ErrGone):
		// The main plugin deleted the link before calling IPAM DEL: the
		// server frees the address when the lease expires.
		d.log.Warn("interface gone before DHCPRELEASE could be sent", "client", l.id, "err", err)
	case err != nil:
		d.log.Warn("sending DHCPRELEASE failed", "client", l.id, "err", err)
	}
	d.log.Info("lease released", "client", l.id)
	return nil
}

// check verifies the attachment holds a live lease for the address in
// prevResult.
func (d *Daemon) check(args *skel.CmdArgs) error {
	r, err := d.parse(args, true)
	if err != nil {
		return err
	}
	l := d.lookup(r.id)
	if l == nil {
		return fmt.Errorf("the dhcp daemon holds no lease for %s", r.id)
	}
	ns := l.netns
	if !l.Bound() {
		return fmt.Errorf("the lease of %s has expired", r.id)
	}
	ip := l.Address()
	if ns != r.netns {
		return fmt.Errorf("the lease of %s is for netns %s, not %s", r.id, ns, r.netns)
	}
	prev, err := r.conf.PrevResult()
	if err != nil || prev == nil {
		return err
	}
	for _, ipc := range prev.IPs {
		if ipc.Address.IP.Equal(ip) {
			return nil
		}
	}
	return fmt.Errorf("the lease of %s is for %s, which prevResult does not list", r.id, ip)
}

// GCArgs is DHCP.GC's argument.
type GCArgs struct {
	Network string
	Valid   []cni.Attachment
}

// gc releases the network's leases of attachments not in the list.
func (d *Daemon) gc(a *GCArgs) error {
	keep := map[cni.Attachment]bool{}
	for _, v := range a.Valid {
		keep[v] = true
	}
	d.mu.Lock()
	var stale []*lease
	for _, l := range d.leases {
		if l.network == a.Network && !keep[cni.Attachment{ContainerID: l.containerID, IfName: l.ifName}] {
			stale = append(stale, l)
		}
	}
	d.mu.Unlock()
	for _, l := range stale {
		unlock := d.ops.lock(opKey(l.containerID, l.ifName))
		if d.lookup(l.id) != l {
			unlock() // released meanwhile
			continue
		}
		d.stop(l)
		d.drop(l)
		_ = l.Release() // the namespace is usually gone already
		unlock()
		d.log.Info("lease collected", "client", l.id)
	}
	return nil
}

// service is the RPC surface; net/rpc exposes every exported method of it.
type service struct{ d *Daemon }

// Allocate acquires (or returns the held) lease for an attachment.
func (s *service) Allocate(args *skel.CmdArgs, res *current.Result) error {
	defer s.d.ops.lock(opKey(args.ContainerID, args.IfName))()
	r, err := s.d.allocate(args)
	if err != nil {
		return wire(err)
	}
	*res = *r
	// The reference plugin (1.1.x) cannot convert a 1.1.0 result; the
	// content is the same in 1.0.0, and knit's plugin restamps it.
	res.CNIVersion = "1.0.0"
	return nil
}

// Release gives up an attachment's lease.
func (s *service) Release(args *skel.CmdArgs, _ *struct{}) error {
	defer s.d.ops.lock(opKey(args.ContainerID, args.IfName))()
	return wire(s.d.release(args))
}

// Check verifies an attachment's lease.
func (s *service) Check(args *skel.CmdArgs, _ *struct{}) error {
	defer s.d.ops.lock(opKey(args.ContainerID, args.IfName))()
	return wire(s.d.check(args))
}

// GC releases leases of attachments that no longer exist.
func (s *service) GC(args *GCArgs, _ *struct{}) error {
	return wire(s.d.gc(args))
}
