// Package builtin lists every plugin type of knit's multi-call binary by
// CNI type name: the in-process types plus dhcp.
package builtin

import (
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/plugins/dhcp"
	"github.com/knit-cni/knit/plugins/inprocess"
)

// Registry returns a registry of every built-in plugin type.
func Registry() cni.Registry {
	r := inprocess.Registry()
	r["dhcp"] = dhcp.Plugin{}
	return r
}
