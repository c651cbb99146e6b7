#!/usr/bin/env bash
# make demo: a local multi-node cluster with knit, and the seed walkthroughs on it.
#   - cluster up (hack/cluster), knit installed from deploy/ with kubectl (hack/knit-deploy.sh)
#   - seed 000: macvlan-conf and samplepod (examples/seeds), `ip a` in samplepod, its network-status
#   - seed 002: multus-br1 with net-pod1 on node1 and net-pod2 on node2, pinging over net1
# The cluster stays up; the end of the output says how to use and remove it. Idempotent.
# Run through `make demo`, which builds bin/, the k8s binaries and the images first.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
want_nodes=${NODES:-}
. "$HERE/cluster/lib.sh"
# A running cluster keeps its size unless NODES is given (cluster.sh up would reshape it).
if [[ -z $want_nodes ]] && compgen -G "$CL/node*/" >/dev/null; then
  NODES=$(compgen -G "$CL/node*/" | wc -l)
fi
export NODES
cd "$ROOT"
S=examples/seeds
k() { kubectl_admin "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ kubectl %s\n' "$*"; k "$@"; }
net1_ip() { k exec "$1" -- ip -4 -o addr show dev net1 | awk '{print $4}' | cut -d/ -f1; }

t0=$(date +%s)
"$HERE/cluster/cluster.sh" up
"$HERE/knit-deploy.sh"

say "seed 002: node networking — label two nodes, apply the br1-ens35 policy (br1 with port ens35, DHCP)"
run label nodes node1 node2 external-network=true --overwrite
run apply -f $S/002-nncp-br1.yaml
k wait nncp/br1-ens35 --for=condition=Available --timeout=120s >/dev/null
run get nncp
run get nnce
run get nns
printf '$ hack/cluster/node-exec node1 ip -br addr show br1\n'
"$HERE/cluster/node-exec" node1 ip -br addr show br1

say "seed 000: the macvlan NetworkAttachmentDefinition and samplepod"
run apply -f $S/000-macvlan-conf.yaml -f $S/000-samplepod.yaml
k wait --for=condition=Ready pod/samplepod --timeout=180s >/dev/null
run get network-attachment-definitions
run exec samplepod -- ip a
printf "$ kubectl get pod samplepod -o jsonpath='{.metadata.annotations.k8s\\\\.v1\\\\.cni\\\\.cncf\\\\.io/network-status}'\n"
k get pod samplepod -o jsonpath='{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}'
echo

say "seed 002: the bridge NAD multus-br1 (br1 + ens35), net-pod1 on node1, net-pod2 on node2"
run apply -f $S/002-multus-br1.yaml -f $S/002-demo-app.yaml
k wait --for=condition=Ready pod/net-pod1 pod/net-pod2 --timeout=180s >/dev/null
ip1=$(net1_ip net-pod1) ip2=$(net1_ip net-pod2)
if [[ $ip1 == "$ip2" ]]; then
  # host-local leases per node: on a fresh cluster both nodes hand out the range's first
  # address (the seed's cluster had history: .243 and .241). A new pod gets the next one.
  echo "host-local gave both pods $ip1 (leases are per node): recreating net-pod2"
  k delete pod net-pod2 --wait=true >/dev/null
  k apply -f $S/002-demo-app.yaml >/dev/null
  k wait --for=condition=Ready pod/net-pod2 --timeout=180s >/dev/null
  ip2=$(net1_ip net-pod2)
fi
run get pods -o wide
run exec net-pod1 -- ip -4 addr show dev net1
run exec net-pod1 -- ping -c 3 -I net1 "$ip2"

cat <<EOF

== knit demo ready ($(( $(date +%s) - t0 ))s). The cluster stays up:
  export KUBECONFIG=$KUBECONFIG_ADMIN
  export PATH=$BIN:\$PATH                     # kubectl built for this cluster
  kubectl get nodes -o wide
  kubectl get pods -A -o wide
  kubectl describe pod samplepod              # the network-status annotation
  kubectl exec -it net-pod2 -- sh             # ip a, ping -I net1 $ip1, ...
  kubectl apply -f examples/seeds/...         # more of the seeds (see README.md)
  hack/cluster/node-exec node1 ip link        # inside a node
  make cluster-down                           # remove everything
EOF
