// Command knitctl is knit's node tool. `knitctl nmstate show` prints the
// node's network state as nmstate YAML; `knitctl nmstate apply FILE`
// applies an nmstate desired state with the same engine knitd uses for
// NodeNetworkConfigurationPolicies — verified, probed and rolled back on
// failure — on a node with or without Kubernetes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/knit-cni/knit/pkg/netns"
	"github.com/knit-cni/knit/pkg/nmstate"
)

const usage = `usage:
  knitctl nmstate show [-netns PATH]
  knitctl nmstate apply [-netns PATH] [-no-probe] [-probe-timeout 5s] FILE|-
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "knitctl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) < 2 || args[0] != "nmstate" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("knitctl nmstate "+args[1], flag.ContinueOnError)
	nsPath := fs.String("netns", "", "act on this network namespace instead of the current one")
	noProbe := fs.Bool("no-probe", false, "apply: skip the default-gateway probe")
	probeTimeout := fs.Duration("probe-timeout", 5*time.Second, "apply: how long the gateway has to answer")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	eng, closeFn, err := engine(*nsPath)
	if err != nil {
		return err
	}
	defer closeFn()
	switch args[1] {
	case "show":
		return show(eng, out)
	case "apply":
		if fs.NArg() != 1 {
			return errors.New(usage)
		}
		var probes []nmstate.Probe
		if !*noProbe {
			probes = append(probes, eng.GatewayProbe(*probeTimeout))
		}
		return apply(ctx, eng, fs.Arg(0), probes, out)
	}
	return errors.New(usage)
}

func engine(path string) (*nmstate.Engine, func(), error) {
	var (
		ns  *netns.NS
		err error
	)
	if path == "" {
		ns, err = netns.Current()
	} else {
		ns, err = netns.Open(path)
	}
	if err != nil {
		return nil, nil, err
	}
	h, err := ns.Handle()
	if err != nil {
		ns.Close()
		return nil, nil, err
	}
	return &nmstate.Engine{NS: ns, NL: h}, func() { h.Close(); ns.Close() }, nil
}

func show(eng *nmstate.Engine, out io.Writer) error {
	s, err := eng.Read()
	if err != nil {
		return err
	}
	b, err := yaml.Marshal(s)
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	return err
}

func apply(ctx context.Context, eng *nmstate.Engine, file string, probes []nmstate.Probe, out io.Writer) error {
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return err
	}
	desired, err := nmstate.Parse(data)
	if err != nil {
		return err
	}
	if dns, ok := eng.DNSProbe(desired, 5*time.Second); ok && len(probes) > 0 {
		probes = append(probes, dns)
	}
	start := time.Now()
	if err := eng.Apply(ctx, desired, probes...); err != nil {
		return err
	}
	fmt.Fprintf(out, "applied and verified in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
