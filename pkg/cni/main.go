package cni

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// Main is the main function of a plugin binary. It picks the plugin from the
// name the binary was called by (one multi-call binary is installed under
// every CNI type name) and serves one CNI call with skel, which validates the
// environment and the config's version the way the spec requires.
func Main(reg Registry) {
	MainContext(context.Background(), reg)
}

// MainContext is Main with a base context for the call, carrying values
// the binary's main sets up (see link.WithHelperProcess).
func MainContext(ctx context.Context, reg Registry) {
	name := filepath.Base(os.Args[0])
	p, ok := reg.Lookup(name)
	if !ok {
		fmt.Fprintf(os.Stderr, "knit: no plugin named %q; known: %s\n", name, strings.Join(reg.Names(), " "))
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	about := fmt.Sprintf("knit %s plugin", name)
	if e := skel.PluginMainFuncsWithError(funcs(ctx, reg, p), VersionInfo(), about); e != nil {
		if err := e.Print(); err != nil {
			fmt.Fprintf(os.Stderr, "knit: printing error: %v\n", err)
		}
		os.Exit(1)
	}
}

// Names lists the registry's types, sorted.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func funcs(ctx context.Context, reg Registry, p Plugin) skel.CNIFuncs {
	run := func(cmd Command) func(*skel.CmdArgs) error {
		return func(a *skel.CmdArgs) error {
			req := RequestFromSkel(cmd, a)
			req.Delegate = reg
			res, err := Call(ctx, p, req)
			if err != nil {
				return AsTypesError(err)
			}
			if cmd != CmdAdd {
				return nil
			}
			return PrintResult(res, req.Config)
		}
	}
	return skel.CNIFuncs{Add: run(CmdAdd), Del: run(CmdDel), Check: run(CmdCheck), GC: run(CmdGC), Status: run(CmdStatus)}
}

// RequestFromSkel turns skel's parsed environment into a Request.
func RequestFromSkel(cmd Command, a *skel.CmdArgs) *Request {
	var path []string
	if a.Path != "" {
		path = filepath.SplitList(a.Path)
	}
	return &Request{Command: cmd, ContainerID: a.ContainerID, Netns: a.Netns, IfName: a.IfName,
		Args: a.Args, Path: path, Config: a.StdinData, NetnsOverride: IsNetnsOverride(a.NetnsOverride)}
}

// IsNetnsOverride reads CNI_NETNS_OVERRIDE the way skel does.
func IsNetnsOverride(v string) bool {
	return v == "1" || strings.EqualFold(v, "true")
}

// PrintResult writes res to stdout in the config's cniVersion.
func PrintResult(res types.Result, config []byte) error {
	var c NetConf
	if err := ParseConfig(config, &c); err != nil {
		return err
	}
	return types.PrintResult(res, c.CNIVersion)
}
