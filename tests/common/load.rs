//! A continuous writer of unique, acknowledged writes, and the audit that checks
//! every acknowledged write survived.
//!
//! Each write `i` is `SET w:<i> <i>` (Redis; in sync mode followed by `WAIT 1 500`, and
//! acknowledged only when a replica has it) or `INSERT INTO audit VALUES (i)`
//! (PostgreSQL). A write that fails or exceeds its deadline is not acknowledged; the
//! writer reconnects and goes on with the next id. The loop is bounded by a count and
//! by a time limit.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};

/// Deadline of one write (connecting included).
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// Pause after a failed write before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Where and how to write.
#[derive(Clone, Debug)]
pub struct Target {
    /// `redis` or `postgres`.
    pub engine: &'static str,
    /// `host:port` (the shard's `-rw` Service).
    pub addr: String,
    /// Superuser name.
    pub username: String,
    /// Superuser password.
    pub password: String,
    /// Redis: acknowledge only writes a replica has (`WAIT 1`).
    pub wait_for_replica: bool,
}

/// One acknowledged write.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    /// Its id.
    pub id: u64,
    /// When the attempt started.
    pub started: Instant,
    /// When it was acknowledged.
    pub acked: Instant,
}

/// What a writer did.
#[derive(Debug, Default)]
pub struct Report {
    /// Acknowledged writes, in order.
    pub acks: Vec<Ack>,
    /// Attempts that failed or timed out.
    pub errors: u64,
    /// Attempts in all.
    pub attempts: u64,
}

impl Report {
    /// The first write started at or after `t` that was acknowledged.
    pub fn first_ack_started_after(&self, t: Instant) -> Option<Ack> {
        self.acks.iter().copied().find(|a| a.started >= t)
    }

    /// The acknowledged ids.
    pub fn ids(&self) -> Vec<u64> {
        self.acks.iter().map(|a| a.id).collect()
    }
}

/// A running writer.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Report>,
}

impl Writer {
    /// Starts writing ids from `first_id`, at most `max_writes` of them and for at most
    /// `max_time`.
    pub fn start(target: Target, first_id: u64, max_writes: u64, max_time: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(
            target,
            first_id,
            max_writes,
            max_time,
            Arc::clone(&stop),
            Arc::clone(&acked),
        ));
        Self { stop, acked, task }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits (polling every 200 ms, at most `timeout`) until `n` writes are
    /// acknowledged; the error names `what` and the count reached.
    pub async fn wait_acked(&self, n: u64, what: &str, timeout: Duration) -> anyhow::Result<()> {
        ringmaster_e2e::wait_for(what, timeout, Duration::from_millis(200), || async {
            let acked = self.acked();
            if acked >= n {
                Ok(Some(()))
            } else {
                Err(anyhow!("{acked} acknowledged writes"))
            }
        })
        .await
    }

    /// Stops and returns the report.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer task")
    }
}

async fn run(
    target: Target,
    first_id: u64,
    max_writes: u64,
    max_time: Duration,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Report {
    let began = Instant::now();
    let mut report = Report::default();
    let mut conn: Option<Conn> = None;
    let mut id = first_id;
    while !stop.load(Ordering::Relaxed)
        && report.attempts < max_writes
        && began.elapsed() < max_time
    {
        report.attempts += 1;
        let started = Instant::now();
        let result = tokio::time::timeout(WRITE_DEADLINE, write(&target, &mut conn, id)).await;
        match result {
            Ok(Ok(())) => {
                report.acks.push(Ack {
                    id,
                    started,
                    acked: Instant::now(),
                });
                acked.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                report.errors += 1;
                conn = None;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        id += 1;
    }
    report
}

/// A connection to the write target.
pub enum Conn {
    /// Redis.
    Redis(MultiplexedConnection),
    /// PostgreSQL (the client and its connection task).
    Postgres(tokio_postgres::Client, tokio::task::JoinHandle<()>),
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Conn::Postgres(_, task) = self {
            task.abort();
        }
    }
}

async fn write(target: &Target, conn: &mut Option<Conn>, id: u64) -> anyhow::Result<()> {
    if conn.is_none() {
        *conn = Some(connect(target).await?);
    }
    match conn.as_mut().expect("connected") {
        Conn::Redis(c) => {
            let () = redis::cmd("SET")
                .arg(format!("w:{id}"))
                .arg(id)
                .query_async(c)
                .await?;
            if target.wait_for_replica {
                let replicas: i64 = redis::cmd("WAIT").arg(1).arg(500).query_async(c).await?;
                if replicas < 1 {
                    return Err(anyhow!("WAIT: no replica has write {id}"));
                }
            }
            Ok(())
        }
        Conn::Postgres(c, _) => {
            let id = i64::try_from(id)?;
            c.execute("INSERT INTO audit (id) VALUES ($1)", &[&id])
                .await?;
            Ok(())
        }
    }
}

/// Connects to `target` (deadline [`WRITE_DEADLINE`]).
pub async fn connect(target: &Target) -> anyhow::Result<Conn> {
    let (host, port) = split(&target.addr)?;
    match target.engine {
        "redis" => {
            let info = ConnectionAddr::Tcp(host, port)
                .into_connection_info()?
                .set_redis_settings(
                    RedisConnectionInfo::default()
                        .set_username(&target.username)
                        .set_password(&target.password)
                        .set_skip_set_lib_name(),
                );
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(WRITE_DEADLINE))
                .set_response_timeout(Some(WRITE_DEADLINE));
            let c = Client::open(info)?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok(Conn::Redis(c))
        }
        _ => {
            let mut config = tokio_postgres::Config::new();
            config
                .host(&host)
                .port(port)
                .user(&target.username)
                .password(&target.password)
                .dbname("postgres")
                .connect_timeout(WRITE_DEADLINE);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            let task = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Conn::Postgres(client, task))
        }
    }
}

fn split(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{addr} is not host:port"))?;
    Ok((host.to_owned(), port.parse().context("port")?))
}

/// Creates the audit table (PostgreSQL; nothing for Redis), retrying until `timeout`.
pub async fn prepare(target: &Target, timeout: Duration) -> anyhow::Result<()> {
    if target.engine == "redis" {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let conn = connect(target).await?;
            if let Conn::Postgres(c, _) = &conn {
                c.batch_execute("CREATE TABLE IF NOT EXISTS audit (id bigint PRIMARY KEY)")
                    .await?;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(WRITE_DEADLINE * 2, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
            Err(_) if Instant::now() >= deadline => {
                return Err(anyhow!("creating the audit table timed out"));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The acknowledged ids of `report` that `target` does not hold.
pub async fn missing(target: &Target, ids: &[u64]) -> anyhow::Result<Vec<u64>> {
    let conn = connect(target).await?;
    let present: BTreeSet<u64> = match &conn {
        Conn::Redis(c) => {
            let mut c = c.clone();
            let mut present = BTreeSet::new();
            for chunk in ids.chunks(500) {
                let keys: Vec<String> = chunk.iter().map(|i| format!("w:{i}")).collect();
                let values: Vec<Option<u64>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                present.extend(
                    chunk
                        .iter()
                        .zip(values)
                        .filter(|(i, v)| *v == Some(**i))
                        .map(|(i, _)| *i),
                );
            }
            present
        }
        Conn::Postgres(c, _) => c
            .query("SELECT id FROM audit", &[])
            .await?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u64)
            .collect(),
    };
    Ok(ids
        .iter()
        .copied()
        .filter(|i| !present.contains(i))
        .collect())
}

/// One write of id `id` on a fresh connection, within [`WRITE_DEADLINE`].
pub async fn write_once(target: &Target, id: u64) -> anyhow::Result<()> {
    let mut conn = None;
    tokio::time::timeout(WRITE_DEADLINE, write(target, &mut conn, id))
        .await
        .map_err(|_| anyhow!("write {id} to {} timed out", target.addr))?
}

/// Whether `target` holds write `id` (read on a fresh connection).
pub async fn holds(target: &Target, id: u64) -> anyhow::Result<bool> {
    Ok(missing(target, &[id]).await?.is_empty())
}
