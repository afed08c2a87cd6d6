//! The routers of a Redis cluster (pure): a Deployment of `ringmaster router`, its
//! Service `<cluster>-router`, and a ServiceAccount whose Role may read only the
//! cluster's routing ConfigMap.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::ShardedCluster;
use crate::operator::names::{self, ROUTER_HTTP_PORT, ROUTER_PORT, secret_key};
use crate::operator::security::restricted_container;
use crate::operator::shard::objects::{from_field, from_secret};

/// User and group the router runs as.
pub const ROUTER_UID: i64 = 65532;

/// Every object of a cluster's routers.
#[derive(Clone, Debug)]
pub struct RouterObjects {
    /// The routers' identity.
    pub service_account: ServiceAccount,
    /// Read access to the routing ConfigMap, nothing else.
    pub role: Role,
    /// Binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
    /// The routers.
    pub deployment: Deployment,
    /// `<cluster>-router`: the address clients use.
    pub service: Service,
}

/// The router objects of `cluster` running `image`.
pub fn objects(cluster: &ShardedCluster, image: &str) -> RouterObjects {
    RouterObjects {
        service_account: service_account(cluster),
        role: role(cluster),
        role_binding: role_binding(cluster),
        deployment: deployment(cluster, image),
        service: service(cluster),
    }
}

fn meta(cluster: &ShardedCluster) -> ObjectMeta {
    let name = cluster.name_any();
    ObjectMeta {
        name: Some(names::router_name(&name)),
        namespace: cluster.metadata.namespace.clone(),
        labels: Some(names::router_labels(cluster.spec.engine, &name)),
        owner_references: names::cluster_ref(cluster).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn selector(cluster: &ShardedCluster) -> BTreeMap<String, String> {
    names::router_labels(cluster.spec.engine, &cluster.name_any())
}

fn service_account(cluster: &ShardedCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(cluster),
        ..ServiceAccount::default()
    }
}

fn role(cluster: &ShardedCluster) -> Role {
    Role {
        metadata: meta(cluster),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            resource_names: Some(vec![names::routing_name(&cluster.name_any())]),
            verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        }]),
    }
}

fn role_binding(cluster: &ShardedCluster) -> RoleBinding {
    let name = names::router_name(&cluster.name_any());
    RoleBinding {
        metadata: meta(cluster),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: cluster.metadata.namespace.clone(),
            ..Subject::default()
        }]),
    }
}

fn service(cluster: &ShardedCluster) -> Service {
    Service {
        metadata: meta(cluster),
        spec: Some(ServiceSpec {
            selector: Some(selector(cluster)),
            ports: Some(vec![ServicePort {
                name: Some("redis".to_owned()),
                port: ROUTER_PORT,
                target_port: Some(IntOrString::String("redis".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn deployment(cluster: &ShardedCluster, image: &str) -> Deployment {
    let name = cluster.name_any();
    Deployment {
        metadata: meta(cluster),
        spec: Some(DeploymentSpec {
            replicas: Some(cluster.spec.router.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(cluster)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector(cluster)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::router_name(&name)),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(ROUTER_UID),
                        run_as_group: Some(ROUTER_UID),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container(cluster, image)],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn container(cluster: &ShardedCluster, image: &str) -> Container {
    let name = cluster.name_any();
    let secret = names::secret_name(&name);
    Container {
        name: "router".to_owned(),
        image: Some(image.to_owned()),
        args: Some(vec![
            "router".to_owned(),
            "--routing-configmap".to_owned(),
            names::routing_name(&name),
            // The Pod's own address: Pods that share a network namespace (as on the
            // local test node) must not collide on a wildcard address.
            "--listen".to_owned(),
            format!("$(POD_IP):{ROUTER_PORT}"),
            "--http-addr".to_owned(),
            format!("$(POD_IP):{ROUTER_HTTP_PORT}"),
        ]),
        env: Some(vec![
            from_field("POD_NAMESPACE", "metadata.namespace"),
            from_field("POD_IP", "status.podIP"),
            from_secret("RINGMASTER_ROUTER_USERNAME", &secret, secret_key::USERNAME),
            from_secret("RINGMASTER_ROUTER_PASSWORD", &secret, secret_key::PASSWORD),
        ]),
        ports: Some(vec![
            port("redis", ROUTER_PORT),
            port("http", ROUTER_HTTP_PORT),
        ]),
        readiness_probe: Some(probe("/readyz", 3)),
        liveness_probe: Some(probe("/healthz", 6)),
        security_context: Some(restricted_container()),
        ..Container::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        ..ContainerPort::default()
    }
}

fn probe(path: &str, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(2),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::fixtures::load;

    #[test]
    fn routers_may_read_only_their_routing_config_map_and_run_unprivileged() {
        let cluster: ShardedCluster = load("redis-cluster.yaml");
        let objects = objects(&cluster, "ghcr.io/ringmaster/ringmaster:dev");
        let rules = objects.role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["configmaps".to_owned()][..])
        );
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["cache-routing".to_owned()][..])
        );
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
        assert_eq!(
            objects.role_binding.subjects.unwrap()[0].name,
            "cache-router"
        );

        let deployment = objects.deployment;
        assert_eq!(deployment.name_any(), "cache-router");
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(cluster.spec.router.replicas));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("cache-router"));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap();
        assert_eq!(args[0], "router");
        assert!(args.contains(&"cache-routing".to_owned()), "{args:?}");
        let env = container.env.clone().unwrap();
        let password = env
            .iter()
            .find(|e| e.name == "RINGMASTER_ROUTER_PASSWORD")
            .unwrap();
        assert!(
            password.value.is_none(),
            "the password comes from the Secret only"
        );
        let key = password.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("cache-credentials", "password")
        );
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));

        let service = objects.service.spec.unwrap();
        assert_eq!(service.ports.unwrap()[0].port, ROUTER_PORT);
        assert_eq!(
            service.selector.unwrap()["app.kubernetes.io/component"],
            "router"
        );
    }
}
