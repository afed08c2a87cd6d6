//! The routing table published in the `<cluster>-routing` ConfigMap (key
//! `routing.json`): where each shard's primary and replicas are reached, the hash
//! ring in effect and every in-flight migration's moving ranges (see
//! `docs/migration.md` for how routers treat them).
//!
//! Its `version` increases by one whenever anything else in the document changes.

use serde::{Deserialize, Serialize};

use crate::api::Engine;
use crate::ring::{RangeMove, RingDescriptor};

/// Redis database of the migration bookkeeping on a source shard's primary
/// (clients use database 0 only).
pub const DIRTY_DB: i64 = 1;

/// The set, in [`DIRTY_DB`] of a migration's source shards, of keys written in moving
/// ranges while the migration dual-writes (routers add each key after the source
/// acknowledged the write; the operator re-copies and removes them).
pub fn dirty_set_key(migration: &str) -> String {
    format!("ringmaster:dirty:{migration}")
}

/// The document of `routing.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    /// The ShardedCluster's name.
    pub cluster: String,
    /// `redis` or `postgres`.
    pub engine: Engine,
    /// Increases by one on every change of the rest of the document.
    pub version: i64,
    /// Every shard that exists or is being drained, by index.
    pub shards: Vec<RoutingShard>,
    /// The hash ring in effect: the owner of every key outside moving ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingDescriptor>,
    /// In-flight migrations whose ranges routers treat specially.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<RoutingMigration>,
}

/// How routers treat the moving ranges of one migration.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum RoutingPhase {
    /// Reads from the source; writes to the source, then its key is added to the
    /// dirty set, then the same write goes to the target. The client gets the
    /// source's reply.
    DualWrite,
    /// As `dualWrite`, but reads come from the target.
    SwitchReads,
    /// Reads from the target; writes to the moving ranges are held until the next
    /// routing version (at most a few seconds), then fail with `TRYAGAIN`.
    Frozen,
}

/// One in-flight migration in the routing table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingMigration {
    /// The ShardMigration's name (also names its dirty set).
    pub name: String,
    /// How the moving ranges are routed.
    pub phase: RoutingPhase,
    /// The moving ranges, each with its source and target shard index.
    pub moves: Vec<RangeMove>,
}

/// A replica a router may read from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoutingReplica {
    /// The replica's Pod name.
    pub name: String,
    /// `podIP:port`.
    pub address: String,
}

/// One shard of the routing table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoutingShard {
    /// The shard's index.
    pub index: i32,
    /// The Shard's name.
    pub name: String,
    /// Ring weight.
    pub weight: i32,
    /// `clusterIP:port` of the `-rw` Service, once it has an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rw: Option<String>,
    /// `clusterIP:port` of the `-ro` Service, once it has an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ro: Option<String>,
    /// The primary instance's Pod name.
    pub primary: String,
    /// Replicas that may serve reads (only when the cluster's `router.readFromReplicas`
    /// is on): streaming, lag under `router.maxReplicaLagBytes`, lowest lag first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<RoutingReplica>,
}

impl RoutingTable {
    /// Parses `routing.json`; `None` when it is not a routing table.
    pub fn parse(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }

    /// The document as written to the ConfigMap (pretty, stable field order).
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether `self` and `other` differ in anything but `version`.
    pub fn same_content(&self, other: &RoutingTable) -> bool {
        self.cluster == other.cluster
            && self.engine == other.engine
            && self.shards == other.shards
            && self.ring == other.ring
            && self.migrations == other.migrations
    }

    /// `self` with the version it should be published at, given the table currently
    /// published: unchanged content keeps the published version, a change bumps it by
    /// one, and a first publication is version 1.
    pub fn versioned(mut self, published: Option<&RoutingTable>) -> Self {
        self.version = match published {
            Some(old) if self.same_content(old) => old.version,
            Some(old) => old.version + 1,
            None => 1,
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rw: Option<&str>) -> RoutingTable {
        RoutingTable {
            cluster: "c".into(),
            engine: Engine::Redis,
            version: 0,
            shards: vec![RoutingShard {
                index: 0,
                name: "c-0".into(),
                weight: 1,
                rw: rw.map(str::to_owned),
                ro: None,
                primary: "c-0-0".into(),
                replicas: Vec::new(),
            }],
            ring: None,
            migrations: Vec::new(),
        }
    }

    #[test]
    fn first_publication_is_version_one() {
        assert_eq!(table(None).versioned(None).version, 1);
    }

    #[test]
    fn version_bumps_only_on_change() {
        let v1 = table(None).versioned(None);
        let again = table(None).versioned(Some(&v1));
        assert_eq!(again.version, 1, "unchanged content keeps the version");
        let v2 = table(Some("127.21.0.5:6379")).versioned(Some(&v1));
        assert_eq!(v2.version, 2);
        let still = table(Some("127.21.0.5:6379")).versioned(Some(&v2));
        assert_eq!(still.version, 2);
    }

    #[test]
    fn json_matches_the_contract() {
        let doc = table(Some("127.21.4.7:6379")).versioned(None).to_json();
        let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "cluster": "c", "engine": "redis", "version": 1,
                "shards": [{"index": 0, "name": "c-0", "weight": 1,
                            "rw": "127.21.4.7:6379", "primary": "c-0-0"}]
            })
        );
        assert_eq!(RoutingTable::parse(&doc).unwrap().version, 1);
        assert!(RoutingTable::parse("{").is_none());
    }
}
