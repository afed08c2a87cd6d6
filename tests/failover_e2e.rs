//! Replication, automatic failover and switchover on the local cluster, with the
//! operator as a process and real redis-server / postgres instances in Pods.
//!
//! Every scenario runs a continuous writer of unique, acknowledged writes through the
//! shard's `-rw` Service and audits, after the change of primary, that each
//! acknowledged write is on the new primary: none may be missing in `sync` mode (for
//! Redis, a write is acknowledged once `WAIT 1` confirms a replica has it); in
//! `async` mode the number missing is printed.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

mod common;

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use common::install_crds;
use common::load::{self, Report, Target, Writer};
use common::operator::Operator;
use common::shards::{POLL, ShardUnderTest, signal_all};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use nix::sys::signal::Signal;
use ringmaster::api::shard::ChangePhase;
use ringmaster::operator::shard::objects;
use ringmaster::operator::shard::plan::pod_ready;
use ringmaster_e2e::{Cluster, wait_for};
use serde_json::json;
use tokio::sync::Semaphore;

/// Scenarios at a time: each runs 3 database servers and an operator on 2 cores.
static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(2));

const READY: Duration = Duration::from_secs(180);
const FAILOVER: Duration = Duration::from_secs(90);
const RESUME: Duration = Duration::from_secs(60);
/// A rolling update of 3 instances, one at a time, each Ready before the next.
const ROLL: Duration = Duration::from_secs(240);
/// Upper bound of writes per writer (the writer also stops after `WRITER_TIME`).
const MAX_WRITES: u64 = 200_000;
const WRITER_TIME: Duration = Duration::from_secs(240);

/// A namespace, an operator and a one-shard cluster with 2 replicas.
struct Scenario {
    shard: ShardUnderTest,
    operator: Operator,
    next_id: u64,
    namespace: ringmaster_e2e::TestNamespace,
    cluster: &'static Cluster,
}

impl Scenario {
    async fn start(name: &str, engine: &'static str, sync: bool) -> Self {
        let cluster = Cluster::shared();
        install_crds(cluster).await;
        let namespace = cluster.namespace(name).await;
        let operator = Operator::start(cluster, namespace.name());
        let client = cluster.client().await;
        let shard = ShardUnderTest::create(&client, namespace.name(), name, engine, sync, 2, "2s")
            .await
            .expect("creating the ShardedCluster");
        let scenario = Self {
            shard,
            operator,
            next_id: 1,
            namespace,
            cluster,
        };
        scenario.healthy().await;
        let target = scenario.rw().await;
        load::prepare(&target, READY)
            .await
            .unwrap_or_else(|e| panic!("preparing the audit table: {e:#}"));
        scenario
    }

    fn fail(&self, what: &str, e: anyhow::Error) -> ! {
        panic!("{what}: {e:#}\n{}", self.operator.log_tail())
    }

    async fn healthy(&self) -> String {
        match self.shard.wait_healthy(READY).await {
            Ok(primary) => primary,
            Err(e) => self.fail("waiting for a healthy shard", e),
        }
    }

    async fn rw(&self) -> Target {
        self.shard
            .rw_target()
            .await
            .unwrap_or_else(|e| self.fail("the -rw target", e))
    }

    /// Starts a writer and waits until it has `n` acknowledged writes.
    async fn writer(&mut self, n: u64) -> Writer {
        let writer = Writer::start(self.rw().await, self.next_id, MAX_WRITES, WRITER_TIME);
        self.next_id += MAX_WRITES;
        self.acked_at_least(&writer, n, "the writer to get going")
            .await;
        writer
    }

    async fn acked_at_least(&self, writer: &Writer, n: u64, what: &str) {
        if let Err(e) = writer.wait_acked(n, what, RESUME).await {
            self.fail(what, e);
        }
    }

    /// After a change of primary: lets the writer make progress on the new primary,
    /// stops it and audits. Returns (report, missing ids).
    async fn finish_and_audit(&self, writer: Writer) -> (Report, Vec<u64>) {
        let after = writer.acked() + 20;
        self.acked_at_least(&writer, after, "writes to resume on the new primary")
            .await;
        let report = writer.finish().await;
        let target = self.rw().await;
        let missing = load::missing(&target, &report.ids())
            .await
            .unwrap_or_else(|e| self.fail("auditing", e));
        (report, missing)
    }

    async fn assert_one_primary(&self) {
        let result = wait_for("exactly one primary", FAILOVER, POLL, || async {
            let (labelled, serving) = self.shard.primaries().await?;
            if labelled.len() == 1 && labelled == serving {
                Ok(Some(()))
            } else {
                Err(anyhow!(
                    "labelled {labelled:?}, serving as primary {serving:?}"
                ))
            }
        })
        .await;
        if let Err(e) = result {
            self.fail("one primary", e);
        }
    }

    /// Kills (`SIGKILL`) the primary's server, or deletes its Pod; audits.
    async fn crash_primary(&mut self, how: &str) {
        let old = self.healthy().await;
        let writer = self.writer(50).await;
        match how {
            "kill" => drop(self.shard.signal_server(&old, Signal::SIGKILL).await),
            _ => self
                .shard
                .delete_pod(&old)
                .await
                .unwrap_or_else(|e| self.fail("deleting the primary", e)),
        }
        let record = self
            .shard
            .wait_primary_change(&old, FAILOVER)
            .await
            .unwrap_or_else(|e| self.fail("waiting for the failover", e));
        assert_eq!(
            record.reason.split(':').next(),
            Some("PrimaryUnhealthy"),
            "{record:?}"
        );
        let (report, missing) = self.finish_and_audit(writer).await;
        self.report(
            &format!("{how} primary {old} → {}", record.to),
            &report,
            &missing,
        );
        self.healthy().await;
        self.assert_one_primary().await;
    }

    fn report(&self, what: &str, report: &Report, missing: &[u64]) {
        println!(
            "{} {} ({}): {what}: {} acknowledged, {} errors, {} acknowledged writes missing",
            self.shard.engine,
            if self.shard.sync { "sync" } else { "async" },
            self.shard.cluster,
            report.acks.len(),
            report.errors,
            missing.len()
        );
        if self.shard.sync {
            assert!(
                missing.is_empty(),
                "sync mode lost acknowledged writes: {missing:?}"
            );
        }
    }

    /// SIGSTOP the primary's server: it is failed over; after SIGCONT it never
    /// accepts a write and rejoins as a replica.
    async fn hang_primary(&mut self) {
        let old = self.healthy().await;
        let old_addr = self.shard.pod_addr(&old).await.unwrap();
        let writer = self.writer(50).await;
        let hung = self
            .shard
            .signal_server_tree(&old, Signal::SIGSTOP)
            .await
            .unwrap_or_else(|e| self.fail("stopping the primary", e));
        let record = self
            .shard
            .wait_primary_change(&old, FAILOVER)
            .await
            .unwrap_or_else(|e| self.fail("waiting for the failover", e));
        // the hung server is resumed (if it still exists): it must refuse writes
        signal_all(&hung, Signal::SIGCONT);
        let direct = self.shard.target(old_addr.clone()).await.unwrap();
        let probe_id = u64::MAX / 2 + self.next_id;
        self.next_id += 1;
        let refused = load::write_once(&direct, probe_id).await;
        assert!(
            refused.is_err(),
            "the old primary {old} ({old_addr}) accepted a write after the promotion of {}",
            record.to
        );
        let (report, missing) = self.finish_and_audit(writer).await;
        self.report(
            &format!("hung primary {old} → {}", record.to),
            &report,
            &missing,
        );
        self.healthy().await;
        // once a replica again, it still refuses writes, and holds the new primary's data
        let refused = load::write_once(&direct, probe_id + 1).await;
        assert!(
            refused.is_err(),
            "the old primary {old} accepted a write as a replica"
        );
        self.assert_one_primary().await;
    }

    /// Declarative switchover to a replica under load: nothing acknowledged is lost.
    async fn switchover(&mut self) {
        let old = self.healthy().await;
        let target = self.a_replica(&old).await;
        let writer = self.writer(50).await;
        self.shard
            .request_switchover(&target)
            .await
            .unwrap_or_else(|e| self.fail("editing spec.primary", e));
        let record = self
            .shard
            .wait_primary_change(&old, FAILOVER)
            .await
            .unwrap_or_else(|e| self.fail("waiting for the switchover", e));
        assert_eq!(record.to, target);
        assert_eq!(record.reason, "Switchover");
        let (report, missing) = self.finish_and_audit(writer).await;
        println!(
            "{} switchover {old} → {target}: {} acknowledged, {} errors, {} missing",
            self.shard.engine,
            report.acks.len(),
            report.errors,
            missing.len()
        );
        assert!(
            missing.is_empty(),
            "a switchover lost acknowledged writes: {missing:?}"
        );
        self.healthy().await;
        self.assert_one_primary().await;
    }

    /// A change of resources under load rolls the shard: the replicas are recreated
    /// one at a time, the primary is switched over (reason `RollingUpdate`) and
    /// recreated last, never more than one instance is unavailable, and nothing
    /// acknowledged is lost.
    async fn rolling_update(&mut self) {
        let old = self.healthy().await;
        let before = self.pod_uids().await;
        let writer = self.writer(50).await;
        let resources = json!({ "requests": { "cpu": "50m", "memory": "96Mi" } });
        self.shard
            .set_resources(resources.clone())
            .await
            .unwrap_or_else(|e| self.fail("changing resources", e));
        let roll = Mutex::new(Roll::default());
        let result = wait_for("the rolling update", ROLL, POLL, || async {
            let pods = self.shard.pods().await?;
            let status = self.shard.shard().await?.status.unwrap_or_default();
            let mut roll = roll.lock().unwrap();
            roll.observe(&pods, &before, &resources);
            let switched = status.last_failover.as_ref().filter(|l| l.from == old);
            let done = roll.replaced.len() == before.len()
                && roll.updated == before.len()
                && pods.iter().all(pod_ready)
                && status.change.is_none()
                && switched.is_some();
            if done {
                return Ok(Some(switched.cloned().unwrap()));
            }
            Err(anyhow!(
                "replaced {:?}, {} of {} Pods updated and ready, change {:?}",
                roll.replaced,
                roll.updated,
                before.len(),
                status.change
            ))
        })
        .await;
        let record = result.unwrap_or_else(|e| self.fail("the rolling update", e));
        let roll = roll.into_inner().unwrap();
        assert_eq!(record.reason, "RollingUpdate", "{record:?}");
        assert_eq!(
            roll.replaced.last(),
            Some(&old),
            "the old primary is updated last: {:?}",
            roll.replaced
        );
        assert!(
            roll.most_unavailable <= 1,
            "{} instances were unavailable at once",
            roll.most_unavailable
        );
        let (report, missing) = self.finish_and_audit(writer).await;
        self.report(
            &format!("rolling update, {old} → {} last", record.to),
            &report,
            &missing,
        );
        assert!(
            missing.is_empty(),
            "a rolling update lost acknowledged writes: {missing:?}"
        );
        self.healthy().await;
        self.assert_one_primary().await;
    }

    async fn pod_uids(&self) -> BTreeMap<String, String> {
        let pods = self
            .shard
            .pods()
            .await
            .unwrap_or_else(|e| self.fail("listing Pods", e));
        pods.iter().map(|p| (p.name_any(), uid(p))).collect()
    }

    /// A replica stopped for a while catches up; a replica whose volume is deleted
    /// is cloned again and holds the data.
    async fn replicas_recover(&mut self) {
        let primary = self.healthy().await;
        let replica = self.a_replica(&primary).await;
        let stopped = self
            .shard
            .signal_server_tree(&replica, Signal::SIGSTOP)
            .await
            .unwrap();
        let writer = self.writer(50).await;
        let more = writer.acked() + 200;
        self.acked_at_least(&writer, more, "writes while a replica is stopped")
            .await;
        signal_all(&stopped, Signal::SIGCONT);
        let report = writer.finish().await;
        let last = report.acks.last().expect("acknowledged writes").id;
        self.wait_replica_holds(&replica, last).await;

        self.shard
            .delete_volume_and_pod(&replica)
            .await
            .unwrap_or_else(|e| self.fail("deleting a replica's volume", e));
        self.healthy().await;
        self.wait_replica_holds(&replica, last).await;
    }

    /// An instance of the shard other than `primary`.
    async fn a_replica(&self, primary: &str) -> String {
        self.shard
            .pods()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name_any())
            .find(|n| n != primary)
            .expect("a replica")
    }

    async fn wait_replica_holds(&self, replica: &str, id: u64) {
        let result = wait_for(
            &format!("{replica} to hold write {id}"),
            READY,
            POLL,
            || async {
                let addr = self.shard.pod_addr(replica).await?;
                let target = self.shard.target(addr).await?;
                if load::holds(&target, id).await? {
                    Ok(Some(()))
                } else {
                    Err(anyhow!("not yet"))
                }
            },
        )
        .await;
        if let Err(e) = result {
            self.fail("a replica catching up", e);
        }
    }
}

/// What a rolling update has done so far, polled.
#[derive(Default)]
struct Roll {
    /// Instances whose Pod was recreated, in order.
    replaced: Vec<String>,
    /// Pods running the new resources and Ready.
    updated: usize,
    /// The most instances seen unavailable (missing or not Ready) at once.
    most_unavailable: usize,
}

impl Roll {
    fn observe(
        &mut self,
        pods: &[Pod],
        before: &BTreeMap<String, String>,
        resources: &serde_json::Value,
    ) {
        for pod in pods {
            let name = pod.name_any();
            if before.get(&name) != Some(&uid(pod)) && !self.replaced.contains(&name) {
                self.replaced.push(name);
            }
        }
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        self.most_unavailable = self
            .most_unavailable
            .max(before.len().saturating_sub(ready));
        self.updated = pods
            .iter()
            .filter(|p| pod_ready(p) && database_resources(p).as_ref() == Some(resources))
            .count();
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn database_resources(pod: &Pod) -> Option<serde_json::Value> {
    serde_json::to_value(objects::database_container(pod)?.resources.as_ref()?).ok()
}

async fn full_scenario(name: &str, engine: &'static str, sync: bool) {
    let _slot = SLOTS.acquire().await.unwrap();
    let started = Instant::now();
    let mut s = Scenario::start(name, engine, sync).await;
    s.crash_primary("kill").await;
    s.crash_primary("delete").await;
    s.hang_primary().await;
    s.switchover().await;
    s.rolling_update().await;
    s.replicas_recover().await;
    println!("{name}: scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_async_failover_switchover_and_recovery() {
    full_scenario("fo-redis-async", "redis", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sync_failover_switchover_and_recovery() {
    full_scenario("fo-redis-sync", "redis", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_async_failover_switchover_and_recovery() {
    full_scenario("fo-pg-async", "postgres", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sync_failover_switchover_and_recovery() {
    full_scenario("fo-pg-sync", "postgres", true).await;
}

/// The operator dies right after recording a failover decision (a fault-injection
/// point, `RINGMASTER_FAILPOINT=failover-recorded`); the next operator finishes that
/// same failover: one primary, the recorded target, the recorded epoch.
async fn operator_dies_mid_failover(name: &str, engine: &'static str) {
    let _slot = SLOTS.acquire().await.unwrap();
    let mut s = Scenario::start(name, engine, false).await;
    let old = s.healthy().await;
    // swap the operator for one that aborts after recording the decision
    let namespace = s.shard_namespace();
    s.operator = Operator::spawn(
        s.cluster,
        env!("CARGO_BIN_EXE_ringmaster"),
        &namespace,
        &["--leader-election=false"],
        &[("RINGMASTER_FAILPOINT", "failover-recorded")],
    );
    let writer = s.writer(20).await;
    s.shard.signal_server(&old, Signal::SIGKILL).await.unwrap();
    let recorded = wait_for(
        "the operator to record the failover and die",
        FAILOVER,
        POLL,
        || async {
            let status = s.shard.shard().await?.status.unwrap_or_default();
            match status.change {
                Some(change) if change.phase == ChangePhase::Pending => Ok(Some(change)),
                other => Err(anyhow!("change {other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| s.fail("the recorded failover", e));
    let died = wait_for(
        "the operator to exit at the failpoint",
        RESUME,
        POLL,
        || {
            let exited = s.operator.exited();
            async move { Ok(exited.then_some(())) }
        },
    )
    .await;
    if let Err(e) = died {
        s.fail("the failpoint", e);
    }
    s.operator = Operator::start(s.cluster, &namespace);
    let record = s
        .shard
        .wait_primary_change(&old, FAILOVER)
        .await
        .unwrap_or_else(|e| s.fail("the next operator finishing the failover", e));
    assert_eq!(
        record.to, recorded.to,
        "the next operator promoted another instance"
    );
    let status = s.shard.shard().await.unwrap().status.unwrap();
    assert_eq!(status.epoch, recorded.epoch, "one failover, one epoch");
    let (report, missing) = s.finish_and_audit(writer).await;
    s.report("operator killed mid-failover", &report, &missing);
    s.healthy().await;
    s.assert_one_primary().await;
    let agents_primary = s.shard.primaries().await.unwrap().1;
    assert_eq!(agents_primary, vec![record.to.clone()]);
}

impl Scenario {
    fn shard_namespace(&self) -> String {
        self.namespace.name().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_operator_killed_between_failover_phases() {
    operator_dies_mid_failover("fo-redis-crash", "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_operator_killed_between_failover_phases() {
    operator_dies_mid_failover("fo-pg-crash", "postgres").await;
}
