package nad

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/knit-cni/knit/pkg/annotations"
)

func def(name, config string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns",
		Annotations: map[string]string{annotations.ResourceNameKey: "example.com/vf"}},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: config}}
}

func TestNetworkFromSpec(t *testing.T) {
	n, err := Network(def("macvlan-conf", `{"cniVersion":"0.3.0","type":"macvlan","master":"eth0"}`), t.TempDir(), "1.0.0")
	if err != nil || n.Name != "macvlan-conf" || n.CNIVersion != "0.3.0" {
		t.Fatalf("%+v %v", n, err)
	}
	n, err = Network(def("x", `{"name":"keep","type":"bridge"}`), t.TempDir(), "1.0.0")
	if err != nil || n.Name != "keep" || n.CNIVersion != "1.0.0" {
		t.Fatalf("name kept / version defaulted: %+v %v", n, err)
	}
	if _, err := Network(def("bad", `{"type":`), t.TempDir(), "1.0.0"); err == nil || !strings.Contains(err.Error(), "ns/bad: spec.config") {
		t.Errorf("bad config: %v", err)
	}
	if ResourceName(def("x", "")) != "example.com/vf" {
		t.Error("resource name")
	}
}

// spec.config empty: the conf dir's config whose name matches, conflists
// before single configs.
func TestNetworkFromFile(t *testing.T) {
	dir := t.TempDir()
	w := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w("10-a.conf", `{"cniVersion":"0.4.0","name":"net1","type":"bridge"}`)
	w("20-b.conflist", `{"cniVersion":"1.0.0","name":"net1","plugins":[{"type":"ptp"}]}`)
	w("30-c.json", `{"cniVersion":"0.4.0","name":"net2","type":"macvlan"}`)
	w("40-d.txt", `{"cniVersion":"0.4.0","name":"net3","type":"macvlan"}`)
	n, err := Network(def("net1", ""), dir, "1.0.0")
	if err != nil || n.Plugins[0].Type != "ptp" {
		t.Fatalf("conflist first: %+v %v", n, err)
	}
	if n, err := Network(def("net2", "  "), dir, "1.0.0"); err != nil || n.Plugins[0].Type != "macvlan" {
		t.Fatalf(".json: %+v %v", n, err)
	}
	_, err = Network(def("net3", ""), dir, "1.0.0")
	if !errors.Is(err, ErrNoConfigFile) || !strings.Contains(err.Error(), "spec.config") {
		t.Errorf("no file: %v", err)
	}
	if _, _, err := FileByName(filepath.Join(dir, "nope"), "x"); err == nil {
		t.Error("missing dir accepted")
	}
	files, _ := ConfFiles(dir, "20-b.conflist")
	if len(files) != 2 {
		t.Errorf("conf files %v", files)
	}
	if _, err := LoadFile(filepath.Join(dir, "40-d.txt")); err != nil {
		t.Error(err)
	}
	w("50-noname.conf", `{"type":"x"}`)
	if _, err := LoadFile(filepath.Join(dir, "50-noname.conf")); err == nil {
		t.Error("nameless file accepted")
	}
}
