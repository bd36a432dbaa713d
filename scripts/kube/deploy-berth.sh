#!/usr/bin/env bash
# Installs Berth from deploy/kubernetes into NAMESPACE with Berth's image
# IMAGE (name@digest or name:tag, as berth-image.sh prints it), through a
# kustomize overlay (namespace + image) applied server-side with kubectl, then
# waits until every replica of the Deployment is Ready. The CRDs are
# cluster-wide and applied too (idempotent).
#   scripts/kube/deploy-berth.sh NAMESPACE IMAGE [TIMEOUT]   (default 180s)
# BERTH_DEPLOY_PATCH=FILE adds a patch of the Deployment (strategic merge or
# JSON 6902, as kustomize takes them: more args, a sidecar…).
# kubectl: $KUBECTL, else $BERTH_KUBE_BIN/kubectl, else kubectl on $PATH;
# the cluster: $KUBECONFIG.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 NAMESPACE IMAGE [TIMEOUT]" >&2; exit 2; }
NS=$1 IMAGE=$2 TIMEOUT=${3:-180s}
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=$(cd "$HERE/../../deploy/kubernetes" && pwd)
KUBECTL=${KUBECTL:-${BERTH_KUBE_BIN:+$BERTH_KUBE_BIN/kubectl}}
KUBECTL=${KUBECTL:-kubectl}

# name@sha256:… or name:tag (a tag after the last /) or a bare name.
name=$IMAGE digest= tag=
case $IMAGE in
*@*) name=${IMAGE%@*} digest=${IMAGE#*@} ;;
*) last=${IMAGE##*/}; [[ $last == *:* ]] && { tag=${last#*:}; name=${IMAGE%:*}; } ;;
esac

overlay=$(mktemp -d)
trap 'rm -rf "$overlay"' EXIT
{
	echo "apiVersion: kustomize.config.k8s.io/v1beta1"
	echo "kind: Kustomization"
	echo "namespace: $NS"
	echo "resources: [$(realpath --relative-to="$overlay" "$BASE")]"
	echo "images:"
	echo "  - name: 127.0.0.1:5000/berth"
	echo "    newName: $name"
	[ -n "$digest" ] && echo "    digest: $digest"
	[ -n "$tag" ] && echo "    newTag: $tag"
	if [ -n "${BERTH_DEPLOY_PATCH:-}" ]; then
		cp "$BERTH_DEPLOY_PATCH" "$overlay/patch.yaml"
		echo "patches:"
		echo "  - path: patch.yaml"
		echo "    target: {kind: Deployment, name: berth}"
	fi
} >"$overlay/kustomization.yaml"
"$KUBECTL" apply --server-side --force-conflicts --field-manager=berth-deploy -k "$overlay" >&2
"$KUBECTL" -n "$NS" rollout status deployment/berth --timeout="$TIMEOUT" >&2
