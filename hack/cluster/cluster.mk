# Local multi-node Kubernetes cluster harness (see hack/cluster/README.md).
# Included from the root Makefile; recipes run from the repository root.
KNIT_CLUSTER_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
KNIT_ROOT_DIR := $(abspath $(KNIT_CLUSTER_DIR)/../..)
NODES ?= 3

.PHONY: k8s-binaries cluster-deps images cluster-up cluster-down cluster-status cluster-smoke

# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl -> _output/bin (cached by version)
k8s-binaries:
	$(KNIT_ROOT_DIR)/hack/cluster/k8s-binaries.sh

# Debian packages the cluster and the images need (busybox-static, containerd, etcd, ...)
cluster-deps:
	$(KNIT_ROOT_DIR)/hack/cluster/cluster.sh deps

# OCI archives (testimage, knit from bin/, pause) -> _output/images
images: build cluster-deps
	$(KNIT_ROOT_DIR)/hack/images/build.sh

# build: the nodes' cluster network uses knit's own bridge/host-local/loopback from bin/.
cluster-up: build k8s-binaries images
	NODES=$(NODES) $(KNIT_ROOT_DIR)/hack/cluster/cluster.sh up

cluster-down:
	$(KNIT_ROOT_DIR)/hack/cluster/cluster.sh down

cluster-status:
	$(KNIT_ROOT_DIR)/hack/cluster/cluster.sh status

cluster-smoke:
	$(KNIT_ROOT_DIR)/hack/cluster/smoke.sh
