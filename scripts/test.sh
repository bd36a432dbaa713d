#!/usr/bin/env bash
# The whole test suite: formatting, vet, staticcheck, module tidiness, and
# every Go test with the race detector (real sandboxes, real servers, real
# MCP clients). Run through `make test`, which installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.bin
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi

log "go mod tidy leaves no diff"
cp go.mod /tmp/berth-go.mod.bak
cp go.sum /tmp/berth-go.sum.bak
go mod tidy
if ! cmp -s go.mod /tmp/berth-go.mod.bak || ! cmp -s go.sum /tmp/berth-go.sum.bak; then
	cp /tmp/berth-go.mod.bak go.mod
	cp /tmp/berth-go.sum.bak go.sum
	echo "go mod tidy changes go.mod/go.sum: run it and commit the result" >&2
	exit 1
fi

log "go vet"
go vet ./...

log "staticcheck"
"$BIN/staticcheck" ./...

# The Kubernetes tests' one-node cluster (scripts/kube/; binaries cached in
# /var/cache/berth/kube): started for the tests and stopped after them, unless
# one was already up (then it is left running). BERTH_SKIP_KUBE=1 runs without
# it: the cluster tests then skip (or fail, in CI).
if [ -z "${BERTH_SKIP_KUBE:-}" ]; then
	if scripts/kube/up.sh --status; then
		log "Kubernetes test cluster: already up"
	else
		log "Kubernetes test cluster: scripts/kube/up.sh"
		trap 'scripts/kube/down.sh' EXIT
		scripts/kube/up.sh >/dev/null
	fi
	export BERTH_KUBE=1
fi

log "go test -race"
# Packages run two at a time (the machine has 2 cores); sandboxes need root.
go test -race -p 2 -timeout 50m -count=1 ./... "$@"
