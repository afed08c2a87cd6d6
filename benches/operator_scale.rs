//! `ringmaster operator` at scale on the local cluster, each figure against a
//! baseline measured in the same run.
//!
//! The operator runs out of cluster as a child process (this package's release
//! binary, `--leader-election=false`, scoped to the scenario's namespace), as in
//! `tests/operator_reconcile.rs`. Scenarios:
//!
//! 1. **create → Ready** of a Redis ShardedCluster with 3 shards × (primary + 2
//!    replicas) = 9 instances, until `status.phase` is `Ready` with `readyShards`
//!    3; 3 trials, each in a fresh namespace with a fresh operator and cluster
//!    name, deleted afterwards. The intermediate milestones (Shards, PVCs, Pods,
//!    init containers, Pod readiness) show where the time goes. Baseline: 9 plain
//!    `redis:7.0` Pods created directly (`redis-server --bind $(POD_IP)`, a
//!    `tcpSocket` readiness probe every second) from create to all Ready, trials
//!    interleaved with the operator's.
//! 2. **Operator RSS** (`VmRSS` of `/proc/<pid>/status`): idle with synced caches
//!    and no clusters, then with 50 ShardedClusters (1 shard, 0 replicas) all
//!    Ready, and the increment per cluster; the 9-instance trials' operators give
//!    the one-cluster figure.
//! 3. **Reconcile duration** p50/p99 per controller from the operator's
//!    `ringmaster_reconcile_duration_seconds` histogram (quantiles interpolated
//!    within buckets like Prometheus' `histogram_quantile`) and
//!    `ringmaster_reconciles_total`, after the 50-cluster run; baseline: the same
//!    figures of the three one-cluster trials (their histograms summed).
//!
//! Also reported: how long deleting takes (and whether Pods are created while a
//! cluster is being deleted), and the round trip of a single `GET` by this bench
//! during each run, to tell operator time from apiserver time. Before the trials
//! the bench waits until the garbage collector has picked up the freshly
//! installed CRDs, so that the first deletion is not an outlier.
//!
//! Needs the binaries: `cargo build --workspace --bins` first. Run with
//! `cargo bench -p ringmaster --bench operator_scale` (or `make bench`); it takes
//! about 4 minutes on 2 cores. `RINGMASTER_BENCH_LOG_LEVEL` sets the operators'
//! `--log-level` (default `info`; their logs are in `$TMPDIR/ringmaster-operator-*.log`),
//! e.g. `info,kube_client=debug` to see every API request's timing.

#[path = "../tests/common/mod.rs"]
mod common;

use common::install_crds;
use common::operator::Operator;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use ringmaster::api::{Shard, ShardedCluster};
use ringmaster_e2e::{Cluster, wait_for};
use serde_json::json;

/// Trials of scenario 1 (operator and baseline each).
const TRIALS: usize = 3;
const SHARDS: usize = 3;
const REPLICAS: usize = 2;
const INSTANCES: usize = SHARDS * (1 + REPLICAS);
/// ShardedClusters of scenarios 2 and 3.
const SCALE_CLUSTERS: usize = 50;

/// Poll interval of the create → Ready measurements (operator and baseline alike).
const POLL: Duration = Duration::from_millis(100);
/// Poll interval of the waits for the 50 clusters (Ready, deleted).
const SLOW_POLL: Duration = Duration::from_secs(1);
/// Poll interval of the waits for one deletion.
const DELETE_POLL: Duration = Duration::from_millis(250);
const SETUP_WAIT: Duration = Duration::from_secs(60);
const TRIAL_WAIT: Duration = Duration::from_secs(180);
const SCALE_WAIT: Duration = Duration::from_secs(600);
const DELETE_WAIT: Duration = Duration::from_secs(300);
/// Quiet time before an RSS sample.
const SETTLE: Duration = Duration::from_secs(5);

const MANAGED: &str = "app.kubernetes.io/managed-by=ringmaster";
const BASELINE_LABEL: &str = "bench.ringmaster.dev/scenario";
const AGENT_IMAGE: &str = concat!("ghcr.io/ringmaster/ringmaster:", env!("CARGO_PKG_VERSION"));

#[tokio::main]
async fn main() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let client = cluster.client().await;
    warm_up_garbage_collector(cluster, &client).await;

    // --- 1. create -> Ready, trials interleaved with the baseline's
    let mut baseline = Vec::new();
    let mut trials = Vec::new();
    for trial in 0..TRIALS {
        baseline.push(baseline_trial(cluster, &client, trial).await);
        trials.push(operator_trial(cluster, &client, trial).await);
        eprintln!(
            "trial {trial}: baseline {:.1?}, operator {:.1?}",
            baseline[trial].ready, trials[trial].at[CLUSTER_READY]
        );
    }

    // --- 2 and 3. fifty clusters
    let scale = scale_run(cluster, &client).await;

    print_report(&baseline, &trials, &scale);
}

// ------------------------------------------------------------------ operator

/// The operator as a child process (this package's release binary, no leader
/// election), with the bench's log level and agent image.
fn start_operator(cluster: &Cluster, namespace: &str) -> Operator {
    let level = log_level();
    Operator::spawn(
        cluster,
        env!("CARGO_BIN_EXE_ringmaster"),
        namespace,
        &["--leader-election=false", "--log-level", &level],
        &[("RINGMASTER_IMAGE", AGENT_IMAGE)],
    )
}

/// Waits until `/readyz` answers 200 (the controllers' caches are synced).
async fn wait_ready(operator: &Operator) {
    wait_for("the operator's /readyz", SETUP_WAIT, POLL, || async {
        let (code, body) = operator.get("/readyz").await?;
        if code == 200 {
            Ok(Some(()))
        } else {
            Err(anyhow!("{code} {body}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
}

/// `VmRSS` and `VmHWM` (peak) of the operator in bytes.
fn memory(operator: &Operator) -> (u64, u64) {
    let path = format!("/proc/{}/status", operator.pid());
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {name} in {path}"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The operator's `/metrics`, parsed.
async fn metrics(operator: &Operator) -> Metrics {
    let (code, body) = operator.get("/metrics").await.expect("GET /metrics");
    assert_eq!(code, 200, "GET /metrics: {body}");
    Metrics::parse(&body)
}

/// The operator's `--log-level`: `$RINGMASTER_BENCH_LOG_LEVEL`, else `info`.
fn log_level() -> String {
    std::env::var("RINGMASTER_BENCH_LOG_LEVEL")
        .ok()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "info".to_owned())
}

/// Waits until the garbage collector collects the dependents of a deleted
/// ShardedCluster: it learns of new CRDs only at its next periodic discovery
/// resync (about 40 s here), and until then deleting a cluster leaves its Shards
/// and Pods alone ("unable to get REST mapping").
async fn warm_up_garbage_collector(cluster: &Cluster, client: &Client) {
    let ns = cluster.namespace("bench-opscale-warmup").await;
    let clusters: Api<ShardedCluster> = Api::namespaced(client.clone(), ns.name());
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let started = Instant::now();
    let owner = clusters
        .create(&PostParams::default(), &redis_cluster("warmup", 1, 0))
        .await
        .expect("creating the warm-up ShardedCluster");
    let dependent: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "warmup-dependent",
            "ownerReferences": [{
                "apiVersion": "ringmaster.dev/v1alpha1",
                "kind": "ShardedCluster",
                "name": "warmup",
                "uid": owner.uid().expect("a uid"),
            }]
        }
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .expect("creating the warm-up ConfigMap");
    clusters
        .delete("warmup", &DeleteParams::background())
        .await
        .expect("deleting the warm-up ShardedCluster");
    wait_for(
        "the garbage collector to collect a ShardedCluster's dependent",
        Duration::from_secs(120),
        SLOW_POLL,
        || async {
            let gone = config_maps.get_opt("warmup-dependent").await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "warm-up: the garbage collector collected a ShardedCluster's dependent after {:.1?}",
        started.elapsed()
    );
}

fn redis_cluster(name: &str, shards: usize, replicas: usize) -> ShardedCluster {
    serde_json::from_value(json!({
        "apiVersion": "ringmaster.dev/v1alpha1",
        "kind": "ShardedCluster",
        "metadata": { "name": name },
        "spec": { "engine": "redis", "version": "7.0", "shards": shards, "replicas": replicas }
    }))
    .unwrap()
}

fn cluster_ready(sc: &ShardedCluster, shards: usize) -> bool {
    sc.status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Ready") && s.ready_shards == shards as i32)
}

fn pod_condition(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

// ------------------------------------------------------------------ scenario 1

/// Milestones of an operator trial, in the order they are reached.
const MILESTONES: [&str; 7] = [
    "3 Shards exist",
    "9 PVCs Bound",
    "9 Pods exist",
    "9 Pods scheduled (bound to the node)",
    "9 Pods Initialized (install-agent done)",
    "9 Pods Ready",
    "ShardedCluster Ready, readyShards 3",
];
const CLUSTER_READY: usize = 6;

/// One operator trial.
struct Trial {
    /// Time of each of [`MILESTONES`] since the ShardedCluster's create.
    at: [Duration; 7],
    deleted: Deletion,
    /// Operator RSS at Ready.
    rss: u64,
    metrics: Metrics,
    /// Round trips of `GET` of the ShardedCluster while waiting for Ready.
    gets: Vec<Duration>,
}

/// Milestones of one baseline trial, from the first Pod's create.
struct Baseline {
    created: Duration,
    ready: Duration,
    deleted: Duration,
}

fn plain_redis_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { BASELINE_LABEL: "plain-redis" } },
        "spec": {
            "containers": [{
                "name": "redis",
                "image": "redis:7.0",
                "command": [
                    "redis-server", "--bind", "$(POD_IP)", "--port", "6379",
                    "--save", "", "--appendonly", "no"
                ],
                "env": [{
                    "name": "POD_IP",
                    "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } }
                }],
                "readinessProbe": { "tcpSocket": { "port": 6379 }, "periodSeconds": 1 },
            }]
        }
    }))
    .unwrap()
}

async fn baseline_trial(cluster: &Cluster, client: &Client, trial: usize) -> Baseline {
    let ns = cluster
        .namespace(&format!("bench-opscale-plain{trial}"))
        .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let selector = format!("{BASELINE_LABEL}=plain-redis");
    let list = ListParams::default().labels(&selector);
    let manifests: Vec<Pod> = (0..INSTANCES)
        .map(|i| plain_redis_pod(&format!("redis-{i}")))
        .collect();

    let post = PostParams::default();
    let start = Instant::now();
    let created = join_all(manifests.iter().map(|pod| pods.create(&post, pod))).await;
    for result in created {
        result.expect("creating a plain redis Pod");
    }
    let created = start.elapsed();
    let ready = wait_for(
        "9 plain redis Pods to be Ready",
        TRIAL_WAIT,
        POLL,
        || async {
            let list = pods.list(&list).await?;
            let ready = list
                .items
                .iter()
                .filter(|p| pod_condition(p, "Ready"))
                .count();
            if ready == INSTANCES {
                Ok(Some(start.elapsed()))
            } else {
                Err(anyhow!("{ready} of {} Pods Ready", list.items.len()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    let deleting = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &list)
        .await
        .expect("deleting the plain redis Pods");
    wait_for(
        "the plain redis Pods to be gone",
        DELETE_WAIT,
        DELETE_POLL,
        || async {
            let left = pods.list(&list).await?.items.len();
            if left == 0 {
                Ok(Some(()))
            } else {
                Err(anyhow!("{left} Pods left"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    Baseline {
        created,
        ready,
        deleted: deleting.elapsed(),
    }
}

async fn operator_trial(cluster: &Cluster, client: &Client, trial: usize) -> Trial {
    let ns = cluster.namespace(&format!("bench-opscale-op{trial}")).await;
    let operator = start_operator(cluster, ns.name());
    wait_ready(&operator).await;
    let name = format!("cache{trial}");
    let clusters: Api<ShardedCluster> = Api::namespaced(client.clone(), ns.name());
    let shards: Api<Shard> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns.name());
    let owned = ListParams::default().labels(&format!("{MANAGED},ringmaster.dev/cluster={name}"));

    let start = Instant::now();
    clusters
        .create(
            &PostParams::default(),
            &redis_cluster(&name, SHARDS, REPLICAS),
        )
        .await
        .expect("creating the ShardedCluster");
    // Each milestone is polled until reached; the time is taken when the
    // observation that reached it returns.
    let mut at: [Option<Duration>; 7] = [None; 7];
    let mut gets = Vec::new();
    let deadline = start + TRIAL_WAIT;
    let mut last = String::new();
    loop {
        if at[0].is_none() {
            let n = shards
                .list(&ListParams::default())
                .await
                .map(|l| l.items.len());
            if n.as_ref().is_ok_and(|n| *n == SHARDS) {
                at[0] = Some(start.elapsed());
            }
            last = format!("Shards {n:?}");
        }
        if at[1].is_none() {
            let bound = pvcs.list(&owned).await.map(|l| {
                l.items
                    .iter()
                    .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                    .count()
            });
            if bound.as_ref().is_ok_and(|n| *n == INSTANCES) {
                at[1] = Some(start.elapsed());
            }
            last = format!("{last}; PVCs Bound {bound:?}");
        }
        if at[2..6].iter().any(Option::is_none) {
            match pods.list(&owned).await {
                Ok(list) => {
                    let elapsed = start.elapsed();
                    let count = |type_: &str| {
                        list.items
                            .iter()
                            .filter(|p| pod_condition(p, type_))
                            .count()
                    };
                    let counts = [
                        list.items.len(),
                        count("PodScheduled"),
                        count("Initialized"),
                        count("Ready"),
                    ];
                    for (slot, n) in (2..6).zip(counts) {
                        if at[slot].is_none() && n == INSTANCES {
                            at[slot] = Some(elapsed);
                        }
                    }
                    last = format!(
                        "{last}; Pods {} (scheduled {}, initialized {}, Ready {})",
                        counts[0], counts[1], counts[2], counts[3]
                    );
                }
                Err(e) => last = format!("{last}; Pods: {e}"),
            }
        }
        if at[CLUSTER_READY].is_none() {
            let asked = Instant::now();
            let got = clusters.get(&name).await;
            gets.push(asked.elapsed());
            match got {
                Ok(sc) if cluster_ready(&sc, SHARDS) => at[CLUSTER_READY] = Some(start.elapsed()),
                Ok(sc) => {
                    let status = sc.status.unwrap_or_default();
                    last = format!(
                        "{last}; phase {:?}, readyShards {}",
                        status.phase, status.ready_shards
                    );
                }
                Err(e) => last = format!("{last}; ShardedCluster: {e}"),
            }
        }
        if at.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() + POLL > deadline {
            panic!(
                "timed out after {TRIAL_WAIT:?} waiting for ShardedCluster {name} to be Ready \
                 with readyShards {SHARDS}; last observation: {last}\n{}",
                operator.log_tail()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let rss = memory(&operator).0;
    let metrics = metrics(&operator).await;

    let deleted = delete_clusters(client, ns.name(), DELETE_POLL)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
    Trial {
        at: at.map(Option::unwrap),
        deleted,
        rss,
        metrics,
        gets,
    }
}

/// How long deleting took: until the Pods were gone, until everything was.
#[derive(Clone, Copy)]
struct Deletion {
    pods: Duration,
    all: Duration,
    /// Pods that appeared after the delete (created while deleting).
    recreated: usize,
}

/// Deletes every ShardedCluster of `ns` and waits (bounded) until their Shards,
/// Pods and PVCs are gone.
async fn delete_clusters(
    client: &Client,
    ns: &str,
    interval: Duration,
) -> anyhow::Result<Deletion> {
    let clusters: Api<ShardedCluster> = Api::namespaced(client.clone(), ns);
    let shards: Api<Shard> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let managed = ListParams::default().labels(MANAGED);
    let before: BTreeSet<String> = pods
        .list(&managed)
        .await
        .context("listing the Pods")?
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    let start = Instant::now();
    clusters
        .delete_collection(&DeleteParams::background(), &ListParams::default())
        .await
        .context("deleting the ShardedClusters")?;
    let pods_gone = std::cell::Cell::new(None);
    let recreated = std::cell::RefCell::new(BTreeSet::new());
    wait_for(
        &format!("the clusters of {ns} and everything they own to be gone"),
        DELETE_WAIT,
        interval,
        || async {
            let pods = pods.list(&managed).await?.items;
            recreated.borrow_mut().extend(
                pods.iter()
                    .filter_map(|p| p.uid())
                    .filter(|uid| !before.contains(uid)),
            );
            let left = [
                clusters.list(&ListParams::default()).await?.items.len(),
                shards.list(&ListParams::default()).await?.items.len(),
                pods.len(),
                pvcs.list(&managed).await?.items.len(),
            ];
            // The last time the Pods went away (the operator may create more).
            if left[2] > 0 {
                pods_gone.set(None);
            } else if pods_gone.get().is_none() {
                pods_gone.set(Some(start.elapsed()));
            }
            if left == [0; 4] {
                let all = start.elapsed();
                let pods = pods_gone.get().unwrap_or(all);
                let recreated = recreated.borrow().len();
                Ok(Some(Deletion {
                    pods,
                    all,
                    recreated,
                }))
            } else {
                Err(anyhow!(
                    "left: {} ShardedClusters, {} Shards, {} Pods, {} PVCs",
                    left[0],
                    left[1],
                    left[2],
                    left[3]
                ))
            }
        },
    )
    .await
}

// ------------------------------------------------------------------ scenarios 2 and 3

struct Scale {
    idle_rss: u64,
    ready_rss: u64,
    peak_rss: u64,
    all_ready: Duration,
    deleted: Deletion,
    metrics: Metrics,
    /// Round trips of `GET` of one ShardedCluster while waiting for all Ready.
    gets: Vec<Duration>,
}

async fn scale_run(cluster: &Cluster, client: &Client) -> Scale {
    let ns = cluster.namespace("bench-opscale-50").await;
    let operator = start_operator(cluster, ns.name());
    wait_ready(&operator).await;
    tokio::time::sleep(SETTLE).await;
    let idle_rss = memory(&operator).0;

    let clusters: Api<ShardedCluster> = Api::namespaced(client.clone(), ns.name());
    let start = Instant::now();
    let mut result = Ok((Duration::ZERO, Vec::new()));
    for i in 0..SCALE_CLUSTERS {
        let created = clusters
            .create(
                &PostParams::default(),
                &redis_cluster(&format!("kv{i:02}"), 1, 0),
            )
            .await;
        if let Err(e) = created {
            result = Err(anyhow!("creating ShardedCluster kv{i:02}: {e}"));
            break;
        }
    }
    if result.is_ok() {
        result = wait_all_ready(client, ns.name(), start).await;
    }
    let measured = match result {
        Ok((all_ready, gets)) => {
            tokio::time::sleep(SETTLE).await;
            let (ready_rss, peak_rss) = memory(&operator);
            let metrics = metrics(&operator).await;
            Ok((all_ready, gets, ready_rss, peak_rss, metrics))
        }
        Err(e) => Err(e),
    };
    // Clean up whether or not the clusters became Ready.
    let deleted = delete_clusters(client, ns.name(), SLOW_POLL).await;
    let (all_ready, gets, ready_rss, peak_rss, metrics) =
        measured.unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
    let deleted = deleted.unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
    Scale {
        idle_rss,
        ready_rss,
        peak_rss,
        all_ready,
        deleted,
        metrics,
        gets,
    }
}

/// Waits (at most [`SCALE_WAIT`], polling every [`SLOW_POLL`] or slower) until
/// every ShardedCluster of `ns` is Ready; returns the time since `start` and the
/// round trips of a `GET` of one of them, timed at each poll.
async fn wait_all_ready(
    client: &Client,
    ns: &str,
    start: Instant,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let clusters: Api<ShardedCluster> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let managed = ListParams::default().labels(MANAGED);
    let deadline = start + SCALE_WAIT;
    let mut gets = Vec::new();
    loop {
        let asked = Instant::now();
        if clusters.get("kv00").await.is_ok() {
            gets.push(asked.elapsed());
        }
        let observed = async {
            let list = clusters.list(&ListParams::default()).await?.items;
            let not_ready: Vec<String> = list
                .iter()
                .filter(|sc| !cluster_ready(sc, 1))
                .map(|sc| {
                    let phase = sc.status.as_ref().and_then(|s| s.phase.clone());
                    format!(
                        "{} ({})",
                        sc.name_any(),
                        phase.as_deref().unwrap_or("no status")
                    )
                })
                .collect();
            anyhow::Ok((list.len(), not_ready))
        }
        .await;
        let last_progress = match observed {
            Ok((total, not_ready)) if total == SCALE_CLUSTERS && not_ready.is_empty() => {
                return Ok((start.elapsed(), gets));
            }
            Ok((total, not_ready)) => {
                let pods = pods.list(&managed).await.map(|l| {
                    let ready = l.items.iter().filter(|p| pod_condition(p, "Ready")).count();
                    format!("{} Pods, {ready} Ready", l.items.len())
                });
                let shown: Vec<&str> = not_ready.iter().take(10).map(String::as_str).collect();
                format!(
                    "{} of {total} ShardedClusters Ready; {}; not Ready: {}{}",
                    total - not_ready.len(),
                    pods.unwrap_or_else(|e| format!("Pods: {e}")),
                    shown.join(", "),
                    if not_ready.len() > shown.len() {
                        ", ..."
                    } else {
                        ""
                    }
                )
            }
            Err(e) => format!("listing: {e:#}"),
        };
        if Instant::now() + SLOW_POLL > deadline {
            bail!(
                "timed out after {:.0?}: {SCALE_CLUSTERS} ShardedClusters (1 shard, 0 replicas) \
                 were not all Ready within {SCALE_WAIT:?}; last observation: {last_progress}",
                start.elapsed()
            );
        }
        tokio::time::sleep(SLOW_POLL).await;
    }
}

// ------------------------------------------------------------------ metrics

/// The operator's reconcile series, by controller.
#[derive(Clone, Default)]
struct Metrics {
    /// `ringmaster_reconciles_total`.
    reconciles: BTreeMap<String, f64>,
    /// `ringmaster_reconcile_errors_total`, summed over reasons.
    errors: BTreeMap<String, f64>,
    /// `ringmaster_reconcile_duration_seconds_bucket`: (le, cumulative count).
    buckets: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Metrics {
    fn parse(text: &str) -> Self {
        let mut metrics = Metrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let Some(controller) = labels.get("controller").cloned() else {
                continue;
            };
            match name {
                "ringmaster_reconciles_total" => {
                    metrics.reconciles.insert(controller, value);
                }
                "ringmaster_reconcile_errors_total" => {
                    *metrics.errors.entry(controller).or_default() += value;
                }
                "ringmaster_reconcile_duration_seconds_bucket" => {
                    let le = match labels.get("le").map(String::as_str) {
                        Some("+Inf") => f64::INFINITY,
                        Some(le) => le.parse().unwrap_or(f64::NAN),
                        None => continue,
                    };
                    metrics
                        .buckets
                        .entry(controller)
                        .or_default()
                        .push((le, value));
                }
                _ => {}
            }
        }
        for buckets in metrics.buckets.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        metrics
    }

    /// The sum of several operators' series (histograms bucket by bucket).
    fn sum<'a>(all: impl IntoIterator<Item = &'a Metrics>) -> Metrics {
        let mut sum = Metrics::default();
        for m in all {
            for (c, v) in &m.reconciles {
                *sum.reconciles.entry(c.clone()).or_default() += v;
            }
            for (c, v) in &m.errors {
                *sum.errors.entry(c.clone()).or_default() += v;
            }
            for (c, buckets) in &m.buckets {
                let total = sum.buckets.entry(c.clone()).or_default();
                if total.is_empty() {
                    total.clone_from(buckets);
                } else {
                    for (t, b) in total.iter_mut().zip(buckets) {
                        assert_eq!(t.0, b.0, "the operators' buckets differ");
                        t.1 += b.1;
                    }
                }
            }
        }
        sum
    }

    /// The `q` quantile of `controller`'s reconcile duration in seconds, as
    /// Prometheus' `histogram_quantile` computes it.
    fn quantile(&self, controller: &str, q: f64) -> Option<f64> {
        histogram_quantile(q, self.buckets.get(controller)?)
    }
}

/// `a="x",b="y"` → map (values without escapes, as the operator's labels are).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// Prometheus' `histogram_quantile` over cumulative `(le, count)` buckets sorted
/// by `le` and ending with `+Inf`: linear interpolation within the bucket holding
/// rank `q × total` (the first bucket's lower bound 0); a rank in the `+Inf`
/// bucket gives the highest finite bound.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if !last_le.is_infinite() || total == 0.0 || buckets.len() < 2 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|&(_, count)| count >= rank)?;
    if i == buckets.len() - 1 {
        return Some(buckets[i - 1].0);
    }
    let (upper, count) = buckets[i];
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    if count == below {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / (count - below))
}

// ------------------------------------------------------------------ report

const MIB: f64 = 1024.0 * 1024.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and max in milliseconds.
fn summary(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().copied().map(ms).collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() - 1])
}

fn print_row(name: &str, samples: &[Duration], baseline_p50: f64) {
    let (p50, max) = summary(samples);
    println!(
        "{name:<58} {p50:>9.0} {max:>9.0} {:>9.1}x",
        p50 / baseline_p50
    );
}

fn print_report(baseline: &[Baseline], trials: &[Trial], scale: &Scale) {
    let base_ready: Vec<Duration> = baseline.iter().map(|b| b.ready).collect();
    let base_p50 = summary(&base_ready).0;
    let milestone = |i: usize| trials.iter().map(|t| t.at[i]).collect::<Vec<_>>();

    println!(
        "\n1. create -> Ready, {TRIALS} trials each, fresh namespace and operator per trial (ms)"
    );
    println!(
        "{:<58} {:>9} {:>9} {:>10}",
        "scenario", "p50", "max", "p50 ratio"
    );
    print_row(
        "9 plain redis Pods: create -> all Ready (baseline)",
        &base_ready,
        base_p50,
    );
    print_row(
        "  create -> the 9 create calls returned",
        &baseline.iter().map(|b| b.created).collect::<Vec<_>>(),
        base_p50,
    );
    print_row(
        "ShardedCluster 3 x (1+2): create -> Ready, readyShards 3",
        &milestone(CLUSTER_READY),
        base_p50,
    );
    for (i, name) in MILESTONES.iter().enumerate().take(CLUSTER_READY) {
        print_row(&format!("  create -> {name}"), &milestone(i), base_p50);
    }
    let deleted_base: Vec<Duration> = baseline.iter().map(|b| b.deleted).collect();
    let deleted_p50 = summary(&deleted_base).0;
    print_row(
        "delete 9 plain redis Pods -> gone (baseline)",
        &deleted_base,
        deleted_p50,
    );
    print_row(
        "delete ShardedCluster -> its 9 Pods gone",
        &trials.iter().map(|t| t.deleted.pods).collect::<Vec<_>>(),
        deleted_p50,
    );
    print_row(
        "delete ShardedCluster -> Shards, Pods, PVCs gone",
        &trials.iter().map(|t| t.deleted.all).collect::<Vec<_>>(),
        deleted_p50,
    );
    let recreated: Vec<usize> = trials.iter().map(|t| t.deleted.recreated).collect();
    println!("  Pods created while the ShardedCluster was being deleted, per trial: {recreated:?}");

    println!("\n2. operator RSS (VmRSS, MiB)");
    let mut one: Vec<u64> = trials.iter().map(|t| t.rss).collect();
    one.sort_unstable();
    let mib = |bytes: u64| bytes as f64 / MIB;
    println!(
        "{:<58} {:>9.1}",
        "idle: caches synced, no clusters",
        mib(scale.idle_rss)
    );
    println!(
        "{:<58} {:>9.1}",
        "1 ShardedCluster 3 x (1+2) Ready (p50 of the trials)",
        mib(one[one.len() / 2])
    );
    println!(
        "{:<58} {:>9.1}",
        format!("{SCALE_CLUSTERS} ShardedClusters 1 x (1+0) Ready"),
        mib(scale.ready_rss)
    );
    println!(
        "{:<58} {:>9.1}",
        format!("  peak during the {SCALE_CLUSTERS}-cluster run (VmHWM)"),
        mib(scale.peak_rss)
    );
    let per_cluster = (scale.ready_rss as f64 - scale.idle_rss as f64) / SCALE_CLUSTERS as f64;
    println!(
        "{:<58} {:>9.1} KiB",
        "  increment per ShardedCluster",
        per_cluster / 1024.0
    );
    println!(
        "  ({SCALE_CLUSTERS} clusters: first create -> all Ready {:.1} s; delete -> Pods gone \
         {:.1} s, everything gone {:.1} s; {} Pods created while deleting)",
        scale.all_ready.as_secs_f64(),
        scale.deleted.pods.as_secs_f64(),
        scale.deleted.all.as_secs_f64(),
        scale.deleted.recreated
    );

    println!("\n3. reconcile duration per controller (ms)");
    println!(
        "{:<16} {:<40} {:>10} {:>6} {:>9} {:>9}",
        "controller", "run", "reconciles", "errors", "p50", "p99"
    );
    let one_cluster = Metrics::sum(trials.iter().map(|t| &t.metrics));
    let runs = [
        (
            format!("1 cluster 3 x (1+2), {TRIALS} trials (baseline)"),
            &one_cluster,
        ),
        (
            format!("{SCALE_CLUSTERS} clusters 1 x (1+0)"),
            &scale.metrics,
        ),
    ];
    let controllers: BTreeSet<&String> =
        runs.iter().flat_map(|(_, m)| m.reconciles.keys()).collect();
    for controller in controllers {
        for (run, m) in &runs {
            let q = |q: f64| {
                m.quantile(controller, q)
                    .map_or_else(|| "-".to_owned(), |s| format!("{:.1}", s * 1000.0))
            };
            println!(
                "{controller:<16} {run:<40} {:>10} {:>6} {:>9} {:>9}",
                m.reconciles.get(controller).copied().unwrap_or(0.0),
                m.errors.get(controller).copied().unwrap_or(0.0),
                q(0.5),
                q(0.99)
            );
        }
    }
    let trial_gets: Vec<Duration> = trials.iter().flat_map(|t| t.gets.clone()).collect();
    println!(
        "\n   for scale: GET of one ShardedCluster by this bench while waiting for Ready (ms)"
    );
    println!("{:<64} {:>10} {:>9} {:>9}", "run", "samples", "p50", "p99");
    for (run, gets) in [
        (format!("1 cluster 3 x (1+2), {TRIALS} trials"), &trial_gets),
        (format!("{SCALE_CLUSTERS} clusters 1 x (1+0)"), &scale.gets),
    ] {
        let (p50, p99) = percentiles(gets);
        println!("{run:<64} {:>10} {p50:>9.1} {p99:>9.1}", gets.len());
    }
}

/// p50 and p99 (nearest rank) in milliseconds.
fn percentiles(samples: &[Duration]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut ms: Vec<f64> = samples.iter().copied().map(ms).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    (rank(0.5), rank(0.99))
}
