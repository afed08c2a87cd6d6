//! ringmaster: a Kubernetes operator for sharded Redis and PostgreSQL clusters.
//!
//! * [`api`] — the custom resources (`ShardedCluster`, `Shard`, `ShardMigration`).
//! * [`operator`] — the controllers: observe → plan (pure) → apply → status.
//! * [`instance`] — the in-pod agent that runs one database server.
//! * [`runtime`] — process plumbing shared by the components: telemetry, the
//!   health/metrics server, leader election, shutdown.
//! * [`crdgen`] — writes `crds/*.yaml` from the types.

pub mod api;
pub mod crdgen;
pub mod engine;
pub mod instance;
pub mod operator;
pub mod ring;
pub mod router;
pub mod runtime;
