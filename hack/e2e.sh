#!/usr/bin/env bash
# make e2e: the cluster e2e suite (test/e2e) on the local multi-node cluster.
#   1. hack/cluster/cluster.sh up   starts the cluster, or repairs a running one (re-copies
#                                   bin/'s cluster plugins, re-imports changed images)
#   2. hack/knit-deploy.sh          kubectl apply -f deploy/, rollout status
#   3. go test -tags e2e ./test/e2e
# A cluster this script started is torn down at the end unless E2E_KEEP=1; a cluster that
# was already up is left running. On failure the cluster's logs are copied to
# _output/e2e-logs/ before any teardown.
# Knobs: E2E_KEEP=1, E2E_RUN (go test -run regex), E2E_TIMEOUT (default 15m), NODES (3).
# Run through `make e2e`, which builds bin/, the k8s binaries and the images first.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
want_nodes=${NODES:-}
. "$HERE/cluster/lib.sh"
# A running cluster keeps its size unless NODES is given (cluster.sh up would reshape it).
if [[ -z $want_nodes ]] && compgen -G "$CL/node*/" >/dev/null; then
  NODES=$(compgen -G "$CL/node*/" | wc -l)
fi
export NODES
export PATH="/usr/local/go/bin:$PATH"
cd "$ROOT"

now() { date +%s%N; }
secs() { local ms=$(( ($2 - $1) / 1000000 )); printf '%d.%03ds' $((ms / 1000)) $((ms % 1000)); }
cluster_is_up() { [[ -s $KUBECONFIG_ADMIN ]] && [[ $(kubectl_admin get --raw=/readyz 2>/dev/null) == ok ]]; }

started=0
cluster_is_up || started=1
rc=1
finish() {
  if ((rc != 0)) && [[ -d $CL ]]; then
    rm -rf "$OUT/e2e-logs" && mkdir -p "$OUT/e2e-logs"
    cp -r "$CL/logs" "$OUT/e2e-logs/control-plane" 2>/dev/null || true
    for d in "$CL"/node*/; do
      [[ -d $d/logs ]] && cp -r "$d/logs" "$OUT/e2e-logs/$(basename "$d")"
    done
    log "cluster logs copied to $OUT/e2e-logs"
  fi
  if ((started)) && [[ ${E2E_KEEP:-0} != 1 ]]; then
    "$HERE/cluster/cluster.sh" down
  else
    log "cluster left running: kubectl --kubeconfig $KUBECONFIG_ADMIN get pods -A; make cluster-down removes it"
  fi
}
trap finish EXIT

t0=$(now)
"$HERE/cluster/cluster.sh" up
t1=$(now)
"$HERE/knit-deploy.sh"
t2=$(now)
set +e
go test -tags e2e -count=1 -parallel 8 -timeout "${E2E_TIMEOUT:-15m}" -v -run "${E2E_RUN:-.}" ./test/e2e/ 2>&1 | tee "$OUT/e2e.log"
rc=${PIPESTATUS[0]}
set -e
t3=$(now)
echo "e2e timings: cluster up $(secs "$t0" "$t1") ($( ((started)) && echo fresh || echo already up)), knit deploy $(secs "$t1" "$t2"), tests $(secs "$t2" "$t3"), total $(secs "$t0" "$t3")"
((rc == 0)) && echo "E2E PASS" || echo "E2E FAIL (log: $OUT/e2e.log)"
exit "$rc"
