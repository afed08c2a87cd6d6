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

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;
use ringmaster::engine::redis::{self as data, Endpoint, SourcePlan};
use ringmaster::ring::{HashRange, RangeMove};

const PASSWORD: &str = "pw";
const KEYS: usize = 200_000;
const COUNT: usize = 1000;
const RUNS: usize = 3;

/// A `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if let Ok(mut con) = server.try_raw().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_ok()
            {
                return server;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    async fn try_raw(&self) -> redis::RedisResult<MultiplexedConnection> {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", self.port);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(60)));
        redis::Client::open(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: format!("127.0.0.1:{}", self.port),
            username: "default".into(),
            password: PASSWORD.into(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// The baseline: SCAN, pipelined DUMP, pipelined RESTORE REPLACE.
async fn raw_copy(src: &mut MultiplexedConnection, dst: &mut MultiplexedConnection) -> Run {
    let start = Instant::now();
    let (mut cursor, mut keys, mut bytes) = (0u64, 0u64, 0u64);
    loop {
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
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Run {
        keys,
        bytes,
        elapsed: start.elapsed(),
    }
}

/// `backfill_batch` over the whole source.
async fn backfill(source: &Server, target: &Server) -> Run {
    let timeout = Duration::from_secs(30);
    let mut src = data::connect(&source.endpoint(), 0, timeout).await.unwrap();
    let mut targets = BTreeMap::from([(
        1,
        data::connect(&target.endpoint(), 0, timeout).await.unwrap(),
    )]);
    let plan = SourcePlan::new(
        0,
        &[RangeMove {
            range: HashRange { start: 0, end: 0 },
            source: 0,
            target: 1,
        }],
    );
    let start = Instant::now();
    let (mut cursor, mut keys, mut bytes) = (0u64, 0u64, 0u64);
    loop {
        let o = data::backfill_batch(&mut src, &mut targets, &plan, cursor, COUNT)
            .await
            .expect("backfill batch");
        keys += o.copied;
        bytes += o.bytes;
        cursor = o.next_cursor;
        if cursor == 0 {
            break;
        }
    }
    Run {
        keys,
        bytes,
        elapsed: start.elapsed(),
    }
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
    let (source, target) = (Server::start().await, Server::start().await);
    let mut src = source.try_raw().await.expect("source connection");
    let mut dst = target.try_raw().await.expect("target connection");
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
