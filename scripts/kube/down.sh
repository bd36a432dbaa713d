#!/usr/bin/env bash
# Stops the test cluster that scripts/kube/up.sh started and undoes its host
# changes: every daemon (by pidfile) and the pods' shims and sandboxes, mounts
# under the work dir, the cni0 bridge, the pods' netns, the nft tables
# (berthkube, kube-proxy), kube-router's iptables chains and ipsets, the
# kubelet's cgroups, and the sysctls changed. Removes the work dir
# ($BERTH_KUBE_DIR, default /var/lib/berth-kube) unless --keep is given.
# Idempotent; safe when nothing is running.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root"
KEEP=${1:-}
[ -d "$WORK" ] || { log "nothing to stop ($WORK does not exist)"; exit 0; }

# Processes this cluster's containerd started (shims, gVisor's sandboxes and
# gofers) name its run dir (the containerd socket, runsc's root).
pids_of_ours() {
	local p
	for p in /proc/[0-9]*; do
		[ "${p#/proc/}" = $$ ] && continue
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$RUN/" && echo "${p#/proc/}"
	done
}

stop_pods() {
	local ctr_cmd=(ctr --address "$RUN/containerd.sock" -n k8s.io) t
	if alive containerd; then
		for t in $("${ctr_cmd[@]}" tasks ls -q 2>/dev/null); do
			"${ctr_cmd[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1
		done
		sleep 1
		for t in $("${ctr_cmd[@]}" tasks ls -q 2>/dev/null); do
			"${ctr_cmd[@]}" tasks delete -f "$t" >/dev/null 2>&1
		done
	fi
	# gVisor sandboxes left behind (runsc's state is under RUN/runsc).
	if [ -x "$BIN/runsc" ] && [ -d "$RUN/runsc" ]; then
		for t in $("$BIN/runsc" --root "$RUN/runsc/k8s.io" list -q 2>/dev/null); do
			"$BIN/runsc" --root "$RUN/runsc/k8s.io" kill "$t" KILL >/dev/null 2>&1
			"$BIN/runsc" --root "$RUN/runsc/k8s.io" delete -force "$t" >/dev/null 2>&1
		done
	fi
}

kill_leftovers() {
	local p
	for p in $(pids_of_ours); do kill -KILL "$p" 2>/dev/null; done
}

undo_network() {
	local n c
	nft delete table inet "$NFT_TABLE" 2>/dev/null
	nft delete table ip kube-proxy 2>/dev/null
	nft delete table ip6 kube-proxy 2>/dev/null
	# kube-router's firewall: jumps from the built-in chains, its chains, its sets.
	if command -v iptables >/dev/null; then
		for c in INPUT FORWARD OUTPUT; do
			while iptables -t filter -S "$c" 2>/dev/null | grep -q -- '-j KUBE-ROUTER-'; do
				n=$(iptables -t filter -S "$c" | grep -- '-j KUBE-ROUTER-' | head -1 | sed 's/^-A/-D/')
				eval "iptables -t filter $n" || break
			done
		done
		for c in $(iptables -t filter -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-(ROUTER|POD-FW|NWPLCY)-/ {print $2}'); do
			iptables -t filter -F "$c"
		done
		for c in $(iptables -t filter -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-(ROUTER|POD-FW|NWPLCY)-/ {print $2}'); do
			iptables -t filter -X "$c"
		done
	fi
	# iptables-nft made the ip filter table for kube-router: drop it when nothing else is left in it.
	if command -v iptables >/dev/null && [ -z "$(iptables -t filter -S 2>/dev/null | grep -v '^-P [A-Z]* ACCEPT$')" ]; then
		nft delete table ip filter 2>/dev/null
	fi
	if command -v ipset >/dev/null; then
		for n in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router-|inet6:KUBE-)'); do ipset destroy "$n" 2>/dev/null; done
	fi
	for n in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
		# only the pods' namespaces: their veth peers sit on our bridge
		ip netns del "$n" 2>/dev/null
	done
	[ -f "$RUN/bridge" ] && ip link del cni0 2>/dev/null
	rm -f "$RUN/bridge"
}

undo_host() {
	local c d m f id
	grep -oE " ($WORK|/run/containerd)[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
	for c in /sys/fs/cgroup/*/; do
		for d in kubepods kubepods.slice k8s.io; do
			[ -d "$c$d" ] && find "$c$d" -depth -type d -exec rmdir {} \; 2>/dev/null
		done
	done
	if [ -f "$RUN/sysctl.saved" ]; then
		sed 's/ //g' "$RUN/sysctl.saved" | while read -r kv; do sysctl -q -w "$kv" 2>/dev/null; done
		rm -f "$RUN/sysctl.saved"
	fi
	# the volumes of the hostPath provisioner (PVCs)
	rm -rf --one-file-system /tmp/hostpath_pv
	# libcni's cache of the pods' results (no CNI DEL ran for killed pods)
	for f in /var/lib/cni/results/berth-kube-*-eth0; do
		[ -e "$f" ] || continue
		id=${f#/var/lib/cni/results/berth-kube-}
		rm -f "$f" "/var/lib/cni/results/cni-loopback-${id%-eth0}-lo"
	done
	rmdir /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/fifo /run/containerd/s \
		/run/containerd /var/lib/cni/results /var/lib/cni 2>/dev/null
}

T0=$SECONDS
BIN=$(cat "$WORK/env" 2>/dev/null | sed -n 's/^export BERTH_KUBE_BIN=//p')
[ -n "$BIN" ] || BIN=$("$HERE/build.sh" --print)
for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
	d=${DAEMONS[i]}
	case $d in
	kubelet) stop_pidfile kubelet; stop_pods ;;
	*) stop_pidfile "$d" ;;
	esac
done
kill_leftovers
undo_network
undo_host
if [ "$KEEP" != "--keep" ]; then
	rm -rf --one-file-system "$WORK"
fi
log "down after $((SECONDS - T0))s"
