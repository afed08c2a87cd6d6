//! Reads what exists of a Shard's instances.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::{Api, ResourceExt};

use super::plan::Observed;
use crate::api::Shard;
use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::operator::kubeapi;
use crate::operator::names;

/// The shard's Pods, PVCs and Services (selected by the contract's labels).
pub async fn observe(ctx: &Context, shard: &Shard) -> Result<Observed> {
    let namespace = shard.namespace().unwrap_or_default();
    let selector = names::shard_instances_selector(&shard.spec.cluster, shard.spec.index);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    Ok(Observed {
        pods: kubeapi::list(&pods, &selector).await?,
        pvcs: kubeapi::list(&pvcs, &selector).await?,
        services: kubeapi::list(&services, &services_selector(shard)).await?,
    })
}

/// Label selector of the shard's Services.
fn services_selector(shard: &Shard) -> String {
    let labels = names::shard_labels(shard.spec.engine, &shard.spec.cluster, shard.spec.index);
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
