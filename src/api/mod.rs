//! Custom resources of the `ringmaster.dev/v1alpha1` API group.
//!
//! * [`ShardedCluster`] (`sc`) — what users write: engine, shards, replicas, storage.
//! * [`Shard`] (`shard`) — one per shard, owned by its cluster: instances and primary.
//! * [`ShardMigration`] (`smig`) — moves hash ranges between shards.
//!
//! CEL rules on the types reject unsafe or meaningless changes with messages that say
//! what to change; `ringmaster crdgen` writes the CRDs to `crds/`.

pub mod agent;
pub mod common;
pub mod routing;
pub mod shard;
pub mod shard_migration;
pub mod sharded_cluster;

pub use common::*;
pub use shard::{Shard, ShardSpec, ShardStatus};
pub use shard_migration::{ShardMigration, ShardMigrationSpec, ShardMigrationStatus};
pub use sharded_cluster::{ShardedCluster, ShardedClusterSpec, ShardedClusterStatus};

/// The API group of every ringmaster resource.
pub const GROUP: &str = "ringmaster.dev";
/// The API version of the resources.
pub const VERSION: &str = "v1alpha1";
