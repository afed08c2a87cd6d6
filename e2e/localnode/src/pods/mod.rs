//! The pod runtime: binds unscheduled Pods to this node and runs every Pod
//! bound to it as local processes, like a kubelet.
//!
//! One watcher over all Pods feeds a dispatcher; each Pod bound here gets a
//! worker task ([`worker`]) that allocates its IP ([`ipam`]), realises its
//! volumes ([`volumes`]), runs its init containers and containers
//! ([`container`], in [`crate::sandbox`]es), probes them ([`probes`]), reports
//! status ([`status`]) and tears everything down on deletion. File layout
//! (logs!) is in [`layout`].

mod backoff;
mod bind;
mod command;
mod container;
mod env;
mod events;
mod expand;
mod fieldref;
mod ipam;
pub mod layout;
mod mounts;
mod probes;
mod procs;
mod quantity;
mod state;
mod status;
mod sweep;
mod user;
mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::Ctx;

/// Longest the agent waits for Pods to stop at shutdown before SIGKILLing everything.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(8);

/// State shared by all Pod workers.
pub struct Runtime {
    /// The agent's context.
    pub ctx: Arc<Ctx>,
    /// The node binary (re-executed as the sandbox helper).
    pub exe: PathBuf,
    /// Live process groups.
    pub procs: Arc<procs::Procs>,
    /// Starts container sandboxes from a long-lived thread.
    pub spawner: crate::sandbox::Spawner,
    /// Event publisher.
    pub events: events::Events,
    ipam: Mutex<ipam::Ipam>,
    pods: Mutex<HashMap<String, worker::PodHandle>>,
    finished: Mutex<HashSet<String>>,
    binding: Mutex<HashSet<String>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runtime {
    fn new(ctx: Arc<Ctx>) -> std::io::Result<Runtime> {
        Ok(Runtime {
            exe: PathBuf::from("/proc/self/exe"),
            spawner: crate::sandbox::Spawner::new()?,
            procs: Arc::default(),
            events: events::Events::new(ctx.client.clone(), &ctx.args.node_name),
            ipam: Mutex::new(ipam::Ipam::new(ctx.args.pod_cidr)),
            pods: Mutex::default(),
            finished: Mutex::default(),
            binding: Mutex::default(),
            shutting_down: Default::default(),
            ctx,
        })
    }

    /// The IP allocator.
    pub fn ipam(&self) -> MutexGuard<'_, ipam::Ipam> {
        lock(&self.ipam)
    }

    fn is_ours(&self, pod: &Pod) -> bool {
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
            == Some(self.ctx.args.node_name.as_str())
    }

    /// Handles a Pod added or changed in the API.
    fn on_pod(self: &Arc<Self>, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if bind::wants_binding(&pod) {
            return self.bind(pod, uid);
        }
        if !self.is_ours(&pod) || lock(&self.finished).contains(&uid) {
            return;
        }
        let mut pods = lock(&self.pods);
        if let Some(h) = pods.get(&uid) {
            h.pod_tx.send_replace(Arc::new(pod));
        } else if !self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            pods.insert(uid, worker::spawn(self.clone(), Arc::new(pod)));
        }
    }

    /// Handles a Pod that disappeared from the API.
    fn on_removed(&self, uid: &str) {
        if let Some(h) = lock(&self.pods).get(uid) {
            h.control.send_replace(worker::Control::Removed);
        }
        lock(&self.finished).remove(uid);
    }

    /// Applies a full list of Pods (after a (re)list of the watch).
    fn resync(self: &Arc<Self>, pods: Vec<Pod>) {
        let uids: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        for p in pods
            .iter()
            .filter(|p| self.is_ours(p) && !worker::is_terminal(p))
        {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|s| s.parse().ok());
            if let (Some(uid), Some(ip)) = (&p.metadata.uid, ip) {
                self.ipam().allocate(uid, Some(ip));
            }
        }
        for p in pods {
            self.on_pod(p);
        }
        let gone: Vec<String> = lock(&self.pods)
            .keys()
            .filter(|u| !uids.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            self.on_removed(&uid);
        }
        lock(&self.finished).retain(|u| uids.contains(u));
    }

    /// Called by a worker when it is done with its Pod.
    fn forget(&self, uid: &str) {
        lock(&self.pods).remove(uid);
        lock(&self.finished).insert(uid.to_string());
        self.ipam().release(uid);
    }

    fn bind(self: &Arc<Self>, pod: Pod, uid: String) {
        if !lock(&self.binding).insert(uid.clone()) {
            return;
        }
        let rt = self.clone();
        tokio::spawn(async move {
            let node = &rt.ctx.args.node_name;
            for attempt in 0..5u32 {
                match bind::bind(&rt.ctx.client, &pod, node).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(pod = ?pod.metadata.name, error = %e, attempt, "binding pod");
                        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    }
                }
            }
            lock(&rt.binding).remove(&uid);
        });
    }
}

/// Watches Pods and runs those bound to this node (never returns unless the watch fails for good).
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    if RUNTIME.get().is_none() {
        let _ = RUNTIME.set(Arc::new(Runtime::new(ctx.clone())?));
    }
    let rt = RUNTIME.get().expect("runtime set above").clone();
    let leftovers = sweep::sweep(&layout::pods_root(&ctx.args.state_dir));
    if leftovers > 0 {
        tracing::info!(
            leftovers,
            "killed processes a previous agent's containers left behind"
        );
    }
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: Vec<Pod> = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(p)) => listed.push(p),
            Ok(watcher::Event::InitDone) => rt.resync(std::mem::take(&mut listed)),
            Ok(watcher::Event::Apply(p)) => rt.on_pod(p),
            Ok(watcher::Event::Delete(p)) => {
                rt.on_removed(p.metadata.uid.as_deref().unwrap_or_default())
            }
            Err(e) => tracing::warn!(error = %e, "pod watch"),
        }
    }
    anyhow::bail!("the pod watch ended")
}

/// Stops every Pod's processes (SIGTERM, a short grace, SIGKILL) and leaves none behind.
pub async fn shutdown(_ctx: Arc<Ctx>) {
    let Some(rt) = RUNTIME.get() else { return };
    rt.shutting_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut handles: Vec<worker::PodHandle> = lock(&rt.pods).drain().map(|(_, h)| h).collect();
    for h in &handles {
        h.control.send_replace(worker::Control::Shutdown);
    }
    // The handles (and so the workers' input channels) stay alive until the workers end.
    let all = futures::future::join_all(handles.iter_mut().map(|h| &mut h.task));
    if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
        tracing::warn!("pods did not stop in time");
    }
    if rt.procs.len() > 0 {
        rt.procs.signal_all(nix::sys::signal::Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
