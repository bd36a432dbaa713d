#!/usr/bin/env bash
# Installs what Berth needs on a fresh Debian 12 machine (as root), and builds
# berth. Idempotent: a second run installs nothing and only rebuilds berth.
#   scripts/setup.sh          runtime needs: bubblewrap, nftables, runsc, berth
#   scripts/setup.sh --test   also the test tools: staticcheck, chromium, npm packages
#   scripts/setup.sh --bench  also Caddy, the gateway benchmark's reference proxy
#   scripts/setup.sh --kube   also what the one-node test cluster needs from
#                             Debian (scripts/kube/; --test installs it too)
# Every mode also builds the built-in environments' images (scripts/images.sh,
# cached in /var/cache/berth/images; BERTH_SKIP_IMAGES=1 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNSC_VERSION=v0.0.0-20260905035102-160fafc42237
STATICCHECK_VERSION=v0.8.2
CADDY_VERSION=v2.11.9
BIN=$PWD/.bin
mkdir -p "$BIN"
export DEBIAN_FRONTEND=noninteractive

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
	echo "Berth's sandboxes need root (cgroups, per-sandbox uids, namespaces): run as root." >&2
	exit 1
fi

# Debian packages: bubblewrap (default sandbox), nftables + iproute2 (egress),
# util-linux (setpriv), procps, python3 (the Python pools' interpreter),
# mmdebstrap (builds the built-in environments' images, scripts/images.sh).
need=()
for pkg in bubblewrap nftables iproute2 util-linux procps python3 ca-certificates mmdebstrap; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	log "apt-get install ${need[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# gVisor's runsc, built static: a cgo build fails inside its own chroot.
if [ ! -x "$BIN/runsc" ] || [ "$(cat "$BIN/runsc.version" 2>/dev/null)" != "$RUNSC_VERSION" ]; then
	log "building runsc $RUNSC_VERSION (static; takes a few minutes the first time)"
	(cd /tmp && CGO_ENABLED=0 GOBIN="$BIN" go install "gvisor.dev/gvisor/runsc@$RUNSC_VERSION")
	echo "$RUNSC_VERSION" >"$BIN/runsc.version"
fi

if [ "${1:-}" = "--test" ]; then
	if [ ! -x "$BIN/staticcheck" ] || [ "$(cat "$BIN/staticcheck.version" 2>/dev/null)" != "$STATICCHECK_VERSION" ]; then
		log "installing staticcheck $STATICCHECK_VERSION"
		(cd /tmp && GOBIN="$BIN" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION")
		echo "$STATICCHECK_VERSION" >"$BIN/staticcheck.version"
	fi
	# mmdebstrap builds the sandbox tests' Debian image root (sandbox/sandboxtest;
	# cached under /var/cache/berth-test). Chromium, headless, for the tests in
	# a real browser (e2e); curl and jq for the replay of Azure's MCP tutorials.
	tneed=()
	for pkg in mmdebstrap chromium curl jq; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || tneed+=("$pkg")
	done
	if [ ${#tneed[@]} -gt 0 ]; then
		log "apt-get install ${tneed[*]}"
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${tneed[@]}" >/dev/null
	fi
	# matplotlib in the host's python3, which host-rooted Python pools run:
	# the figure tests (agent, dataplane, mcpserver) draw with it.
	if ! dpkg-query -W -f='${Status}' python3-matplotlib 2>/dev/null | grep -q "install ok installed"; then
		log "apt-get install python3-matplotlib"
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
	fi
	if [ -x scripts/install-node-tools.sh ]; then
		scripts/install-node-tools.sh
	fi
fi

if [ "${1:-}" = "--bench" ]; then
	if [ ! -x "$BIN/caddy" ] || [ "$(cat "$BIN/caddy.version" 2>/dev/null)" != "$CADDY_VERSION" ]; then
		log "building caddy $CADDY_VERSION (the gateway benchmark's reference; a few minutes the first time)"
		(cd /tmp && CGO_ENABLED=0 GOBIN="$BIN" go install "github.com/caddyserver/caddy/v2/cmd/caddy@$CADDY_VERSION")
		echo "$CADDY_VERSION" >"$BIN/caddy.version"
	fi
fi

# The one-node test cluster (scripts/kube/up.sh): containerd + runc, the CNI
# plugins, nftables (kube-proxy), iptables + ipset (kube-router's
# NetworkPolicy firewall), openssl (its PKI), curl (readiness checks). Its
# Kubernetes binaries are built and cached by scripts/kube/build.sh.
if [ "${1:-}" = "--kube" ] || [ "${1:-}" = "--test" ]; then
	kneed=()
	for pkg in containerd runc containernetworking-plugins nftables iptables ipset openssl curl; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || kneed+=("$pkg")
	done
	if [ ${#kneed[@]} -gt 0 ]; then
		log "apt-get install ${kneed[*]}"
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${kneed[@]}" >/dev/null
	fi
fi

# The example app (examples/tasks), static, for `make up` to deploy.
mkdir -p "$BIN/tasks-app"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/tasks-app/tasks" ./examples/tasks

# berth itself, static.
log "building berth and berth-agent"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(git describe --always --dirty 2>/dev/null || echo dev)" -o "$BIN/berth" ./cmd/berth
# The sandbox agent, its own small binary beside berth (where berth finds it).
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/berth-agent" ./cmd/berth-agent

# The built-in environments (python, shell) as OCI image layouts in
# /var/cache/berth/images; cached, so this is quick once they are built.
if [ -z "${BERTH_SKIP_IMAGES:-}" ]; then
	scripts/images.sh
fi
