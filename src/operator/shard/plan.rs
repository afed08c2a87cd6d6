//! What a Shard's instances should be, from its spec and what exists (pure).
//!
//! * The instances are the ordinals of [`desired_ordinals`]: the primary plus the
//!   lowest other ordinals, so scaling up creates the next ordinals and scaling down
//!   removes the highest-ordinal replicas, never the primary.
//! * The instances are built around the replication state of the status
//!   ([`State::anchor`]): `spec.primary` is a switchover request, handled by
//!   [`super::replication`], not the immediate primary.
//! * Missing Pods are created (same name, same PVC), starting as the state's primary
//!   or as replicas at the state's epoch; Pods are never changed in place except
//!   their labels (role, streaming). A Pod built from another template (image,
//!   resources or agent image, see [`objects::template_hash`]) is an update pending,
//!   which the rolling update of [`super::replication`] handles.
//! * PVCs are applied for every instance, never smaller than they are; those of
//!   removed instances are deleted when `pvcRetention.whenScaled` is `Delete`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::objects::{self, Start, Target};
use super::replication::{Labels, State};
use crate::api::shard::Role;
use crate::api::{PvcRetention, Shard};
use crate::operator::names::{self, label};
use crate::operator::quantity;

/// Errors of planning.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The Shard has no name or namespace (it was not read from the apiserver).
    #[error("the Shard has no name or namespace")]
    MissingMetadata,
}

/// What exists of a Shard's instances.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The shard's instance Pods.
    pub pods: Vec<Pod>,
    /// The shard's PVCs.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The shard's Services.
    pub services: Vec<Service>,
}

/// The changes that bring a Shard's instances to its spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Pod name of the primary (the target while a change of primary is in
    /// progress).
    pub primary: String,
    /// The instances' ordinals.
    pub ordinals: BTreeSet<i32>,
    /// Services to apply.
    pub services: Vec<Service>,
    /// PVCs to apply (one per instance).
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// Pods to create.
    pub create_pods: Vec<Pod>,
    /// Pods whose labels change.
    pub relabel_pods: Vec<Relabel>,
    /// Pods to delete because the shard shrank.
    pub delete_pods: Vec<String>,
    /// Pods to delete because they failed for good; they are recreated afterwards.
    pub replace_pods: Vec<String>,
    /// PVCs to delete.
    pub delete_pvcs: Vec<String>,
    /// Pods built from another template (image, resources, agent image) than the
    /// spec's: the rolling update replaces them.
    pub update_pending: Vec<String>,
}

/// Labels of one Pod to set (`Some`) or remove (`None`), as a JSON merge patch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relabel {
    /// The Pod name.
    pub pod: String,
    /// The labels that change.
    pub labels: BTreeMap<String, Option<String>>,
}

impl Plan {
    /// Whether the plan creates or deletes Pods.
    pub fn scales(&self) -> bool {
        !self.create_pods.is_empty() || !self.delete_pods.is_empty()
    }
}

/// The primary, then the lowest other ordinals, `instances` in all.
pub fn desired_ordinals(instances: i32, primary: i32) -> BTreeSet<i32> {
    let wanted = usize::try_from(instances.max(1)).unwrap_or(1);
    let mut ordinals = BTreeSet::from([primary]);
    let mut next = 0;
    while ordinals.len() < wanted {
        ordinals.insert(next);
        next += 1;
    }
    ordinals
}

/// Plans the instances of `shard`, whose init containers run `agent_image`, around
/// the replication state recorded in its status, with the replication `labels`.
pub fn plan(
    shard: &Shard,
    observed: &Observed,
    agent_image: &str,
    labels: &Labels,
) -> Result<Plan, PlanError> {
    let target = Target::new(shard).ok_or(PlanError::MissingMetadata)?;
    let state = State::of(shard);
    let anchor = state.anchor().to_owned();
    let primary = names::pod_ordinal(target.name, &anchor).unwrap_or(0);
    let ordinals = desired_ordinals(shard.spec.instances(), primary);
    let start = |ordinal: i32| Start {
        role: if ordinal == primary {
            Role::Primary
        } else {
            Role::Replica
        },
        epoch: state.start_epoch(),
    };
    let pods = by_ordinal(target.name, &observed.pods, |p| p.name_any());
    let pvcs = by_ordinal(target.name, &observed.pvcs, |p| {
        names::pvc_ordinal(target.name, &p.name_any())
            .map_or_else(String::new, |o| names::pod_name(target.name, o))
    });

    let template = objects::template_hash(&shard.spec, agent_image);
    let mut plan = Plan {
        primary: names::pod_name(target.name, primary),
        ordinals: ordinals.clone(),
        services: objects::services(&target),
        ..Plan::default()
    };
    for &ordinal in &ordinals {
        let current = pvcs.get(&ordinal).and_then(|p| requested_storage(p));
        let size = quantity::at_least(&shard.spec.storage.size, current);
        plan.pvcs.push(objects::pvc(&target, ordinal, size));
        match pods.get(&ordinal) {
            None => {
                plan.create_pods
                    .push(objects::pod(&target, ordinal, start(ordinal), agent_image))
            }
            Some(pod) if terminating(pod) => {}
            Some(pod) if failed(pod) => plan.replace_pods.push(pod.name_any()),
            Some(pod) => plan_existing(&target, pod, labels, &template, &mut plan),
        }
    }
    for (ordinal, pod) in &pods {
        if !ordinals.contains(ordinal) && !terminating(pod) {
            plan.delete_pods.push(pod.name_any());
        }
    }
    if shard.spec.pvc_retention.when_scaled == PvcRetention::Delete {
        for (ordinal, pvc) in &pvcs {
            if !ordinals.contains(ordinal) && !terminating_meta(&pvc.metadata) {
                plan.delete_pvcs.push(pvc.name_any());
            }
        }
    }
    Ok(plan)
}

/// Relabels `pod` if its labels differ, and notes a Pod built from another template
/// (image, resources, agent image) than `template`.
fn plan_existing(target: &Target<'_>, pod: &Pod, labels: &Labels, template: &str, plan: &mut Plan) {
    let spec = &target.shard.spec;
    let name = pod.name_any();
    let mut wanted: BTreeMap<String, Option<String>> =
        names::pvc_labels(spec.engine, &spec.cluster, spec.index, &name)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
    let role = labels.role(&name).map(|r| r.as_str().to_owned());
    wanted.insert(label::ROLE.to_owned(), role);
    if let Some(streaming) = labels.streaming(&name) {
        wanted.insert(
            label::STREAMING.to_owned(),
            streaming.then(|| "true".to_owned()),
        );
    }
    let current = pod.labels();
    let changes: BTreeMap<String, Option<String>> = wanted
        .into_iter()
        .filter(|(k, v)| current.get(k) != v.as_ref())
        .collect();
    if !changes.is_empty() {
        plan.relabel_pods.push(Relabel {
            pod: name.clone(),
            labels: changes,
        });
    }
    if objects::outdated(pod, template) {
        plan.update_pending.push(name);
    }
}

/// Objects keyed by the ordinal parsed from `name(obj)`; others are ignored.
fn by_ordinal<T: Clone>(
    shard: &str,
    objects: &[T],
    name: impl Fn(&T) -> String,
) -> BTreeMap<i32, T> {
    objects
        .iter()
        .filter_map(|o| names::pod_ordinal(shard, &name(o)).map(|ordinal| (ordinal, o.clone())))
        .collect()
}

/// The storage a PVC requests.
pub fn requested_storage(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.as_str())
}

fn terminating_meta(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Whether the Pod is being deleted.
pub fn terminating(pod: &Pod) -> bool {
    terminating_meta(&pod.metadata)
}

/// Whether the Pod has stopped for good (phase `Failed` or `Succeeded`).
pub fn failed(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    )
}

/// Whether a container of the Pod has restarted (its server ran before).
pub fn restarted(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.restart_count > 0))
}

/// Whether the Pod is Ready (and not being deleted).
pub fn pod_ready(pod: &Pod) -> bool {
    !terminating(pod)
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The role label of a Pod.
pub fn pod_role(pod: &Pod) -> Option<Role> {
    match pod.labels().get(label::ROLE).map(String::as_str) {
        Some("primary") => Some(Role::Primary),
        Some("replica") => Some(Role::Replica),
        _ => None,
    }
}
