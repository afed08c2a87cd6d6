//! Starting and stopping the controllers as a group (they run only while this
//! replica leads).

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::reconciler::Scope;
use super::{cluster, migration, shard};

/// How often cache readiness is checked again.
const SYNC_POLL: Duration = Duration::from_millis(250);

/// The running controllers of every scope.
pub struct Running {
    tasks: JoinSet<&'static str>,
    stores: Vec<Store<DynamicObject>>,
    graceful: CancellationToken,
}

impl Running {
    /// Starts a ShardedCluster, a Shard and a ShardMigration controller for each scope.
    pub fn start(ctx: &Context, scopes: &[Scope]) -> Self {
        let graceful = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut stores = Vec::new();
        ctx.stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        for scope in scopes {
            tracing::info!(?scope, "starting controllers");
            let clusters = cluster::controller(ctx, scope)
                .graceful_shutdown_on(graceful.clone().cancelled_owned());
            let store = clusters.store();
            ctx.register_store(cluster::CONTROLLER, store.clone());
            stores.push(store);
            let run = clusters
                .run(
                    cluster::reconcile,
                    cluster::error_policy,
                    ctx.clone().into(),
                )
                .for_each(|_| futures::future::ready(()));
            tasks.spawn(async move {
                run.await;
                cluster::CONTROLLER
            });

            let shards = shard::controller(ctx, scope)
                .graceful_shutdown_on(graceful.clone().cancelled_owned());
            let store = shards.store();
            ctx.register_store(shard::CONTROLLER, store.clone());
            stores.push(store);
            let run = shards
                .run(shard::reconcile, shard::error_policy, ctx.clone().into())
                .for_each(|_| futures::future::ready(()));
            tasks.spawn(async move {
                run.await;
                shard::CONTROLLER
            });

            let migrations = migration::controller(ctx, scope)
                .graceful_shutdown_on(graceful.clone().cancelled_owned());
            let store = migrations.store();
            ctx.register_store(migration::CONTROLLER, store.clone());
            stores.push(store);
            let run = migrations
                .run(
                    migration::reconcile,
                    migration::error_policy,
                    ctx.clone().into(),
                )
                .for_each(|_| futures::future::ready(()));
            tasks.spawn(async move {
                run.await;
                migration::CONTROLLER
            });
        }
        Self {
            tasks,
            stores,
            graceful,
        }
    }

    /// A future that resolves once every controller's cache of its main objects
    /// is filled.
    pub fn synced(&self) -> impl Future<Output = ()> + Send + 'static {
        let stores = self.stores.clone();
        async move {
            for store in stores {
                // The store's readiness signal wakes only one of its waiters (the
                // controller waits on it too), so poll it again now and then.
                loop {
                    let ready = tokio::time::timeout(SYNC_POLL, store.wait_until_ready()).await;
                    // Err(WriterDropped) means the controller stopped; `stopped` reports that.
                    if ready.is_ok() {
                        break;
                    }
                }
            }
        }
    }

    /// Resolves when a controller stops on its own (it should not), naming it.
    pub async fn stopped(&mut self) -> &'static str {
        match self.tasks.join_next().await {
            Some(Ok(name)) => name,
            Some(Err(_)) => "a controller task",
            None => std::future::pending().await,
        }
    }

    /// Stops at once: in-flight reconciliations are cancelled.
    pub async fn abort(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops after in-flight reconciliations finish, or after `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        self.graceful.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(?grace, "controllers did not stop in time; aborting them");
        }
        self.abort().await;
    }
}
