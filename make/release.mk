# Images and releases (issue 15). Included by the top-level Makefile after
# make/install.mk; uses its GO, BIN, VERSION, KUSTOMIZE, HELM.
#
# One place names the images: IMAGE_REPO and VERSION. `make image` builds
# $(IMAGE_REPO)/bgplb-controller:$(VERSION) and .../bgplb-speaker:$(VERSION);
# `make release` renders install.yaml and packages the chart with the same.

# The registry and path the images are pushed to (…/bgplb-controller, …/bgplb-speaker).
IMAGE_REPO ?= ghcr.io/bgplb
IMAGE_ARCHES ?= amd64 arm64

##@ Images and release

.PHONY: image
image: ## Build multi-arch OCI image tarballs of the controller and speaker into dist/image/ (no daemon).
	VERSION='$(VERSION)' IMAGE_REPO='$(IMAGE_REPO)' ARCHES='$(IMAGE_ARCHES)' GO='$(GO)' BIN='$(BIN)' \
	  SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' hack/image.sh build

.PHONY: image-push
image-push: ## Push the images built by `make image` to $(IMAGE_REPO)/<program>:$(VERSION).
	VERSION='$(VERSION)' IMAGE_REPO='$(IMAGE_REPO)' GO='$(GO)' BIN='$(BIN)' hack/image.sh push

.PHONY: release
release: ## Build dist/release/: images, install.yaml, chart, both .debs, SHA256SUMS.
	rm -rf $(DIST)/release $(DIST)/image
	mkdir -p $(DIST)/release
	$(MAKE) --no-print-directory image deb VERSION='$(VERSION)' IMAGE_REPO='$(IMAGE_REPO)' DEB_ARCHES='amd64 arm64' IMAGE_ARCHES='amd64 arm64'
	VERSION='$(VERSION)' IMAGE_REPO='$(IMAGE_REPO)' KUSTOMIZE='$(KUSTOMIZE)' HELM='$(HELM)' hack/release.sh
