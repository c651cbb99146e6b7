// Command knit is the CNI plugin the container runtime calls for the knit
// network (type "knit" in 00-knit.conflist). It is a thin shim: each call
// is forwarded to knitd, the node daemon, over its unix socket. It links no
// Kubernetes client and no plugin code, so it starts fast; when knitd is
// down, DEL still completes from the node cache by exec'ing the delegate
// plugins from CNI_PATH.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/shim"
)

func main() {
	if req, ok := fastRequest(os.Getenv); ok {
		os.Exit(fast(req))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	run := func(cmd cni.Command) func(*skel.CmdArgs) error {
		return func(a *skel.CmdArgs) error {
			res, err := shim.Handle(ctx, cni.RequestFromSkel(cmd, a))
			if err != nil {
				return shim.WireError(err)
			}
			return printResult(cmd, res)
		}
	}
	funcs := skel.CNIFuncs{Add: run(cni.CmdAdd), Del: run(cni.CmdDel), Check: run(cni.CmdCheck),
		GC: run(cni.CmdGC), Status: run(cni.CmdStatus)}
	if e := skel.PluginMainFuncsWithError(funcs, cni.VersionInfo(), "knit meta-plugin shim (talks to knitd)"); e != nil {
		stop()
		os.Exit(printError(e))
	}
}

// fastRequest recognises the calls that decide pod start-up and teardown
// latency — ADD and DEL with a complete, valid environment — and builds
// their request without skel; knitd checks the config. Anything else
// (VERSION, CHECK, GC, STATUS, a missing or bad variable) goes through
// skel, which produces the spec's errors for it. The check that CNI_NETNS
// is not the plugin's own namespace, which skel makes after the call, is
// made before any work: by knitd, or by the shim when it tears a container
// down from the cache itself.
func fastRequest(getenv func(string) string) (*cni.Request, bool) {
	cmd := cni.Command(getenv("CNI_COMMAND"))
	if cmd != cni.CmdAdd && cmd != cni.CmdDel {
		return nil, false
	}
	r := &cni.Request{Command: cmd, ContainerID: getenv("CNI_CONTAINERID"), Netns: getenv("CNI_NETNS"),
		IfName: getenv("CNI_IFNAME"), Args: getenv("CNI_ARGS")}
	path := getenv("CNI_PATH")
	if path == "" || (cmd == cni.CmdAdd && r.Netns == "") || getenv("CNI_NETNS_OVERRIDE") != "" {
		return nil, false
	}
	if utils.ValidateContainerID(r.ContainerID) != nil || utils.ValidateInterfaceName(r.IfName) != nil {
		return nil, false
	}
	r.Path = filepath.SplitList(path)
	return r, true
}

// fast serves an ADD or DEL from fastRequest and returns the exit code.
func fast(req *cni.Request) int {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return printError(types.NewError(types.ErrIOFailure, fmt.Sprintf("error reading from stdin: %v", err), ""))
	}
	req.Config = data
	// No signal context: SIGTERM ends the process, and knitd finishes or
	// rolls back the call on its own (see shim.Serve).
	res, err := shim.Handle(context.Background(), req)
	if err != nil {
		return printError(shim.WireError(err))
	}
	if err := printResult(req.Command, res); err != nil {
		return printError(shim.WireError(err))
	}
	return 0
}

func printResult(cmd cni.Command, res []byte) error {
	if cmd != cni.CmdAdd {
		return nil
	}
	_, err := os.Stdout.Write(append(res, '\n'))
	return err
}

// printError prints e as the spec's error output and returns the exit
// code.
func printError(e *types.Error) int {
	if err := e.Print(); err != nil {
		fmt.Fprintf(os.Stderr, "knit: printing error: %v\n", err)
	}
	return 1
}
