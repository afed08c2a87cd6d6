//! `Shard`: one shard of a ShardedCluster — a primary and its replicas. Created and
//! owned by the cluster's controller; users edit only `spec.primary` (a switchover).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, Engine, FailoverSpec, PvcRetentionPolicy, ReplicationSpec, Resources, StorageSpec,
};

/// One shard: `replicas + 1` instances of which one is the primary.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ringmaster.dev",
    version = "v1alpha1",
    kind = "Shard",
    namespaced,
    status = "ShardStatus",
    shortname = "shard",
    category = "ringmaster",
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.primary"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.maxLagBytes","description":"Largest replica lag in bytes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ShardSpec {
    /// The ShardedCluster this shard belongs to. Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: String,
    /// Position of the shard in its cluster (0-based). Immutable.
    #[x_kube(validation = Rule::new("self >= 0").message("index must not be negative"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("index is immutable"))]
    pub index: i32,
    /// Database engine. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("engine is immutable"))]
    pub engine: Engine,
    /// Image of the database containers.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Replicas besides the primary, 0 to 5.
    #[x_kube(validation = Rule::new("self >= 0 && self <= 5").message("replicas must be between 0 and 5"))]
    pub replicas: i32,
    /// Weight of the shard on the hash ring (positive).
    #[serde(default = "default_weight")]
    #[x_kube(validation = Rule::new("self >= 1").message("weight must be at least 1"))]
    pub weight: i32,
    /// Instance that should be primary. Set when the shard is created; changing it
    /// requests a planned switchover to the named instance (no acknowledged write is
    /// lost). It is a request: when an automatic failover picks another primary, the
    /// operator sets this field to the new primary, so the spec always names the
    /// primary the shard converges to. A value naming no instance of the shard, or one
    /// that cannot take over, is reported in the `Degraded` condition and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub primary: Option<String>,
    /// Persistent storage of each instance.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Compute resources of each database container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Resources,
    /// Replication mode.
    #[serde(default)]
    pub replication: ReplicationSpec,
    /// Automatic failover policy.
    #[serde(default)]
    pub failover: FailoverSpec,
    /// What happens to volumes of removed instances.
    #[serde(default)]
    pub pvc_retention: PvcRetentionPolicy,
}

fn default_weight() -> i32 {
    1
}

impl ShardSpec {
    /// Instances of the shard: the primary and its replicas.
    pub fn instances(&self) -> i32 {
        self.replicas + 1
    }
}

/// Role of an instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes.
    Primary,
    /// Follows the primary.
    Replica,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "primary" => Ok(Role::Primary),
            "replica" => Ok(Role::Replica),
            _ => Err("expected `primary` or `replica`".into()),
        }
    }
}

impl Role {
    /// The role as written in the `ringmaster.dev/role` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// Observed state of one instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Pod name.
    pub name: String,
    /// Role the instance has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Whether its Pod is Ready.
    pub ready: bool,
    /// Pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Replication lag behind the primary, in bytes (replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Replication lag in seconds, as the replica reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Whether the replica is connected to the primary and streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// Replication position: a PostgreSQL LSN (`0/3000148`) or a Redis offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// PostgreSQL timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
}

/// A completed failover or switchover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// When the new primary took over.
    pub time: Time,
    /// The previous primary.
    pub from: String,
    /// The new primary.
    pub to: String,
    /// Why: `PrimaryUnhealthy`, `Switchover`, ...
    pub reason: String,
    /// Seconds from detection to the new primary accepting writes.
    pub duration_seconds: f64,
}

/// Kind of a change of primary.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ChangeKind {
    /// Automatic: the primary was unhealthy.
    Failover,
    /// Planned: `spec.primary` was edited, or a rolling update moves the primary.
    Switchover,
}

/// Step of a change of primary in progress. The decision is written before any
/// action, so an operator restarted in the middle finishes the same change.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ChangePhase {
    /// Decided: the old primary is being fenced (failover) or stopped cleanly
    /// (switchover); the target is not promoted yet.
    Pending,
    /// The target has been asked to become primary; the other instances are being
    /// re-pointed to it.
    Promoting,
}

/// A failover or switchover in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryChange {
    /// Failover or switchover.
    pub kind: ChangeKind,
    /// The step reached.
    pub phase: ChangePhase,
    /// The primary being replaced.
    pub from: String,
    /// The instance being promoted.
    pub to: String,
    /// Why, e.g. `PrimaryUnhealthy: Pod not ready for 6s`.
    pub reason: String,
    /// When the change was decided (for failovers: when the primary was first seen
    /// unhealthy).
    pub started_at: Time,
    /// The epoch of the change (`status.epoch` once it is done).
    pub epoch: u64,
    /// When the current phase began: a target that is not primary 30 s after it was
    /// asked to be is given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
}

/// Observed state of a Shard.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The current primary instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Instances whose Pod is Ready.
    #[serde(default)]
    pub ready_instances: i32,
    /// `ready/desired` instances, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Largest replica lag in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_bytes: Option<i64>,
    /// Each instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    /// The last failover or switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
    /// Raised by every failover and switchover; the instance agents refuse commands
    /// of an older epoch.
    #[serde(default)]
    pub epoch: u64,
    /// The failover or switchover in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<PrimaryChange>,
    /// Since when the primary has been unhealthy (cleared when it recovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_unhealthy_since: Option<Time>,
    /// Candidates that failed to take over in the current failover: skipped, not
    /// retried, until the shard has a healthy primary again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_candidates: Vec<String>,
    /// `Ready`, `Progressing`, `Degraded`, `ReplicationConfigured`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ShardStatus {
    /// The status without the figures that move all the time (positions and lags),
    /// for telling a real change from drift.
    pub fn steady(&self) -> ShardStatus {
        let mut s = self.clone();
        s.max_lag_bytes = None;
        for i in &mut s.instances {
            i.position = None;
            i.lag_bytes = None;
            i.lag_seconds = None;
        }
        s
    }
}
