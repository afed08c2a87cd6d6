//! Failover time and acknowledged-write loss on the local cluster.
//!
//! For each engine (Redis, PostgreSQL) and replication mode (async, sync): a
//! one-shard ShardedCluster with 2 replicas and `failover.unhealthyAfter: 2s`, a
//! continuous writer of unique acknowledged writes through the `-rw` Service, then
//! `TRIALS` times: `SIGKILL` of the primary's server and all its processes → measure the time
//! from the kill to the first acknowledged write that started after it (on the new
//! primary), and audit every acknowledged write of the trial on the new primary.
//! Between trials the bench waits until the old primary has rejoined as a streaming
//! replica.
//!
//! Baseline, same run: the same kill on a shard without replicas, where the instance
//! agent restarts the server in place (no failover) — the time a crash costs when
//! nothing has to be decided.
//!
//! Then, on the same shards, `TRIALS` declarative switchovers (an edit of
//! `spec.primary` to a replica) under the same writer: the longest pause between two
//! acknowledged writes from the edit to the end of the switchover, and the
//! acknowledged writes lost (there must be none), against the failover p50 of the
//! same shard.
//!
//! Run with `cargo bench -p ringmaster --bench failover` (part of `make bench`);
//! `RINGMASTER_BENCH_FAILOVER_TRIALS` (default 10) sets the trials per combination.
//! Needs the binaries: `cargo build --workspace --bins` first.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::install_crds;
use common::load::{self, Report, Writer};
use common::operator::Operator;
use common::shards::ShardUnderTest;
use nix::sys::signal::Signal;
use ringmaster_e2e::{Cluster, wait_for};

const READY: Duration = Duration::from_secs(180);
const FAILOVER: Duration = Duration::from_secs(90);
const MAX_WRITES: u64 = 1_000_000;
const WRITER_TIME: Duration = Duration::from_secs(120);

/// Results of one shard: its failovers and its switchovers.
struct Trials {
    failovers: Vec<Trial>,
    switchovers: Vec<Trial>,
}

/// One trial's result.
struct Trial {
    /// Kill → first acknowledged write started after the kill (failover); the
    /// longest pause between acknowledged writes (switchover).
    recovery: Duration,
    acked: usize,
    missing: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::var("RINGMASTER_BENCH_FAILOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    println!("failover benchmark: {trials} trial(s) per combination, unhealthyAfter 2s");
    println!(
        "{:<9} {:<6} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "engine", "mode", "p50 (s)", "max (s)", "baseline", "acked", "lost"
    );
    let mut switchover_rows = Vec::new();
    for engine in ["redis", "postgres"] {
        let baseline = run(cluster, engine, false, 0, trials.min(5))
            .await
            .failovers;
        let baseline_p50 = percentile(&baseline, 0.5);
        for sync in [false, true] {
            let all = run(cluster, engine, sync, 2, trials).await;
            switchover_rows.push((
                engine,
                sync,
                percentile(&all.failovers, 0.5),
                all.switchovers,
            ));
            let results = all.failovers;
            let p50 = percentile(&results, 0.5);
            let max = percentile(&results, 1.0);
            let acked: usize = results.iter().map(|t| t.acked).sum();
            let lost: usize = results.iter().map(|t| t.missing).sum();
            println!(
                "{engine:<9} {:<6} {:>9.2} {:>9.2} {:>9.2} {acked:>10} {lost:>9}   (failover p50 = {:.1}x the in-place restart)",
                if sync { "sync" } else { "async" },
                p50.as_secs_f64(),
                max.as_secs_f64(),
                baseline_p50.as_secs_f64(),
                p50.as_secs_f64() / baseline_p50.as_secs_f64().max(1e-3),
            );
        }
    }
    print_switchovers(&switchover_rows);
}

/// The switchover table: write pause p50 and max against the failover p50.
fn print_switchovers(rows: &[(&str, bool, Duration, Vec<Trial>)]) {
    println!("switchovers (spec.primary edit): longest pause between acknowledged writes");
    println!(
        "{:<9} {:<6} {:>9} {:>9} {:>12} {:>10} {:>9}",
        "engine", "mode", "p50 (s)", "max (s)", "failover p50", "acked", "lost"
    );
    for (engine, sync, failover_p50, trials) in rows {
        let p50 = percentile(trials, 0.5);
        let acked: usize = trials.iter().map(|t| t.acked).sum();
        let lost: usize = trials.iter().map(|t| t.missing).sum();
        println!(
            "{engine:<9} {:<6} {:>9.2} {:>9.2} {:>12.2} {acked:>10} {lost:>9}   (switchover pause = {:.2}x the failover p50)",
            if *sync { "sync" } else { "async" },
            p50.as_secs_f64(),
            percentile(trials, 1.0).as_secs_f64(),
            failover_p50.as_secs_f64(),
            p50.as_secs_f64() / failover_p50.as_secs_f64().max(1e-3),
        );
    }
}

/// The longest time between two acknowledged writes acknowledged after `from`
/// (the first measured from `from`).
fn longest_pause(report: &Report, from: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for ack in report.acks.iter().filter(|a| a.acked >= from) {
        longest = longest.max(ack.acked - last);
        last = ack.acked;
    }
    longest
}

fn percentile(trials: &[Trial], q: f64) -> Duration {
    let mut v: Vec<Duration> = trials.iter().map(|t| t.recovery).collect();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

/// `trials` kills on a fresh shard with `replicas` replicas.
async fn run(
    cluster: &'static Cluster,
    engine: &'static str,
    sync: bool,
    replicas: i32,
    trials: usize,
) -> Trials {
    let name = format!(
        "bench-fo-{engine}-{}-{replicas}",
        if sync { "sync" } else { "async" }
    );
    let namespace = cluster.namespace(&name).await;
    let operator = Operator::spawn(
        cluster,
        env!("CARGO_BIN_EXE_ringmaster"),
        namespace.name(),
        &["--leader-election=false"],
        &[],
    );
    let client = cluster.client().await;
    let shard = ShardUnderTest::create(
        &client,
        namespace.name(),
        &name,
        engine,
        sync,
        replicas,
        "2s",
    )
    .await
    .expect("creating the cluster");
    let fail = |what: &str, e: anyhow::Error| -> ! {
        panic!("{name}: {what}: {e:#}\n{}", operator.log_tail())
    };
    shard
        .wait_healthy(READY)
        .await
        .unwrap_or_else(|e| fail("ready", e));
    let target = shard.rw_target().await.unwrap();
    load::prepare(&target, READY)
        .await
        .unwrap_or_else(|e| fail("audit table", e));
    let mut results = Vec::new();
    let mut next_id = 1;
    for trial in 0..trials {
        let primary = shard
            .wait_healthy(READY)
            .await
            .unwrap_or_else(|e| fail("healthy before a trial", e));
        let writer = Writer::start(target.clone(), next_id, MAX_WRITES, WRITER_TIME);
        next_id += MAX_WRITES;
        writer
            .wait_acked(20, "the writer to get going", FAILOVER)
            .await
            .unwrap_or_else(|e| fail("writer", e));
        // the whole tree: PostgreSQL backends outlive a killed postmaster for a moment
        shard
            .signal_server_tree(&primary, Signal::SIGKILL)
            .await
            .unwrap_or_else(|e| fail("kill", e));
        let killed = Instant::now();
        if replicas > 0 {
            shard
                .wait_primary_change(&primary, FAILOVER)
                .await
                .unwrap_or_else(|e| fail("failover", e));
        }
        let resumed = writer.acked() + 10;
        writer
            .wait_acked(resumed, "writes to resume", FAILOVER)
            .await
            .unwrap_or_else(|e| fail("writes resuming", e));
        let report = writer.finish().await;
        let first = report
            .first_ack_started_after(killed)
            .expect("a write acknowledged after the kill");
        let missing = audit(&target, &report)
            .await
            .unwrap_or_else(|e| fail("audit", e));
        eprintln!(
            "  {name} trial {trial}: {:.2} s, {} acknowledged, {} lost",
            (first.acked - killed).as_secs_f64(),
            report.acks.len(),
            missing.len()
        );
        results.push(Trial {
            recovery: first.acked - killed,
            acked: report.acks.len(),
            missing: missing.len(),
        });
    }
    let mut switchovers = Vec::new();
    if replicas > 0 {
        for trial in 0..trials {
            let outcome = switchover_trial(&shard, &target, next_id)
                .await
                .unwrap_or_else(|e| fail("switchover", e));
            next_id += MAX_WRITES;
            eprintln!(
                "  {name} switchover {trial}: longest pause {:.2} s, {} acknowledged, {} lost",
                outcome.recovery.as_secs_f64(),
                outcome.acked,
                outcome.missing
            );
            switchovers.push(outcome);
        }
    }
    drop(operator);
    Trials {
        failovers: results,
        switchovers,
    }
}

/// The acknowledged writes of `report` missing on the primary. The audit's own
/// connection may meet a server that has just been restarted (the in-place baseline)
/// and is retried for up to [`FAILOVER`].
async fn audit(target: &load::Target, report: &Report) -> anyhow::Result<Vec<u64>> {
    let ids = report.ids();
    wait_for(
        "the audit",
        FAILOVER,
        Duration::from_millis(500),
        || async { load::missing(target, &ids).await.map(Some) },
    )
    .await
}

/// One switchover to a replica under a writer whose ids start at `first_id`.
async fn switchover_trial(
    shard: &ShardUnderTest,
    target: &load::Target,
    first_id: u64,
) -> anyhow::Result<Trial> {
    let primary = shard.wait_healthy(READY).await?;
    let replica = shard
        .pods()
        .await?
        .into_iter()
        .map(|p| kube::ResourceExt::name_any(&p))
        .find(|n| *n != primary)
        .ok_or_else(|| anyhow::anyhow!("no replica"))?;
    let writer = Writer::start(target.clone(), first_id, MAX_WRITES, WRITER_TIME);
    writer
        .wait_acked(20, "the writer to get going", FAILOVER)
        .await?;
    let requested = Instant::now();
    shard.request_switchover(&replica).await?;
    shard.wait_primary_change(&primary, FAILOVER).await?;
    let resumed = writer.acked() + 10;
    writer
        .wait_acked(resumed, "writes to resume", FAILOVER)
        .await?;
    let report = writer.finish().await;
    let missing = audit(target, &report).await?;
    Ok(Trial {
        recovery: longest_pause(&report, requested),
        acked: report.acks.len(),
        missing: missing.len(),
    })
}
