//! The Redis engine's replication against real `redis-server` processes: each node
//! is a configuration rendered by `Redis::render_config`, a server started with
//! `Redis::server_command`, and the engine's replication methods called directly
//! (the agent's convergence loop calls the same ones).
//!
//! Every test has its own loopback addresses (127.0.62.<test><node>) and port, waits
//! with bounds and clear messages, and kills its servers when it ends. Tests skip
//! (with a message) when `redis-server` is not installed.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use ringmaster::api::ReplicationMode;
use ringmaster::api::agent::{ConnectedReplica, ReplicationReport};
use ringmaster::api::shard::Role;
use ringmaster::instance::InstanceArgs;
use ringmaster::instance::config::Config;
use ringmaster::instance::engine::Redis;
use ringmaster::instance::role::{DesiredRole, DesiredState, StopMode, Upstream};

const PORT: u16 = 16390;
const PASSWORD: &str = "superuser-pw";
const REPLICATION_PASSWORD: &str = "replication-pw";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

fn skip() -> bool {
    let installed = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("redis-server").is_file());
    if !installed {
        eprintln!("skipped: redis-server is not installed");
    }
    !installed
}

/// Polls `check` every 50 ms until it yields a value; panics after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn desired(role: DesiredRole, mode: ReplicationMode, upstream: Option<Upstream>) -> DesiredState {
    DesiredState {
        epoch: 1,
        role,
        upstream,
        replicas: Vec::new(),
        mode,
        stop: StopMode::Clean,
        hold_crashed_primary_seconds: 0,
        last_server_role: None,
    }
}

fn primary(mode: ReplicationMode) -> DesiredState {
    desired(DesiredRole::Primary, mode, None)
}

fn replica_of(node: &Node) -> DesiredState {
    desired(
        DesiredRole::Replica,
        ReplicationMode::Async,
        Some(node.upstream()),
    )
}

/// `SET key value` on `con`.
async fn set(con: &mut MultiplexedConnection, key: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(key).arg(value).query_async(con).await
}

async fn get(con: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(con).await.unwrap()
}

/// `WAIT replicas 5000`: how many replicas acknowledged every write so far.
async fn wait_replicas(con: &mut MultiplexedConnection, replicas: u32) -> u32 {
    redis::cmd("WAIT")
        .arg(replicas)
        .arg(5000)
        .query_async(con)
        .await
        .unwrap()
}

// ---------------------------------------------------------------- nodes

/// One Redis server driven through the engine.
struct Node {
    ip: Ipv4Addr,
    dir: tempfile::TempDir,
    redis: Redis,
    child: Option<Child>,
}

impl Node {
    /// Node `index` of test `test`, at 127.0.62.<test><index>.
    fn new(test: u8, index: u8) -> Self {
        Self::with_replication_password(test, index, REPLICATION_PASSWORD)
    }

    fn with_replication_password(test: u8, index: u8, replication_password: &str) -> Self {
        let ip = Ipv4Addr::new(127, 0, 62, test * 10 + index);
        let dir = tempfile::Builder::new()
            .prefix("rm-redis-repl-")
            .tempdir()
            .unwrap();
        let vars = [
            ("RINGMASTER_ENGINE", "redis".to_string()),
            ("RINGMASTER_ROLE", "primary".into()),
            ("RINGMASTER_USERNAME", "default".into()),
            ("RINGMASTER_PASSWORD", PASSWORD.into()),
            (
                "RINGMASTER_REPLICATION_PASSWORD",
                replication_password.into(),
            ),
            ("RINGMASTER_AGENT_TOKEN", "token".into()),
            (
                "RINGMASTER_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            (
                "RINGMASTER_RUN_DIR",
                dir.path().join("run").display().to_string(),
            ),
            ("RINGMASTER_DB_PORT", PORT.to_string()),
            ("POD_IP", ip.to_string()),
            ("POD_NAME", format!("r-{test}-{index}")),
        ];
        let env = move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let config = Config::resolve(&InstanceArgs::default(), &env).expect("valid settings");
        let redis = Redis::new(Arc::new(config)).expect("redis-server is installed");
        Self {
            ip,
            dir,
            redis,
            child: None,
        }
    }

    fn name(&self) -> String {
        format!("{}:{PORT}", self.ip)
    }

    fn upstream(&self) -> Upstream {
        Upstream {
            name: format!("node-{}", self.ip),
            host: self.ip.to_string(),
            port: PORT,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Initialises, renders the configuration for `desired`, starts the server.
    async fn start(&mut self, desired: &DesiredState) {
        self.redis.initialise().unwrap();
        self.redis.render_config(desired).unwrap();
        self.restart().await;
    }

    /// Starts the server with the configuration on disk; waits for the probe.
    async fn restart(&mut self) {
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = self
            .redis
            .server_command()
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let what = format!(
            "{} to answer the probe; log: {}",
            self.name(),
            self.log().display()
        );
        eventually(&what, START_TIMEOUT, || async {
            self.redis.probe().await.ok()
        })
        .await;
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A superuser connection.
    async fn client(&self) -> MultiplexedConnection {
        let url = format!("redis://default:{PASSWORD}@{}:{PORT}/", self.ip);
        let timeouts = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection_with_config(&timeouts)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name()))
    }

    async fn report(&self) -> ReplicationReport {
        self.redis.replication_report().await.unwrap()
    }

    /// Waits until the server streams from `upstream`; returns its report.
    async fn streaming_from(&self, upstream: &Node) -> ReplicationReport {
        let what = format!("{} to stream from {}", self.name(), upstream.name());
        eventually(&what, SYNC_TIMEOUT, || async {
            let r = self.redis.replication_report().await.ok()?;
            (r.streaming && r.upstream == Some(upstream.name())).then_some(r)
        })
        .await
    }

    /// A field of `INFO stats` as a number.
    async fn stat(&self, key: &str) -> u64 {
        let text: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut self.client().await)
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO stats has no {key}"))
    }

    fn conf(&self) -> String {
        std::fs::read_to_string(self.redis.conf_path()).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // a stopped server takes SIGKILL all the same; SIGCONT for good measure
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        self.kill();
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn replica_streams_with_the_replication_user() {
    if skip() {
        return;
    }
    let mut p = Node::new(1, 1);
    let mut r = Node::new(1, 2);
    let mut bad = Node::with_replication_password(1, 3, "not-the-password");
    p.start(&primary(ReplicationMode::Async)).await;
    r.start(&replica_of(&p)).await;
    bad.start(&replica_of(&p)).await;
    r.streaming_from(&p).await;

    let mut pc = p.client().await;
    let mut rc = r.client().await;
    set(&mut pc, "k", "v").await.unwrap();
    assert_eq!(wait_replicas(&mut pc, 1).await, 1, "WAIT 1 on the primary");
    assert_eq!(get(&mut rc, "k").await.as_deref(), Some("v"));
    let err = set(&mut rc, "k", "w").await.unwrap_err();
    assert!(err.to_string().contains("read only replica"), "{err}");
    assert_eq!(p.redis.current_role().await.unwrap(), Role::Primary);
    assert_eq!(r.redis.current_role().await.unwrap(), Role::Replica);

    // reports agree once the replica has acknowledged the last ping
    let (pr, rr) = eventually("equal positions", SYNC_TIMEOUT, || async {
        let (pr, rr) = (p.report().await, r.report().await);
        let acked = pr.replicas.iter().find(|c| c.name == r.name())?;
        (rr.received == Some(pr.position) && acked.position == pr.position).then_some((pr, rr))
    })
    .await;
    assert!(pr.position > 0, "{pr:?}");
    assert!(!pr.streaming && pr.upstream.is_none(), "{pr:?}");
    assert_eq!(pr.replication_id, rr.replication_id);
    assert!(
        pr.replication_id.as_ref().is_some_and(|id| id.len() == 40),
        "{pr:?}"
    );
    let acked = pr.replicas.iter().find(|c| c.name == r.name()).unwrap();
    assert_eq!(acked.state, "online", "{pr:?}");
    assert!(!acked.sync);
    assert_eq!(rr.replayed, rr.received);
    assert_eq!(rr.upstream, Some(p.name()));
    assert!(
        rr.lag_seconds.is_some_and(|l| (0.0..=2.0).contains(&l)),
        "{rr:?}"
    );

    // the replica with the wrong password is refused by the primary's ACL
    let what = "an ACL log entry for the replication user on the primary";
    eventually(what, SYNC_TIMEOUT, || async {
        let log: redis::Value = redis::cmd("ACL")
            .arg("LOG")
            .query_async(&mut p.client().await)
            .await
            .ok()?;
        let log = format!("{log:?}");
        (log.contains("ringmaster_replication") && log.contains("auth")).then_some(())
    })
    .await;
    let br = bad.report().await;
    assert!(!br.streaming, "{br:?}");
    assert_eq!(get(&mut bad.client().await, "k").await, None);
    assert!(
        !p.report()
            .await
            .replicas
            .iter()
            .any(|c| c.name == bad.name()),
        "the refused replica is not listed"
    );
}

#[tokio::test]
async fn promote_and_repoint() {
    if skip() {
        return;
    }
    let mut p = Node::new(2, 1);
    let mut r1 = Node::new(2, 2);
    let mut r2 = Node::new(2, 3);
    p.start(&primary(ReplicationMode::Async)).await;
    r1.start(&replica_of(&p)).await;
    r2.start(&replica_of(&p)).await;
    r1.streaming_from(&p).await;
    r2.streaming_from(&p).await;
    let mut pc = p.client().await;
    set(&mut pc, "a", "1").await.unwrap();
    assert_eq!(wait_replicas(&mut pc, 2).await, 2);
    p.kill();

    r1.redis.promote().await.unwrap();
    assert_eq!(r1.redis.current_role().await.unwrap(), Role::Primary);
    r1.redis
        .apply_live(&primary(ReplicationMode::Async))
        .await
        .unwrap();
    assert!(r1.conf().lines().all(|l| !l.starts_with("replicaof")));
    let mut c1 = r1.client().await;
    set(&mut c1, "b", "2").await.unwrap();

    r2.redis.apply_live(&replica_of(&r1)).await.unwrap();
    r2.streaming_from(&r1).await;
    assert_eq!(wait_replicas(&mut c1, 1).await, 1);
    let mut c2 = r2.client().await;
    assert_eq!(get(&mut c2, "a").await.as_deref(), Some("1"));
    assert_eq!(get(&mut c2, "b").await.as_deref(), Some("2"));

    // the same upstream again: no new synchronisation
    let syncs = (r1.stat("sync_full").await, r1.stat("sync_partial_ok").await);
    r2.redis.apply_live(&replica_of(&r1)).await.unwrap();
    r2.streaming_from(&r1).await;
    set(&mut c1, "c", "3").await.unwrap();
    assert_eq!(wait_replicas(&mut c1, 1).await, 1);
    let after = (r1.stat("sync_full").await, r1.stat("sync_partial_ok").await);
    assert_eq!(
        syncs, after,
        "(sync_full, sync_partial_ok) of the new primary"
    );

    // the configuration on disk keeps the new upstream across a restart
    let line = format!("replicaof {} {PORT}", r1.ip);
    assert!(r2.conf().lines().any(|l| l == line), "{}", r2.conf());
    r2.kill();
    r2.restart().await;
    r2.streaming_from(&r1).await;
    assert_eq!(get(&mut r2.client().await, "c").await.as_deref(), Some("3"));
}

#[tokio::test]
async fn switchover_loses_no_acknowledged_write() {
    if skip() {
        return;
    }
    let mut p = Node::new(3, 1);
    let mut r = Node::new(3, 2);
    let stranger = Node::new(3, 9);
    p.start(&primary(ReplicationMode::Async)).await;
    r.start(&replica_of(&p)).await;
    r.streaming_from(&p).await;

    // a target that is not a connected replica is refused, and nothing changes
    let err = p
        .redis
        .switchover_to(&stranger.upstream())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a connected replica"), "{err}");
    assert_eq!(p.redis.current_role().await.unwrap(), Role::Primary);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until_refused(p.client().await, Arc::clone(&stop)));
    let pc = p.client().await;
    eventually("100 writes on the primary", SYNC_TIMEOUT, || {
        let mut pc = pc.clone();
        async move {
            let n: u64 = redis::cmd("DBSIZE").query_async(&mut pc).await.ok()?;
            (n >= 100).then_some(())
        }
    })
    .await;
    let start = Instant::now();
    p.redis.switchover_to(&r.upstream()).await.unwrap();
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (acked, refusal) = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the writer stops")
        .unwrap();
    eprintln!(
        "switchover took {took:?}; {} writes acknowledged; writer stopped by {refusal:?}",
        acked.len()
    );

    assert_eq!(p.redis.current_role().await.unwrap(), Role::Replica);
    assert_eq!(r.redis.current_role().await.unwrap(), Role::Primary);
    let line = format!("replicaof {} {PORT}", r.ip);
    assert!(p.conf().lines().any(|l| l == line), "{}", p.conf());
    r.redis
        .apply_live(&primary(ReplicationMode::Async))
        .await
        .unwrap();
    let mut rc = r.client().await;
    let missing = missing_keys(&mut rc, &acked).await;
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    set(&mut rc, "after", "1").await.unwrap();
    p.streaming_from(&r).await;
    assert_eq!(wait_replicas(&mut rc, 1).await, 1);
    assert_eq!(
        get(&mut p.client().await, "after").await.as_deref(),
        Some("1")
    );
    // again: already done
    p.redis.switchover_to(&r.upstream()).await.unwrap();
}

/// Writes `w:<n>` until a write fails or `stop` is set; returns the acknowledged
/// numbers and the error that stopped it.
async fn write_until_refused(
    mut con: MultiplexedConnection,
    stop: Arc<AtomicBool>,
) -> (Vec<u64>, Option<String>) {
    let mut acked = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return (acked, None);
        }
        match set(&mut con, &format!("w:{n}"), &n.to_string()).await {
            Ok(()) => acked.push(n),
            Err(e) => return (acked, Some(e.to_string())),
        }
    }
    unreachable!()
}

/// The numbers of `acked` whose key `w:<n>` does not hold `n`.
async fn missing_keys(con: &mut MultiplexedConnection, acked: &[u64]) -> Vec<u64> {
    let mut missing = Vec::new();
    for chunk in acked.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|n| format!("w:{n}")).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(con)
            .await
            .unwrap();
        missing.extend(
            chunk
                .iter()
                .zip(values)
                .filter(|(n, v)| v.as_deref() != Some(n.to_string().as_str()))
                .map(|(n, _)| *n),
        );
    }
    missing
}

#[tokio::test]
async fn sync_mode_refuses_writes_without_a_replica() {
    if skip() {
        return;
    }
    let mut p = Node::new(4, 1);
    let mut r = Node::new(4, 2);
    p.start(&primary(ReplicationMode::Sync)).await;
    let mut pc = p.client().await;
    let err = set(&mut pc, "k", "0").await.unwrap_err();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");

    r.start(&replica_of(&p)).await;
    r.streaming_from(&p).await;
    eventually("a write accepted with the replica", SYNC_TIMEOUT, || {
        let mut pc = pc.clone();
        async move { set(&mut pc, "k", "1").await.ok() }
    })
    .await;

    // a hung replica: writes are refused within min-replicas-max-lag (10 s)
    kill(r.pid(), Signal::SIGSTOP).unwrap();
    let start = Instant::now();
    let err = eventually("NOREPLICAS", Duration::from_secs(15), || {
        let mut pc = pc.clone();
        async move { set(&mut pc, "k", "2").await.err() }
    })
    .await;
    let took = start.elapsed();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");
    assert!(
        took <= Duration::from_secs(12),
        "refused only after {took:?}"
    );
    eprintln!("writes refused {took:?} after the replica stopped");

    // async: accepted at once, replica or not
    p.redis
        .apply_live(&primary(ReplicationMode::Async))
        .await
        .unwrap();
    set(&mut pc, "k", "3").await.unwrap();
    assert!(p.conf().lines().any(|l| l == "min-replicas-to-write 0"));

    // back to sync with the replica resumed: writes flow again
    p.redis
        .apply_live(&primary(ReplicationMode::Sync))
        .await
        .unwrap();
    kill(r.pid(), Signal::SIGCONT).unwrap();
    r.streaming_from(&p).await;
    eventually("a write accepted again", SYNC_TIMEOUT, || {
        let mut pc = pc.clone();
        async move { set(&mut pc, "k", "4").await.ok() }
    })
    .await;
    assert_eq!(wait_replicas(&mut pc, 1).await, 1);
    assert_eq!(get(&mut r.client().await, "k").await.as_deref(), Some("4"));
}

#[tokio::test]
async fn failed_switchover_keeps_the_primary() {
    if skip() {
        return;
    }
    let mut p = Node::new(5, 1);
    let mut r = Node::new(5, 2);
    p.start(&primary(ReplicationMode::Sync)).await;
    r.start(&replica_of(&p)).await;
    r.streaming_from(&p).await;
    let before = p.conf();
    eventually(
        "the primary to list its replica online",
        SYNC_TIMEOUT,
        || async {
            let pr = p.redis.replication_report().await.ok()?;
            let online = |c: &ConnectedReplica| c.name == r.name() && c.state == "online";
            pr.replicas.iter().any(online).then_some(())
        },
    )
    .await;

    // the target hangs: it never confirms the primary's last write
    kill(r.pid(), Signal::SIGSTOP).unwrap();
    let start = Instant::now();
    let err = p.redis.switchover_to(&r.upstream()).await.unwrap_err();
    let took = start.elapsed();
    eprintln!("switchover failed after {took:?}: {err}");
    assert!(took < Duration::from_secs(17), "{took:?}");
    assert_eq!(p.redis.current_role().await.unwrap(), Role::Primary);
    assert_eq!(p.conf(), before, "the primary's configuration is put back");
    kill(r.pid(), Signal::SIGCONT).unwrap();
    r.streaming_from(&p).await;
    let mut pc = p.client().await;
    eventually(
        "a write accepted after the failed switchover",
        SYNC_TIMEOUT,
        || {
            let mut pc = pc.clone();
            async move { set(&mut pc, "k", "1").await.ok() }
        },
    )
    .await;
    assert_eq!(wait_replicas(&mut pc, 1).await, 1);
}
