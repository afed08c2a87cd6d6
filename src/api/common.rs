//! Types shared by the resources: engine, storage, replication, failover, conditions.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The database engine of a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Redis: key-value shards routed by `ringmaster router`.
    Redis,
    /// PostgreSQL: tables sharded by a shard-key column.
    Postgres,
}

impl Engine {
    /// The engine's name as written in resources and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Postgres => "postgres",
        }
    }

    /// The server version used when the spec names none.
    pub fn default_version(self) -> &'static str {
        match self {
            Engine::Redis => "7.0",
            Engine::Postgres => "15",
        }
    }

    /// The port the database server listens on.
    pub fn port(self) -> i32 {
        i32::from(self.default_port())
    }

    /// [`Engine::port`] as a socket port.
    pub fn default_port(self) -> u16 {
        match self {
            Engine::Redis => 6379,
            Engine::Postgres => 5432,
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redis" => Ok(Engine::Redis),
            "postgres" => Ok(Engine::Postgres),
            _ => Err("expected `redis` or `postgres`".into()),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Persistent storage of each instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each instance's volume, as a Kubernetes quantity (e.g. `1Gi`). It can
    /// grow (when the storage class allows expansion) but never shrink.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("storage.size must be a Kubernetes quantity such as 1Gi or 500Mi"))]
    #[x_kube(validation = Rule::new("!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0").message("storage.size can only grow: volumes are never shrunk; set it back to at least its previous value"))]
    pub size: String,
    /// StorageClass of the volumes; the cluster's default class when unset. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage.storageClassName is immutable: existing volumes cannot move to another class"))]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "1Gi".into()
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// What happens to an instance's PersistentVolumeClaim when its instance goes away.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PvcRetention {
    /// The claim (and with the default reclaim policy, its data) is deleted.
    #[default]
    Delete,
    /// The claim is kept; a later instance of the same name reuses it.
    Retain,
}

/// PersistentVolumeClaim retention of removed instances.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// When `replicas` is lowered: `Delete` (default) or `Retain` the removed replicas' claims.
    #[serde(default)]
    pub when_scaled: PvcRetention,
    /// When the ShardedCluster is deleted: `Delete` (default) or `Retain` every claim.
    #[serde(default)]
    pub when_deleted: PvcRetention,
}

/// How writes are acknowledged.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// The primary acknowledges before replicas have the write (default; a failover
    /// may lose the most recent writes).
    #[default]
    Async,
    /// A write is acknowledged once at least one replica has it.
    Sync,
}

/// Replication settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// `async` (default) or `sync`.
    #[serde(default)]
    pub mode: ReplicationMode,
}

/// Automatic failover of unhealthy primaries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Whether an unhealthy primary is replaced automatically (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long a primary must be unhealthy before it is failed over, as a duration
    /// such as `5s` or `1m`.
    #[serde(default = "default_unhealthy_after")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(ms|s|m)$')").message("failover.unhealthyAfter must be a duration such as 500ms, 5s or 1m"))]
    pub unhealthy_after: String,
    /// A replica lagging more than this many bytes is never promoted unless
    /// `allowDataLoss` is true.
    #[serde(default = "default_max_lag_bytes")]
    #[x_kube(validation = Rule::new("self >= 0").message("failover.maxLagBytes must not be negative"))]
    pub max_lag_bytes: i64,
    /// Promote a lagging replica rather than wait for the primary (may lose writes).
    #[serde(default)]
    pub allow_data_loss: bool,
}

fn default_true() -> bool {
    true
}

fn default_unhealthy_after() -> String {
    "5s".into()
}

fn default_max_lag_bytes() -> i64 {
    16 * 1024 * 1024
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            unhealthy_after: default_unhealthy_after(),
            max_lag_bytes: default_max_lag_bytes(),
            allow_data_loss: false,
        }
    }
}

/// Compute resources of the database container.
pub type Resources = Option<ResourceRequirements>;

/// The standard Kubernetes condition, as used in every status of this API.
pub type Condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Condition types used in statuses.
pub mod condition {
    /// Everything requested is running and serving.
    pub const READY: &str = "Ready";
    /// The operator is changing something towards the spec.
    pub const PROGRESSING: &str = "Progressing";
    /// Serving, but with less redundancy or capacity than requested.
    pub const DEGRADED: &str = "Degraded";
    /// Replication between a shard's instances is set up.
    pub const REPLICATION_CONFIGURED: &str = "ReplicationConfigured";
}
