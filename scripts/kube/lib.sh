# Shared by scripts/kube/up.sh and down.sh (sourced): paths, ports, and the
# helpers that start daemons under pidfiles and stop them again.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/versions.sh"

# Everything the cluster writes lives under WORK (etcd, containerd, kubelet,
# PKI, configs, logs, pidfiles, the registry's storage).
WORK=${BERTH_KUBE_DIR:-/var/lib/berth-kube}
REG_ADDR=127.0.0.1:${BERTH_KUBE_REGISTRY_PORT:-5000}
RUN=$WORK/run
LOGS=$WORK/log
ETC=$WORK/etc
DATA=$WORK/data
PKI=$WORK/pki
POD_CIDR=10.88.0.0/16
POD_GW=10.88.0.1
SVC_CIDR=10.96.0.0/24
SVC_API=10.96.0.1
NFT_TABLE=berthkube
# Started in this order, stopped in the reverse one.
DAEMONS=(registry containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router)

log() { printf '==> kube: %s\n' "$*" >&2; }
die() { printf 'kube: %s\n' "$*" >&2; exit 1; }

start_bg() { # name cmd... (own session, no stdin, log in $LOGS/name.log)
	local name=$1; shift
	setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN/$name.pid"
}

alive() { # name
	local f=$RUN/$1.pid
	[ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

wait_for() { # desc timeout_s name-of-daemon-or-"" cmd...
	local desc=$1 to=$2 d=$3 i; shift 3
	local s=$SECONDS
	for ((i = 0; i < to * 5; i++)); do
		if "$@" >/dev/null 2>&1; then
			log "$desc ready after $((SECONDS - s))s"
			return 0
		fi
		if [ -n "$d" ] && ! alive "$d"; then
			tail -20 "$LOGS/$d.log" >&2
			die "$d exited (log: $LOGS/$d.log)"
		fi
		sleep 0.2
	done
	[ -z "$d" ] || tail -20 "$LOGS/$d.log" >&2
	die "timed out after ${to}s waiting for $desc"
}

stop_pidfile() { # name: TERM, then KILL after 10 s
	local f=$RUN/$1.pid pid i
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null
		for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
		log "stopped $1 ($pid) in $((i / 5)).$((i % 5 * 2))s"
	fi
	rm -f "$f"
}
