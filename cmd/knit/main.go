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
	"os"
	"os/signal"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/shim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	run := func(cmd cni.Command) func(*skel.CmdArgs) error {
		return func(a *skel.CmdArgs) error {
			res, err := shim.Handle(ctx, cni.RequestFromSkel(cmd, a))
			if err != nil {
				return shim.WireError(err)
			}
			if cmd == cni.CmdAdd {
				if _, err := os.Stdout.Write(append(res, '\n')); err != nil {
					return shim.WireError(err)
				}
			}
			return nil
		}
	}
	funcs := skel.CNIFuncs{Add: run(cni.CmdAdd), Del: run(cni.CmdDel), Check: run(cni.CmdCheck),
		GC: run(cni.CmdGC), Status: run(cni.CmdStatus)}
	if e := skel.PluginMainFuncsWithError(funcs, cni.VersionInfo(), "knit meta-plugin shim (talks to knitd)"); e != nil {
		if err := e.Print(); err != nil {
			fmt.Fprintf(os.Stderr, "knit: printing error: %v\n", err)
		}
		os.Exit(1)
	}
}
