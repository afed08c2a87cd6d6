//! Real `redis-server` processes and a `ringmaster router` process over them, for the
//! router's integration tests and benchmark. Everything started is stopped on drop.

#![allow(dead_code)]

#[path = "agent_host.rs"]
mod agent_host;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ringmaster::api::Engine;
use ringmaster::api::routing::{RoutingMigration, RoutingShard, RoutingTable};
use ringmaster::ring::{RingDescriptor, RingMember};

/// Password of the servers and the router in tests.
pub const PASSWORD: &str = "router-test-pw";

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A loopback port that was free a moment ago and was not handed out before by this
/// process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding a loopback port")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, panicking with `what` after
/// `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` without persistence on a free loopback port.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server requiring [`PASSWORD`] and waits until it answers PING.
    pub fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temporary directory");
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {REDIS_SERVER}: {e}"));
        let server = Self {
            port,
            child,
            _dir: dir,
        };
        wait_until(
            &format!("redis-server on port {port}"),
            Duration::from_secs(10),
            || {
                let mut con = server.try_connection(0).ok()?;
                redis::cmd("PING").query::<String>(&mut con).ok()
            },
        );
        server
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn try_connection(&self, db: i64) -> redis::RedisResult<redis::Connection> {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/{db}", self.port);
        redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))
    }

    /// A direct connection to database `db`.
    pub fn connection(&self, db: i64) -> redis::Connection {
        self.try_connection(db)
            .unwrap_or_else(|e| panic!("connecting to redis-server {}: {e}", self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A routing table over `servers` (shard `i` is `servers[i]`, named `t-<i>`) with a
/// ring of the shards in `members` and the given migrations.
pub fn routing_table(
    version: i64,
    servers: &[&RedisServer],
    ring_version: i64,
    members: &[i32],
    migrations: Vec<RoutingMigration>,
) -> RoutingTable {
    RoutingTable {
        cluster: "t".into(),
        engine: Engine::Redis,
        version,
        shards: servers
            .iter()
            .enumerate()
            .map(|(i, server)| RoutingShard {
                index: i as i32,
                name: format!("t-{i}"),
                weight: 1,
                rw: Some(server.addr()),
                ro: None,
                primary: format!("t-{i}-0"),
                replicas: Vec::new(),
            })
            .collect(),
        ring: Some(ring(ring_version, members)),
        migrations,
    }
}

/// The ring descriptor of `members`, each of weight 1, 128 virtual nodes per weight.
pub fn ring(version: i64, members: &[i32]) -> RingDescriptor {
    RingDescriptor {
        version,
        vnodes_per_weight: 128,
        members: members
            .iter()
            .map(|&shard| RingMember { shard, weight: 1 })
            .collect(),
    }
}

/// A `ringmaster router` process reading its table from a file.
pub struct RouterProcess {
    /// The RESP port.
    pub port: u16,
    /// The HTTP port.
    pub http_port: u16,
    routing_file: PathBuf,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RouterProcess {
    /// Starts `binary router` over `table` with `extra` flags and waits (bounded) until
    /// `/readyz` answers 200.
    pub fn start(binary: &str, table: &RoutingTable, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let routing_file = dir.path().join("routing.json");
        write_atomically(&routing_file, &table.to_json());
        let log = dir.path().join("router.log");
        let (port, http_port) = (free_port(), free_port());
        let child = Command::new(binary)
            .arg("router")
            .arg("--routing-file")
            .arg(&routing_file)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--password", PASSWORD, "--log-format", "text"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("router log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary} router: {e}"));
        let router = Self {
            port,
            http_port,
            routing_file,
            log,
            child,
            _dir: dir,
        };
        router.wait_ready();
        router
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if matches!(self.http_get("/readyz"), Some((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the router did not become ready within 20s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The router's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Replaces the routing file (atomically: the router never reads half of it).
    pub fn write_table(&self, table: &RoutingTable) {
        write_atomically(&self.routing_file, &table.to_json());
    }

    /// Writes `table` and waits until the router reports its version as applied.
    pub fn apply_table(&self, table: &RoutingTable) {
        self.write_table(table);
        self.wait_applied(table.version);
    }

    /// Waits until `/status` reports `appliedVersion >= version`.
    pub fn wait_applied(&self, version: i64) {
        wait_until(
            &format!("appliedVersion {version}"),
            Duration::from_secs(10),
            || (self.status()["appliedVersion"].as_i64()? >= version).then_some(()),
        );
    }

    /// `GET /status` as JSON (`null` when it cannot be read).
    pub fn status(&self) -> serde_json::Value {
        self.http_get("/status")
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }

    /// `GET <path>` on the HTTP port: status code and body.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port));
        agent_host::http(addr, "GET", path, None, None).ok()
    }

    /// An authenticated client connection through the router.
    pub fn connection(&self) -> redis::Connection {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", self.port);
        redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("connecting through the router: {e}\n{}", self.log()))
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_atomically(path: &Path, content: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, content).expect("writing the routing file");
    std::fs::rename(&temporary, path).expect("renaming the routing file");
}
