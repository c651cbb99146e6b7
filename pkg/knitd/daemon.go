// Package knitd is knit's node daemon: it serves the knit shim's CNI calls
// on a unix socket, resolving each pod's networks from informer caches (the
// node's pods, all NADs) and running the delegate plugins — knit's own
// in-process, others exec'd from the CNI bin dir. It keeps the node cache
// DEL works from, writes network-status and pod events, generates
// 00-knit.conflist, collects stale attachments, and exports metrics.
package knitd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/knit-cni/knit/pkg/attachcache"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/confgen"
	"github.com/knit-cni/knit/pkg/delegate"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/shim"
)

// Options are what the caller provides besides the config.
type Options struct {
	// Rest is the API client config (RestConfig(cfg.Kubeconfig) if nil).
	Rest *rest.Config
	// Registry holds the plugin types run in-process (builtin.Registry()).
	Registry cni.Registry
	Logger   *slog.Logger
	// HostNetns, if set, is the namespace delegate plugins run in instead
	// of knitd's own (tests use a scratch namespace as the "host").
	HostNetns string
}

// Daemon is a running knitd.
type Daemon struct {
	cfg      *Config
	log      *slog.Logger
	kube     *kube
	registry cni.Delegator
	hostNS   cni.NetnsID // the namespace knitd treats as the host's
	store    *attachcache.Store
	runner   *delegate.Runner
	metrics  *metrics
	status   *statusWriter
	events   *eventWriter

	// source is the conf dir's cluster network config (nil: none yet).
	source atomic.Pointer[confgen.Source]
	// gcMu: attachment work holds it shared, delegate GC exclusively (a
	// delegate's GC must not release what an ADD is allocating).
	gcMu sync.RWMutex
	// gone remembers since when a cached pod has been missing.
	goneMu sync.Mutex
	gone   map[string]time.Time

	ready       chan struct{} // closed once serving
	metricsAddr string        // bound address of the metrics listener
}

// New builds a daemon from a defaulted, validated config.
func New(cfg *Config, o Options) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	rc := o.Rest
	if rc == nil {
		var err error
		if rc, err = RestConfig(cfg.Kubeconfig); err != nil {
			return nil, fmt.Errorf("API client config: %w", err)
		}
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "knitd/" + cfg.NodeName
	k, err := newKube(rc, cfg.NodeName)
	if err != nil {
		return nil, err
	}
	var reg cni.Delegator = o.Registry
	if o.HostNetns != "" {
		host, err := netns.Open(o.HostNetns)
		if err != nil {
			return nil, err
		}
		reg = &nsDelegator{ns: host, inner: o.Registry}
	}
	// Taken now, before any thread has entered a container.
	hostNS, err := cni.OwnNetnsID()
	if o.HostNetns != "" {
		hostNS, err = cni.NetnsIDOf(o.HostNetns)
	}
	if err != nil {
		return nil, fmt.Errorf("host network namespace: %w", err)
	}
	d := &Daemon{cfg: cfg, log: log, kube: k, registry: reg, hostNS: hostNS,
		store:   &attachcache.Store{Dir: cfg.CacheDir},
		metrics: newMetrics(), gone: map[string]time.Time{}, ready: make(chan struct{})}
	d.runner = &delegate.Runner{Delegator: d.registry, Store: d.store, AfterAdd: d.afterAdd}
	d.status = newStatusWriter(k.patchPod, log, d.metrics)
	d.events = newEventWriter(k.createEvent, cfg.NodeName, log)
	return d, nil
}

// MetricsAddr is the metrics listener's address once Ready ("" if none).
func (d *Daemon) MetricsAddr() string { return d.metricsAddr }

// Ready is closed once the daemon serves its socket.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Run serves until ctx ends. The socket comes up before the caches sync:
// DEL needs only the node cache.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.kube.start(ctx.Done())

	ln, err := listenUnix(d.cfg.Socket)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	sockCtx, stopSock := context.WithCancel(context.Background())
	defer stopSock()
	run(func() { shim.Serve(sockCtx, ln, 10*time.Second, d.handle) })
	var metricsSrv *http.Server
	if d.cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", d.cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
		d.metricsAddr = mln.Addr().String()
		d.log.Info("serving metrics", "addr", d.metricsAddr)
		metricsSrv = &http.Server{Handler: d.metricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		run(func() { _ = metricsSrv.Serve(mln) })
	}
	run(func() { d.status.run(ctx, 4) })
	run(func() { d.events.run(ctx) })
	run(func() { d.watchConf(ctx) })
	run(func() { d.recover(ctx) })
	run(func() { d.gcLoop(ctx) })
	run(func() {
		start := time.Now()
		if cache.WaitForCacheSync(ctx.Done(), d.kube.podInformer.HasSynced, d.kube.nadInformer.HasSynced) {
			d.log.Info("informer caches synced", "took", time.Since(start))
		}
	})
	close(d.ready)
	d.log.Info("knitd serving", "socket", d.cfg.Socket, "node", d.cfg.NodeName)

	<-ctx.Done()
	shutdown, cancelShutdown := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelShutdown()
	// Let requests in progress finish: an ADD cut short is rolled back,
	// but finishing it is better.
	stopSock()
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(shutdown)
	}
	wg.Wait()
	return nil
}

// listenUnix creates the socket with mode 0600 in a 0700 directory,
// replacing a stale socket file left by a previous run.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	return ln, nil
}

// watchConf follows the conf dir's cluster network and, if enabled, keeps
// 00-knit.conflist in sync with it.
func (d *Daemon) watchConf(ctx context.Context) {
	o := confgen.Options{ConfDir: d.cfg.ConfDir, Socket: d.cfg.Socket, CacheDir: d.cfg.CacheDir, CNIVersion: d.cfg.CNIVersion}
	onChange := func(src *confgen.Source) {
		old := d.source.Swap(src)
		if (old == nil) != (src == nil) || (src != nil && old.Path != src.Path) {
			path := ""
			if src != nil {
				path = src.Path
			}
			d.log.Info("cluster network config", "file", path)
		}
	}
	if !*d.cfg.GenerateConf {
		// Only follow the cluster network; someone else owns the conflist.
		tick := time.NewTicker(time.Duration(d.cfg.ConfResync))
		defer tick.Stop()
		for {
			src, _, err := confgen.Find(d.cfg.ConfDir)
			if err == nil {
				onChange(src)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}
	if err := confgen.Watch(ctx, o, time.Duration(d.cfg.ConfResync), d.log, onChange); err != nil {
		d.log.Error("conf dir watch stopped", "err", err)
	}
}

// notReady says why the node cannot attach pods yet (nil: it can).
func (d *Daemon) notReady() error {
	if d.cfg.ClusterNetwork == "" && d.source.Load() == nil {
		return fmt.Errorf("no cluster network config in %s", d.cfg.ConfDir)
	}
	if f := d.cfg.ReadinessIndicatorFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("readiness indicator file %s: %w", f, err)
		}
	}
	return nil
}

func (d *Daemon) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		err := d.notReady()
		if err == nil && !d.kube.synced() {
			err = errors.New("informer caches not synced")
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if d.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// nsDelegator runs delegate plugins on a thread inside another namespace
// (exec'd plugins inherit it). In-process plugins delegate onwards (IPAM)
// on the same goroutine, so the whole chain stays there.
type nsDelegator struct {
	ns    *netns.NS
	inner cni.Delegator
}

func (n *nsDelegator) Delegate(ctx context.Context, pluginType string, req *cni.Request) (types.Result, error) {
	var res types.Result
	var derr error
	if err := n.ns.Do(func() error {
		res, derr = n.inner.Delegate(ctx, pluginType, req)
		return nil
	}); err != nil {
		return nil, err
	}
	return res, derr
}

// PodCached reports whether the pod informer holds a pod, and its UID.
func (d *Daemon) PodCached(namespace, name string) (string, bool) {
	p, ok := d.kube.cachedPod(namespace, name)
	if !ok {
		return "", false
	}
	return string(p.UID), true
}
