package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The shim must stay small and quick to start: no Kubernetes client, no
// plugin code (it execs delegates on DEL without knitd), no HTTP stack.
func TestShimDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"k8s.io/", "github.com/knit-cni/knit/plugins/", "net/http", "google.golang.org/grpc",
			"github.com/prometheus/", "github.com/vishvananda/netlink"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("knit shim depends on %s", dep)
			}
		}
	}
}
