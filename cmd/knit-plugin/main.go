// Command knit-plugin is the multi-call binary behind every knit CNI plugin:
// `make build` links it into bin/ under each CNI type name (bridge,
// macvlan, host-local, ...), and it serves the plugin named by argv[0].
// Called as knit-plugin, `knit-plugin list` prints those names. Called as
// dhcp with the argument daemon, it runs the dhcp plugin's daemon. Called
// as link.HelperName, it is a plugin's link removal helper (see
// link.Remove).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/link"
	"github.com/knit-cni/knit/plugins/builtin"
	"github.com/knit-cni/knit/plugins/dhcp"
)

func main() {
	if filepath.Base(os.Args[0]) == link.HelperName {
		os.Exit(link.HelperMain(os.Args[1:]))
	}
	reg := builtin.Registry()
	if filepath.Base(os.Args[0]) == "knit-plugin" {
		if len(os.Args) == 2 && os.Args[1] == "list" {
			fmt.Println(strings.Join(reg.Names(), "\n"))
			return
		}
		fmt.Fprintln(os.Stderr, "usage: knit-plugin list\ninstall this binary under a CNI type name (see `make build`) to run that plugin")
		os.Exit(2)
	}
	if filepath.Base(os.Args[0]) == "dhcp" && len(os.Args) > 1 && os.Args[1] == "daemon" {
		os.Exit(dhcp.DaemonMain(os.Args[2:], os.Stderr))
	}
	// A plugin process exits right after its call: links it deletes are
	// finished off by a helper process, which this binary serves.
	cni.MainContext(link.WithHelperProcess(context.Background()), reg)
}
