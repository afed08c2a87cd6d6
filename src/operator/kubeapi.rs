//! Thin helpers over the Kubernetes API: server-side apply, create-once, delete,
//! and reading custom resources as [`DynamicObject`]s.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{self, Error, Result};
use super::names::FIELD_MANAGER;
use crate::api::{GROUP, Shard, ShardedCluster, VERSION};

/// The ApiResource of a ringmaster kind with its plural.
fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// `shardedclusters.ringmaster.dev/v1alpha1`.
pub fn cluster_resource() -> ApiResource {
    resource("ShardedCluster", "shardedclusters")
}

/// `shards.ringmaster.dev/v1alpha1`.
pub fn shard_resource() -> ApiResource {
    resource("Shard", "shards")
}

/// The ShardMigration resource.
pub fn migration_resource() -> ApiResource {
    resource("ShardMigration", "shardmigrations")
}

/// Merge-patch parameters with the operator's field manager.
pub fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Server-side apply parameters: field manager `ringmaster`, forced.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Create parameters with the field manager.
pub fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    }
}

/// Server-side applies `obj` (named by its metadata) and returns the result.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    api.patch(&name, &apply_params(), &Patch::Apply(obj))
        .await
        .map_err(error::api("apply", kind::<K>(), name))
}

/// Server-side applies `status` to the status subresource of `name`.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&body))
        .await
        .map(drop)
        .map_err(error::api("status", kind::<K>(), name))
}

/// Creates `obj`; `Ok(None)` when it already exists.
pub async fn create<K>(api: &Api<K>, obj: &K) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    match api.create(&post_params(), obj).await {
        Ok(created) => Ok(Some(created)),
        Err(e) if is_status(&e, 409) => Ok(None),
        Err(e) => Err(error::api("create", kind::<K>(), obj.name_any())(e)),
    }
}

/// Deletes `name` in the background; `Ok(false)` when it was already gone.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 404) => Ok(false),
        Err(e) => Err(error::api("delete", kind::<K>(), name)(e)),
    }
}

/// Lists the objects matching `selector`.
pub async fn list<K>(api: &Api<K>, selector: &str) -> Result<Vec<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let params = kube::api::ListParams::default().labels(selector);
    api.list(&params)
        .await
        .map(|l| l.items)
        .map_err(error::api("list", kind::<K>(), selector))
}

/// Whether `existing` already holds everything of `desired`: every field of an
/// object, every element of an array (same length), every scalar equal. Fields the
/// apiserver adds (defaults, status, metadata) do not matter, so an unchanged
/// object need not be applied again.
pub fn contains(existing: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (existing, desired) {
        (Value::Object(e), Value::Object(d)) => d
            .iter()
            .all(|(k, v)| e.get(k).is_some_and(|ev| contains(ev, v))),
        (Value::Array(e), Value::Array(d)) => {
            e.len() == d.len() && e.iter().zip(d).all(|(ev, dv)| contains(ev, dv))
        }
        (e, d) => e == d,
    }
}

/// Whether some object of `existing` named like `desired` already holds all of it.
pub fn unchanged<K: Serialize + ResourceExt>(existing: &[K], desired: &K) -> bool {
    let name = desired.name_any();
    let Ok(wanted) = serde_json::to_value(desired) else {
        return false;
    };
    existing
        .iter()
        .filter(|e| e.name_any() == name)
        .filter_map(|e| serde_json::to_value(e).ok())
        .any(|e| contains(&e, &wanted))
}

/// The kind of a static resource type, for error messages.
fn kind<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

/// Whether `error` is an API status with `code`.
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Deserialises a dynamic object into its type.
pub fn parse<K>(obj: &DynamicObject) -> Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let invalid = |source| Error::InvalidObject {
        kind: kind::<K>(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        source,
    };
    let value = serde_json::to_value(obj).map_err(invalid)?;
    serde_json::from_value(value).map_err(invalid)
}

/// A reference to a dynamic object for Events.
pub fn dynamic_ref(obj: &DynamicObject, resource: &ApiResource) -> ObjectReference {
    obj.object_ref(resource)
}

/// The typed reference of a cluster for Events.
pub fn cluster_ref(cluster: &ShardedCluster) -> ObjectReference {
    cluster.object_ref(&())
}

/// The typed reference of a shard for Events.
pub fn shard_ref(shard: &Shard) -> ObjectReference {
    shard.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ringmaster.dev/v1alpha1",
            "kind": "ShardedCluster",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn containment_ignores_added_fields_but_not_changed_ones() {
        let existing = serde_json::json!({"a": 1, "b": {"c": [1, {"d": 2, "e": 3}]}, "f": "x"});
        assert!(contains(
            &existing,
            &serde_json::json!({"b": {"c": [1, {"d": 2}]}})
        ));
        assert!(!contains(&existing, &serde_json::json!({"b": {"c": [1]}})));
        assert!(!contains(&existing, &serde_json::json!({"a": 2})));
        assert!(!contains(&existing, &serde_json::json!({"g": null})));
    }

    #[test]
    fn valid_dynamic_objects_parse_with_defaults() {
        let cluster: ShardedCluster =
            parse(&dynamic(serde_json::json!({"engine": "redis"}))).unwrap();
        assert_eq!(cluster.spec.shards, 1);
        assert_eq!(cluster.spec.replicas, 1);
        assert_eq!(cluster.spec.image(), "redis:7.0");
    }

    #[test]
    fn malformed_objects_are_an_error_naming_them() {
        let err =
            parse::<ShardedCluster>(&dynamic(serde_json::json!({"engine": "mysql"}))).unwrap_err();
        assert_eq!(err.reason(), "InvalidObject");
        let message = err.to_string();
        assert!(message.contains("ShardedCluster ns/c"), "{message}");
        assert!(message.contains("mysql"), "{message}");
    }
}
