// Package dhcp is the CNI dhcp IPAM plugin and its daemon. The plugin
// asks the daemon (`dhcp daemon`, on a unix socket) for a lease for the
// container's interface; the daemon gets it from a DHCP server on the
// interface's segment, from inside the container's namespace, renews it in
// the background and releases it on DEL.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/knit-cni/knit/pkg/cni"
)

// Plugin implements cni.Plugin, cni.GarbageCollector and
// cni.StatusReporter by calling the daemon.
type Plugin struct {
	// SocketPath replaces DefaultSocketPath when the config has no
	// ipam.daemonSocketPath.
	SocketPath string
}

// Add gets the attachment's lease.
func (p Plugin) Add(ctx context.Context, req *cni.Request) (types.Result, error) {
	conf, args, err := p.prepare(req)
	if err != nil {
		return nil, err
	}
	if req.Netns == "" {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for ADD")
	}
	res := &current.Result{}
	if err := call(ctx, conf.socketPath(p.SocketPath), "DHCP.Allocate", args, res); err != nil {
		return nil, err
	}
	res.CNIVersion = current.ImplementedSpecVersion
	return res, nil
}

// Del releases the lease. A daemon that is not running holds no lease, so
// that is success: a DEL must not block a pod's removal.
func (p Plugin) Del(ctx context.Context, req *cni.Request) error {
	conf, args, err := p.prepare(req)
	if err != nil {
		return err
	}
	err = call(ctx, conf.socketPath(p.SocketPath), "DHCP.Release", args, &struct{}{})
	if errors.Is(err, errNoDaemon) {
		return nil
	}
	return err
}

// Check asks the daemon whether it holds the lease prevResult reports.
func (p Plugin) Check(ctx context.Context, req *cni.Request) error {
	conf, args, err := p.prepare(req)
	if err != nil {
		return err
	}
	return call(ctx, conf.socketPath(p.SocketPath), "DHCP.Check", args, &struct{}{})
}

// GC has the daemon release this network's leases of attachments not in
// the valid list.
func (p Plugin) GC(ctx context.Context, req *cni.Request, valid []cni.Attachment) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	err = call(ctx, conf.socketPath(p.SocketPath), "DHCP.GC", &GCArgs{Network: conf.Name, Valid: valid}, &struct{}{})
	if errors.Is(err, errNoDaemon) {
		return nil // no daemon, no leases
	}
	return err
}

// Status reports whether the daemon answers.
func (p Plugin) Status(ctx context.Context, req *cni.Request) error {
	conf, err := parse(req.Config)
	if err != nil {
		return err
	}
	c, err := dial(ctx, conf.socketPath(p.SocketPath))
	if err != nil {
		var ce *cni.Error
		if errors.As(err, &ce) {
			ce.Code = cni.ErrNotReady
		}
		return err
	}
	return c.Close()
}

// prepare validates the config locally (so config errors need no daemon)
// and builds the RPC argument the reference daemon also understands.
func (p Plugin) prepare(req *cni.Request) (*Config, *skel.CmdArgs, error) {
	conf, err := parse(req.Config)
	if err != nil {
		return nil, nil, err
	}
	if _, err := prepare(req.Args, conf.IPAM); err != nil {
		return nil, nil, err
	}
	args := &skel.CmdArgs{ContainerID: req.ContainerID, IfName: req.IfName, Args: req.Args,
		Path: strings.Join(req.Path, ":"), StdinData: req.Config}
	if req.Netns != "" {
		// The daemon runs elsewhere: the path must not be relative.
		if args.Netns, err = filepath.Abs(req.Netns); err != nil {
			return nil, nil, err
		}
	}
	return conf, args, nil
}

// errNoDaemon marks a socket nobody listens on.
var errNoDaemon = errors.New("dhcp daemon not running")

func dial(ctx context.Context, socket string) (*rpc.Client, error) {
	type dialed struct {
		c   *rpc.Client
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := rpc.DialHTTP("unix", socket)
		ch <- dialed{c, err}
	}()
	select {
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.c != nil {
				d.c.Close()
			}
		}()
		return nil, ctx.Err()
	case d := <-ch:
		if d.err == nil {
			return d.c, nil
		}
		if errors.Is(d.err, syscall.ENOENT) || errors.Is(d.err, syscall.ECONNREFUSED) {
			return nil, &cni.Error{Code: types.ErrTryAgainLater, Err: errNoDaemon,
				Msg: fmt.Sprintf("%v: nothing listens on %s; start it with `dhcp daemon` (or set ipam.daemonSocketPath)", errNoDaemon, socket)}
		}
		return nil, fmt.Errorf("dialing the dhcp daemon at %s: %w", socket, d.err)
	}
}

// call runs one RPC, bounded by ctx.
func call(ctx context.Context, socket, method string, args, reply any) error {
	c, err := dial(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	done := c.Go(method, args, reply, make(chan *rpc.Call, 1)).Done
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	case cl := <-done:
		return unwire(method, cl.Error)
	}
}

// wirePrefix marks a CNI error carried through net/rpc, which only
// transports strings: "cni-error 11: message".
const wirePrefix = "cni-error "

func wire(err error) error {
	var ce *cni.Error
	if err == nil || !errors.As(err, &ce) {
		return err
	}
	return fmt.Errorf("%s%d: %s", wirePrefix, ce.Code, ce.Error())
}

func unwire(method string, err error) error {
	var se rpc.ServerError
	if err == nil || !errors.As(err, &se) {
		if err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		return nil
	}
	if rest, ok := strings.CutPrefix(string(se), wirePrefix); ok {
		if code, msg, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.ParseUint(code, 10, 32); err == nil {
				return &cni.Error{Code: uint(n), Msg: msg}
			}
		}
	}
	return fmt.Errorf("dhcp daemon: %s", string(se))
}
