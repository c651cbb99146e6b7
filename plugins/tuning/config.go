package tuning

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/knit-cni/knit/pkg/cni"
)

// Config is tuning's config, keyed as containernetworking/plugins' tuning.
type Config struct {
	cni.NetConf
	// DataDir is where the attributes tuning changed are saved for DEL.
	DataDir  string  `json:"dataDir,omitempty"`
	SysCtl   Sysctls `json:"sysctl,omitempty"`
	Mac      string  `json:"mac,omitempty"`
	Promisc  bool    `json:"promisc,omitempty"`
	Mtu      int     `json:"mtu,omitempty"`
	TxQLen   *int    `json:"txQLen,omitempty"`
	Allmulti *bool   `json:"allmulti,omitempty"`

	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`
	Args *struct {
		CNI *ArgsCNI `json:"cni,omitempty"`
	} `json:"args,omitempty"`
}

// ArgsCNI is `args.cni`: per-attachment overrides of the config keys.
type ArgsCNI struct {
	SysCtl   Sysctls `json:"sysctl,omitempty"`
	Mac      *string `json:"mac,omitempty"`
	Promisc  *bool   `json:"promisc,omitempty"`
	Mtu      *int    `json:"mtu,omitempty"`
	TxQLen   *int    `json:"txQLen,omitempty"`
	Allmulti *bool   `json:"allmulti,omitempty"`
}

// Sysctl is one sysctl setting as written in the config.
type Sysctl struct {
	Key, Value string
}

// Sysctls keeps the config's sysctl object in its written order (sysctls
// can depend on each other) and keeps keys that appear twice, which a map
// would silently collapse, so that validation can reject them.
type Sysctls []Sysctl

// UnmarshalJSON reads a JSON object of strings token by token.
func (s *Sysctls) UnmarshalJSON(data []byte) error {
	if string(bytes.TrimSpace(data)) == "null" {
		*s = nil
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("sysctl must be an object of strings")
	}
	out := Sysctls{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var val string
		if err := dec.Decode(&val); err != nil {
			return fmt.Errorf("sysctl %q: value must be a string", key)
		}
		out = append(out, Sysctl{Key: key, Value: val})
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	*s = out
	return nil
}

// MarshalJSON writes the object back in order (used by tests and the
// fuzzer's round trip).
func (s Sysctls) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, kv := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(kv.Key)
		v, _ := json.Marshal(kv.Value)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// macArgs is CNI_ARGS as the reference reads it: MAC, and IgnoreUnknown.
type macArgs struct {
	types.CommonArgs
	MAC types.UnmarshallableString `json:"mac,omitempty"`
}

// settings is what one ADD applies, after config, CNI_ARGS, runtimeConfig
// and args.cni are merged (later wins, as in the reference) and sysctl
// keys are resolved for the interface.
type settings struct {
	sysctls  []resolvedSysctl
	mac      net.HardwareAddr
	promisc  bool
	mtu      int
	txQLen   *int
	allmulti *bool
}

// resolvedSysctl is a sysctl with its key as written and its file under
// /proc/sys ("net/ipv4/conf/eth0.100/rp_filter").
type resolvedSysctl struct {
	key, path, value string
}

func (s *settings) changesLink() bool {
	return s.mac != nil || s.promisc || s.mtu != 0 || s.txQLen != nil || s.allmulti != nil
}

func parse(data []byte) (*Config, error) {
	var c Config
	if err := cni.ParseConfig(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// resolve merges the sources of settings and validates them for ifName.
// allow, when not nil, lists the patterns every sysctl key must match.
func (c *Config) resolve(cniArgs, ifName string, allow []*regexp.Regexp) (*settings, error) {
	var e macArgs
	if err := types.LoadArgs(cniArgs, &e); err != nil {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: %v", err)
	}
	s := &settings{promisc: c.Promisc, mtu: c.Mtu, txQLen: c.TxQLen, allmulti: c.Allmulti}
	mac, mField := c.Mac, "mac"
	if e.MAC != "" {
		mac, mField = string(e.MAC), "CNI_ARGS MAC"
	}
	if c.RuntimeConfig.Mac != "" {
		mac, mField = c.RuntimeConfig.Mac, "runtimeConfig.mac"
	}
	sysctls := append(Sysctls(nil), c.SysCtl...)
	if c.Args != nil && c.Args.CNI != nil {
		a := c.Args.CNI
		sysctls = append(sysctls, a.SysCtl...)
		if a.Mac != nil {
			mac, mField = *a.Mac, "args.cni.mac"
		}
		if a.Promisc != nil {
			s.promisc = *a.Promisc
		}
		if a.Mtu != nil {
			s.mtu = *a.Mtu
		}
		if a.TxQLen != nil {
			s.txQLen = a.TxQLen
		}
		if a.Allmulti != nil {
			s.allmulti = a.Allmulti
		}
	}
	if err := s.setMAC(mac, mField); err != nil {
		return nil, err
	}
	if s.mtu < 0 {
		return nil, cni.ConfigError("mtu", "must not be negative, got %d", s.mtu)
	}
	if s.txQLen != nil && *s.txQLen < 0 {
		return nil, cni.ConfigError("txQLen", "must not be negative, got %d", *s.txQLen)
	}
	var err error
	s.sysctls, err = resolveSysctls(sysctls, len(c.SysCtl), ifName, allow)
	return s, err
}

func (s *settings) setMAC(mac, field string) error {
	if mac == "" {
		return nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return cni.ConfigError(field, "invalid MAC address %q: %v", mac, err)
	}
	if len(hw) != 6 {
		return cni.ConfigError(field, "%q is not a 6-byte Ethernet address", mac)
	}
	if hw[0]&1 != 0 {
		return cni.ConfigError(field, "%q is a multicast address", mac)
	}
	s.mac = hw
	return nil
}

// resolveSysctls turns keys into files for ifName. The first nConf entries
// come from the config, the rest from args.cni, which may override a
// config key but not repeat one of its own. Two config keys naming the
// same file ("net.core.x" and "net/core/x") are an error.
func resolveSysctls(all Sysctls, nConf int, ifName string, allow []*regexp.Regexp) ([]resolvedSysctl, error) {
	var out []resolvedSysctl
	index := map[string]int{}
	argsSeen := map[string]bool{}
	for i, kv := range all {
		path, err := sysctlPath(kv.Key, ifName)
		if err != nil {
			return nil, cni.ConfigError("sysctl", "%v", err)
		}
		if allow != nil && !allowed(allow, kv.Key) {
			return nil, cni.ConfigError("sysctl", "%q is not allowed by the sysctl allowlist", kv.Key)
		}
		fromArgs := i >= nConf
		j, dup := index[path]
		switch {
		case dup && fromArgs && !argsSeen[path]:
			out[j].value = kv.Value // args.cni overrides the config
			out[j].key = kv.Key
			argsSeen[path] = true
			continue
		case dup:
			return nil, cni.ConfigError("sysctl", "%q and %q name the same sysctl", out[j].key, kv.Key)
		}
		argsSeen[path] = fromArgs
		index[path] = len(out)
		out = append(out, resolvedSysctl{key: kv.Key, path: path, value: kv.Value})
	}
	return out, nil
}

// sysctlPath maps a key to its path below /proc/sys, as sysctl(8) does:
// the first separator decides the form. In "net.ipv4.conf.eth0/100.x" dots
// separate and '/' stands for a dot inside a name; in
// "net/ipv4/conf/eth0.100/x" slashes separate. A component "IFNAME" is the
// interface being tuned. Only keys under net/ are accepted.
func sysctlPath(key, ifName string) (string, error) {
	i := strings.IndexAny(key, "./")
	if i < 0 {
		return "", fmt.Errorf("invalid sysctl key %q", key)
	}
	sep := key[i]
	parts := strings.Split(key, string(sep))
	for n, p := range parts {
		if sep == '.' {
			p = strings.ReplaceAll(p, "/", ".")
		}
		if p == "IFNAME" {
			p = ifName
		}
		if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "/\x00") {
			return "", fmt.Errorf("invalid sysctl key %q", key)
		}
		parts[n] = p
	}
	if parts[0] != "net" || len(parts) < 2 {
		return "", fmt.Errorf("invalid net sysctl key %q: only keys under net are allowed", key)
	}
	return strings.Join(parts, "/"), nil
}

// dotted writes a /proc/sys path in sysctl's dotted form.
func dotted(path string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return strings.Join(parts, ".")
}

// allowed reports whether key matches one of the allowlist patterns. A
// pattern must match the whole key, written either way.
func allowed(allow []*regexp.Regexp, key string) bool {
	forms := []string{key}
	if p, err := sysctlPath(key, "IFNAME"); err == nil {
		forms = append(forms, dotted(p))
	}
	for _, re := range allow {
		for _, f := range forms {
			if re.MatchString(f) {
				return true
			}
		}
	}
	return false
}

// parseAllowlist reads an allowlist file: one regular expression a line,
// blank lines and lines starting with # ignored. Each pattern is anchored
// so that "net.core.somaxconn" does not also allow "xnet.core.somaxconnx".
func parseAllowlist(data []byte, name string) ([]*regexp.Regexp, error) {
	allow := []*regexp.Regexp{}
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		re, err := regexp.Compile(`^(?:` + line + `)$`)
		if err != nil {
			return nil, cni.Errorf(types.ErrInvalidNetworkConfig, "sysctl allowlist %s line %d: %v", name, n+1, err)
		}
		allow = append(allow, re)
	}
	return allow, nil
}
