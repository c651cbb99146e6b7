package cni

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Delegator runs another plugin (typically IPAM) for a request. The delegated
// plugin gets the whole config (the spec says IPAM plugins receive the
// parent's config) and the request's environment with the command replaced.
type Delegator interface {
	Delegate(ctx context.Context, pluginType string, req *Request) (types.Result, error)
}

// Registry maps plugin type names to in-process implementations. Types it
// does not hold are exec'd from the request's CNI_PATH, exactly as a runtime
// would run them.
type Registry map[string]Plugin

// Lookup returns the built-in plugin for a type.
func (r Registry) Lookup(pluginType string) (Plugin, bool) {
	p, ok := r[pluginType]
	return p, ok
}

// Delegate runs pluginType for req: in-process when built in, else exec'd.
// ADD returns the result in the newest version.
func (r Registry) Delegate(ctx context.Context, pluginType string, req *Request) (types.Result, error) {
	if p, ok := r[pluginType]; ok {
		sub := *req
		sub.Delegate = r
		return Call(ctx, p, &sub)
	}
	return Exec(ctx, pluginType, req)
}

// Call dispatches req to p by command. GC and STATUS go to the optional
// interfaces and are no-ops for plugins that hold no state.
func Call(ctx context.Context, p Plugin, req *Request) (types.Result, error) {
	switch req.Command {
	case CmdAdd:
		return p.Add(ctx, req)
	case CmdDel:
		return nil, p.Del(ctx, req)
	case CmdCheck:
		return nil, p.Check(ctx, req)
	case CmdGC:
		gc, ok := p.(GarbageCollector)
		if !ok {
			return nil, nil
		}
		valid, err := ValidAttachments(req.Config)
		if err != nil {
			return nil, err
		}
		return nil, gc.GC(ctx, req, valid)
	case CmdStatus:
		if s, ok := p.(StatusReporter); ok {
			return nil, s.Status(ctx, req)
		}
		return nil, nil
	}
	return nil, Errorf(types.ErrInvalidEnvironmentVariables, "unknown CNI_COMMAND %q", req.Command)
}

// Exec runs an external plugin binary found in req.Path with the CNI
// protocol. ADD's result is converted to the newest version.
func Exec(ctx context.Context, pluginType string, req *Request) (types.Result, error) {
	path, err := invoke.FindInPath(pluginType, req.Path)
	if err != nil {
		return nil, Errorf(types.ErrInvalidNetworkConfig, "plugin type %q: %w", pluginType, err)
	}
	args := execArgs{Args: &invoke.Args{
		Command:       string(req.Command),
		ContainerID:   req.ContainerID,
		NetNS:         req.Netns,
		PluginArgsStr: req.Args,
		IfName:        req.IfName,
		Path:          strings.Join(req.Path, string(os.PathListSeparator)),
	}, netnsOverride: req.NetnsOverride}
	if req.Command != CmdAdd {
		err := invoke.ExecPluginWithoutResult(ctx, path, req.Config, args, nil)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", pluginType, req.Command, err)
		}
		return nil, nil
	}
	res, err := invoke.ExecPluginWithResult(ctx, path, req.Config, args, nil)
	if err != nil {
		return nil, fmt.Errorf("%s ADD: %w", pluginType, err)
	}
	return current.NewResultFromResult(res)
}

// execArgs adds CNI_NETNS_OVERRIDE, which invoke.Args does not carry, to
// a delegate's environment.
type execArgs struct {
	*invoke.Args
	netnsOverride bool
}

func (a execArgs) AsEnv() []string {
	env := a.Args.AsEnv()
	if a.netnsOverride {
		env = append(env, "CNI_NETNS_OVERRIDE=1")
	}
	return env
}

// AsCurrent converts any result to the newest version, which plugins edit.
func AsCurrent(res types.Result) (*current.Result, error) {
	if res == nil {
		return nil, fmt.Errorf("delegate returned no result")
	}
	return current.NewResultFromResult(res)
}
