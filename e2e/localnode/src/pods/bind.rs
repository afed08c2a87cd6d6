//! Scheduling: unscheduled Pods for the default scheduler are bound to this
//! node through the `pods/binding` subresource.

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

/// True if this node should bind the Pod.
pub fn wants_binding(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unscheduled = spec.node_name.as_deref().unwrap_or("").is_empty();
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("" | "default-scheduler")
    );
    let gated = spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|g| !g.is_empty());
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    unscheduled && ours && !gated && !terminal && pod.metadata.deletion_timestamp.is_none()
}

/// The Binding object for a Pod.
pub fn binding(pod: &Pod, node: &str) -> Binding {
    Binding {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    }
}

/// Binds the Pod to `node` (an already bound or deleted Pod is not an error).
pub async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let body = binding(pod, node);
    match api
        .create_subresource::<_, serde_json::Value>("binding", name, &PostParams::default(), &body)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn which_pods_are_bound() {
        assert!(wants_binding(&pod(json!({"containers": []}))));
        assert!(wants_binding(&pod(
            json!({"containers": [], "schedulerName": "default-scheduler"})
        )));
        assert!(!wants_binding(&pod(
            json!({"containers": [], "schedulerName": "other"})
        )));
        assert!(!wants_binding(&pod(
            json!({"containers": [], "nodeName": "n"})
        )));
        assert!(!wants_binding(&pod(
            json!({"containers": [], "schedulingGates": [{"name": "g"}]})
        )));
    }

    #[test]
    fn binding_targets_the_node() {
        let b = binding(&pod(json!({"containers": []})), "localnode");
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(
            v["target"],
            json!({"apiVersion": "v1", "kind": "Node", "name": "localnode"})
        );
        assert_eq!(v["metadata"]["uid"], "u");
    }
}
