//! Online rebalancing of a Redis ShardedCluster end to end, on the local cluster: real
//! redis-server instances (1 replica per shard, failover after 2 s), 2 routers, the
//! operator as a process (killed and restarted at fail points), and a continuous
//! read/write load through the router Service that checks read-your-writes.
//!
//! After every migration the audit (`common::routers::audit`) reads every key of the
//! ledger through the router and every shard primary directly: each key must be on
//! its owner under the final ring only, with its last acknowledged value.
//!
//! * `scale_out_then_in_under_load`: 3 → 4 shards, then 4 → 3 (the drained Shard is
//!   deleted), load running; client errors ≤ 1 % of commands, no read-your-write
//!   violation, nothing lost.
//! * `operator_crashes_then_rollback`: 3 → 4 with the operator aborting mid-Backfill
//!   and mid-Verify (fail points) and resuming from its checkpoints; then 4 → 5 paused
//!   in Backfill and rolled back.
//! * `primary_failover_during_backfill`: 3 → 4 (verification by counts, so that
//!   Verify cannot mend a faulty copy); the primary of a source shard is killed while
//!   its copy is half-way; the migration waits for the failover, copies again from
//!   the start (a SCAN cursor means nothing on the new primary), then completes.
//!
//! Scenarios run two at a time (`SLOTS`); the file takes about 4.5 minutes on 2 cores.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use common::install_crds;
use common::operator::Operator;
use common::routers::{self, Audit, Endpoint, Ledger, Load, LoadConfig, LoadReport};
use common::shards::{agent_get, pod_ip};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use ringmaster::api::{Shard, ShardMigration, ShardedCluster};
use ringmaster::ring::{Ring, RingDescriptor};
use ringmaster_e2e::{Cluster, TestNamespace, wait_for};
use serde_json::json;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Scenarios at a time: each runs 6 to 10 redis-servers, 2 routers and an operator
/// on 2 cores.
static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(2));

/// A new cluster (or shard) becomes Ready.
const READY: Duration = Duration::from_secs(240);
/// A migration runs to its end.
const MIGRATION: Duration = Duration::from_secs(300);
/// Short waits (a condition, an Event, the load getting going).
const SHORT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
/// Keys preloaded before a scale-out.
const PRELOAD: u64 = 20_000;
/// Client errors tolerated per command while a migration runs (no failover).
const MAX_ERROR_RATE: f64 = 0.01;
/// The phases a migration goes through in order ("-": no phase yet).
const PHASE_ORDER: [&str; 9] = [
    "-",
    "Pending",
    "Preparing",
    "Backfill",
    "Verify",
    "SwitchReads",
    "SwitchWrites",
    "Cleanup",
    "Completed",
];
/// The phases a completed migration announces with an Event each.
const PHASE_EVENTS: &[&str] = PHASE_ORDER.split_at(2).1;

/// What the diagnostics list.
const KINDS: &str =
    "shardedclusters.ringmaster.dev,shards.ringmaster.dev,shardmigrations.ringmaster.dev,pods";

/// A namespace, an operator, a Redis ShardedCluster and the ledger of its keys.
struct Rig {
    cluster: &'static Cluster,
    /// (dropped before the namespace: killed before the namespace is deleted)
    operator: Option<Operator>,
    namespace: TestNamespace,
    name: String,
    clusters: Api<ShardedCluster>,
    migrations: Api<ShardMigration>,
    shards: Api<Shard>,
    services: Api<Service>,
    secrets: Api<Secret>,
    pods: Api<Pod>,
    events: Api<Event>,
    deployments: Api<Deployment>,
    ledger: Ledger,
    /// When the scenario got its slot.
    began: Instant,
    /// (dropped last: the slot is free once the namespace is gone)
    _slot: SemaphorePermit<'static>,
}

/// A migration run to its end: the object and the phases seen while polling.
struct Followed {
    migration: ShardMigration,
    phases: Vec<String>,
    took: Duration,
}

impl Rig {
    /// Once a slot is free: namespace `<prefix>-…`, an operator, and ShardedCluster
    /// `name` with `shards` shards, 1 replica each, failover after 2 s, 2 routers (see
    /// [`Rig::wait_ready`]).
    async fn start(prefix: &str, name: &str, shards: i32) -> Self {
        let slot = SLOTS.acquire().await.expect("the scenario semaphore");
        let began = Instant::now();
        let cluster = Cluster::shared();
        install_crds(cluster).await;
        let namespace = cluster.namespace(prefix).await;
        let client = cluster.client().await;
        let ns = namespace.name().to_owned();
        let operator = Operator::start(cluster, &ns);
        let rig = Self {
            cluster,
            name: name.to_owned(),
            operator: Some(operator),
            clusters: Api::namespaced(client.clone(), &ns),
            migrations: Api::namespaced(client.clone(), &ns),
            shards: Api::namespaced(client.clone(), &ns),
            services: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            events: Api::namespaced(client.clone(), &ns),
            deployments: Api::namespaced(client, &ns),
            namespace,
            ledger: Ledger::new(),
            began,
            _slot: slot,
        };
        let sc: ShardedCluster = serde_json::from_value(json!({
            "apiVersion": "ringmaster.dev/v1alpha1",
            "kind": "ShardedCluster",
            "metadata": { "name": name },
            "spec": {
                "engine": "redis", "shards": shards, "replicas": 1,
                "storage": { "size": "256Mi" },
                "failover": { "unhealthyAfter": "2s" },
                "router": { "replicas": 2 }
            }
        }))
        .expect("a ShardedCluster");
        if let Err(e) = rig.clusters.create(&PostParams::default(), &sc).await {
            rig.fail("creating the ShardedCluster", anyhow!(e));
        }
        rig
    }

    fn ns(&self) -> &str {
        self.namespace.name()
    }

    /// What a failure message needs: the objects, the operator's and routers' logs.
    fn diagnostics(&self) -> String {
        let ns = self.ns();
        let run = |args: &[&str]| {
            let out = self.cluster.kubectl(args);
            format!(
                "$ kubectl {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let selector = self.router_selector();
        [
            run(&["get", KINDS, "-n", ns, "-o", "wide"]),
            run(&[
                "get",
                "shardmigrations.ringmaster.dev",
                "-n",
                ns,
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}: {.status}{\"\\n\"}{end}",
            ]),
            run(&[
                "get",
                "shardedclusters.ringmaster.dev",
                "-n",
                ns,
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}: {.status}{\"\\n\"}{end}",
            ]),
            run(&["logs", "-n", ns, "-l", &selector, "--tail=25", "--prefix"]),
            self.operator
                .as_ref()
                .map_or_else(|| "no operator running".to_owned(), Operator::log_tail),
        ]
        .join("\n")
    }

    /// The label selector of the router Pods.
    fn router_selector(&self) -> String {
        format!(
            "ringmaster.dev/cluster={},app.kubernetes.io/component=router",
            self.name
        )
    }

    fn fail(&self, what: &str, e: anyhow::Error) -> ! {
        panic!("{what}: {e:#}\n\n{}", self.diagnostics())
    }

    /// `result`, or a failure naming `what`.
    fn check<T>(&self, what: &str, result: anyhow::Result<T>) -> T {
        result.unwrap_or_else(|e| self.fail(what, e))
    }

    /// Waits (bounded) for `probe`; fails with the diagnostics.
    async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Option<T>>>,
    {
        let result = wait_for(what, timeout, POLL, probe).await;
        self.check(what, result)
    }

    /// Stops the operator (killed, like a crash) and starts another with `failpoint`
    /// armed, if any.
    fn restart_operator(&mut self, failpoint: Option<&str>) {
        drop(self.operator.take());
        let env: Vec<(&str, &str)> = failpoint
            .map(|f| vec![("RINGMASTER_FAILPOINT", f)])
            .unwrap_or_default();
        self.operator = Some(Operator::spawn(
            self.cluster,
            env!("CARGO_BIN_EXE_ringmaster"),
            self.namespace.name(),
            &["--leader-election=false"],
            &env,
        ));
    }

    /// Waits (bounded) until the operator process has exited (at a fail point).
    async fn wait_operator_exit(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.operator.as_mut().is_some_and(Operator::exited) {
            if Instant::now() >= deadline {
                self.fail(what, anyhow!("the operator still runs after {timeout:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn sc(&self) -> anyhow::Result<ShardedCluster> {
        Ok(self.clusters.get(&self.name).await?)
    }

    async fn migration(&self, name: &str) -> anyhow::Result<ShardMigration> {
        Ok(self.migrations.get(name).await?)
    }

    async fn set_shards(&self, shards: i32) {
        let patch = json!({ "spec": { "shards": shards } });
        let result = self
            .clusters
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        self.check(
            &format!("setting spec.shards to {shards}"),
            result.map_err(Into::into),
        );
    }

    /// Sets `spec.shards` to `shards` and waits until the migration from `ring` to the
    /// next ring exists; returns its name.
    async fn scale(&self, shards: i32, ring: &RingDescriptor) -> String {
        self.set_shards(shards).await;
        let name = self.next_migration(ring);
        self.wait_migration_created(&name).await;
        name
    }

    async fn patch_migration(&self, name: &str, spec: serde_json::Value) {
        let patch = json!({ "spec": spec });
        let result = self
            .migrations
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        self.check(
            &format!("patching {name} with {patch}"),
            result.map_err(Into::into),
        );
    }

    /// Waits until the cluster is Ready with `shards` shards on its ring, no migration,
    /// both routers Ready and every router on the published routing version; returns
    /// the ring.
    async fn wait_ready(&self, shards: usize) -> RingDescriptor {
        let what = format!(
            "{} to be Ready with {shards} shards and its routers",
            self.name
        );
        let ring = self
            .wait(&what, READY, || async {
                let sc = self.sc().await?;
                let status = sc.status.clone().unwrap_or_default();
                let ring = status.ring.clone();
                let members = ring.as_ref().map_or(0, |r| r.members.len());
                if status.phase.as_deref() != Some("Ready")
                    || members != shards
                    || status.migration.is_some()
                    || status.ready_shards != i32::try_from(shards)?
                {
                    return Err(anyhow!(
                        "phase {:?}, ready shards {}, ring {:?}, migration {:?}",
                        status.phase,
                        status.ready_shards,
                        ring,
                        status.migration
                    ));
                }
                let routing = status.routing_version.unwrap_or_default();
                self.routers_at(routing).await?;
                Ok(ring)
            })
            .await;
        let router = self.router().await;
        self.wait("a PING through the router Service", SHORT, || async {
            let mut conn = routers::connect(&router).await?;
            let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok((pong == "PONG").then_some(()))
        })
        .await;
        ring
    }

    /// `Ok` when both routers are Ready and report routing version `version` applied.
    async fn routers_at(&self, version: i64) -> anyhow::Result<()> {
        let deployment = self
            .deployments
            .get(&format!("{}-router", self.name))
            .await?;
        let status = deployment.status.unwrap_or_default();
        if status.ready_replicas != Some(2) || status.replicas != Some(2) {
            return Err(anyhow!(
                "router Deployment: {:?} ready of {:?}",
                status.ready_replicas,
                status.replicas
            ));
        }
        let pods = self
            .pods
            .list(&ListParams::default().labels(&self.router_selector()))
            .await?;
        for pod in pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let ip = pod_ip(pod)?;
            let (code, body) = common::http_get(&format!("{ip}:9090"), "/status").await?;
            let applied = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["appliedVersion"].as_i64());
            if code != 200 || applied != Some(version) {
                return Err(anyhow!(
                    "router {} /status: {code} {body} (want appliedVersion {version})",
                    pod.name_any()
                ));
            }
        }
        Ok(())
    }

    async fn secret(&self, key: &str) -> anyhow::Result<String> {
        let secret = self
            .secrets
            .get(&format!("{}-credentials", self.name))
            .await?;
        let bytes = secret
            .data
            .and_then(|mut d| d.remove(key))
            .ok_or_else(|| anyhow!("the credentials Secret has no {key}"))?;
        Ok(String::from_utf8(bytes.0)?)
    }

    async fn endpoint(&self, service: &str) -> anyhow::Result<Endpoint> {
        let svc = self.services.get(service).await?;
        let spec = svc
            .spec
            .ok_or_else(|| anyhow!("Service {service} without spec"))?;
        let ip = spec
            .cluster_ip
            .ok_or_else(|| anyhow!("Service {service} without ClusterIP"))?;
        let port = spec.ports.unwrap_or_default()[0].port;
        Ok(Endpoint {
            addr: format!("{ip}:{port}"),
            username: "default".to_owned(),
            password: self.secret("password").await?,
        })
    }

    /// The router Service.
    async fn router(&self) -> Endpoint {
        let service = format!("{}-router", self.name);
        let result = self.endpoint(&service).await;
        self.check("the router Service", result)
    }

    /// The `-rw` Service of every Shard that exists, by index.
    async fn shard_endpoints(&self) -> BTreeMap<i32, Endpoint> {
        let result = async {
            let mut endpoints = BTreeMap::new();
            for shard in self.shards.list(&ListParams::default()).await?.items {
                if shard.spec.cluster != self.name || shard.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let service = format!("{}-rw", shard.name_any());
                endpoints.insert(shard.spec.index, self.endpoint(&service).await?);
            }
            anyhow::Ok(endpoints)
        }
        .await;
        self.check("the shards' -rw Services", result)
    }

    /// Writes `n` new keys through the router.
    async fn preload(&mut self, n: u64) {
        let router = self.router().await;
        let first = self.ledger.next_key;
        let started = Instant::now();
        let result = routers::preload(&router, &mut self.ledger, first..first + n).await;
        self.check(&format!("preloading {n} keys"), result);
        println!(
            "{}: preloaded {n} keys through the router in {:.1?}",
            self.name,
            started.elapsed()
        );
    }

    /// Starts the load and waits until it makes progress.
    async fn start_load(&mut self, workers: u64) -> Load {
        let router = self.router().await;
        let config = LoadConfig {
            workers,
            max_ops: 2_000_000,
            max_time: Duration::from_secs(300),
            new_key_percent: 30,
        };
        let load = Load::start(&router, &mut self.ledger, config);
        let result = load
            .wait_progress(100, "the load to get going", SHORT)
            .await;
        self.check("starting the load", result);
        load
    }

    /// Lets the load make progress after a change, stops it and returns its report.
    async fn finish_load(&mut self, load: Load, what: &str) -> LoadReport {
        let result = load
            .wait_progress(100, &format!("the load to go on {what}"), SHORT)
            .await;
        self.check(what, result);
        let report = load.finish(&mut self.ledger).await;
        println!("{}: load {what}: {}", self.name, report.summary());
        report
    }

    /// The audit against `ring` over every existing Shard.
    async fn audit(&self, ring: &RingDescriptor) -> Audit {
        let router = self.router().await;
        let shards = self.shard_endpoints().await;
        let ring = Ring::build(ring.clone());
        let result = routers::audit(&router, &shards, &ring, &self.ledger).await;
        let audit = self.check("auditing", result);
        println!("{}: {}", self.name, audit.summary());
        audit
    }

    /// Fails unless the audit is clean (at most `max_lost` acknowledged writes lost).
    fn assert_clean(&self, audit: &Audit, max_lost: usize, what: &str) {
        if !audit.clean(max_lost) {
            self.fail(what, anyhow!("{}", audit.summary()));
        }
    }

    /// Waits until `name` exists.
    async fn wait_migration_created(&self, name: &str) -> ShardMigration {
        self.wait(
            &format!("ShardMigration {name} to be created"),
            READY,
            || async { Ok(self.migrations.get_opt(name).await?) },
        )
        .await
    }

    /// Polls `name` until `done` says so; `Err` from `done` fails at once.
    async fn follow<T>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        poll: Duration,
        mut done: impl FnMut(&ShardMigration) -> anyhow::Result<Option<T>>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            match self.migrations.get_opt(name).await {
                Ok(Some(m)) => match done(&m) {
                    Ok(Some(value)) => return value,
                    Ok(None) => last = describe(&m),
                    Err(e) => self.fail(what, e.context(describe(&m))),
                },
                Ok(None) => last = format!("{name} does not exist"),
                Err(e) => last = format!("reading {name}: {e}"),
            }
            if Instant::now() >= deadline {
                self.fail(
                    what,
                    anyhow!("timed out after {timeout:?}; last observation: {last}"),
                );
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Follows `name` to `Completed`, recording the phases seen; a rollback fails.
    async fn run_to_completion(&self, name: &str) -> Followed {
        let started = Instant::now();
        // (phase or phase/step, when first seen)
        let mut seen: Vec<(String, Instant)> = Vec::new();
        let migration = self
            .follow(
                name,
                &format!("ShardMigration {name} to complete"),
                MIGRATION,
                POLL,
                |m| {
                    let phase = phase(m);
                    let label = match m.status.as_ref().and_then(|s| s.step.as_deref()) {
                        Some(step) => format!("{phase}/{step}"),
                        None => phase.clone(),
                    };
                    if seen.last().map(|(l, _)| l) != Some(&label) {
                        seen.push((label, Instant::now()));
                    }
                    match phase.as_str() {
                        "Completed" => Ok(Some(m.clone())),
                        "RollingBack" | "RolledBack" => Err(anyhow!("the migration rolled back")),
                        _ => Ok(None),
                    }
                },
            )
            .await;
        let took = started.elapsed();
        let durations: Vec<String> = seen
            .windows(2)
            .map(|w| format!("{} {:.1?}", w[0].0, w[1].1 - w[0].1))
            .collect();
        let status = migration.status.clone().unwrap_or_default();
        let recorded = status
            .started_at
            .zip(status.finished_at)
            .map(|(a, b)| b.0.as_second() - a.0.as_second());
        println!(
            "{}: {name} completed in {took:.1?} (startedAt → finishedAt {recorded:?} s); \
             phases (as polled): {}; {}",
            self.name,
            durations.join(", "),
            describe(&migration)
        );
        Followed {
            migration,
            phases: seen.into_iter().map(|(l, _)| l).collect(),
            took,
        }
    }

    /// The reasons of the Events about ShardMigration `name`.
    async fn event_reasons(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let fields = format!("involvedObject.kind=ShardMigration,involvedObject.name={name}");
        let events = self
            .events
            .list(&ListParams::default().fields(&fields))
            .await?;
        Ok(events.items.into_iter().filter_map(|e| e.reason).collect())
    }

    /// How many times the copy of `name` started over (the count of its
    /// `PassRestarted` Events: repeats of one reason are folded into a series).
    async fn copy_restarts(&self, name: &str) -> anyhow::Result<i32> {
        let fields = format!(
            "involvedObject.kind=ShardMigration,involvedObject.name={name},reason=PassRestarted"
        );
        let events = self
            .events
            .list(&ListParams::default().fields(&fields))
            .await?;
        Ok(events
            .items
            .iter()
            .map(|e| {
                e.series
                    .as_ref()
                    .and_then(|s| s.count)
                    .or(e.count)
                    .unwrap_or(1)
                    .max(1)
            })
            .sum())
    }

    /// Waits until there is an Event of each completed phase of `name`.
    async fn assert_phase_events(&self, name: &str) {
        self.wait(
            &format!("an Event for each phase of {name}"),
            SHORT,
            || async {
                let reasons = self.event_reasons(name).await?;
                let missing: Vec<&str> = PHASE_EVENTS
                    .iter()
                    .copied()
                    .filter(|p| !reasons.iter().any(|r| r == p))
                    .collect();
                if missing.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(anyhow!(
                        "no Event for {missing:?}; reasons seen {reasons:?}"
                    ))
                }
            },
        )
        .await;
    }

    /// The name of the migration to the ring after `ring`.
    fn next_migration(&self, ring: &RingDescriptor) -> String {
        format!("{}-ring-{}", self.name, ring.version + 1)
    }

    /// Kills (SIGKILL to its process group) the redis-server of Pod `pod`.
    async fn kill_server(&self, pod: &str) -> anyhow::Result<i32> {
        let ip = pod_ip(&self.pods.get(pod).await?)?;
        let token = self.secret("agent-token").await?;
        let (code, body) = agent_get(&format!("{ip}:8000"), "/status", &token).await?;
        if code != 200 {
            return Err(anyhow!("agent /status of {pod}: {code} {body}"));
        }
        let status: serde_json::Value = serde_json::from_str(&body)?;
        let pid = status["pid"]
            .as_i64()
            .ok_or_else(|| anyhow!("{pod}'s server is not running: {body}"))?;
        let pid = i32::try_from(pid)?;
        nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL)?;
        Ok(pid)
    }
}

fn phase(m: &ShardMigration) -> String {
    m.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "-".to_owned())
}

/// The Progressing condition's reason of a migration.
fn progressing(m: &ShardMigration) -> Option<(String, String)> {
    m.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .map(|c| (c.reason.clone(), c.message.clone()))
    })
}

/// Whether the pass over `shard` has started and not finished.
fn mid_pass(m: &ShardMigration, shard: i32) -> bool {
    m.status.as_ref().is_some_and(|s| {
        s.checkpoints
            .iter()
            .any(|c| c.shard == shard && c.cursor != "0" && !c.done)
    })
}

/// A one-line summary of a migration's status.
fn describe(m: &ShardMigration) -> String {
    let Some(s) = &m.status else {
        return format!("{}: no status", m.name_any());
    };
    let moves: Vec<String> = s
        .moves
        .iter()
        .map(|mv| {
            format!(
                "{}→{} {} ranges {} copied {} of {:?}",
                mv.source, mv.target, mv.ranges, mv.share, mv.copied, mv.total
            )
        })
        .collect();
    format!(
        "{}: phase {:?} step {:?} progress {:?}, keysCopied {}, checkpoints {:?}, \
         verification {:?}, verifyAttempts {}, moves [{}], progressing {:?}, reason {:?}",
        m.name_any(),
        s.phase,
        s.step,
        s.progress,
        s.keys_copied,
        s.checkpoints
            .iter()
            .map(|c| format!(
                "{}@{}{}",
                c.shard,
                c.cursor,
                if c.done { " done" } else { "" }
            ))
            .collect::<Vec<_>>(),
        s.verification
            .as_ref()
            .map(|v| format!("passed={} {}", v.passed, v.message)),
        s.verify_attempts,
        moves.join(", "),
        progressing(m),
        s.reason
    )
}

/// Checks of a completed migration's status: every move copied keys, the
/// verification passed, progress 100 %.
fn assert_completed_status(rig: &Rig, m: &ShardMigration) {
    let status = m.status.clone().unwrap_or_default();
    let problems: Vec<String> = [
        (status.moves.is_empty(), "no moves listed".to_owned()),
        (
            status.moves.iter().any(|mv| mv.copied <= 0),
            "a move copied no key".to_owned(),
        ),
        (
            !status.verification.as_ref().is_some_and(|v| v.passed),
            "the verification did not pass".to_owned(),
        ),
        (
            status.progress.as_deref() != Some("100%"),
            format!("progress {:?}", status.progress),
        ),
        (status.keys_copied <= 0, "keysCopied is 0".to_owned()),
    ]
    .into_iter()
    .filter(|(bad, _)| *bad)
    .map(|(_, why)| why)
    .collect();
    if !problems.is_empty() {
        rig.fail(
            "the completed migration's status",
            anyhow!("{problems:?}: {}", describe(m)),
        );
    }
}

/// The phases a migration was seen in never go back (without failover, nothing
/// restarts the copy).
fn assert_phase_order(rig: &Rig, out: &Followed) {
    let rank = |label: &String| {
        let phase = label.split('/').next().unwrap_or_default();
        PHASE_ORDER.iter().position(|p| *p == phase)
    };
    let ranks: Vec<Option<usize>> = out.phases.iter().map(rank).collect();
    if ranks.iter().any(Option::is_none) || ranks.windows(2).any(|w| w[1] < w[0]) {
        rig.fail(
            "the order of the phases",
            anyhow!("phases seen {:?}", out.phases),
        );
    }
}

/// The error budget of a load during a migration without failover.
fn assert_load_ok(rig: &Rig, report: &LoadReport, what: &str) {
    if report.ryw_violations > 0 {
        rig.fail(
            what,
            anyhow!(
                "{} read-your-write violations, e.g. {:?}",
                report.ryw_violations,
                report.ryw_examples
            ),
        );
    }
    if report.error_rate() > MAX_ERROR_RATE {
        rig.fail(
            what,
            anyhow!(
                "client errors above {:.1}% of commands: {}",
                MAX_ERROR_RATE * 100.0,
                report.summary()
            ),
        );
    }
}

/// Scale-out 3 → 4 and scale-in 4 → 3 under a continuous load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_then_in_under_load() {
    let mut rig = Rig::start("mig-scale", "scale", 3).await;
    let ring1 = rig.wait_ready(3).await;
    println!(
        "{}: 3 shards Ready after {:.1?}",
        rig.name,
        rig.began.elapsed()
    );
    rig.preload(PRELOAD).await;

    // scale out under load
    let load = rig.start_load(3).await;
    let name = rig.scale(4, &ring1).await;
    let out = rig.run_to_completion(&name).await;
    let report = rig.finish_load(load, "during the scale-out").await;
    let ring2 = rig.wait_ready(4).await;
    assert_eq!(ring2.version, ring1.version + 1, "ring after the scale-out");
    assert_eq!(
        ring2.members.iter().map(|m| m.shard).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_completed_status(&rig, &out.migration);
    assert_phase_order(&rig, &out);
    rig.assert_phase_events(&name).await;
    assert_load_ok(&rig, &report, "the load during the scale-out");
    let audit = rig.audit(&ring2).await;
    rig.assert_clean(&audit, 0, "the audit after the scale-out");
    assert!(
        audit.per_shard.get(&3).copied().unwrap_or(0) > 0,
        "the new shard holds keys"
    );
    println!(
        "{}: scale-out 3→4: {} keys copied in {:.1?}; {}",
        rig.name,
        out.migration.status.as_ref().map_or(0, |s| s.keys_copied),
        out.took,
        report.summary()
    );

    // scale in (drain shard 3) under load
    let load = rig.start_load(3).await;
    let name = rig.scale(3, &ring2).await;
    let drain = rig.run_to_completion(&name).await;
    let drained = format!("{}-3", rig.name);
    rig.wait(&format!("Shard {drained} to be deleted"), READY, || async {
        Ok(rig.shards.get_opt(&drained).await?.is_none().then_some(()))
    })
    .await;
    let report = rig.finish_load(load, "during the scale-in").await;
    let ring3 = rig.wait_ready(3).await;
    assert_eq!(ring3.version, ring2.version + 1, "ring after the scale-in");
    assert_eq!(
        ring3.members.iter().map(|m| m.shard).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_completed_status(&rig, &drain.migration);
    assert_phase_order(&rig, &drain);
    assert_load_ok(&rig, &report, "the load during the scale-in");
    let audit = rig.audit(&ring3).await;
    rig.assert_clean(&audit, 0, "the audit after the scale-in");
    assert!(!audit.per_shard.contains_key(&3));
    println!(
        "{}: scale-in 4→3: {} keys copied in {:.1?}; {}; whole test {:.1?}",
        rig.name,
        drain.migration.status.as_ref().map_or(0, |s| s.keys_copied),
        drain.took,
        report.summary(),
        rig.began.elapsed()
    );
}

/// The operator aborts mid-Backfill and mid-Verify and resumes from its checkpoints;
/// then a second scale-out is paused in Backfill and rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_crashes_then_rollback() {
    let mut rig = Rig::start("mig-crash", "crash", 3).await;
    let ring1 = rig.wait_ready(3).await;
    rig.preload(PRELOAD).await;
    let load = rig.start_load(2).await;

    // 1. an operator that aborts after a copy batch, before its checkpoint
    rig.restart_operator(Some("migration-backfill"));
    rig.set_shards(4).await;
    let name = rig.next_migration(&ring1);
    rig.wait_operator_exit("the operator to abort mid-Backfill", READY)
        .await;
    let crashed = rig.check("the migration after the crash", rig.migration(&name).await);
    let status = crashed.status.clone().unwrap_or_default();
    if phase(&crashed) != "Backfill"
        || status.keys_copied <= 0
        || status.checkpoints.is_empty()
        || !status.checkpoints.iter().any(|c| c.cursor != "0" || c.done)
    {
        rig.fail(
            "the checkpoint kept after the crash in Backfill",
            anyhow!("{}", describe(&crashed)),
        );
    }
    println!(
        "{}: operator aborted in Backfill: {}",
        rig.name,
        describe(&crashed)
    );

    // 2. the next operator resumes from the checkpoint and aborts in Verify
    rig.restart_operator(Some("migration-verify"));
    let mut floor = status.keys_copied;
    let before = status.checkpoints.clone();
    rig.follow(
        &name,
        "the second operator to resume from the checkpoint and abort mid-Verify",
        MIGRATION,
        Duration::from_millis(100),
        |m| {
            let s = m.status.clone().unwrap_or_default();
            if s.keys_copied < floor {
                return Err(anyhow!(
                    "keysCopied went back from {floor} to {}",
                    s.keys_copied
                ));
            }
            floor = s.keys_copied;
            if s.phase.as_deref() == Some("Backfill") {
                for old in before.iter().filter(|c| c.cursor != "0" || c.done) {
                    let now = s.checkpoints.iter().find(|c| c.shard == old.shard);
                    if now.is_none_or(|c| c.cursor == "0" && !c.done) {
                        return Err(anyhow!(
                            "the checkpoint of shard {} was reset (was {}@{})",
                            old.shard,
                            old.shard,
                            old.cursor
                        ));
                    }
                }
            }
            Ok((s.phase.as_deref() == Some("Verify")).then_some(()))
        },
    )
    .await;
    rig.wait_operator_exit("the operator to abort mid-Verify", MIGRATION)
        .await;
    let aborted = rig.check("the migration after the crash", rig.migration(&name).await);
    let s = aborted.status.clone().unwrap_or_default();
    assert_eq!(phase(&aborted), "Verify", "{}", describe(&aborted));
    assert!(s.keys_copied >= floor, "{}", describe(&aborted));
    println!(
        "{}: operator aborted in Verify: {}",
        rig.name,
        describe(&aborted)
    );

    // 3. a normal operator finishes
    rig.restart_operator(None);
    let out = rig.run_to_completion(&name).await;
    let report = rig.finish_load(load, "across two operator crashes").await;
    let ring2 = rig.wait_ready(4).await;
    assert_eq!(ring2.version, ring1.version + 1);
    assert_completed_status(&rig, &out.migration);
    assert_load_ok(&rig, &report, "the load across the operator crashes");
    let audit = rig.audit(&ring2).await;
    rig.assert_clean(&audit, 0, "the audit after the operator crashes");

    // 4. rollback: 4 → 5 paused in Backfill, then rolled back
    // (a larger key space, so that the copy lasts; the load dual-writes into the
    // moving ranges until the rollback has unpublished them)
    rig.preload(3 * PRELOAD).await;
    let load = rig.start_load(2).await;
    let name = rig.scale(5, &ring2).await;
    rig.follow(
        &name,
        "the migration to copy in Backfill",
        READY,
        Duration::from_millis(50),
        |m| match phase(m).as_str() {
            "Backfill" if m.status.as_ref().is_some_and(|s| s.keys_copied > 0) => Ok(Some(())),
            "Pending" | "Preparing" | "Backfill" | "-" => Ok(None),
            other => Err(anyhow!("phase {other} before the pause")),
        },
    )
    .await;
    rig.patch_migration(&name, json!({ "paused": true })).await;
    let paused = rig
        .follow(&name, "the migration to report Paused", SHORT, POLL, |m| {
            if phase(m) != "Backfill" {
                return Err(anyhow!("left Backfill while paused"));
            }
            Ok(progressing(m)
                .filter(|(reason, _)| reason == "Paused")
                .map(|_| m.clone()))
        })
        .await;
    println!("{}: paused: {}", rig.name, describe(&paused));
    rig.patch_migration(&name, json!({ "rollback": true }))
        .await;
    let rolled = rig
        .follow(
            &name,
            "the migration to roll back",
            MIGRATION,
            POLL,
            |m| match phase(m).as_str() {
                "RolledBack" => Ok(Some(m.clone())),
                "Verify" | "SwitchReads" | "SwitchWrites" | "Cleanup" | "Completed" => {
                    Err(anyhow!("went on instead of rolling back"))
                }
                _ => Ok(None),
            },
        )
        .await;
    println!("{}: rolled back: {}", rig.name, describe(&rolled));
    let report = rig
        .finish_load(load, "across the pause and the rollback")
        .await;
    assert_load_ok(&rig, &report, "the load across the rollback");
    let reasons = rig.check("the rollback's Events", rig.event_reasons(&name).await);
    for reason in ["RollingBack", "RolledBack"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event for {name}: {reasons:?}"
        );
    }
    let degraded = rig
        .wait(
            "the cluster to report Degraded (RebalanceRolledBack)",
            SHORT,
            || async {
                let sc = rig.sc().await?;
                let status = sc.status.clone().unwrap_or_default();
                let condition = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Degraded")
                    .map(|c| (c.status.clone(), c.reason.clone()));
                if status.phase.as_deref() == Some("Degraded")
                    && condition
                        .as_ref()
                        .is_some_and(|(s, r)| s == "True" && r == "RebalanceRolledBack")
                    && status.migration.is_none()
                {
                    Ok(Some(status))
                } else {
                    Err(anyhow!("phase {:?}, Degraded {condition:?}", status.phase))
                }
            },
        )
        .await;
    assert_eq!(
        degraded.ring.as_ref(),
        Some(&ring2),
        "the ring changed by a rollback"
    );
    let audit = rig.audit(&ring2).await;
    rig.assert_clean(&audit, 0, "the audit after the rollback");
    assert_eq!(
        audit.per_shard.get(&4).copied(),
        Some(0),
        "the rolled-back target shard 4 must hold no keys"
    );

    // back to 4 shards: the ring stays, and the rolled-back target, emptied by the
    // rollback and never an owner of a range, is deleted by the operator
    rig.set_shards(4).await;
    let extra = format!("{}-4", rig.name);
    rig.wait(
        "the operator to delete the rolled-back target Shard",
        SHORT,
        || async {
            match rig.shards.get_opt(&extra).await? {
                None => Ok(Some(())),
                Some(_) => Err(anyhow!("Shard {extra} still exists")),
            }
        },
    )
    .await;
    let ring = rig.wait_ready(4).await;
    assert_eq!(ring, ring2, "the ring after the rollback and the revert");
    println!("{}: whole test {:.1?}", rig.name, rig.began.elapsed());
}

/// A source shard's primary is killed mid-Backfill: the migration waits for the
/// failover, then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_failover_during_backfill() {
    let mut rig = Rig::start("mig-failover", "fo", 3).await;
    let ring1 = rig.wait_ready(3).await;
    rig.preload(2 * PRELOAD).await;
    let load = rig.start_load(2).await;
    let name = rig.scale(4, &ring1).await;
    // Counts only: Verify must not repair a faulty copy by re-copying the keys it
    // samples (with this few keys per source, the sample is every key); the audit
    // compares every value instead.
    rig.patch_migration(&name, json!({ "verification": "counts" }))
        .await;
    // a source fails over while its copy is half-way, then the target while the next
    // source's copy is, then a source while the moved keys are deleted from it; each
    // time the pass starts over (a PassRestarted Event)
    let source = kill_primary_mid_pass(&rig, &name, "Backfill", 0, 0, 1).await;
    let target = kill_primary_mid_pass(&rig, &name, "Backfill", 1, 3, 2).await;
    let cleanup = kill_primary_mid_pass(&rig, &name, "Cleanup", 1, 1, 3).await;
    let out = rig.run_to_completion(&name).await;
    let report = rig
        .finish_load(load, "across a failover during the migration")
        .await;
    let ring2 = rig.wait_ready(4).await;
    assert_eq!(ring2.version, ring1.version + 1);
    assert_completed_status(&rig, &out.migration);
    let audit = rig.audit(&ring2).await;
    let acked = rig.ledger.acked_keys();
    println!(
        "{}: failovers mid-migration (source in Backfill: {source}; target in Backfill: \
         {target}; source in Cleanup: {cleanup}): {} acknowledged writes lost of {acked} \
         keys; load {}; whole test {:.1?}",
        rig.name,
        audit.lost(),
        report.summary(),
        rig.began.elapsed()
    );
    // async replication: the writes the old primary acknowledged in its last moment may
    // be lost by the failover itself (as in failover_e2e); nothing else may be.
    rig.assert_clean(
        &audit,
        50,
        "the audit after a failover during the migration",
    );
}

/// Kills the primary of shard `victim` once the pass of phase `pass` (Backfill or
/// Cleanup) over shard `during` is half-way; follows the migration until the shard
/// has a new primary and a pass has started over for the `restarts`-th time; returns
/// a summary.
async fn kill_primary_mid_pass(
    rig: &Rig,
    name: &str,
    pass: &str,
    during: i32,
    victim: i32,
    restarts: i32,
) -> String {
    rig.follow(
        name,
        &format!("the {pass} pass over shard {during} to be half-way"),
        MIGRATION,
        Duration::from_millis(50),
        |m| {
            let now = phase(m);
            if now == pass && mid_pass(m, during) {
                Ok(Some(()))
            } else if matches!(now.as_str(), "Completed" | "RollingBack" | "RolledBack") {
                Err(anyhow!("phase {now} before the failover"))
            } else {
                Ok(None)
            }
        },
    )
    .await;
    let shard = format!("{}-{victim}", rig.name);
    let old = rig
        .sc()
        .await
        .ok()
        .and_then(|sc| sc.status?.primaries.get(&shard).cloned())
        .unwrap_or_else(|| rig.fail(&format!("the primary of {shard}"), anyhow!("unknown")));
    let killed_at = Instant::now();
    let result = rig.kill_server(&old).await;
    let pid = rig.check(&format!("killing {old}"), result);
    // trace the watched source's checkpoint, the victim's primary and the Progressing
    // reason until the new primary serves and the copy started over
    let mut trace: Vec<String> = Vec::new();
    let mut waited = None;
    let mut promoted = None;
    let deadline = Instant::now() + MIGRATION;
    loop {
        let m = rig.check("reading the migration", rig.migration(name).await);
        let primary = rig
            .shards
            .get(&shard)
            .await
            .ok()
            .and_then(|s| s.status)
            .filter(|s| s.change.is_none())
            .and_then(|s| s.primary);
        if promoted.is_none()
            && let Some(p) = primary.as_ref().filter(|p| **p != old)
        {
            promoted = Some((p.clone(), killed_at.elapsed()));
        }
        let reason = progressing(&m);
        if waited.is_none()
            && matches!(
                reason.as_ref().map(|(r, _)| r.as_str()),
                Some("ShardUnavailable" | "StepFailed")
            )
        {
            waited = reason.as_ref().map(|(r, _)| r.clone());
        }
        let checkpoint = m.status.as_ref().and_then(|s| {
            s.checkpoints
                .iter()
                .find(|c| c.shard == during)
                .map(|c| format!("{}{}", c.cursor, if c.done { " done" } else { "" }))
        });
        let line = format!(
            "{} (shard {during} at {}, {shard} primary {}, {})",
            phase(&m),
            checkpoint.unwrap_or_else(|| "-".to_owned()),
            primary.unwrap_or_else(|| "changing".to_owned()),
            reason.map(|(r, _)| r).unwrap_or_default()
        );
        if trace.last() != Some(&line) {
            trace.push(line);
        }
        if promoted.is_some() && rig.copy_restarts(name).await.unwrap_or(0) >= restarts {
            break;
        }
        if matches!(
            phase(&m).as_str(),
            "Completed" | "RollingBack" | "RolledBack"
        ) {
            rig.fail(
                &format!("the {pass} pass after {shard} failed over"),
                anyhow!("{}: {trace:?}", describe(&m)),
            );
        }
        if Instant::now() >= deadline {
            rig.fail(
                &format!("{shard} to fail over and the {pass} pass to start over"),
                anyhow!("timed out after {MIGRATION:?}: {trace:?}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (promoted, took) = promoted.expect("promoted");
    println!(
        "{}: killed {old} (pid {pid}) while the {pass} pass over shard {during} was \
         half-way: {}",
        rig.name,
        trace.join(" → ")
    );
    let Some(waited) = waited else {
        rig.fail(
            &format!("the migration to wait for {shard}'s failover"),
            anyhow!("never ShardUnavailable or StepFailed: {trace:?}"),
        );
    };
    format!(
        "{shard} failed over {old} → {promoted} within {took:.1?}, the migration waited ({waited})"
    )
}
