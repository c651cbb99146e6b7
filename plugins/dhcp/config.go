package dhcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/knit-cni/knit/pkg/cni"
)

// DefaultSocketPath is where the daemon listens, as in the reference.
const DefaultSocketPath = "/run/cni/dhcp.sock"

// maxTimeout bounds ipam.timeout: a runtime gives up on ADD long before.
const maxTimeout = 5 * time.Minute

// Config is the network config the dhcp IPAM plugin receives (IPAM plugins
// get their parent's whole config).
type Config struct {
	cni.NetConf
	IPAM *IPAMConfig `json:"ipam"`
}

// IPAMConfig is the ipam section, keyed as the reference's.
type IPAMConfig struct {
	Type             string `json:"type"`
	DaemonSocketPath string `json:"daemonSocketPath,omitempty"`
	// Provide lists options the client sends (host-name, client ID, ...).
	Provide []ProvideOption `json:"provide,omitempty"`
	// Request lists options the client asks the server for.
	Request []RequestOption `json:"request,omitempty"`
	// Timeout bounds getting a lease on ADD (knit; the reference has only
	// the daemon's -timeout). Empty means the daemon's default.
	Timeout Duration `json:"timeout,omitempty"`
}

// ProvideOption is an option the client sends: a literal value, or the
// value of a CNI_ARGS key (e.g. K8S_POD_NAME for host-name).
type ProvideOption struct {
	Option          string `json:"option"`
	Value           string `json:"value,omitempty"`
	ValueFromCNIArg string `json:"fromArg,omitempty"`
}

// RequestOption is an option code or name asked for in the parameter
// request list. SkipDefault drops the default requests (router, subnet
// mask).
type RequestOption struct {
	SkipDefault bool   `json:"skipDefault,omitempty"`
	Option      string `json:"option"`
}

// Duration is a JSON duration: a Go duration string ("10s", "1m30s") or a
// number of seconds.
type Duration time.Duration

// UnmarshalJSON accepts "10s" or 10.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("a duration is a string like \"10s\" or a number of seconds")
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// optionByName maps the option names the reference accepts besides
// numbers (dhcp-options(5) spelling) to codes.
func optionByName(name string) (dhcpv4.OptionCode, bool) {
	switch name {
	case "dhcp-client-identifier":
		return dhcpv4.OptionClientIdentifier, true
	case "subnet-mask":
		return dhcpv4.OptionSubnetMask, true
	case "routers":
		return dhcpv4.OptionRouter, true
	case "host-name":
		return dhcpv4.OptionHostName, true
	case "user-class":
		return dhcpv4.OptionUserClassInformation, true
	case "vendor-class-identifier":
		return dhcpv4.OptionClassIdentifier, true
	}
	return nil, false
}

const optionNames = "dhcp-client-identifier, host-name, routers, subnet-mask, user-class, vendor-class-identifier"

// managedOption names the codes the client itself must control.
func managedOption(code uint64) (string, bool) {
	switch code {
	case 0:
		return "pad", true
	case 53:
		return "message type", true
	case 55:
		return "parameter request list", true
	case 255:
		return "end", true
	}
	return "", false
}

func parseOption(field, name string) (dhcpv4.OptionCode, error) {
	if c, ok := optionByName(name); ok {
		return c, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(name), 10, 8)
	if err != nil {
		return nil, cni.ConfigError(field, "unknown DHCP option %q: use a code 1-254 or one of %s", name, optionNames)
	}
	if what, ok := managedOption(n); ok {
		return nil, cni.ConfigError(field, "option %d (%s) is managed by the client", n, what)
	}
	return dhcpv4.GenericOptionCode(n), nil
}

// options are the request's resolved DHCP options.
type options struct {
	request []dhcpv4.OptionCode
	provide []dhcpv4.Option
}

// prepare resolves the request and provide lists; cniArgs supplies the
// fromArg values.
func prepare(cniArgs string, ipam *IPAMConfig) (*options, error) {
	args := map[string]string{}
	for _, kv := range strings.Split(cniArgs, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			args[k] = v
		}
	}
	o := &options{}
	for i, p := range ipam.Provide {
		field := fmt.Sprintf("ipam.provide[%d]", i)
		code, err := parseOption(field+".option", p.Option)
		if err != nil {
			return nil, err
		}
		v, fromArg := args[p.ValueFromCNIArg]
		if !fromArg || p.ValueFromCNIArg == "" {
			v = p.Value
		}
		if len(v) > 255 {
			return nil, cni.ConfigError(field, "value for option %s is %d bytes, more than 255", p.Option, len(v))
		}
		if v != "" {
			o.provide = append(o.provide, dhcpv4.OptGeneric(code, []byte(v)))
		}
	}
	skip := false
	for i, r := range ipam.Request {
		code, err := parseOption(fmt.Sprintf("ipam.request[%d].option", i), r.Option)
		if err != nil {
			return nil, err
		}
		skip = skip || r.SkipDefault
		o.request = appendCode(o.request, code)
	}
	if !skip {
		// What the reference asks for unless skipDefault.
		for _, c := range []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter} {
			o.request = appendCode(o.request, c)
		}
	}
	return o, nil
}

func appendCode(list []dhcpv4.OptionCode, c dhcpv4.OptionCode) []dhcpv4.OptionCode {
	for _, x := range list {
		if x.Code() == c.Code() {
			return list
		}
	}
	return append(list, c)
}

func parse(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	if c.IPAM == nil {
		return nil, cni.ConfigError("ipam", "missing: the dhcp plugin is an IPAM plugin")
	}
	if t := time.Duration(c.IPAM.Timeout); t < 0 || t > maxTimeout {
		return nil, cni.ConfigError("ipam.timeout", "%v is outside (0, %v]", t, maxTimeout)
	}
	return &c, nil
}

// socketPath is the daemon's socket for this config.
func (c *Config) socketPath(def string) string {
	switch {
	case c.IPAM.DaemonSocketPath != "":
		return c.IPAM.DaemonSocketPath
	case def != "":
		return def
	}
	return DefaultSocketPath
}

// clientID identifies the attachment to the DHCP server, as the reference
// does: "<container ID>/<network>/<interface>", at most 254 bytes.
func clientID(containerID, network, ifName string) string {
	id := containerID + "/" + network + "/" + ifName
	if len(id) > 254 {
		id = id[:254]
	}
	return id
}
