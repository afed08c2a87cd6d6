//! What both controllers share around their reconcile functions: the watch scope,
//! metrics, handling of unreadable objects, and the error policy.

use std::future::Future;

use kube::api::{ApiResource, DynamicObject};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::context::Context;
use super::error::{Error, Result};

/// Where a controller watches: one namespace, or all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// One namespace.
    Namespace(String),
}

impl Scope {
    /// The scopes of `--namespaces`: all namespaces when empty.
    pub fn from_namespaces(namespaces: &[String]) -> Vec<Scope> {
        let mut named: Vec<Scope> = namespaces
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(|n| Scope::Namespace(n.to_owned()))
            .collect();
        named.dedup();
        if named.is_empty() {
            vec![Scope::All]
        } else {
            named
        }
    }

    /// A typed Api in this scope.
    pub fn typed<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }

    /// A dynamic Api of `resource` in this scope.
    pub fn dynamic(&self, client: &Client, resource: &ApiResource) -> Api<DynamicObject> {
        match self {
            Scope::All => Api::all_with(client.clone(), resource),
            Scope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, resource),
        }
    }
}

/// The back-off key of an object.
fn key(resource: &ApiResource, obj: &DynamicObject) -> String {
    format!(
        "{}/{}/{}",
        resource.kind,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Runs one reconciliation `work` of `obj`: times it, resets its back-off on
/// success, and turns an unreadable object into a Warning Event and a wait for its
/// next change (never a hot retry).
pub async fn run(
    controller: &'static str,
    resource: &ApiResource,
    obj: &DynamicObject,
    ctx: &Context,
    work: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let mut timer = ctx.metrics.reconcile_timer(controller);
    let result = work.await;
    timer.record(&result, |e| e.reason().to_owned());
    drop(timer);
    ctx.metrics
        .set_managed_objects(controller, ctx.managed_objects(controller));
    match result {
        Ok(action) => {
            ctx.backoff.succeeded(&key(resource, obj));
            Ok(action)
        }
        Err(error @ Error::InvalidObject { .. }) => {
            tracing::warn!(%error, "cannot read the object; waiting until it changes");
            ctx.warning(
                &obj.object_ref(resource),
                error.reason(),
                "Reconcile",
                error.to_string(),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(error) => Err(error),
    }
}

/// Logs the failure, publishes a Warning Event and retries with per-object
/// exponential back-off.
pub fn error_policy(
    resource: &ApiResource,
    obj: &DynamicObject,
    error: &Error,
    ctx: &Context,
) -> Action {
    let delay = ctx.backoff.failed(&key(resource, obj));
    tracing::warn!(
        kind = %resource.kind,
        name = %obj.name_any(),
        namespace = obj.namespace().unwrap_or_default(),
        %error,
        retry_in = ?delay,
        "reconciliation failed"
    );
    let ctx = ctx.clone();
    let reference = obj.object_ref(resource);
    let reason = error.reason();
    let note = error.to_string();
    tokio::spawn(async move {
        ctx.warning(&reference, reason, "Reconcile", note).await;
    });
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_namespaces_mean_all() {
        assert_eq!(Scope::from_namespaces(&[]), vec![Scope::All]);
        assert_eq!(Scope::from_namespaces(&[" ".into()]), vec![Scope::All]);
        assert_eq!(
            Scope::from_namespaces(&["a".into(), "b".into()]),
            vec![Scope::Namespace("a".into()), Scope::Namespace("b".into())]
        );
    }
}
