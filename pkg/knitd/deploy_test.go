package knitd_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/knit-cni/knit/pkg/knitd"
	"github.com/knit-cni/knit/pkg/testutil"
	"github.com/knit-cni/knit/pkg/testutil/kube"
)

// deploy/ is what `kubectl apply -f deploy/` installs: every object decodes
// strictly, the API server accepts it, the ConfigMap holds a knitd config
// without unknown keys, and the DaemonSet runs the image the harness
// builds, never pulling it, installing into the host's CNI dirs.
func TestDeployManifests(t *testing.T) {
	c := kube.Shared(t)
	installCRD(t, c)
	applyRBAC(t, c.Client)
	ctx := context.Background()
	dir := filepath.Join(testutil.RepoRoot(), "deploy")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict([]byte(read("config.yaml")), &cm); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	cfg, warnings, err := knitd.ParseConfig([]byte(cm.Data["knitd.json"]))
	if err != nil || len(warnings) > 0 {
		t.Fatalf("knitd.json: %v %v", err, warnings)
	}
	cfg.NodeName = "n"
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Errorf("knitd.json: %v", err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict([]byte(read("daemonset.yaml")), &ds); err != nil {
		t.Fatalf("daemonset.yaml: %v", err)
	}
	for _, obj := range []struct {
		create func() error
		what   string
	}{
		{func() error {
			_, err := c.Client.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, &cm, metav1.CreateOptions{DryRun: []string{"All"}})
			return err
		}, "ConfigMap"},
		{func() error {
			_, err := c.Client.AppsV1().DaemonSets(ds.Namespace).Create(ctx, &ds, metav1.CreateOptions{DryRun: []string{"All"}})
			return err
		}, "DaemonSet"},
	} {
		if err := obj.create(); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Errorf("%s rejected by the API server: %v", obj.what, err)
		}
	}
	spec := ds.Spec.Template.Spec
	if ds.Namespace != "kube-system" || spec.ServiceAccountName != "knit" || !spec.HostNetwork || len(spec.InitContainers) != 1 {
		t.Errorf("DaemonSet basics: ns %s sa %s hostNetwork %v init %d", ds.Namespace, spec.ServiceAccountName, spec.HostNetwork, len(spec.InitContainers))
	}
	mounts := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			mounts[v.Name] = v.HostPath.Path
		}
	}
	for _, ctr := range append(spec.InitContainers, spec.Containers...) {
		if ctr.Image != "knit.local/knit:latest" || ctr.ImagePullPolicy != corev1.PullNever {
			t.Errorf("%s: image %s pull %s", ctr.Name, ctr.Image, ctr.ImagePullPolicy)
		}
		for _, m := range ctr.VolumeMounts {
			if hp, ok := mounts[m.Name]; ok && hp != m.MountPath {
				t.Errorf("%s: host %s mounted at %s: paths in knit's config and cache must be host paths", ctr.Name, hp, m.MountPath)
			}
		}
	}
	init := spec.InitContainers[0]
	if !slices.Contains(init.Command, "install") {
		t.Errorf("init container does not install: %v", init.Command)
	}
	for _, p := range []string{cfg.BinDir, cfg.ConfDir, filepath.Dir(cfg.Socket), filepath.Dir(cfg.CacheDir)} {
		if !slices.Contains(mapValues(mounts), p) {
			t.Errorf("config path %s is not a host mount", p)
		}
	}
	crd := read("crd.yaml")
	for _, want := range []string{"network-attachment-definitions.k8s.cni.cncf.io", "net-attach-def", "NetworkAttachmentDefinition"} {
		if !strings.Contains(crd, want) {
			t.Errorf("crd.yaml lacks %q", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^kind:`).FindAllString(read("rbac.yaml"), -1)); n != 3 {
		t.Errorf("rbac.yaml has %d objects, want ServiceAccount, ClusterRole, ClusterRoleBinding", n)
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
