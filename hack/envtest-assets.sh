#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver and etcd) from the Go module
# proxy, because the usual prebuilt download is not reachable from our CI.
# Idempotent: does nothing when the cached binaries already exist.
#
# Usage: hack/envtest-assets.sh        prints the asset directory on stdout
#        KUBE_VERSION / ETCD_VERSION / BGPLB_ENVTEST_CACHE override the defaults.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.34.3}"
ETCD_VERSION="${ETCD_VERSION:-3.6.5}"
CACHE="${BGPLB_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bgplb/envtest}"
DEST="$CACHE/k8s-${KUBE_VERSION}-etcd-${ETCD_VERSION}"

log() { echo "envtest-assets: $*" >&2; }

if [[ -x "$DEST/kube-apiserver" && -x "$DEST/etcd" ]]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$DEST"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off

if [[ ! -x "$DEST/etcd" ]]; then
  log "building etcd v${ETCD_VERSION} (about 30 s)"
  mkdir -p "$work/etcd"
  cat >"$work/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$work/etcd" && go mod init bgplb.local/etcd >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >&2 &&
    go mod tidy >&2 &&
    go build -trimpath -o "$DEST/etcd.tmp" . >&2)
  mv "$DEST/etcd.tmp" "$DEST/etcd"
fi

if [[ ! -x "$DEST/kube-apiserver" ]]; then
  log "building kube-apiserver v${KUBE_VERSION} (about 5 min cold)"
  mkdir -p "$work/kas"
  cd "$work/kas"
  go mod init bgplb.local/kas >/dev/null 2>&1
  # k8s.io/kubernetes requires its staging modules at v0.0.0; pin each to the
  # matching published v0.X.Y.
  staging_version="v0.${KUBE_VERSION#1.}"
  go mod download -json "k8s.io/kubernetes@v${KUBE_VERSION}" >"$work/kas/dl.json"
  gomod="$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' "$work/kas/dl.json")"
  {
    echo "require k8s.io/kubernetes v${KUBE_VERSION}"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >>go.mod
  cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
  go mod tidy >&2
  go build -trimpath \
    -ldflags "-X k8s.io/component-base/version.gitVersion=v${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#1.}" \
    -o "$DEST/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
  mv "$DEST/kube-apiserver.tmp" "$DEST/kube-apiserver"
fi
log "ready in $DEST"
echo "$DEST"
