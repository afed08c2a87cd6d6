//! A ShardedCluster of one shard under test: its Pods, agents, Services and the
//! faults the failover tests inject (signals to a server's process group, Pod and
//! PVC deletion).

use std::time::Duration;

use anyhow::{Context, anyhow};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use ringmaster::api::agent::AgentStatus;
use ringmaster::api::shard::{FailoverRecord, Role};
use ringmaster::api::{Shard, ShardedCluster};
use ringmaster::instance::process_tree;
use ringmaster_e2e::wait_for;
use serde_json::json;

use super::load::Target;

/// Poll interval of the waits.
pub const POLL: Duration = Duration::from_millis(200);

/// One shard of a cluster in a test namespace.
pub struct ShardUnderTest {
    /// Cluster name.
    pub cluster: String,
    /// Shard name (`<cluster>-0`).
    pub shard: String,
    /// `redis` or `postgres`.
    pub engine: &'static str,
    /// Sync replication.
    pub sync: bool,
    pods: Api<Pod>,
    pvcs: Api<PersistentVolumeClaim>,
    shards: Api<Shard>,
    clusters: Api<ShardedCluster>,
    services: Api<Service>,
    secrets: Api<Secret>,
}

impl ShardUnderTest {
    /// Creates ShardedCluster `cluster` (1 shard, `replicas` replicas, failover after
    /// `unhealthy_after`) in `namespace`.
    pub async fn create(
        client: &Client,
        namespace: &str,
        cluster: &str,
        engine: &'static str,
        sync: bool,
        replicas: i32,
        unhealthy_after: &str,
    ) -> anyhow::Result<Self> {
        let clusters: Api<ShardedCluster> = Api::namespaced(client.clone(), namespace);
        let sc: ShardedCluster = serde_json::from_value(json!({
            "apiVersion": "ringmaster.dev/v1alpha1",
            "kind": "ShardedCluster",
            "metadata": { "name": cluster },
            "spec": {
                "engine": engine, "shards": 1, "replicas": replicas,
                "storage": { "size": "256Mi" },
                "replication": { "mode": if sync { "sync" } else { "async" } },
                "failover": { "unhealthyAfter": unhealthy_after }
            }
        }))?;
        clusters.create(&PostParams::default(), &sc).await?;
        Ok(Self {
            cluster: cluster.to_owned(),
            shard: format!("{cluster}-0"),
            engine,
            sync,
            pods: Api::namespaced(client.clone(), namespace),
            pvcs: Api::namespaced(client.clone(), namespace),
            shards: Api::namespaced(client.clone(), namespace),
            clusters,
            services: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), namespace),
        })
    }

    /// The Shard now.
    pub async fn shard(&self) -> anyhow::Result<Shard> {
        Ok(self.shards.get(&self.shard).await?)
    }

    /// A value of the credentials Secret.
    pub async fn secret(&self, key: &str) -> anyhow::Result<String> {
        let secret = self
            .secrets
            .get(&format!("{}-credentials", self.cluster))
            .await?;
        let bytes = secret
            .data
            .and_then(|mut d| d.remove(key))
            .ok_or_else(|| anyhow!("the Secret has no {key}"))?;
        Ok(String::from_utf8(bytes.0)?)
    }

    /// `ClusterIP:port` of Service `<shard>-<suffix>`.
    pub async fn service_addr(&self, suffix: &str) -> anyhow::Result<String> {
        let svc = self
            .services
            .get(&format!("{}-{suffix}", self.shard))
            .await?;
        let spec = svc.spec.context("Service without spec")?;
        let ip = spec.cluster_ip.context("Service without ClusterIP")?;
        let port = spec.ports.unwrap_or_default()[0].port;
        Ok(format!("{ip}:{port}"))
    }

    /// The write target through the `-rw` Service.
    pub async fn rw_target(&self) -> anyhow::Result<Target> {
        self.target(self.service_addr("rw").await?).await
    }

    /// A target at `addr` with the superuser's credentials.
    pub async fn target(&self, addr: String) -> anyhow::Result<Target> {
        Ok(Target {
            engine: self.engine,
            addr,
            username: self.secret("username").await?,
            password: self.secret("password").await?,
            wait_for_replica: self.sync && self.engine == "redis",
        })
    }

    /// The Pod `name`.
    pub async fn pod(&self, name: &str) -> anyhow::Result<Pod> {
        Ok(self.pods.get(name).await?)
    }

    /// `podIP:port` of the database in Pod `name`.
    pub async fn pod_addr(&self, name: &str) -> anyhow::Result<String> {
        let ip = pod_ip(&self.pod(name).await?)?;
        let port = if self.engine == "redis" { 6379 } else { 5432 };
        Ok(format!("{ip}:{port}"))
    }

    /// The shard's Pods (not being deleted).
    pub async fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        let selector = format!(
            "ringmaster.dev/cluster={},ringmaster.dev/shard=0",
            self.cluster
        );
        let list = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// The agent's `/status` of Pod `name`.
    pub async fn agent(&self, name: &str) -> anyhow::Result<AgentStatus> {
        let pod = self.pod(name).await?;
        let token = self.secret("agent-token").await?;
        agent_status(&pod, &token).await
    }

    /// Waits until the cluster is Ready and every replica streams; returns the primary.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<String> {
        wait_for(
            &format!("{} to be Ready with every replica streaming", self.shard),
            timeout,
            POLL,
            || async {
                let sc = self.clusters.get(&self.cluster).await?;
                let phase = sc.status.as_ref().and_then(|s| s.phase.clone());
                let shard = self.shard().await?;
                let status = shard.status.clone().unwrap_or_default();
                let desired = shard.spec.replicas + 1;
                let replicas_streaming = status
                    .instances
                    .iter()
                    .filter(|i| {
                        i.role == Some(Role::Replica) && i.ready && i.streaming == Some(true)
                    })
                    .count();
                let healthy = phase.as_deref() == Some("Ready")
                    && status.change.is_none()
                    && status.instances.len() == desired as usize
                    && replicas_streaming == shard.spec.replicas as usize;
                if healthy {
                    return Ok(status.primary.clone());
                }
                Err(anyhow!(
                    "cluster phase {phase:?}; shard primary {:?}, change {:?}, instances {}",
                    status.primary,
                    status.change,
                    serde_json::to_string(&status.instances).unwrap_or_default()
                ))
            },
        )
        .await
    }

    /// Waits until a failover or switchover away from `from` has completed.
    pub async fn wait_primary_change(
        &self,
        from: &str,
        timeout: Duration,
    ) -> anyhow::Result<FailoverRecord> {
        wait_for(
            &format!("{} to replace primary {from}", self.shard),
            timeout,
            POLL,
            || async {
                let status = self.shard().await?.status.unwrap_or_default();
                match (&status.last_failover, &status.change) {
                    (Some(last), None)
                        if last.from == from && status.primary.as_deref() != Some(from) =>
                    {
                        Ok(Some(last.clone()))
                    }
                    _ => Err(anyhow!(
                        "primary {:?}, change {:?}, conditions {:?}",
                        status.primary,
                        status.change,
                        status
                            .conditions
                            .iter()
                            .map(|c| format!(
                                "{}={} {}: {}",
                                c.type_, c.status, c.reason, c.message
                            ))
                            .collect::<Vec<_>>()
                    )),
                }
            },
        )
        .await
    }

    /// The pid of the database server in Pod `name`, as its agent reports it.
    async fn server_pid(&self, name: &str) -> anyhow::Result<i32> {
        let pid = self
            .agent(name)
            .await?
            .pid
            .ok_or_else(|| anyhow!("{name}'s server is not running"))?;
        Ok(i32::try_from(pid)?)
    }

    /// Sends `signal` to the process group of the database server in Pod `name`.
    pub async fn signal_server(&self, name: &str, signal: Signal) -> anyhow::Result<i32> {
        let pid = self.server_pid(name).await?;
        nix::sys::signal::killpg(Pid::from_raw(pid), signal)
            .with_context(|| format!("{signal} to process group {pid}"))?;
        Ok(pid)
    }

    /// Sends `signal` to the database server in Pod `name` and every process it
    /// started (PostgreSQL backends run in sessions of their own); returns the pids.
    pub async fn signal_server_tree(&self, name: &str, signal: Signal) -> anyhow::Result<Vec<i32>> {
        let root = self.server_pid(name).await?;
        // freeze the root first so that it starts no process we would miss
        if signal == Signal::SIGSTOP {
            nix::sys::signal::kill(Pid::from_raw(root), signal)?;
        }
        let tree: Vec<i32> = process_tree::tree(root.unsigned_abs())
            .into_iter()
            .filter_map(|p| i32::try_from(p).ok())
            .collect();
        signal_all(&tree, signal);
        Ok(tree)
    }

    /// Deletes Pod `name`.
    pub async fn delete_pod(&self, name: &str) -> anyhow::Result<()> {
        self.pods.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// Deletes the PVC and the Pod of instance `name` (the Pod goes first so the
    /// claim is released).
    pub async fn delete_volume_and_pod(&self, name: &str) -> anyhow::Result<()> {
        self.pvcs
            .delete(&format!("data-{name}"), &DeleteParams::default())
            .await?;
        self.delete_pod(name).await
    }

    /// Sets the ShardedCluster's `spec.resources` (a change that rolls every Pod).
    pub async fn set_resources(&self, resources: serde_json::Value) -> anyhow::Result<()> {
        self.clusters
            .patch(
                &self.cluster,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "resources": resources } })),
            )
            .await?;
        Ok(())
    }

    /// Requests a switchover by editing `spec.primary`.
    pub async fn request_switchover(&self, to: &str) -> anyhow::Result<()> {
        self.shards
            .patch(
                &self.shard,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "primary": to } })),
            )
            .await?;
        Ok(())
    }

    /// Pods labelled primary, and agents that report a primary server.
    pub async fn primaries(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let pods = self.pods().await?;
        let labelled = pods
            .iter()
            .filter(|p| {
                p.labels().get("ringmaster.dev/role").map(String::as_str) == Some("primary")
            })
            .map(ResourceExt::name_any)
            .collect();
        let token = self.secret("agent-token").await;
        let mut serving = Vec::new();
        for pod in &pods {
            if let Ok(token) = &token
                && let Ok(status) = agent_status(pod, token).await
                && status.server_up
                && status.role == Some(Role::Primary)
            {
                serving.push(pod.name_any());
            }
        }
        Ok((labelled, serving))
    }
}

/// The Pod's IP.
pub fn pod_ip(pod: &Pod) -> anyhow::Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| anyhow!("Pod {} has no IP", pod.name_any()))
}

/// The `/status` of `pod`'s agent, asked with the agent token `token`.
async fn agent_status(pod: &Pod, token: &str) -> anyhow::Result<AgentStatus> {
    let ip = pod_ip(pod)?;
    let (code, body) = agent_get(&format!("{ip}:8000"), "/status", token).await?;
    if code != 200 {
        return Err(anyhow!("/status of {}: {code} {body}", pod.name_any()));
    }
    Ok(serde_json::from_str(&body)?)
}

/// `GET <path>` on an agent with its bearer token: (status code, body).
pub async fn agent_get(addr: &str, path: &str, token: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(
        Duration::from_secs(10),
        super::http_get_as(addr, path, Some(token)),
    )
    .await
    .map_err(|_| anyhow!("{addr}{path}: no answer within 10 s"))?
}

/// Sends `signal` to each of `pids` (ignoring those gone).
pub fn signal_all(pids: &[i32], signal: Signal) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
    }
}
