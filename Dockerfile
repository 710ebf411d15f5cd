# syntax=docker/dockerfile:1
# For those who build with docker. Releases use `make image` instead
# (hack/image.sh: no daemon, FROM scratch, reproducible OCI tarballs); both
# give one image per program, the program as entrypoint, user 65532.
# Static binaries (CGO off) on distroless/static here.
#
#   docker build --target bgplb-controller -t ghcr.io/bgplb/bgplb-controller:v0.1.0 --build-arg VERSION=v0.1.0 .
#   docker build --target bgplb-speaker -t ghcr.io/bgplb/bgplb-speaker:v0.1.0 --build-arg VERSION=v0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 ...
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Dependencies first, so that a source change does not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY speaker/ speaker/
COPY internal/ internal/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X github.com/bgplb/bgplb/internal/version.Version=${VERSION}" \
      -o /out/ ./cmd/bgplb-controller ./cmd/bgplb-speaker

FROM gcr.io/distroless/static-debian12:nonroot AS bgplb-speaker
LABEL org.opencontainers.image.source="https://github.com/bgplb/bgplb" \
      org.opencontainers.image.description="bgplb speaker: Kubernetes LoadBalancer Services over BGP"
COPY --from=build /out/bgplb-speaker /
USER 65532:65532
ENTRYPOINT ["/bgplb-speaker"]

# Last, so that a plain `docker build` gives the controller.
FROM gcr.io/distroless/static-debian12:nonroot AS bgplb-controller
LABEL org.opencontainers.image.source="https://github.com/bgplb/bgplb" \
      org.opencontainers.image.description="bgplb controller: Kubernetes LoadBalancer Services over BGP"
COPY --from=build /out/bgplb-controller /
USER 65532:65532
ENTRYPOINT ["/bgplb-controller"]
