#!/usr/bin/env bash
# Builds the one-node test cluster's binaries from the Go module proxy, cached
# and keyed on their versions:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#   kube-proxy, kubectl, runsc, containerd-shim-runsc-v1 (patched), kube-router
# into $KUBE_CACHE/<key>/bin (default /var/cache/berth/kube/<key>/bin) and
# prints that directory on stdout (everything else goes to stderr).
#
#   scripts/kube/build.sh                 build what is missing, print the bin dir
#   scripts/kube/build.sh etcd kube-apiserver   build only these (same bin dir)
#   scripts/kube/build.sh --print         print the bin dir, build nothing
#
# Each binary is stored once as $KUBE_CACHE/parts/<name>-<part key>, the part
# key being a hash of the Go version and of that binary's inputs (versions,
# scripts/kube/mods/<module>/go.mod + go.sum, patches). The bin dir's key is a
# hash of all part keys; its files are hard links to the parts. A warm run only
# hashes files. Builds are static (CGO_ENABLED=0, -trimpath) and niced.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.sh"
MODS=$HERE/mods
export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
ALL=(etcd "${K8S_BINS[@]}" runsc containerd-shim-runsc-v1 kube-router)

log() { printf '==> build: %s\n' "$*" >&2; }
hash_of() { # strings and files... -> 16 hex digits
	local a
	for a in "$@"; do
		if [ -f "$a" ]; then printf 'file %s\n' "${a#"$HERE"/}"; cat "$a"; else printf 'str %s\n' "$a"; fi
	done | sha256sum | cut -c1-16
}

GOVER=$(go env GOVERSION)
part_key() { # name -> part key
	case $1 in
	etcd) hash_of "$GOVER" etcd "$ETCD_VERSION" "$MODS/etcd/go.mod" "$MODS/etcd/go.sum" ;;
	kube-router) hash_of "$GOVER" kube-router "$KUBE_ROUTER_VERSION" "$MODS/kube-router/go.mod" "$MODS/kube-router/go.sum" ;;
	kube-*|kubelet|kubectl) hash_of "$GOVER" "$1" "$K8S_VERSION" "$MODS/k8s/go.mod" "$MODS/k8s/go.sum" ;;
	runsc) hash_of "$GOVER" runsc "$GVISOR_VERSION" ;;
	containerd-shim-runsc-v1) hash_of "$GOVER" "$1" "$GVISOR_VERSION" "$CONTAINERD_V2_VERSION" \
		"$MODS/gvisor-shim/go.mod" "$MODS/gvisor-shim/go.sum" "$HERE"/patches/*.diff ;;
	*) echo "build.sh: unknown binary $1" >&2; return 2 ;;
	esac
}

declare -A PART
keys=()
for b in "${ALL[@]}"; do PART[$b]=$(part_key "$b"); keys+=("$b=${PART[$b]}"); done
KEY=$(hash_of "${keys[@]}")
BIN=$KUBE_CACHE/$KEY/bin
PARTS=$KUBE_CACHE/parts

if [ "${1:-}" = "--print" ]; then echo "$BIN"; exit 0; fi
want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${ALL[@]}")

mkdir -p "$BIN" "$PARTS"
have() { [ -x "$PARTS/$1-${PART[$1]}" ]; }
# One build at a time; a warm run (nothing missing) takes no lock.
for b in "${want[@]}"; do
	if ! have "$b"; then
		exec 9>"$KUBE_CACHE/.lock"
		flock 9
		break
	fi
done
install_part() { # name built-file
	chmod 0755 "$2"
	mv -f "$2" "$PARTS/$1-${PART[$1]}"
}
tmpdir() { mktemp -d "$KUBE_CACHE/tmp.$$.XXXXXX"; }
trap 'rm -rf "$KUBE_CACHE"/tmp.$$.*' EXIT
gobuild() { nice -n 10 go build -trimpath "$@"; }

k8s_ldflags() {
	local v=$K8S_VERSION minor
	minor=${v#v1.}; minor=${minor%%.*}
	local f="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		f+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	echo "$f"
}

build_etcd() {
	local t; t=$(tmpdir)
	(cd "$MODS/etcd" && gobuild -mod=readonly -ldflags "-s -w" -o "$t/etcd" go.etcd.io/etcd/server/v3)
	install_part etcd "$t/etcd"; rm -rf "$t"
}

build_k8s() { # names...
	local t pkgs=() b; t=$(tmpdir)
	for b in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	(cd "$MODS/k8s" && gobuild -mod=readonly -ldflags "$(k8s_ldflags)" -o "$t/" "${pkgs[@]}")
	for b in "$@"; do install_part "$b" "$t/$b"; done
	rm -rf "$t"
}

build_runsc() {
	local t; t=$(tmpdir)
	# setup.sh builds the same runsc into .bin: reuse it when its version matches.
	local local_runsc=$HERE/../../.bin/runsc
	if [ -x "$local_runsc" ] && [ "$(cat "$local_runsc.version" 2>/dev/null)" = "$GVISOR_VERSION" ]; then
		cp -L "$local_runsc" "$t/runsc"
	else
		(cd "$t" && GOBIN=$t nice -n 10 go install -trimpath -ldflags "-s -w" "gvisor.dev/gvisor/runsc@$GVISOR_VERSION")
	fi
	install_part runsc "$t/runsc"; rm -rf "$t"
}

# The gVisor containerd shim needs two one-hunk patches here (see patches/):
# copies of the two modules are patched and `replace`d (go build -overlay
# refuses files in the module cache).
build_shim() {
	local t src; t=$(tmpdir)
	cp "$MODS/gvisor-shim/go.mod" "$MODS/gvisor-shim/go.sum" "$t/"
	mkdir -p "$t/patched"
	copy_mod() { # module version dest patch
		src=$(cd "$t" && go mod download -json "$1@$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
		[ -d "$src" ] || { echo "build.sh: cannot download $1@$2" >&2; return 1; }
		cp -r "$src" "$t/patched/$3"
		chmod -R u+w "$t/patched/$3"
		patch -s -p1 -d "$t/patched/$3" <"$HERE/patches/$4"
	}
	copy_mod gvisor.dev/gvisor "$GVISOR_VERSION" gvisor gvisor-shim-manager.diff
	copy_mod github.com/containerd/containerd/v2 "$CONTAINERD_V2_VERSION" containerd-v2 containerd-v2-shim.diff
	(cd "$t" && go mod edit -replace gvisor.dev/gvisor=./patched/gvisor \
		-replace github.com/containerd/containerd/v2=./patched/containerd-v2 &&
		gobuild -mod=mod -ldflags "-s -w" -o "$t/containerd-shim-runsc-v1" gvisor.dev/gvisor/shim)
	install_part containerd-shim-runsc-v1 "$t/containerd-shim-runsc-v1"; rm -rf "$t"
}

build_kube_router() {
	local t; t=$(tmpdir)
	(cd "$MODS/kube-router" && gobuild -mod=readonly \
		-ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
		-o "$t/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
	install_part kube-router "$t/kube-router"; rm -rf "$t"
}

k8s_missing=()
for b in "${want[@]}"; do
	have "$b" && continue
	s=$SECONDS
	case $b in
	etcd) log "etcd $ETCD_VERSION"; build_etcd ;;
	kube-apiserver) log "kube-apiserver $K8S_VERSION"; build_k8s kube-apiserver ;;
	kube-router) log "kube-router $KUBE_ROUTER_VERSION"; build_kube_router ;;
	kube-*|kubelet|kubectl) k8s_missing+=("$b"); continue ;;
	runsc) log "runsc $GVISOR_VERSION"; build_runsc ;;
	containerd-shim-runsc-v1) log "containerd-shim-runsc-v1 $GVISOR_VERSION (patched)"; build_shim ;;
	esac
	log "$b took $((SECONDS - s))s"
done
if [ ${#k8s_missing[@]} -gt 0 ]; then
	s=$SECONDS
	log "${k8s_missing[*]} $K8S_VERSION"
	build_k8s "${k8s_missing[@]}"
	log "${k8s_missing[*]} took $((SECONDS - s))s"
fi

for b in "${want[@]}"; do
	ln -f "$PARTS/$b-${PART[$b]}" "$BIN/$b"
done
echo "$BIN"
