//! The ShardMigration controller: the saga of `docs/migration.md`, one step per
//! reconciliation, each step's outcome checkpointed in status before the next.
//!
//! observe (cluster, shards, routing table, routers) → decide (pure, [`saga`]) →
//! act (a status transition, or one batch of work on the databases) → status.

pub mod observe;
pub mod saga;
#[cfg(test)]
mod saga_tests;
pub mod status;
pub mod work;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DynamicObject, Patch};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tracing::instrument;

use self::saga::{Decision, Work};
use self::work::Shards;
use super::context::Context;
use super::error::Result;
use super::kubeapi::{self, migration_resource};
use super::reconciler::{self, Scope};
use crate::api::shard_migration::ShardMigrationStatus;
use crate::api::{Engine, ShardMigration};
use crate::ring::RangeMove;

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "shardmigration";
/// How soon a waiting migration looks again.
const WAIT: Duration = Duration::from_secs(1);
/// How soon the next step runs after one that made progress.
const NEXT: Duration = Duration::from_millis(10);
/// How soon a step that failed on a database is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// The controller for the ShardMigrations of `scope`.
pub fn controller(ctx: &Context, scope: &Scope) -> Controller<DynamicObject> {
    let resource = migration_resource();
    Controller::new_with(
        scope.dynamic(&ctx.client, &resource),
        watcher::Config::default(),
        resource,
    )
}

/// Reconciles one ShardMigration.
#[instrument(skip_all, fields(migration = %obj.name_any(), namespace = obj.namespace().unwrap_or_default()))]
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let resource = migration_resource();
    reconciler::run(
        CONTROLLER,
        &resource,
        &obj,
        &ctx,
        reconcile_migration(&obj, &ctx),
    )
    .await
}

/// Retries a failed reconciliation with per-object exponential back-off.
pub fn error_policy(obj: Arc<DynamicObject>, error: &super::Error, ctx: Arc<Context>) -> Action {
    reconciler::error_policy(&migration_resource(), &obj, error, &ctx)
}

async fn reconcile_migration(obj: &DynamicObject, ctx: &Context) -> Result<Action> {
    let cached: ShardMigration = kubeapi::parse(obj)?;
    // The saga resumes from the checkpoint in status, so it must see its own last
    // write: the watch cache that handed us `obj` may not have it yet (a step is
    // requeued 10 ms after its status write), and deciding on a stale status would
    // copy a batch again, move keysCopied and the checkpoints back, or even regress
    // the phase. Read the object itself.
    let Some(migration) = fresh(ctx, &cached).await? else {
        return Ok(Action::await_change());
    };
    if migration.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = super::conditions::now_seconds();
    let moves = saga::moves(&migration);
    let mut status = status::base(&migration, &moves, &now);
    let Some(observed) = observe::observe(ctx, &migration).await? else {
        let message = format!("ShardedCluster {} does not exist", migration.spec.cluster);
        return wait(ctx, &migration, status, ("ClusterMissing", message), &now).await;
    };
    if observed.cluster.spec.engine != Engine::Redis {
        let message = "moving PostgreSQL rows between shards is not supported; only Redis \
                       clusters are rebalanced"
            .to_owned();
        return wait(
            ctx,
            &migration,
            status,
            ("EngineNotSupported", message),
            &now,
        )
        .await;
    }
    let decision = saga::decide(&with_status(&migration, &status), &observed.observation);
    tracing::debug!(?decision, "decided");
    match decision {
        Decision::Done => {
            status::conditions(&mut status, migration.metadata.generation, None, &now);
            write(ctx, &migration, &status).await?;
            Ok(Action::await_change())
        }
        Decision::Wait(reason, message) => {
            wait(ctx, &migration, status, (reason, message), &now).await
        }
        Decision::Transition(t) => {
            let from = status.phase.clone().unwrap_or_default();
            status::transition(&mut status, &t, migration.metadata.generation, &now);
            status::conditions(&mut status, migration.metadata.generation, None, &now);
            write(ctx, &migration, &status).await?;
            announce(ctx, &migration, &from, &t).await;
            Ok(Action::requeue(NEXT))
        }
        Decision::Work(work) => {
            let Some(table) = observed.table.as_ref() else {
                let message = "the routing table is not published yet".to_owned();
                return wait(
                    ctx,
                    &migration,
                    status,
                    ("WaitingForRouting", message),
                    &now,
                )
                .await;
            };
            let Some(credentials) = observed.credentials.as_ref() else {
                let message = "the cluster's credentials Secret is not readable".to_owned();
                return wait(ctx, &migration, status, ("NoCredentials", message), &now).await;
            };
            let shards = Shards { table, credentials };
            run(ctx, &migration, &moves, &shards, work, status, &now).await
        }
    }
}

/// The current `migration` from the API server; `None` once it is gone.
async fn fresh(ctx: &Context, cached: &ShardMigration) -> Result<Option<ShardMigration>> {
    let name = cached.name_any();
    let api: Api<ShardMigration> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    api.get_opt(&name)
        .await
        .map_err(super::error::api("get", "ShardMigration", name))
}

/// `migration` as if its status were `status` (the saga decides on it).
fn with_status(migration: &ShardMigration, status: &ShardMigrationStatus) -> ShardMigration {
    let mut copy = migration.clone();
    copy.status = Some(status.clone());
    copy
}

async fn wait(
    ctx: &Context,
    migration: &ShardMigration,
    mut status: ShardMigrationStatus,
    (reason, message): (&'static str, String),
    now: &Time,
) -> Result<Action> {
    let before = migration.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == crate::api::condition::PROGRESSING)
            .map(|c| c.reason.clone())
    });
    status::conditions(
        &mut status,
        migration.metadata.generation,
        Some((reason, &message)),
        now,
    );
    write(ctx, migration, &status).await?;
    if before.as_deref() != Some(reason) {
        tracing::info!(reason, %message, "migration waiting");
        let reference = migration.object_ref(&());
        ctx.normal(&reference, reason, "Wait", message).await;
    }
    Ok(Action::requeue(WAIT))
}

async fn run(
    ctx: &Context,
    migration: &ShardMigration,
    moves: &[RangeMove],
    shards: &Shards<'_>,
    work: Work,
    mut status: ShardMigrationStatus,
    now: &Time,
) -> Result<Action> {
    let outcome = execute(ctx, migration, moves, shards, &work, &mut status, now).await;
    match outcome {
        Ok(()) => {
            status::conditions(&mut status, migration.metadata.generation, None, now);
            write(ctx, migration, &status).await?;
            Ok(Action::requeue(NEXT))
        }
        Err(error) => {
            tracing::warn!(%error, ?work, "migration step failed; retrying");
            let message = format!("{work:?} failed: {error}; retrying");
            wait_after_failure(ctx, migration, status, message, now).await?;
            Ok(Action::requeue(RETRY))
        }
    }
}

async fn wait_after_failure(
    ctx: &Context,
    migration: &ShardMigration,
    mut status: ShardMigrationStatus,
    message: String,
    now: &Time,
) -> Result<()> {
    status::conditions(
        &mut status,
        migration.metadata.generation,
        Some(("StepFailed", &message)),
        now,
    );
    write(ctx, migration, &status).await?;
    let reference = migration.object_ref(&());
    ctx.warning(&reference, "StepFailed", "Migrate", message)
        .await;
    Ok(())
}

async fn execute(
    ctx: &Context,
    migration: &ShardMigration,
    moves: &[RangeMove],
    shards: &Shards<'_>,
    work: &Work,
    status: &mut ShardMigrationStatus,
    now: &Time,
) -> std::result::Result<(), work::WorkError> {
    match *work {
        Work::CopyBatch { source } => {
            let cursor = status::cursor(status, source);
            let count_first = cursor == 0
                && status
                    .moves
                    .iter()
                    .any(|m| m.source == source && m.total.is_none());
            let result =
                work::copy_batch(shards, migration, moves, source, cursor, count_first).await?;
            if status.keys_copied > 0 {
                // A batch copied but not checkpointed: the next operator copies it again.
                super::failpoint::hit("migration-backfill");
            }
            let keys: u64 = result.copied.values().sum();
            ctx.metrics.migration_copied(
                &migration.namespace().unwrap_or_default(),
                &migration.name_any(),
                keys,
                result.bytes,
            );
            status::copied(status, source, &result);
        }
        Work::Verify { strict } => {
            let sources = saga::sources(migration);
            let result = work::verify(shards, migration, moves, &sources, strict).await?;
            if !strict {
                super::failpoint::hit("migration-verify");
            }
            if !(strict && result.passed) {
                // A drain under frozen writes keeps the Verify phase's comparison.
                status::verified(status, &result);
            }
            let attempts = status.verify_attempts;
            if let Some(t) =
                saga::after_verify(strict, result.passed, attempts, &result.message, &sources)
            {
                let from = status.phase.clone().unwrap_or_default();
                status::transition(status, &t, migration.metadata.generation, now);
                announce(ctx, migration, &from, &t).await;
            } else {
                let reference = migration.object_ref(&());
                let note = format!("verification failed, re-checking: {}", result.message);
                ctx.warning(&reference, "VerificationFailed", "Verify", note)
                    .await;
            }
        }
        Work::DeleteBatch { shard, from_source } => {
            let cursor = status::cursor(status, shard);
            let (next, _deleted) =
                work::delete_batch(shards, migration, moves, shard, from_source, cursor).await?;
            status::deleted(status, shard, next);
        }
    }
    Ok(())
}

/// An Event for each phase change (Warning for a rollback or a copy started over).
async fn announce(ctx: &Context, migration: &ShardMigration, from: &str, t: &saga::Transition) {
    let reference = migration.object_ref(&());
    let to = t
        .step
        .map_or_else(|| t.phase.to_owned(), |s| format!("{} ({s})", t.phase));
    tracing::info!(from, to = %to, note = %t.note, "migration phase");
    let note = format!("{to}: {}", t.note);
    let restart = t.restart;
    if t.phase == saga::phase::ROLLING_BACK && from != saga::phase::ROLLING_BACK {
        ctx.warning(&reference, "RollingBack", "Migrate", note)
            .await;
    } else if restart {
        // a reason of its own: Events of one reason are folded into one series that
        // keeps the first note
        ctx.warning(&reference, "PassRestarted", "Migrate", note)
            .await;
    } else {
        ctx.normal(&reference, t.phase, "Migrate", note).await;
    }
}

async fn write(
    ctx: &Context,
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
) -> Result<()> {
    if migration.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<ShardMigration> = Api::namespaced(
        ctx.client.clone(),
        &migration.namespace().unwrap_or_default(),
    );
    let name = migration.name_any();
    // Guarded by the resourceVersion read: a status computed from an older object
    // (another operator's, or a stale one) is refused (409) instead of moving the
    // checkpoints back; the next reconciliation reads the object again.
    let body = serde_json::json!({
        "apiVersion": ShardMigration::api_version(&()),
        "kind": ShardMigration::kind(&()),
        "metadata": { "name": &name, "resourceVersion": migration.resource_version() },
        "status": status,
    });
    api.patch_status(&name, &kubeapi::apply_params(), &Patch::Apply(&body))
        .await
        .map(drop)
        .map_err(super::error::api("status", "ShardMigration", name))
}
