#!/usr/bin/env bash
# Builds the OCI image tarballs the real-cluster lab (test/cluster,
# `make demo-real`) imports into each node's containerd: no registry and no
# container daemon are needed.
#
#   hack/cluster-images.sh OUTDIR
#
# writes OUTDIR/bgplb-controller.oci.tar and OUTDIR/bgplb-speaker.oci.tar
# (hack/image.sh, the release images, for the host's architecture only,
# tagged $IMAGE_REPO/<program>:$VERSION as dist/install.yaml names them),
# OUTDIR/pause.oci.tar (the pod sandbox image, $PAUSE_REF) and
# OUTDIR/backend.oci.tar (a small HTTP backend, $BACKEND_REF), both FROM
# scratch with a Go program from test/cluster/images.
#
# Environment: VERSION and IMAGE_REPO (default: as in dist/install.yaml),
# PAUSE_REF, BACKEND_REF, GO.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT="${1:?usage: $0 OUTDIR}"
GO="${GO:-go}"
ARCH="$("$GO" env GOARCH)"
# The images install.yaml runs: ghcr.io/bgplb/bgplb-controller:v0.1.0 -> repo and tag.
ctl_image="$(sed -n 's/^ *image: \(.*\/bgplb-controller:.*\)$/\1/p' dist/install.yaml | head -1)"
IMAGE_REPO="${IMAGE_REPO:-${ctl_image%/bgplb-controller:*}}"
VERSION="${VERSION:-${ctl_image##*:}}"
PAUSE_REF="${PAUSE_REF:-bgplb.local/lab/pause:v1}"
BACKEND_REF="${BACKEND_REF:-bgplb.local/lab/backend:v1}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH

log() { echo "cluster-images: $*" >&2; }
dtar() {
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" --format=ustar "$@"
}

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "bgplb-controller and bgplb-speaker as $IMAGE_REPO/<program>:$VERSION (linux/$ARCH)"
VERSION="$VERSION" IMAGE_REPO="$IMAGE_REPO" ARCHES="$ARCH" GO="$GO" IMAGE_DIST="$work/release" hack/image.sh build
for p in bgplb-controller bgplb-speaker; do
  mv "$work/release/$p-$VERSION.oci.tar" "$OUT/$p.oci.tar"
done

img="$(cd hack/image && GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=0 "$GO" build -trimpath -o "$work/bgplb-image" . && echo "$work/bgplb-image")"
mkdir -p "$work/base/etc" "$work/bin"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$work/base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$work/base/etc/group"
chmod 0755 "$work/base/etc"; chmod 0644 "$work/base/etc/passwd" "$work/base/etc/group"
dtar -C "$work/base" -cf "$work/base.tar" etc

lab_image() { # name (entrypoint /name) package ref file
  local name="$1" pkg="$2" ref="$3" file="$4"
  log "$ref from $pkg"
  CGO_ENABLED=0 GOOS=linux GOARCH="$ARCH" "$GO" build -trimpath -ldflags "-s -w" -o "$work/bin/$name" "$pkg"
  chmod 0755 "$work/bin/$name"
  dtar -C "$work/bin" -cf "$work/$name.tar" "$name"
  "$img" build -name "$name" -version "${ref##*:}" -created "$SOURCE_DATE_EPOCH" -ref "$ref" \
    -base "$work/base.tar" -layer "linux/$ARCH=$work/$name.tar" -out "$work/$name-layout"
  dtar -C "$work/$name-layout" -cf "$OUT/$file" oci-layout index.json blobs
}
lab_image pause ./test/cluster/images/pause "$PAUSE_REF" pause.oci.tar
lab_image bgplb-backend ./test/cluster/images/backend "$BACKEND_REF" backend.oci.tar
log "wrote $OUT"
