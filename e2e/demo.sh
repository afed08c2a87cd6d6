#!/usr/bin/env bash
# The demo on the local cluster: a real control plane and a process-backed node;
# a chart installed with helm, its Pod running as local processes on a loopback
# IP, answering through its Service's virtual IP, its logs read with kubectl.
# DEMO_KEEP=1 leaves the cluster running (stop it with `make cluster-down CLUSTER_DIR=.e2e/demo`).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${DEMO_DIR:-.e2e/demo}"
E2E_CLUSTER="${CARGO_TARGET_DIR:-target}/debug/e2e-cluster"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_cluster() { "$E2E_CLUSTER" down --dir "$DIR" >/dev/null 2>&1 || true; }
if [[ "${DEMO_KEEP:-0}" != 1 ]]; then trap stop_cluster EXIT; fi

step "starting the local cluster in $DIR"
"$E2E_CLUSTER" up --dir "$DIR"
export KUBECONFIG="$PWD/$DIR/admin.kubeconfig"
BIN="$(e2e/k8s/build.sh --print-bin-dir)"
kubectl() { "$BIN/kubectl" "$@"; }
helm() { "$BIN/helm" "$@"; }

step "control plane and node"
kubectl version
kubectl get nodes -o wide

step "helm install tiny (a Deployment serving a ConfigMap, and its Service)"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install tiny e2e/testdata/charts/tiny -n demo --wait --timeout 90s
helm list -n demo
kubectl get pods,services -n demo -o wide

step "through the Service's virtual IP"
VIP="$(kubectl get service tiny-web -n demo -o jsonpath='{.spec.clusterIP}')"
for attempt in $(seq 1 50); do
  if body="$(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://$VIP/" 2>/dev/null)"; then
    echo "GET http://$VIP/ -> $body"
    break
  fi
  [[ $attempt -lt 50 ]] || { echo "the Service at $VIP did not answer within 10s" >&2; exit 1; }
  sleep 0.2
done

step "kubectl logs"
kubectl logs -n demo deployment/tiny-web

if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
  step "the cluster keeps running: export KUBECONFIG=$KUBECONFIG"
else
  step "tearing the cluster down (DEMO_KEEP=1 keeps it)"
fi
