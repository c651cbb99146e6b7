// Package nodenet is knit's node network agent: it enacts
// NodeNetworkConfigurationPolicies on its node through the nmstate engine
// (verify, probe, roll back), reports enactments and policy conditions the
// way kubernetes-nmstate does, and keeps the node's NodeNetworkState fresh.
package nodenet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	api "github.com/knit-cni/knit/api/nmstate"
	"github.com/knit-cni/knit/pkg/nmstate"
)

// Labels kubernetes-nmstate puts on enactments.
const (
	LabelPolicy = "nmstate.io/policy"
	LabelNode   = "nmstate.io/node"
)

// Agent reconciles policies for one node.
type Agent struct {
	// Client reads through the informer cache; APIReader goes to the API
	// server for the reads that must not be stale (slot counting, status
	// aggregation) and doubles as the API server probe.
	Client    client.Client
	APIReader client.Reader
	NodeName  string
	Engine    *nmstate.Engine
	// ProbeTimeout bounds each probe after a change (default 5 s).
	ProbeTimeout time.Duration
	// Retry is how soon a policy waiting for a maxUnavailable slot is
	// looked at again (default 1 s).
	Retry time.Duration
	Log   *slog.Logger
	Now   func() time.Time
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Agent) log() *slog.Logger {
	if a.Log == nil {
		return slog.Default()
	}
	return a.Log
}

// Reconcile handles one policy by name. A policy (or node) deleted while
// it is being handled is not an error: its enactment goes with it.
func (a *Agent) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := a.reconcile(ctx, req)
	return res, client.IgnoreNotFound(err)
}

func (a *Agent) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var policy api.NodeNetworkConfigurationPolicy
	if err := a.Client.Get(ctx, req.NamespacedName, &policy); err != nil {
		// A deleted policy's enactments go with it (owner reference).
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	var node corev1.Node
	if err := a.Client.Get(ctx, types.NamespacedName{Name: a.NodeName}, &node); err != nil {
		return reconcile.Result{}, fmt.Errorf("own node %s: %w", a.NodeName, err)
	}
	if !labels.SelectorFromSet(policy.Spec.NodeSelector).Matches(labels.Set(node.Labels)) {
		if err := a.deleteEnactment(ctx, policy.Name); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, a.updatePolicyStatus(ctx, policy.Name)
	}
	enactment, err := a.ensureEnactment(ctx, &policy)
	if err != nil {
		return reconcile.Result{}, err
	}
	if done(enactment, &policy) {
		return reconcile.Result{}, a.updatePolicyStatus(ctx, policy.Name)
	}
	res, err := a.enact(ctx, &policy)
	if uerr := a.updatePolicyStatus(ctx, policy.Name); uerr != nil {
		err = errors.Join(err, uerr)
	}
	return res, err
}

// done: this generation of the policy was already enacted here,
// successfully or not (a failed one is retried when the policy changes).
func done(e *api.NodeNetworkConfigurationEnactment, p *api.NodeNetworkConfigurationPolicy) bool {
	c, ok := trueCondition(e.Status.Conditions)
	return e.Status.PolicyGeneration == p.Generation && ok && (c.Type == api.Available || c.Type == api.Failing)
}

func enactmentName(node, policy string) string { return node + "." + policy }

func (a *Agent) ensureEnactment(ctx context.Context, p *api.NodeNetworkConfigurationPolicy) (*api.NodeNetworkConfigurationEnactment, error) {
	var e api.NodeNetworkConfigurationEnactment
	key := types.NamespacedName{Name: enactmentName(a.NodeName, p.Name)}
	// Straight from the API server: an informer on enactments would be
	// started (and waited for) on first use, and they are few.
	err := a.APIReader.Get(ctx, key, &e)
	if err == nil {
		return &e, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	e = api.NodeNetworkConfigurationEnactment{ObjectMeta: metav1.ObjectMeta{
		Name:   key.Name,
		Labels: map[string]string{LabelPolicy: p.Name, LabelNode: a.NodeName},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: api.V1.String(), Kind: "NodeNetworkConfigurationPolicy",
			Name: p.Name, UID: p.UID}},
	}}
	if err := a.Client.Create(ctx, &e); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating enactment %s: %w", key.Name, err)
	}
	return &e, nil
}

func (a *Agent) deleteEnactment(ctx context.Context, policy string) error {
	e := &api.NodeNetworkConfigurationEnactment{ObjectMeta: metav1.ObjectMeta{Name: enactmentName(a.NodeName, policy)}}
	return client.IgnoreNotFound(a.Client.Delete(ctx, e))
}

// setEnactment writes the enactment's status, retrying on conflicts.
func (a *Agent) setEnactment(ctx context.Context, p *api.NodeNetworkConfigurationPolicy, t api.ConditionType,
	reason api.ConditionReason, msg string) error {
	key := types.NamespacedName{Name: enactmentName(a.NodeName, p.Name)}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var e api.NodeNetworkConfigurationEnactment
		if err := a.APIReader.Get(ctx, key, &e); err != nil {
			return err
		}
		e.Status.Conditions = setConditions(e.Status.Conditions, enactmentTypes, t, reason, msg, a.now())
		e.Status.DesiredState = p.Spec.DesiredState
		e.Status.PolicyGeneration = p.Generation
		return a.Client.Status().Update(ctx, &e)
	})
}

// enact applies the policy on this node within a maxUnavailable slot.
func (a *Agent) enact(ctx context.Context, p *api.NodeNetworkConfigurationPolicy) (reconcile.Result, error) {
	desired, perr := nmstate.Parse(p.Spec.DesiredState.Raw)
	if perr == nil && len(p.Spec.Capture) > 0 {
		perr = errors.New("capture: not supported by knit yet; write the values into desiredState")
	}
	if perr != nil {
		return reconcile.Result{}, a.setEnactment(ctx, p, api.Failing, api.FailedToConfigure, perr.Error())
	}
	got, err := a.takeSlot(ctx, p.Name)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !got {
		a.log().Debug("waiting for a maxUnavailable slot", "policy", p.Name)
		err := a.setEnactment(ctx, p, api.Pending, api.MaxUnavailableLimitReached,
			"maximum number of nodes configuring this policy at once reached")
		return reconcile.Result{RequeueAfter: a.retry()}, err
	}
	if err := a.setEnactment(ctx, p, api.Progressing, api.ConfigurationProgressing, "applying desired state"); err != nil {
		return reconcile.Result{}, errors.Join(err, a.releaseSlot(context.WithoutCancel(ctx), p.Name))
	}
	start := a.now()
	probes := a.probes()
	if dns, ok := a.Engine.DNSProbe(desired, a.probeTimeout()); ok {
		probes = append(probes, dns)
	}
	applyErr := a.Engine.Apply(ctx, desired, probes...)
	// The slot goes back before the result is reported, so the policy is
	// never Available while a node still counts as unavailable.
	if err := a.releaseSlot(context.WithoutCancel(ctx), p.Name); err != nil {
		a.log().Error("releasing maxUnavailable slot", "policy", p.Name, "err", err)
	}
	if applyErr != nil {
		a.log().Warn("policy failed", "policy", p.Name, "err", applyErr)
		return reconcile.Result{}, a.setEnactment(ctx, p, api.Failing, api.FailedToConfigure, applyErr.Error())
	}
	a.log().Info("policy enacted", "policy", p.Name, "took", a.now().Sub(start))
	return reconcile.Result{}, a.setEnactment(ctx, p, api.Available, api.SuccessfullyConfigured, "successfully reconciled")
}

func (a *Agent) retry() time.Duration {
	if a.Retry == 0 {
		return time.Second
	}
	return a.Retry
}

func (a *Agent) probeTimeout() time.Duration {
	if a.ProbeTimeout == 0 {
		return 5 * time.Second
	}
	return a.ProbeTimeout
}

// probes are kubernetes-nmstate's: the default gateway answers and the API
// server answers (plus DNS when the policy configures servers, added by
// enact). Each runs only if it passed before the change.
func (a *Agent) probes() []nmstate.Probe {
	api := nmstate.Probe{Name: "api-server", Run: func(ctx context.Context) error {
		deadline := time.Now().Add(a.probeTimeout())
		for {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			var n corev1.Node
			err := a.APIReader.Get(cctx, types.NamespacedName{Name: a.NodeName}, &n)
			cancel()
			if err == nil || time.Now().After(deadline) {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}}
	return []nmstate.Probe{a.Engine.GatewayProbe(a.probeTimeout()), api}
}
