#!/usr/bin/env bash
# Starts the one-node test cluster (as root; no stdin needed):
#   a loopback registry, containerd (runc + a "gvisor" runtime), etcd,
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (node
#   "localhost"), kube-proxy (nftables), kube-router's NetworkPolicy firewall,
#   the RuntimeClass "gvisor", a default StorageClass (hostPath provisioner)
#   and Berth's own image in the registry.
# Binaries come from scripts/kube/build.sh (cached; the first run builds them).
# All state is under $BERTH_KUBE_DIR (default /var/lib/berth-kube); the
# environment tests need is written to $BERTH_KUBE_DIR/env (shell exports).
# Idempotent: if the cluster is already up, it only prints the env file;
# a second run starts what is missing.
# BERTH_KUBE_NETPOL=0 leaves the NetworkPolicy firewall (kube-router) out.
# scripts/kube/down.sh stops everything and undoes the host changes.
#   scripts/kube/up.sh --status   exit 0 if the cluster is up (starts nothing)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (containerd, kubelet, network setup)"
T0=$SECONDS

check_host() {
	local missing=() c
	for c in containerd containerd-shim-runc-v2 runc ctr nft ip iptables ipset openssl curl; do
		command -v "$c" >/dev/null || missing+=("$c")
	done
	[ -x /usr/lib/cni/bridge ] || missing+=("/usr/lib/cni/bridge")
	[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run scripts/setup.sh --kube"
}

NETPOL=${BERTH_KUBE_NETPOL:-1}
if [ "$NETPOL" = 0 ]; then
	DAEMONS=("${DAEMONS[@]/kube-router/}")
fi

all_alive() {
	local d
	for d in "${DAEMONS[@]}"; do
		[ -z "$d" ] || alive "$d" || return 1
	done
}

gen_pki() {
	[ -f "$PKI/tokens.csv" ] && return 0
	log "generating PKI in $PKI"
	mkdir -p "$PKI"
	(
		cd "$PKI"
		openssl genrsa -out ca.key 2048 2>/dev/null
		openssl req -x509 -new -nodes -key ca.key -subj "/CN=berth-kube-ca" -days 3650 -out ca.crt
		openssl genrsa -out apiserver.key 2048 2>/dev/null
		cat >apiserver.cnf <<-CNF
			[req]
			distinguished_name = dn
			[dn]
			[ext]
			basicConstraints = CA:FALSE
			keyUsage = digitalSignature, keyEncipherment
			extendedKeyUsage = serverAuth
			subjectAltName = IP:127.0.0.1, IP:$SVC_API, IP:$POD_GW, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
		CNF
		openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -config apiserver.cnf -out apiserver.csr
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile apiserver.cnf -extensions ext -out apiserver.crt 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		# One static token in system:masters for the admin and every component.
		umask 077
		echo "$(openssl rand -hex 24),admin,admin,\"system:masters\"" >tokens.csv
	)
}

# put FILE: writes stdin to FILE unless FILE already holds exactly that
# (kube-proxy exits when its config file changes, even to the same bytes).
put() {
	cat >"$1.new"
	if cmp -s "$1.new" "$1"; then rm -f "$1.new"; else mv -f "$1.new" "$1"; fi
}

write_configs() {
	local token
	token=$(cut -d, -f1 "$PKI/tokens.csv")
	mkdir -p "$ETC/certs.d/$REG_ADDR" "$ETC/cni"
	(umask 077 && put "$ETC/kubeconfig" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: berth-kube
		  cluster:
		    server: https://127.0.0.1:6443
		    certificate-authority: $PKI/ca.crt
		users:
		- name: admin
		  user:
		    token: $token
		contexts:
		- name: berth-kube
		  context: {cluster: berth-kube, user: admin}
		current-context: berth-kube
	EOF
	)
	write_containerd_config
	put "$ETC/certs.d/$REG_ADDR/hosts.toml" <<-EOF
		server = "http://$REG_ADDR"
		[host."http://$REG_ADDR"]
		  capabilities = ["pull", "resolve", "push"]
		  skip_verify = true
	EOF
	put "$ETC/runsc.toml" <<-EOF
		binary_name = "$BIN/runsc"
		root = "$RUN/runsc"
		[runsc_config]
		  platform = "systrap"
	EOF
	put "$ETC/cni/10-berth-kube.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "berth-kube",
		  "plugins": [
		    {
		      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
		      "ipam": {"type": "host-local", "dataDir": "$DATA/cni-ipam",
		        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]], "routes": [{"dst": "0.0.0.0/0"}]}
		    }
		  ]
		}
	EOF
	write_kube_configs
}

# containerd 1.6 (Debian). restrict_oom_score_adj: this machine lacks
# CAP_SYS_RESOURCE, so nothing may lower oom_score_adj (CRI sandboxes ask for
# -998). Handler "runsc" is gVisor through the patched shim.
write_containerd_config() {
	put "$ETC/containerd.toml" <<-EOF
		version = 2
		root = "$DATA/containerd"
		state = "$RUN/containerd"
		[grpc]
		  address = "$RUN/containerd.sock"
		[ttrpc]
		  address = "$RUN/containerd-ttrpc.sock"
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$DATA/containerd-opt"
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "$REG_ADDR/pause:3.10"
		  enable_selinux = false
		  restrict_oom_score_adj = true
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		        BinaryName = "$(command -v runc)"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
		      runtime_type = "io.containerd.runsc.v1"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
		        TypeUrl = "io.containerd.runsc.v1.options"
		        ConfigPath = "$ETC/runsc.toml"
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/usr/lib/cni"
		    conf_dir = "$ETC/cni"
		  [plugins."io.containerd.grpc.v1.cri".registry]
		    config_path = "$ETC/certs.d"
	EOF
}

write_kube_configs() {
	put "$ETC/kubelet.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		address: 127.0.0.1
		port: 10250
		readOnlyPort: 0
		healthzBindAddress: 127.0.0.1
		healthzPort: 10248
		cgroupDriver: cgroupfs
		failSwapOn: false
		containerRuntimeEndpoint: unix://$RUN/containerd.sock
		podLogsDir: $DATA/pod-logs
		makeIPTablesUtilChains: false
		clusterDomain: cluster.local
		resolvConf: ""
		authentication:
		  anonymous: {enabled: true}
		  webhook: {enabled: false}
		authorization: {mode: AlwaysAllow}
		evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
		imageGCHighThresholdPercent: 100
		imageGCLowThresholdPercent: 99
		serializeImagePulls: false
		maxPods: 250
	EOF
	put "$ETC/kube-proxy.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		mode: nftables
		clientConnection: {kubeconfig: $ETC/kubeconfig}
		hostnameOverride: localhost
		clusterCIDR: $POD_CIDR
		healthzBindAddress: 127.0.0.1:10256
		metricsBindAddress: 127.0.0.1:10249
		conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
	EOF
}

# The pod network's host side: the bridge (its address is what the apiserver
# advertises: loopback is no valid endpoint), an nft table that keeps the
# cluster's ports off eth0 and pod traffic on this machine. The sysctls the
# kubelet and the CNI plugin change are saved for down.sh.
net_setup() {
	[ -f "$RUN/sysctl.saved" ] || sysctl -e vm.overcommit_memory kernel.panic kernel.panic_on_oops \
		net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables >"$RUN/sysctl.saved"
	if ! ip link show cni0 >/dev/null 2>&1; then
		ip link add cni0 type bridge
		ip addr add "$POD_GW/16" dev cni0
		ip link set cni0 up
	fi
	echo cni0 >"$RUN/bridge"
	nft delete table inet "$NFT_TABLE" 2>/dev/null || true
	nft -f - <<-EOF
		table inet $NFT_TABLE {
		  chain input {
		    type filter hook input priority 0; policy accept;
		    iifname != { "lo", "cni0" } tcp dport { 2379, 2380, 2381, 6443, 10248, 10249, 10250, 10256, 10257, 10259, 20244 } drop
		  }
		  chain forward {
		    type filter hook forward priority 0; policy accept;
		    iifname "cni0" oifname != "cni0" drop
		    oifname "cni0" iifname != "cni0" drop
		  }
		}
	EOF
	# Pod-to-pod traffic crosses the bridge: NetworkPolicy rules must see it.
	sysctl -q -w net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
}

start_registry() {
	alive registry && return 0
	mkdir -p "$WORK/bin" "$DATA/registry"
	(cd "$REPO" && go build -o "$WORK/bin/berth-kube-registry" ./scripts/kube/registry &&
		go build -o "$WORK/bin/berth-kube-image" ./scripts/kube/image &&
		CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$WORK/bin/pause" ./scripts/kube/pause)
	start_bg registry "$WORK/bin/berth-kube-registry" -addr "$REG_ADDR" -dir "$DATA/registry"
	wait_for registry 30 registry curl -sf "http://$REG_ADDR/v2/"
	"$WORK/bin/berth-kube-image" -ref "$REG_ADDR/pause:3.10" -file /pause="$WORK/bin/pause" -entrypoint /pause >/dev/null
}

start_containerd() {
	alive containerd && return 0
	mkdir -p "$DATA/containerd" "$DATA/pod-logs" "$RUN/runsc"
	# PATH: containerd finds containerd-shim-runsc-v1 (and runsc) in BIN.
	start_bg containerd env PATH="$BIN:/usr/sbin:/usr/bin:/sbin:/bin" containerd --config "$ETC/containerd.toml"
	wait_for containerd 30 containerd ctr --address "$RUN/containerd.sock" version
}

start_etcd() {
	alive etcd && return 0
	mkdir -p "$DATA/etcd"
	start_bg etcd "$BIN/etcd" --name berth-kube --data-dir "$DATA/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster berth-kube=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
		--log-level warn
	wait_for etcd 60 etcd curl -sf http://127.0.0.1:2381/health
}

kc() { "$BIN/kubectl" --kubeconfig "$ETC/kubeconfig" "$@"; }

start_control_plane() {
	local kcfg=$ETC/kubeconfig
	alive kube-apiserver || start_bg kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers=http://127.0.0.1:2379 \
		--bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$POD_GW" \
		--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
		--client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
		--authorization-mode=Node,RBAC \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
		--service-cluster-ip-range="$SVC_CIDR" --allow-privileged=true \
		--kubelet-preferred-address-types=Hostname,InternalIP \
		--cert-dir="$DATA/apiserver-certs" --v=1
	wait_for kube-apiserver 180 kube-apiserver kc get --raw /readyz
	alive kube-controller-manager || start_bg kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig="$kcfg" --authentication-kubeconfig="$kcfg" --authorization-kubeconfig="$kcfg" \
		--bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
		--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
		--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
		--use-service-account-credentials=true --enable-hostpath-provisioner=true \
		--service-cluster-ip-range="$SVC_CIDR" --cert-dir="$DATA/kcm-certs" --v=1
	alive kube-scheduler || start_bg kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig="$kcfg" --authentication-kubeconfig="$kcfg" --authorization-kubeconfig="$kcfg" \
		--bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --v=1
	wait_for kube-controller-manager 120 kube-controller-manager curl -skf https://127.0.0.1:10257/healthz
	wait_for kube-scheduler 120 kube-scheduler curl -skf https://127.0.0.1:10259/healthz
}

# Node "localhost": the kubelet refuses a loopback --node-ip; the apiserver
# prefers the Hostname address, so it reaches the kubelet on 127.0.0.1.
start_node() {
	mkdir -p "$DATA/kubelet"
	alive kubelet || start_bg kubelet "$BIN/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$ETC/kubeconfig" \
		--root-dir="$DATA/kubelet" --hostname-override=localhost --v=1
	wait_for "node Ready" 180 kubelet kc wait --for=condition=Ready node/localhost --timeout=1s
	alive kube-proxy || start_bg kube-proxy "$BIN/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=1
	wait_for kube-proxy 60 kube-proxy curl -sf http://127.0.0.1:10256/healthz
	# NetworkPolicy: the bridge CNI enforces none; kube-router's firewall
	# (iptables + ipset) does. Routing and service proxy stay off.
	[ "$NETPOL" != 0 ] || return 0
	alive kube-router || start_bg kube-router "$BIN/kube-router" --kubeconfig="$ETC/kubeconfig" \
		--run-firewall=true --run-router=false --run-service-proxy=false \
		--hostname-override=localhost --service-cluster-ip-range="$SVC_CIDR" \
		--health-port=20244 --metrics-port=0 --v=1
	wait_for kube-router 60 kube-router curl -sf http://127.0.0.1:20244/healthz
}

# The RuntimeClass gvisor, and a default StorageClass for PVCs: the
# controller-manager's hostPath provisioner (one node; volumes are
# directories under /tmp/hostpath_pv, removed with their PVs).
cluster_objects() {
	kc apply -f - >/dev/null <<-EOF
		apiVersion: node.k8s.io/v1
		kind: RuntimeClass
		metadata: {name: gvisor}
		handler: runsc
		---
		apiVersion: storage.k8s.io/v1
		kind: StorageClass
		metadata:
		  name: standard
		  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
		provisioner: kubernetes.io/host-path
		reclaimPolicy: Delete
		volumeBindingMode: Immediate
	EOF
	wait_for "default ServiceAccount" 120 kube-controller-manager kc get sa default -n default
}

write_env() {
	cat >"$WORK/env.tmp" <<-EOF
		export KUBECONFIG=$ETC/kubeconfig
		export BERTH_KUBE_REGISTRY=$REG_ADDR
		export BERTH_KUBE_BIN=$BIN
		export BERTH_KUBE_DIR=$WORK
	EOF
	if [ -f "$WORK/berth-image" ]; then
		echo "export BERTH_KUBE_BERTH_IMAGE=$(cat "$WORK/berth-image")" >>"$WORK/env.tmp"
	fi
	mv "$WORK/env.tmp" "$WORK/env"
}

if [ "${1:-}" = "--status" ]; then
	BIN=$("$HERE/build.sh" --print)
	all_alive && kc get --raw /readyz >/dev/null 2>&1
	exit
fi
check_host
if [ "$NETPOL" = 0 ]; then
	BIN=$("$HERE/build.sh" etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl \
		runsc containerd-shim-runsc-v1)
else
	BIN=$("$HERE/build.sh")
fi
mkdir -p "$RUN" "$LOGS" "$ETC" "$DATA"
if all_alive && kc get --raw /readyz >/dev/null 2>&1; then
	log "already up"
	write_env
	cat "$WORK/env"
	exit 0
fi
gen_pki
write_configs
net_setup
start_registry
start_containerd
start_etcd
start_control_plane
start_node
cluster_objects
if [ "${BERTH_KUBE_SKIP_BERTH_IMAGE:-}" = "" ]; then
	"$HERE/berth-image.sh" >"$WORK/berth-image"
fi
write_env
log "cluster up after $((SECONDS - T0))s; environment in $WORK/env"
cat "$WORK/env"
