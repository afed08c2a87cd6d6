//! Builders of a shard's instance Pods, PVCs and Services (pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::replication;
use crate::api::shard::{Role, ShardSpec};
use crate::api::{PvcRetention, Shard};
use crate::operator::names::{
    self, AGENT_PORT, AGENT_PORT_NAME, DB_PORT_NAME, TEMPLATE_ANNOTATION, label, secret_key,
};
use crate::operator::security::restricted_container;
use crate::ring::hash::hash_bytes_extended;

/// Name of the init container that installs the agent.
pub const INIT_CONTAINER: &str = "install-agent";
/// Name of the database container.
pub const DB_CONTAINER: &str = "database";
/// Where the image's entrypoint (the ringmaster binary) lives in the agent image.
pub const AGENT_IMAGE_BINARY: &str = "/usr/local/bin/ringmaster";
/// Mount path of the `ringmaster-bin` emptyDir.
pub const BIN_DIR: &str = "/ringmaster/bin";
/// The agent binary inside the database container.
pub const AGENT_BINARY: &str = "/ringmaster/bin/ringmaster";
/// Mount path of the data PVC.
pub const DATA_MOUNT: &str = "/var/lib/ringmaster";
/// The data directory inside the data volume.
pub const DATA_DIR: &str = "/var/lib/ringmaster/data";
/// Mount path of the `run` emptyDir.
pub const RUN_DIR: &str = "/run/ringmaster";
/// User and group the database runs as.
pub const DB_UID: i64 = 999;
/// Seconds a Pod gets to stop.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;

const BIN_VOLUME: &str = "ringmaster-bin";
const DATA_VOLUME: &str = "data";
const RUN_VOLUME: &str = "run";

/// What the builders need besides the Shard.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// The Shard.
    pub shard: &'a Shard,
    /// Its name (`<cluster>-<index>`).
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
}

impl<'a> Target<'a> {
    /// The target of `shard`, or `None` when it lacks a name or namespace.
    pub fn new(shard: &'a Shard) -> Option<Self> {
        Some(Self {
            shard,
            name: shard.metadata.name.as_deref()?,
            namespace: shard.metadata.namespace.as_deref()?,
        })
    }

    fn cluster(&self) -> &str {
        &self.shard.spec.cluster
    }

    fn index(&self) -> i32 {
        self.shard.spec.index
    }

    fn meta(&self, name: String, labels: BTreeMap<String, String>, owned: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels),
            owner_references: if owned {
                names::shard_ref(self.shard).map(|r| vec![r])
            } else {
                None
            },
            ..ObjectMeta::default()
        }
    }
}

/// How an instance starts: its role and the shard's epoch when its Pod is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// `RINGMASTER_ROLE`.
    pub role: Role,
    /// `RINGMASTER_EPOCH`.
    pub epoch: u64,
}

/// The instance Pod of `ordinal` starting as `start`, its init container from
/// `agent_image`.
pub fn pod(target: &Target<'_>, ordinal: i32, start: Start, agent_image: &str) -> Pod {
    let role = start.role;
    let spec = &target.shard.spec;
    let name = names::pod_name(target.name, ordinal);
    let labels = names::pod_labels(spec.engine, target.cluster(), target.index(), &name, role);
    let mut metadata = target.meta(name.clone(), labels, true);
    metadata.annotations = Some(BTreeMap::from([(
        TEMPLATE_ANNOTATION.to_owned(),
        template_hash(spec, agent_image),
    )]));
    Pod {
        metadata,
        spec: Some(PodSpec {
            hostname: Some(name.clone()),
            subdomain: Some(names::headless_service(target.name)),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(DB_UID),
                run_as_group: Some(DB_UID),
                fs_group: Some(DB_UID),
                ..PodSecurityContext::default()
            }),
            init_containers: Some(vec![install_agent(agent_image)]),
            containers: vec![database(target, start)],
            volumes: Some(vec![
                empty_dir(BIN_VOLUME),
                empty_dir(RUN_VOLUME),
                Volume {
                    name: DATA_VOLUME.to_owned(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: names::pvc_name(&name),
                        read_only: None,
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The hash of what an instance Pod is built from that a running Pod cannot take
/// on: the database image, its resources and the agent image. A Pod whose
/// [`TEMPLATE_ANNOTATION`] differs is replaced by the rolling update.
pub fn template_hash(spec: &ShardSpec, agent_image: &str) -> String {
    let template = serde_json::json!({
        "image": spec.image,
        "resources": spec.resources,
        "agentImage": agent_image,
    });
    format!(
        "{:016x}",
        hash_bytes_extended(template.to_string().as_bytes(), 0)
    )
}

/// Whether `pod` was built from another template than `template` (a hash of
/// [`template_hash`]); a Pod without the annotation is outdated too.
pub fn outdated(pod: &Pod, template: &str) -> bool {
    pod.annotations()
        .get(TEMPLATE_ANNOTATION)
        .map(String::as_str)
        != Some(template)
}

fn install_agent(agent_image: &str) -> Container {
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(agent_image.to_owned()),
        command: Some(
            [AGENT_IMAGE_BINARY, "copy-self", "--to", AGENT_BINARY]
                .map(str::to_owned)
                .to_vec(),
        ),
        volume_mounts: Some(vec![mount(BIN_VOLUME, BIN_DIR)]),
        security_context: Some(container_security()),
        ..Container::default()
    }
}

fn database(target: &Target<'_>, start: Start) -> Container {
    let spec = &target.shard.spec;
    Container {
        name: DB_CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        command: Some(vec![AGENT_BINARY.to_owned(), "instance".to_owned()]),
        env: Some(env(target, start)),
        ports: Some(vec![
            container_port(DB_PORT_NAME, spec.engine.port()),
            container_port(AGENT_PORT_NAME, AGENT_PORT),
        ]),
        startup_probe: Some(probe("/startupz", 2, 90)),
        readiness_probe: Some(probe("/readyz", 2, 3)),
        liveness_probe: Some(probe("/healthz", 5, 3)),
        resources: spec.resources.clone(),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: Some(true),
                ..mount(BIN_VOLUME, BIN_DIR)
            },
            mount(DATA_VOLUME, DATA_MOUNT),
            mount(RUN_VOLUME, RUN_DIR),
        ]),
        ..Container::default()
    }
}

/// Name of the environment variable holding the epoch a Pod was created at.
pub const EPOCH_ENV: &str = "RINGMASTER_EPOCH";

fn env(target: &Target<'_>, start: Start) -> Vec<EnvVar> {
    let spec = &target.shard.spec;
    let secret = names::secret_name(target.cluster());
    let mode = serde_json::to_value(spec.replication.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    vec![
        value("RINGMASTER_ENGINE", spec.engine.as_str()),
        value("RINGMASTER_CLUSTER", target.cluster()),
        value("RINGMASTER_SHARD", &target.index().to_string()),
        value("RINGMASTER_ROLE", start.role.as_str()),
        value(EPOCH_ENV, &start.epoch.to_string()),
        value("RINGMASTER_REPLICATION_MODE", &mode),
        value(
            "RINGMASTER_HOLD_CRASHED_PRIMARY",
            &replication::hold_seconds(spec).to_string(),
        ),
        value("RINGMASTER_DATA_DIR", DATA_DIR),
        value("RINGMASTER_RUN_DIR", RUN_DIR),
        from_secret("RINGMASTER_USERNAME", &secret, secret_key::USERNAME),
        from_secret("RINGMASTER_PASSWORD", &secret, secret_key::PASSWORD),
        from_secret("RINGMASTER_AGENT_TOKEN", &secret, secret_key::AGENT_TOKEN),
        value(
            "RINGMASTER_REPLICATION_USERNAME",
            names::REPLICATION_USERNAME,
        ),
        from_secret(
            "RINGMASTER_REPLICATION_PASSWORD",
            &secret,
            secret_key::REPLICATION_PASSWORD,
        ),
        from_field("POD_NAME", "metadata.name"),
        from_field("POD_NAMESPACE", "metadata.namespace"),
        from_field("POD_IP", "status.podIP"),
    ]
}

fn value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// Env var `name` from key `key` of Secret `secret`.
pub(crate) fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Env var `name` from the Pod field `path` (downward API).
pub(crate) fn from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// Seconds a probe of the instance agent may take.
const PROBE_TIMEOUT_SECONDS: i32 = 3;

fn probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(AGENT_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        // The agent gives the database itself 2 s to answer; leave room for that.
        timeout_seconds: Some(PROBE_TIMEOUT_SECONDS),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(DB_UID),
        run_as_group: Some(DB_UID),
        ..restricted_container()
    }
}

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// The PVC of instance `ordinal`, requesting `size`; owned by the Shard unless the
/// cluster retains volumes when deleted.
pub fn pvc(target: &Target<'_>, ordinal: i32, size: &str) -> PersistentVolumeClaim {
    let spec = &target.shard.spec;
    let pod = names::pod_name(target.name, ordinal);
    let labels = names::pvc_labels(spec.engine, target.cluster(), target.index(), &pod);
    let owned = spec.pvc_retention.when_deleted == PvcRetention::Delete;
    PersistentVolumeClaim {
        metadata: target.meta(names::pvc_name(&pod), labels, owned),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(size.to_owned()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// The three Services of the shard: `-rw` (the primary), `-ro` (replicas that
/// stream from it) and the headless `-pods` (every instance).
pub fn services(target: &Target<'_>) -> Vec<Service> {
    let primary = [(label::ROLE, Role::Primary.as_str())];
    let streaming_replicas = [
        (label::ROLE, Role::Replica.as_str()),
        (label::STREAMING, "true"),
    ];
    vec![
        service(target, names::rw_service(target.name), &primary, false),
        service(
            target,
            names::ro_service(target.name),
            &streaming_replicas,
            false,
        ),
        service(target, names::headless_service(target.name), &[], true),
    ]
}

fn service(
    target: &Target<'_>,
    name: String,
    extra_selector: &[(&str, &str)],
    headless: bool,
) -> Service {
    let spec = &target.shard.spec;
    let labels = names::shard_labels(spec.engine, target.cluster(), target.index());
    let mut selector = BTreeMap::from([
        (label::CLUSTER.to_owned(), target.cluster().to_owned()),
        (label::SHARD.to_owned(), target.index().to_string()),
    ]);
    for (k, v) in extra_selector {
        selector.insert((*k).to_owned(), (*v).to_owned());
    }
    Service {
        metadata: target.meta(name, labels, true),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: headless.then(|| "None".to_owned()),
            publish_not_ready_addresses: headless.then_some(true),
            selector: Some(selector),
            ports: Some(vec![
                service_port(DB_PORT_NAME, spec.engine.port()),
                service_port(AGENT_PORT_NAME, AGENT_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The database container of a Pod.
pub fn database_container(pod: &Pod) -> Option<&Container> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == DB_CONTAINER)
}

/// The epoch a Pod was created at (its `RINGMASTER_EPOCH`), if it has one.
pub fn created_epoch(pod: &Pod) -> Option<u64> {
    database_container(pod)?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == EPOCH_ENV)?
        .value
        .as_deref()?
        .parse()
        .ok()
}
