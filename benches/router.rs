//! Throughput and latency of `ringmaster router` against Redis itself.
//!
//! Starts two `redis-server`s (no persistence) and the router over both, then runs
//! `redis-benchmark -t set,get -n 100000 -c 50 -r 100000` without and with `-P 16`
//! against the router and, in the same run, directly against one server as the
//! baseline. Prints requests/s, p50 and p99 latency and the router/direct ratio.
//!
//! `cargo bench -p ringmaster --bench router` (a few minutes at most).

#[path = "../tests/common/redis_servers.rs"]
mod redis_servers;

use std::process::Command;
use std::time::{Duration, Instant};

use redis_servers::{PASSWORD, RedisServer, RouterProcess, routing_table};

/// In a bench, the bench profile's build of the binary.
const BINARY: &str = env!("CARGO_BIN_EXE_ringmaster");
const REDIS_BENCHMARK: &str = "/usr/bin/redis-benchmark";
const REQUESTS: &str = "100000";
const CLIENTS: &str = "50";
/// Whole-bench budget: a run that exceeds it is reported and the rest skipped.
const BUDGET: Duration = Duration::from_secs(170);

/// One line of redis-benchmark's CSV.
#[derive(Clone, Debug)]
struct Measurement {
    target: &'static str,
    pipeline: u32,
    command: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` / `cargo test --benches`: nothing to list.
        return;
    }
    let started = Instant::now();
    let servers = [RedisServer::start(), RedisServer::start()];
    let table = routing_table(1, &[&servers[0], &servers[1]], 1, &[0, 1], Vec::new());
    let router = RouterProcess::start(BINARY, &table, &["--log-level", "warn"]);
    println!(
        "router {BINARY}\nredis-benchmark -t set,get -n {REQUESTS} -c {CLIENTS} -r 100000, \
         router over 2 shards vs one redis-server directly\n"
    );

    let mut results = Vec::new();
    for pipeline in [1, 16] {
        for (target, port) in [("router", router.port), ("direct", servers[0].port)] {
            if started.elapsed() > BUDGET {
                println!("time budget of {BUDGET:?} exhausted; skipping {target} -P {pipeline}");
                continue;
            }
            results.extend(run(target, port, pipeline));
        }
    }
    print_table(&results);
    println!("\ntotal {:.1}s", started.elapsed().as_secs_f64());
}

/// Runs redis-benchmark against `port` and parses its CSV.
fn run(target: &'static str, port: u16, pipeline: u32) -> Vec<Measurement> {
    let output = Command::new(REDIS_BENCHMARK)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-a", PASSWORD])
        .args([
            "-t", "set,get", "-n", REQUESTS, "-c", CLIENTS, "-r", "100000",
        ])
        .args(["-P", &pipeline.to_string(), "-q", "--csv"])
        .output()
        .unwrap_or_else(|e| panic!("running {REDIS_BENCHMARK}: {e}"));
    assert!(
        output.status.success(),
        "redis-benchmark against {target} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = String::from_utf8_lossy(&output.stdout);
    let results: Vec<Measurement> = csv
        .lines()
        .filter_map(|line| parse_line(target, pipeline, line))
        .collect();
    assert!(
        !results.is_empty(),
        "no results from redis-benchmark against {target}:\n{csv}"
    );
    results
}

/// `"SET","123.4","avg","min","p50","p95","p99","max"` → a result.
fn parse_line(target: &'static str, pipeline: u32, line: &str) -> Option<Measurement> {
    let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
    if fields.len() < 7 || fields[0] == "test" {
        return None;
    }
    Some(Measurement {
        target,
        pipeline,
        command: fields[0].to_owned(),
        rps: fields[1].parse().ok()?,
        p50_ms: fields[4].parse().ok()?,
        p99_ms: fields[6].parse().ok()?,
    })
}

fn print_table(results: &[Measurement]) {
    println!(
        "{:<8} {:>8} {:<7} {:>12} {:>8} {:>8} {:>14}",
        "target", "pipeline", "command", "rps", "p50 ms", "p99 ms", "router/direct"
    );
    for result in results {
        let ratio = if result.target == "router" {
            results
                .iter()
                .find(|d| {
                    d.target == "direct"
                        && d.pipeline == result.pipeline
                        && d.command == result.command
                })
                .map_or("-".to_owned(), |d| format!("{:.2}", result.rps / d.rps))
        } else {
            String::new()
        };
        println!(
            "{:<8} {:>8} {:<7} {:>12.0} {:>8.3} {:>8.3} {:>14}",
            result.target,
            result.pipeline,
            result.command,
            result.rps,
            result.p50_ms,
            result.p99_ms,
            ratio
        );
    }
}
