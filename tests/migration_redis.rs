//! The Redis data plane of a migration (`ringmaster::engine::redis`) against real
//! `redis-server` processes, without Kubernetes: a ring of 2 shards grows to 3, the
//! keys of the moving ranges are copied from shards 0 and 1 to shard 2 (backfill,
//! resumed backfill, backfill under concurrent dual writes + dirty drain), verified
//! (with repairs and an unrepairable mismatch) and deleted (cleanup and rollback).
//!
//! Every test starts its own servers on free loopback ports and kills them when it
//! ends. Tests skip (with a message) when `redis-server` is not installed.

#[path = "common/redis_servers.rs"]
mod redis_servers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, Value};
use redis_servers::{PASSWORD, RedisServer};
use ringmaster::engine::redis::{
    self as data, BatchOutcome, Conn, DIRTY_DB, Endpoint, MigrateError, Side, SourcePlan,
    VerificationMode, VerifyOptions, VerifyOutcome,
};
use ringmaster::ring::{RangeMove, Ring, diff};

const TIMEOUT: Duration = Duration::from_secs(10);
const MIGRATION: &str = "c-ring-2";
/// Keys of the data set loaded onto shards 0 and 1.
const KEYS: usize = 20_000;
/// Tolerance when comparing the remaining TTLs of a key and its copy.
const TTL_TOLERANCE_MS: i64 = 30_000;

// ---------------------------------------------------------------- servers

fn skip() -> bool {
    let installed = std::path::Path::new("/usr/bin/redis-server").is_file();
    if !installed {
        eprintln!("skipped: /usr/bin/redis-server is not installed");
    }
    !installed
}

/// The engine's view of `server`: its address, the default user and [`PASSWORD`].
fn endpoint(server: &RedisServer) -> Endpoint {
    Endpoint {
        address: server.addr(),
        username: "default".into(),
        password: PASSWORD.into(),
    }
}

/// A plain client connection to database `db` of `server`, for setting up and
/// checking.
async fn raw(server: &RedisServer, db: i64) -> MultiplexedConnection {
    let url = format!("redis://:{PASSWORD}@{}/{db}", server.addr());
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    Client::open(url)
        .expect("a redis URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("a raw connection")
}

// ---------------------------------------------------------------- the data set

/// The ring of shards `0..shards` (version `shards`).
fn ring(shards: i32) -> Ring {
    let members: Vec<i32> = (0..shards).collect();
    Ring::build(redis_servers::ring(i64::from(shards), &members))
}

/// Three servers (shards 0, 1 on ring 2; shard 2 joins on ring 3) with the data set on
/// 0 and 1 by ring-2 owner.
struct Fixture {
    servers: Vec<RedisServer>,
    ring2: Ring,
    ring3: Ring,
    moves: Vec<RangeMove>,
    /// Every key loaded, with its shard on ring 2.
    keys: Vec<(Vec<u8>, i32)>,
}

impl Fixture {
    /// The loaded fixture; `None` (the test skips) without `redis-server`.
    async fn new() -> Option<Self> {
        if skip() {
            return None;
        }
        let servers = (0..3).map(|_| RedisServer::start()).collect();
        let (ring2, ring3) = (ring(2), ring(3));
        let moves = diff(&ring2, &ring3);
        assert!(!moves.is_empty(), "adding a shard moves ranges");
        assert!(moves.iter().all(|m| m.target == 2 && m.source != 2));
        let fixture = Fixture {
            servers,
            keys: Vec::new(),
            ring2,
            ring3,
            moves,
        };
        Some(fixture.load().await)
    }

    /// Loads [`KEYS`] keys of mixed types (some with TTLs, some large enough to be
    /// hash-table encoded, some with hash tags or binary names) onto their owner.
    async fn load(mut self) -> Self {
        let mut per_shard: BTreeMap<i32, redis::Pipeline> = BTreeMap::new();
        for i in 0..KEYS {
            let key = key_name(i);
            let owner = self.ring2.owner_of_key(&key).expect("ring has members");
            let pipe = per_shard.entry(owner).or_insert_with(redis::pipe);
            add_value(pipe, &key, i);
            self.keys.push((key, owner));
            if i % 1000 == 999 {
                self.flush(&mut per_shard).await;
            }
        }
        self.flush(&mut per_shard).await;
        self
    }

    async fn flush(&self, pipes: &mut BTreeMap<i32, redis::Pipeline>) {
        for (shard, pipe) in std::mem::take(pipes) {
            let mut con = self.raw(shard, 0).await;
            let _: () = pipe.query_async(&mut con).await.expect("loading");
        }
    }

    async fn raw(&self, shard: i32, db: i64) -> MultiplexedConnection {
        raw(&self.servers[shard as usize], db).await
    }

    fn endpoint(&self, shard: i32) -> Endpoint {
        endpoint(&self.servers[shard as usize])
    }

    /// A connection of the engine to database `db` of `shard`.
    async fn conn(&self, shard: i32, db: i64) -> Conn {
        data::connect(&self.endpoint(shard), db, TIMEOUT)
            .await
            .expect("the engine connects")
    }

    async fn targets(&self) -> BTreeMap<i32, Conn> {
        BTreeMap::from([(2, self.conn(2, 0).await)])
    }

    /// Whether `key` changes owner between the rings.
    fn moving(&self, key: &[u8]) -> bool {
        self.ring2.owner_of_key(key) != self.ring3.owner_of_key(key)
    }

    /// The loaded keys that move, by source shard.
    fn moving_keys(&self) -> BTreeMap<i32, Vec<Vec<u8>>> {
        let mut out: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
        for (key, owner) in &self.keys {
            if self.moving(key) {
                out.entry(*owner).or_default().push(key.clone());
            }
        }
        out
    }

    /// Runs `backfill_batch` for `source` from `cursor` to the end; the sum.
    async fn backfill(&self, source: i32, cursor: u64, count: usize) -> BatchOutcome {
        let plan = SourcePlan::new(source, &self.moves);
        let mut src = self.conn(source, 0).await;
        let mut targets = self.targets().await;
        let mut total = BatchOutcome::default();
        let mut cursor = cursor;
        loop {
            let o = data::backfill_batch(&mut src, &mut targets, &plan, cursor, count)
                .await
                .expect("backfill batch");
            add(&mut total, &o);
            cursor = o.next_cursor;
            if cursor == 0 {
                return total;
            }
        }
    }

    /// Asserts that the target holds exactly the moving keys of both sources, each
    /// equal to its source's (value, type, TTL within tolerance), except `skip`.
    async fn assert_target_exact(&self, skip: &[Vec<u8>]) {
        let moving = self.moving_keys();
        let expected: usize = moving.values().map(Vec::len).sum();
        let mut target = self.raw(2, 0).await;
        assert_eq!(
            dbsize(&mut target).await,
            expected,
            "the target holds exactly the moving keys"
        );
        for (&source, keys) in &moving {
            let keys: Vec<Vec<u8>> = keys.iter().filter(|k| !skip.contains(k)).cloned().collect();
            let mut src = self.raw(source, 0).await;
            assert_same(&mut src, &mut target, &keys).await;
        }
    }

    /// Applies every dirty key of both sources until the sets are empty.
    async fn drain_all(&self) {
        for source in [0, 1] {
            let plan = SourcePlan::new(source, &self.moves);
            let mut src = self.conn(source, 0).await;
            let mut db1 = self.conn(source, DIRTY_DB).await;
            let mut targets = self.targets().await;
            loop {
                let o = data::drain_dirty(&mut src, &mut db1, &mut targets, &plan, MIGRATION, 500)
                    .await
                    .expect("drain");
                if o.remaining == 0 {
                    break;
                }
            }
        }
    }

    async fn verify(&self, source: i32, mode: VerificationMode, strict: bool) -> VerifyOutcome {
        self.verify_with(source, self.targets().await, mode, strict)
            .await
            .expect("verify runs")
    }

    async fn verify_with(
        &self,
        source: i32,
        mut targets: BTreeMap<i32, Conn>,
        mode: VerificationMode,
        strict: bool,
    ) -> Result<VerifyOutcome, MigrateError> {
        let plan = SourcePlan::new(source, &self.moves);
        let mut src = self.conn(source, 0).await;
        let mut db1 = self.conn(source, DIRTY_DB).await;
        let options = VerifyOptions {
            mode,
            sample_size: 500,
            batch: 400,
            strict,
        };
        data::verify(&mut src, &mut db1, &mut targets, &plan, MIGRATION, &options).await
    }

    /// Runs `delete_batch` on `side`'s shard from cursor 0 to the end (`COUNT 700`);
    /// the keys deleted.
    async fn delete_all(&self, side: Side) -> u64 {
        let mut conn = self.conn(side.shard(), 0).await;
        let (mut cursor, mut deleted) = (0, 0);
        loop {
            let o = data::delete_batch(&mut conn, &self.moves, side, cursor, 700)
                .await
                .unwrap();
            deleted += o.deleted;
            cursor = o.next_cursor;
            if cursor == 0 {
                return deleted;
            }
        }
    }

    /// Creates ACL user `user` with `password` on the target (shard 2), allowed
    /// everything but `RESTORE`; its endpoint.
    async fn target_user_without_restore(&self, user: &str, password: &str) -> Endpoint {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(format!(">{password}"))
            .arg(&["~*", "&*", "+@all", "-restore"])
            .query_async(&mut self.raw(2, 0).await)
            .await
            .unwrap();
        Endpoint {
            username: user.into(),
            password: password.into(),
            ..self.endpoint(2)
        }
    }

    /// A loaded key of `source` that moves, without TTL, of the type written for index
    /// `i % 5`.
    fn moving_key_of_kind(&self, source: i32, kind: usize) -> Vec<u8> {
        (0..KEYS)
            .find(|&i| {
                i % 5 == kind
                    && !i.is_multiple_of(7)
                    && self.keys[i].1 == source
                    && self.moving(&self.keys[i].0)
            })
            .map(|i| self.keys[i].0.clone())
            .expect("a moving key of that kind")
    }
}

/// Key `i`: mostly `k:<i>`, every 13th with a hash tag, every 17th with binary bytes.
fn key_name(i: usize) -> Vec<u8> {
    if i.is_multiple_of(13) {
        format!("{{user:{}}}:profile:{i}", i / 26).into_bytes()
    } else if i.is_multiple_of(17) {
        let mut key = b"bin:\xff\x00".to_vec();
        key.extend_from_slice(i.to_string().as_bytes());
        key
    } else {
        format!("k:{i}").into_bytes()
    }
}

/// Writes value `i` of key `key`: a string, hash, list, set or zset by `i % 5`; every
/// 997th hash and every 1000th set are big (hash-table encoded); every 7th key has a
/// TTL of several minutes.
fn add_value(pipe: &mut redis::Pipeline, key: &[u8], i: usize) {
    match i % 5 {
        0 => pipe
            .cmd("SET")
            .arg(key)
            .arg(format!("value-{i}-{}", "x".repeat(i % 50))),
        1 => {
            let fields = if i % 997 == 1 { 200 } else { 3 };
            let mut cmd = redis::cmd("HSET");
            cmd.arg(key);
            for f in 0..fields {
                cmd.arg(format!("f{f}")).arg(format!("{i}-{f}"));
            }
            pipe.add_command(cmd)
        }
        2 => pipe.cmd("RPUSH").arg(key).arg(i).arg("b").arg(i * 2),
        3 => {
            let members = if i % 1000 == 3 { 300 } else { 4 };
            let mut cmd = redis::cmd("SADD");
            cmd.arg(key);
            for m in 0..members {
                cmd.arg(format!("m{m}-{i}"));
            }
            pipe.add_command(cmd)
        }
        _ => pipe
            .cmd("ZADD")
            .arg(key)
            .arg(1.5)
            .arg("a")
            .arg(i as f64)
            .arg("b"),
    };
    if i.is_multiple_of(7) {
        pipe.cmd("PEXPIRE").arg(key).arg(300_000 + i as u64);
    }
    pipe.ignore();
}

fn add(total: &mut BatchOutcome, o: &BatchOutcome) {
    total.next_cursor = o.next_cursor;
    total.scanned += o.scanned;
    total.copied += o.copied;
    total.skipped_existing += o.skipped_existing;
    total.vanished += o.vanished;
    total.bytes += o.bytes;
    for (t, n) in &o.copied_per_target {
        *total.copied_per_target.entry(*t).or_default() += n;
    }
}

// ---------------------------------------------------------------- independent checks

/// A key's type, content (normalised: sets and hashes sorted) and `PTTL`.
#[derive(Debug, PartialEq)]
struct Observed {
    kind: String,
    content: Vec<Vec<u8>>,
    pttl: i64,
}

/// Reads `keys` with plain commands (not the engine's).
async fn observe(con: &mut MultiplexedConnection, keys: &[Vec<u8>]) -> Vec<Observed> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let mut meta = redis::pipe();
        for key in chunk {
            meta.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
        }
        let meta: Vec<Value> = meta.query_async(con).await.unwrap();
        let mut reads = redis::pipe();
        let mut kinds = Vec::new();
        for (key, pair) in chunk.iter().zip(meta.chunks(2)) {
            let kind: String = redis::from_redis_value(pair[0].clone()).unwrap();
            match kind.as_str() {
                "string" => reads.cmd("GET").arg(key),
                "hash" => reads.cmd("HGETALL").arg(key),
                "list" => reads.cmd("LRANGE").arg(key).arg(0).arg(-1),
                "set" => reads.cmd("SMEMBERS").arg(key),
                "zset" => reads
                    .cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
                _ => reads.cmd("EXISTS").arg(key),
            };
            let pttl: i64 = redis::from_redis_value(pair[1].clone()).unwrap();
            kinds.push((kind, pttl));
        }
        let values: Vec<Value> = reads.query_async(con).await.unwrap();
        for ((kind, pttl), value) in kinds.into_iter().zip(values) {
            let mut content: Vec<Vec<u8>> = match kind.as_str() {
                "none" => Vec::new(),
                "string" => vec![redis::from_redis_value(value).unwrap()],
                _ => redis::from_redis_value(value).unwrap(),
            };
            match kind.as_str() {
                "set" => content.sort(),
                "hash" => {
                    let mut pairs: Vec<Vec<u8>> = content
                        .chunks(2)
                        .map(|p| [p[0].clone(), p[1].clone()].concat())
                        .collect();
                    pairs.sort();
                    content = pairs;
                }
                _ => {}
            }
            out.push(Observed {
                kind,
                content,
                pttl,
            });
        }
    }
    out
}

/// Asserts that every key of `keys` is the same on both servers: type, value, and
/// TTL (both without, or both with remaining TTLs within the tolerance).
async fn assert_same(
    source: &mut MultiplexedConnection,
    target: &mut MultiplexedConnection,
    keys: &[Vec<u8>],
) {
    let a = observe(source, keys).await;
    let b = observe(target, keys).await;
    for ((key, a), b) in keys.iter().zip(a).zip(b) {
        let name = String::from_utf8_lossy(key);
        assert_eq!(
            (&a.kind, &a.content),
            (&b.kind, &b.content),
            "value of {name}"
        );
        if a.pttl < 0 || b.pttl < 0 {
            assert_eq!(a.pttl, b.pttl, "TTL of {name}");
        } else {
            assert!(
                (a.pttl - b.pttl).abs() < TTL_TOLERANCE_MS,
                "TTL of {name}: {} vs {}",
                a.pttl,
                b.pttl
            );
        }
    }
}

async fn dbsize(con: &mut MultiplexedConnection) -> usize {
    redis::cmd("DBSIZE").query_async(con).await.unwrap()
}

async fn all_keys(con: &mut MultiplexedConnection) -> BTreeSet<Vec<u8>> {
    redis::cmd("KEYS").arg("*").query_async(con).await.unwrap()
}

/// `SET key value`.
async fn set_string(con: &mut MultiplexedConnection, key: &[u8], value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(con)
        .await
        .unwrap();
}

/// Adds `keys` to the dirty set of [`MIGRATION`] (`db1`: database 1 of a source).
async fn mark_dirty(db1: &mut MultiplexedConnection, keys: &[&[u8]]) {
    let _: i64 = redis::cmd("SADD")
        .arg(ringmaster::api::routing::dirty_set_key(MIGRATION))
        .arg(keys)
        .query_async(db1)
        .await
        .unwrap();
}

// ---------------------------------------------------------------- tests

/// (1) A backfill from cursor 0 to the end copies exactly the moving keys, values and
/// TTLs kept; the counts per move agree on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_copies_exactly_the_moving_keys() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let moving = f.moving_keys();
    for source in [0, 1] {
        let plan = SourcePlan::new(source, &f.moves);
        for (key, owner) in &f.keys {
            if *owner == source {
                assert_eq!(
                    plan.target_of_key(key).is_some(),
                    f.moving(key),
                    "plan agrees with the rings"
                );
            }
        }
        let total = f.backfill(source, 0, 500).await;
        let expected = moving[&source].len() as u64;
        assert_eq!(total.copied, expected, "source {source}: {total:?}");
        assert_eq!(total.copied_per_target, BTreeMap::from([(2, expected)]));
        assert_eq!(total.vanished, 0);
        assert!(total.bytes > 0);
        assert!(total.scanned >= f.keys.iter().filter(|(_, o)| *o == source).count() as u64);
    }
    f.assert_target_exact(&[]).await;

    for source in [0, 1] {
        let mut src = f.conn(source, 0).await;
        let on_source = data::count_in_moves(&mut src, &f.moves, Side::Source(source), 300)
            .await
            .unwrap();
        assert_eq!(
            on_source,
            BTreeMap::from([((source, 2), moving[&source].len() as u64)])
        );
    }
    let mut tgt = f.conn(2, 0).await;
    let on_target = data::count_in_moves(&mut tgt, &f.moves, Side::Target(2), 300)
        .await
        .unwrap();
    assert_eq!(
        on_target,
        BTreeMap::from([
            ((0, 2), moving[&0].len() as u64),
            ((1, 2), moving[&1].len() as u64)
        ])
    );
    for source in [0, 1] {
        let outcome = f.verify(source, VerificationMode::Full, true).await;
        assert!(outcome.passed, "{}", outcome.message);
        assert_eq!(outcome.checked, moving[&source].len() as u64);
        assert_eq!(
            (outcome.mismatches, outcome.recopied),
            (0, 0),
            "{}",
            outcome.message
        );
        let sampled = f.verify(source, VerificationMode::Sample, true).await;
        assert!(sampled.passed, "{}", sampled.message);
        assert!(
            (100..=2_000).contains(&sampled.checked),
            "about 500 keys sampled: {}",
            sampled.message
        );
    }
}

/// (2) A backfill interrupted after some batches and resumed from the checkpointed
/// cursor (re-running the batch that was not checkpointed) ends the same, and never
/// overwrites a key the target already has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_backfill_is_idempotent_and_keeps_newer_keys() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let moving = f.moving_keys();
    let newer = f.moving_key_of_kind(0, 0);
    let mut tgt = f.raw(2, 0).await;
    set_string(&mut tgt, &newer, "dual-written, newer").await;

    let plan = SourcePlan::new(0, &f.moves);
    let mut src = f.conn(0, 0).await;
    let mut targets = f.targets().await;
    let mut total = BatchOutcome::default();
    let mut checkpoint = 0;
    for _ in 0..3 {
        let o = data::backfill_batch(&mut src, &mut targets, &plan, checkpoint, 500)
            .await
            .unwrap();
        add(&mut total, &o);
        checkpoint = o.next_cursor;
    }
    assert_ne!(checkpoint, 0, "3 batches of 500 do not finish 10,000 keys");
    // A batch whose checkpoint was lost (crash) runs again from the same cursor.
    let lost = data::backfill_batch(&mut src, &mut targets, &plan, checkpoint, 500)
        .await
        .unwrap();
    let again = data::backfill_batch(&mut src, &mut targets, &plan, checkpoint, 500)
        .await
        .unwrap();
    assert_eq!(again.next_cursor, lost.next_cursor);
    assert_eq!(again.copied, 0, "nothing is copied twice");
    assert_eq!(again.skipped_existing, lost.copied + lost.skipped_existing);
    add(&mut total, &lost);
    let rest = f.backfill(0, lost.next_cursor, 500).await;
    add(&mut total, &rest);
    assert_eq!(total.copied, moving[&0].len() as u64 - 1, "{total:?}");
    assert_eq!(total.skipped_existing, 1, "the newer key is skipped");
    f.backfill(1, 0, 500).await;

    let value: String = redis::cmd("GET")
        .arg(&newer)
        .query_async(&mut tgt)
        .await
        .unwrap();
    assert_eq!(value, "dual-written, newer", "backfill never overwrites");
    f.assert_target_exact(std::slice::from_ref(&newer)).await;

    // A whole second pass changes nothing.
    let second = f.backfill(0, 0, 500).await;
    assert_eq!(second.copied, 0);
    assert_eq!(second.skipped_existing, moving[&0].len() as u64);
}

/// The router's dual write of one command (`docs/migration.md`): source, then the
/// target, then the dirty set on the source's database 1.
struct Router {
    sources: BTreeMap<i32, (MultiplexedConnection, MultiplexedConnection)>,
    target: MultiplexedConnection,
    ring2: Ring,
    moves: Vec<RangeMove>,
}

impl Router {
    async fn run(&mut self, cmd: &redis::Cmd, key: &[u8]) {
        let owner = self.ring2.owner_of_key(key).unwrap();
        let moving = SourcePlan::new(owner, &self.moves)
            .target_of_key(key)
            .is_some();
        let (src, dirty) = self.sources.get_mut(&owner).unwrap();
        let _: Value = cmd.query_async(src).await.unwrap();
        if moving {
            let _: Value = cmd.query_async(&mut self.target).await.unwrap();
            mark_dirty(dirty, &[key]).await;
        }
    }
}

/// (3) Backfill and dirty drains under a concurrent dual-writing client (SET, INCR,
/// DEL, HSET), then a freeze and a drain to empty: the strict verification passes
/// and every key of the moves is equal on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_writes_during_backfill_are_repaired_by_the_drain() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    // Counters the writer increments: "10" on their ring-2 owner.
    let counters: Vec<Vec<u8>> = (0..2_000).map(|i| format!("w:{i}").into_bytes()).collect();
    let mut owners = BTreeMap::new();
    for s in [0, 1] {
        owners.insert(s, f.raw(s, 0).await);
    }
    for key in &counters {
        let owner = f.ring2.owner_of_key(key).unwrap();
        set_string(owners.get_mut(&owner).unwrap(), key, "10").await;
    }
    let mut router = Router {
        sources: BTreeMap::new(),
        target: f.raw(2, 0).await,
        ring2: f.ring2.clone(),
        moves: f.moves.clone(),
    };
    for s in [0, 1] {
        router
            .sources
            .insert(s, (f.raw(s, 0).await, f.raw(s, 1).await));
    }
    let frozen = Arc::new(AtomicBool::new(false));
    let stop = frozen.clone();
    let data_keys: Vec<Vec<u8>> = f.keys.iter().map(|(k, _)| k.clone()).collect();
    let writer = tokio::spawn(async move {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut writes = 0u64;
        while !stop.load(Ordering::Relaxed) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let counter = &counters[(rng % counters.len() as u64) as usize];
            let key = &data_keys[((rng >> 20) % data_keys.len() as u64) as usize];
            let cmd = match (rng >> 40) % 10 {
                0..=4 => redis::cmd("INCR").arg(counter).clone(),
                5 => redis::cmd("SET").arg(counter).arg(rng % 1000).clone(),
                6 => redis::cmd("DEL").arg(counter).clone(),
                7 => redis::cmd("DEL").arg(key).clone(),
                _ => redis::cmd("SET")
                    .arg(key)
                    .arg(format!("overwritten-{rng}"))
                    .clone(),
            };
            let written = if (rng >> 40) % 10 >= 7 { key } else { counter };
            router.run(&cmd, written).await;
            writes += 1;
        }
        writes
    });

    // The saga's Backfill: a batch, then a drain of up to a batch of dirty keys.
    let (mut skipped, mut redone) = (0, 0);
    for source in [0, 1] {
        let plan = SourcePlan::new(source, &f.moves);
        let mut src = f.conn(source, 0).await;
        let mut db1 = f.conn(source, DIRTY_DB).await;
        let mut targets = f.targets().await;
        let mut cursor = 0;
        loop {
            let o = data::backfill_batch(&mut src, &mut targets, &plan, cursor, 200)
                .await
                .unwrap();
            skipped += o.skipped_existing;
            let d = data::drain_dirty(&mut src, &mut db1, &mut targets, &plan, MIGRATION, 200)
                .await
                .unwrap();
            redone += d.copied + d.deleted;
            cursor = o.next_cursor;
            if cursor == 0 {
                break;
            }
        }
    }
    // The non-strict verification while writes still flow.
    for source in [0, 1] {
        let o = f.verify(source, VerificationMode::Sample, false).await;
        eprintln!("verify while writing: {}", o.message);
    }
    frozen.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("the writer ends");
    eprintln!(
        "{writes} dual writes; backfill skipped {skipped} keys already on the target; drains re-copied {redone}"
    );
    assert!(writes > 100, "the writer wrote during the backfill");
    assert!(
        skipped > 0,
        "some keys were dual-written before their backfill"
    );
    assert!(redone > 0, "drains ran while writing");

    f.drain_all().await;
    // The drains alone make the target exact (the router marks a key after its target
    // write), so the strict Full verification finds nothing to re-copy.
    for source in [0, 1] {
        let o = f.verify(source, VerificationMode::Full, true).await;
        eprintln!("strict verify after the freeze: {}", o.message);
        assert!(o.passed, "{}", o.message);
        assert_eq!(o.mismatches, 0, "{}", o.message);
        assert_eq!(o.recopied, 0, "the drain left keys wrong: {}", o.message);
    }
    // Independently: every key in a moving range is equal on the target, and the
    // target has nothing else.
    let mut tgt = f.raw(2, 0).await;
    let mut expected = 0;
    for source in [0, 1] {
        let mut src = f.raw(source, 0).await;
        let keys: Vec<Vec<u8>> = all_keys(&mut src)
            .await
            .into_iter()
            .filter(|k| f.moving(k))
            .collect();
        expected += keys.len();
        assert_same(&mut src, &mut tgt, &keys).await;
    }
    assert_eq!(dbsize(&mut tgt).await, expected);
}

/// (4) Verification repairs a corrupted or missing copy (not dirty) by re-copying it;
/// skips a dirty key when not strict; tolerates count differences up to the dirty
/// set's size only when not strict; and fails on a mismatch it cannot repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_repairs_skips_in_flux_and_reports_persistent_mismatches() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    f.backfill(0, 0, 1000).await;
    f.backfill(1, 0, 1000).await;
    let mut tgt = f.raw(2, 0).await;

    // Equal values with different histories dump differently (a hash-table set's
    // order depends on the server's seed and insertions): they are equal.
    let set = f.moving_key_of_kind(0, 3);
    let mut src = f.raw(0, 0).await;
    let mut members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
        .arg(&set)
        .query_async(&mut src)
        .await
        .unwrap();
    members.reverse();
    members.extend((0..200).map(|i| format!("extra-{i}").into_bytes()));
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(&set)
        .ignore()
        .cmd("SADD")
        .arg(&set)
        .arg(&members)
        .ignore()
        .cmd("SREM")
        .arg(&set)
        .arg(&members[members.len() - 200..])
        .ignore()
        .query_async(&mut tgt)
        .await
        .unwrap();
    let dump = |con: &mut MultiplexedConnection| {
        let mut con = con.clone();
        let set = set.clone();
        async move {
            redis::cmd("DUMP")
                .arg(&set)
                .query_async::<Vec<u8>>(&mut con)
                .await
                .unwrap()
        }
    };
    assert_ne!(
        dump(&mut src).await,
        dump(&mut tgt).await,
        "payloads differ"
    );
    let o = f.verify(0, VerificationMode::Full, true).await;
    assert!(o.passed, "{}", o.message);
    assert_eq!((o.recopied, o.mismatches), (0, 0), "{}", o.message);

    // Corrupted (a big hash), missing, TTL-less and extra copies are repaired.
    let extra = (0..)
        .map(|i| format!("extra:{i}").into_bytes())
        .find(|k| f.ring2.owner_of_key(k) == Some(0) && f.moving(k))
        .unwrap();
    set_string(&mut tgt, &extra, "only on the target").await;
    let hash = f.moving_key_of_kind(0, 1);
    let string = f.moving_key_of_kind(0, 0);
    let list = f.moving_key_of_kind(0, 2);
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&hash)
        .arg("f1")
        .arg("corrupt")
        .ignore()
        .cmd("DEL")
        .arg(&string)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&list)
        .arg(900_000)
        .ignore()
        .query_async(&mut tgt)
        .await
        .unwrap();
    let o = f.verify(0, VerificationMode::Full, true).await;
    assert!(o.passed, "{}", o.message);
    assert_eq!((o.recopied, o.mismatches), (4, 0), "{}", o.message);
    f.assert_target_exact(&[]).await;

    // A differing key in the dirty set is in flux: skipped (not repaired) when not
    // strict, and the count difference it causes is tolerated.
    mark_dirty(&mut f.raw(0, 1).await, &[&string]).await;
    let _: () = redis::cmd("DEL")
        .arg(&string)
        .query_async(&mut tgt)
        .await
        .unwrap();
    let o = f.verify(0, VerificationMode::Full, false).await;
    assert!(o.passed, "{}", o.message);
    assert_eq!((o.in_flux, o.recopied, o.dirty), (1, 0, 1), "{}", o.message);
    assert!(o.message.contains("tolerated"), "{}", o.message);
    let counted = f.verify(0, VerificationMode::Counts, false).await;
    assert!(counted.passed, "{}", counted.message);
    assert_eq!(counted.checked, 0);
    let strict_counts = f.verify(0, VerificationMode::Counts, true).await;
    assert!(!strict_counts.passed, "{}", strict_counts.message);
    assert!(
        strict_counts.message.contains("counts differ by 1"),
        "{}",
        strict_counts.message
    );
    // Strict, the dirty key is compared and repaired like any other.
    let o = f.verify(0, VerificationMode::Full, true).await;
    assert!(o.passed, "{}", o.message);
    assert_eq!(o.recopied, 1, "{}", o.message);
    f.drain_all().await;

    // A mismatch that cannot be repaired (the target refuses RESTORE to this user).
    let verifier = f
        .target_user_without_restore("verifier", "verifier-pw")
        .await;
    set_string(&mut tgt, &string, "corrupt").await;
    let targets = BTreeMap::from([(2, data::connect(&verifier, 0, TIMEOUT).await.unwrap())]);
    let o = f
        .verify_with(0, targets, VerificationMode::Full, true)
        .await
        .unwrap();
    assert!(!o.passed, "{}", o.message);
    assert_eq!(o.mismatches, 1, "{}", o.message);
    let name = String::from_utf8_lossy(&string).into_owned();
    assert!(
        o.message.contains(&name) && o.message.contains("NOPERM"),
        "{}",
        o.message
    );
    assert!(!o.message.contains("verifier-pw") && !o.message.contains(PASSWORD));
}

/// A drain whose target write fails puts the popped keys back: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_drain_puts_the_dirty_keys_back() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let keys: Vec<Vec<u8>> = f.moving_keys()[&0][..50].to_vec();
    let mut db1 = f.raw(0, 1).await;
    let dirty_set = ringmaster::api::routing::dirty_set_key(MIGRATION);
    let mut dirty_keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    dirty_keys.push(b"not-moving-but-dirty");
    mark_dirty(&mut db1, &dirty_keys).await;
    let mut tgt = f.raw(2, 0).await;
    let endpoint = f.target_user_without_restore("norestore", "nr-pw").await;
    let plan = SourcePlan::new(0, &f.moves);
    let mut src = f.conn(0, 0).await;
    let mut dirty = f.conn(0, DIRTY_DB).await;
    let mut targets = BTreeMap::from([(2, data::connect(&endpoint, 0, TIMEOUT).await.unwrap())]);
    let err = data::drain_dirty(&mut src, &mut dirty, &mut targets, &plan, MIGRATION, 1000)
        .await
        .expect_err("RESTORE is refused");
    let text = err.to_string();
    assert!(
        text.contains("RESTORE") && text.contains("NOPERM"),
        "{text}"
    );
    assert!(!text.contains("nr-pw"), "{text}");
    let left: usize = redis::cmd("SCARD")
        .arg(&dirty_set)
        .query_async(&mut db1)
        .await
        .unwrap();
    assert_eq!(left, 51, "every popped key is back");

    // With a working target the drain copies the moving keys and ignores the other.
    let mut targets = f.targets().await;
    let o = data::drain_dirty(&mut src, &mut dirty, &mut targets, &plan, MIGRATION, 1000)
        .await
        .unwrap();
    assert_eq!(
        (o.popped, o.copied, o.ignored, o.remaining),
        (51, 50, 1, 0),
        "{o:?}"
    );
    assert_eq!(o.copied_per_target, BTreeMap::from([(2, 50)]));
    let mut src_raw = f.raw(0, 0).await;
    assert_same(&mut src_raw, &mut tgt, &keys).await;

    // Gone on the source → deleted on the target.
    let _: () = redis::cmd("DEL")
        .arg(&keys[0])
        .query_async(&mut src_raw)
        .await
        .unwrap();
    mark_dirty(&mut db1, &[&keys[0]]).await;
    let o = data::drain_dirty(&mut src, &mut dirty, &mut targets, &plan, MIGRATION, 1000)
        .await
        .unwrap();
    assert_eq!((o.copied, o.deleted, o.remaining), (0, 1, 0));
    let exists: bool = redis::cmd("EXISTS")
        .arg(&keys[0])
        .query_async(&mut tgt)
        .await
        .unwrap();
    assert!(!exists);

    data::delete_dirty_set(&mut dirty, MIGRATION).await.unwrap();
    assert_eq!(data::dirty_count(&mut dirty, MIGRATION).await.unwrap(), 0);
}

/// (5) Deleting after the switch removes exactly the moved keys from the sources; the
/// rollback's deletion removes exactly the copies from the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_batch_removes_exactly_the_moved_keys() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    f.backfill(0, 0, 1000).await;
    f.backfill(1, 0, 1000).await;
    let moving = f.moving_keys();
    // A key on the target outside every move (same owner on both rings) survives the
    // rollback's deletion.
    let stay = (0..)
        .map(|i| format!("stay:{i}").into_bytes())
        .find(|k| !f.moving(k))
        .unwrap();
    let mut tgt = f.raw(2, 0).await;
    set_string(&mut tgt, &stay, "mine").await;

    for source in [0, 1] {
        let deleted = f.delete_all(Side::Source(source)).await;
        assert_eq!(deleted, moving[&source].len() as u64);
        let mut raw = f.raw(source, 0).await;
        let left = all_keys(&mut raw).await;
        let expected: BTreeSet<Vec<u8>> = f
            .keys
            .iter()
            .filter(|(k, o)| *o == source && !f.moving(k))
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(
            left, expected,
            "source {source} keeps exactly its staying keys"
        );
    }

    let deleted = f.delete_all(Side::Target(2)).await;
    let copies: usize = moving.values().map(Vec::len).sum();
    assert_eq!(deleted, copies as u64);
    assert_eq!(all_keys(&mut tgt).await, BTreeSet::from([stay]));
}
