#!/usr/bin/env bash
# Builds Berth's own image without Docker: the static berth and berth-agent
# binaries (CGO_ENABLED=0) as /berth and /berth-agent (which the kube driver's
# init containers copy into every sandbox Pod) on an empty base, entrypoint
# /berth, and pushes it
# to the test cluster's registry. Prints the pushed reference (name@digest).
#   scripts/kube/berth-image.sh [REF]   default $BERTH_KUBE_REGISTRY/berth:dev
set -euo pipefail
. "$(dirname "$0")/lib.sh"
REF=${1:-${BERTH_KUBE_REGISTRY:-$REG_ADDR}/berth:dev}
OUT=${BERTH_KUBE_DIR:-$WORK}/bin
mkdir -p "$OUT"
cd "$REPO"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(git describe --always --dirty 2>/dev/null || echo dev)" -o "$OUT/berth-static" ./cmd/berth
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/berth-agent-static" ./cmd/berth-agent
[ -x "$OUT/berth-kube-image" ] || go build -o "$OUT/berth-kube-image" ./scripts/kube/image
digest=$("$OUT/berth-kube-image" -ref "$REF" -file /berth="$OUT/berth-static" -file /berth-agent="$OUT/berth-agent-static" -entrypoint /berth)
echo "${REF%:*}@$digest"
