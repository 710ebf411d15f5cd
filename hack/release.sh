#!/usr/bin/env bash
# Assembles a release into dist/release/ (`make release`):
#
#   bgplb-controller-<VERSION>.oci.tar, bgplb-speaker-<VERSION>.oci.tar
#                      multi-arch OCI image layouts (hack/image.sh)
#   install.yaml       config/default with both images at $IMAGE_REPO/<program>:$VERSION
#   bgplb-<chart version>.tgz
#                      the Helm chart, version and appVersion set to the release
#   bgplb-routeragent_<deb version>_{amd64,arm64}.deb
#   SHA256SUMS         `sha256sum -c SHA256SUMS` in dist/release verifies them
#
# One place sets the images: IMAGE_REPO and VERSION. The tree is never
# edited: the manifest is rendered from a copy of config/ (kustomize edit set
# image), and the chart's version, appVersion and image repository are
# written into the packaged copy only.
#
# Environment (the Makefile passes them): VERSION, IMAGE_REPO, KUSTOMIZE,
# HELM, MAKE. The images and .debs are built by `make image deb` beforehand.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
: "${VERSION:?}" "${IMAGE_REPO:?}" "${KUSTOMIZE:?}" "${HELM:?}"
DEFAULT_REPO=ghcr.io/bgplb
PROGRAMS="bgplb-controller bgplb-speaker"
OUT="$ROOT/dist/release"

log() { echo "release: $*" >&2; }

# chart_version turns VERSION into the SemVer 2 that Helm requires:
# v1.2.3 -> 1.2.3, v1.2.3-4-gabc -> 1.2.3-4-gabc; an untagged tree's
# abc1234 -> 0.0.0-git.abc1234.
chart_version() {
  local v="${1#v}"
  if [[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$ ]]; then
    echo "$v"
  else
    echo "0.0.0-git.$v"
  fi
}

if [[ -n "$(git status --porcelain 2>/dev/null | head -1)" ]]; then
  log "warning: the tree has uncommitted changes (VERSION $VERSION)"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The images (already built by `make image` with the same VERSION).
for p in $PROGRAMS; do
  cp "dist/image/$p-$VERSION.oci.tar" "$OUT/"
done

# The manifest, from a copy of config/.
cp -r config "$tmp/config"
(cd "$tmp/config/default" && for p in $PROGRAMS; do
  "$KUSTOMIZE" edit set image "$DEFAULT_REPO/$p=$IMAGE_REPO/$p:$VERSION"
done)
"$KUSTOMIZE" build "$tmp/config/default" >"$OUT/install.yaml"

# The chart, from a copy: the image repository follows IMAGE_REPO (every
# default repository under ghcr.io/bgplb moves to the same name under
# IMAGE_REPO), version and appVersion follow VERSION.
cp -r charts/bgplb "$tmp/bgplb"
if [[ "$IMAGE_REPO" != "$DEFAULT_REPO" ]]; then
  sed -i -E "s#^([[:space:]]*repository:[[:space:]]*)$DEFAULT_REPO/#\1$IMAGE_REPO/#" "$tmp/bgplb/values.yaml"
fi
"$HELM" package "$tmp/bgplb" --version "$(chart_version "$VERSION")" --app-version "$VERSION" \
  --destination "$OUT" >/dev/null

# Every image the chart renders by default should be one we built.
want=" $(for p in $PROGRAMS; do printf '%s ' "$IMAGE_REPO/$p:$VERSION"; done)"
for img in $("$HELM" template bgplb "$OUT"/bgplb-*.tgz | sed -n 's/^[[:space:]]*image:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' | sort -u); do
  if [[ "$want" != *" $img "* ]]; then
    log "the chart installs $img, which this release does not build (it builds$want)"
    exit 1
  fi
done

# The router agent's packages (already built by `make deb`).
DEB_VERSION="$(hack/deb-version.sh)"
for arch in amd64 arm64; do
  cp "dist/bgplb-routeragent_${DEB_VERSION}_$arch.deb" "$OUT/"
done

(cd "$OUT" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%P\n' | sort | xargs sha256sum >SHA256SUMS)
log "wrote $OUT:"
(cd "$OUT" && cat SHA256SUMS >&2)
