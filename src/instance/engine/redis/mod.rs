//! Redis: a generated `redis.conf` (mode 0600, it holds the passwords) for the
//! desired role, `redis-server <conf>`, SIGTERM (Redis fsyncs its AOF and exits),
//! an `AUTH` + `PING` probe, and replication driven over RESP: `REPLICAOF`,
//! `CONFIG SET`, `FAILOVER` and `INFO replication`.

mod config;
mod replication;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};

use self::config::{Setting, render, replication_settings, upstream};
use self::replication::{Info, NO_FAILOVER};
use super::programs;
use super::{ProbeInfo, ServerView, StopStep, within};
use crate::api::agent::ReplicationReport;
use crate::instance::config::{Config, Role};
use crate::instance::error::{InstanceError, ProbeError};
use crate::instance::fsutil;
use crate::instance::role::{DesiredRole, DesiredState, StopMode, Upstream};

/// Subdirectory of the data directory that holds Redis's files.
const REDIS_DIR: &str = "redis";
/// `FAILOVER ... TIMEOUT`: how long the primary waits, writes paused, for the target
/// to catch up before it gives up and stays primary.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `switchover_to` waits for this server to follow the target.
const SWITCHOVER_WAIT: Duration = Duration::from_secs(15);
/// Interval of polling `INFO replication` while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A Redis server and its program.
#[derive(Debug)]
pub struct Redis {
    config: Arc<Config>,
    program: PathBuf,
}

impl Redis {
    /// Entries of the data directory created by initialisation.
    pub const OWNED_ENTRIES: &'static [&'static str] = &[REDIS_DIR];

    /// Locates `redis-server`.
    pub fn new(config: Arc<Config>) -> Result<Self, InstanceError> {
        let program = programs::on_path("redis-server").ok_or(InstanceError::ProgramNotFound {
            program: "redis-server",
            hint: "",
        })?;
        Ok(Self { config, program })
    }

    /// Redis's working directory (RDB, AOF and its configuration).
    pub fn dir(&self) -> PathBuf {
        self.config.data_dir.join(REDIS_DIR)
    }

    /// The generated configuration file.
    pub fn conf_path(&self) -> PathBuf {
        self.dir().join("redis.conf")
    }

    /// Creates Redis's working directory. A replica needs nothing more: it starts
    /// empty and full-syncs from its primary.
    pub fn initialise(&self) -> Result<(), InstanceError> {
        fsutil::ensure_dir(&self.dir(), 0o700)?;
        fsutil::ensure_dir(&self.config.run_dir, 0o700)?;
        fsutil::sync_parent(&self.dir())
    }

    /// Writes `redis.conf` (mode 0600) for the desired role: `replicaof` for a
    /// replica, `min-replicas-to-write` for the primary's mode, the replication
    /// user's ACL and the credentials replicas authenticate with.
    pub fn render_config(&self, desired: &DesiredState) -> Result<(), InstanceError> {
        let text = render(&self.config, &self.dir(), desired);
        fsutil::write_atomic(&self.conf_path(), text.as_bytes(), 0o600)
    }

    /// `redis-server <conf>`.
    pub fn server_command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg(self.conf_path());
        cmd
    }

    /// SIGTERM (Redis flushes and fsyncs, then exits), then SIGKILL.
    pub fn stop_plan(&self) -> Vec<StopStep> {
        vec![
            StopStep {
                signal: Signal::SIGTERM,
                wait: Some(self.config.stop_timeout),
            },
            StopStep {
                signal: Signal::SIGKILL,
                wait: None,
            },
        ]
    }

    /// Deadline of one probe (and of each step of a replication command).
    pub fn probe_timeout(&self) -> Duration {
        self.config.probe_timeout
    }

    /// Authenticates over TCP, `PING`s and reads the version from `INFO server`.
    pub async fn probe(&self) -> Result<ProbeInfo, ProbeError> {
        probe_on(&mut self.connect().await?).await
    }

    /// [`Redis::probe`], then its role and replication from `INFO replication` on the
    /// same connection; each step within the probe deadline.
    pub async fn probe_and_report(&self) -> Result<ServerView, ProbeError> {
        let deadline = self.config.probe_timeout;
        let (mut con, probed) = within(deadline, async {
            let mut con = self.connect().await?;
            let probed = probe_on(&mut con).await?;
            Ok((con, probed))
        })
        .await?;
        let role_and_report = within(deadline, async {
            let now = info(&mut con, "replication").await?;
            Ok((now.role()?, now.report()?))
        })
        .await
        .ok();
        Ok(ServerView {
            info: probed,
            role_and_report,
        })
    }

    /// The role the running server has: `INFO replication` `role`.
    pub async fn current_role(&self) -> Result<Role, ProbeError> {
        self.replication_info().await?.role()
    }

    /// Replication as the running server sees it (`INFO replication`).
    pub async fn replication_report(&self) -> Result<ReplicationReport, ProbeError> {
        self.replication_info().await?.report()
    }

    /// Makes the running server a primary: `REPLICAOF NO ONE`, then checks that
    /// `INFO replication` says `role:master`. The mode's settings come with
    /// [`Redis::apply_live`], which the agent calls next.
    pub async fn promote(&self) -> Result<(), InstanceError> {
        let mut con = self.connect().await?;
        let _: String = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut con)
            .await?;
        let role = info(&mut con, "replication").await?.role()?;
        if role != Role::Primary {
            return Err(self.failed("REPLICAOF NO ONE", "the server is still a replica"));
        }
        tracing::info!(server = %self.address(), "Redis promoted to primary");
        Ok(())
    }

    /// Converges the running server to `desired` without a restart, and rewrites
    /// `redis.conf` first so that a restart keeps the state (never `CONFIG
    /// REWRITE`). A replica gets the replication settings, then `REPLICAOF host
    /// port` only when it follows another server (each `REPLICAOF` may cost a full
    /// resync); a primary gets its mode's `min-replicas-to-write` (promoting is
    /// [`Redis::promote`]'s job).
    pub async fn apply_live(&self, desired: &DesiredState) -> Result<(), InstanceError> {
        self.render_config(desired)?;
        let mut con = self.connect().await?;
        config_set(&mut con, &replication_settings(&self.config, desired)).await?;
        let Some(up) = upstream(desired) else {
            return Ok(());
        };
        let now = info(&mut con, "replication").await?;
        if follows(&now, up) {
            return Ok(());
        }
        let _: String = redis::cmd("REPLICAOF")
            .arg(&up.host)
            .arg(up.port)
            .query_async(&mut con)
            .await?;
        tracing::info!(server = %self.address(), upstream = %up.address(), "Redis follows a new upstream");
        Ok(())
    }

    /// A planned switchover from this primary to `upstream`, one of its connected
    /// replicas: `FAILOVER TO <host> <port> TIMEOUT 10000` (Redis ≥ 6.2) pauses
    /// writes, waits until the target has every write, promotes it and makes this
    /// server its replica. Returns once `INFO replication` shows this server
    /// following the target, or an error within about 15 s. Idempotent: a server
    /// that already follows the target succeeds at once.
    ///
    /// `redis.conf` is rewritten as a replica of `upstream` before the handover, so
    /// that a restart never brings this server back as a second primary; when the
    /// handover fails and this server is still primary, the previous file is put
    /// back (a restart must not throw away writes the target does not have).
    pub async fn switchover_to(&self, upstream: &Upstream) -> Result<(), InstanceError> {
        let mut con = self.connect().await?;
        let now = info(&mut con, "replication").await?;
        if follows(&now, upstream) && now.failover_state() == NO_FAILOVER {
            return Ok(());
        }
        self.check_target(&now, upstream)?;
        let previous = std::fs::read(self.conf_path())
            .map_err(|e| InstanceError::io("reading", self.conf_path(), e))?;
        let as_replica = self.as_replica_of(upstream);
        self.render_config(&as_replica)?;
        let result = self.hand_over(&mut con, &as_replica, upstream).await;
        if result.is_err() && self.current_role().await.ok() != Some(Role::Replica) {
            fsutil::write_atomic(&self.conf_path(), &previous, 0o600)?;
        }
        result
    }

    /// Gives the server the credentials to follow the target (only those: should
    /// the handover fail, it stays a primary with its mode's settings), runs
    /// `FAILOVER` and waits for its end.
    async fn hand_over(
        &self,
        con: &mut MultiplexedConnection,
        as_replica: &DesiredState,
        target: &Upstream,
    ) -> Result<(), InstanceError> {
        let credentials: Vec<Setting> = replication_settings(&self.config, as_replica)
            .into_iter()
            .filter(|s| matches!(s.name, "masteruser" | "masterauth"))
            .collect();
        config_set(con, &credentials).await?;
        self.failover(con, target).await?;
        self.wait_following(target).await
    }

    /// Fails unless this server is a primary with `target` among its online replicas.
    fn check_target(&self, now: &Info, target: &Upstream) -> Result<(), InstanceError> {
        if now.role()? != Role::Primary {
            return Err(self.failed(
                "switching over",
                format!(
                    "the server is not a primary (it follows {})",
                    now.upstream().unwrap_or_default()
                ),
            ));
        }
        let replicas = now.replicas();
        if replicas
            .iter()
            .any(|r| r.name == target.address() && r.state == "online")
        {
            return Ok(());
        }
        let connected: Vec<String> = replicas
            .iter()
            .map(|r| format!("{} ({})", r.name, r.state))
            .collect();
        Err(self.failed(
            "switching over",
            format!(
                "the target {} ({}) is not a connected replica; connected: [{}]",
                target.name,
                target.address(),
                connected.join(", ")
            ),
        ))
    }

    /// Sends `FAILOVER TO host port TIMEOUT ms`.
    async fn failover(
        &self,
        con: &mut MultiplexedConnection,
        target: &Upstream,
    ) -> Result<(), InstanceError> {
        let answer: Result<String, _> = redis::cmd("FAILOVER")
            .arg("TO")
            .arg(&target.host)
            .arg(target.port)
            .arg("TIMEOUT")
            .arg(FAILOVER_TIMEOUT.as_millis() as u64)
            .query_async(con)
            .await;
        match answer {
            Ok(_) => {
                tracing::info!(server = %self.address(), target = %target.address(), "Redis FAILOVER started");
                Ok(())
            }
            Err(e)
                if e.to_string()
                    .to_ascii_lowercase()
                    .contains("unknown command") =>
            {
                Err(self.failed(
                    "FAILOVER",
                    format!("{e} (FAILOVER needs Redis 6.2 or later)"),
                ))
            }
            Err(e) => Err(self.failed("FAILOVER", e)),
        }
    }

    /// Polls `INFO replication` until the server follows `target` with the failover
    /// finished; fails when the failover was aborted, or aborts it (`FAILOVER
    /// ABORT`: the server is primary again) when it takes too long — a target that
    /// hangs after catching up leaves the failover in progress indefinitely.
    async fn wait_following(&self, target: &Upstream) -> Result<(), InstanceError> {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        while start.elapsed() < SWITCHOVER_WAIT {
            match self.replication_info().await {
                Ok(now) => {
                    if let Some(outcome) = self.failover_outcome(&now, target) {
                        return outcome;
                    }
                    last = format!("master_failover_state:{}", now.failover_state());
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let abort = self.abort_failover().await;
        Err(self.failed(
            "FAILOVER",
            format!(
                "the server did not follow {} within {SWITCHOVER_WAIT:?} (last seen: {last}); \
                 FAILOVER ABORT: {abort}",
                target.address()
            ),
        ))
    }

    /// How a `FAILOVER` ended, if it has: following `target`, or aborted by Redis.
    fn failover_outcome(&self, now: &Info, target: &Upstream) -> Option<Result<(), InstanceError>> {
        if now.failover_state() != NO_FAILOVER {
            return None;
        }
        if follows(now, target) {
            tracing::info!(server = %self.address(), upstream = %target.address(),
                "Redis switchover done");
            return Some(Ok(()));
        }
        let detail = match now.role().ok() {
            Some(Role::Primary) => {
                "aborted: the target did not catch up in time; this server stays primary".into()
            }
            _ => format!("this server follows {:?} instead", now.upstream()),
        };
        Some(Err(self.failed("FAILOVER", detail)))
    }

    /// `FAILOVER ABORT`, best effort: what it answered.
    async fn abort_failover(&self) -> String {
        let answer = match self.connect().await {
            Ok(mut con) => redis::cmd("FAILOVER")
                .arg("ABORT")
                .query_async::<String>(&mut con)
                .await
                .map_err(ProbeError::from),
            Err(e) => Err(e),
        };
        match answer {
            Ok(ok) => ok,
            Err(e) => e.to_string(),
        }
    }

    /// The desired state of this server right after a switchover to `upstream`.
    fn as_replica_of(&self, upstream: &Upstream) -> DesiredState {
        DesiredState {
            epoch: self.config.epoch,
            role: DesiredRole::Replica,
            upstream: Some(upstream.clone()),
            replicas: Vec::new(),
            mode: self.config.replication_mode,
            stop: StopMode::Clean,
            hold_crashed_primary_seconds: 0,
            last_server_role: Some(Role::Primary),
        }
    }

    /// `INFO replication` of the running server.
    async fn replication_info(&self) -> Result<Info, ProbeError> {
        let mut con = self.connect().await?;
        info(&mut con, "replication").await
    }

    /// A connection authenticated as the superuser, with the probe deadline on
    /// connecting and on every answer.
    async fn connect(&self) -> Result<MultiplexedConnection, ProbeError> {
        let c = &self.config;
        let info = ConnectionAddr::Tcp(c.bind.to_string(), c.db_port)
            .into_connection_info()?
            .set_redis_settings(
                RedisConnectionInfo::default()
                    .set_username(&c.username)
                    .set_password(c.password.expose())
                    .set_skip_set_lib_name(),
            );
        let timeouts = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(c.probe_timeout))
            .set_response_timeout(Some(c.probe_timeout));
        Ok(Client::open(info)?
            .get_multiplexed_async_connection_with_config(&timeouts)
            .await?)
    }

    /// `bind:port` of the server, for messages.
    fn address(&self) -> String {
        format!("{}:{}", self.config.bind, self.config.db_port)
    }

    /// An error of a replication step, naming the server.
    fn failed(&self, step: &str, detail: impl std::fmt::Display) -> InstanceError {
        InstanceError::Replication(format!("Redis at {}: {step}: {detail}", self.address()))
    }
}

/// Whether the server described by `now` is a replica of `up`.
fn follows(now: &Info, up: &Upstream) -> bool {
    now.role().ok() == Some(Role::Replica) && now.upstream() == Some(up.address())
}

/// `PING`, then the version from `INFO server`.
async fn probe_on(con: &mut MultiplexedConnection) -> Result<ProbeInfo, ProbeError> {
    let pong: String = redis::cmd("PING").query_async(con).await?;
    if pong != "PONG" {
        return Err(ProbeError::Unexpected(format!("PING answered {pong:?}")));
    }
    let server = info(con, "server").await?;
    let version = server
        .get("redis_version")
        .map(|v| v.trim().to_string())
        .ok_or_else(|| ProbeError::Unexpected("INFO server has no redis_version".into()))?;
    Ok(ProbeInfo { version })
}

/// `INFO <section>`, parsed.
async fn info(con: &mut MultiplexedConnection, section: &str) -> Result<Info, ProbeError> {
    let text: String = redis::cmd("INFO").arg(section).query_async(con).await?;
    Ok(Info::parse(&text))
}

/// `CONFIG SET name value` for each setting (one at a time: Redis 6.2 takes one per
/// command; applying again is harmless).
async fn config_set(
    con: &mut MultiplexedConnection,
    settings: &[Setting],
) -> Result<(), InstanceError> {
    for s in settings {
        let _: String = redis::cmd("CONFIG")
            .arg("SET")
            .arg(s.name)
            .arg(&s.value)
            .query_async(con)
            .await?;
    }
    Ok(())
}
