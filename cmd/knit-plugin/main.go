// Command knit-plugin is the multi-call binary behind every knit CNI plugin:
// `make build` links it into bin/ under each CNI type name (bridge,
// macvlan, host-local, ...), and it serves the plugin named by argv[0].
// Called as knit-plugin, `knit-plugin list` prints those names. Called as
// dhcp with the argument daemon, it runs the dhcp plugin's daemon.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/plugins/builtin"
	"github.com/knit-cni/knit/plugins/dhcp"
)

func main() {
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
	cni.Main(reg)
}
