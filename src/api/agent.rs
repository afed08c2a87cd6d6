//! The instance agent's wire documents: what the operator sends to `POST /role` and
//! what `GET /status` answers. Both ends use these types, so they cannot drift.
//!
//! Positions are engine-neutral byte counters: a PostgreSQL LSN as a 64-bit integer
//! (`pg_lsn - '0/0'`), a Redis replication offset as is. Lag in bytes is always the
//! primary's `position` minus a replica's `received` (or `replayed`).

use serde::{Deserialize, Serialize};

use super::common::ReplicationMode;
use super::shard::Role;

/// The role the operator asks an instance to take.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DesiredRole {
    /// Accept writes; keep a replication slot (PostgreSQL) for each of `replicas`.
    Primary,
    /// Follow `upstream`.
    Replica,
    /// Stop the server at once (SIGKILL of its process group when `stop` is
    /// `immediate`) and keep it stopped until another command comes. Used to fence an
    /// old primary before a replica is promoted.
    Fenced,
}

/// How a server that must stop being primary is stopped.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StopMode {
    /// A planned switchover: stop writes, let the replicas receive everything, then
    /// stop cleanly (PostgreSQL fast shutdown; Redis `FAILOVER TO <upstream>`).
    #[default]
    Clean,
    /// A fence: the server may be hung; SIGKILL its whole process group.
    Immediate,
}

/// Where a replica's primary is reached.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Instance (Pod) name of the primary.
    pub name: String,
    /// Its address (the Pod IP).
    pub host: String,
    /// Its database port.
    pub port: u16,
}

impl Upstream {
    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// `POST /role`: the state the operator wants the instance in. Idempotent: the agent
/// converges to it and persists it in its data directory, so a restarted agent keeps
/// it. A command whose `epoch` is lower than the one the agent holds is refused
/// (HTTP 409): an operator that lost its leadership cannot undo a later decision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoleCommand {
    /// The shard's epoch (`status.epoch`): raised by every failover and switchover.
    pub epoch: u64,
    /// The role to take.
    pub role: DesiredRole,
    /// The primary to follow (`replica`; for `fenced`, the primary-to-be, if known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// Instance names of the replicas (`primary`): PostgreSQL keeps one physical
    /// replication slot per name and, in `sync` mode, names them in
    /// `synchronous_standby_names = 'ANY 1 (...)'`.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Replication mode of the shard.
    #[serde(default)]
    pub mode: ReplicationMode,
    /// How to stop being primary (when the command takes that role away).
    #[serde(default)]
    pub stop: StopMode,
    /// Seconds a primary whose server crashed is held down before the agent restarts
    /// it itself, leaving the operator time to fail over instead (0: restart at once).
    #[serde(default)]
    pub hold_crashed_primary_seconds: u64,
}

/// Answer of `POST /role`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoleAnswer {
    /// The epoch the agent now holds.
    pub epoch: u64,
    /// Whether the command was taken (false: refused as stale).
    pub accepted: bool,
    /// Why it was refused, or what the agent does next.
    pub message: String,
}

/// One replica as its primary sees it (PostgreSQL `pg_stat_replication`, Redis
/// `INFO replication` `slaveN` lines).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedReplica {
    /// Instance name (PostgreSQL `application_name`; Redis: the address, matched by
    /// the operator to a Pod IP).
    pub name: String,
    /// `streaming`, `catchup`, `online`, ...
    pub state: String,
    /// Position the replica has confirmed (flushed for PostgreSQL, acked offset for
    /// Redis).
    pub position: u64,
    /// Whether it counts towards synchronous commit now.
    #[serde(default)]
    pub sync: bool,
}

/// Replication as one instance sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationReport {
    /// PostgreSQL timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
    /// Redis `master_replid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_id: Option<String>,
    /// Primary: its current write position. Replica: what it has received.
    pub position: u64,
    /// Replica: last position received and written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// Replica: last position replayed (applied). Redis applies what it receives:
    /// equal to `received`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<u64>,
    /// Replica: `host:port` it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Replica: connected to its upstream and streaming.
    #[serde(default)]
    pub streaming: bool,
    /// Replica: seconds since the last replayed transaction was committed on the
    /// primary, 0 when everything received is replayed (PostgreSQL); seconds since
    /// the last interaction with the primary (Redis `master_last_io_seconds_ago`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Primary: its replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ConnectedReplica>,
}

/// The body of `GET /status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// `redis` or `postgres`.
    pub engine: String,
    /// The role the running server has now (PostgreSQL `pg_is_in_recovery()`, Redis
    /// `INFO replication` `role`); when the server does not answer, the role it was
    /// last started in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The role the agent converges to (the last command, or the environment).
    pub desired_role: DesiredRole,
    /// The epoch of that command (0: from the environment).
    pub epoch: u64,
    /// The epoch of the command last applied to the running server: the agent has
    /// finished every step of older commands (a switchover it was running, for
    /// one). Absent while no command has been applied to the running server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_epoch: Option<u64>,
    /// The server answered an authenticated probe just now.
    pub server_up: bool,
    /// The data directory is initialised.
    pub data_dir_initialised: bool,
    /// Server version, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Process id of the server while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the running server started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Pod name.
    pub pod_name: String,
    /// Supervisor phase: `initialising`, `cloning`, `rewinding`, `starting`,
    /// `running`, `backingOff`, `held` (a crashed primary waiting for the operator),
    /// `fenced`, `failed`, `stopping`, `stopped`.
    pub phase: String,
    /// Restarts after unexpected exits.
    pub restarts: u32,
    /// Replication, when the server answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationReport>,
    /// The last error of converging to the desired role (clone, rewind, promote...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// PostgreSQL replication slot name of an instance: `[a-z0-9_]` only.
pub fn slot_name(instance: &str) -> String {
    instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses a PostgreSQL LSN (`16/B374D848`) into its 64-bit position.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

/// Formats a 64-bit position as a PostgreSQL LSN.
pub fn format_lsn(position: u64) -> String {
    format!("{:X}/{:X}", position >> 32, position & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(parse_lsn("1"), None);
    }

    #[test]
    fn slot_names_are_postgres_identifiers() {
        assert_eq!(slot_name("orders-0-1"), "orders_0_1");
        assert_eq!(slot_name("Cache.A-2"), "cache_a_2");
    }

    #[test]
    fn command_defaults() {
        let c: RoleCommand =
            serde_json::from_str(r#"{"epoch":3,"role":"replica","upstream":{"name":"c-0-0","host":"127.20.0.5","port":5432}}"#)
                .unwrap();
        assert_eq!(c.stop, StopMode::Clean);
        assert_eq!(c.mode, ReplicationMode::Async);
        assert!(c.replicas.is_empty());
        assert_eq!(c.upstream.unwrap().address(), "127.20.0.5:5432");
    }
}
