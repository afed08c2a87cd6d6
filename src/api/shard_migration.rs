//! `ShardMigration`: moves the hash ranges whose owner differs between two ring
//! versions from their old shard to their new one with a dual-write saga (Preparing →
//! Backfill → Verify → SwitchReads → SwitchWrites → Cleanup), every phase checkpointed
//! in status. The operator creates one when a ShardedCluster's shards or weights
//! change; see `docs/migration.md`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Condition;
use crate::ring::RingDescriptor;

/// A move of hash ranges between shards of one cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ringmaster.dev",
    version = "v1alpha1",
    kind = "ShardMigration",
    namespaced,
    status = "ShardMigrationStatus",
    shortname = "smig",
    category = "ringmaster",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step","priority":1}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"To Ring","type":"integer","jsonPath":".spec.toRing.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.toRing.version == self.fromRing.version + 1").message("toRing.version must be fromRing.version + 1: a migration moves the ring one version forward"))]
#[serde(rename_all = "camelCase")]
pub struct ShardMigrationSpec {
    /// The ShardedCluster whose shards exchange ranges. Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: String,
    /// The ring in effect when the migration starts (the cluster's `status.ring`).
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("fromRing is immutable: create a new migration instead"))]
    pub from_ring: RingDescriptor,
    /// The ring in effect when it completes: every range whose owner differs between
    /// the two rings moves from its old owner to its new one. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("toRing is immutable: create a new migration instead"))]
    pub to_ring: RingDescriptor,
    /// Keys copied or deleted per batch, 1 to 100000 (default 500).
    #[serde(default = "default_batch_size")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("batchSize must be between 1 and 100000"))]
    pub batch_size: i32,
    /// How the copy is verified before reads switch.
    #[serde(default)]
    pub verification: VerificationMode,
    /// Stop between batches and before each phase change while true.
    #[serde(default)]
    pub paused: bool,
    /// Undo the migration: run the compensations of the phases reached in reverse,
    /// leaving the data on the sources. Possible until writes have switched; cannot
    /// be set back to false.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("rollback cannot be undone: once requested it runs to RolledBack; create a new migration afterwards"))]
    pub rollback: bool,
}

fn default_batch_size() -> i32 {
    500
}

/// How a copy is verified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerificationMode {
    /// Key or row counts per range only.
    Counts,
    /// Counts and a sample of values (default).
    #[default]
    Sample,
    /// Counts and every value.
    Full,
}

/// What the routers do with a migration's moving ranges; the cluster controller
/// publishes it in the routing table (see `docs/migration.md`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MigrationRouting {
    /// Reads from the sources, writes to both sides.
    DualWrite,
    /// Reads from the targets, writes to both sides.
    SwitchReads,
    /// Reads from the targets, writes held.
    Frozen,
    /// The target ring is in effect: the targets own the ranges.
    Committed,
}

/// Progress of the ranges moving from one shard to another.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveProgress {
    /// Shard index the ranges leave.
    pub source: i32,
    /// Shard index they go to.
    pub target: i32,
    /// How many hash ranges move.
    pub ranges: i32,
    /// Their share of the ring, e.g. `8.3%`.
    pub share: String,
    /// Keys copied so far.
    pub copied: i64,
    /// Keys in the ranges on the source (counted in Verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

/// Resume point of a batched pass over one shard's keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The shard index.
    pub shard: i32,
    /// The SCAN cursor to continue from (decimal).
    pub cursor: String,
    /// Whether the pass over this shard has finished.
    pub done: bool,
}

/// Outcome of a verification.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationResult {
    /// Whether source and target agree.
    pub passed: bool,
    /// Keys or rows compared.
    pub checked: i64,
    /// Keys or rows that differ.
    pub mismatches: i64,
    /// What was found.
    pub message: String,
}

/// Observed state of a ShardMigration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardMigrationStatus {
    /// `Pending`, `Preparing`, `Backfill`, `Verify`, `SwitchReads`, `SwitchWrites`,
    /// `Cleanup`, `Completed`, `RollingBack`, `RolledBack` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The step within the phase (e.g. `Freezing`, `Draining`, `Committing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Copied share of the keys, e.g. `42%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What the routers must do with the moving ranges now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<MigrationRouting>,
    /// The routing-table version every router must have applied before the
    /// current step goes on (the barrier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barrier_version: Option<i64>,
    /// Progress per source and target shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub moves: Vec<MoveProgress>,
    /// Resume points of the current pass (copy, cleanup or rollback), per shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub checkpoints: Vec<Checkpoint>,
    /// Keys copied (backfill and dirty-key re-copies).
    #[serde(default)]
    pub keys_copied: i64,
    /// Bytes of serialized values copied.
    #[serde(default)]
    pub bytes_copied: i64,
    /// The latest verification's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationResult>,
    /// Verifications that failed and led to a re-copy.
    #[serde(default)]
    pub verify_attempts: i32,
    /// When the migration started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current phase started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<Time>,
    /// When it completed or was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why it rolled back or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `Ready` (Completed), `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
