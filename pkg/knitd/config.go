package knitd

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/knit-cni/knit/pkg/annotations"
	"github.com/knit-cni/knit/pkg/cni"
	"github.com/knit-cni/knit/pkg/nad"
	"github.com/knit-cni/knit/pkg/podresources"
	"github.com/knit-cni/knit/pkg/shim"
)

// DefaultConfigFile is where knitd reads its config from.
const DefaultConfigFile = "/etc/knit/knitd.json"

// Config is knitd's configuration (/etc/knit/knitd.json). The keys a Multus
// user carries over keep Multus's names and meaning.
type Config struct {
	// NodeName is this node (default: $NODE_NAME, from the downward API).
	NodeName string `json:"nodeName,omitempty"`
	// Kubeconfig is a kubeconfig file; empty means in-cluster config.
	Kubeconfig string `json:"kubeconfig,omitempty"`

	// ClusterNetwork names the cluster network: a NAD in MultusNamespace,
	// else the name of a config in ConfDir, else a file or directory path.
	// Empty: the first other config file in ConfDir (what the generated
	// 00-knit.conflist is based on).
	ClusterNetwork string `json:"clusterNetwork,omitempty"`
	// DefaultNetworks are attached to every pod outside SystemNamespaces,
	// after the cluster network and before the annotation's networks.
	DefaultNetworks []string `json:"defaultNetworks,omitempty"`
	// SystemNamespaces get no DefaultNetworks and no network-status
	// annotation (default: kube-system).
	SystemNamespaces []string `json:"systemNamespaces,omitempty"`
	// MultusNamespace holds the NADs of ClusterNetwork, DefaultNetworks and
	// the v1.multus-cni.io/default-network annotation (default:
	// kube-system).
	MultusNamespace string `json:"multusNamespace,omitempty"`
	// NamespaceIsolation lets pods use only NADs of their own namespace
	// and of GlobalNamespaces.
	NamespaceIsolation bool `json:"namespaceIsolation,omitempty"`
	// GlobalNamespaces (comma-separated string or list) may be referenced
	// from any namespace under isolation; default "default".
	GlobalNamespaces StringList `json:"globalNamespaces,omitempty"`
	// ReadinessIndicatorFile must exist before knit attaches pods.
	ReadinessIndicatorFile string `json:"readinessindicatorfile,omitempty"`

	LogLevel string `json:"logLevel,omitempty"`
	LogFile  string `json:"logFile,omitempty"`

	ConfDir  string `json:"confDir,omitempty"`
	BinDir   string `json:"binDir,omitempty"`
	CacheDir string `json:"cacheDir,omitempty"`
	// CNIVersion overrides the cniVersion of the generated conflist.
	CNIVersion string `json:"cniVersion,omitempty"`
	// GenerateConf writes 00-knit.conflist (default true).
	GenerateConf *bool `json:"generateConf,omitempty"`

	Socket string `json:"socket,omitempty"`
	// MetricsAddr serves /metrics, /healthz, /readyz (and pprof when
	// enabled); empty disables it.
	MetricsAddr string `json:"metricsAddr,omitempty"`
	EnablePprof bool   `json:"enablePprof,omitempty"`
	// PodResourcesSocket is the kubelet's pod-resources socket.
	PodResourcesSocket string `json:"podResourcesSocket,omitempty"`
	// DeviceInfoDir holds device plugins' device-info files.
	DeviceInfoDir string `json:"deviceInfoDir,omitempty"`

	// PodWait bounds how long ADD waits for the informer to see a pod
	// before asking the API server once.
	PodWait Duration `json:"podWait,omitempty"`
	// GCInterval is how often stale cache entries are collected.
	GCInterval Duration `json:"gcInterval,omitempty"`
	// GCGrace is how long a pod must be gone before its attachments are
	// collected while its namespace still exists.
	GCGrace Duration `json:"gcGrace,omitempty"`
	// ConfResync is the period of the conf dir safety resync.
	ConfResync Duration `json:"confResync,omitempty"`
	// ForwardGC forwards CNI GC to the delegate networks with the
	// attachments knit has on them. Off by default: attachments made by
	// something else (Multus, before a migration) on the same networks
	// would look stale to the delegates.
	ForwardGC bool `json:"forwardGC,omitempty"`
}

// StringList decodes a JSON list of strings or a comma-separated string
// (Multus's globalNamespaces form).
type StringList []string

// UnmarshalJSON implements json.Unmarshaler.
func (s *StringList) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*s = list
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return errors.New("want a list of strings or a comma-separated string")
	}
	*s = nil
	for _, p := range strings.Split(str, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// Duration is a time.Duration written as "30s" (or a number of seconds).
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var secs float64
	if err := json.Unmarshal(b, &secs); err == nil {
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a duration like "30s"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// multusOnlyKeys are Multus config keys knitd has no use for; they are
// accepted silently so a Multus config can be reused as is.
func multusOnlyKeys() []string {
	return []string{"name", "type", "capabilities", "delegates", "logToStderr", "logOptions", "cniDir",
		"multusConfigFile", "multusAutoconfigDir", "socketDir", "auxiliaryCNIChainName"}
}

// ParseConfig decodes a config file. Unknown keys are returned as warnings
// (a typo must not go unnoticed, but must not stop the node either).
func ParseConfig(data []byte) (*Config, []string, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, nil, fmt.Errorf("knitd config: %w", err)
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(data, &raw) // decoded above already
	known := map[string]bool{}
	for _, k := range jsonKeys(c) {
		known[k] = true
	}
	for _, k := range multusOnlyKeys() {
		known[k] = true
	}
	var warnings []string
	for k := range raw {
		if !known[k] {
			warnings = append(warnings, fmt.Sprintf("unknown config key %q ignored", k))
		}
	}
	sort.Strings(warnings)
	return &c, warnings, nil
}

func jsonKeys(c Config) []string {
	b, _ := json.Marshal(fullConfig(c))
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// fullConfig sets every field so that omitempty keeps none out of jsonKeys.
func fullConfig(c Config) Config {
	t := true
	return Config{NodeName: "x", Kubeconfig: "x", ClusterNetwork: "x", DefaultNetworks: []string{"x"},
		SystemNamespaces: []string{"x"}, MultusNamespace: "x", NamespaceIsolation: true,
		GlobalNamespaces: StringList{"x"}, ReadinessIndicatorFile: "x", LogLevel: "x", LogFile: "x",
		ConfDir: "x", BinDir: "x", CacheDir: "x", CNIVersion: "x", GenerateConf: &t, Socket: "x",
		MetricsAddr: "x", EnablePprof: true, PodResourcesSocket: "x", DeviceInfoDir: "x", PodWait: 1, GCInterval: 1, GCGrace: 1,
		ConfResync: 1, ForwardGC: true}
}

// LoadConfig reads path; a missing file at the default path means all
// defaults.
func LoadConfig(path string) (*Config, []string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == DefaultConfigFile {
		return &Config{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("knitd config: %w", err)
	}
	return ParseConfig(b)
}

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.NodeName, os.Getenv("NODE_NAME"))
	def(&c.MultusNamespace, "kube-system")
	def(&c.ConfDir, "/etc/cni/net.d")
	def(&c.BinDir, "/opt/cni/bin")
	def(&c.CacheDir, shim.DefaultCacheDir)
	def(&c.Socket, shim.DefaultSocket)
	def(&c.LogLevel, "info")
	def(&c.PodResourcesSocket, podresources.DefaultSocket)
	def(&c.DeviceInfoDir, nad.DefaultDeviceInfoDir)
	if c.SystemNamespaces == nil {
		c.SystemNamespaces = []string{"kube-system"}
	}
	if c.GlobalNamespaces == nil {
		c.GlobalNamespaces = StringList{"default"}
	}
	if c.GenerateConf == nil {
		t := true
		c.GenerateConf = &t
	}
	durDef := func(p *Duration, v time.Duration) {
		if *p == 0 {
			*p = Duration(v)
		}
	}
	durDef(&c.PodWait, 2*time.Second)
	durDef(&c.GCInterval, time.Minute)
	durDef(&c.GCGrace, 2*time.Minute)
	durDef(&c.ConfResync, 30*time.Second)
}

// Validate checks a defaulted config.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("nodeName: not set (set NODE_NAME from spec.nodeName)"))
	}
	if c.CNIVersion != "" && !contains(cni.SupportedVersions(), c.CNIVersion) {
		errs = append(errs, fmt.Errorf("cniVersion: %q is not one of %v", c.CNIVersion, cni.SupportedVersions()))
	}
	for _, ns := range append(append([]string{c.MultusNamespace}, c.SystemNamespaces...), c.GlobalNamespaces...) {
		if !annotations.ValidName(ns) {
			errs = append(errs, fmt.Errorf("namespace %q is not a valid namespace name", ns))
		}
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	for name, d := range map[string]Duration{"podWait": c.PodWait, "gcInterval": c.GCInterval, "gcGrace": c.GCGrace, "confResync": c.ConfResync} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %v", name, time.Duration(d)))
		}
	}
	return errors.Join(errs...)
}

// ParseLevel maps knit and Multus log level names to slog levels.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug", "verbose":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "panic":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("logLevel: %q is not debug, info, warn or error", s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
