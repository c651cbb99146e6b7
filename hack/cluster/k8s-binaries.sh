#!/usr/bin/env bash
# Build the pinned Kubernetes binaries into _output/bin (cached by version stamp).
# Uses the separate module in hack/k8s (k8s.io/kubernetes + staging replaces).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
K8S_VERSION=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v1\./ {print $2; exit}' "$ROOT/hack/k8s/go.mod")
[[ -n $K8S_VERSION ]] || { echo "cannot read k8s.io/kubernetes version from hack/k8s/go.mod" >&2; exit 1; }
OUT="$ROOT/_output/bin"
STAMP="$OUT/.k8s-version"
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

have_all() {
  [[ -f $STAMP && $(cat "$STAMP") == "$K8S_VERSION" ]] || return 1
  local b; for b in "${BINS[@]}"; do [[ -x $OUT/$b ]] || return 1; done
}
if have_all; then echo "k8s binaries $K8S_VERSION cached in $OUT"; exit 0; fi

mkdir -p "$OUT"
ver=${K8S_VERSION#v}; major=${ver%%.*}; minor=${ver#*.}; minor=${minor%%.*}
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
  ld+=" -X $p.gitTreeState=clean -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=$date"
done
pkgs=(); for b in "${BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
echo "building k8s $K8S_VERSION: ${BINS[*]} -> $OUT"
start=$(date +%s)
rm -f "$STAMP"
# One go build for all five mains shares the compile of common packages.
cd "$ROOT/hack/k8s"
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="$ld" -o "$OUT/" "${pkgs[@]}"
echo "$K8S_VERSION" > "$STAMP"
echo "k8s binaries built in $(( $(date +%s) - start ))s"
