#!/usr/bin/env bash
# Install knit on the local cluster the way a user installs it:
#   kubectl apply -f deploy/        (CRD, RBAC, ServiceAccount, DaemonSet)
# then wait for the CRD, for every DaemonSet's rollout and for each node's
# /etc/cni/net.d/00-knit.conflist (written by knitd). Idempotent.
#
# The DaemonSet runs knit.local/knit:latest, imported into every node by
# `make cluster-up` from bin/. The tag never changes, so when the image did
# (`make build && make cluster-up` after a code change) the DaemonSets are
# restarted with `kubectl rollout restart`, as a user would after an upgrade.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/cluster/lib.sh"
DEPLOY=${KNIT_DEPLOY_DIR:-$ROOT/deploy}   # KNIT_DEPLOY_DIR: try other manifests

[[ -s $KUBECONFIG_ADMIN ]] || die "no cluster ($KUBECONFIG_ADMIN): run make cluster-up"
compgen -G "$DEPLOY/*.yaml" >/dev/null || compgen -G "$DEPLOY/*.yml" >/dev/null ||
  die "deploy/ has no manifests (the CRD, RBAC and DaemonSet of issue 4)"
k() { kubectl_admin "$@"; }
t0=$(date +%s%N)

log "kubectl apply -f ${DEPLOY#"$ROOT"/}/"
k apply -f "$DEPLOY/"
k wait --for=condition=Established --timeout=60s crd/network-attachment-definitions.k8s.cni.cncf.io >/dev/null
# Node networking (kubernetes-nmstate's API, knit's own agent), when present.
if [[ -d $DEPLOY/nmstate ]]; then
  log "kubectl apply -f ${DEPLOY#"$ROOT"/}/nmstate/"
  k apply -f "$DEPLOY/nmstate/crds.yaml"
  k wait --for=condition=Established --timeout=60s crd/nodenetworkconfigurationpolicies.nmstate.io \
    crd/nodenetworkstates.nmstate.io crd/nodenetworkconfigurationenactments.nmstate.io >/dev/null
  k apply -f "$DEPLOY/nmstate/"
fi

mapfile -t daemonsets < <(k get -f "$DEPLOY/" $([[ -d $DEPLOY/nmstate ]] && echo "-f $DEPLOY/nmstate/nodenet.yaml") \
  -o jsonpath='{range .items[?(@.kind=="DaemonSet")]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}')
((${#daemonsets[@]})) || die "deploy/ defines no DaemonSet"

# Restart the DaemonSets when the knit image imported into the nodes changed
# since the last deployment to this cluster (the stamp lives in the cluster's
# state directory, so a fresh cluster starts without one).
stamp="$CL/knit-image.deployed"
sum=$(sha256sum "$IMAGES/knit.tar" | cut -d' ' -f1)
if [[ -s $stamp && $(<"$stamp") != "$sum" ]]; then
  for ds in "${daemonsets[@]}"; do
    read -r ns name <<<"$ds"
    log "knit image changed: kubectl -n $ns rollout restart daemonset/$name"
    k -n "$ns" rollout restart "daemonset/$name"
  done
fi
echo "$sum" >"$stamp"

for ds in "${daemonsets[@]}"; do
  read -r ns name <<<"$ds"
  k -n "$ns" rollout status "daemonset/$name" --timeout=180s ||
    { k -n "$ns" get pods -o wide >&2; k -n "$ns" describe "daemonset/$name" >&2; die "daemonset $ns/$name not ready"; }
done

conf_written() {
  local d
  for d in "$CL"/node*/; do
    [[ -s $d/root/etc/cni/net.d/00-knit.conflist ]] || return 1
  done
}
poll 60 "00-knit.conflist on every node" conf_written || {
  for d in "$CL"/node*/; do ls -l "$d/root/etc/cni/net.d" >&2; done
  die "knitd did not write /etc/cni/net.d/00-knit.conflist on every node"
}
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
printf 'knit deployed from %s/ in %d.%03ds\n' "${DEPLOY#"$ROOT"/}" $((ms / 1000)) $((ms % 1000))
