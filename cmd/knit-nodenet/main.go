// Command knit-nodenet is knit's node network agent, the kubernetes-nmstate
// handler's replacement: it enacts NodeNetworkConfigurationPolicies on its
// node through netlink (verified, probed, rolled back on failure) and keeps
// the node's NodeNetworkState current. It needs no NetworkManager.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/knit-cni/knit/pkg/dhcpclient"
	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nmstate"
	"github.com/knit-cni/knit/pkg/nodenet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		slog.Error("knit-nodenet", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("knit-nodenet", flag.ContinueOnError)
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	resolv := fs.String("resolv-conf", "/etc/resolv.conf", "resolver file dns-resolver manages")
	health := fs.String("health-addr", ":8081", "address serving /healthz and /readyz (0 disables)")
	metrics := fs.String("metrics-addr", "0", "address serving Prometheus metrics (0 disables)")
	dhcpTimeout := fs.Duration("dhcp-timeout", dhcpclient.DefaultTimeout, "time to get a DHCP lease for ipv4.dhcp: true before the apply fails")
	debug := fs.Bool("debug", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodeName == "" {
		return errors.New("-node-name or $NODE_NAME is required")
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	ns, err := netns.Current()
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	eng := &nmstate.Engine{NS: ns, NL: h, ResolvConf: *resolv, Log: log}
	dctx, stopDHCP := context.WithCancel(ctx)
	dhcp := newDHCP(dctx, ns, h, *nodeName, *dhcpTimeout, log)
	// Renewals stop, and are waited for, before the handle closes.
	defer func() { stopDHCP(); dhcp.Wait() }()
	eng.DHCP = dhcp
	log.Info("starting", "node", *nodeName)
	return nodenet.Run(ctx, cfg, nodenet.Options{NodeName: *nodeName, Engine: eng,
		HealthAddr: *health, MetricsAddr: *metrics, Log: log})
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (use -kubeconfig outside a pod): %w", err)
		}
		return cfg, nil
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}
