#!/usr/bin/env bash
# Builds the bgplb-controller and bgplb-speaker images without a container
# daemon, or pushes them (`make image`, `make image-push`).
#
#   hack/image.sh build   writes dist/image/<program>-<VERSION>.oci.tar
#   hack/image.sh push    pushes those tarballs to $IMAGE_REPO/<program>:<VERSION>
#
# Each tarball is an OCI image layout (what `docker buildx --output type=oci`
# writes) whose index.json names one image index with a manifest per
# architecture. `ctr images import`, `skopeo copy oci-archive:...` and
# `crane push` read it.
#
# The images are FROM scratch: no base image is pulled (nothing here may
# need a registry). They hold /etc/passwd and /etc/group with root and
# distroless's nonroot user (65532), and the static program (CGO_ENABLED=0)
# at /<program>, which is the entrypoint; they run as 65532:65532, as the
# manifests' securityContext expects. No CA bundle: both programs talk only
# to the Kubernetes API, with the service account's CA.
#
# Environment: VERSION, IMAGE_REPO (default ghcr.io/bgplb), ARCHES (default
# "amd64 arm64"), PROGRAMS, SOURCE_DATE_EPOCH (default: the last commit's
# time; the images' timestamps, so that a rebuild of one commit is
# byte-identical), GO (default go).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
GO="${GO:-go}"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
IMAGE_REPO="${IMAGE_REPO:-ghcr.io/bgplb}"
ARCHES="${ARCHES:-amd64 arm64}"
PROGRAMS="${PROGRAMS:-bgplb-controller bgplb-speaker}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
BIN="${BIN:-$ROOT/bin}"
OUT="${IMAGE_DIST:-$ROOT/dist/image}"
WORK="$ROOT/dist/build/image"

log() { echo "image: $*" >&2; }

# Deterministic tar: sorted names, root-owned, fixed mtime, no PAX headers.
dtar() {
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    --format=ustar "$@"
}

tool() {
  # The builder has its own module (go-containerregistry, pinned in
  # hack/image/go.mod), outside bgplb's go.mod; the Go cache makes this cheap.
  mkdir -p "$BIN"
  (cd hack/image && GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=0 "$GO" build -trimpath -o "$BIN/bgplb-image" .)
  echo "$BIN/bgplb-image"
}

build() {
  local img; img="$(tool)"
  rm -rf "$WORK"; mkdir -p "$WORK" "$OUT"

  # The base layer: /etc/passwd and /etc/group as distroless has them.
  local base="$WORK/base"
  mkdir -p "$base/etc"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$base/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$base/etc/group"
  chmod 0755 "$base/etc"; chmod 0644 "$base/etc/passwd" "$base/etc/group"
  dtar -C "$base" -cf "$WORK/base.tar" etc

  local arch prog
  for arch in $ARCHES; do
    log "building $PROGRAMS for linux/$arch ($VERSION)"
    mkdir -p "$WORK/linux-$arch"
    CGO_ENABLED=0 GOOS=linux GOARCH="$arch" "$GO" build -trimpath \
      -ldflags "-s -w -X github.com/bgplb/bgplb/internal/version.Version=$VERSION" \
      -o "$WORK/linux-$arch/" $(for p in $PROGRAMS; do echo "./cmd/$p"; done)
    for prog in $PROGRAMS; do
      chmod 0755 "$WORK/linux-$arch/$prog"
      dtar -C "$WORK/linux-$arch" -cf "$WORK/$prog-linux-$arch.tar" "$prog"
    done
  done

  for prog in $PROGRAMS; do
    local layers=()
    for arch in $ARCHES; do layers+=(-layer "linux/$arch=$WORK/$prog-linux-$arch.tar"); done
    "$img" build -name "$prog" -version "$VERSION" -created "$SOURCE_DATE_EPOCH" \
      -ref "$IMAGE_REPO/$prog:$VERSION" -base "$WORK/base.tar" "${layers[@]}" -out "$WORK/$prog"
    rm -f "$OUT/$prog"-*.oci.tar
    dtar -C "$WORK/$prog" -cf "$OUT/$prog-$VERSION.oci.tar" oci-layout index.json blobs
    log "wrote $OUT/$prog-$VERSION.oci.tar"
  done
}

push() {
  local img; img="$(tool)"
  local prog tmp
  for prog in $PROGRAMS; do
    local tarball="$OUT/$prog-$VERSION.oci.tar"
    [[ -f "$tarball" ]] || { log "$tarball missing: run make image (same VERSION) first"; exit 1; }
    tmp="$(mktemp -d)"
    tar -C "$tmp" -xf "$tarball"
    "$img" push -layout "$tmp" -ref "$IMAGE_REPO/$prog:$VERSION" || { rm -rf "$tmp"; exit 1; }
    rm -rf "$tmp"
  done
}

case "${1:-}" in
  build) build ;;
  push) push ;;
  *) echo "usage: $0 build|push" >&2; exit 2 ;;
esac
