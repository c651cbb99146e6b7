#!/usr/bin/env bash
# make test-kernel: compile the test binaries of every package with tests
# under $KERNEL_LANE_PKGS (plus the lane's self-test) and run them all in ONE
# full-kernel lane VM with KNIT_KERNEL_LANE=1.
#
# Env (all optional):
#   KERNEL_LANE_PKGS          package patterns (default "./pkg/... ./plugins/...")
#   KERNEL_LANE_RUN           -test.run regexp (default: the tests that call
#                             testutil.RequireKernelFeature, found in the sources:
#                             everything else already ran on the host)
#   KERNEL_LANE_ALL=1         run every test of every package instead
#   KERNEL_LANE_SKIP          -test.skip regexp (default: none)
#   KERNEL_LANE_TEST_TIMEOUT  per-binary -test.timeout (default 10m)
#   KERNEL_LANE_TIMEOUT       whole-VM timeout in seconds (default 2400)
#   KERNEL_LANE_MEM           guest MiB (default 1024, raised as needed)
#   KERNEL_LANE_TESTFLAGS     extra test binary flags (default -test.v)
#   KERNEL_LANE_FLAGS         extra run.sh flags (e.g. "-add /usr/sbin/nft")
#   KERNEL_LANE_REF=0         don't ship /usr/lib/cni (reference plugins)
set -euo pipefail

LANE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$LANE_DIR/../.." && pwd)
cd "$ROOT"

PKGS=${KERNEL_LANE_PKGS:-./pkg/... ./plugins/...}
WORK=${KERNEL_LANE_WORK:-$LANE_DIR/_work}
log() { printf 'kernel-lane: %s\n' "$*" >&2; }

# Per-run build dir: other checkouts' users may run the lane concurrently.
mkdir -p "$WORK"
OUT=$(mktemp -d "$WORK/build.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
mkdir -p "$OUT/tests" "$OUT/plugins"

# shellcheck disable=SC2086 # PKGS is a list of patterns
mapfile -t LINES < <(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{"\t"}}{{.Dir}}{{end}}' \
	$PKGS ./hack/kernel-lane/selftest)
[ ${#LINES[@]} -gt 0 ] || { log "no packages with tests"; exit 1; }
MOD=$(go list -m)

# kernel_tests DIR: the top-level tests in DIR's test files that call
# testutil.RequireKernelFeature: the ones the host skipped.
kernel_tests() {
	awk '/^func Test[A-Za-z0-9_]*\(/ { name = $2; sub(/\(.*/, "", name) }
	     /RequireKernelFeature\(/ && name != "" { print name }' "$1"/*_test.go 2>/dev/null | sort -u
}
NAMES=()
if [ -z "${KERNEL_LANE_ALL:-}" ] && [ -z "${KERNEL_LANE_RUN:-}" ]; then
	KEEP=()
	for l in "${LINES[@]}"; do
		mapfile -t t < <(kernel_tests "${l#*$'\t'}")
		[ ${#t[@]} -gt 0 ] || continue
		KEEP+=("$l")
		NAMES+=("${t[@]}")
	done
	LINES=("${KEEP[@]}")
	KERNEL_LANE_RUN="^($(IFS='|'; echo "${NAMES[*]}"))\$"
	log "${#NAMES[@]} tests need kernel features, in ${#LINES[@]} packages"
fi

t0=$EPOCHREALTIME
SPECS=()
: >"$OUT/build.list"
for l in "${LINES[@]}"; do
	imp=${l%%$'\t'*}
	dir=${l#*$'\t'}
	rel=${imp#"$MOD"/}
	name=${rel//\//_}.test
	printf '%s\t%s\n' "$imp" "$OUT/tests/$name" >>"$OUT/build.list"
	SPECS+=("$OUT/tests/$name=$dir")
done
log "compiling ${#SPECS[@]} test binaries"
# Two builds at a time: go parallelizes compiling, linking is serial.
export CGO_ENABLED=0
# shellcheck disable=SC2016 # $1/$2 are sh -c's
if ! awk -F'\t' '{print $1; print $2}' "$OUT/build.list" |
	xargs -d '\n' -n 2 -P 2 sh -c 'go test -c -o "$2" "$1" || { echo "kernel-lane: building $1 failed" >&2; exit 255; }' sh; then
	log "compiling test binaries failed"
	exit 1
fi

# Plugins as testutil.PluginDir would build them (the guest has no Go).
FLAGS=()
if [ -d cmd/knit-plugin ]; then
	go build -o "$OUT/plugins/knit-plugin" ./cmd/knit-plugin || { log "building cmd/knit-plugin failed"; exit 1; }
	for n in $("$OUT/plugins/knit-plugin" list); do
		ln "$OUT/plugins/knit-plugin" "$OUT/plugins/$n"
	done
	FLAGS+=(-add "$OUT/plugins=/opt/knit/bin" -e KNIT_BIN_DIR=/opt/knit/bin)
fi
# Reference plugins for side-by-side tests (testutil.RequireRef).
if [ "${KERNEL_LANE_REF:-1}" != 0 ] && [ -d /usr/lib/cni ]; then
	FLAGS+=(-add /usr/lib/cni)
fi
log "build took $(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME-$t0}")s"

# shellcheck disable=SC2206 # word-split on purpose
TESTFLAGS=(${KERNEL_LANE_TESTFLAGS--test.v} -test.timeout "${KERNEL_LANE_TEST_TIMEOUT:-10m}")
[ -z "${KERNEL_LANE_RUN:-}" ] || TESTFLAGS+=(-test.run "$KERNEL_LANE_RUN")
[ -z "${KERNEL_LANE_SKIP:-}" ] || TESTFLAGS+=(-test.skip "$KERNEL_LANE_SKIP")

# shellcheck disable=SC2206
EXTRA=(${KERNEL_LANE_FLAGS:-})
"$LANE_DIR/run.sh" -m "${KERNEL_LANE_MEM:-1024}" -timeout "${KERNEL_LANE_TIMEOUT:-2400}" \
	"${FLAGS[@]}" "${EXTRA[@]}" -bins "${SPECS[@]}" -- "${TESTFLAGS[@]}"
