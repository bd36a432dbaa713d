# Versions of the one-node test cluster's parts (sourced by scripts/kube/*.sh).
# The build cache key is derived from these, the tool modules under
# scripts/kube/mods/ (go.mod + go.sum), the patches and the Go version.
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.4
# Same gVisor as scripts/setup.sh's RUNSC_VERSION (runsc + its containerd shim).
GVISOR_VERSION=v0.0.0-20260905035102-160fafc42237
# The containerd v2 shim library the gVisor shim is built on (patched, see patches/).
CONTAINERD_V2_VERSION=v2.1.5
KUBE_ROUTER_VERSION=v2.1.0  # the newest the Go module proxy serves

# Where the built binaries are cached; one directory per key.
KUBE_CACHE=${BERTH_KUBE_CACHE:-/var/cache/berth/kube}
