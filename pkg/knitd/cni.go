package knitd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/knit-cni/knit/pkg/annotations"
	"github.com/knit-cni/knit/pkg/attachcache"
	"github.com/knit-cni/knit/pkg/chain"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/defaultroute"
	"github.com/knit-cni/knit/pkg/nad"
	"github.com/knit-cni/knit/pkg/shim"
)

// requestTimeout bounds one CNI call in knitd. The call is detached from
// the shim's connection (see shim.Serve).
const requestTimeout = 4 * time.Minute

// handle serves one request of the knit shim.
func (d *Daemon) handle(ctx context.Context, req *shim.Request) shim.Response {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := d.Serve(ctx, req.CNIRequest())
	if err != nil {
		return shim.Response{Error: shim.WireError(err)}
	}
	return shim.Response{Result: res}
}

// Serve handles one CNI call and returns the printed ADD result.
func (d *Daemon) Serve(ctx context.Context, req *cni.Request) ([]byte, error) {
	done := d.metrics.observe(string(req.Command))
	start := time.Now()
	res, err := d.serve(ctx, req)
	var code uint
	if err != nil {
		code = shim.WireError(err).Code
		d.log.Warn("CNI request failed", "command", req.Command, "container", req.ContainerID, "code", code,
			"took", time.Since(start), "err", err)
	} else {
		d.log.Debug("CNI request", "command", req.Command, "container", req.ContainerID, "took", time.Since(start))
	}
	done(code)
	return res, err
}

func (d *Daemon) serve(ctx context.Context, req *cni.Request) ([]byte, error) {
	if len(req.Path) == 0 {
		req.Path = []string{d.cfg.BinDir}
	}
	// Refused before any work, where skel checks only after the call.
	if err := cni.CheckNetns(req, d.hostNS); err != nil {
		return nil, err
	}
	switch req.Command {
	case cni.CmdAdd:
		return d.add(ctx, req)
	case cni.CmdDel:
		return nil, d.del(ctx, req)
	case cni.CmdCheck:
		return nil, d.check(ctx, req)
	case cni.CmdGC:
		return nil, d.gcCommand(ctx, req)
	case cni.CmdStatus:
		return nil, d.statusCommand(ctx, req)
	}
	return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "unknown CNI_COMMAND %q", req.Command)
}

// k8sArgs are the Kubernetes keys of CNI_ARGS.
type k8sArgs struct {
	Namespace, Name, UID string
}

func parseK8sArgs(args string) k8sArgs {
	var k k8sArgs
	for _, kv := range strings.Split(args, ";") {
		key, val, _ := strings.Cut(kv, "=")
		switch key {
		case "K8S_POD_NAMESPACE":
			k.Namespace = val
		case "K8S_POD_NAME":
			k.Name = val
		case "K8S_POD_UID":
			k.UID = val
		}
	}
	return k
}

func (d *Daemon) add(ctx context.Context, req *cni.Request) ([]byte, error) {
	if req.Netns == "" {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for ADD")
	}
	conf, err := shim.ParseConf(req.Config)
	if err != nil {
		return nil, err
	}
	if err := d.notReady(); err != nil {
		return nil, cni.Errorf(types.ErrTryAgainLater, "knit: node not ready: %v", err)
	}
	ka := parseK8sArgs(req.Args)
	var pod *corev1.Pod
	if ka.Name != "" && ka.Namespace != "" {
		if !d.kube.synced() && !d.kube.waitSynced(ctx, time.Duration(d.cfg.PodWait)) {
			d.log.Warn("ADD before informer caches synced", "pod", ka.Namespace+"/"+ka.Name)
		}
		if pod, err = d.kube.getPod(ctx, ka.Namespace, ka.Name, ka.UID, time.Duration(d.cfg.PodWait)); err != nil {
			return nil, err
		}
	}
	// Lock order everywhere: gcMu, then the attachment lock.
	d.gcMu.RLock()
	defer d.gcMu.RUnlock()
	unlock, err := d.store.Lock(req.ContainerID, req.IfName)
	if err != nil {
		return nil, cni.Errorf(types.ErrIOFailure, "%v", err)
	}
	defer unlock(false)
	if err := d.clearLeftover(ctx, req); err != nil {
		return nil, err
	}
	p := &planner{d: d, pod: pod, conf: conf, req: req}
	atts, err := p.plan(ctx)
	if err != nil {
		d.podEvent(pod, err)
		return nil, err
	}
	e := &attachcache.Entry{ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns, Args: req.Args,
		Path: req.Path, Created: time.Now().UTC(), Attachments: atts}
	if pod != nil {
		e.PodNamespace, e.PodName, e.PodUID = pod.Namespace, pod.Name, string(pod.UID)
	}
	results, err := d.runner.Add(ctx, e)
	if err != nil {
		d.podEvent(pod, &podError{Reason: ReasonAttachFailed, Err: err})
		return nil, err
	}
	d.reportAdd(pod, e, results)
	return chainResult(atts[0], results[0], conf.CNIVersion)
}

// clearLeftover tears down what an earlier, interrupted or failed ADD of
// the same container left in the cache: a new ADD means the old one is
// dead, and its leftovers would collide with the new attachments.
func (d *Daemon) clearLeftover(ctx context.Context, req *cni.Request) error {
	old, err := d.store.Read(req.ContainerID, req.IfName)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		d.log.Warn("unreadable cache entry replaced", "container", req.ContainerID, "err", err)
		return nil
	}
	d.log.Info("removing leftovers of an earlier ADD", "container", req.ContainerID, "complete", old.Complete)
	if err := d.runner.Del(ctx, old); err != nil {
		return cni.Errorf(types.ErrTryAgainLater, "removing leftovers of an earlier ADD of this container: %v", err)
	}
	return nil
}

// chainResult is what the runtime gets: the cluster network's result, in
// the knit config's version.
func chainResult(a attachcache.Attachment, res types.Result, version string) ([]byte, error) {
	n, err := chain.Parse(a.Config)
	if err != nil {
		return nil, err
	}
	n.CNIVersion = version
	return n.EncodeResult(res)
}

// afterAdd applies a default-route request once an attachment is up: the
// requesting attachment gets the default route, the others lose theirs
// for the requested families.
func (d *Daemon) afterAdd(_ context.Context, e *attachcache.Entry, i int, _ types.Result) error {
	var req []net.IP
	for j := range e.Attachments {
		if gws := gatewayIPs(&e.Attachments[j]); len(gws) > 0 {
			req = gws
		}
	}
	if len(req) == 0 {
		return nil
	}
	a := &e.Attachments[i]
	if gws := gatewayIPs(a); len(gws) > 0 {
		return defaultroute.Apply(e.Netns, a.IfName, gws, false, false)
	}
	v4, v6 := defaultroute.Families(req)
	return defaultroute.Apply(e.Netns, a.IfName, nil, v4, v6)
}

// reportAdd emits AddedInterface events and queues the network-status.
func (d *Daemon) reportAdd(pod *corev1.Pod, e *attachcache.Entry, results []types.Result) {
	if pod == nil {
		return
	}
	var statuses []annotations.NetworkStatus
	v4, v6 := requestedFamilies(e)
	for i := range e.Attachments {
		a := &e.Attachments[i]
		cur, err := current.NewResultFromResult(results[i])
		if err != nil {
			d.log.Warn("result not convertible for network-status", "network", a.Network, "err", err)
			continue
		}
		st := annotations.Statuses(a.Network, a.IfName, cur, a.Default, d.deviceInfo(a))
		for k := range st {
			st[k].DefaultRoute = effectiveDefaultRoute(a, st[k].DefaultRoute, v4, v6)
			d.events.emit(pod, corev1.EventTypeNormal, ReasonAddedInterface,
				fmt.Sprintf("Add %s %v from %s", st[k].Interface, addresses(cur), a.Network))
		}
		statuses = append(statuses, st...)
	}
	if contains(d.cfg.SystemNamespaces, pod.Namespace) {
		return // as Multus: no network-status for system namespaces
	}
	d.trueDefaultRoutes(e, statuses)
	key := ktypes.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
	if err := d.status.enqueue(key, pod.UID, statuses); err != nil {
		d.log.Error("network-status", "pod", key.String(), "err", err)
	}
}

// trueDefaultRoutes makes the statuses' default-route say what the pod's
// kernel has when attachments' results disagree: two results each listing
// a default route of one family cannot both be in the main table (the
// second plugin's route is skipped, "first one wins"), so the pod's routes
// are read once and each element keeps only the gateways really there.
func (d *Daemon) trueDefaultRoutes(e *attachcache.Entry, statuses []annotations.NetworkStatus) {
	v4, v6 := 0, 0
	for _, s := range statuses {
		for _, gw := range s.DefaultRoute {
			if ip := net.ParseIP(gw); ip != nil && ip.To4() != nil {
				v4++
			} else {
				v6++
			}
		}
	}
	if v4 < 2 && v6 < 2 {
		return
	}
	installed, err := defaultroute.Installed(e.Netns)
	if err != nil {
		d.log.Warn("reading the pod's default routes", "container", e.ContainerID, "err", err)
		return
	}
	for i := range statuses {
		var keep []string
		for _, gw := range statuses[i].DefaultRoute {
			if slices.Contains(installed[statuses[i].Interface], gw) {
				keep = append(keep, gw)
			}
		}
		statuses[i].DefaultRoute = keep
	}
}

func addresses(r *current.Result) []string {
	out := make([]string, 0, len(r.IPs))
	for _, ip := range r.IPs {
		out = append(out, ip.Address.String())
	}
	return out
}

func requestedFamilies(e *attachcache.Entry) (v4, v6 bool) {
	for i := range e.Attachments {
		if gws := gatewayIPs(&e.Attachments[i]); len(gws) > 0 {
			return defaultroute.Families(gws)
		}
	}
	return false, false
}

// effectiveDefaultRoute is an interface's default-route after a request:
// the requested gateways on the requesting attachment, and on the others
// what is left of their own once requested families were removed.
func effectiveDefaultRoute(a *attachcache.Attachment, own []string, v4, v6 bool) []string {
	if len(a.GatewayRequest) > 0 {
		return a.GatewayRequest
	}
	var out []string
	for _, g := range own {
		ip := net.ParseIP(g)
		if ip == nil || (ip.To4() != nil && v4) || (ip.To4() == nil && v6) {
			continue
		}
		out = append(out, g)
	}
	return out
}

// deviceInfo reads the device plugin's device-info file of an attachment's
// device, if the device plugin wrote one.
func (d *Daemon) deviceInfo(a *attachcache.Attachment) *nadv1.DeviceInfo {
	if a.ResourceName == "" || a.DeviceID == "" {
		return nil
	}
	info, err := nad.LoadDeviceInfo(d.cfg.DeviceInfoDir, a.ResourceName, a.DeviceID)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("device-info", "err", err)
		}
		return nil
	}
	return info
}

// podEvent reports an ADD failure on the pod: annotation and NAD problems
// with their own reasons, delegate failures as NetworkAttachFailed.
func (d *Daemon) podEvent(pod *corev1.Pod, err error) {
	if pod == nil || err == nil {
		return
	}
	var pe *podError
	if !errors.As(err, &pe) {
		return // node-side trouble (not ready, I/O): not the pod's business
	}
	d.events.emit(pod, corev1.EventTypeWarning, pe.Reason, err.Error())
}

func (d *Daemon) del(ctx context.Context, req *cni.Request) error {
	d.gcMu.RLock()
	defer d.gcMu.RUnlock()
	return shim.DelFromCache(ctx, d.registry, d.store, req)
}

func (d *Daemon) check(ctx context.Context, req *cni.Request) error {
	if _, err := shim.ParseConf(req.Config); err != nil {
		return err
	}
	unlock, err := d.store.Lock(req.ContainerID, req.IfName)
	if err != nil {
		return cni.Errorf(types.ErrIOFailure, "%v", err)
	}
	defer unlock(false)
	e, err := d.store.Read(req.ContainerID, req.IfName)
	if errors.Is(err, os.ErrNotExist) {
		return cni.Errorf(types.ErrUnknownContainer, "container %s (%s): no attachments recorded", req.ContainerID, req.IfName)
	}
	if err != nil {
		return cni.Errorf(types.ErrIOFailure, "%v", err)
	}
	e.Netns = req.Netns
	e.Path = req.Path
	return d.runner.Check(ctx, e)
}

// statusCommand answers STATUS: not ready (code 50) until the cluster
// network config and the readiness indicator file exist; then the cluster
// network's own STATUS (spec 1.1.0 plugins).
func (d *Daemon) statusCommand(ctx context.Context, req *cni.Request) error {
	if err := d.notReady(); err != nil {
		return cni.Errorf(cni.ErrNotReady, "knit: %v", err)
	}
	conf, err := shim.ParseConf(req.Config)
	if err != nil {
		return err
	}
	_, n, err := d.resolveNamed(d.cfg.ClusterNetwork, conf.CNIVersion)
	if err != nil {
		return cni.Errorf(cni.ErrNotReady, "knit: cluster network: %v", err)
	}
	if err := n.Status(ctx, d.registry, req.Path); err != nil {
		return fmt.Errorf("cluster network %s: %w", n.Name, err)
	}
	return nil
}
