//! `ShardMigration`: moves hash ranges from source shards to target shards with a
//! dual-write saga (Preparing → Backfill → Verify → SwitchReads → SwitchWrites →
//! Cleanup), every phase checkpointed in status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Condition;

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
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("(has(self.moves) && size(self.moves) > 0) || has(self.toRingVersion)").message("say what to move: list moves, or give toRingVersion (with fromRingVersion) to move every range whose owner differs between the two ring versions"))]
#[serde(rename_all = "camelCase")]
pub struct ShardMigrationSpec {
    /// The ShardedCluster whose shards exchange ranges. Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    pub cluster: String,
    /// Explicit moves of hash ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub moves: Option<Vec<RangeMove>>,
    /// Ring version the migration starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ring_version: Option<i64>,
    /// Ring version the migration ends at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ring_version: Option<i64>,
    /// Keys or rows copied per batch, 1 to 100000 (default 500).
    #[serde(default = "default_batch_size")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("batchSize must be between 1 and 100000"))]
    pub batch_size: i32,
    /// How the copy is verified before reads switch.
    #[serde(default)]
    pub verification: VerificationMode,
    /// Stop between batches while true.
    #[serde(default)]
    pub paused: bool,
    /// Undo the migration: run the compensations in reverse, leaving the data on the sources.
    #[serde(default)]
    pub rollback: bool,
}

fn default_batch_size() -> i32 {
    500
}

/// One hash range and where it goes. Bounds are 64-bit hashes written as 16 hex
/// digits with a `0x` prefix; the range is `(start, end]`, wrapping around.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RangeMove {
    /// Exclusive start of the range.
    #[x_kube(validation = Rule::new("self.matches('^0x[0-9a-f]{16}$')").message("start must be 0x followed by 16 lowercase hex digits"))]
    #[schemars(length(max = 18))]
    pub start: String,
    /// Inclusive end of the range.
    #[x_kube(validation = Rule::new("self.matches('^0x[0-9a-f]{16}$')").message("end must be 0x followed by 16 lowercase hex digits"))]
    #[schemars(length(max = 18))]
    pub end: String,
    /// Shard index the range leaves.
    pub source: i32,
    /// Shard index the range goes to.
    pub target: i32,
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

/// Progress of one range.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RangeProgress {
    /// The range and its move.
    #[serde(flatten)]
    pub range: RangeMove,
    /// Keys or rows copied so far.
    pub copied: i64,
    /// Keys or rows to copy (known after the first scan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// Resume point of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
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
    /// Copied share of the total, e.g. `42%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Each range's progress and checkpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub ranges: Vec<RangeProgress>,
    /// When the migration started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it completed or was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The verification's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationResult>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
