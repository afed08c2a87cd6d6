//! What differs between the engines: initialisation, configuration, the server
//! command, how to stop it and how to probe it.
//!
//! Each engine is one module; [`Engine`] dispatches to it. A new mode of
//! starting (a replica cloned from a primary) adds a [`Replication`] variant
//! that each engine's `initialise` and `render_config` handle.
//!
//! [`Replication`]: super::config::Replication

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

pub use self::postgres::Postgres;
pub use self::redis::Redis;

/// What a successful probe learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeInfo {
    /// The server's version, e.g. `15.14` or `7.0.15`.
    pub version: String,
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

    /// Initialises an empty data directory.
    pub async fn initialise(&self, reaper: &Reaper) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(pg) => pg.initialise(reaper).await,
            Self::Redis(r) => r.initialise(),
        }
    }

    /// Writes the server configuration from the current settings.
    pub fn render_config(&self) -> Result<(), InstanceError> {
        match self {
            Self::Postgres(pg) => pg.render_config(),
            Self::Redis(r) => r.render_config(),
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
        let (deadline, probe) = match self {
            Self::Postgres(pg) => (
                pg.probe_timeout(),
                futures::future::Either::Left(pg.probe()),
            ),
            Self::Redis(r) => (r.probe_timeout(), futures::future::Either::Right(r.probe())),
        };
        tokio::time::timeout(deadline, probe)
            .await
            .map_err(|_| ProbeError::Timeout(deadline))?
    }
}

/// Keeps the agent's secrets out of a child's environment.
pub fn scrub_secrets(cmd: &mut Command) {
    cmd.env_remove("RINGMASTER_PASSWORD")
        .env_remove("RINGMASTER_AGENT_TOKEN");
}
