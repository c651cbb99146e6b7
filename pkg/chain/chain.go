// Package chain executes one network configuration — a single plugin config
// or a conflist — the way a CNI runtime does: ADD runs the plugins in order,
// each getting the previous result as prevResult; DEL runs them in reverse;
// CHECK, GC and STATUS follow the spec's version rules. Every plugin config
// gets the network's name and cniVersion and the runtimeConfig entries its
// capabilities ask for.
//
// knitd uses it for the cluster network and for every secondary attachment;
// the knit shim uses it (with an exec-only delegator) to tear attachments
// down from the node cache when knitd is gone.
package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/knit-cni/knit/pkg/cni"
)

// Network is a parsed network configuration, normalised to a plugin list.
type Network struct {
	Name         string
	CNIVersion   string
	DisableCheck bool
	DisableGC    bool
	Plugins      []*Plugin
}

// Plugin is one plugin object of a network.
type Plugin struct {
	Type         string
	Capabilities map[string]bool
	// conf holds the object's keys as given; execution overrides name,
	// cniVersion, runtimeConfig and prevResult.
	conf map[string]json.RawMessage
}

// listHeader is the part of a conflist knit reads; plugins are decoded one
// by one to name the failing element.
type listHeader struct {
	CNIVersion   string            `json:"cniVersion"`
	Name         string            `json:"name"`
	DisableCheck flexBool          `json:"disableCheck"`
	DisableGC    flexBool          `json:"disableGC"`
	Plugins      []json.RawMessage `json:"plugins"`
}

// flexBool accepts true/false and the strings "true"/"false" (libcni does).
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	switch t := v.(type) {
	case bool:
		*b = flexBool(t)
	case string:
		switch strings.ToLower(t) {
		case "true":
			*b = true
		case "false", "":
			*b = false
		default:
			return fmt.Errorf("%q is not a boolean", t)
		}
	case nil:
		*b = false
	default:
		return fmt.Errorf("%s is not a boolean", data)
	}
	return nil
}

// Parse reads a network configuration: a conflist when it has a "plugins"
// key, else a single plugin config. Decode errors are code 6, structural
// errors code 7 naming the field.
func Parse(data []byte) (*Network, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, cni.Errorf(types.ErrDecodingFailure, "network config: %v", err)
	}
	if top == nil {
		return nil, cni.ConfigError("config", "network config is null")
	}
	if _, ok := top["plugins"]; ok {
		return parseList(data)
	}
	var h listHeader
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fieldDecodeError("", err)
	}
	p, err := parsePlugin("", top)
	if err != nil {
		return nil, err
	}
	return &Network{Name: h.Name, CNIVersion: h.CNIVersion, Plugins: []*Plugin{p}}, nil
}

func parseList(data []byte) (*Network, error) {
	var h listHeader
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fieldDecodeError("", err)
	}
	if len(h.Plugins) == 0 {
		return nil, cni.ConfigError("plugins", "conflist has no plugins")
	}
	n := &Network{Name: h.Name, CNIVersion: h.CNIVersion, DisableCheck: bool(h.DisableCheck), DisableGC: bool(h.DisableGC)}
	for i, raw := range h.Plugins {
		field := fmt.Sprintf("plugins[%d]", i)
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return nil, cni.Errorf(types.ErrDecodingFailure, "%s: not a plugin object", field)
		}
		p, err := parsePlugin(field+".", obj)
		if err != nil {
			return nil, err
		}
		n.Plugins = append(n.Plugins, p)
	}
	return n, nil
}

func parsePlugin(prefix string, obj map[string]json.RawMessage) (*Plugin, error) {
	p := &Plugin{conf: obj}
	if raw, ok := obj["type"]; ok {
		if err := json.Unmarshal(raw, &p.Type); err != nil {
			return nil, cni.Errorf(types.ErrDecodingFailure, "%stype: not a string", prefix)
		}
	}
	if raw, ok := obj["capabilities"]; ok {
		if err := json.Unmarshal(raw, &p.Capabilities); err != nil {
			return nil, cni.Errorf(types.ErrDecodingFailure, "%scapabilities: want an object of booleans: %v", prefix, err)
		}
	}
	if p.Type == "" {
		return nil, cni.ConfigError(prefix+"type", "missing plugin type")
	}
	if strings.ContainsAny(p.Type, "/\\") || p.Type == "." || p.Type == ".." {
		return nil, cni.ConfigError(prefix+"type", "%q is not a plugin name", p.Type)
	}
	return p, nil
}

func fieldDecodeError(prefix string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return cni.Errorf(types.ErrDecodingFailure, "%s%s: cannot decode JSON %s into %s", prefix, te.Field, te.Value, te.Type)
	}
	return cni.Errorf(types.ErrDecodingFailure, "%snetwork config: %v", prefix, err)
}

// HasCapability reports whether any plugin of the network declares cap.
func (n *Network) HasCapability(capability string) bool {
	for _, p := range n.Plugins {
		if p.Capabilities[capability] {
			return true
		}
	}
	return false
}

// Capabilities is the union of the plugins' enabled capabilities.
func (n *Network) Capabilities() map[string]bool {
	caps := map[string]bool{}
	for _, p := range n.Plugins {
		for c, ok := range p.Capabilities {
			if ok {
				caps[c] = true
			}
		}
	}
	return caps
}

// SetPluginKey sets a top-level key in every plugin object (Multus puts
// deviceID and args.cni there).
func (n *Network) SetPluginKey(key string, value any) error {
	raw, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	for _, p := range n.Plugins {
		p.conf[key] = raw
	}
	return nil
}

// MergeCNIArgs merges args into every plugin's "args": {"cni": {...}}
// object (the annotation's cni-args), keeping other keys of "args".
func (n *Network) MergeCNIArgs(args map[string]any) error {
	for i, p := range n.Plugins {
		outer := map[string]json.RawMessage{}
		if raw, ok := p.conf["args"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &outer); err != nil {
				return cni.ConfigError(fmt.Sprintf("plugins[%d].args", i), "not an object: %v", err)
			}
		}
		inner := map[string]any{}
		if raw, ok := outer["cni"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &inner); err != nil {
				return cni.ConfigError(fmt.Sprintf("plugins[%d].args.cni", i), "not an object: %v", err)
			}
		}
		for k, v := range args {
			inner[k] = v
		}
		b, err := json.Marshal(inner)
		if err != nil {
			return fmt.Errorf("encoding cni-args: %w", err)
		}
		outer["cni"] = b
		if p.conf["args"], err = json.Marshal(outer); err != nil {
			return fmt.Errorf("encoding args: %w", err)
		}
	}
	return nil
}

// Marshal encodes the network in conflist form (what the node cache keeps).
func (n *Network) Marshal() ([]byte, error) {
	plugins := make([]map[string]json.RawMessage, len(n.Plugins))
	for i, p := range n.Plugins {
		plugins[i] = p.conf
	}
	return json.Marshal(struct {
		CNIVersion   string                       `json:"cniVersion"`
		Name         string                       `json:"name"`
		DisableCheck bool                         `json:"disableCheck,omitempty"`
		DisableGC    bool                         `json:"disableGC,omitempty"`
		Plugins      []map[string]json.RawMessage `json:"plugins"`
	}{n.CNIVersion, n.Name, n.DisableCheck, n.DisableGC, plugins})
}

// atLeast reports whether the network's version is v or newer; an
// unparsable version is treated as old.
func (n *Network) atLeast(v string) bool {
	ok, err := version.GreaterThanOrEqualTo(n.CNIVersion, v)
	return err == nil && ok
}

// pluginConf builds the stdin config of one plugin: the plugin object with
// the network's name and version, the runtimeConfig entries its
// capabilities allow, prevResult, and extra keys (GC's attachment list).
// capabilities itself is consumed here and not passed on.
func (n *Network) pluginConf(p *Plugin, rc map[string]any, prev []byte, extra map[string]any) ([]byte, error) {
	m := make(map[string]json.RawMessage, len(p.conf)+4)
	for k, v := range p.conf {
		m[k] = v
	}
	delete(m, "capabilities")
	delete(m, "prevResult")
	delete(m, "runtimeConfig")
	set := func(k string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", k, err)
		}
		m[k] = b
		return nil
	}
	if err := set("name", n.Name); err != nil {
		return nil, err
	}
	if err := set("cniVersion", n.CNIVersion); err != nil {
		return nil, err
	}
	if filtered := filterRuntimeConfig(p, rc); len(filtered) > 0 {
		if err := set("runtimeConfig", filtered); err != nil {
			return nil, err
		}
	}
	if len(prev) > 0 {
		m["prevResult"] = json.RawMessage(prev)
	}
	for k, v := range extra {
		if err := set(k, v); err != nil {
			return nil, err
		}
	}
	return json.Marshal(m)
}

func filterRuntimeConfig(p *Plugin, rc map[string]any) map[string]any {
	var out map[string]any
	for k, v := range rc {
		if p.Capabilities[k] {
			if out == nil {
				out = map[string]any{}
			}
			out[k] = v
		}
	}
	return out
}

// Runtime is the per-call part of a request: who and where.
type Runtime struct {
	ContainerID string
	Netns       string
	IfName      string
	Args        string
	Path        []string
}

func (rt Runtime) request(cmd cni.Command, conf []byte) *cni.Request {
	return &cni.Request{Command: cmd, ContainerID: rt.ContainerID, Netns: rt.Netns, IfName: rt.IfName,
		Args: rt.Args, Path: rt.Path, Config: conf}
}

// PluginError says which plugin of a network failed; the cause keeps its
// CNI error code.
type PluginError struct {
	Index int
	Type  string
	Err   error
}

func (e *PluginError) Error() string { return fmt.Sprintf("plugin %s: %v", e.Type, e.Err) }
func (e *PluginError) Unwrap() error { return e.Err }

// EncodeResult prints a result in the network's version (what prevResult
// and the cache hold).
func (n *Network) EncodeResult(res types.Result) ([]byte, error) {
	r, err := res.GetAsVersion(n.CNIVersion)
	if err != nil {
		return nil, cni.Errorf(types.ErrIncompatibleCNIVersion, "converting result to %s: %v", n.CNIVersion, err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding result: %w", err)
	}
	return b, nil
}

// DecodeResult parses a result printed in the network's version.
func (n *Network) DecodeResult(raw []byte) (types.Result, error) {
	res, err := version.NewResult(n.CNIVersion, raw)
	if err != nil {
		return nil, cni.Errorf(types.ErrDecodingFailure, "cached result: %v", err)
	}
	return res, nil
}

// Add runs ADD through the plugins in order and returns the last result.
// It does not undo a partial chain: callers run Del, which every plugin
// must tolerate for what it never created.
func (n *Network) Add(ctx context.Context, d cni.Delegator, rt Runtime, rc map[string]any) (types.Result, error) {
	var prev []byte
	var res types.Result
	for i, p := range n.Plugins {
		conf, err := n.pluginConf(p, rc, prev, nil)
		if err != nil {
			return nil, err
		}
		r, err := d.Delegate(ctx, p.Type, rt.request(cni.CmdAdd, conf))
		if err != nil {
			return nil, &PluginError{Index: i, Type: p.Type, Err: err}
		}
		if r == nil {
			return nil, &PluginError{Index: i, Type: p.Type, Err: cni.Errorf(types.ErrInternal, "ADD returned no result")}
		}
		if prev, err = n.EncodeResult(r); err != nil {
			return nil, &PluginError{Index: i, Type: p.Type, Err: err}
		}
		res = r
	}
	return res, nil
}

// Del runs DEL through the plugins in reverse order, trying every one, and
// returns the first error. prev is the cached ADD result in the network's
// version (nil when unknown); it is passed from spec 0.4.0 on.
func (n *Network) Del(ctx context.Context, d cni.Delegator, rt Runtime, rc map[string]any, prev []byte) error {
	if !n.atLeast("0.4.0") {
		prev = nil
	}
	var first error
	for i := len(n.Plugins) - 1; i >= 0; i-- {
		p := n.Plugins[i]
		conf, err := n.pluginConf(p, rc, prev, nil)
		if err == nil {
			_, err = d.Delegate(ctx, p.Type, rt.request(cni.CmdDel, conf))
		}
		if err != nil && first == nil {
			first = &PluginError{Index: i, Type: p.Type, Err: err}
		}
	}
	return first
}

// Checkable reports whether CHECK applies: spec 0.4.0 or later and not
// disabled.
func (n *Network) Checkable() bool { return !n.DisableCheck && n.atLeast("0.4.0") }

// Check runs CHECK through the plugins in order with the cached result.
// Versions before 0.4.0 have no CHECK; disableCheck skips it.
func (n *Network) Check(ctx context.Context, d cni.Delegator, rt Runtime, rc map[string]any, prev []byte) error {
	if n.DisableCheck {
		return nil
	}
	if !n.atLeast("0.4.0") {
		return cni.Errorf(types.ErrIncompatibleCNIVersion, "network %q: cniVersion %s does not support CHECK", n.Name, n.CNIVersion)
	}
	if len(prev) == 0 {
		return cni.Errorf(types.ErrInvalidNetworkConfig, "network %q: no cached ADD result to check", n.Name)
	}
	for i, p := range n.Plugins {
		conf, err := n.pluginConf(p, rc, prev, nil)
		if err == nil {
			_, err = d.Delegate(ctx, p.Type, rt.request(cni.CmdCheck, conf))
		}
		if err != nil {
			return &PluginError{Index: i, Type: p.Type, Err: err}
		}
	}
	return nil
}

// GC sends GC with the valid attachments to every plugin (spec 1.1.0 and
// later; disableGC skips it), trying all and returning the first error.
func (n *Network) GC(ctx context.Context, d cni.Delegator, path []string, valid []cni.Attachment) error {
	if n.DisableGC || !n.atLeast("1.1.0") {
		return nil
	}
	if valid == nil {
		valid = []cni.Attachment{}
	}
	extra := map[string]any{"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid}
	var first error
	for i, p := range n.Plugins {
		conf, err := n.pluginConf(p, nil, nil, extra)
		if err == nil {
			_, err = d.Delegate(ctx, p.Type, Runtime{Path: path}.request(cni.CmdGC, conf))
		}
		if err != nil && first == nil {
			first = &PluginError{Index: i, Type: p.Type, Err: err}
		}
	}
	return first
}

// Status asks every plugin for STATUS (spec 1.1.0 and later).
func (n *Network) Status(ctx context.Context, d cni.Delegator, path []string) error {
	if !n.atLeast("1.1.0") {
		return nil
	}
	for i, p := range n.Plugins {
		conf, err := n.pluginConf(p, nil, nil, nil)
		if err == nil {
			_, err = d.Delegate(ctx, p.Type, Runtime{Path: path}.request(cni.CmdStatus, conf))
		}
		if err != nil {
			return &PluginError{Index: i, Type: p.Type, Err: err}
		}
	}
	return nil
}
