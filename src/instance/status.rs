//! What the agent knows about its server, shared by the convergence loop and the
//! API: the desired state (with its role file), the phase, the running server.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::watch;

use super::config::Config;
use super::engine::{Engine, ProbeInfo};
use super::error::{InstanceError, ProbeError};
use super::role::{DesiredState, Role, RoleCommand, RoleFile};
use crate::api::agent::{AgentStatus, RoleAnswer};

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// The data directory is being prepared.
    Initialising,
    /// A replica's data directory is being copied from its upstream.
    Cloning,
    /// A former primary's data directory is being rewound to its upstream.
    Rewinding,
    /// A replica waits for the operator to name its upstream.
    Waiting,
    /// The server runs and has not answered since it started.
    Starting,
    /// The server runs and has answered.
    Running,
    /// The server died and will be restarted after a back-off.
    BackingOff,
    /// A crashed primary is held down so that the operator can fail over.
    Held,
    /// The server was killed on the operator's request and stays down.
    Fenced,
    /// The server died too often: it is no longer restarted.
    Failed,
    /// The agent is stopping the server.
    Stopping,
    /// The server is stopped.
    Stopped,
}

impl Phase {
    /// The phase as `/status` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialising => "initialising",
            Self::Cloning => "cloning",
            Self::Rewinding => "rewinding",
            Self::Waiting => "waiting",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::BackingOff => "backingOff",
            Self::Held => "held",
            Self::Fenced => "fenced",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
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
    /// The role the running server was started in.
    pub started_as: Option<Role>,
    /// When the running server was started.
    pub started_at: Option<jiff::Timestamp>,
    /// The server has answered a probe at least once (startup probe).
    pub answered_once: bool,
    /// Version from the last successful probe.
    pub server_version: Option<String>,
    /// Restarts after unexpected exits since the agent started.
    pub restarts: u32,
    /// The last error of converging to the desired state (cleared on success).
    pub last_error: Option<String>,
    /// The epoch of the desired state last applied to the running server.
    pub applied_epoch: Option<u64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            phase: Phase::Initialising,
            data_dir_initialised: false,
            pid: None,
            started_as: None,
            started_at: None,
            answered_once: false,
            server_version: None,
            restarts: 0,
            last_error: None,
            applied_epoch: None,
        }
    }
}

/// What `POST /role` did with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Taken (or already held): the agent converges to it.
    Accepted(RoleAnswer),
    /// Refused: its epoch is lower than the one held.
    Stale(RoleAnswer),
}

/// State shared by the convergence loop and the HTTP API.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub config: Arc<Config>,
    /// The engine, for probes.
    pub engine: Arc<Engine>,
    state: Mutex<State>,
    desired: watch::Sender<DesiredState>,
    role_file: RoleFile,
}

impl Shared {
    /// Fresh state for `engine`, converging to `desired` (persisted in `role_file`).
    pub fn new(
        config: Arc<Config>,
        engine: Arc<Engine>,
        desired: DesiredState,
        role_file: RoleFile,
    ) -> Self {
        Self {
            config,
            engine,
            state: Mutex::new(State::default()),
            desired: watch::Sender::new(desired),
            role_file,
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

    /// The desired state now.
    pub fn desired(&self) -> DesiredState {
        self.desired.borrow().clone()
    }

    /// A receiver notified of every accepted command.
    pub fn subscribe(&self) -> watch::Receiver<DesiredState> {
        self.desired.subscribe()
    }

    /// Takes a `POST /role` command: refuses a stale epoch, else persists it and
    /// wakes the convergence loop (unless it asks for what is already held).
    pub fn submit(&self, command: &RoleCommand) -> Result<Submitted, InstanceError> {
        let mut outcome = Ok(None);
        self.desired.send_if_modified(|held| {
            if command.epoch < held.epoch {
                return false;
            }
            if !held.differs_from(command) {
                outcome = Ok(Some(false));
                return false;
            }
            let next = DesiredState::from_command(command, held.last_server_role);
            outcome = self.role_file.save(&next).map(|()| Some(true));
            let saved = outcome.is_ok();
            if saved {
                *held = next;
            }
            saved
        });
        let held = self.desired.borrow().epoch;
        Ok(match outcome? {
            None => Submitted::Stale(RoleAnswer {
                epoch: held,
                accepted: false,
                message: format!(
                    "epoch {} is older than the epoch {held} the agent holds",
                    command.epoch
                ),
            }),
            Some(changed) => Submitted::Accepted(RoleAnswer {
                epoch: held,
                accepted: true,
                message: if changed {
                    format!("converging to {:?}", command.role).to_lowercase()
                } else {
                    "already held".into()
                },
            }),
        })
    }

    /// Records (and persists) the role the server is about to be started in,
    /// without waking the convergence loop.
    pub fn record_server_role(&self, role: Role) -> Result<(), InstanceError> {
        let mut result = Ok(());
        self.desired.send_if_modified(|held| {
            if held.last_server_role != Some(role) {
                let next = DesiredState {
                    last_server_role: Some(role),
                    ..held.clone()
                };
                result = self.role_file.save(&next);
                if result.is_ok() {
                    *held = next;
                }
            }
            false
        });
        result
    }

    /// Probes the server now (when it runs) and records what it learnt.
    pub async fn probe(&self) -> Result<ProbeInfo, ProbeError> {
        let pid = self.running_pid()?;
        let info = self.engine.probe().await?;
        self.credit(pid, &info);
        Ok(info)
    }

    /// The pid of the running server, if one runs.
    fn running_pid(&self) -> Result<u32, ProbeError> {
        self.snapshot()
            .pid
            .ok_or_else(|| ProbeError::Unexpected("the server is not running".into()))
    }

    /// Records what a probe of the server `pid` learnt, if it still runs.
    fn credit(&self, pid: u32, info: &ProbeInfo) {
        self.update(|s| {
            // only credit the server that was probed
            if s.pid == Some(pid) {
                s.answered_once = true;
                s.server_version = Some(info.version.clone());
                if s.phase == Phase::Starting {
                    s.phase = Phase::Running;
                }
            }
        });
    }

    /// The `/status` body, with `server_up`, `role` and `replication` from the
    /// server just now (one connection).
    pub async fn status(&self) -> AgentStatus {
        let view = match self.running_pid() {
            Ok(pid) => self
                .engine
                .probe_and_report()
                .await
                .ok()
                .inspect(|v| self.credit(pid, &v.info)),
            Err(_) => None,
        };
        let server_up = view.is_some();
        let (role, replication) = view
            .and_then(|v| v.role_and_report)
            .map_or((None, None), |(role, report)| (Some(role), Some(report)));
        let s = self.snapshot();
        let desired = self.desired();
        AgentStatus {
            engine: self.config.engine.as_str().into(),
            role: role.or(s.started_as),
            desired_role: desired.role,
            epoch: desired.epoch,
            applied_epoch: s.applied_epoch,
            server_up,
            data_dir_initialised: s.data_dir_initialised,
            server_version: s.server_version,
            pid: s.pid,
            started_at: s.started_at.map(|t| t.to_string()),
            pod_name: self.config.pod_name.clone(),
            phase: s.phase.as_str().into(),
            restarts: s.restarts,
            replication,
            last_error: s.last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_camel_case() {
        for p in [
            Phase::BackingOff,
            Phase::Held,
            Phase::Cloning,
            Phase::Fenced,
        ] {
            assert_eq!(
                serde_json::to_value(p).unwrap().as_str().unwrap(),
                p.as_str()
            );
        }
    }
}
