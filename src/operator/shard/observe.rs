//! Reads what exists of a Shard's instances.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, ResourceExt};

use super::plan::Observed;
use crate::api::Shard;
use crate::operator::context::Context;
use crate::operator::error::Result;
use crate::operator::kubeapi;
use crate::operator::names;

/// The shard's Pods and PVCs (selected by the contract's labels).
pub async fn observe(ctx: &Context, shard: &Shard) -> Result<Observed> {
    let namespace = shard.namespace().unwrap_or_default();
    let selector = names::shard_instances_selector(&shard.spec.cluster, shard.spec.index);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    Ok(Observed {
        pods: kubeapi::list(&pods, &selector).await?,
        pvcs: kubeapi::list(&pvcs, &selector).await?,
    })
}
