package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Command is a CNI_COMMAND value.
type Command string

// The CNI commands of spec 1.1.0.
const (
	CmdAdd     Command = "ADD"
	CmdDel     Command = "DEL"
	CmdCheck   Command = "CHECK"
	CmdGC      Command = "GC"
	CmdStatus  Command = "STATUS"
	CmdVersion Command = "VERSION"
)

// SupportedVersions are the spec versions knit's plugins accept and emit.
var supportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// SupportedVersions returns the spec versions knit's plugins speak.
func SupportedVersions() []string { return append([]string(nil), supportedVersions...) }

// VersionInfo is the PluginInfo every knit plugin reports for VERSION.
func VersionInfo() version.PluginInfo { return version.PluginSupports(supportedVersions...) }

// Request is one CNI operation, however it arrived: exec'd by a container
// runtime (see Main) or called in-process by knitd. Plugins read everything
// from it and never from the process environment, so that many requests can
// be served concurrently by one process.
type Request struct {
	Command     Command
	ContainerID string
	// Netns is the path of the container's network namespace. It may be
	// empty on DEL and GC.
	Netns  string
	IfName string
	// Args is the raw CNI_ARGS string ("K=V;K2=V2").
	Args string
	// Path is CNI_PATH split on ':', where delegated plugins are looked up.
	Path []string
	// Config is the plugin's network configuration (stdin).
	Config []byte
	// NetnsOverride is CNI_NETNS_OVERRIDE ("1" or "true"): the caller
	// knows CNI_NETNS may be the plugin's own namespace, which is
	// otherwise refused.
	NetnsOverride bool
	// Delegate runs IPAM and other delegated plugins. Main sets it to a
	// Registry of knit's built-in types.
	Delegate Delegator
}

// WithConfig returns a copy of r for a delegated call with another config.
func (r *Request) WithConfig(cmd Command, config []byte) *Request {
	c := *r
	c.Command = cmd
	c.Config = config
	return &c
}

// Plugin is implemented by every knit plugin. Add returns a result in the
// newest version (types/100); the caller converts it to the config's version.
type Plugin interface {
	Add(ctx context.Context, req *Request) (types.Result, error)
	Del(ctx context.Context, req *Request) error
	Check(ctx context.Context, req *Request) error
}

// GarbageCollector is implemented by plugins that hold state across calls
// (addresses, rules, saved link attributes). GC releases everything that
// belongs to an attachment not in the valid list.
type GarbageCollector interface {
	GC(ctx context.Context, req *Request, valid []Attachment) error
}

// StatusReporter is implemented by plugins that can be not ready (STATUS).
type StatusReporter interface {
	Status(ctx context.Context, req *Request) error
}

// Attachment identifies one attachment for GC.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// gcConfig reads the valid attachments of a GC request. libcni sends the
// list under both the 1.1.0 key and the older draft key.
type gcConfig struct {
	Valid []Attachment `json:"cni.dev/valid-attachments"`
	Old   []Attachment `json:"cni.dev/attachments"`
}

// ValidAttachments returns the attachments a GC request says are in use.
func ValidAttachments(config []byte) ([]Attachment, error) {
	var c gcConfig
	if err := json.Unmarshal(config, &c); err != nil {
		return nil, Errorf(types.ErrDecodingFailure, "decoding GC config: %v", err)
	}
	if c.Valid != nil {
		return c.Valid, nil
	}
	return c.Old, nil
}

// NetConf is the part of a plugin config that every plugin shares.
type NetConf struct {
	CNIVersion    string          `json:"cniVersion"`
	Name          string          `json:"name"`
	Type          string          `json:"type"`
	IPAM          json.RawMessage `json:"ipam,omitempty"`
	DNS           types.DNS       `json:"dns,omitempty"`
	RawPrevResult json.RawMessage `json:"prevResult,omitempty"`
}

// IPAMType returns the type of the config's ipam section, "" when absent.
func (c *NetConf) IPAMType() (string, error) {
	if len(c.IPAM) == 0 || string(c.IPAM) == "null" {
		return "", nil
	}
	var t struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(c.IPAM, &t); err != nil {
		return "", Errorf(types.ErrDecodingFailure, "ipam: %v", err)
	}
	return t.Type, nil
}

// PrevResult parses prevResult into the newest result version, nil if absent.
func (c *NetConf) PrevResult() (*current.Result, error) {
	if len(c.RawPrevResult) == 0 || string(c.RawPrevResult) == "null" {
		return nil, nil
	}
	res, err := version.NewResult(c.CNIVersion, c.RawPrevResult)
	if err != nil {
		return nil, Errorf(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, Errorf(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	return cur, nil
}

// ParseConfig decodes a plugin config into conf (a struct embedding NetConf)
// with a decode error (code 6) that names where the JSON is wrong, and checks
// the fields every config needs.
func ParseConfig(data []byte, conf interface{ base() *NetConf }) error {
	if err := json.Unmarshal(data, conf); err != nil {
		return decodeError(err)
	}
	b := conf.base()
	if b.CNIVersion == "" {
		b.CNIVersion = "0.1.0"
	}
	if !isSupported(b.CNIVersion) {
		return &Error{Code: types.ErrIncompatibleCNIVersion,
			Msg:     fmt.Sprintf("incompatible CNI version %q", b.CNIVersion),
			Details: "supported versions: " + strings.Join(supportedVersions, ", ")}
	}
	return nil
}

func (c *NetConf) base() *NetConf { return c }

func isSupported(v string) bool {
	for _, s := range supportedVersions {
		if s == v {
			return true
		}
	}
	return false
}

func decodeError(err error) error {
	switch e := err.(type) {
	case *json.UnmarshalTypeError:
		return Errorf(types.ErrDecodingFailure, "field %q: cannot decode %s into %s", e.Field, e.Value, e.Type)
	case *json.SyntaxError:
		return Errorf(types.ErrDecodingFailure, "malformed JSON at offset %d: %v", e.Offset, e)
	}
	return Errorf(types.ErrDecodingFailure, "decoding config: %v", err)
}
