//! One Pod's lifecycle on this node: IP and directory, volumes, init
//! containers, containers, termination and clean-up.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::container::{Exit, Supervisor};
use super::state::{CState, ContainerRt, Kind, PodRt};
use super::volumes::{PodVolumes, VolumeError, VolumePath};
use super::{Runtime, fieldref, layout, mounts, status};

/// Grace of containers when the node agent shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Grace of containers of a Pod that vanished from the API (force delete).
const REMOVED_GRACE: Duration = Duration::from_secs(2);
/// Retry interval of volume set-up.
const VOLUME_RETRY: Duration = Duration::from_secs(3);
/// Refresh interval of configMap/secret/projected volumes.
const VOLUME_REFRESH: Duration = Duration::from_secs(10);

/// What the dispatcher tells a Pod worker besides Pod updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep running.
    Run,
    /// The Pod is gone from the API.
    Removed,
    /// The node agent is shutting down.
    Shutdown,
}

/// Why a Pod stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// metadata.deletionTimestamp is set.
    Deleted,
    /// Gone from the API.
    Removed,
    /// Agent shutdown.
    Shutdown,
}

/// A request to stop a Pod's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// When remaining processes get SIGKILL.
    pub deadline: Instant,
    /// Run preStop hooks first.
    pub pre_stop: bool,
    /// Why.
    pub reason: StopReason,
}

/// The dispatcher's handle on a Pod worker.
pub struct PodHandle {
    /// Latest Pod object.
    pub pod_tx: watch::Sender<Arc<Pod>>,
    /// Control messages.
    pub control: watch::Sender<Control>,
    /// The worker task.
    pub task: tokio::task::JoinHandle<()>,
}

/// What a Pod's tasks share.
pub struct PodCtx {
    /// Node-wide runtime.
    pub rt: Arc<Runtime>,
    /// Pod UID.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Latest Pod object.
    pub pod_rx: watch::Receiver<Arc<Pod>>,
    /// Runtime view (the status writer watches it).
    pub state: watch::Sender<PodRt>,
    /// Stop request for init and regular containers.
    pub stop: watch::Sender<Option<Stop>>,
    /// Stop request for sidecars (after the regular containers).
    pub sidecar_stop: watch::Sender<Option<Stop>>,
    /// The pod directory.
    pub pod_dir: PathBuf,
    /// The pod IP.
    pub ip: Ipv4Addr,
    /// The managed /etc/hosts.
    pub hosts_file: PathBuf,
}

impl PodCtx {
    /// The latest Pod object.
    pub fn pod(&self) -> Arc<Pod> {
        self.pod_rx.borrow().clone()
    }

    /// Changes the runtime view (and wakes the status writer).
    pub fn update(&self, f: impl FnOnce(&mut PodRt)) {
        self.state.send_modify(f);
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The Pod's termination grace in seconds.
    pub fn grace_seconds(&self) -> i64 {
        self.pod()
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
    }

    async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Sleeps for `d`; true if the Pod started stopping meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            () = self.stopped() => true,
        }
    }
}

/// Starts the worker of a Pod bound to this node.
pub fn spawn(rt: Arc<Runtime>, pod: Arc<Pod>) -> PodHandle {
    let (pod_tx, pod_rx) = watch::channel(pod);
    let (control, control_rx) = watch::channel(Control::Run);
    let task = tokio::spawn(run(rt, pod_rx, control_rx));
    PodHandle {
        pod_tx,
        control,
        task,
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// True if the Pod has finished (it is never run again).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The stop a Pod needs now, if any.
pub fn desired_stop(pod: &Pod, control: Control, now: Instant) -> Option<Stop> {
    let stop = |after: Duration, pre_stop, reason| {
        Some(Stop {
            deadline: now + after,
            pre_stop,
            reason,
        })
    };
    match control {
        Control::Shutdown => stop(SHUTDOWN_GRACE, false, StopReason::Shutdown),
        Control::Removed => stop(REMOVED_GRACE, false, StopReason::Removed),
        Control::Run => {
            pod.metadata.deletion_timestamp.as_ref()?;
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30);
            stop(
                Duration::from_secs(grace.max(0) as u64),
                true,
                StopReason::Deleted,
            )
        }
    }
}

/// Merges a new stop request into the current one: deadlines only move
/// earlier, and the stronger reason wins.
pub fn merge_stop(current: &mut Option<Stop>, new: Stop) -> bool {
    match current {
        None => {
            *current = Some(new);
            true
        }
        Some(c) => {
            let before = *c;
            c.deadline = c.deadline.min(new.deadline);
            c.reason = c.reason.max(new.reason);
            c.pre_stop &= new.pre_stop;
            *c != before
        }
    }
}

async fn run(
    rt: Arc<Runtime>,
    pod_rx: watch::Receiver<Arc<Pod>>,
    control_rx: watch::Receiver<Control>,
) {
    let pod = pod_rx.borrow().clone();
    let uid = uid_of(&pod);
    if is_terminal(&pod) || pod.metadata.deletion_timestamp.is_some() {
        linger(&rt, pod_rx, control_rx).await;
    } else if let Some(ip) = allocate_ip(&rt, &pod, &control_rx).await {
        run_pod(rt.clone(), pod_rx, control_rx, ip).await;
    }
    rt.forget(&uid);
}

/// A Pod that is not (re)started: wait for its deletion, then finish it.
async fn linger(
    rt: &Arc<Runtime>,
    mut pod_rx: watch::Receiver<Arc<Pod>>,
    mut control_rx: watch::Receiver<Control>,
) {
    let mut inputs = Inputs::default();
    loop {
        let pod = pod_rx.borrow_and_update().clone();
        let control = *control_rx.borrow_and_update();
        match control {
            Control::Shutdown => return,
            Control::Removed => return cleanup(rt, &pod),
            Control::Run if pod.metadata.deletion_timestamp.is_some() => {
                delete_from_api(rt, &pod).await;
                return cleanup(rt, &pod);
            }
            Control::Run => {}
        }
        if !inputs.next(&mut pod_rx, &mut control_rx).await {
            return;
        }
    }
}

async fn allocate_ip(
    rt: &Arc<Runtime>,
    pod: &Pod,
    control_rx: &watch::Receiver<Control>,
) -> Option<Ipv4Addr> {
    let uid = uid_of(pod);
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Some(Ipv4Addr::LOCALHOST);
    }
    let preferred = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|s| s.parse().ok());
    loop {
        if let Some(ip) = rt.ipam().allocate(&uid, preferred) {
            return Some(ip);
        }
        tracing::warn!(pod = %uid, "pod CIDR exhausted; waiting for a free IP");
        tokio::time::sleep(Duration::from_secs(5)).await;
        if *control_rx.borrow() != Control::Run {
            return None;
        }
    }
}

/// The restart count a container continues from after an agent restart
/// (its last run's count + 1), from the Pod's previous status.
pub fn continued_restarts(statuses: Option<&Vec<ContainerStatus>>, name: &str) -> i32 {
    statuses
        .into_iter()
        .flatten()
        .find(|s| s.name == name && s.container_id.is_some())
        .map_or(0, |s| s.restart_count + 1)
}

fn initial_state(pod: &Pod, ip: Ipv4Addr) -> PodRt {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let inits = spec.init_containers.unwrap_or_default();
    let regular_reason = if inits.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let rt = |c: &Container, reason, sidecar, prev: Option<&Vec<ContainerStatus>>| ContainerRt {
        restart_count: continued_restarts(prev, &c.name),
        ..ContainerRt::new(c, reason, sidecar)
    };
    let prev_init = status.and_then(|s| s.init_container_statuses.as_ref());
    let prev = status.and_then(|s| s.container_statuses.as_ref());
    PodRt {
        pod_ip: Some(ip),
        start_time: Some(
            status
                .and_then(|s| s.start_time.clone())
                .map_or_else(Timestamp::now, |t| t.0),
        ),
        sandbox_ready: true,
        init: inits
            .iter()
            .map(|c| rt(c, "PodInitializing", is_sidecar(c), prev_init))
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| rt(c, regular_reason, false, prev))
            .collect(),
        initialized: inits.is_empty(),
        final_phase: None,
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

async fn run_pod(
    rt: Arc<Runtime>,
    pod_rx: watch::Receiver<Arc<Pod>>,
    control_rx: watch::Receiver<Control>,
    ip: Ipv4Addr,
) {
    let pod = pod_rx.borrow().clone();
    let uid = uid_of(&pod);
    let pod_dir = layout::pod_dir(&rt.ctx.args.state_dir, &uid);
    let p = Arc::new(PodCtx {
        rt: rt.clone(),
        uid: uid.clone(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        pod_rx: pod_rx.clone(),
        state: watch::channel(initial_state(&pod, ip)).0,
        stop: watch::channel(None).0,
        sidecar_stop: watch::channel(None).0,
        hosts_file: pod_dir.join("etc-hosts"),
        pod_dir,
        ip,
    });
    tracing::info!(pod = %p.key(), %uid, %ip, "starting pod");
    if let Err(e) = setup_dirs(&p, &pod) {
        tracing::warn!(pod = %p.key(), error = %e, "setting up the pod directory");
    }
    let done = CancellationToken::new();
    let api: Api<Pod> = Api::namespaced(rt.ctx.client.clone(), &p.namespace);
    let writer = tokio::spawn(status::writer(
        api,
        pod_rx.clone(),
        p.state.subscribe(),
        done.clone(),
    ));
    let stopper = tokio::spawn(watch_stop(p.clone(), pod_rx, control_rx));
    if let Some(phase) = lifecycle(&p).await {
        tracing::info!(pod = %p.key(), phase, "pod finished");
        p.update(|s| s.final_phase = Some(phase));
        p.stopped().await;
    }
    let reason = p.stop.borrow().map(|s| s.reason);
    tracing::info!(pod = %p.key(), ?reason, "pod stopped");
    match reason {
        Some(StopReason::Deleted) => {
            done.cancel();
            delete_from_api(&rt, &pod).await;
            cleanup(&rt, &pod);
        }
        Some(StopReason::Removed) => {
            done.cancel();
            cleanup(&rt, &pod);
        }
        Some(StopReason::Shutdown) | None => done.cancel(),
    }
    stopper.abort();
    let _ = writer.await;
}

fn setup_dirs(p: &PodCtx, pod: &Pod) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p.pod_dir.join("logs"))?;
    std::fs::set_permissions(&p.pod_dir, std::fs::Permissions::from_mode(0o711))?;
    let meta = serde_json::json!({"namespace": p.namespace, "name": p.name, "uid": p.uid});
    std::fs::write(p.pod_dir.join("pod.json"), meta.to_string())?;
    std::fs::write(&p.hosts_file, mounts::hosts_file(pod, p.ip))?;
    let link = layout::by_name_link(&p.rt.ctx.args.state_dir, &p.namespace, &p.name);
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = link.with_extension(format!("tmp-{}", p.uid));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("../{}", p.uid), &tmp)?;
    std::fs::rename(&tmp, &link)
}

/// Which of a worker's input channels are still open.
struct Inputs {
    pod: bool,
    control: bool,
}

impl Default for Inputs {
    fn default() -> Inputs {
        Inputs {
            pod: true,
            control: true,
        }
    }
}

impl Inputs {
    /// Waits for a Pod update or control message (or a channel closing, after
    /// which the last values are looked at once more); false once both are closed.
    async fn next(
        &mut self,
        pod_rx: &mut watch::Receiver<Arc<Pod>>,
        control_rx: &mut watch::Receiver<Control>,
    ) -> bool {
        tokio::select! {
            r = pod_rx.changed(), if self.pod => self.pod = r.is_ok(),
            r = control_rx.changed(), if self.control => self.control = r.is_ok(),
            else => return false,
        }
        true
    }
}

/// Turns deletion, removal and shutdown into the Pod's stop request.
async fn watch_stop(
    p: Arc<PodCtx>,
    mut pod_rx: watch::Receiver<Arc<Pod>>,
    mut control_rx: watch::Receiver<Control>,
) {
    let mut inputs = Inputs::default();
    loop {
        let want = desired_stop(
            &pod_rx.borrow_and_update(),
            *control_rx.borrow_and_update(),
            Instant::now(),
        );
        if let Some(s) = want {
            p.stop.send_if_modified(|cur| merge_stop(cur, s));
        }
        if !inputs.next(&mut pod_rx, &mut control_rx).await {
            return;
        }
    }
}

/// Runs volumes and containers; `Some(phase)` when the Pod finished on its own.
async fn lifecycle(p: &Arc<PodCtx>) -> Option<&'static str> {
    let vols = prepare_volumes(p).await?;
    let paths = Arc::new(vols.paths.clone());
    let refresher = tokio::spawn(refresh_volumes(p.clone(), vols));
    let mut sidecars = Vec::new();
    let result = run_containers(p, &paths, &mut sidecars).await;
    if !sidecars.is_empty() {
        let forward = tokio::spawn(forward_stop(p.clone(), result.is_some()));
        for h in sidecars {
            let _ = h.await;
        }
        forward.abort();
    }
    refresher.abort();
    result
}

/// Stops sidecars: with the Pod's stop request, or now if the Pod finished.
async fn forward_stop(p: Arc<PodCtx>, finished: bool) {
    if finished {
        let deadline = Instant::now() + Duration::from_secs(p.grace_seconds().max(0) as u64);
        p.sidecar_stop.send_replace(Some(Stop {
            deadline,
            pre_stop: true,
            reason: StopReason::Deleted,
        }));
    }
    let mut rx = p.stop.subscribe();
    loop {
        if let Some(s) = *rx.borrow_and_update() {
            p.sidecar_stop.send_if_modified(|cur| merge_stop(cur, s));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn prepare_volumes(p: &Arc<PodCtx>) -> Option<PodVolumes> {
    let client = &p.rt.ctx.client;
    let fr = fieldref::Runtime { pod_ip: p.ip };
    let mut last: Option<String> = None;
    loop {
        let pod = p.pod();
        let err = match PodVolumes::prepare(client, &pod, &p.pod_dir, fr).await {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let reason = match err {
            VolumeError::NotReady(_) => "ContainerCreating",
            VolumeError::Invalid(_) => "CreateContainerConfigError",
        };
        let msg = err.message().to_string();
        if last.as_deref() != Some(msg.as_str()) {
            tracing::warn!(pod = %p.key(), message = %msg, "volumes not ready");
            p.rt.events.publish(
                &pod,
                None,
                true,
                "FailedMount",
                format!("MountVolume failed: {msg}"),
            );
            last = Some(msg.clone());
        }
        p.update(|s| {
            for c in s.init.iter_mut().chain(s.containers.iter_mut()) {
                if matches!(c.state, CState::Waiting { .. }) {
                    c.wait(reason, Some(msg.clone()));
                }
            }
        });
        if p.pause(VOLUME_RETRY).await {
            return None;
        }
    }
}

async fn refresh_volumes(p: Arc<PodCtx>, mut vols: PodVolumes) {
    let fr = fieldref::Runtime { pod_ip: p.ip };
    loop {
        tokio::time::sleep(VOLUME_REFRESH).await;
        if let Err(e) = vols.refresh(&p.rt.ctx.client, &p.pod(), fr).await {
            tracing::warn!(pod = %p.key(), error = %e, "refreshing volumes");
        }
    }
}

async fn run_containers(
    p: &Arc<PodCtx>,
    paths: &Arc<HashMap<String, VolumePath>>,
    sidecars: &mut Vec<tokio::task::JoinHandle<Exit>>,
) -> Option<&'static str> {
    let pod = p.pod();
    let spec = pod.spec.clone().unwrap_or_default();
    p.update(|s| {
        for c in s.init.iter_mut().chain(s.containers.iter_mut()) {
            let reason = if s.initialized {
                "ContainerCreating"
            } else {
                "PodInitializing"
            };
            c.wait(reason, None);
        }
    });
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        if is_sidecar(c) {
            sidecars.push(tokio::spawn(
                Supervisor::new(p.clone(), paths.clone(), Kind::Sidecar, i).run(),
            ));
            if !sidecar_started(p, i).await {
                return None;
            }
            continue;
        }
        match Supervisor::new(p.clone(), paths.clone(), Kind::Init, i)
            .run()
            .await
        {
            Exit::Completed(0) => {}
            Exit::Completed(_) => return Some("Failed"),
            Exit::Stopped => return None,
        }
    }
    p.update(|s| {
        s.initialized = true;
        for c in &mut s.containers {
            c.wait("ContainerCreating", None);
        }
    });
    let handles: Vec<_> = (0..spec.containers.len())
        .map(|i| tokio::spawn(Supervisor::new(p.clone(), paths.clone(), Kind::Regular, i).run()))
        .collect();
    let mut codes = Vec::new();
    for h in handles {
        match h.await.unwrap_or(Exit::Stopped) {
            Exit::Completed(code) => codes.push(code),
            Exit::Stopped => return None,
        }
    }
    Some(if codes.iter().all(|c| *c == 0) {
        "Succeeded"
    } else {
        "Failed"
    })
}

async fn sidecar_started(p: &PodCtx, index: usize) -> bool {
    let mut rx = p.state.subscribe();
    tokio::select! {
        r = rx.wait_for(|s| s.init[index].started) => r.is_ok(),
        () = p.stopped() => false,
    }
}

/// Deletes the Pod object for good (grace 0, only this UID).
async fn delete_from_api(rt: &Runtime, pod: &Pod) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(rt.ctx.client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    for attempt in 0..5 {
        match api.delete(name, &dp).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, attempt, "deleting pod");
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
        }
    }
}

/// Releases the IP and removes the pod directory (never a claim's data).
fn cleanup(rt: &Runtime, pod: &Pod) {
    let uid = uid_of(pod);
    rt.ipam().release(&uid);
    let state_dir = &rt.ctx.args.state_dir;
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let link = layout::by_name_link(state_dir, ns, name);
    if std::fs::read_link(&link).is_ok_and(|t| t == std::path::Path::new("..").join(&uid)) {
        let _ = std::fs::remove_file(&link);
    }
    let dir = layout::pod_dir(state_dir, &uid);
    if !uid.is_empty()
        && let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing pod directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn stop_requests() {
        let now = Instant::now();
        let running = pod(serde_json::json!({"metadata": {}, "spec": {"containers": []}}));
        assert_eq!(desired_stop(&running, Control::Run, now), None);
        let deleting = pod(
            serde_json::json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z",
            "deletionGracePeriodSeconds": 7}, "spec": {"containers": [], "terminationGracePeriodSeconds": 60}}),
        );
        let s = desired_stop(&deleting, Control::Run, now).unwrap();
        assert_eq!(
            (s.deadline - now, s.pre_stop, s.reason),
            (Duration::from_secs(7), true, StopReason::Deleted)
        );
        let forced = desired_stop(&deleting, Control::Removed, now).unwrap();
        assert_eq!(
            (forced.pre_stop, forced.reason),
            (false, StopReason::Removed)
        );

        let mut cur = None;
        assert!(merge_stop(&mut cur, s));
        let later = Stop {
            deadline: now + Duration::from_secs(100),
            ..s
        };
        assert!(!merge_stop(&mut cur, later), "deadlines only move earlier");
        assert!(merge_stop(&mut cur, forced));
        let merged = cur.unwrap();
        assert_eq!(
            (merged.deadline - now, merged.reason),
            (REMOVED_GRACE, StopReason::Removed)
        );
    }

    #[test]
    fn restart_counts_continue_after_an_agent_restart() {
        let p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"startTime": "2024-01-01T00:00:00Z", "containerStatuses": [
                {"name": "a", "image": "", "imageID": "", "ready": false, "restartCount": 2, "containerID": "localnode://u-a-2"},
                {"name": "b", "image": "", "imageID": "", "ready": false, "restartCount": 0}]}}),
        );
        let s = initial_state(&p, Ipv4Addr::new(127, 10, 0, 2));
        assert_eq!(s.containers[0].restart_count, 3);
        assert_eq!(s.containers[1].restart_count, 0, "never started");
        assert_eq!(s.start_time.unwrap().as_second(), 1_704_067_200);
    }

    #[test]
    fn terminal_pods() {
        assert!(is_terminal(&pod(
            serde_json::json!({"status": {"phase": "Succeeded"}})
        )));
        assert!(!is_terminal(&pod(
            serde_json::json!({"status": {"phase": "Running"}})
        )));
    }
}
