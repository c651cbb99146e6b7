# Shared settings and helpers for the local cluster harness (sourced, not run).
# shellcheck shell=bash disable=SC2034

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
OUT="$ROOT/_output"
CL="$OUT/cluster"            # all cluster state, logs, pid files
BIN="$OUT/bin"               # k8s binaries (make k8s-binaries)
PKI="$CL/pki"
KUBECONFIG_ADMIN="$OUT/kubeconfig"
IMAGES="$OUT/images"

NODES=${NODES:-3}

# Addressing: private test ranges on bridges this harness creates (checked
# against `ip route` before use).
BR=knit-c0                   # cluster bridge: control plane + every node's eth0
BR_NET=10.77.0.0/24
HOST_IP=10.77.0.1            # control plane listens here
EXT_BR=knit-ext              # second L2 segment: every node's ens35
EXT_NET=10.77.1.0/24
EXT_HOST_IP=10.77.1.1        # host address on the ext segment (for DHCP demos)
CLUSTER_CIDR=10.244.0.0/16   # pod CIDRs, /24 per node (kube-controller-manager)
SERVICE_CIDR=10.96.0.0/16
API_VIP=10.96.0.1            # 'kubernetes' service; DNAT'd to the API server in each node
API_PORT=6443
API_NAME=knit-apiserver
ETCD_CLIENT=127.0.0.1:12379
ETCD_PEER=127.0.0.1:12380
NFT_TABLE=knit-harness       # table inet knit-harness (host forward guard)
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1

node_ip() { echo "10.77.0.$((10 + $1))"; }      # node1 -> 10.77.0.11
ext_ip() { echo "10.77.1.$((10 + $1))"; }
node_dir() { echo "$CL/node$1"; }
# Host ends of the veths; every harness link name starts with "knit-" (the nft guard keys on it).
veth_c() { echo "knit-c-node$1"; }
veth_x() { echo "knit-x-node$1"; }

# Directories bind-mounted privately inside every node (per-node copies under node_dir).
NODE_BINDS=(etc/cni/net.d opt/cni/bin var/lib/cni var/lib/kubelet var/lib/containerd var/log/pods var/log/containers
  etc/knit var/lib/knit) # knit: knitd.json, the attachment cache (shim.DefaultCacheDir)
# cgroup v1 hierarchies a node cgroup is created in.
CG_HIER=(cpu cpuacct cpuset memory devices freezer blkio pids systemd unified)
# Host sysctls kubelet rewrites at start; saved before the first kubelet and restored on cluster-down.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# poll DEADLINE_S DESC CMD...: run CMD every 0.2s until it succeeds or the deadline passes.
poll() {
  local deadline=$(( $(date +%s) + $1 )) desc=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || { log "timeout waiting for: $desc"; return 1; }
    sleep 0.2
  done
}

# pid_alive PIDFILE [CMDLINE-SUBSTRING]: pid file names a live process (whose cmdline contains the string).
pid_alive() {
  local f=$1 want=${2:-} pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && [[ -d /proc/$pid ]] || return 1
  [[ -z $want ]] || tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$want"
}

holder_pid() { local f; f="$(node_dir "$1")/holder.pid"; pid_alive "$f" "sleep" && cat "$f"; }

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
