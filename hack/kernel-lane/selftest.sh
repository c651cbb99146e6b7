#!/usr/bin/env bash
# make test-kernel-selftest: the lane must pass its self-test (ipvlan, vlan,
# dummy, bond, vrf, bridge vlan filtering inside the VM) and must report a
# deliberately failing test as a failure.
set -euo pipefail
LANE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$LANE_DIR/../.."
work=${KERNEL_LANE_WORK:-$LANE_DIR/_work}
mkdir -p "$work"
tmp=$(mktemp -d "$work/selftest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
bin=$tmp/selftest.test
CGO_ENABLED=0 go test -c -o "$bin" ./hack/kernel-lane/selftest

"$LANE_DIR/run.sh" -timeout 300 -- "$bin" -test.v -test.timeout 2m

set +e
"$LANE_DIR/run.sh" -timeout 300 -e KNIT_LANE_SELFTEST_FAIL=1 -- "$bin" -test.v -test.run '^TestLaneFail$' >"$bin.fail.log" 2>&1
rc=$?
set -e
if [ "$rc" != 1 ] || ! grep -q 'deliberate failure' "$bin.fail.log"; then
	cat "$bin.fail.log"
	echo "kernel-lane: self-test: a failing test was not reported as a failure (exit $rc)" >&2
	exit 1
fi
echo "kernel-lane: self-test: failing test correctly reported (exit $rc)"
