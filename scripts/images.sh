#!/usr/bin/env bash
# Builds Berth's built-in environments as OCI image layouts, without Docker:
#   python  the code-interpreter image (Python 3 and the data stack from Debian)
#   shell   the shell image (bash, coreutils, curl, git, jq, python3, …)
# Each is a Debian bookworm rootfs made by mmdebstrap from the host's apt
# sources, turned into one gzip layer and an OCI layout by
# scripts/imagebuild (go-containerregistry). Results are cached in
# /var/cache/berth/images/NAME-KEY/ (outside the clone; KEY hashes the package list, this script, the
# builder and the apt sources), with NAME -> NAME-KEY; a cached
# image is not built again.
#   scripts/images.sh [NAME…]     build what is missing (default: all)
#   scripts/images.sh --force …   build again even if cached
# Needs root (mmdebstrap --mode=root) and mmdebstrap (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${BERTH_IMAGE_CACHE:-/var/cache/berth/images}
SOURCES=/etc/apt/sources.list.d/debian.sources
SUITE=bookworm
force=0
names=()
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	python | shell) names+=("$a") ;;
	*) echo "images.sh: unknown argument $a (want: [--force] [python] [shell])" >&2; exit 2 ;;
	esac
done
[ ${#names[@]} -gt 0 ] || names=(python shell)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "images.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "building images needs root (mmdebstrap --mode=root)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run scripts/setup.sh (or apt-get install mmdebstrap)"
[ -f "$SOURCES" ] || SOURCES=http://deb.debian.org/debian

# Image config (beyond what every image gets, see build()).
common_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8
	HOME=/home/user PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 XDG_CACHE_HOME=/tmp/.cache)
python_env=(MPLBACKEND=Agg MPLCONFIGDIR=/tmp/matplotlib)
# matplotlib's font list, built once here: the driver copies it into the
# sandbox's MPLCONFIGDIR, so a session's first plot does not scan fonts.
python_hooks=(--customize-hook='mkdir -p "$1/usr/share/berth/matplotlib" && chroot "$1" env MPLCONFIGDIR=/usr/share/berth/matplotlib MPLBACKEND=Agg python3 -c "import matplotlib.pyplot" && find "$1/usr/share/berth/matplotlib" -mindepth 1 ! -name "fontlist-*.json" -delete')
# bookworm's python3-scipy depends on python3-pythran, which pulls in g++,
# Boost and the Python headers; nothing imports them at run time: leave
# their files out (about 250 MB).
python_slim=()
for p in /usr/include/ /usr/lib/gcc/ /usr/libexec/gcc/ /usr/bin/x86_64-linux-gnu-lto-dump-12 \
	/usr/lib/python3.11/config-3.11-x86_64-linux-gnu/ /usr/lib/x86_64-linux-gnu/libasan.so \
	/usr/lib/x86_64-linux-gnu/libtsan.so /usr/lib/x86_64-linux-gnu/liblsan.so \
	/usr/lib/x86_64-linux-gnu/libubsan.so /usr/lib/x86_64-linux-gnu/libhwasan.so /usr/lib/x86_64-linux-gnu/*.a; do
	python_slim+=(--dpkgopt="path-exclude=$p*")
done
python_desc="Berth's Python code interpreter: Python 3 with numpy, pandas, matplotlib, scipy, sympy, scikit-learn and more (Debian $SUITE)"
shell_desc="Berth's shell environment: bash, coreutils, curl, git, jq, python3 (Debian $SUITE)"

key_of() { # NAME: what the cached image depends on
	{
		grep -v '^#' "scripts/images/$1.packages"
		cat scripts/images.sh scripts/imagebuild/main.go internal/imagebuild/imagebuild.go
		cat "$SOURCES" 2>/dev/null || echo "$SOURCES"
		mmdebstrap --version
	} | sha256sum | cut -c1-16
}

build() { # NAME
	local name=$1 key out tmp start pkgs
	key=$(key_of "$name")
	out=$CACHE/$name-$key
	if [ "$force" = 0 ] && [ -f "$out/index.json" ]; then
		ln -sfn "$name-$key" "$CACHE/$name"
		log "image $name: cached ($out)"
		return
	fi
	start=$(date +%s)
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/.build-$name-XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	pkgs=$(grep -v '^#' "scripts/images/$name.packages" | paste -sd, -)
	local hooks=() slim=()
	if [ "$name" = python ]; then hooks=("${python_hooks[@]}") slim=("${python_slim[@]}"); fi
	log "image $name: mmdebstrap $SUITE ($(echo "$pkgs" | tr ',' '\n' | wc -l) packages; a few minutes the first time)"
	# Private mount namespace: mmdebstrap's /proc and /dev mounts never show on the host.
	local buildlog=$CACHE/$name.build.log
	TMPDIR=$tmp unshare --mount --propagation private mmdebstrap --variant=minbase --mode=root \
		--include="$pkgs" \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
		"${slim[@]}" \
		--aptopt='Acquire::Languages "none"' \
		--customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --shell /bin/bash user' \
		--customize-hook='mkdir -p "$1/mnt/data" && chown 1000:1000 "$1/mnt/data" && chmod 0755 "$1/mnt/data"' \
		"${hooks[@]}" \
		--customize-hook='find "$1/usr/lib/python3/dist-packages" -type d -name tests -prune -exec rm -rf {} +' \
		--customize-hook='rm -rf "$1"/etc/resolv.conf "$1"/etc/hostname "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*.log "$1"/var/log/apt/* "$1"/var/cache/ldconfig/aux-cache "$1"/tmp/* "$1"/root/.cache' \
		"$SUITE" "$tmp/rootfs.tar" "$SOURCES" >"$buildlog" 2>&1 || {
		tail -n 30 "$buildlog" >&2
		die "mmdebstrap failed for image $name (the end of its log is above; all of it in $buildlog)"
	}
	local env=("${common_env[@]}") desc
	if [ "$name" = python ]; then env+=("${python_env[@]}"); fi
	desc=${name}_desc
	local args=(-name "berth-$name" -rootfs "$tmp/rootfs.tar" -out "$tmp/layout"
		-workdir /mnt/data -user 1000:1000 -cmd /bin/bash -description "${!desc}")
	for e in "${env[@]}"; do args+=(-env "$e"); done
	log "image $name: writing the OCI layout"
	go run ./scripts/imagebuild "${args[@]}" || die "scripts/imagebuild failed for image $name"
	rm -rf "$out"
	mv "$tmp/layout" "$out"
	ln -sfn "$name-$key" "$CACHE/$name"
	# Older builds of this image are stale.
	find "$CACHE" -maxdepth 1 -name "$name-*" ! -name "$name-$key" -exec rm -rf {} +
	rm -rf "$tmp"
	trap - EXIT
	log "image $name: built in $(($(date +%s) - start)) s, $(du -sh "$out" | cut -f1) ($out)"
}

mkdir -p "$CACHE"
# One build at a time (two setup.sh runs at once wait for each other).
exec 9>"$CACHE/.lock"
flock 9
for n in "${names[@]}"; do build "$n"; done
