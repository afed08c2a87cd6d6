//! Errors of the instance agent.

use std::path::PathBuf;

/// Everything that can stop the agent or fail one of its steps.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// A required setting is neither a flag nor in the environment.
    #[error("missing required setting: environment variable {var} is not set")]
    MissingSetting {
        /// The variable to set.
        var: &'static str,
    },
    /// A setting does not parse.
    #[error("invalid value of {var}: {reason}")]
    InvalidSetting {
        /// The variable (or flag) at fault.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file-system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The data directory belongs to another engine.
    #[error("data directory {} was initialised for {found}, not {expected}", path.display())]
    EngineMismatch {
        /// The data directory.
        path: PathBuf,
        /// Engine recorded in its marker.
        found: String,
        /// Engine configured now.
        expected: &'static str,
    },
    /// A server program is not installed.
    #[error("{program} not found on PATH{hint}")]
    ProgramNotFound {
        /// The program.
        program: &'static str,
        /// Where else it was looked for.
        hint: &'static str,
    },
    /// A program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A program exited unsuccessfully.
    #[error("{program} failed: {status}")]
    CommandFailed {
        /// The program.
        program: String,
        /// How it ended.
        status: super::reaper::ExitStatus,
    },
    /// PostgreSQL refuses to run as root.
    #[error("PostgreSQL refuses to run as root: run the agent as a non-root user (runAsUser)")]
    RunningAsRoot,
    /// A system call failed.
    #[error("{action}: {source}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: nix::Error,
    },
    /// The agent was asked to stop before it finished starting.
    #[error("stopped before the server started")]
    Interrupted,
    /// Talking to a server (this one or the upstream) failed.
    #[error(transparent)]
    Server(#[from] ProbeError),
    /// A replication step did not do what it should have.
    #[error("{0}")]
    Replication(String),
}

impl From<tokio_postgres::Error> for InstanceError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Server(ProbeError::Postgres(e))
    }
}

impl From<redis::RedisError> for InstanceError {
    fn from(e: redis::RedisError) -> Self {
        Self::Server(ProbeError::Redis(e))
    }
}

impl InstanceError {
    /// An I/O error with its action and path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// A probe of the server that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The deadline passed.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// PostgreSQL refused or failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Redis refused or failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The server answered something unexpected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}
