#!/usr/bin/env bash
# Runs every Go fuzz target for FUZZTIME each and keeps what the fuzzer
# found interesting as seed corpus under the package's testdata/fuzz/, so
# plain `go test` (and so `make test`) replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
cache=$(go env GOCACHE)/fuzz
status=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== $pkg $target ($FUZZTIME)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
      status=1 # a crasher is written to testdata/fuzz by go test itself
    fi
    found="$cache/$pkg/$target"
    if [[ -d $found ]]; then
      mkdir -p "$dir/testdata/fuzz/$target"
      cp -n "$found"/* "$dir/testdata/fuzz/$target/" 2>/dev/null || true
    fi
  done
done
exit $status
