//! What a Shard's instances should be, from its spec and what exists (pure).
//!
//! * The instances are the ordinals of [`desired_ordinals`]: the primary plus the
//!   lowest other ordinals, so scaling up creates the next ordinals and scaling down
//!   removes the highest-ordinal replicas, never the primary.
//! * Missing Pods are created (same name, same PVC); Pods are never changed in place
//!   except their role label. A Pod whose image differs from the spec is reported as
//!   an update pending (rolling updates come later).
//! * PVCs are applied for every instance, never smaller than they are; those of
//!   removed instances are deleted when `pvcRetention.whenScaled` is `Delete`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::objects::{self, DB_CONTAINER, Target};
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
}

/// The changes that bring a Shard's instances to its spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Pod name of the primary.
    pub primary: String,
    /// The instances' ordinals.
    pub ordinals: BTreeSet<i32>,
    /// `spec.primary` when it does not name an instance of this shard.
    pub invalid_primary: Option<String>,
    /// Services to apply.
    pub services: Vec<Service>,
    /// PVCs to apply (one per instance).
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// Pods to create.
    pub create_pods: Vec<Pod>,
    /// Pods whose labels change (name, namespace and the full label set only).
    pub relabel_pods: Vec<Pod>,
    /// Pods to delete because the shard shrank.
    pub delete_pods: Vec<String>,
    /// Pods to delete because they failed for good; they are recreated afterwards.
    pub replace_pods: Vec<String>,
    /// PVCs to delete.
    pub delete_pvcs: Vec<String>,
    /// Pods running another image than the spec's.
    pub update_pending: Vec<String>,
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

/// The primary's ordinal and, when `spec.primary` names no instance of the shard,
/// that value. Without a usable `spec.primary` the status's primary is kept, and a
/// new shard starts with ordinal 0.
pub fn primary_ordinal(shard: &Shard, name: &str) -> (i32, Option<String>) {
    let fallback = || {
        shard
            .status
            .as_ref()
            .and_then(|s| s.primary.as_deref())
            .and_then(|p| names::pod_ordinal(name, p))
            .unwrap_or(0)
    };
    match shard.spec.primary.as_deref() {
        Some(p) => match names::pod_ordinal(name, p) {
            Some(ordinal) => (ordinal, None),
            None => (fallback(), Some(p.to_owned())),
        },
        None => (fallback(), None),
    }
}

/// Plans the instances of `shard`, whose init containers run `agent_image`.
pub fn plan(shard: &Shard, observed: &Observed, agent_image: &str) -> Result<Plan, PlanError> {
    let target = Target::new(shard).ok_or(PlanError::MissingMetadata)?;
    let (primary, invalid_primary) = primary_ordinal(shard, target.name);
    let ordinals = desired_ordinals(shard.spec.instances(), primary);
    let role = |ordinal: i32| {
        if ordinal == primary {
            Role::Primary
        } else {
            Role::Replica
        }
    };
    let pods = by_ordinal(target.name, &observed.pods, |p| p.name_any());
    let pvcs = by_ordinal(target.name, &observed.pvcs, |p| {
        names::pvc_ordinal(target.name, &p.name_any())
            .map_or_else(String::new, |o| names::pod_name(target.name, o))
    });

    let mut plan = Plan {
        primary: names::pod_name(target.name, primary),
        ordinals: ordinals.clone(),
        invalid_primary,
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
                    .push(objects::pod(&target, ordinal, role(ordinal), agent_image))
            }
            Some(pod) if terminating(pod) => {}
            Some(pod) if failed(pod) => plan.replace_pods.push(pod.name_any()),
            Some(pod) => plan_existing(&target, pod, role(ordinal), &mut plan),
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

/// Relabels `pod` if its labels differ, and notes an image that differs from spec.
fn plan_existing(target: &Target<'_>, pod: &Pod, role: Role, plan: &mut Plan) {
    let spec = &target.shard.spec;
    let name = pod.name_any();
    let wanted = names::pod_labels(spec.engine, &spec.cluster, spec.index, &name, role);
    let labels = pod.labels();
    if wanted.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        plan.relabel_pods.push(Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(target.namespace.to_owned()),
                labels: Some(wanted),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        });
    }
    if database_image(pod).is_some_and(|image| image != spec.image) {
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

/// The image of a Pod's database container.
pub fn database_image(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == DB_CONTAINER)?
        .image
        .as_deref()
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
