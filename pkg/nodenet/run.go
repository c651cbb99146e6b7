package nodenet

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	api "github.com/knit-cni/knit/api/nmstate"
	"github.com/knit-cni/knit/pkg/nmstate"
)

// Options configure the node agent.
type Options struct {
	NodeName string
	Engine   *nmstate.Engine
	// HealthAddr serves /healthz and /readyz ("0" disables).
	HealthAddr string
	// MetricsAddr serves Prometheus metrics ("0" disables).
	MetricsAddr string
	Log         *slog.Logger
}

// Scheme knows core kinds and the nmstate kinds.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := api.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Run starts the agent (policies) and the reporter (NodeNetworkState) and
// blocks until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: orDefault(o.MetricsAddr, "0")},
		HealthProbeBindAddress: orDefault(o.HealthAddr, "0"),
	})
	if err != nil {
		return fmt.Errorf("controller manager: %w", err)
	}
	if err := Setup(mgr, o); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Setup registers the agent and reporter with a manager.
func Setup(mgr manager.Manager, o Options) error {
	agent := &Agent{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), NodeName: o.NodeName,
		Engine: o.Engine, Log: o.Log}
	// A label change on this node can make policies start or stop matching.
	ownNode := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		if obj.GetName() != o.NodeName {
			return nil
		}
		var list api.NodeNetworkConfigurationPolicyList
		if err := mgr.GetClient().List(ctx, &list); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, p := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
		}
		return reqs
	})
	// One agent per process in production; tests run several, so the
	// process-wide controller name check is off.
	skip := true
	err := ctrl.NewControllerManagedBy(mgr).Named("nncp").
		WithOptions(controller.Options{SkipNameValidation: &skip}).
		For(&api.NodeNetworkConfigurationPolicy{}).
		Watches(&corev1.Node{}, ownNode).
		Complete(agent)
	if err != nil {
		return fmt.Errorf("policy controller: %w", err)
	}
	rep := &Reporter{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), NodeName: o.NodeName, Engine: o.Engine, Log: o.Log,
		Synced: mgr.GetCache().WaitForCacheSync}
	if err := mgr.Add(rep); err != nil {
		return err
	}
	if o.HealthAddr != "" && o.HealthAddr != "0" {
		if err := mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil }); err != nil {
			return err
		}
	}
	return nil
}
