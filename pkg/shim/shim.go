// Package shim is the protocol between the knit CNI binary (the shim the
// container runtime execs) and knitd: one JSON request per CNI call over
// knitd's unix socket, answered with the printed result or a CNI error. It also holds the shim's config (the knit plugin object in
// 00-knit.conflist) and the shim's client side.
package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/knit-cni/knit/pkg/cni"
)

// Defaults shared by knitd and the shim.
const (
	DefaultSocket   = "/run/knit/knitd.sock"
	DefaultCacheDir = "/var/lib/knit/cache"
)

// Request is one CNI call forwarded by the shim.
type Request struct {
	Command     string          `json:"command"`
	ContainerID string          `json:"containerID,omitempty"`
	Netns       string          `json:"netns,omitempty"`
	IfName      string          `json:"ifname,omitempty"`
	Args        string          `json:"args,omitempty"`
	Path        []string        `json:"path,omitempty"`
	Config      json.RawMessage `json:"config"`
	// NetnsOverride carries CNI_NETNS_OVERRIDE (see cni.Request).
	NetnsOverride bool `json:"netnsOverride,omitempty"`
}

// CNIRequest converts to the spec core's request.
func (r *Request) CNIRequest() *cni.Request {
	return &cni.Request{Command: cni.Command(r.Command), ContainerID: r.ContainerID, Netns: r.Netns,
		IfName: r.IfName, Args: r.Args, Path: r.Path, Config: r.Config, NetnsOverride: r.NetnsOverride}
}

// FromCNIRequest converts from the spec core's request.
func FromCNIRequest(r *cni.Request) *Request {
	return &Request{Command: string(r.Command), ContainerID: r.ContainerID, Netns: r.Netns,
		IfName: r.IfName, Args: r.Args, Path: r.Path, Config: r.Config, NetnsOverride: r.NetnsOverride}
}

// Response is knitd's answer: Result (printed in the config's cniVersion)
// for a successful ADD, Error for a failed call.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// Conf is the knit plugin object of 00-knit.conflist as the runtime passes
// it (name, cniVersion and runtimeConfig injected).
type Conf struct {
	cni.NetConf
	// Socket is knitd's unix socket.
	Socket string `json:"socket,omitempty"`
	// CacheDir is the node cache DEL falls back to without knitd.
	CacheDir string `json:"cacheDir,omitempty"`
	// ClusterNetwork is the config file the cluster network came from
	// (informational: knitd resolves it itself).
	ClusterNetwork string         `json:"clusterNetwork,omitempty"`
	RuntimeConfig  map[string]any `json:"runtimeConfig,omitempty"`
}

// ParseConf reads the shim's config with defaults filled in.
func ParseConf(data []byte) (*Conf, error) {
	var c Conf
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.CacheDir == "" {
		c.CacheDir = DefaultCacheDir
	}
	return &c, nil
}

// WireError converts any error to the spec's wire error, keeping the code
// of the innermost CNI error but the whole message, so that context added
// on the way up (which network, which plugin) reaches the user.
func WireError(err error) *types.Error {
	switch e := err.(type) {
	case *types.Error:
		return e
	case *cni.Error:
		return &types.Error{Code: e.Code, Msg: e.Msg, Details: e.Details}
	}
	te := cni.AsTypesError(err)
	return &types.Error{Code: te.Code, Msg: err.Error()}
}

// ErrUnreachable wraps failures to reach knitd (no socket, refused, or
// the connection dropped before an answer).
var ErrUnreachable = errors.New("knitd unreachable")

// maxMessage bounds a request or answer (configs and results are small).
const maxMessage = 16 << 20

// Client talks to knitd. The protocol is one JSON request per connection,
// ended by a half-close, answered by one JSON response and a close: no
// HTTP, so the shim stays small and quick to start.
type Client struct {
	Socket string
	// DialTimeout bounds connecting; the call itself is not bounded (an
	// ADD takes as long as its plugins do, and the runtime owns the
	// overall deadline).
	DialTimeout time.Duration
}

// NewClient returns a client for the socket.
func NewClient(socket string) *Client {
	return &Client{Socket: socket, DialTimeout: 2 * time.Second}
}

// Do sends a request. A transport failure wraps ErrUnreachable; a CNI
// failure is returned in the response.
//
// It uses a plain blocking socket, not package net: the shim is a process
// that lives for one call, and setting up net's poller costs it more than
// the exchange itself. SO_SNDTIMEO bounds connecting (a unix connect waits
// only while knitd's backlog is full) and sending; ctx ending shuts the
// socket down, which ends a blocked read.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encoding request: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.Socket, err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.Socket, err)
	}
	defer unix.Close(fd)
	if c.DialTimeout > 0 {
		tv := unix.NsecToTimeval(c.DialTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.Socket, err)
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: c.Socket}); err != nil {
		return nil, fmt.Errorf("%w at %s: connecting: %w", ErrUnreachable, c.Socket, err)
	}
	// Shutdown, not close: the descriptor stays valid until Do returns,
	// and Do waits for a shutdown already under way before closing it (a
	// late shutdown could hit a reused descriptor number).
	shut := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
		close(shut)
	})
	defer func() {
		if !stop() {
			<-shut
		}
	}()
	if err := writeAll(fd, body); err != nil {
		return nil, fmt.Errorf("%w at %s: sending: %w", ErrUnreachable, c.Socket, err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.Socket, err)
	}
	b, err := readAll(fd, maxMessage)
	if err == nil && len(b) == 0 {
		err = io.ErrUnexpectedEOF
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("%w at %s: connection lost before an answer: %w", ErrUnreachable, c.Socket, err)
	}
	var out Response
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("knitd at %s: undecodable answer %q: %w", c.Socket, truncate(b), err)
	}
	return &out, nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readAll reads until EOF, failing past limit bytes.
func readAll(fd, limit int) ([]byte, error) {
	b := make([]byte, 0, 4096)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return b, err
		}
		if n == 0 {
			return b, nil
		}
		if b = b[:len(b)+n]; len(b) > limit {
			return b, fmt.Errorf("answer over %d bytes", limit)
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// Handler serves one request.
type Handler func(ctx context.Context, req *Request) Response

// Serve answers requests on ln until ctx ends, then stops accepting and
// waits (up to grace) for requests in progress.
func Serve(ctx context.Context, ln net.Listener, grace time.Duration, h Handler) {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(ctx, conn, h)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
	}
}

func serveConn(ctx context.Context, conn net.Conn, h Handler) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(io.LimitReader(conn, maxMessage))
	var resp Response
	var req Request
	if err == nil {
		err = json.Unmarshal(b, &req)
	}
	if err != nil {
		resp.Error = &types.Error{Code: types.ErrDecodingFailure, Msg: "knitd: bad request: " + err.Error()}
	} else {
		// The call runs to completion (or rollback) even if the shim
		// goes away: a runtime that gives up must not leave it half done.
		resp = h(context.WithoutCancel(ctx), &req)
	}
	out, err := json.Marshal(&resp)
	if err != nil {
		out, _ = json.Marshal(&Response{Error: &types.Error{Code: types.ErrInternal, Msg: "knitd: encoding answer: " + err.Error()}})
	}
	_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, _ = conn.Write(out)
}
