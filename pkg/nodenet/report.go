package nodenet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	api "github.com/knit-cni/knit/api/nmstate"
	"github.com/knit-cni/knit/pkg/nmstate"
)

// Reporter keeps the node's NodeNetworkState current: it rereads the state
// when the kernel reports a link, address or route change (debounced) and
// at least every Interval, and writes only when the state changed.
type Reporter struct {
	Client client.Client
	// Reader reads the NodeNetworkState from the API server: the reporter
	// is its only writer, so a cache of it would only lag.
	Reader   client.Reader
	NodeName string
	Engine   *nmstate.Engine
	Interval time.Duration // default 1 minute
	Debounce time.Duration // default 500 ms
	Log      *slog.Logger
	Now      func() time.Time
	// Synced, when set, is waited for before the first report, so a
	// NodeNetworkState also says the node's agent is watching policies.
	Synced func(context.Context) bool

	last []byte
}

// Start runs until ctx ends (a controller-runtime Runnable).
func (r *Reporter) Start(ctx context.Context) error {
	if r.Synced != nil && !r.Synced(ctx) {
		return nil // ctx ended first
	}
	events := make(chan struct{}, 1)
	if err := r.subscribe(ctx, events); err != nil {
		return err
	}
	interval, debounce := r.Interval, r.Debounce
	if interval == 0 {
		interval = time.Minute
	}
	if debounce == 0 {
		debounce = 500 * time.Millisecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	r.reportLogged(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-events:
			// Let a burst of changes (a bridge and its ports) settle.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(debounce):
			}
			drain(events)
		}
		r.reportLogged(ctx)
	}
}

func drain(c chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func (r *Reporter) reportLogged(ctx context.Context) {
	if err := r.Report(ctx); err != nil {
		r.log().Warn("reporting NodeNetworkState", "err", err)
	}
}

func (r *Reporter) log() *slog.Logger {
	if r.Log == nil {
		return slog.Default()
	}
	return r.Log
}

// subscribe turns netlink link, address and route notifications from the
// engine's namespace into signals on events.
func (r *Reporter) subscribe(ctx context.Context, events chan struct{}) error {
	h := r.Engine.NS.NsHandle()
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	onErr := func(err error) {
		// Ending ctx closes the sockets under the receivers, which then
		// report EAGAIN: that is shutdown, not a failure.
		if ctx.Err() == nil {
			r.log().Warn("netlink subscription", "err", err)
		}
	}
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{Namespace: &h, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribing to links: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, ctx.Done(), netlink.AddrSubscribeOptions{Namespace: &h, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribing to addresses: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, ctx.Done(), netlink.RouteSubscribeOptions{Namespace: &h, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribing to routes: %w", err)
	}
	signal := func() {
		select {
		case events <- struct{}{}:
		default:
		}
	}
	go func() {
		// A subscription that dies closes its channel; the periodic
		// report still covers changes then.
		for links != nil || addrs != nil || routes != nil {
			var ok bool
			select {
			case <-ctx.Done():
				return
			case _, ok = <-links:
				if !ok {
					links = nil
				}
			case _, ok = <-addrs:
				if !ok {
					addrs = nil
				}
			case _, ok = <-routes:
				if !ok {
					routes = nil
				}
			}
			if ok {
				signal()
			}
		}
	}()
	return nil
}

// Report writes the node's state if it changed since the last write.
func (r *Reporter) Report(ctx context.Context) error {
	s, err := r.Engine.Read()
	if err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if bytes.Equal(b, r.last) {
		return nil
	}
	if err := r.write(ctx, b); err != nil {
		return err
	}
	r.last = b
	return nil
}

func (r *Reporter) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Reporter) write(ctx context.Context, state []byte) error {
	var nns api.NodeNetworkState
	err := r.Reader.Get(ctx, types.NamespacedName{Name: r.NodeName}, &nns)
	if apierrors.IsNotFound(err) {
		nns, err = r.create(ctx)
	}
	if err != nil {
		return err
	}
	nns.Status.CurrentState = api.State{Raw: state}
	nns.Status.LastSuccessfulUpdateTime = metav1.NewTime(r.now())
	nns.Status.HandlerNmstateVersion = "knit"
	if err := r.Client.Status().Update(ctx, &nns); err != nil {
		return fmt.Errorf("updating NodeNetworkState %s: %w", r.NodeName, err)
	}
	return nil
}

// create makes the node's NNS, owned by its Node so it goes with it.
func (r *Reporter) create(ctx context.Context) (api.NodeNetworkState, error) {
	var node corev1.Node
	if err := r.Client.Get(ctx, types.NamespacedName{Name: r.NodeName}, &node); err != nil {
		return api.NodeNetworkState{}, fmt.Errorf("own node: %w", err)
	}
	nns := api.NodeNetworkState{ObjectMeta: metav1.ObjectMeta{Name: r.NodeName,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}}}
	if err := r.Client.Create(ctx, &nns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nns, fmt.Errorf("creating NodeNetworkState %s: %w", r.NodeName, err)
	}
	err := r.Reader.Get(ctx, types.NamespacedName{Name: r.NodeName}, &nns)
	return nns, err
}
