//! Throughput of the Redis backfill (`ringmaster::engine::redis::backfill_batch`)
//! against a raw copy of the same keys, between two real `redis-server` processes on
//! loopback.
//!
//! * raw: `SCAN … COUNT 1000`, one pipeline of `DUMP`, one of `RESTORE … REPLACE`, no
//!   ring logic;
//! * backfill: `backfill_batch` with one move of the whole circle from shard 0 to
//!   shard 1 (`HashRange { start: 0, end: 0 }`), count 1000 (it also reads `PTTL`,
//!   hashes every key and restores without `REPLACE`).
//!
//! 200,000 string keys of 100 random bytes, then of 1 KiB; the target is flushed
//! before every run; best of 3. Prints keys/s, MB/s of `DUMP` payload and the ratio.
//! Run with `cargo bench -p ringmaster --bench migration`; skips when `redis-server`
//! is missing.

#[path = "../tests/common/redis_servers.rs"]
mod redis_servers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;
use redis_servers::{PASSWORD, RedisServer};
use ringmaster::engine::redis::{self as data, Endpoint, SourcePlan};
use ringmaster::ring::{HashRange, RangeMove};

const KEYS: usize = 200_000;
const COUNT: usize = 1000;
const RUNS: usize = 3;

/// The engine's view of `server`.
fn endpoint(server: &RedisServer) -> Endpoint {
    Endpoint {
        address: server.addr(),
        username: "default".into(),
        password: PASSWORD.into(),
    }
}

/// A plain client connection to database 0 of `server`.
async fn raw_connection(server: &RedisServer) -> MultiplexedConnection {
    let url = format!("redis://:{PASSWORD}@{}/0", server.addr());
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    redis::Client::open(url)
        .expect("a redis URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("a raw connection")
}

/// Keys and `DUMP` payload bytes copied in `elapsed`.
#[derive(Clone, Copy, Debug)]
struct Run {
    keys: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Run {
    fn keys_per_s(&self) -> f64 {
        self.keys as f64 / self.elapsed.as_secs_f64()
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Loads [`KEYS`] keys with pseudo-random values of `value_size` bytes (random so
/// that `DUMP` cannot compress them).
async fn load(con: &mut MultiplexedConnection, value_size: usize) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut value = vec![0u8; value_size];
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            for byte in value.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = (state >> 24) as u8;
            }
            pipe.cmd("SET")
                .arg(format!("key:{i:08}"))
                .arg(&value)
                .ignore();
        }
        let _: () = pipe.query_async(con).await.expect("loading");
    }
}

async fn flush(con: &mut MultiplexedConnection) {
    let _: () = redis::cmd("FLUSHDB")
        .arg("SYNC")
        .query_async(con)
        .await
        .expect("FLUSHDB");
}

/// Runs `batch` from cursor 0 until it returns cursor 0, timed; `batch(cursor)` is the
/// next cursor and the keys and bytes it copied.
async fn copy_all(mut batch: impl AsyncFnMut(u64) -> (u64, u64, u64)) -> Run {
    let start = Instant::now();
    let (mut cursor, mut keys, mut bytes) = (0, 0, 0);
    loop {
        let (next, copied, copied_bytes) = batch(cursor).await;
        keys += copied;
        bytes += copied_bytes;
        cursor = next;
        if cursor == 0 {
            return Run {
                keys,
                bytes,
                elapsed: start.elapsed(),
            };
        }
    }
}

/// The baseline: SCAN, pipelined DUMP, pipelined RESTORE REPLACE.
async fn raw_copy(src: &mut MultiplexedConnection, dst: &mut MultiplexedConnection) -> Run {
    copy_all(async |cursor| {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(COUNT)
            .query_async(src)
            .await
            .expect("SCAN");
        let mut dumps = redis::pipe();
        for key in &batch {
            dumps.cmd("DUMP").arg(key);
        }
        let payloads: Vec<Value> = dumps.query_async(src).await.expect("DUMP");
        let (mut keys, mut bytes) = (0, 0);
        let mut restores = redis::pipe();
        for (key, payload) in batch.iter().zip(payloads) {
            if let Value::BulkString(payload) = payload {
                bytes += payload.len() as u64;
                keys += 1;
                restores
                    .cmd("RESTORE")
                    .arg(key)
                    .arg(0)
                    .arg(payload)
                    .arg("REPLACE")
                    .ignore();
            }
        }
        let _: () = restores.query_async(dst).await.expect("RESTORE");
        (next, keys, bytes)
    })
    .await
}

/// `backfill_batch` over the whole source.
async fn backfill(source: &RedisServer, target: &RedisServer) -> Run {
    let timeout = Duration::from_secs(30);
    let mut src = data::connect(&endpoint(source), 0, timeout).await.unwrap();
    let mut targets = BTreeMap::from([(
        1,
        data::connect(&endpoint(target), 0, timeout).await.unwrap(),
    )]);
    let plan = SourcePlan::new(
        0,
        &[RangeMove {
            range: HashRange { start: 0, end: 0 },
            source: 0,
            target: 1,
        }],
    );
    copy_all(async |cursor| {
        let o = data::backfill_batch(&mut src, &mut targets, &plan, cursor, COUNT)
            .await
            .expect("backfill batch");
        (o.next_cursor, o.copied, o.bytes)
    })
    .await
}

fn best(runs: &[Run]) -> Run {
    *runs
        .iter()
        .min_by_key(|r| r.elapsed)
        .expect("at least one run")
}

fn report(name: &str, run: &Run) {
    println!(
        "  {name:<9} {:>8} keys in {:>7.3} s: {:>9.0} keys/s, {:>7.1} MB/s",
        run.keys,
        run.elapsed.as_secs_f64(),
        run.keys_per_s(),
        run.mb_per_s()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::path::Path::new("/usr/bin/redis-server").is_file() {
        println!("migration bench skipped: /usr/bin/redis-server is not installed");
        return;
    }
    // `cargo test --benches` runs benches with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("migration bench: run with `cargo bench` to measure");
        return;
    }
    let (source, target) = (RedisServer::start(), RedisServer::start());
    let (mut src, mut dst) = (raw_connection(&source).await, raw_connection(&target).await);
    for value_size in [100, 1024] {
        flush(&mut src).await;
        load(&mut src, value_size).await;
        let (mut raw_runs, mut backfill_runs) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            flush(&mut dst).await;
            raw_runs.push(raw_copy(&mut src, &mut dst).await);
            flush(&mut dst).await;
            backfill_runs.push(backfill(&source, &target).await);
        }
        let (raw, filled) = (best(&raw_runs), best(&backfill_runs));
        assert_eq!(raw.keys, KEYS as u64, "raw copy copied every key");
        assert_eq!(filled.keys, KEYS as u64, "backfill copied every key");
        println!("{KEYS} string keys of {value_size} bytes, SCAN COUNT {COUNT}, best of {RUNS}:");
        report("raw", &raw);
        report("backfill", &filled);
        println!(
            "  backfill/raw throughput: {:.2}",
            filled.keys_per_s() / raw.keys_per_s()
        );
    }
}
