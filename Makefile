# ringmaster — make targets. See README.md.

CARGO ?= cargo
CARGO_TARGET_DIR ?= target
E2E_CLUSTER := $(CARGO_TARGET_DIR)/debug/e2e-cluster
# Directory of the long-lived local cluster (gitignored).
CLUSTER_DIR ?= .e2e/cluster

.PHONY: build cluster-up cluster-down

## build: every binary of the workspace (debug)
build:
	$(CARGO) build --workspace --bins

## cluster-up: start the local cluster in $(CLUSTER_DIR) (builds what is missing first)
cluster-up: build
	e2e/k8s/build.sh >/dev/null
	$(E2E_CLUSTER) up --dir $(CLUSTER_DIR)

## cluster-down: stop the local cluster of $(CLUSTER_DIR) and wait until it is gone
cluster-down:
	@if [ -x $(E2E_CLUSTER) ]; then $(E2E_CLUSTER) down --dir $(CLUSTER_DIR); \
	else echo "$(E2E_CLUSTER) is not built: no cluster to stop"; fi
