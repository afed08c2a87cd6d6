//! What the agent knows about its server, shared by the supervisor and the API.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::config::Config;
use super::engine::{Engine, ProbeInfo};
use super::error::ProbeError;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// The data directory is being prepared.
    Initialising,
    /// The server runs and has not answered since it started.
    Starting,
    /// The server runs and has answered.
    Running,
    /// The server died and will be restarted after a back-off.
    BackingOff,
    /// The server died too often: it is no longer restarted.
    Failed,
    /// The agent is stopping the server.
    Stopping,
    /// The server is stopped.
    Stopped,
}

/// Mutable state of the instance.
#[derive(Debug, Clone)]
pub struct State {
    /// Current phase.
    pub phase: Phase,
    /// The data directory holds an initialised server.
    pub data_dir_initialised: bool,
    /// Process id of the running server.
    pub pid: Option<u32>,
    /// When the running server was started.
    pub started_at: Option<jiff::Timestamp>,
    /// The server has answered a probe at least once (startup probe).
    pub answered_once: bool,
    /// Version from the last successful probe.
    pub server_version: Option<String>,
    /// Restarts after unexpected exits since the agent started.
    pub restarts: u32,
}

impl Default for State {
    fn default() -> Self {
        Self {
            phase: Phase::Initialising,
            data_dir_initialised: false,
            pid: None,
            started_at: None,
            answered_once: false,
            server_version: None,
            restarts: 0,
        }
    }
}

/// The body of `GET /status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    /// `redis` or `postgres`.
    pub engine: &'static str,
    /// `primary` or `replica` (the role at creation, for now).
    pub role: &'static str,
    /// The server answered an authenticated probe just now.
    pub server_up: bool,
    /// The data directory is initialised.
    pub data_dir_initialised: bool,
    /// Server version, once known.
    pub server_version: Option<String>,
    /// Process id of the server while it runs.
    pub pid: Option<u32>,
    /// When the running server started (RFC 3339).
    pub started_at: Option<String>,
    /// Pod name.
    pub pod_name: String,
    /// Supervisor phase.
    pub phase: Phase,
    /// Restarts after unexpected exits.
    pub restarts: u32,
}

/// State shared by the supervisor and the HTTP API.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub config: Arc<Config>,
    /// The engine, for probes.
    pub engine: Arc<Engine>,
    state: Mutex<State>,
}

impl Shared {
    /// Fresh state for `engine`.
    pub fn new(config: Arc<Config>, engine: Arc<Engine>) -> Self {
        Self {
            config,
            engine,
            state: Mutex::new(State::default()),
        }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> State {
        self.lock().clone()
    }

    /// Changes the state.
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Probes the server now (when it runs) and records what it learnt.
    pub async fn probe(&self) -> Result<ProbeInfo, ProbeError> {
        let pid = self.snapshot().pid;
        if pid.is_none() {
            return Err(ProbeError::Unexpected("the server is not running".into()));
        }
        let info = self.engine.probe().await?;
        self.update(|s| {
            // only credit the server that was probed
            if s.pid == pid {
                s.answered_once = true;
                s.server_version = Some(info.version.clone());
                if s.phase == Phase::Starting {
                    s.phase = Phase::Running;
                }
            }
        });
        Ok(info)
    }

    /// The `/status` body, with `server_up` from a probe made just now.
    pub async fn status(&self) -> StatusBody {
        let server_up = self.probe().await.is_ok();
        let s = self.snapshot();
        StatusBody {
            engine: self.config.engine.as_str(),
            role: self.config.role.as_str(),
            server_up,
            data_dir_initialised: s.data_dir_initialised,
            server_version: s.server_version,
            pid: s.pid,
            started_at: s.started_at.map(|t| t.to_string()),
            pod_name: self.config.pod_name.clone(),
            phase: s.phase,
            restarts: s.restarts,
        }
    }
}
