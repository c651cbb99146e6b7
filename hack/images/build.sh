#!/usr/bin/env bash
# Build the harness's OCI image archives into _output/images/ (no registry):
#   testimage.tar  knit.local/testimage:latest   busybox-static + applet symlinks
#   knit.tar       knit.local/knit:latest        every binary in bin/ (+ busybox for sh/cp)
#   pause.tar      $PAUSE_IMAGE                  tiny Go pause process (containerd sandbox_image)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/_output/images"
PAUSE_IMAGE=${PAUSE_IMAGE:-registry.k8s.io/pause:3.10.1}
BUSYBOX=${BUSYBOX:-/bin/busybox}
mkdir -p "$OUT/tools"
[[ -x $BUSYBOX ]] || { echo "busybox-static missing ($BUSYBOX): apt-get install busybox-static" >&2; exit 1; }
file -b "$BUSYBOX" 2>/dev/null | grep -q 'dynamically' && { echo "$BUSYBOX is not static" >&2; exit 1; }

cd "$ROOT"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$OUT/tools/mkimage" ./hack/images/mkimage
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$OUT/tools/pause" ./hack/images/pause
MK="$OUT/tools/mkimage"

# busybox applet symlinks (sh, ip, ping, nc, sleep, cat, ...), and /var/run -> /run as on
# any distribution (CNI_NETNS paths are /var/run/netns/...).
bblinks=(-symlink "/var/run:../run")
while read -r a; do
  [[ -n $a && $a != busybox ]] && bblinks+=(-symlink "/bin/$a:busybox")
done < <("$BUSYBOX" --list)

"$MK" -name knit.local/testimage:latest -o "$OUT/testimage.tar" \
  -file "$BUSYBOX:/bin/busybox:0755" "${bblinks[@]}" \
  -env PATH=/bin -cmd /bin/sh

# knit image: whatever `make build` left in bin/ (may be empty early in development).
knitargs=()
[[ -d $ROOT/bin ]] && knitargs+=(-dir "$ROOT/bin:/opt/knit/bin")
"$MK" -name knit.local/knit:latest -o "$OUT/knit.tar" \
  "${knitargs[@]}" -file "$BUSYBOX:/bin/busybox:0755" "${bblinks[@]}" \
  -env PATH=/opt/knit/bin:/bin -cmd /bin/sh

"$MK" -name "$PAUSE_IMAGE" -o "$OUT/pause.tar" \
  -file "$OUT/tools/pause:/pause:0755" -entrypoint /pause

ls -l "$OUT"/*.tar
