# bgplb build, test and release targets. `make help` lists them.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
BIN := $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.19.0
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
PROGRAMS := bgplb-controller bgplb-speaker bgplb-routeragent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/bgplb/bgplb/internal/version.Version=$(VERSION)

# Packaging and install targets: tools, build-installer, deb, helm-lint, ...
include make/install.mk
# Images (no daemon) and releases: image, image-push, release
include make/release.mk

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_-]+:.*##/ {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code from the API types.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC roles from markers.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=bgplb-controller paths="./controllers/..." output:rbac:artifacts:config=config/rbac/controller
	$(CONTROLLER_GEN) rbac:roleName=bgplb-speaker paths="./speaker/..." output:rbac:artifacts:config=config/rbac/speaker

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet.
	$(GO) vet ./...

.PHONY: lint
lint: vet ## Static checks: gofmt, go vet, go.mod tidy, golangci-lint (.golangci.yml).
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; exit 1; }
	"$$(hack/tools.sh --path golangci-lint)" run --timeout 10m ./...

GENERATED := api/v1alpha1/zz_generated.deepcopy.go config/crd/bases config/rbac dist/install.yaml charts/bgplb/crds charts/bgplb/files
generated-sum = find $(GENERATED) -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum

.PHONY: check-generated
check-generated: ## Fail when generated files (deepcopy, CRDs, RBAC, dist/install.yaml, chart copies) do not match their sources.
	@before=$$($(generated-sum)); \
	$(MAKE) --no-print-directory generate manifests build-installer >/dev/null; \
	after=$$($(generated-sum)); \
	if [ "$$before" != "$$after" ]; then \
	  echo "generated files were stale and have been regenerated; review and commit them:"; \
	  diff <(echo "$$before") <(echo "$$after") | sed -n 's/^> //p'; exit 1; fi

.PHONY: deps
deps: ## Install the Debian packages the tests and the demo use (as root; lists them otherwise).
	@hack/install-deps.sh

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver and etcd for envtest from the Go module proxy (cached).
	@hack/envtest-assets.sh >/dev/null

.PHONY: k8s-node-binaries
k8s-node-binaries: ## Build kubelet, kube-proxy, kube-controller-manager, kube-scheduler and kubectl for the real-cluster lab (cached).
	@hack/k8s-node-binaries.sh >/dev/null

##@ Test

# Every test, including envtest suites against a real apiserver and, as root,
# kernel tests in network namespaces the tests create.
.PHONY: test
test: deps check-generated lint envtest-assets k8s-node-binaries tools fuzz-smoke test-race ## Run all tests (the README's test command).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" BGPLB_REQUIRE_ENVTEST=1 \
	  $(GO) test -count=1 -timeout 40m $(TESTFLAGS) ./...

# Packages whose tests also run under the race detector in `make test`: all
# but test/e2e and test/install, whose tests drive separately built binaries
# (the detector in the test process would see none of their code).
# speaker/bgp is race-clean because the speaker runs one GoBGP server per
# process: GoBGP v3.37.0's StartBgp writes package variables every running
# server reads (osrg/gobgp#3659), so its tests start their in-process routers
# before the speaker's server (see speaker/bgp/bgptest). See docs/reliability.md.
RACE_PKGS := ./api/... ./cmd/... ./controllers/... ./internal/... ./speaker/... ./routeragent/... ./test/faults

.PHONY: test-race
test-race: envtest-assets ## Run the race-clean packages' tests under -race.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" BGPLB_REQUIRE_ENVTEST=1 \
	  $(GO) test -race -count=1 -timeout 40m $(RACE_PKGS)

.PHONY: test-router
test-router: ## Boot Debian 12 (systemd-nspawn) as the lab's router and test the agent's .deb on it (root).
	hack/debian-rootfs.sh >/dev/null
	$(GO) test -count=1 -v -timeout 20m ./test/router/

.PHONY: fuzz-smoke
fuzz-smoke: ## Run every fuzzer briefly (FUZZTIME, default 10s each).
	hack/fuzz-smoke.sh

.PHONY: bench
bench: envtest-assets build ## Run the benchmarks and print their numbers.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" \
	  $(GO) test -run '^$$' -bench . -benchmem -timeout 60m $(BENCHFLAGS) ./...

.PHONY: bench-failover
bench-failover: build ## Side by side: a node's link cut or its daemons frozen (SIGSTOP) -> its next hop out of the router's kernel route (agent with BFD and hold timer, FRR, BIRD; FRR nodes), and failed requests over an agent restart (root; BENCH_FAILOVER_N=20).
	BGPLB_TEST_AGENT_BIN=$(BIN)/bgplb-routeragent BGPLB_BENCH_FAILOVER=1 BGPLB_BENCH_FAILOVER_N="$(BENCH_FAILOVER_N)" \
	  $(GO) test -run '^$$' -bench '^Benchmark(Failover|AgentRestartRequests)$$' -benchtime 1x -timeout 30m ./routeragent/agent/

.PHONY: bench-routers
bench-routers: build ## Side by side: the agent (bin/bgplb-routeragent), BIRD and FRR take the same bulks of routes (root; BENCH_ROUTERS_CASES=10k,100k,10x10k-ECMP).
	BGPLB_TEST_AGENT_BIN=$(BIN)/bgplb-routeragent BGPLB_BENCH_ROUTERS=1 BGPLB_BENCH_ROUTERS_CASES="$(BENCH_ROUTERS_CASES)" \
	  $(GO) test -run '^$$' -bench '^BenchmarkRouters$$' -benchtime 1x -timeout 30m ./routeragent/agent/

.PHONY: bench-drain
bench-drain: envtest-assets ## Failed requests through the lab's router during a node drain, a rolling update and a speaker restart (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" BGPLB_BENCH_DRAIN=1 \
	  $(GO) test -run '^$$' -bench '^BenchmarkDrainZeroFailures$$' -benchtime 1x -timeout 30m ./test/e2e/

.PHONY: test-cluster
test-cluster: deps envtest-assets k8s-node-binaries ## The real-cluster tests only (test/cluster: kubelet, containerd, kube-proxy; root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" BGPLB_REQUIRE_ENVTEST=1 \
	  $(GO) test -count=1 -v -timeout 30m $(TESTFLAGS) ./test/cluster/

##@ Demo

.PHONY: demo
demo: deps envtest-assets build ## Replay the story in network namespaces: broken, then fixed (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" $(BIN)/bgplb-lab demo --bin $(BIN)

.PHONY: demo-real
demo-real: deps envtest-assets k8s-node-binaries ## Replay the story on a real cluster: kubectl apply -f dist/install.yaml, kubelet, containerd, kube-proxy (root).
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" BGPLB_REQUIRE_ENVTEST=1 \
	  $(GO) test -count=1 -v -run '^TestStoryInstallYAML$$' -timeout 20m ./test/cluster/

.PHONY: demo-down
demo-down: ## Remove the demo lab, also after an interrupted demo.
	@if [ -x $(BIN)/bgplb-lab ]; then $(BIN)/bgplb-lab down; else $(GO) run ./cmd/bgplb-lab down; fi

##@ Build

.PHONY: build
build: ## Build static binaries into bin/.
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(PROGRAMS)) ./cmd/bgplb-lab

$(CONTROLLER_GEN):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(BIN)/controller-gen $@
