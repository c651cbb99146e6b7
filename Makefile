# knit — see README.md. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export PATH := /usr/local/go/bin:$(PATH)

# Debian packages the tests and the demo use. The reference plugins
# (containernetworking-plugins) are only compared against, never run by knit.
DEB_PKGS := containernetworking-plugins nftables iptables iproute2 iputils-ping conntrack \
	dnsmasq iperf3 busybox-static etcd-server containerd runc cpio kmod \
	qemu-system-x86 linux-image-amd64 util-linux psmisc

.PHONY: all build deps test test-unit test-race fuzz bench demo e2e clean

all: build

build:
	@mkdir -p $(BIN)
	@# static (CGO_ENABLED=0): knit's image (hack/images) has no libc, and nodes need none
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/ ./cmd/...
	@for p in $$($(BIN)/knit-plugin list); do ln -f $(BIN)/knit-plugin $(BIN)/$$p; done
	@echo "built: $$(ls $(BIN) | tr '\n' ' ')"

# deps installs what is missing, once: dpkg-query is cheap, apt-get is not.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) mod download

# k8s-binaries: the knitd and nodenet integration tests run a real kube-apiserver.
test-unit: deps build k8s-binaries
	KNIT_BIN_DIR=$(BIN) $(GO) test -race -count=1 -timeout 20m ./...

test: test-unit test-kernel e2e

# The local multi-node cluster (hack/cluster) with knit installed from deploy/:
# e2e runs test/e2e on it (starting it if needed, removing it afterwards unless
# E2E_KEEP=1 or it was already up); demo leaves it up with the seeds applied.
e2e: build k8s-binaries images
	hack/e2e.sh

demo: build k8s-binaries images
	hack/demo.sh

# bench compares knit with the reference plugins side by side, exec'd the way a
# runtime calls them, inside a network namespace of its own (it plays the host).
BENCH_N ?= 40
# It also measures the meta-plugin (knit -> knitd against the reference plugins
# called one after another, as a thin meta-plugin does, plus knitd's memory) and
# node networking (policy to Available on 3 nodes, one apply+verify).
bench: deps build k8s-binaries
	@mkdir -p _output
	$(GO) build -o _output/cnibench ./hack/bench/cnibench
	$(GO) build -o _output/knitbench ./hack/bench/knit
	unshare --net --mount -- sh -c 'mount -t tmpfs none /run && mkdir -p /run/netns && _output/cnibench -knit $(BIN) -n $(BENCH_N)'
	unshare --net --mount -- sh -c 'mount -t tmpfs none /run && _output/knitbench -knit $(BIN) -n $(BENCH_N)'
	$(GO) test -run '^$$' -bench 'PolicyToAvailable|ApplyVerify' -benchtime 10x ./pkg/nodenet ./pkg/nmstate

# fuzz explores every parser's fuzz target and keeps the corpus in testdata/.
FUZZTIME ?= 10s
fuzz:
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

clean:
	rm -rf $(BIN) _output

-include hack/kernel-lane/kernel-lane.mk
-include hack/cluster/cluster.mk
