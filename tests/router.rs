//! `ringmaster router` end to end: real `redis-server` processes, the router binary
//! reading its routing table from a file, clients through the `redis` crate,
//! `redis-cli` and raw RESP. No Kubernetes.

#[path = "common/redis_servers.rs"]
mod redis_servers;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError, Value};
use ringmaster::api::routing::{
    RoutingMigration, RoutingPhase, RoutingReplica, RoutingTable, dirty_set_key,
};
use ringmaster::ring::{RangeMove, Ring, diff, key_hash};

use redis_servers::{PASSWORD, RedisServer, RouterProcess, ring, routing_table};

const BINARY: &str = env!("CARGO_BIN_EXE_ringmaster");
const MIGRATION: &str = "t-ring-2";

/// Three shards and a router over them.
struct Cluster {
    servers: Vec<RedisServer>,
    router: RouterProcess,
}

impl Cluster {
    /// Three servers, ring `members` (version 1), table version 1.
    fn start(members: &[i32], extra: &[&str]) -> Self {
        let servers: Vec<_> = (0..3).map(|_| RedisServer::start()).collect();
        let table = routing_table(1, &refs(&servers), 1, members, Vec::new());
        let router = RouterProcess::start(BINARY, &table, extra);
        Self { servers, router }
    }

    fn table(
        &self,
        version: i64,
        ring_version: i64,
        members: &[i32],
        migrations: Vec<RoutingMigration>,
    ) -> RoutingTable {
        routing_table(
            version,
            &refs(&self.servers),
            ring_version,
            members,
            migrations,
        )
    }

    /// A direct connection to shard `shard`, database `db`.
    fn shard(&self, shard: i32, db: i64) -> Connection {
        self.servers[shard as usize].connection(db)
    }

    fn get_on(&self, shard: i32, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.shard(shard, 0))
            .unwrap()
    }

    fn in_dirty_set(&self, shard: i32, key: &str) -> bool {
        redis::cmd("SISMEMBER")
            .arg(dirty_set_key(MIGRATION))
            .arg(key)
            .query(&mut self.shard(shard, 1))
            .unwrap()
    }
}

fn refs(servers: &[RedisServer]) -> Vec<&RedisServer> {
    servers.iter().collect()
}

/// The owner of `key` on the ring of `members` (the ring's version does not move keys).
fn owner(members: &[i32], key: &str) -> i32 {
    owner_on(&Ring::build(ring(1, members)), key)
}

fn owner_on(ring: &Ring, key: &str) -> i32 {
    ring.owner_of_key(key.as_bytes()).unwrap()
}

fn code(error: &RedisError) -> String {
    error.code().unwrap_or_default().to_owned()
}

/// The moves of a migration from ring {0, 1} to ring {0, 1, 2}.
fn moves_to_shard_2() -> Vec<RangeMove> {
    diff(
        &Ring::build(ring(1, &[0, 1])),
        &Ring::build(ring(2, &[0, 1, 2])),
    )
}

/// The `n`-th key (`prefix:<i>`) whose hash is in one of `moves`, with its move.
fn moving_key(moves: &[RangeMove], prefix: &str, n: usize) -> (String, RangeMove) {
    (0..100_000)
        .map(|i| format!("{prefix}:{i}"))
        .filter_map(|key| {
            let hash = key_hash(key.as_bytes());
            let mv = moves.iter().find(|m| m.range.contains(hash))?;
            Some((key, *mv))
        })
        .nth(n)
        .expect("a key in a moving range")
}

/// A key (`prefix:<i>`) in no move.
fn staying_key(moves: &[RangeMove], prefix: &str) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}:{i}"))
        .find(|key| {
            let hash = key_hash(key.as_bytes());
            !moves.iter().any(|m| m.range.contains(hash))
        })
        .expect("a key outside the moves")
}

fn migration(phase: RoutingPhase, moves: Vec<RangeMove>) -> Vec<RoutingMigration> {
    vec![RoutingMigration {
        name: MIGRATION.into(),
        phase,
        moves,
    }]
}

#[test]
fn keys_land_on_their_ring_owner() {
    let cluster = Cluster::start(&[0, 1, 2], &[]);
    let mut con = cluster.router.connection();
    let members = [0, 1, 2];
    let placement = Ring::build(ring(1, &members));
    let mut per_shard = [0; 3];
    for i in 0..1000 {
        let key = format!("key:{i}");
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut con).unwrap();
        let value: i64 = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert_eq!(value, i);
        per_shard[owner_on(&placement, &key) as usize] += 1;
    }
    for shard in 0..3 {
        let mut direct = cluster.shard(shard, 0);
        let size: usize = redis::cmd("DBSIZE").query(&mut direct).unwrap();
        assert_eq!(size, per_shard[shard as usize], "keys on shard {shard}");
        for i in 0..1000 {
            let key = format!("key:{i}");
            let value: Option<i64> = redis::cmd("GET").arg(&key).query(&mut direct).unwrap();
            let expected = (owner_on(&placement, &key) == shard).then_some(i);
            assert_eq!(value, expected, "{key} on shard {shard}");
        }
    }
    assert!(per_shard.iter().all(|&n| n > 200), "{per_shard:?}");

    // Hash tags keep keys together; MSET of them works.
    assert_eq!(owner_on(&placement, "{u1}a"), owner_on(&placement, "{u1}b"));
    let _: () = redis::cmd("MSET")
        .arg("{u1}a")
        .arg("1")
        .arg("{u1}b")
        .arg("2")
        .query(&mut con)
        .unwrap();
    let tagged = owner_on(&placement, "{u1}a");
    assert_eq!(cluster.get_on(tagged, "{u1}b").as_deref(), Some("2"));

    // Keys on different shards: CROSSSLOT.
    let a = "key:0".to_owned();
    let b = (1..1000)
        .map(|i| format!("key:{i}"))
        .find(|k| owner_on(&placement, k) != owner_on(&placement, &a))
        .unwrap();
    let error = redis::cmd("MSET")
        .arg(&a)
        .arg("x")
        .arg(&b)
        .arg("y")
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(code(&error), "CROSSSLOT", "{error}");
    let error = redis::cmd("MGET")
        .arg(&a)
        .arg(&b)
        .query::<Vec<Option<String>>>(&mut con)
        .unwrap_err();
    assert_eq!(code(&error), "CROSSSLOT", "{error}");
}

#[test]
fn pipelines_and_transactions() {
    let cluster = Cluster::start(&[0, 1, 2], &[]);
    let mut con = cluster.router.connection();

    // 2000 mixed commands over every shard, answered in order.
    let mut pipe = redis::pipe();
    let mut expected = Vec::new();
    let mut counters = [0i64; 5];
    let mut lists = [0i64; 3];
    for i in 0..2000usize {
        match i % 4 {
            0 => {
                pipe.cmd("SET").arg(format!("p:{i}")).arg(format!("v{i}"));
                expected.push(Value::Okay);
            }
            1 => {
                pipe.cmd("GET").arg(format!("p:{}", i - 1));
                expected.push(Value::BulkString(format!("v{}", i - 1).into_bytes()));
            }
            2 => {
                pipe.cmd("INCR").arg(format!("ctr:{}", i % 5));
                counters[i % 5] += 1;
                expected.push(Value::Int(counters[i % 5]));
            }
            _ => {
                pipe.cmd("RPUSH").arg(format!("l:{}", i % 3)).arg(i);
                lists[i % 3] += 1;
                expected.push(Value::Int(lists[i % 3]));
            }
        }
    }
    let replies: Vec<Value> = pipe.query(&mut con).unwrap();
    assert_eq!(replies.len(), 2000);
    for (i, (reply, expected)) in replies.iter().zip(&expected).enumerate() {
        let reply = match reply {
            Value::SimpleString(s) if s == "OK" => &Value::Okay,
            other => other,
        };
        assert_eq!(reply, expected, "reply {i}");
    }

    // Concurrent clients sharing the shard connections keep their own order.
    let port = cluster.router.port;
    let clients: Vec<_> = (0..8)
        .map(|client| {
            std::thread::spawn(move || {
                let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}/");
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut pipe = redis::pipe();
                for _ in 0..500 {
                    pipe.cmd("INCR").arg(format!("c:{client}"));
                }
                let counts: Vec<i64> = pipe.query(&mut con).unwrap();
                assert_eq!(counts, (1..=500).collect::<Vec<_>>(), "client {client}");
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }

    // MULTI/EXEC on one shard.
    let (set, incremented, value): (String, i64, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("{tx}a")
        .arg(1)
        .cmd("INCRBY")
        .arg("{tx}a")
        .arg(5)
        .cmd("GET")
        .arg("{tx}a")
        .query(&mut con)
        .unwrap();
    assert_eq!((set.as_str(), incremented, value.as_str()), ("OK", 6, "6"));
    let shard = owner(&[0, 1, 2], "{tx}a");
    assert_eq!(cluster.get_on(shard, "{tx}a").as_deref(), Some("6"));

    // Across shards: the second key is refused when queued, EXEC aborts.
    let a = "{x}1";
    let b = ["{y}1", "{z}1", "{w}1", "{v}1"]
        .into_iter()
        .find(|k| owner(&[0, 1, 2], k) != owner(&[0, 1, 2], a))
        .unwrap();
    let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
    let queued: String = redis::cmd("SET").arg(a).arg(1).query(&mut con).unwrap();
    assert_eq!(queued, "QUEUED");
    let error = redis::cmd("SET")
        .arg(b)
        .arg(1)
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(code(&error), "CROSSSLOT", "{error}");
    let error = redis::cmd("EXEC").query::<Value>(&mut con).unwrap_err();
    assert_eq!(code(&error), "EXECABORT", "{error}");
    assert_eq!(cluster.get_on(owner(&[0, 1, 2], a), a), None);

    // WATCH is refused.
    let error = redis::cmd("WATCH")
        .arg(a)
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        error.to_string().contains("WATCH is not supported"),
        "{error}"
    );
}

#[test]
fn scatter_commands_merge_the_shards() {
    let cluster = Cluster::start(&[0, 1, 2], &[]);
    let mut con = cluster.router.connection();
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("SET").arg(format!("s:{i}")).arg(i).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();

    let mut union = HashSet::new();
    let mut total = 0;
    for shard in 0..3 {
        let mut direct = cluster.shard(shard, 0);
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut direct).unwrap();
        total += keys.len();
        union.extend(keys);
    }
    assert_eq!((total, union.len()), (300, 300));

    let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 300);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert_eq!(keys.len(), 300);
    assert_eq!(keys.into_iter().collect::<HashSet<_>>(), union);

    // SCAN: full iteration through the router's cursor, no duplicates.
    let mut scanned = Vec::new();
    let mut cursor = 0u64;
    let mut rounds = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(40)
            .query(&mut con)
            .unwrap();
        scanned.extend(keys);
        rounds += 1;
        assert!(rounds < 1000, "SCAN does not end");
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(scanned.len(), 300, "duplicates or missing keys");
    assert_eq!(scanned.into_iter().collect::<HashSet<_>>(), union);
    let (_, matched): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("nothing:*")
        .query(&mut con)
        .unwrap();
    assert!(matched.is_empty());
    let error = redis::cmd("SCAN")
        .arg(1023)
        .query::<Value>(&mut con)
        .unwrap_err();
    assert!(error.to_string().contains("invalid cursor"), "{error}");

    // INFO keyspace: one section per shard and the merged keyspace.
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    for shard in 0..3 {
        assert!(
            info.contains(&format!("# Shard {shard} (t-{shard})")),
            "{info}"
        );
    }
    assert!(
        info.trim_end()
            .ends_with("# Keyspace\r\ndb0:keys=300,expires=0,avg_ttl=0"),
        "{info}"
    );

    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let error = redis::cmd("FLUSHDB").query::<()>(&mut con).unwrap_err();
    assert!(error.to_string().contains("--allow-flush"), "{error}");
    let error = redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("unsupported command 'flushall' in ringmaster router"),
        "{error}"
    );
}

/// Sends raw RESP and reads one reply line (enough for simple replies and errors).
fn raw(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap().trim_end().to_owned()
}

#[test]
fn authentication_is_required() {
    let cluster = Cluster::start(&[0, 1, 2], &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.router.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        raw(&mut stream, "GET k\r\n"),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        raw(&mut stream, "*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n"),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        raw(&mut stream, "PING\r\n"),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        raw(&mut stream, "HELLO 3\r\n"),
        "-NOPROTO unsupported protocol version"
    );
    assert_eq!(
        raw(&mut stream, &format!("AUTH other {PASSWORD}\r\n")),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        raw(&mut stream, &format!("AUTH default {PASSWORD}\r\n")),
        "+OK"
    );
    assert_eq!(raw(&mut stream, "SET k v\r\n"), "+OK");
    assert_eq!(raw(&mut stream, "SELECT 0\r\n"), "+OK");
    assert!(raw(&mut stream, "SELECT 1\r\n").starts_with("-ERR DB index is out of range"));
    assert_eq!(raw(&mut stream, "RESET\r\n"), "+RESET");
    assert_eq!(
        raw(&mut stream, "GET k\r\n"),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        raw(&mut stream, &format!("HELLO 2 AUTH default {PASSWORD}\r\n")),
        "*14"
    );

    // The redis crate with a wrong password, and without one.
    let url = format!("redis://:wrong@127.0.0.1:{}/", cluster.router.port);
    let Err(error) = redis::Client::open(url).unwrap().get_connection() else {
        panic!("a wrong password was accepted");
    };
    assert!(
        error.to_string().contains("authentication failed"),
        "{error}"
    );
    let url = format!("redis://127.0.0.1:{}/", cluster.router.port);
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let error = redis::cmd("GET")
        .arg("k")
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(code(&error), "NOAUTH", "{error}");
    assert!(
        !cluster.router.log().contains(PASSWORD),
        "the password was logged"
    );
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("/usr/bin/redis-cli")
        .args(["-p", &port.to_string(), "-a", PASSWORD, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("running redis-cli");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

#[test]
fn redis_cli_works_through_the_router() {
    let cluster = Cluster::start(&[0, 1, 2], &[]);
    let port = cluster.router.port;
    assert_eq!(redis_cli(port, &["PING"]), "PONG");
    assert_eq!(redis_cli(port, &["SET", "cli:a", "hello"]), "OK");
    assert_eq!(redis_cli(port, &["GET", "cli:a"]), "hello");
    for i in 0..50 {
        redis_cli(port, &["SET", &format!("cli:{i}"), "x"]);
    }
    assert_eq!(redis_cli(port, &["DBSIZE"]), "51");
    let scanned: HashSet<String> = redis_cli(port, &["--scan", "--pattern", "cli:*"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(scanned.len(), 51, "{scanned:?}");
    assert_eq!(redis_cli(port, &["COMMAND", "DOCS"]), "");
    assert!(redis_cli(port, &["BLPOP", "q", "0"]).contains("unsupported command 'blpop'"));
}

#[test]
fn dual_write_then_switch_reads() {
    let cluster = Cluster::start(&[0, 1], &[]);
    let mut con = cluster.router.connection();
    let moves = moves_to_shard_2();
    assert!(moves.iter().all(|m| m.target == 2), "{moves:?}");
    let (key, mv) = moving_key(&moves, "mk", 0);
    let (failing, failing_move) = moving_key(&moves, "mk", 1);
    let (tx_key, tx_move) = moving_key(&moves, "mk", 2);
    let staying = staying_key(&moves, "st");

    cluster.router.apply_table(&cluster.table(
        2,
        1,
        &[0, 1],
        migration(RoutingPhase::DualWrite, moves.clone()),
    ));
    let status = cluster.router.status();
    assert_eq!(
        status["migrations"],
        serde_json::json!([MIGRATION]),
        "{status}"
    );
    assert_eq!(status["ringVersion"], 1, "{status}");

    // A write lands on source and target, the key is dirty on the source.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v1")
        .query(&mut con)
        .unwrap();
    assert_eq!(cluster.get_on(mv.source, &key).as_deref(), Some("v1"));
    assert_eq!(cluster.get_on(mv.target, &key).as_deref(), Some("v1"));
    assert!(cluster.in_dirty_set(mv.source, &key));
    // Reads come from the source.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("target-only")
        .query(&mut cluster.shard(mv.target, 0))
        .unwrap();
    let read: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(read, "v1");

    // Outside the moves nothing changes.
    let _: () = redis::cmd("SET")
        .arg(&staying)
        .arg("s")
        .query(&mut con)
        .unwrap();
    let staying_owner = owner(&[0, 1], &staying);
    assert_eq!(
        cluster.get_on(staying_owner, &staying).as_deref(),
        Some("s")
    );
    assert_eq!(cluster.get_on(2, &staying), None);
    assert!(!cluster.in_dirty_set(staying_owner, &staying));

    // A write failing on the source goes nowhere else.
    let _: () = redis::cmd("LPUSH")
        .arg(&failing)
        .arg("x")
        .query(&mut cluster.shard(failing_move.source, 0))
        .unwrap();
    let error = redis::cmd("INCR")
        .arg(&failing)
        .query::<Value>(&mut con)
        .unwrap_err();
    assert_eq!(code(&error), "WRONGTYPE", "{error}");
    assert_eq!(cluster.get_on(failing_move.target, &failing), None);
    assert!(!cluster.in_dirty_set(failing_move.source, &failing));

    // A transaction in a moving range runs on the source only, then marks its keys.
    let (_, value): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&tx_key)
        .arg(1)
        .cmd("INCR")
        .arg(&tx_key)
        .query(&mut con)
        .unwrap();
    assert_eq!(value, 2);
    assert_eq!(
        cluster.get_on(tx_move.source, &tx_key).as_deref(),
        Some("2")
    );
    assert_eq!(cluster.get_on(tx_move.target, &tx_key), None);
    assert!(cluster.in_dirty_set(tx_move.source, &tx_key));

    // switchReads: reads from the target, writes still dual.
    cluster.router.apply_table(&cluster.table(
        3,
        1,
        &[0, 1],
        migration(RoutingPhase::SwitchReads, moves),
    ));
    let read: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(read, "target-only");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v2")
        .query(&mut con)
        .unwrap();
    assert_eq!(cluster.get_on(mv.source, &key).as_deref(), Some("v2"));
    assert_eq!(cluster.get_on(mv.target, &key).as_deref(), Some("v2"));
    // KEYS lists the key once, from the shard that serves its reads.
    let keys: Vec<String> = redis::cmd("KEYS").arg("mk:*").query(&mut con).unwrap();
    assert_eq!(keys.iter().filter(|k| **k == key).count(), 1, "{keys:?}");
}

/// Three shards with ring {0, 1} and a frozen migration to shard 2 (version 2).
fn frozen_cluster(extra: &[&str]) -> (Cluster, String, RangeMove) {
    let cluster = Cluster::start(&[0, 1], extra);
    let moves = moves_to_shard_2();
    let (key, mv) = moving_key(&moves, "fz", 0);
    cluster.router.apply_table(&cluster.table(
        2,
        1,
        &[0, 1],
        migration(RoutingPhase::Frozen, moves),
    ));
    (cluster, key, mv)
}

#[test]
fn frozen_writes_wait_for_the_next_version() {
    let (cluster, key, mv) = frozen_cluster(&[]);
    let mut con = cluster.router.connection();
    // Reads come from the target at once.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("copied")
        .query(&mut cluster.shard(mv.target, 0))
        .unwrap();
    let read: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(read, "copied");

    let writer = {
        let key = key.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let result: redis::RedisResult<()> =
                redis::cmd("SET").arg(&key).arg("after").query(&mut con);
            (result, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(600));
    assert!(!writer.is_finished(), "the write was not held");
    // The migration completes: the new ring, no migration.
    cluster
        .router
        .apply_table(&cluster.table(3, 2, &[0, 1, 2], Vec::new()));
    let (result, elapsed) = writer.join().unwrap();
    result.unwrap();
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert_eq!(owner(&[0, 1, 2], &key), mv.target);
    assert_eq!(cluster.get_on(mv.target, &key).as_deref(), Some("after"));
    assert_eq!(cluster.router.status()["appliedVersion"], 3);
}

#[test]
fn frozen_writes_fail_with_tryagain_after_the_hold_timeout() {
    let (cluster, key, mv) = frozen_cluster(&["--hold-timeout", "1s"]);
    let mut con = cluster.router.connection();
    let started = Instant::now();
    let error = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query::<()>(&mut con)
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(code(&error), "TRYAGAIN", "{error}");
    assert!(
        error.to_string().contains("hash range is switching shards"),
        "{error}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_eq!(cluster.get_on(mv.source, &key), None);
    assert_eq!(cluster.get_on(mv.target, &key), None);
    // The connection is still usable and the hold is counted.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let (_, metrics) = cluster.router.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("ringmaster_router_held_writes_total 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("ringmaster_router_commands_total{command=\"set\",outcome=\"tryagain\"} 1"),
        "{metrics}"
    );
}

#[test]
fn reads_use_the_first_replica_and_fall_back_to_the_primary() {
    // Every key on shard 0; its "replica" is an independent server, so the test can
    // tell which side answered.
    let cluster = Cluster::start(&[0], &[]);
    let replica = RedisServer::start();
    let mut table = cluster.table(2, 1, &[0], Vec::new());
    table.shards[0].replicas = vec![RoutingReplica {
        name: "t-0-1".into(),
        address: replica.addr(),
    }];
    cluster.router.apply_table(&table);
    let set = |con: &mut Connection, value: &str| {
        let _: () = redis::cmd("SET").arg("rk").arg(value).query(con).unwrap();
    };
    set(&mut cluster.shard(0, 0), "primary");
    set(&mut replica.connection(0), "replica");
    let mut con = cluster.router.connection();
    let read: String = redis::cmd("GET").arg("rk").query(&mut con).unwrap();
    assert_eq!(read, "replica");
    // Writes go to the primary only.
    set(&mut con, "written");
    assert_eq!(cluster.get_on(0, "rk").as_deref(), Some("written"));
    let on_replica: String = redis::cmd("GET")
        .arg("rk")
        .query(&mut replica.connection(0))
        .unwrap();
    assert_eq!(on_replica, "replica");
    // The replica goes away: reads fall back to the primary.
    drop(replica);
    let read: String = redis::cmd("GET").arg("rk").query(&mut con).unwrap();
    assert_eq!(read, "written");
}
