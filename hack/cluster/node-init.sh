#!/usr/bin/env bash
# Runs as the first process inside a node's fresh net/mount/uts namespaces
# (started by cluster.sh via `unshare --net --mount --uts --fork --propagation private`).
# Sets up the node's private view of the filesystem, then becomes the
# namespace holder (`sleep infinity`) that containerd/kubelet/node-exec enter.
set -euo pipefail
i=$1 dir=$2
. "$(dirname "$0")/lib.sh"

# Join the node's bookkeeping cgroup so cluster-down can find every process.
echo $$ > "/sys/fs/cgroup/pids/knit-node$i/system/cgroup.procs"

hostname "node$i"
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /run/netns

# sysfs for this netns (so /sys/class/net shows the node's links), keeping the cgroup mounts.
mkdir -p /run/.knit-cg
mount --rbind /sys/fs/cgroup /run/.knit-cg
mount -t sysfs sysfs /sys
mount --move /run/.knit-cg /sys/fs/cgroup
rmdir /run/.knit-cg

for d in "${NODE_BINDS[@]}"; do
  mount --bind "$dir/root/$d" "/$d"
done
mount --bind "$dir/hosts" /etc/hosts
mount --bind "$dir/resolv.conf" /etc/resolv.conf
# Like a systemd host, the node's mounts are shared, so that pods can use mountPropagation
# (e.g. a CNI daemon's hostPath /run/netns with HostToContainer sees the netns bind mounts
# containerd makes later). The peer groups are new, private to this namespace: nothing
# propagates to or from the machine's own mounts (unshare --propagation private).
mount --make-rshared /

ip link set lo up
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv6.conf.all.forwarding=1 || true
sysctl -qw net.ipv4.conf.all.rp_filter=0 || true

echo $$ > "$dir/holder.pid"
exec sleep infinity
