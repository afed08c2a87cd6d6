//! What differs between the engines: initialisation, cloning and rewinding,
//! configuration for a desired role, the server command, how to stop it, how to
//! probe it, and what it does for replication while it runs.
//!
//! Each engine is one module; [`Engine`] dispatches to it. Redis needs no clone
//! (a replica starts empty and full-syncs) and no rewind (a full resync replaces
//! its data), and demotes in place (`FAILOVER`); PostgreSQL clones with
//! `pg_basebackup`, rewinds with `pg_rewind` and demotes by restarting as a standby.

mod postgres;
mod programs;
mod redis;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::config::{Config, EngineKind};
use super::error::{InstanceError, ProbeError};
use super::reaper::Reaper;
use super::role::{DesiredState, Role, Upstream};
use crate::api::agent::ReplicationReport;

pub use self::postgres::Postgres;
pub use self::redis::Redis;

/// What a successful probe learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeInfo {
    /// The server's version, e.g. `15.14` or `7.0.15`.
    pub version: String,
}

/// What `GET /status` learns from the running server over one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerView {
    /// What the probe learnt.
    pub info: ProbeInfo,
    /// What the server is now and its replication; `None` when the server answered
    /// the probe but not this.
    pub role_and_report: Option<(Role, ReplicationReport)>,
}

/// One step of stopping a server: send `signal`, then wait `wait` (`None`:
/// for as long as it takes) before the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopStep {
    /// Signal to send.
    pub signal: Signal,
    /// How long to wait for the exit before escalating.
    pub wait: Option<Duration>,
}

/// Whether a stopped data directory must be rewound before it follows its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindNeed {
    /// It can start as a replica now.
    No,
    /// It must be rewound first (the upstream is a primary).
    Yes,
    /// It must be rewound, but the upstream is not a primary (yet).
    WaitForUpstream,
}

/// The database engine of this instance.
#[derive(Debug)]
pub enum Engine {
    /// PostgreSQL.
    Postgres(Postgres),
    /// Redis.
    Redis(Redis),
}

impl Engine {
    /// The engine `config` asks for, with its programs located.
    pub fn new(config: Arc<Config>) -> Result<Self, InstanceError> {
        Ok(match config.engine {
            EngineKind::Postgres => Self::Postgres(Postgres::new(config)?),
            EngineKind::Redis => Self::Redis(Redis::new(config)?),
        })
    }

    /// Entries of the data directory that initialisation creates (removed
    /// when an initialisation was interrupted).
    pub fn owned_entries(&self) -> &'static [&'static str] {
        match self {
            Self::Postgres(_) => Postgres::OWNED_ENTRIES,
            Self::Redis(_) => Redis::OWNED_ENTRIES,
        }
    }

    /// Initialises an empty data directory for a primary.
    pub async fn initialise(&self, reaper: &Reaper) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(pg) => pg.initialise(reaper).await,
            Self::Redis(r) => r.initialise(),
        }
    }

    /// Initialises an empty data directory for a replica of `upstream`.
    pub async fn clone_from(
        &self,
        upstream: &Upstream,
        reaper: &Reaper,
    ) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(pg) => pg.clone_from(upstream, reaper).await,
            Self::Redis(r) => r.initialise(),
        }
    }

    /// Whether the stopped data directory, last started as `last_server_role`,
    /// must be rewound before it follows `upstream`.
    pub async fn rewind_need(
        &self,
        last_server_role: Option<Role>,
        upstream: &Upstream,
        reaper: &Reaper,
    ) -> Result<RewindNeed, InstanceError> {
        match self {
            Self::Postgres(pg) => pg.rewind_need(last_server_role, upstream, reaper).await,
            Self::Redis(_) => Ok(RewindNeed::No),
        }
    }

    /// Rewinds the stopped data directory to `upstream`.
    pub async fn rewind(&self, upstream: &Upstream, reaper: &Reaper) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(pg) => pg.rewind(upstream, reaper).await,
            Self::Redis(_) => Ok(()),
        }
    }

    /// Moves a data directory that cannot be rewound aside, so that it is cloned
    /// again; `None` when the engine never needs it.
    pub fn set_aside(&self) -> Result<Option<std::path::PathBuf>, InstanceError> {
        match self {
            Self::Postgres(pg) => pg.set_aside().map(Some),
            Self::Redis(_) => Ok(None),
        }
    }

    /// Whether a primary becomes a replica while it runs (Redis `FAILOVER`,
    /// `REPLICAOF`) rather than by a restart as a standby (PostgreSQL).
    pub fn demotes_in_place(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Writes the server configuration for `desired`.
    pub fn render_config(&self, desired: &DesiredState) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(pg) => pg.render_config(desired),
            Self::Redis(r) => r.render_config(desired),
        }
    }

    /// Makes the running server a primary.
    pub async fn promote(&self) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(pg) => pg.promote().await,
            Self::Redis(r) => r.promote().await,
        }
    }

    /// Applies `desired` (already rendered) to the running server without a
    /// restart: upstream, replica set, sync settings, replication user and slots.
    pub async fn apply_live(&self, desired: &DesiredState) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(pg) => pg.apply_live(desired).await,
            Self::Redis(r) => r.apply_live(desired).await,
        }
    }

    /// Hands the primary role to `upstream` while running and follows it
    /// (engines that demote in place).
    pub async fn switchover_to(&self, upstream: &Upstream) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(_) => Err(InstanceError::Replication(
                "PostgreSQL switches over by a restart as a standby".into(),
            )),
            Self::Redis(r) => r.switchover_to(upstream).await,
        }
    }

    /// Probes the running server and reads what it is now and its replication, over
    /// one connection (`GET /status`): each step within the probe deadline. The role
    /// and report are `None` when only the probe succeeded.
    pub async fn probe_and_report(&self) -> Result<ServerView, ProbeError> {
        match self {
            Self::Postgres(pg) => pg.probe_and_report().await,
            Self::Redis(r) => r.probe_and_report().await,
        }
    }

    /// Whether `upstream` answers as a primary (PostgreSQL; Redis: always `false`, a
    /// Redis replica resynchronises by itself and is never restarted to do so).
    pub async fn upstream_is_primary(&self, upstream: &Upstream) -> bool {
        match self {
            Self::Postgres(pg) => pg.upstream_is_primary(upstream).await,
            Self::Redis(_) => false,
        }
    }

    /// Replication as the running server sees it, within the probe deadline.
    pub async fn replication_report(&self) -> Result<ReplicationReport, ProbeError> {
        match self {
            Self::Postgres(pg) => within(pg.probe_timeout(), pg.replication_report()).await,
            Self::Redis(r) => within(r.probe_timeout(), r.replication_report()).await,
        }
    }

    /// The command that runs the server in the foreground.
    pub fn server_command(&self) -> Command {
        let mut cmd = match self {
            Self::Postgres(pg) => pg.server_command(),
            Self::Redis(r) => r.server_command(),
        };
        scrub_secrets(&mut cmd);
        cmd
    }

    /// How to stop the server: clean first, harder after each step's wait.
    pub fn stop_plan(&self) -> Vec<StopStep> {
        match self {
            Self::Postgres(pg) => pg.stop_plan(),
            Self::Redis(r) => r.stop_plan(),
        }
    }

    /// The signal the server gets if the agent dies without stopping it.
    pub fn parent_death_signal(&self) -> Signal {
        match self {
            Self::Postgres(_) => Signal::SIGQUIT,
            Self::Redis(_) => Signal::SIGTERM,
        }
    }

    /// Connects with the credentials and runs a trivial command, within the
    /// probe deadline.
    pub async fn probe(&self) -> Result<ProbeInfo, ProbeError> {
        match self {
            Self::Postgres(pg) => within(pg.probe_timeout(), pg.probe()).await,
            Self::Redis(r) => within(r.probe_timeout(), r.probe()).await,
        }
    }
}

/// `work`, or [`ProbeError::Timeout`] when it takes longer than `deadline`.
async fn within<T>(
    deadline: Duration,
    work: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| ProbeError::Timeout(deadline))?
}

/// Keeps the agent's secrets out of a child's environment.
pub fn scrub_secrets(cmd: &mut Command) {
    cmd.env_remove("RINGMASTER_PASSWORD")
        .env_remove("RINGMASTER_REPLICATION_PASSWORD")
        .env_remove("RINGMASTER_AGENT_TOKEN");
}
