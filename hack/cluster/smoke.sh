#!/usr/bin/env bash
# Smoke test for the local cluster (run after `make cluster-up`):
# all nodes Ready; two pods pinned to node1 and node2 ping each other on eth0;
# a pod reaches the API server through the 'kubernetes' service VIP.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
NS=knit-smoke
k() { kubectl_admin "$@"; }
fail() { echo "SMOKE FAIL: $*" >&2; k -n "$NS" get pods -o wide >&2 || true; exit 1; }

[[ -s $KUBECONFIG_ADMIN ]] || fail "no $KUBECONFIG_ADMIN: run make cluster-up"
k wait --for=condition=Ready node --all --timeout=60s >/dev/null || fail "nodes not Ready"
ready=$(k get nodes --no-headers | awk '$2=="Ready"' | wc -l)
(( ready >= 2 )) || fail "need at least 2 Ready nodes, have $ready"
k get nodes

k delete namespace "$NS" --ignore-not-found --wait=true --timeout=60s >/dev/null
k create namespace "$NS" >/dev/null
for n in 1 2; do
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: ping$n, namespace: $NS}
spec:
  nodeName: node$n
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: knit.local/testimage:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
---
EOF
done | k apply -f - >/dev/null
k -n "$NS" wait --for=condition=Ready pod/ping1 pod/ping2 --timeout=60s >/dev/null || fail "pods not Ready"
k -n "$NS" get pods -o wide

ip1=$(k -n "$NS" get pod ping1 -o jsonpath='{.status.podIP}')
ip2=$(k -n "$NS" get pod ping2 -o jsonpath='{.status.podIP}')
echo "ping1 (node1) $ip1  <->  ping2 (node2) $ip2"
k -n "$NS" exec ping1 -- ip -4 addr show eth0 | grep -q "inet $ip1/" || fail "ping1 eth0 does not carry $ip1"
k -n "$NS" exec ping1 -- ping -c 3 -W 2 "$ip2" || fail "ping1 -> ping2 ($ip2)"
k -n "$NS" exec ping2 -- ping -c 3 -W 2 "$ip1" || fail "ping2 -> ping1 ($ip1)"
# in-cluster API access via the kubernetes service VIP (DNAT in each node): expect a TLS answer
out=$(k -n "$NS" exec ping1 -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 $API_VIP 443 | head -c 100; true")
[[ $out == HTTP/* ]] || fail "no HTTP answer from $API_VIP:443 (API server) inside a pod"
echo "API VIP $API_VIP:443 reachable from pod"

k delete namespace "$NS" --wait=false >/dev/null
echo "SMOKE PASS"
