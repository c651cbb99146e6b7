#!/usr/bin/env bash
# Full-kernel test lane: run compiled Go test binaries inside a throwaway
# qemu (TCG) VM booted with Debian's stock kernel, which has the link types,
# qdiscs and netfilter modules the host kernel lacks.
#
#   run.sh [options] -- TESTBINARY [args...]
#   run.sh [options] -bins BIN[=PKGDIR]... [-- args...]
#   run.sh -build-only
#
# Build test binaries static: CGO_ENABLED=0 go test -c -o X ./pkg/foo
# In -bins mode every binary gets the same args. PKGDIR (or -C DIR in the
# single-binary mode) is the package source directory: its top-level files and
# testdata/ are copied to the binary's working directory in the guest, as
# `go test` would run it from there.
#
# Options:
#   -m MiB        guest memory (default 1024; raised automatically when the
#                 test binaries need more room in the initramfs)
#   -smp N        guest CPUs (default 2)
#   -timeout S    kill the VM after S seconds (default 600)
#   -e KEY=VAL    export KEY=VAL to the tests in the guest (repeatable);
#                 KNIT_KERNEL_LANE=1 is always set
#   -C DIR        package dir of the single binary (see above)
#   -add SRC[=DST] copy the file or directory SRC to the absolute path DST
#                 (default SRC) in the guest (repeatable), e.g. a plugin
#                 directory; shared libraries of dynamic executables are
#                 copied along (ldd)
#   -k VMLINUZ    kernel image (default: newest /boot/vmlinuz-* that has
#                 /lib/modules/VERSION; env KERNEL_LANE_KERNEL)
#   -build-only   only (re)build the cached base initramfs
#   -keep         keep the per-run directory (initrd, console log)
#
# Env: KERNEL_LANE_QEMU_ARGS (extra qemu arguments, word-split),
# KERNEL_LANE_KERNEL, KERNEL_LANE_WORK (cache dir, default ./_work).
#
# Exit status: 0 only if the guest printed the end marker for this run
# (random nonce), every binary printed its result marker with exit=0 and
# all modules loaded. 1 on test failure, 2 on usage error, 3 when the VM
# crashed, timed out or printed no result.
set -euo pipefail

LANE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${KERNEL_LANE_WORK:-$LANE_DIR/_work}

MEM=1024
SMP=2
TIMEOUT=600
KERNEL=${KERNEL_LANE_KERNEL:-}
PKGDIR=
BUILD_ONLY=0
KEEP=0
ENVS=()
ADDS=()
SPECS=()
ARGS=()

log() { printf 'kernel-lane: %s\n' "$*" >&2; }
die() { log "error: $1"; exit "${2:-2}"; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 2; }

need_val() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
	case "$1" in
	-m) need_val "$@"; MEM=$2; shift 2 ;;
	-smp) need_val "$@"; SMP=$2; shift 2 ;;
	-timeout) need_val "$@"; TIMEOUT=$2; shift 2 ;;
	-e) need_val "$@"; ENVS+=("$2"); shift 2 ;;
	-add) need_val "$@"; ADDS+=("$2"); shift 2 ;;
	-C) need_val "$@"; PKGDIR=$2; shift 2 ;;
	-k) need_val "$@"; KERNEL=$2; shift 2 ;;
	-build-only) BUILD_ONLY=1; shift ;;
	-keep) KEEP=1; shift ;;
	-h | -help | --help) usage ;;
	-bins)
		shift
		while [ $# -gt 0 ] && [ "$1" != "--" ]; do SPECS+=("$1"); shift; done
		[ ${#SPECS[@]} -gt 0 ] || die "-bins needs at least one binary"
		if [ $# -gt 0 ]; then shift; ARGS=("$@"); fi
		set --
		;;
	--)
		shift
		[ ${#SPECS[@]} -eq 0 ] || die "use either -bins or -- BINARY"
		[ $# -gt 0 ] || die "no test binary after --"
		SPECS=("$1${PKGDIR:+=$PKGDIR}"); shift
		ARGS=("$@")
		set --
		;;
	*) die "unknown argument '$1' (see -h)" ;;
	esac
done
[[ $MEM =~ ^[0-9]+$ ]] || die "-m wants MiB, got '$MEM'"
[[ $SMP =~ ^[0-9]+$ ]] || die "-smp wants a number, got '$SMP'"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "-timeout wants seconds, got '$TIMEOUT'"
[ $BUILD_ONLY = 1 ] || [ ${#SPECS[@]} -gt 0 ] || usage
for kv in "${ENVS[@]}"; do
	[[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "-e wants KEY=VALUE, got '$kv'"
	[[ $kv != *$'\n'* ]] || die "-e value must not contain a newline"
done
for a in "${ARGS[@]}"; do
	[[ $a != *$'\n'* ]] || die "test arguments must not contain a newline"
done

# --- host packages -----------------------------------------------------------
ensure_packages() {
	local missing=("$@")
	command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
	command -v cpio >/dev/null || missing+=(cpio)
	{ command -v depmod && command -v modprobe; } >/dev/null 2>&1 || missing+=(kmod)
	dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
	if [ -z "$KERNEL" ] && ! compgen -G '/boot/vmlinuz-*' >/dev/null; then
		missing+=(linux-image-amd64)
	fi
	[ ${#missing[@]} -gt 0 ] || return 0
	log "installing ${missing[*]}"
	local sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq >&2
	$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
ensure_packages
export PATH=$PATH:/usr/sbin:/sbin

if [ -z "$KERNEL" ]; then
	KERNEL=$(for k in /boot/vmlinuz-*; do
		if [ -d "/lib/modules/${k#/boot/vmlinuz-}" ]; then echo "$k"; fi
	done | sort -V | tail -n1)
	[ -n "$KERNEL" ] || die "no /boot/vmlinuz-* with matching /lib/modules" 3
fi
[ -r "$KERNEL" ] || die "cannot read kernel $KERNEL" 3
KVER=${KERNEL##*/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || die "no $MODDIR/modules.dep for kernel $KERNEL" 3
# Compressed modules are decompressed at build time.
if grep -q '\.ko\.zst:' "$MODDIR/modules.dep" && ! command -v zstd >/dev/null; then
	ensure_packages zstd
fi
if grep -q '\.ko\.xz:' "$MODDIR/modules.dep" && ! command -v xz >/dev/null; then
	ensure_packages xz-utils
fi

# --- cached base initramfs (busybox, init, modules) --------------------------
# Rebuilt when any input changes: this script, init.sh, modules.txt, the
# kernel, its module tree and busybox.
base_key() {
	{
		echo "kver=$KVER"
		stat -L -c '%n %s %Y' "$KERNEL" "$MODDIR/modules.dep" /bin/busybox
		sha256sum "$LANE_DIR/run.sh" "$LANE_DIR/init.sh" "$LANE_DIR/modules.txt"
	} | sha256sum | cut -c1-16
}

build_base() {
	local out=$1 tmp stage rel m line path any
	tmp=$(mktemp -d "$WORK/base.tmp.XXXXXX")
	stage=$tmp/root
	mkdir -p "$stage"/{bin,dev,proc,sys,tmp,run,root,etc,lane,var,lib/modules/"$KVER"}
	ln -s bin "$stage/sbin"
	mkdir -p "$stage/usr"
	ln -s ../bin "$stage/usr/bin"
	ln -s ../bin "$stage/usr/sbin"
	ln -s ../run "$stage/var/run"

	cp /bin/busybox "$stage/bin/busybox"
	for app in $(/bin/busybox --list); do
		[ "$app" = busybox ] || ln -s busybox "$stage/bin/$app"
	done
	install -m 0755 "$LANE_DIR/init.sh" "$stage/init"

	printf '127.0.0.1\tlocalhost knit-lane\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$stage/etc/hosts"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$stage/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
	printf 'hosts: files dns\n' >"$stage/etc/nsswitch.conf"
	: >"$stage/etc/resolv.conf"
	echo knit-lane >"$stage/etc/hostname"
	for f in /etc/protocols /etc/services; do [ -f "$f" ] && cp "$f" "$stage/etc/"; done

	# Resolve the module list with the host's modprobe against the target
	# kernel's modules.dep (dependencies first), copy + decompress the .ko
	# files, then depmod the staging tree so the guest's modprobe works too.
	local -A seen=() modparams=()
	local order=()
	while IFS= read -r line || [ -n "$line" ]; do
		line=${line%%#*}
		read -r m params <<<"$line" || true
		[ -n "$m" ] || continue
		local optional=0
		if [[ $m == *\? ]]; then optional=1; m=${m%\?}; fi
		[ -z "$params" ] || modparams[${m//-/_}]=$params
		local deps
		if ! deps=$(modprobe -S "$KVER" --show-depends "$m" 2>&1); then
			if [ $optional = 1 ]; then log "optional module $m not available, skipped"; continue; fi
			rm -rf "$tmp"
			die "module $m: $deps" 3
		fi
		any=0
		while read -r kind path _; do
			case "$kind" in
			insmod)
				any=1
				if [ -z "${seen[$path]:-}" ]; then seen[$path]=1; order+=("$path"); fi
				;;
			builtin) any=1 ;;
			esac
		done <<<"$deps"
		[ $any = 1 ] || { rm -rf "$tmp"; die "module $m: unexpected modprobe output: $deps" 3; }
	done <"$LANE_DIR/modules.txt"

	: >"$stage/lane/modules.list"
	for path in "${order[@]}"; do
		rel=${path#*/modules/"$KVER"/}
		local dst=$stage/lib/modules/$KVER/${rel%.*}
		case "$path" in
		*.ko) dst=$stage/lib/modules/$KVER/$rel ;;
		esac
		mkdir -p "$(dirname "$dst")"
		case "$path" in
		*.ko) cp "$path" "$dst" ;;
		*.ko.xz) xz -dc "$path" >"$dst" ;;
		*.ko.zst) zstd -q -dc "$path" >"$dst" ;;
		*.ko.gz) gzip -dc "$path" >"$dst" ;;
		*) rm -rf "$tmp"; die "unsupported module file $path" 3 ;;
		esac
		local base=${dst##*/}
		base=${base%.ko}
		echo "/lib/modules/$KVER/${dst#"$stage/lib/modules/$KVER/"} ${modparams[${base//-/_}]:-}" >>"$stage/lane/modules.list"
	done
	for f in modules.order modules.builtin modules.builtin.modinfo; do
		[ -f "$MODDIR/$f" ] && cp "$MODDIR/$f" "$stage/lib/modules/$KVER/"
	done
	depmod -b "$stage" "$KVER"

	(cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc -R 0:0 --quiet) >"$tmp/base.cpio"
	# The appended per-run archive must start 4-byte aligned; pad to 512.
	truncate -s "%512" "$tmp/base.cpio"
	log "built base initramfs: ${#order[@]} modules, $(($(stat -c %s "$tmp/base.cpio") / 1024)) KiB"
	mv "$tmp/base.cpio" "$out"
	rm -rf "$tmp"
}

mkdir -p "$WORK"
KEY=$(base_key)
BASE=$WORK/base-$KVER-$KEY.cpio
if [ ! -f "$BASE" ]; then
	exec 9>"$WORK/.lock"
	flock 9
	if [ ! -f "$BASE" ]; then
		t0=$EPOCHREALTIME
		build_base "$BASE"
		log "initramfs build took $(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME-$t0}")s"
		# Drop stale bases (not ones a concurrent run may be about to boot).
		find "$WORK" -maxdepth 1 -name 'base-*.cpio' ! -path "$BASE" -mmin +60 -delete
	fi
	flock -u 9
	exec 9>&-
fi
[ $BUILD_ONLY = 0 ] || { log "base initramfs: $BASE"; exit 0; }

# --- per-run archive (test binaries) -----------------------------------------
mkdir -p "$WORK/runs"
# leftovers of runs that were killed hard
find "$WORK/runs" -mindepth 1 -maxdepth 1 -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
RUN=$(mktemp -d "$WORK/runs/run.XXXXXX")
QPID=
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
	[ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true
	if [ "$KEEP" = 1 ]; then log "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NONCE=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
lane=$RUN/root/lane/run
mkdir -p "$lane"
echo "$NONCE" >"$lane/nonce"
: >"$lane/env"
for kv in "${ENVS[@]}"; do printf '%s\n' "$kv" >>"$lane/env"; done

NAMES=()
i=0
for spec in "${SPECS[@]}"; do
	bin=${spec%%=*}
	pkg=
	[[ $spec != *=* ]] || pkg=${spec#*=}
	{ [ -f "$bin" ] && [ -x "$bin" ]; } || die "test binary '$bin' is not an executable file"
	[ "$(head -c4 "$bin" | od -An -c | tr -d ' ')" = '177ELF' ] || die "'$bin' is not an ELF binary"
	n=$(printf '%03d' "$i")
	d=$lane/$n
	mkdir -p "$d/pkg"
	name=$(basename "$bin")
	NAMES+=("$name")
	echo "$name" >"$d/name"
	mkdir -p "$d/exe"
	ln "$(realpath "$bin")" "$d/exe/$name" 2>/dev/null || cp "$bin" "$d/exe/$name"
	: >"$d/args"
	for a in "${ARGS[@]}"; do printf '%s\n' "$a" >>"$d/args"; done
	if [ -n "$pkg" ]; then
		[ -d "$pkg" ] || die "package dir '$pkg' does not exist"
		find "$pkg" -maxdepth 1 -type f -exec cp -t "$d/pkg" {} +
		[ ! -d "$pkg/testdata" ] || cp -rL "$pkg/testdata" "$d/pkg/"
	fi
	i=$((i + 1))
done
COUNT=$i

for spec in "${ADDS[@]}"; do
	src=${spec%%=*}
	dst=$src
	[[ $spec != *=* ]] || dst=${spec#*=}
	[ -e "$src" ] || die "-add: '$src' does not exist"
	[[ $dst == /* ]] || die "-add: guest path '$dst' must be absolute"
	[[ $dst != /lane* ]] || die "-add: /lane is reserved"
	mkdir -p "$RUN/root$(dirname "$dst")"
	cp -aH "$src" "$RUN/root$dst"
done

# Dynamic executables (added tools, cgo test binaries) get their libraries.
while IFS= read -r -d '' f; do
	[ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
	libs=$(ldd "$f" 2>/dev/null | grep -oE '(^|[[:space:]])/[^[:space:]]+' || true)
	for lib in $libs; do
		[ -e "$RUN/root$lib" ] || { mkdir -p "$RUN/root$(dirname "$lib")" && cp -L "$lib" "$RUN/root$lib"; }
	done
done < <(find "$RUN/root" -type f -perm -u+x -print0)

(cd "$RUN/root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc -R 0:0 --quiet) >"$RUN/run.cpio"
cat "$BASE" "$RUN/run.cpio" >"$RUN/initrd"
rm -f "$RUN/run.cpio"

# The initrd is copied into guest RAM and unpacked into tmpfs: make sure the
# binaries fit next to the tests' own needs.
initrd_mib=$(($(stat -c %s "$RUN/initrd") / 1048576))
need=$((2 * initrd_mib + 512))
if [ "$MEM" -lt "$need" ]; then
	log "raising guest memory from ${MEM} MiB to ${need} MiB (initrd ${initrd_mib} MiB)"
	MEM=$need
fi

# --- boot ----------------------------------------------------------------------
log "booting $KERNEL (${COUNT} test binaries, ${initrd_mib} MiB initrd, ${MEM} MiB, ${SMP} vCPUs, timeout ${TIMEOUT}s)"
mkfifo "$RUN/console"
T0=$EPOCHREALTIME
# -cpu max gives the guest RDRAND, so its random pool is ready at once:
# without it getrandom() blocks for minutes (crypto/rand in DHCP xids).
# shellcheck disable=SC2086 # KERNEL_LANE_QEMU_ARGS is word-split on purpose
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
	-accel tcg -cpu max -m "$MEM" -smp "$SMP" \
	-nographic -nodefaults -no-user-config -serial stdio -monitor none \
	-nic none -no-reboot \
	-kernel "$KERNEL" -initrd "$RUN/initrd" \
	-append "console=ttyS0 quiet panic=-1" \
	${KERNEL_LANE_QEMU_ARGS:-} \
	</dev/null >"$RUN/console" 2>&1 &
QPID=$!

BOOTED_AT=
: >"$RUN/console.log"
esc=$'\e'
while IFS= read -r line || [ -n "$line" ]; do
	line=${line//$'\r'/}
	# terminal control from SeaBIOS/qemu (clear screen, reset, line wrap)
	while [[ $line =~ $esc(\[[0-9\;?]*[A-Za-z]|c) ]]; do
		line=${line/"${BASH_REMATCH[0]}"/}
	done
	printf '%s\n' "$line"
	printf '%s\n' "$line" >>"$RUN/console.log"
	if [ -z "$BOOTED_AT" ] && [[ $line == "KNIT-LANE: booted $NONCE "* ]]; then
		BOOTED_AT=$EPOCHREALTIME
	fi
done <"$RUN/console"
set +e
wait "$QPID"
QRC=$?
set -e
QPID=
T1=$EPOCHREALTIME

# --- verdict -------------------------------------------------------------------
secs() { awk "BEGIN{printf \"%.1f\", $2-$1}"; }
CLOG=$RUN/console.log
if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
	log "FAIL: VM timed out after ${TIMEOUT}s"
	VERDICT=3
elif [ "$QRC" != 0 ]; then
	log "FAIL: qemu exited with status $QRC"
	VERDICT=3
else
	VERDICT=0
fi

passed=0
failed=0
for ((i = 0; i < COUNT; i++)); do
	n=$(printf '%03d' "$i")
	r=$(grep -E "^KNIT-LANE: result $NONCE $n exit=[0-9]+ " "$CLOG" | tail -n1 || true)
	if [ -z "$r" ]; then
		log "FAIL: ${NAMES[$i]}: no result marker (did not run or VM died)"
		failed=$((failed + 1))
		[ $VERDICT != 0 ] || VERDICT=3
		continue
	fi
	rc=${r#* exit=}
	rc=${rc%% *}
	if [ "$rc" = 0 ]; then
		passed=$((passed + 1))
	else
		log "FAIL: ${NAMES[$i]} exited with status $rc"
		failed=$((failed + 1))
		[ $VERDICT != 0 ] || VERDICT=1
	fi
done

done_line=$(grep -E "^KNIT-LANE: done $NONCE " "$CLOG" | tail -n1 || true)
if [ -z "$done_line" ]; then
	log "FAIL: no end marker from the guest (crash, panic or timeout)"
	[ $VERDICT != 0 ] || VERDICT=3
elif [[ $done_line != *" total=$COUNT "* ]]; then
	log "FAIL: guest ran a different number of binaries than expected ($COUNT): $done_line"
	[ $VERDICT != 0 ] || VERDICT=3
elif [[ $done_line != *" modfail=0" ]]; then
	log "FAIL: kernel modules failed to load: $done_line"
	[ $VERDICT != 0 ] || VERDICT=3
fi

boot="n/a"
[ -z "$BOOTED_AT" ] || boot="$(secs "$T0" "$BOOTED_AT")s"
guest_up=$(sed -n "s/^KNIT-LANE: booted $NONCE uptime=\([0-9.]*\) .*/\1/p" "$CLOG" | head -n1)
tests="n/a"
[ -z "$BOOTED_AT" ] || tests="$(secs "$BOOTED_AT" "$T1")s"
log "timing: boot ${boot} (guest uptime at init ${guest_up:-n/a}${guest_up:+s}, incl. module loading), tests+poweroff ${tests}, total $(secs "$T0" "$T1")s"
if [ $VERDICT = 0 ]; then
	echo "kernel-lane: PASS"
else
	echo "kernel-lane: FAIL"
fi
echo "kernel-lane: $passed passed, $failed failed"
exit $VERDICT
