// Package ipvlan is a placeholder until the plugin is written.
package ipvlan

import (
	"context"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
)

// Plugin implements cni.Plugin.
type Plugin struct{}

func (Plugin) Add(context.Context, *cni.Request) (types.Result, error) {
	return nil, cni.Errorf(types.ErrInternal, "ipvlan: not implemented")
}
func (Plugin) Del(context.Context, *cni.Request) error   { return nil }
func (Plugin) Check(context.Context, *cni.Request) error { return nil }
