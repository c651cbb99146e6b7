// Package inprocess lists the plugin types a long-running caller (knitd)
// runs in its own process: every built-in type but dhcp, whose plugin is
// only a client of the dhcp daemon and is exec'd like any other binary —
// leaving it out keeps the DHCP library, net/rpc and gob out of knitd.
package inprocess

import (
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/plugins/bandwidth"
	"github.com/knit-cni/knit/plugins/bridge"
	"github.com/knit-cni/knit/plugins/dummy"
	"github.com/knit-cni/knit/plugins/firewall"
	"github.com/knit-cni/knit/plugins/hostdevice"
	"github.com/knit-cni/knit/plugins/hostlocal"
	"github.com/knit-cni/knit/plugins/ipvlan"
	"github.com/knit-cni/knit/plugins/loopback"
	"github.com/knit-cni/knit/plugins/macvlan"
	"github.com/knit-cni/knit/plugins/portmap"
	"github.com/knit-cni/knit/plugins/ptp"
	"github.com/knit-cni/knit/plugins/sbr"
	"github.com/knit-cni/knit/plugins/static"
	"github.com/knit-cni/knit/plugins/tap"
	"github.com/knit-cni/knit/plugins/tuning"
	"github.com/knit-cni/knit/plugins/vlan"
	"github.com/knit-cni/knit/plugins/vrf"
)

// Registry returns the in-process plugin types by CNI type name.
func Registry() cni.Registry {
	return cni.Registry{
		"bandwidth":   bandwidth.Plugin{},
		"bridge":      bridge.Plugin{},
		"dummy":       dummy.Plugin{},
		"firewall":    firewall.Plugin{},
		"host-device": hostdevice.Plugin{},
		"host-local":  hostlocal.Plugin{},
		"ipvlan":      ipvlan.Plugin{},
		"loopback":    loopback.Plugin{},
		"macvlan":     macvlan.Plugin{},
		"portmap":     portmap.Plugin{},
		"ptp":         ptp.Plugin{},
		"sbr":         sbr.Plugin{},
		"static":      static.Plugin{},
		"tap":         tap.Plugin{},
		"tuning":      tuning.Plugin{},
		"vlan":        vlan.Plugin{},
		"vrf":         vrf.Plugin{},
	}
}
