# Packaging and installation targets (issue 6). Included by the top-level
# Makefile (`include make/install.mk`); uses its GO, BIN and VERSION when set.
# Standalone: make -f Makefile -f make/install.mk <target>

GO ?= go
BIN ?= $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DIST := $(CURDIR)/dist
TOOLS := $(CURDIR)/hack/tools.sh
KUSTOMIZE = $(shell $(TOOLS) --path kustomize)
HELM = $(shell $(TOOLS) --path helm)
NFPM = $(shell $(TOOLS) --path nfpm)

# Debian version of the tree (see hack/deb-version.sh): v1.2.3 -> 1.2.3,
# an untagged tree -> 0.0.0~git.<sha>.
DEB_VERSION ?= $(shell hack/deb-version.sh)
DEB_ARCHES ?= amd64 arm64

##@ Install and packaging

.PHONY: tools
tools: ## Build helm, kustomize, nfpm and golangci-lint (pinned in hack/tools.sh) into bin/.
	@$(TOOLS)

.PHONY: chart-sync
# The CRDs go to the chart's crds/ folder (Helm creates them before it renders
# the templates, see charts/bgplb/templates/resources.yaml), the roles to
# files/rbac, the dashboard and the alerting rules to files/monitoring.
chart-sync: manifests ## Copy the generated CRDs, RBAC roles, dashboard and alerting rules into the chart (commit them).
	@mkdir -p charts/bgplb/crds charts/bgplb/files/rbac charts/bgplb/files/monitoring
	rm -f charts/bgplb/crds/*.yaml charts/bgplb/files/rbac/*.yaml charts/bgplb/files/monitoring/*
	cp config/crd/bases/*.yaml charts/bgplb/crds/
	cp config/monitoring/grafana-dashboard.json config/monitoring/prometheus-rules.yaml charts/bgplb/files/monitoring/
	@for c in controller speaker; do \
	  if [ -f config/rbac/$$c/role.yaml ]; then cp config/rbac/$$c/role.yaml charts/bgplb/files/rbac/$$c-role.yaml; \
	  else echo "chart-sync: config/rbac/$$c/role.yaml missing (no +kubebuilder:rbac markers yet?)" >&2; exit 1; fi; \
	done

.PHONY: build-installer
build-installer: chart-sync ## Render config/default into dist/install.yaml and sync the chart's copies (commit both).
	@mkdir -p $(DIST)
	$(KUSTOMIZE) build config/default > $(DIST)/install.yaml.tmp
	mv $(DIST)/install.yaml.tmp $(DIST)/install.yaml

.PHONY: helm-lint
helm-lint: ## helm lint the chart (strict).
	$(HELM) lint --strict charts/bgplb

.PHONY: helm-package
helm-package: ## Package charts/bgplb into dist/.
	@mkdir -p $(DIST)
	$(HELM) package charts/bgplb --destination $(DIST)

# The man pages' date (reproducible builds): the last commit's, unless set.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)

.PHONY: deb
deb: ## Build dist/bgplb-routeragent_<version>_<arch>.deb for $(DEB_ARCHES).
	@mkdir -p $(DIST)/build/stage
	@# Man pages and bash completion, from the command tree (any arch).
	SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' $(GO) run \
	  -ldflags '-X github.com/bgplb/bgplb/internal/version.Version=$(VERSION)' \
	  ./routeragent/cli/gendoc -out $(DIST)/build/stage
	@# Debian's copyright file, from the modules linked into the binary.
	GO='$(GO)' hack/deb-copyright.sh > $(DIST)/build/stage/copyright
	@set -e; for arch in $(DEB_ARCHES); do \
	  out=$(DIST)/build/linux-$$arch; mkdir -p $$out $(DIST)/build/stage; \
	  echo "deb: building bgplb-routeragent for $$arch"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath \
	    -ldflags '-s -w -X github.com/bgplb/bgplb/internal/version.Version=$(VERSION)' \
	    -o $$out/bgplb-routeragent ./cmd/bgplb-routeragent; \
	  cp $$out/bgplb-routeragent $(DIST)/build/stage/bgplb-routeragent; \
	  ARCH=$$arch DEB_VERSION='$(DEB_VERSION)' \
	    $(NFPM) package --config packaging/nfpm.yaml --packager deb \
	    --target $(DIST)/bgplb-routeragent_$(DEB_VERSION)_$$arch.deb; \
	done

.PHONY: test-install
test-install: tools envtest-assets ## Packaging tests: chart, manifest on envtest, .deb in a scratch root.
	KUSTOMIZE="$(KUSTOMIZE)" HELM="$(HELM)" NFPM="$(NFPM)" \
	  KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" BGPLB_REQUIRE_ENVTEST=1 \
	  $(GO) test -count=1 ./test/install/
