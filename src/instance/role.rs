//! The role the agent converges to: the operator's last `POST /role` command, or at
//! first start the Pod's environment.
//!
//! Persisted as `<data dir>/.ringmaster-role.json` so that a restarted agent keeps
//! the last decision. At start the agent takes the file when its epoch is at least
//! the environment's `RINGMASTER_EPOCH`, else the environment (a Pod created after a
//! failover carries the newer epoch).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::error::InstanceError;
use super::fsutil;
pub use crate::api::ReplicationMode;
pub use crate::api::agent::{DesiredRole, RoleCommand, StopMode, Upstream};
pub use crate::api::shard::Role;

/// File name of the persisted desired state, in the data directory.
pub const ROLE_FILE: &str = ".ringmaster-role.json";

/// What the agent converges to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    /// Epoch of the decision (0: from the environment of the first start).
    pub epoch: u64,
    /// Role to take.
    pub role: DesiredRole,
    /// Primary to follow (replicas). A replica without one waits for a command.
    pub upstream: Option<Upstream>,
    /// Replica instance names (primary: slots and synchronous standby names).
    pub replicas: Vec<String>,
    /// Replication mode.
    pub mode: ReplicationMode,
    /// How to stop being primary.
    pub stop: StopMode,
    /// Seconds a crashed primary is held down before the agent restarts it itself.
    pub hold_crashed_primary_seconds: u64,
    /// The role the server was last started in (decides whether a PostgreSQL data
    /// directory may have diverged and needs `pg_rewind` before it follows).
    #[serde(default)]
    pub last_server_role: Option<Role>,
}

impl DesiredState {
    /// The state a command asks for, keeping what only the agent knows.
    pub fn from_command(command: &RoleCommand, last_server_role: Option<Role>) -> Self {
        Self {
            epoch: command.epoch,
            role: command.role,
            upstream: command.upstream.clone(),
            replicas: command.replicas.clone(),
            mode: command.mode,
            stop: command.stop,
            hold_crashed_primary_seconds: command.hold_crashed_primary_seconds,
            last_server_role,
        }
    }
}

impl DesiredState {
    /// The state the Pod's environment asks for (epoch `RINGMASTER_EPOCH`): a
    /// replica from the environment has no upstream and waits for the operator.
    pub fn from_config(config: &Config) -> Self {
        Self {
            epoch: config.epoch,
            role: match config.role {
                Role::Primary => DesiredRole::Primary,
                Role::Replica => DesiredRole::Replica,
            },
            upstream: None,
            replicas: Vec::new(),
            mode: config.replication_mode,
            stop: StopMode::Clean,
            hold_crashed_primary_seconds: config.hold_crashed_primary_seconds,
            last_server_role: None,
        }
    }

    /// The state to start with: the persisted one when its epoch is at least the
    /// environment's, else the environment's (keeping what the file knows about the
    /// server's last start).
    pub fn resolve(persisted: Option<Self>, from_env: Self) -> Self {
        match persisted {
            Some(p) if p.epoch >= from_env.epoch => p,
            Some(p) => Self {
                last_server_role: p.last_server_role,
                ..from_env
            },
            None => from_env,
        }
    }

    /// Whether `command` asks for something else than this state.
    pub fn differs_from(&self, command: &RoleCommand) -> bool {
        *self != Self::from_command(command, self.last_server_role)
    }
}

/// The role file in the data directory.
#[derive(Debug, Clone)]
pub struct RoleFile {
    path: PathBuf,
}

impl RoleFile {
    /// The role file of data directory `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(ROLE_FILE),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted state, if any.
    pub fn load(&self) -> Result<Option<DesiredState>, InstanceError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                InstanceError::io("parsing", &self.path, std::io::Error::other(e.to_string()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(InstanceError::io("reading", &self.path, e)),
        }
    }

    /// Persists `state` atomically (temporary file, fsync, rename, fsync).
    pub fn save(&self, state: &DesiredState) -> Result<(), InstanceError> {
        let json = serde_json::to_vec_pretty(state).expect("a desired state serialises");
        fsutil::write_atomic(&self.path, &json, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::config::{EngineKind, test_config};

    fn command(epoch: u64, role: DesiredRole) -> RoleCommand {
        RoleCommand {
            epoch,
            role,
            upstream: Some(Upstream {
                name: "c-0-1".into(),
                host: "127.0.0.9".into(),
                port: 5432,
            }),
            replicas: vec![],
            mode: ReplicationMode::Sync,
            stop: StopMode::Immediate,
            hold_crashed_primary_seconds: 3,
        }
    }

    #[test]
    fn environment_state_waits_for_an_upstream() {
        let mut c = test_config(EngineKind::Postgres);
        c.role = Role::Replica;
        c.epoch = 4;
        let s = DesiredState::from_config(&c);
        assert_eq!(s.role, DesiredRole::Replica);
        assert_eq!(s.epoch, 4);
        assert!(s.upstream.is_none());
    }

    #[test]
    fn the_file_wins_unless_the_environment_is_newer() {
        let env = DesiredState::from_config(&test_config(EngineKind::Postgres));
        let mut file = DesiredState::from_command(&command(3, DesiredRole::Replica), None);
        file.last_server_role = Some(Role::Primary);
        assert_eq!(DesiredState::resolve(Some(file.clone()), env.clone()), file);
        let newer_env = DesiredState {
            epoch: 5,
            ..env.clone()
        };
        let r = DesiredState::resolve(Some(file.clone()), newer_env.clone());
        assert_eq!(r.epoch, 5);
        assert_eq!(r.role, DesiredRole::Primary);
        assert_eq!(
            r.last_server_role,
            Some(Role::Primary),
            "kept from the file"
        );
        // equal epochs: the file (a command at the environment's epoch) wins
        let same = DesiredState {
            epoch: 3,
            ..env.clone()
        };
        assert_eq!(DesiredState::resolve(Some(file.clone()), same), file);
        assert_eq!(DesiredState::resolve(None, env.clone()), env);
    }

    #[test]
    fn repeated_commands_do_not_differ() {
        let c = command(3, DesiredRole::Replica);
        let s = DesiredState::from_command(&c, Some(Role::Replica));
        assert!(!s.differs_from(&c));
        assert!(s.differs_from(&command(4, DesiredRole::Replica)));
    }

    #[test]
    fn the_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = RoleFile::new(dir.path());
        assert_eq!(f.load().unwrap(), None);
        let s = DesiredState::from_command(&command(9, DesiredRole::Fenced), Some(Role::Primary));
        f.save(&s).unwrap();
        assert_eq!(f.load().unwrap(), Some(s));
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert!(text.contains("\"lastServerRole\": \"primary\""), "{text}");
    }
}
