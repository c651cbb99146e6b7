#!/usr/bin/env bash
# Local multi-node Kubernetes cluster for knit development.
#   cluster.sh up      create or repair the cluster (idempotent)
#   cluster.sh down    remove everything it created (idempotent)
#   cluster.sh status
#   cluster.sh deps    install the Debian packages it needs (also done by up)
# Control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
# runs in the host netns on $BR; every node is a process tree in its own
# net/mount/uts namespaces with its own containerd and kubelet.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

[[ $(id -u) == 0 ]] || die "must run as root"

# ---------------------------------------------------------------- packages
ensure_packages() {
  local pkgs=(etcd-server containerd runc iproute2 nftables iputils-ping busybox-static dnsmasq util-linux openssl)
  local missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >"$OUT/apt.log" 2>&1 ||
    { apt-get update >>"$OUT/apt.log" 2>&1 && apt-get install -y --no-install-recommends "${missing[@]}" >>"$OUT/apt.log" 2>&1; } ||
    die "apt-get install failed, see $OUT/apt.log"
}

# ---------------------------------------------------------------- host network
check_ranges() {
  local net bad
  for net in "$BR_NET" "$EXT_NET" "$CLUSTER_CIDR" "$SERVICE_CIDR"; do
    # routes inside our range, or covering it (except the default route), on links that are not ours
    bad=$( { ip -4 route show root "$net"; ip -4 route show match "$net" | grep -v '^default'; } 2>/dev/null |
      grep -v -E 'dev knit-' || true)
    [[ -z $bad ]] || die "address range $net collides with existing routes: $bad"
  done
}

ensure_host_network() {
  # Safety net: nothing from the cluster links is forwarded to any other interface (the uplink) and
  # nothing is forwarded into them from elsewhere. The host does not route for the cluster; nodes reach
  # each other by L2 over the bridges. Every harness link is named knit-*.
  nft -f - <<EOF
table inet $NFT_TABLE
delete table inet $NFT_TABLE
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "knit-*" oifname != "knit-*" counter drop
    oifname "knit-*" iifname != "knit-*" counter drop
  }
}
EOF
  local br
  for br in "$BR" "$EXT_BR"; do
    ip link show "$br" >/dev/null 2>&1 || ip link add "$br" type bridge
    echo 0 >"/sys/class/net/$br/bridge/stp_state" 2>/dev/null || true
    ip link set "$br" up
  done
  ip addr replace "$HOST_IP/24" dev "$BR"
  ip addr replace "$EXT_HOST_IP/24" dev "$EXT_BR"
}

# ---------------------------------------------------------------- PKI
gen_cert() { # name CN O(or "") kind(server|client)
  local name=$1 cn=$2 o=$3 kind=$4 subj="/CN=$2" ext
  [[ -s $PKI/$name.crt ]] && return 0
  [[ -n $o ]] && subj="/O=$o/CN=$cn"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ $kind == server ]]; then
      echo "extendedKeyUsage=serverAuth"
      echo "subjectAltName=IP:$HOST_IP,IP:127.0.0.1,IP:$API_VIP,DNS:$API_NAME,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" 2>/dev/null |
    openssl x509 -req -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
      -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$ext"
}

kubeconfig() { # file cert-name [server]
  local f=$1 c=$2 server=${3:-https://$HOST_IP:$API_PORT}
  cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: knit
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $c
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$c.crt")
    client-key-data: $(base64 -w0 "$PKI/$c.key")
contexts:
- name: knit
  context: {cluster: knit, user: $c}
current-context: knit
EOF
}

ensure_pki() {
  mkdir -p "$PKI"
  if [[ ! -s $PKI/ca.crt ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=knit-harness-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  if [[ ! -s $PKI/sa.key ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  gen_cert apiserver kube-apiserver "" server
  gen_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters client
  gen_cert admin kubernetes-admin system:masters client
  gen_cert controller-manager system:kube-controller-manager "" client
  gen_cert scheduler system:kube-scheduler "" client
  local i
  for ((i = 1; i <= NODES; i++)); do gen_cert "node$i" "system:node:node$i" system:nodes client; done
  [[ -s $KUBECONFIG_ADMIN ]] || kubeconfig "$KUBECONFIG_ADMIN" admin
  [[ -s $CL/controller-manager.kubeconfig ]] || kubeconfig "$CL/controller-manager.kubeconfig" controller-manager
  [[ -s $CL/scheduler.kubeconfig ]] || kubeconfig "$CL/scheduler.kubeconfig" scheduler
}

# ---------------------------------------------------------------- control plane
# spawn NAME CMD...: start a daemon in its own session with pid file and log under $CL.
spawn() {
  local name=$1; shift
  pid_alive "$CL/$name.pid" "$1" && return 0
  mkdir -p "$CL/logs"
  setsid "$@" >>"$CL/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$CL/$name.pid"
  log "started $name (pid $!)"
}

# A DHCP server for the ext segment (every node's ens35), so seed 002's policy
# (br1 with ipv4 dhcp: true) gets a lease. It answers only on the segment's
# bridge, serves no DNS (--port=0) and offers no router: nodes keep their
# default route through eth0. Stopped with the rest (its command line names $CL).
ensure_ext_dhcp() {
  spawn dnsmasq-ext dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
    --interface="$EXT_BR" --bind-interfaces --except-interface=lo \
    --dhcp-range=10.77.1.100,10.77.1.199,255.255.255.0,10m --dhcp-option=3 \
    --dhcp-leasefile="$CL/dnsmasq-ext.leases" --dhcp-authoritative --no-ping --log-dhcp
}

tcp_open() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
api_ready() { [[ $(kubectl_admin get --raw=/readyz 2>/dev/null) == ok ]]; }

ensure_control_plane() {
  mkdir -p "$CL/etcd"
  spawn etcd etcd --name knit --data-dir "$CL/etcd" \
    --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
    --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
    --initial-cluster "knit=http://$ETCD_PEER" --initial-cluster-state new \
    --unsafe-no-fsync --snapshot-count 10000 --quota-backend-bytes 2147483648
  poll 30 "etcd on $ETCD_CLIENT" tcp_open "$ETCD_CLIENT" || { tail -20 "$CL/logs/etcd.log" >&2; die "etcd did not start"; }

  spawn kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$HOST_IP" --bind-address="$HOST_IP" --secure-port="$API_PORT" \
    --etcd-servers="http://$ETCD_CLIENT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false --endpoint-reconciler-type=lease --v=1
  poll 60 "kube-apiserver /readyz" api_ready || { tail -20 "$CL/logs/kube-apiserver.log" >&2; die "kube-apiserver not ready"; }

  spawn kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$CL/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CL/controller-manager.kubeconfig" --authorization-kubeconfig="$CL/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --allocate-node-cidrs --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" --use-service-account-credentials \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --profiling=false --v=1
  spawn kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$CL/scheduler.kubeconfig" \
    --authentication-kubeconfig="$CL/scheduler.kubeconfig" --authorization-kubeconfig="$CL/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
}

# ---------------------------------------------------------------- nodes
# Host mountpoints the node bind mounts need; ones the harness creates are recorded and removed on down.
ensure_host_mountpoints() {
  local b p part
  for b in "${NODE_BINDS[@]}"; do
    p=
    for part in ${b//\// }; do
      p+="/$part"
      if [[ ! -e $p ]]; then mkdir "$p" && echo "$p" >>"$CL/created-host-dirs"; fi
    done
  done
}

ensure_cgroups() { # i
  local i=$1 h
  for h in "${CG_HIER[@]}"; do
    [[ -d /sys/fs/cgroup/$h ]] || continue
    mkdir -p "/sys/fs/cgroup/$h/knit-node$i"
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/knit-node$i/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/knit-node$i/cpuset.mems"
  mkdir -p "/sys/fs/cgroup/pids/knit-node$i/system"
}

write_node_files() { # i
  local i=$1 d j b
  d=$(node_dir "$i")
  mkdir -p "$d/logs" "$d/images"
  for b in "${NODE_BINDS[@]}"; do mkdir -p "$d/root/$b"; done
  {
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    echo "$HOST_IP $API_NAME"
    for ((j = 1; j <= NODES; j++)); do echo "$(node_ip "$j") node$j"; done
  } >"$d/hosts"
  # Pods and node processes never use the VM's resolver: the only nameserver is the host's bridge
  # address (nothing listens there unless a test starts a DNS server).
  echo "nameserver $HOST_IP" >"$d/resolv.conf"

  cat >"$d/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$HERE/runc-wrapper"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
EOF

  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
# Every node shares the VM's cgroup v1 hierarchies: give each kubelet its own root so they
# never see (or clean up) each other's pod cgroups.
cgroupRoot: /knit-node$i
failCgroupV1: false
failSwapOn: false
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
nodeStatusReportFrequency: 10s
EOF
}

node_spawn() { # i name cmd... : start a daemon inside node i, in its bookkeeping cgroup
  local i=$1 name=$2 d pid; shift 2
  d=$(node_dir "$i")
  pid_alive "$d/$name.pid" "$1" && return 0
  pid=$(holder_pid "$i")
  setsid sh -c 'echo $$ >"$0"; p=$1; shift; exec nsenter -t "$p" -n -m -u -- "$@"' \
    "/sys/fs/cgroup/pids/knit-node$i/system/cgroup.procs" "$pid" "$@" >>"$d/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$d/$name.pid"
  log "node$i: started $name (pid $!)"
}

nexec() { local i=$1; shift; nsenter -t "$(holder_pid "$i")" -n -m -u -- "$@"; }

start_holder() { # i
  local i=$1 d
  d=$(node_dir "$i")
  holder_pid "$i" >/dev/null && return 0
  stop_node "$i" keep-dir # leftovers of a dead holder (processes, cgroups)
  ensure_cgroups "$i"
  rm -f "$d/holder.pid" "$d"/*.pid "$d/images"/*.sum
  setsid unshare --net --mount --uts --fork --propagation private -- "$HERE/node-init.sh" "$i" "$d" \
    >>"$d/logs/holder.log" 2>&1 </dev/null &
  echo $! >"$d/unshare.pid"
  poll 10 "node$i namespace holder" holder_pid "$i" || { cat "$d/logs/holder.log" >&2; die "node$i holder failed"; }
  log "node$i: namespaces ready (holder pid $(holder_pid "$i"))"
}

ensure_node_links() { # i
  local i=$1 pid c x
  pid=$(holder_pid "$i"); c=$(veth_c "$i"); x=$(veth_x "$i")
  if ! ip link show "$c" >/dev/null 2>&1; then
    ip link add "$c" type veth peer name eth0 netns "$pid"
  fi
  ip link set "$c" master "$BR" up
  if ! ip link show "$x" >/dev/null 2>&1; then
    ip link add "$x" type veth peer name ens35 netns "$pid"
  fi
  ip link set "$x" master "$EXT_BR" up
  nexec "$i" ip addr replace "$(node_ip "$i")/24" dev eth0
  nexec "$i" ip link set eth0 up
  nexec "$i" ip link set ens35 up
  nexec "$i" ip route replace default via "$HOST_IP" dev eth0
  # The 'kubernetes' service VIP without kube-proxy: DNAT it to the API server inside the node
  # (covers host-network processes via output and pods via prerouting).
  nexec "$i" nft -f - <<EOF
table ip knit-harness-svc
delete table ip knit-harness-svc
table ip knit-harness-svc {
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    ip daddr $API_VIP tcp dport 443 dnat to $HOST_IP:$API_PORT
  }
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr $API_VIP tcp dport 443 dnat to $HOST_IP:$API_PORT
  }
}
EOF
}

containerd_ready() { nexec "$1" ctr --address /run/containerd/containerd.sock version; }

# CNI plugins a node has before knit is installed: only what the cluster network
# (10-cluster.conflist) needs, from knit's own build in $ROOT/bin (`make build`). Nothing comes
# from /usr/lib/cni: knit never depends on the reference plugins at run time. knit itself (the
# shim, knitd and the rest of the suite) is NOT copied here: its DaemonSet in deploy/ installs it,
# as on any cluster (hack/knit-deploy.sh).
CNI_CLUSTER_PLUGINS=(bridge host-local loopback)
install_cni_bins() { # i
  local i=$1 dst n tmp
  dst="$(node_dir "$i")/root/opt/cni/bin"
  for n in "${CNI_CLUSTER_PLUGINS[@]}"; do
    [[ -x $ROOT/bin/$n ]] || die "CNI plugin bin/$n missing: run 'make build'"
    cmp -s "$ROOT/bin/$n" "$dst/$n" && continue
    tmp="$dst/.$n.tmp"; cp "$ROOT/bin/$n" "$tmp" && mv -f "$tmp" "$dst/$n"
  done
}

import_images() { # i
  local i=$1 d img sum
  d=$(node_dir "$i")
  for img in pause testimage knit; do
    sum=$(sha256sum "$IMAGES/$img.tar" | cut -d' ' -f1)
    [[ -f $d/images/$img.sum && $(<"$d/images/$img.sum") == "$sum" ]] && continue
    nexec "$i" ctr --address /run/containerd/containerd.sock -n k8s.io images import "$IMAGES/$img.tar" >>"$d/logs/import.log" 2>&1 ||
      die "node$i: image import of $img failed (see $d/logs/import.log)"
    echo "$sum" >"$d/images/$img.sum"
  done
}

save_sysctls() {
  [[ -s $CL/sysctl.saved ]] && return 0
  local s
  for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$CL/sysctl.saved"
}

start_node() { # i
  local i=$1 d
  d=$(node_dir "$i")
  write_node_files "$i"
  start_holder "$i"
  ensure_node_links "$i"
  install_cni_bins "$i"
  node_spawn "$i" containerd containerd --config "$d/containerd.toml"
}

start_node_2() { # i : after containerd was spawned
  local i=$1 d
  d=$(node_dir "$i")
  poll 30 "node$i containerd" containerd_ready "$i" || { tail -20 "$d/logs/containerd.log" >&2; die "node$i containerd not ready"; }
  import_images "$i"
  kubeconfig "$d/kubelet.kubeconfig" "node$i"
  node_spawn "$i" kubelet "$BIN/kubelet" --config="$d/kubelet.yaml" --kubeconfig="$d/kubelet.kubeconfig" \
    --hostname-override="node$i" --node-ip="$(node_ip "$i")" --v=1
}

kubelet_healthy() { [[ $(nexec "$1" curl -s -m 2 http://127.0.0.1:10248/healthz) == ok ]]; }

pod_cidr() { kubectl_admin get node "node$1" -o 'jsonpath={.spec.podCIDR}' 2>/dev/null; }
has_pod_cidr() { [[ -n $(pod_cidr "$1") ]]; }

cluster_network() {
  local i j d conf
  declare -A cidrs
  for ((i = 1; i <= NODES; i++)); do
    poll 60 "node$i registered with a podCIDR" has_pod_cidr "$i" ||
      { tail -20 "$(node_dir "$i")/logs/kubelet.log" >&2; die "node$i did not register"; }
    cidrs[$i]=$(pod_cidr "$i")
  done
  log "nodes registered, pod CIDRs: ${cidrs[*]}"
  for ((i = 1; i <= NODES; i++)); do
    d=$(node_dir "$i")
    conf="$d/root/etc/cni/net.d/10-cluster.conflist"
    cat >"$conf.tmp" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "cluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${cidrs[$i]}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
    if cmp -s "$conf.tmp" "$conf"; then rm -f "$conf.tmp"; else mv -f "$conf.tmp" "$conf"; fi
    for ((j = 1; j <= NODES; j++)); do
      [[ $j == "$i" ]] && continue
      nexec "$i" ip route replace "${cidrs[$j]}" via "$(node_ip "$j")" dev eth0
    done
    # host -> pods (API server to webhooks/pods, replies to pods talking to the API server)
    ip route replace "${cidrs[$i]}" via "$(node_ip "$i")" dev "$BR"
  done
  # drop routes to pod CIDRs of nodes that are gone (NODES shrank, node re-registered)
  local want=" ${cidrs[*]} " r
  for r in $(ip -4 route show root "$CLUSTER_CIDR" dev "$BR" | awk '{print $1}'); do
    [[ $want == *" $r "* ]] || ip route del "$r" dev "$BR"
  done
  for ((i = 1; i <= NODES; i++)); do
    for r in $(nexec "$i" ip -4 route show root "$CLUSTER_CIDR" dev eth0 | awk '{print $1}'); do
      [[ $want == *" $r "* && $r != "${cidrs[$i]}" ]] || nexec "$i" ip route del "$r" dev eth0
    done
  done
}

nodes_ready() {
  local n
  n=$(kubectl_admin get nodes -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  [[ $n -ge $NODES ]]
}

# ---------------------------------------------------------------- teardown
kill_pids() { # pids... : SIGKILL and wait (bounded) for them to be gone
  local p alive deadline=$(( $(date +%s) + 15 ))
  (($#)) || return 0
  kill -9 "$@" 2>/dev/null || true
  while :; do
    alive=0
    for p in "$@"; do [[ -d /proc/$p ]] && [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]] && alive=1; done
    ((alive)) || return 0
    (( $(date +%s) < deadline )) || { log "WARNING: pids still alive: $*"; return 0; }
    sleep 0.1
  done
}

cg_pids() { # i : every process in node i's cgroup tree (pids hierarchy)
  local root=/sys/fs/cgroup/pids/knit-node$1
  [[ -d $root ]] || return 0
  find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u
}

stop_node() { # i [keep-dir]
  local i=$1 d pids=() f h
  d=$(node_dir "$i")
  for f in "$d"/*.pid; do
    [[ -s $f ]] && pid_alive "$f" && pids+=("$(<"$f")")
  done
  for _ in 1 2 3; do
    # shellcheck disable=SC2207
    pids+=($(cg_pids "$i"))
    kill_pids "${pids[@]}"
    pids=()
    [[ -z $(cg_pids "$i") ]] && break
  done
  for h in "${CG_HIER[@]}"; do
    [[ -d /sys/fs/cgroup/$h/knit-node$i ]] || continue
    find "/sys/fs/cgroup/$h/knit-node$i" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  ip link del "$(veth_c "$i")" 2>/dev/null || true
  ip link del "$(veth_x "$i")" 2>/dev/null || true
  [[ ${2:-} == keep-dir ]] || rm -rf "$d"
}

stop_leftover_processes() {
  # processes started by this harness whose pid files are gone: their command line names $CL
  local p
  local pids=()
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$$" ]] && continue
    tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$CL/" && pids+=("$p")
  done
  kill_pids "${pids[@]}"
}

down() {
  local f i
  for f in "$CL"/node*; do
    [[ -d $f ]] || continue
    i=${f##*/node}
    [[ $i =~ ^[0-9]+$ ]] || continue
    stop_node "$i"
    log "node$i removed"
  done
  # nodes whose directory is gone but whose cgroups remain
  for f in /sys/fs/cgroup/pids/knit-node*; do
    [[ -d $f ]] && stop_node "${f##*/knit-node}"
  done
  local pids=()
  for f in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    pid_alive "$CL/$f.pid" && pids+=("$(<"$CL/$f.pid")")
  done
  kill_pids "${pids[@]}"
  stop_leftover_processes
  if [[ -s $CL/sysctl.saved ]]; then
    while IFS="=" read -r k v; do sysctl -qw "$k=$v" || true; done <"$CL/sysctl.saved"
  fi
  nft delete table inet "$NFT_TABLE" 2>/dev/null || true
  ip link del "$BR" 2>/dev/null || true
  ip link del "$EXT_BR" 2>/dev/null || true
  # mounts must never leak to the host namespace, but clean up if one did
  local m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v p="$CL/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  if [[ -s $CL/created-host-dirs ]]; then
    tac "$CL/created-host-dirs" | while read -r f; do rmdir "$f" 2>/dev/null || true; done
  fi
  rm -rf "$CL" "$KUBECONFIG_ADMIN"
  log "cluster down"
}

# ---------------------------------------------------------------- up
up() {
  local t0 i started
  t0=$(date +%s%N); started=$(date '+%F %T %Z')
  for f in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    [[ -x $BIN/$f ]] || die "$BIN/$f missing: run 'make k8s-binaries'"
  done
  for f in pause testimage knit; do
    [[ -s $IMAGES/$f.tar ]] || die "$IMAGES/$f.tar missing: run 'make images'"
  done
  mkdir -p "$CL/logs"
  ensure_packages
  check_ranges
  ensure_host_network
  ensure_ext_dhcp
  ensure_pki
  ensure_host_mountpoints
  save_sysctls
  ensure_control_plane

  # nodes beyond NODES from an earlier run
  for f in "$CL"/node*; do
    [[ -d $f ]] || continue
    i=${f##*/node}
    if [[ $i =~ ^[0-9]+$ ]] && ((i > NODES)); then
      stop_node "$i"; kubectl_admin delete node "node$i" --ignore-not-found >/dev/null; log "node$i removed"
    fi
  done
  for ((i = 1; i <= NODES; i++)); do start_node "$i"; done
  # image imports dominate a node's start: all nodes at once
  local pids=() p
  for ((i = 1; i <= NODES; i++)); do start_node_2 "$i" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || die "a node failed to start (see above)"; done
  cluster_network
  for ((i = 1; i <= NODES; i++)); do
    poll 60 "node$i kubelet healthz" kubelet_healthy "$i" || { tail -20 "$(node_dir "$i")/logs/kubelet.log" >&2; die "node$i kubelet unhealthy"; }
  done
  log "kubelets healthy, waiting for Ready"
  poll 120 "all $NODES nodes Ready" nodes_ready || { kubectl_admin get nodes >&2 || true; die "nodes not Ready"; }
  kubectl_admin get nodes -o wide
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf 'cluster-up: %d nodes Ready in %d.%03ds (started at %s)\n' "$NODES" $((ms / 1000)) $((ms % 1000)) "$started"
  echo "kubectl --kubeconfig $KUBECONFIG_ADMIN get nodes"
}

status() {
  local f i
  for f in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    if pid_alive "$CL/$f.pid"; then echo "$f: running (pid $(<"$CL/$f.pid"))"; else echo "$f: down"; fi
  done
  for f in "$CL"/node*; do
    [[ -d $f ]] || continue
    i=${f##*/node}
    printf 'node%s: holder=%s containerd=%s kubelet=%s\n' "$i" \
      "$(holder_pid "$i" || echo down)" \
      "$(pid_alive "$f/containerd.pid" && cat "$f/containerd.pid" || echo down)" \
      "$(pid_alive "$f/kubelet.pid" && cat "$f/kubelet.pid" || echo down)"
  done
  [[ -s $KUBECONFIG_ADMIN ]] && kubectl_admin get nodes -o wide 2>/dev/null || true
}

case ${1:-} in
  deps) mkdir -p "$OUT"; ensure_packages ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|deps" >&2; exit 2 ;;
esac
