#!/bin/sh
# /init of the full-kernel lane's initramfs (busybox sh, PID 1).
#
# Layout (see run.sh):
#   /lane/modules.list      guest paths of the .ko files to insmod, in order,
#                           each followed by its parameters
#   /lane/run/nonce         per-run random token echoed in every marker
#   /lane/run/env           extra KEY=VALUE lines exported for the tests
#   /lane/run/NNN/name      display name of test binary NNN
#   /lane/run/NNN/exe/NAME  the test binary
#   /lane/run/NNN/args      its arguments, one per line
#   /lane/run/NNN/pkg/      its working directory (package testdata, if any)
#
# Markers (parsed by run.sh, always at the start of a line):
#   KNIT-LANE: booted NONCE uptime=SECS modfail=N
#   KNIT-LANE: result NONCE NNN exit=RC secs=S name=NAME
#   KNIT-LANE: done NONCE total=N failed=N modfail=N
# If this script dies, the kernel panics (init exited), panic=-1 reboots and
# qemu -no-reboot exits: run.sh then sees no done marker and fails.

export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root TMPDIR=/tmp

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /run/netns /run/lock /var/lib /var/tmp
chmod 1777 /var/tmp

# Keep kernel messages (e.g. "bridge: ... entered promiscuous mode") from
# interleaving with test output on the serial console; panics still show.
echo 1 >/proc/sys/kernel/printk
hostname knit-lane
ip link set lo up

exec </dev/null

# New network namespaces must start with nothing but lo, as on a host whose
# tunnel modules are loaded late: no fallback gre0/tunl0/sit0/... devices.
sysctl -q -w net.core.fb_tunnels_only_for_init_net=2

modfail=0
while read -r ko params; do
	[ -n "$ko" ] || continue
	# shellcheck disable=SC2086 # params are word-split on purpose
	if ! out=$(insmod "$ko" $params 2>&1); then
		case "$out" in
		*"File exists"*) ;;
		# CPU-specific crypto drivers (e.g. crc32c-intel, a softdep of
		# libcrc32c) refuse a CPU without the instructions; the generic
		# implementation is loaded too.
		*/arch/x86/crypto/*"No such device"*) ;;
		*)
			echo "kernel-lane: insmod $ko failed: $out"
			modfail=$((modfail + 1))
			;;
		esac
	fi
done </lane/modules.list

nonce=$(cat /lane/run/nonce)
while IFS= read -r kv; do
	# shellcheck disable=SC2163 # kv is KEY=VALUE
	[ -z "$kv" ] || export "$kv"
done </lane/run/env
export KNIT_KERNEL_LANE=1

read -r up _ </proc/uptime
printf '\nKNIT-LANE: booted %s uptime=%s modfail=%s\n' "$nonce" "$up" "$modfail"

total=0
failed=0
for d in /lane/run/[0-9]*; do
	[ -d "$d" ] || continue
	n=${d##*/}
	name=$(cat "$d/name")
	set --
	while IFS= read -r a; do
		set -- "$@" "$a"
	done <"$d/args"
	printf '\nKNIT-LANE: start %s %s name=%s\n' "$nonce" "$n" "$name"
	start=$(date +%s)
	(cd "$d/pkg" && exec "$d/exe/$name" "$@") 2>&1
	rc=$?
	end=$(date +%s)
	total=$((total + 1))
	[ "$rc" -eq 0 ] || failed=$((failed + 1))
	printf '\nKNIT-LANE: result %s %s exit=%s secs=%s name=%s\n' "$nonce" "$n" "$rc" "$((end - start))" "$name"
done

if [ "$failed" -ne 0 ] || [ "$modfail" -ne 0 ]; then
	echo "kernel-lane: last kernel messages:"
	dmesg | tail -n 30
fi
printf '\nKNIT-LANE: done %s total=%s failed=%s modfail=%s\n' "$nonce" "$total" "$failed" "$modfail"
sync
poweroff -f
sleep 5
