#!/usr/bin/env bash
# Builds the packaging tools bgplb uses from the Go module proxy, at pinned
# versions, into bin/ (the usual release downloads are not reachable from our
# CI). Idempotent: a tool already built at its pinned version is not rebuilt.
#
# Usage: hack/tools.sh [helm|kustomize|nfpm|golangci-lint ...]   builds the named tools (default: all)
#        hack/tools.sh --path TOOL                 builds TOOL if needed, prints its path
#
# Each tool lands in bin/<tool>-<version> with a bin/<tool> symlink, so a
# version bump here rebuilds it. Tools are built one at a time with their own
# go.mod (go install pkg@version), never touching bgplb's go.mod.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.1}"
NFPM_VERSION="${NFPM_VERSION:-v2.45.2}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BGPLB_TOOLS_BIN:-$ROOT/bin}"

log() { echo "tools: $*" >&2; }

pkg_of() {
  case "$1" in
    helm) echo "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ;;
    kustomize) echo "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" ;;
    nfpm) echo "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" ;;
    golangci-lint) echo "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION" ;;
    *) echo "tools: unknown tool $1 (helm, kustomize, nfpm, golangci-lint)" >&2; return 1 ;;
  esac
}

version_of() {
  case "$1" in
    helm) echo "$HELM_VERSION" ;;
    kustomize) echo "$KUSTOMIZE_VERSION" ;;
    nfpm) echo "$NFPM_VERSION" ;;
    golangci-lint) echo "$GOLANGCI_LINT_VERSION" ;;
  esac
}

build() {
  local tool="$1" pkg version dest gobin
  pkg="$(pkg_of "$tool")"
  version="$(version_of "$tool")"
  dest="$BIN/$tool-$version"
  if [[ ! -x "$dest" ]]; then
    log "building $pkg (one-time, cached in $BIN)"
    mkdir -p "$BIN"
    gobin="$(mktemp -d)"
    # GOFLAGS is cleared: bgplb's -mod settings must not leak into the tools'
    # own modules. Helm reports its version from these ldflags.
    local ldflags="-s -w"
    if [[ "$tool" == helm ]]; then
      # As helm's own Makefile does: the version, and the Kubernetes version
      # `helm template`/`lint` assume (1.(client-go minor)), which otherwise
      # stays at 1.20.
      local minor
      minor="$(cd "$gobin" && GOFLAGS= go mod download -json "${pkg%%/cmd/*}@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' |
        xargs sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p')"
      [[ -n "$minor" ]] || { log "cannot find helm's client-go version"; return 1; }
      ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version"
      ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
      ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
    fi
    if ! (cd "$gobin" && GOFLAGS= GOWORK=off CGO_ENABLED=0 GOBIN="$gobin" \
          go install -trimpath -ldflags "$ldflags" "$pkg" >&2); then
      rm -rf "$gobin"
      log "failed to build $pkg; is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?"
      return 1
    fi
    mv "$gobin/$tool" "$dest"
    rm -rf "$gobin"
  fi
  ln -sfn "$(basename "$dest")" "$BIN/$tool"
  echo "$dest"
}

if [[ "${1:-}" == "--path" ]]; then
  [[ $# -eq 2 ]] || { echo "usage: $0 --path TOOL" >&2; exit 2; }
  build "$2"
  exit 0
fi

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(kustomize nfpm helm golangci-lint)
for t in "${tools[@]}"; do
  build "$t" >/dev/null
done
