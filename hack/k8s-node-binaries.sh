#!/usr/bin/env bash
# Builds the Kubernetes node and control-plane binaries the real-cluster lab
# (test/cluster) runs beside hack/envtest-assets.sh's kube-apiserver and etcd:
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl,
# from the same k8s.io/kubernetes module release, through the Go module proxy
# (the usual release downloads are not reachable from our CI).
# Idempotent: does nothing when the cached binaries already exist.
#
# Usage: hack/k8s-node-binaries.sh     prints the binary directory on stdout
#        KUBE_VERSION / BGPLB_K8S_NODE_CACHE override the defaults.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.34.3}"
CACHE="${BGPLB_K8S_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bgplb/k8s-node}"
DEST="$CACHE/k8s-${KUBE_VERSION}"
CMDS=(kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

log() { echo "k8s-node-binaries: $*" >&2; }

missing=()
for c in "${CMDS[@]}"; do
  [[ -x "$DEST/$c" ]] || missing+=("$c")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$DEST"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off

log "building ${missing[*]} v${KUBE_VERSION} (one-time, about 10-15 min cold on 2 cores)"
cd "$work"
go mod init bgplb.local/k8snode >/dev/null 2>&1
# As hack/envtest-assets.sh: k8s.io/kubernetes requires its staging modules at
# v0.0.0; pin each to the matching published v0.X.Y.
staging_version="v0.${KUBE_VERSION#1.}"
go mod download -json "k8s.io/kubernetes@v${KUBE_VERSION}" >"$work/dl.json"
gomod="$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' "$work/dl.json")"
{
  echo "require k8s.io/kubernetes v${KUBE_VERSION}"
  grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} >>go.mod
{
  echo '//go:build tools'
  echo
  echo 'package tools'
  echo
  for c in "${missing[@]}"; do echo "import _ \"k8s.io/kubernetes/cmd/$c\""; done
} >tools.go
go mod tidy >&2
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#1.}"
# kubectl reports its version from client-go's copy of the version package.
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v${KUBE_VERSION} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${KUBE_VERSION#1.}"
for c in "${missing[@]}"; do
  log "go build k8s.io/kubernetes/cmd/$c"
  go build -trimpath -ldflags "$ldflags" -o "$DEST/$c.tmp" "k8s.io/kubernetes/cmd/$c" >&2
  mv "$DEST/$c.tmp" "$DEST/$c"
done
log "ready in $DEST"
echo "$DEST"
