#!/usr/bin/env bash
# The demo on the local cluster: a real control plane and a process-backed node;
# the operator installed by its Helm chart and running as a Pod; the example Redis
# and PostgreSQL clusters created, shown Ready, and used through their Services
# with the generated credentials; the Redis cluster used through its routers and
# scaled out online from 3 to 4 shards.
# DEMO_KEEP=1 leaves the cluster running (stop it with `make cluster-down CLUSTER_DIR=.e2e/demo`).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${DEMO_DIR:-.e2e/demo}"
NS=demo
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
kubectl get nodes -o wide

step "helm install ringmaster (CRDs, RBAC, the operator Deployment)"
# The local process-backed node runs all Pods in one network namespace (the host's):
# the chart's default httpAddress 0.0.0.0:8080 would collide between Pods, so the
# operator listens on its own Pod IP. (On a real cluster keep the default.)
helm upgrade --install ringmaster charts/ringmaster -n ringmaster-system --create-namespace \
  --set-string 'httpAddress=$(POD_IP):8080' --set logFormat=text --wait --timeout 120s
kubectl get pods -n ringmaster-system -o wide

step "kubectl apply -f examples/ (a Redis and a PostgreSQL ShardedCluster)"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n "$NS" -f examples/
if ! kubectl wait -n "$NS" --for=jsonpath='{.status.phase}'=Ready \
    shardedcluster/cache shardedcluster/orders --timeout=300s; then
  echo "the clusters did not become Ready within 300s; their state:" >&2
  kubectl get shardedclusters,shards,pods -n "$NS" -o wide >&2
  kubectl describe shardedclusters -n "$NS" >&2
  exit 1
fi
kubectl get shardedclusters,shards -n "$NS"
kubectl get pods,pvc -n "$NS" -o wide -L ringmaster.dev/role

step "using the clusters through their -rw Services with the generated credentials"
secret() { kubectl get secret "$1-credentials" -n "$NS" -o jsonpath="{.data.$2}" | base64 -d; }
vip() { kubectl get service "$1" -n "$NS" -o jsonpath='{.spec.clusterIP}'; }
REDIS_VIP="$(vip cache-0-rw)"
REDISCLI_AUTH="$(secret cache password)" redis-cli -h "$REDIS_VIP" -p 6379 SET greeting "hello from shard 0"
REDISCLI_AUTH="$(secret cache password)" redis-cli -h "$REDIS_VIP" -p 6379 GET greeting
PG_VIP="$(vip orders-0-rw)"
PGPASSWORD="$(secret orders password)" psql "host=$PG_VIP port=5432 user=$(secret orders username) dbname=postgres" \
  -c "CREATE TABLE IF NOT EXISTS orders (id bigserial, customer_id bigint)" \
  -c "INSERT INTO orders (customer_id) VALUES (42)" -c "SELECT count(*) AS orders FROM orders"

step "the Redis cluster through its routers (Service cache-router): 1000 keys on the hash ring"
kubectl rollout status deployment/cache-router -n "$NS" --timeout=120s
ROUTER_VIP="$(vip cache-router)"
router() { REDISCLI_AUTH="$(secret cache password)" redis-cli -h "$ROUTER_VIP" -p 6379 "$@"; }
for i in $(seq 1 1000); do echo "SET demo:$i value-$i"; done | router >/dev/null
router DBSIZE
router GET demo:42
for shard in 0 1 2; do
  printf 'keys on shard %s: ' "$shard"
  REDISCLI_AUTH="$(secret cache password)" redis-cli -h "$(vip "cache-$shard-rw")" -p 6379 DBSIZE
done

step "scaling out online: shards 3 -> 4 (a ShardMigration moves a quarter of the ring)"
kubectl patch shardedcluster cache -n "$NS" --type merge -p '{"spec":{"shards":4}}'
if ! kubectl wait -n "$NS" --for=jsonpath='{.status.ringVersion}'=2 shardedcluster/cache --timeout=300s ||
   ! kubectl wait -n "$NS" --for=jsonpath='{.status.phase}'=Completed shardmigration/cache-ring-2 --timeout=300s; then
  echo "the migration did not complete within 300s; its state:" >&2
  kubectl get shardedclusters,shards,shardmigrations -n "$NS" -o wide >&2
  kubectl describe shardmigrations -n "$NS" >&2
  exit 1
fi
kubectl get shardmigrations -n "$NS" -o wide
router DBSIZE
for i in $(seq 1 1000); do echo "GET demo:$i"; done | router | grep -c '^value-' | {
  read -r found; echo "keys read back through the routers: $found/1000"; [[ "$found" == 1000 ]]; }
for shard in 0 1 2 3; do
  printf 'keys on shard %s: ' "$shard"
  REDISCLI_AUTH="$(secret cache password)" redis-cli -h "$(vip "cache-$shard-rw")" -p 6379 DBSIZE
done

step "the routing table routers read"
kubectl get configmap cache-routing -n "$NS" -o jsonpath='{.data.routing\.json}'; echo

step "operator metrics"
OP_VIP="$(kubectl get service -n ringmaster-system -l app.kubernetes.io/name=ringmaster -o jsonpath='{.items[0].spec.clusterIP}')"
python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
  "http://$OP_VIP:8080/metrics" | grep -E '^ringmaster_(reconciles_total|leader)' || true

if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
  step "the cluster keeps running: export KUBECONFIG=$KUBECONFIG"
else
  step "tearing the cluster down (DEMO_KEEP=1 keeps it)"
fi
