# ringmaster — make targets. See README.md.

CARGO ?= cargo
CARGO_TARGET_DIR ?= target
E2E_CLUSTER := $(CARGO_TARGET_DIR)/debug/e2e-cluster
# Directory of the long-lived local cluster (gitignored).
CLUSTER_DIR ?= .e2e/cluster

.PHONY: setup k8s build crds lint test unit-test bench demo cluster-up cluster-down

## setup: install missing Debian packages and build the pinned control plane (once)
setup:
	e2e/setup.sh

## k8s: build the pinned control plane into its cache (no-op when cached)
k8s:
	e2e/k8s/build.sh >/dev/null

## build: every binary of the workspace (debug)
build:
	$(CARGO) build --workspace --bins

## crds: regenerate crds/ and the Helm chart's copies from the Rust types
crds:
	$(CARGO) run -q -p ringmaster -- crdgen

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: everything a change must pass: lint, unit tests, local-cluster integration tests
test: setup lint build
	$(CARGO) test --workspace

## unit-test: only the tests that need no cluster
unit-test:
	$(CARGO) test --workspace --lib --bins

## bench: benchmarks, each reported against a baseline measured in the same run
bench: setup build
	$(CARGO) bench --workspace

## demo: local cluster, the operator installed by its chart, the examples created, Ready and used
demo: setup build
	e2e/demo.sh

## cluster-up: start the local cluster in $(CLUSTER_DIR) (builds what is missing first)
cluster-up: build k8s
	$(E2E_CLUSTER) up --dir $(CLUSTER_DIR)

## cluster-down: stop the local cluster of $(CLUSTER_DIR) and wait until it is gone
cluster-down:
	@if [ -x $(E2E_CLUSTER) ]; then $(E2E_CLUSTER) down --dir $(CLUSTER_DIR); \
	else echo "$(E2E_CLUSTER) is not built: no cluster to stop"; fi
