//! `ShardedCluster`: a sharded Redis or PostgreSQL cluster, as users declare it.

use std::collections::BTreeMap;

use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ring::RingDescriptor;

use super::common::{
    Condition, Engine, FailoverSpec, PvcRetentionPolicy, ReplicationSpec, Resources, StorageSpec,
};

/// Most shards a cluster may have.
pub const MAX_SHARDS: i32 = 64;
/// Most replicas (besides the primary) a shard may have.
pub const MAX_REPLICAS: i32 = 5;

/// A sharded database cluster: `shards` shards on a consistent hash ring, each a
/// primary with `replicas` streaming replicas.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ringmaster.dev",
    version = "v1alpha1",
    kind = "ShardedCluster",
    namespaced,
    status = "ShardedClusterStatus",
    shortname = "sc",
    category = "ringmaster",
    printcolumn = r#"{"name":"Engine","type":"string","jsonPath":".spec.engine"}"#,
    printcolumn = r#"{"name":"Shards","type":"integer","jsonPath":".spec.shards"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyShards"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.weights) || size(self.weights) == self.shards").message("weights must list exactly one weight per shard (as many entries as shards), or be omitted for equal shards"))]
#[x_kube(validation = Rule::new("self.engine != 'postgres' || (self.shards == oldSelf.shards && has(self.weights) == has(oldSelf.weights) && (!has(self.weights) || self.weights == oldSelf.weights))").message("shards and weights of a postgres cluster cannot change yet: ringmaster moves Redis keys between shards, not PostgreSQL rows; set shards and weights back to their previous values"))]
#[x_kube(validation = postgres_major_rule())]
#[serde(rename_all = "camelCase")]
pub struct ShardedClusterSpec {
    /// Database engine: `redis` or `postgres`. Immutable: to change engines, create a
    /// new cluster and migrate the data.
    #[x_kube(validation = Rule::new("self == oldSelf").message("engine is immutable: create a new ShardedCluster with the other engine and migrate the data to it"))]
    pub engine: Engine,
    /// Server version (the image tag of the stock `redis` / `postgres` image); the
    /// engine's default (Redis 7.0, PostgreSQL 15) when unset. A change is rolled out
    /// instance by instance (replicas, switchover, old primary). A PostgreSQL cluster
    /// keeps its major version (the leading number: `15`, `15.8` and `15-bookworm` are
    /// all 15): a data directory cannot be restarted by another major, so a change
    /// such as 15 → 16 is refused; create a new cluster of the new major and migrate
    /// the data to it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,
    /// Full image reference, overriding `version`. For PostgreSQL the major version
    /// is then the leading number of its tag, and it cannot change in place either:
    /// `postgres:15` → `postgres:16.1` is refused, `postgres:15` →
    /// `registry.local/postgres:15.8-bookworm` is accepted. A reference whose tag does
    /// not start with a number (`postgres`, `postgres:latest`, `postgres@sha256:…`) is
    /// not checked: keeping its major version is up to you.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// Number of shards, 1 to 64. Raising it adds Shards and then moves their share of
    /// the hash ring to them with a ShardMigration; lowering it first drains the
    /// leaving shards with a migration and deletes them only once it has completed.
    #[serde(default = "default_shards")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 64").message("shards must be between 1 and 64"))]
    pub shards: i32,
    /// Relative weight of each shard on the hash ring (one entry per shard, 1 to 100;
    /// equal weights when omitted). A shard of weight 2 owns twice the keys of one of
    /// weight 1. Changing weights moves ranges with a ShardMigration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(w, w >= 1 && w <= 100)").message("every weight must be a whole number from 1 to 100: give each shard a positive weight, or omit weights"))]
    pub weights: Option<Vec<i32>>,
    /// Replicas per shard besides the primary, 0 to 5 (default 1).
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 5").message("replicas must be between 0 and 5 (streaming replicas per shard, besides the primary)"))]
    pub replicas: i32,
    /// Persistent storage of each instance.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Compute resources of each database container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Resources,
    /// Replication mode: `async` (default) or `sync`.
    #[serde(default)]
    pub replication: ReplicationSpec,
    /// Automatic failover policy.
    #[serde(default)]
    pub failover: FailoverSpec,
    /// What happens to volumes of removed instances.
    #[serde(default)]
    pub pvc_retention: PvcRetentionPolicy,
    /// Router settings (Redis).
    #[serde(default)]
    pub router: RouterSpec,
    /// PostgreSQL settings: the sharded tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
}

fn default_shards() -> i32 {
    1
}

fn default_replicas() -> i32 {
    1
}

/// The CEL expression for the PostgreSQL major version a spec (`self` or `oldSelf`)
/// runs: the leading digits of the image tag when `image` is set (the text after the
/// last `:` that follows the last `/`, of the part before any `@` digest), else of
/// `version`, else of the engine default. `''` when there is no such number (no tag,
/// `latest`, a digest only): the major is then unknown and not compared.
fn cel_postgres_major(spec: &str) -> String {
    let default = Engine::Postgres.default_version();
    format!(
        "(has({spec}.image) \
         ? {spec}.image.split('@')[0].find(':[0-9]+[^:/]*$').find('[0-9]+') \
         : (has({spec}.version) ? {spec}.version : '{default}').find('^[0-9]+'))"
    )
}

/// Refuses an in-place change of PostgreSQL major version: instances are restarted
/// one by one on the same data directory, which only a server of the same major can
/// open (15 → 16 needs pg_upgrade or a logical migration). Minor versions and every
/// Redis version change roll out.
fn postgres_major_rule() -> Rule {
    let old = cel_postgres_major("oldSelf");
    let new = cel_postgres_major("self");
    Rule::new(format!(
        "self.engine != 'postgres' || {old} == '' || {new} == '' || {old} == {new}"
    ))
    .message(Message::Expression(format!(
        "'the PostgreSQL major version cannot change in place (' + {old} + ' → ' + {new} \
         + ' needs pg_upgrade): set version (or the image tag) back to the previous \
         major, or create a new ShardedCluster of the new version and migrate the data \
         to it'"
    )))
}

impl ShardedClusterSpec {
    /// The image every database container runs.
    pub fn image(&self) -> String {
        match &self.image {
            Some(image) => image.clone(),
            None => {
                let version = self
                    .version
                    .as_deref()
                    .unwrap_or(self.engine.default_version());
                format!("{}:{version}", self.engine.as_str())
            }
        }
    }

    /// The ring weight of shard `index` (1 when weights are not given).
    pub fn weight(&self, index: i32) -> i32 {
        let weights = self.weights.as_deref().unwrap_or_default();
        usize::try_from(index)
            .ok()
            .and_then(|i| weights.get(i))
            .copied()
            .unwrap_or(1)
    }
}

/// Settings of `ringmaster router`, the Redis data path.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterSpec {
    /// Router Pods (Redis clusters), 1 to 10 (default 2).
    #[serde(default = "default_router_replicas")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10").message("router.replicas must be between 1 and 10"))]
    pub replicas: i32,
    /// Serve reads from replicas whose lag is under `maxReplicaLagBytes`.
    #[serde(default)]
    pub read_from_replicas: bool,
    /// Largest replica lag (bytes) at which a replica still serves reads.
    #[serde(default = "default_router_max_lag")]
    pub max_replica_lag_bytes: i64,
}

fn default_router_replicas() -> i32 {
    2
}

fn default_router_max_lag() -> i64 {
    1024 * 1024
}

impl Default for RouterSpec {
    fn default() -> Self {
        Self {
            replicas: 2,
            read_from_replicas: false,
            max_replica_lag_bytes: default_router_max_lag(),
        }
    }
}

/// PostgreSQL-specific settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// Tables distributed across the shards, each by its shard-key column.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub sharded_tables: Vec<ShardedTable>,
}

/// A table sharded by one of its columns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardedTable {
    /// Table name, optionally schema-qualified (`public.orders`).
    #[schemars(length(min = 1, max = 127))]
    pub name: String,
    /// Column whose hash places each row on a shard.
    #[schemars(length(min = 1, max = 63))]
    pub shard_key: String,
}

/// Observed state of a ShardedCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardedClusterStatus {
    /// `Provisioning`, `Ready`, `Degraded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Shards that exist.
    #[serde(default)]
    pub shards: i32,
    /// Shards whose every instance is Ready.
    #[serde(default)]
    pub ready_shards: i32,
    /// Version of the routing table published in the `<cluster>-routing` ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_version: Option<i64>,
    /// Version of the hash ring in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_version: Option<i64>,
    /// The hash ring in effect: which shards own keys, with their weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingDescriptor>,
    /// The ShardMigration moving ranges now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
    /// The primary instance of each shard.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub primaries: BTreeMap<String, String>,
    /// Name of the Secret holding the generated credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn cluster(spec: Value) -> ShardedCluster {
        serde_json::from_value(json!({
            "apiVersion": "ringmaster.dev/v1alpha1",
            "kind": "ShardedCluster",
            "metadata": { "name": "c" },
            "spec": spec
        }))
        .unwrap()
    }

    /// Validates the update `old` → `new` with the CRD's CEL rules, client-side.
    fn update(old: Value, new: Value) -> Result<(), String> {
        kube::core::cel::validate_cel_update(&cluster(new), &cluster(old)).map_err(|errors| {
            let messages: Vec<String> = errors
                .into_vec()
                .into_iter()
                .map(|error| error.message)
                .collect();
            messages.join("; ")
        })
    }

    #[test]
    fn postgres_major_version_cannot_change_in_place() {
        let pg = |extra: Value| {
            let mut spec = json!({ "engine": "postgres" });
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            spec
        };
        let refused = [
            (
                json!({ "version": "15" }),
                json!({ "version": "16" }),
                "15 → 16",
            ),
            (json!({}), json!({ "version": "16" }), "15 → 16"),
            (json!({ "version": "16.4" }), json!({}), "16 → 15"),
            (
                json!({ "image": "postgres:15" }),
                json!({ "image": "postgres:16.1" }),
                "15 → 16",
            ),
            (
                json!({ "version": "15" }),
                json!({ "image": "reg:5000/pg/postgres:17-alpine" }),
                "15 → 17",
            ),
            (
                json!({ "image": "postgres:16@sha256:0123" }),
                json!({ "version": "15.8" }),
                "16 → 15",
            ),
        ];
        for (old, new, majors) in refused {
            let message = update(pg(old.clone()), pg(new.clone()))
                .expect_err(&format!("{old} → {new} is refused"));
            assert!(
                message.contains(&format!(
                    "the PostgreSQL major version cannot change in place ({majors} needs pg_upgrade)"
                )),
                "{old} → {new}: {message}"
            );
        }
        let accepted = [
            (json!({ "version": "15" }), json!({ "version": "15.8" })),
            (json!({}), json!({ "version": "15.8-bookworm" })),
            (
                json!({ "version": "15" }),
                json!({ "image": "registry.local:5000/postgres:15.8" }),
            ),
            (
                json!({ "image": "postgres:15" }),
                json!({ "image": "postgres:15.8-bookworm" }),
            ),
            (
                json!({ "image": "postgres:15" }),
                json!({ "version": "16", "image": "postgres:15.2" }),
            ),
            // No major to compare: the user's responsibility.
            (
                json!({ "version": "15" }),
                json!({ "image": "registry.local:5000/pg/postgres@sha256:16ab" }),
            ),
            (
                json!({ "image": "postgres:latest" }),
                json!({ "image": "postgres:17" }),
            ),
            (
                json!({ "image": "localhost:5000/postgres" }),
                json!({ "version": "16" }),
            ),
        ];
        for (old, new) in accepted {
            update(pg(old.clone()), pg(new.clone()))
                .unwrap_or_else(|e| panic!("{old} → {new} is accepted, got {e}"));
        }
    }

    #[test]
    fn redis_version_changes_roll_out() {
        for (old, new) in [("7.0", "7.2"), ("7.0", "8.0"), ("8.0", "7.2")] {
            update(
                json!({ "engine": "redis", "version": old }),
                json!({ "engine": "redis", "version": new }),
            )
            .unwrap_or_else(|e| panic!("redis {old} → {new} is accepted, got {e}"));
        }
    }
}
