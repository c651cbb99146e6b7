package knitd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	c, warns, err := ParseConfig([]byte(`{
		"name":"multus-cni-network","type":"multus","delegates":[],"logToStderr":true,
		"clusterNetwork":"flannel","defaultNetworks":["sidecar"],"systemNamespaces":["kube-system","admin"],
		"multusNamespace":"kube-system","namespaceIsolation":true,"globalNamespaces":"default, shared",
		"readinessindicatorfile":"/run/flannel/subnet.env","logLevel":"verbose","podWait":"500ms","gcInterval":30,
		"typo":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterNetwork != "flannel" || len(c.DefaultNetworks) != 1 || !c.NamespaceIsolation ||
		strings.Join(c.GlobalNamespaces, ",") != "default,shared" || c.ReadinessIndicatorFile != "/run/flannel/subnet.env" ||
		time.Duration(c.PodWait) != 500*time.Millisecond || time.Duration(c.GCInterval) != 30*time.Second {
		t.Errorf("parsed %+v", c)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], `"typo"`) {
		t.Errorf("warnings %v: want only the typo (Multus keys are accepted)", warns)
	}
	c.NodeName = "n1"
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
	c2, _, err := ParseConfig([]byte(`{"globalNamespaces":["a","b"]}`))
	if err != nil || len(c2.GlobalNamespaces) != 2 {
		t.Errorf("list form: %v %v", c2.GlobalNamespaces, err)
	}
	for _, bad := range []string{`{`, `{"globalNamespaces":5}`, `{"podWait":"soon"}`, `{"namespaceIsolation":"yes"}`} {
		if _, _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestDefaultsAndValidate(t *testing.T) {
	t.Setenv("NODE_NAME", "from-env")
	c := &Config{}
	c.SetDefaults()
	if c.NodeName != "from-env" || c.ConfDir != "/etc/cni/net.d" || c.Socket != "/run/knit/knitd.sock" ||
		c.SystemNamespaces[0] != "kube-system" || c.GlobalNamespaces[0] != "default" || !*c.GenerateConf || c.MultusNamespace != "kube-system" {
		t.Errorf("defaults %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	bad := &Config{CNIVersion: "0.2.0", LogLevel: "loud", SystemNamespaces: []string{"Bad_NS"}, GCGrace: Duration(-time.Second)}
	bad.SetDefaults()
	bad.NodeName = ""
	err := bad.Validate()
	for _, want := range []string{"nodeName", "cniVersion", "Bad_NS", "logLevel", "gcGrace"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate error %v lacks %s", err, want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	if _, _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing non-default file accepted")
	}
	p := filepath.Join(t.TempDir(), "knitd.json")
	if err := os.WriteFile(p, []byte(`{"nodeName":"n"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, _, err := LoadConfig(p); err != nil || c.NodeName != "n" {
		t.Errorf("%+v %v", c, err)
	}
}

// FuzzParseConfig: no config file crashes knitd; accepted configs default
// and validate without panicking.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"clusterNetwork":"x","globalNamespaces":"a,b","podWait":"1s","gcGrace":5}`))
	f.Add([]byte(`{"defaultNetworks":["a"],"generateConf":false,"logLevel":"debug"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := ParseConfig(data)
		if err != nil {
			return
		}
		c.SetDefaults()
		if err := c.Validate(); err == nil && (c.ConfDir == "" || c.Socket == "" || c.PodWait <= 0 || c.GCInterval <= 0) {
			t.Fatalf("invalid config validated: %+v", c)
		}
	})
}

// FuzzK8sArgs: CNI_ARGS parsing never panics and finds what it was given.
func FuzzK8sArgs(f *testing.F) {
	f.Add("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u")
	f.Add(";;=;K8S_POD_NAME")
	f.Fuzz(func(t *testing.T, args string) {
		k := parseK8sArgs(args)
		if k.Name != "" && !strings.Contains(args, "K8S_POD_NAME="+k.Name) {
			t.Fatalf("name %q not in %q", k.Name, args)
		}
	})
}
