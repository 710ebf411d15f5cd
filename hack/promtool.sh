#!/usr/bin/env bash
# Builds promtool (Prometheus's rule and config checker) from the Go module
# proxy at a pinned version, because the usual release download is not
# reachable from our CI. The binary is cached outside the checkout, as
# hack/envtest-assets.sh caches kube-apiserver, so a clean CI checkout reuses
# it. Idempotent: does nothing when the cached binary exists.
#
# Usage: hack/promtool.sh      builds promtool if needed, prints its path
#        PROMETHEUS_VERSION / BGPLB_TOOLS_CACHE override the defaults.
#
# The Prometheus module is versioned v0.3MM.P for Prometheus v3.MM.P.
# It is built with `go install pkg@version` in its own module, so its large
# dependency graph never enters bgplb's go.mod.
set -euo pipefail

PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
CACHE="${BGPLB_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bgplb/tools}"
DEST="$CACHE/promtool-$PROMETHEUS_VERSION"

log() { echo "promtool: $*" >&2; }

if [[ -x "$DEST" ]]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$CACHE"
gobin="$(mktemp -d)"
trap 'rm -rf "$gobin"' EXIT
pkg="github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
log "building $pkg (one-time, cached in $CACHE)"
# GOFLAGS is cleared: bgplb's -mod settings must not leak into promtool's
# module. The version is what `promtool --version` reports.
ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
if ! (cd "$gobin" && GOFLAGS= GOWORK=off CGO_ENABLED=0 GOBIN="$gobin" \
      go install -trimpath -ldflags "$ldflags" "$pkg" >&2); then
  log "failed to build $pkg; is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?"
  exit 1
fi
mv "$gobin/promtool" "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
echo "$DEST"
