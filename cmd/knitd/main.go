// Command knitd is knit's node daemon (see pkg/knitd). It reads
// /etc/knit/knitd.json (or -config), lets flags override single keys, and
// serves the knit shim on its unix socket until SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/knit-cni/knit/pkg/knitd"
	"github.com/knit-cni/knit/plugins/inprocess"
)

func main() {
	tuneGC()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "knitd:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == "install" {
		return install(os.Args[2:])
	}
	path := flag.String("config", knitd.DefaultConfigFile, "config file (JSON)")
	var over knitd.Config
	flag.StringVar(&over.NodeName, "node-name", "", "node name (default $NODE_NAME)")
	flag.StringVar(&over.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster)")
	flag.StringVar(&over.Socket, "socket", "", "unix socket the knit shim talks to")
	flag.StringVar(&over.ConfDir, "conf-dir", "", "CNI conf dir")
	flag.StringVar(&over.BinDir, "bin-dir", "", "CNI bin dir")
	flag.StringVar(&over.CacheDir, "cache-dir", "", "node attachment cache dir")
	flag.StringVar(&over.ClusterNetwork, "cluster-network", "", "cluster network (NAD, config name or path)")
	flag.StringVar(&over.MetricsAddr, "metrics-addr", "", "address of /metrics, /healthz, /readyz")
	flag.StringVar(&over.LogLevel, "log-level", "", "debug, info, warn or error")
	flag.StringVar(&over.LogFile, "log-file", "", "log file (default stderr)")
	pprof := flag.Bool("pprof", false, "serve /debug/pprof on the metrics address")
	flag.Parse()

	cfg, warnings, err := knitd.LoadConfig(*path)
	if err != nil {
		return err
	}
	merge(cfg, &over)
	if *pprof {
		cfg.EnablePprof = true
	}
	cfg.SetDefaults()
	log, closeLog, err := logger(cfg)
	if err != nil {
		return err
	}
	defer closeLog()
	for _, w := range warnings {
		log.Warn(w, "config", *path)
	}
	d, err := knitd.New(cfg, knitd.Options{Registry: inprocess.Registry(), Logger: log})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return d.Run(ctx)
}

// merge applies the flags that were set over the file's values.
func merge(cfg, over *knitd.Config) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.NodeName, over.NodeName)
	set(&cfg.Kubeconfig, over.Kubeconfig)
	set(&cfg.Socket, over.Socket)
	set(&cfg.ConfDir, over.ConfDir)
	set(&cfg.BinDir, over.BinDir)
	set(&cfg.CacheDir, over.CacheDir)
	set(&cfg.ClusterNetwork, over.ClusterNetwork)
	set(&cfg.MetricsAddr, over.MetricsAddr)
	set(&cfg.LogLevel, over.LogLevel)
	set(&cfg.LogFile, over.LogFile)
}

func logger(cfg *knitd.Config) (*slog.Logger, func(), error) {
	level, err := knitd.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, nil, err
	}
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if cfg.LogFile != "" {
		f, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("log file: %w", err)
		}
		w, closeFn = f, func() { f.Close() }
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), closeFn, nil
}

// install is the DaemonSet init step: `knitd install -from /opt/knit/bin`.
func install(args []string) error {
	fs := flag.NewFlagSet("install", flag.ExitOnError)
	from := fs.String("from", "/opt/knit/bin", "directory holding knit, knit-plugin and its links")
	path := fs.String("config", knitd.DefaultConfigFile, "knitd config file (bin and conf dirs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, _, err := knitd.LoadConfig(*path)
	if err != nil {
		return err
	}
	cfg.SetDefaults()
	names, err := knitd.Install(*from, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("installed into %s: %v\n", cfg.BinDir, names)
	return nil
}

// tuneGC trades a little CPU for a smaller heap: knitd is a node daemon
// whose live heap is a few MiB (informer caches of one node's pods and the
// NADs), so collecting at 50% growth instead of 100% keeps its resident
// memory low. GOGC and GOMEMLIMIT in the environment win.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(40 << 20)
	}
}
