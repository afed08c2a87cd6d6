//! Applies a Shard's plan: Services, PVCs, Pods; one Event per action. Services and
//! PVCs that already hold what the plan wants are not applied again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::Patch;
use kube::{Api, ResourceExt};

use super::plan::{Observed, Plan, Relabel, requested_storage};
use crate::api::Shard;
use crate::operator::context::Context;
use crate::operator::error::{self, Result};
use crate::operator::kubeapi;
use crate::operator::names::label;

/// Applies `plan` for `shard`: Services and PVCs first, so new Pods find them.
pub async fn apply(ctx: &Context, shard: &Shard, observed: &Observed, plan: &Plan) -> Result<()> {
    let namespace = shard.namespace().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    for service in &plan.services {
        if !kubeapi::unchanged(&observed.services, service) {
            kubeapi::apply(&services, service).await?;
        }
    }
    apply_pvcs(ctx, shard, observed, plan).await?;
    apply_pods(ctx, shard, plan).await?;
    delete_pvcs(ctx, shard, plan).await
}

async fn apply_pvcs(ctx: &Context, shard: &Shard, observed: &Observed, plan: &Plan) -> Result<()> {
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &shard.namespace().unwrap_or_default());
    let reference = kubeapi::shard_ref(shard);
    let existing: BTreeMap<String, &PersistentVolumeClaim> =
        observed.pvcs.iter().map(|p| (p.name_any(), p)).collect();
    for pvc in &plan.pvcs {
        let name = pvc.name_any();
        let wanted = requested_storage(pvc).unwrap_or_default().to_owned();
        if kubeapi::unchanged(&observed.pvcs, pvc) {
            continue;
        }
        kubeapi::apply(&api, pvc).await?;
        match existing.get(&name) {
            None => {
                let note = format!("created PersistentVolumeClaim {name} ({wanted})");
                ctx.normal(&reference, "CreatedPVC", "Create", note).await;
            }
            Some(old) => {
                let before = requested_storage(old).unwrap_or_default();
                if before != wanted {
                    let note =
                        format!("resized PersistentVolumeClaim {name} from {before} to {wanted}");
                    ctx.normal(&reference, "ResizedPVC", "Update", note).await;
                }
            }
        }
    }
    Ok(())
}

async fn apply_pods(ctx: &Context, shard: &Shard, plan: &Plan) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &shard.namespace().unwrap_or_default());
    let reference = kubeapi::shard_ref(shard);
    let replicas = shard.spec.replicas;
    for relabel in &plan.relabel_pods {
        relabel_pod(&api, relabel).await?;
        if let Some(role) = relabel.labels.get(label::ROLE) {
            let note = match role {
                Some(role) => format!("labelled Pod {} with role {role}", relabel.pod),
                None => format!("removed the role label of Pod {}", relabel.pod),
            };
            ctx.normal(&reference, "RoleChanged", "Update", note).await;
        }
    }
    for name in &plan.replace_pods {
        if kubeapi::delete(&api, name).await? {
            let note = format!("deleted failed Pod {name}; it is recreated with the same volume");
            ctx.warning(&reference, "ReplacingPod", "Delete", note)
                .await;
        }
    }
    for name in &plan.delete_pods {
        if kubeapi::delete(&api, name).await? {
            tracing::info!(pod = %name, replicas, "scaling down: deleted Pod");
            let note = format!("scaling down to {replicas} replica(s): deleted Pod {name}");
            ctx.normal(&reference, "ScalingDown", "Delete", note).await;
        }
    }
    for pod in &plan.create_pods {
        if kubeapi::create(&api, pod).await?.is_some() {
            let name = pod.name_any();
            let role = pod.labels().get(label::ROLE).cloned().unwrap_or_default();
            tracing::info!(pod = %name, %role, "created Pod");
            let note = format!("created Pod {name} ({role}); the shard has {replicas} replica(s)");
            ctx.normal(&reference, "CreatedPod", "Create", note).await;
        }
    }
    Ok(())
}

async fn delete_pvcs(ctx: &Context, shard: &Shard, plan: &Plan) -> Result<()> {
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &shard.namespace().unwrap_or_default());
    let reference = kubeapi::shard_ref(shard);
    for name in &plan.delete_pvcs {
        if kubeapi::delete(&api, name).await? {
            let note = format!(
                "deleted PersistentVolumeClaim {name} of a removed replica (pvcRetention.whenScaled=Delete)"
            );
            ctx.normal(&reference, "DeletedPVC", "Delete", note).await;
        }
    }
    Ok(())
}

/// Sets and removes labels of a Pod with a JSON merge patch (a removal must not
/// depend on which field manager set the label).
async fn relabel_pod(api: &Api<Pod>, relabel: &Relabel) -> Result<()> {
    let patch = serde_json::json!({ "metadata": { "labels": relabel.labels } });
    match api
        .patch(
            &relabel.pod,
            &kubeapi::merge_params(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if kubeapi::is_status(&e, 404) => Ok(()),
        Err(e) => Err(error::api("patch", "Pod", relabel.pod.clone())(e)),
    }
}
