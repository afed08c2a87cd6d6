//! One container's supervisor: prepares its configuration, starts it in a
//! sandbox, runs its probes, stops it on request and restarts it per the
//! restart policy with exponential back-off.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::probes::{self, Action, Probes, Report, Target};
use super::procs::signal_group;
use super::state::{CState, Kind, Terminated};
use super::volumes::VolumePath;
use super::worker::{PodCtx, Stop};
use super::{command, env, fieldref, layout, mounts, status, sweep, user};
use crate::sandbox;

/// How often a container whose configuration is incomplete is retried.
const CONFIG_RETRY: Duration = Duration::from_secs(5);
/// How often a container whose image is not mapped is re-checked.
const IMAGE_RETRY: Duration = Duration::from_secs(60);

/// How a supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The container exited and is not restarted (with this exit code).
    Completed(i32),
    /// The Pod is stopping.
    Stopped,
}

/// Why a container cannot start yet.
struct Wait {
    reason: &'static str,
    message: String,
    retry: Duration,
}

/// Everything needed to start one run of the container.
struct Launch {
    spec: sandbox::Spec,
    image_id: String,
    probes: Probes,
    target: Arc<Target>,
    pre_stop: Option<Action>,
    post_start: Option<Action>,
    stop_signal: Signal,
}

/// Supervises one container of a Pod.
pub struct Supervisor {
    p: Arc<PodCtx>,
    vols: Arc<HashMap<String, VolumePath>>,
    kind: Kind,
    index: usize,
    c: Container,
    stop_rx: watch::Receiver<Option<Stop>>,
    last_wait: Option<String>,
}

/// True if a container that exited with `code` is restarted under `policy`.
pub fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Always" => true,
        "OnFailure" => code != 0,
        _ => false,
    }
}

/// The restart policy of a container of `kind` in `pod`.
pub fn policy(pod: &Pod, kind: Kind) -> &'static str {
    match (kind, status::restart_policy(pod)) {
        (Kind::Sidecar, _) => "Always",
        (Kind::Init, "Never") => "Never",
        (Kind::Init, _) => "OnFailure",
        (Kind::Regular, "Never") => "Never",
        (Kind::Regular, "OnFailure") => "OnFailure",
        (Kind::Regular, _) => "Always",
    }
}

/// How a run ended, from the process status and the sandbox's error file.
pub fn termination(
    status: std::io::Result<ExitStatus>,
    start_error: Option<String>,
    started_at: Timestamp,
    finished_at: Timestamp,
    container_id: String,
) -> Terminated {
    let (code, signal) = match &status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => (c, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            (None, None) => (-1, None),
        },
        Err(_) => (-1, None),
    };
    let (reason, message, code) = match (start_error, &status) {
        (Some(msg), _) if code == sandbox::SETUP_FAILED => ("StartError", Some(msg), code),
        (_, Err(e)) => ("Error", Some(format!("waiting for the process: {e}")), code),
        _ if code == 0 => ("Completed", None, code),
        _ => ("Error", None, code),
    };
    Terminated {
        exit_code: code,
        signal,
        reason: reason.to_string(),
        message,
        started_at: Some(started_at),
        finished_at,
        container_id: Some(container_id),
    }
}

/// Parses `lifecycle.stopSignal` (default SIGTERM).
fn stop_signal(c: &Container) -> Result<Signal, String> {
    match c.lifecycle.as_ref().and_then(|l| l.stop_signal.as_deref()) {
        None => Ok(Signal::SIGTERM),
        Some(s) => s
            .parse::<Signal>()
            .map_err(|_| format!("unsupported stopSignal {s:?}")),
    }
}

impl Supervisor {
    /// A supervisor for container `index` of the `kind` list.
    pub fn new(
        p: Arc<PodCtx>,
        vols: Arc<HashMap<String, VolumePath>>,
        kind: Kind,
        index: usize,
    ) -> Supervisor {
        let pod = p.pod();
        let spec = pod.spec.as_ref().expect("pod has a spec");
        let c = match kind {
            Kind::Regular => spec.containers[index].clone(),
            Kind::Init | Kind::Sidecar => {
                spec.init_containers.as_ref().expect("init containers")[index].clone()
            }
        };
        let stop_rx = if kind == Kind::Sidecar {
            p.sidecar_stop.subscribe()
        } else {
            p.stop.subscribe()
        };
        Supervisor {
            p,
            vols,
            kind,
            index,
            c,
            stop_rx,
            last_wait: None,
        }
    }

    /// Runs the container until it completes for good or the Pod stops.
    pub async fn run(mut self) -> Exit {
        let args = &self.p.rt.ctx.args;
        let mut backoff = Backoff::new(
            Duration::from_millis(args.restart_backoff_ms),
            Duration::from_millis(args.restart_backoff_cap_ms),
        );
        let policy = policy(&self.p.pod(), self.kind);
        let mut restart = self.initial_restart_count();
        loop {
            if self.stopping() {
                return Exit::Stopped;
            }
            let launch = match self.prepare().await {
                Ok(l) => l,
                Err(w) => {
                    self.waiting(w.reason, w.message);
                    if self.pause(w.retry).await {
                        return Exit::Stopped;
                    }
                    continue;
                }
            };
            self.last_wait = None;
            if self.stopping() {
                return Exit::Stopped;
            }
            let (t, ran) = self.run_once(launch, restart).await;
            if self.stopping() {
                return Exit::Stopped;
            }
            if !should_restart(policy, t.exit_code) {
                return Exit::Completed(t.exit_code);
            }
            let delay = backoff.next_delay(ran);
            self.back_off(t, delay);
            if self.pause(delay).await {
                return Exit::Stopped;
            }
            restart += 1;
        }
    }

    fn field(&self) -> String {
        match self.kind {
            Kind::Regular => format!("spec.containers{{{}}}", self.c.name),
            Kind::Init | Kind::Sidecar => format!("spec.initContainers{{{}}}", self.c.name),
        }
    }

    fn event(&self, warning: bool, reason: &str, note: String) {
        self.p
            .rt
            .events
            .publish(&self.p.pod(), Some(self.field()), warning, reason, note);
    }

    fn update(&self, f: impl FnOnce(&mut super::state::ContainerRt)) {
        let (kind, index) = (self.kind, self.index);
        self.p.update(|s| f(s.container_mut(kind, index)));
    }

    fn stopping(&self) -> bool {
        self.stop_rx.borrow().is_some()
    }

    /// Sleeps for `d`; true if the Pod started stopping meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            _ = self.stop_rx.wait_for(Option::is_some) => true,
        }
    }

    /// The restart count the first run gets (continues a previous agent's runs).
    fn initial_restart_count(&self) -> i32 {
        self.p
            .state
            .borrow()
            .container(self.kind, self.index)
            .restart_count
    }

    fn waiting(&mut self, reason: &'static str, message: String) {
        if self.last_wait.as_deref() != Some(message.as_str()) {
            tracing::warn!(pod = %self.p.key(), container = %self.c.name, reason, %message, "container cannot start");
            self.event(true, "Failed", format!("Error: {reason}: {message}"));
            self.last_wait = Some(message.clone());
        }
        self.update(|c| c.wait(reason, Some(message)));
    }

    fn back_off(&self, t: Terminated, delay: Duration) {
        let p = &self.p;
        let msg = format!(
            "back-off {}s restarting failed container={} pod={}_{}({})",
            delay.as_secs_f64().ceil(),
            self.c.name,
            p.name,
            p.namespace,
            p.uid
        );
        self.update(|c| {
            c.last_state = Some(t);
            c.wait("CrashLoopBackOff", Some(msg));
        });
        self.event(
            true,
            "BackOff",
            format!(
                "Back-off restarting failed container {} in pod {}",
                self.c.name,
                p.key()
            ),
        );
    }

    /// Resolves image, environment, command, mounts and user.
    async fn prepare(&self) -> Result<Launch, Wait> {
        let pod = self.p.pod();
        let ctx = &self.p.rt.ctx;
        let image = self.c.image.clone().unwrap_or_default();
        let rule = ctx.images.resolve(&image).map_err(|e| Wait {
            reason: "ErrImageNotMapped",
            message: e.to_string(),
            retry: IMAGE_RETRY,
        })?;
        let cfg = |message: String| Wait {
            reason: "CreateContainerConfigError",
            message,
            retry: CONFIG_RETRY,
        };
        let ports = self.c.ports.clone().unwrap_or_default();
        let probes = Probes::of(&self.c).map_err(cfg)?;
        let lifecycle = self.c.lifecycle.as_ref();
        let hook = |h: Option<&k8s_openapi::api::core::v1::LifecycleHandler>, what: &str| {
            h.map(|h| probes::hook_action(h, &ports).map_err(|e| cfg(format!("{what}: {e}"))))
                .transpose()
        };
        let post_start = hook(lifecycle.and_then(|l| l.post_start.as_ref()), "postStart")?;
        let pre_stop = hook(lifecycle.and_then(|l| l.pre_stop.as_ref()), "preStop")?;
        let stop_signal = stop_signal(&self.c).map_err(cfg)?;
        let user = user::resolve(&pod, &self.c).map_err(cfg)?;
        let sources = env::fetch(&ctx.client, &pod, &self.c).await.map_err(cfg)?;
        let rt = fieldref::Runtime { pod_ip: self.p.ip };
        let base = env::Base {
            path: rule.search_path(),
            image_env: &rule.env,
            rt,
        };
        let env = env::build(&pod, &self.c, &base, &sources).map_err(cfg)?;
        let argv = command::resolve(&self.c, rule, &env).map_err(cfg)?;
        let mounts = mounts::container_mounts(&self.c, &self.vols, &env, rule, &self.p.hosts_file)
            .map_err(cfg)?;
        let cwd = self
            .c
            .working_dir
            .clone()
            .or_else(|| rule.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let run_dir = layout::run_dir(&self.p.pod_dir, &self.c.name);
        let image_id = format!(
            "localnode://{}",
            command::host_executable(&argv[0], rule).display()
        );
        let spec = sandbox::Spec {
            argv,
            env: env.0.clone(),
            cwd,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups,
            mounts,
            error_file: Some(run_dir.join("start-error")),
            scratch_dir: run_dir,
            hostname: Some(mounts::hostname(&pod)),
        };
        let target = Arc::new(Target {
            pod_ip: self.p.ip,
            sandbox: spec.clone(),
            exe: self.p.rt.exe.clone(),
            spawner: self.p.rt.spawner.clone(),
            env,
            procs: self.p.rt.procs.clone(),
        });
        Ok(Launch {
            spec,
            image_id,
            probes,
            target,
            pre_stop,
            post_start,
            stop_signal,
        })
    }

    async fn spawn(&self, l: &Launch, restart: i32) -> Result<tokio::process::Child, String> {
        let state_dir = &self.p.rt.ctx.args.state_dir;
        let log = layout::log_file(state_dir, &self.p.uid, &self.c.name, restart);
        let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        }
        std::fs::create_dir_all(&l.spec.scratch_dir)
            .map_err(|e| io("creating", &l.spec.scratch_dir, e))?;
        if let Some(f) = &l.spec.error_file {
            let _ = std::fs::remove_file(f);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| io("opening log", &log, e))?;
        let err = file.try_clone().map_err(|e| io("opening log", &log, e))?;
        let rt = &self.p.rt;
        rt.spawner
            .spawn(&l.spec, &rt.exe, Stdio::from(file), Stdio::from(err))
            .await
            .map_err(|e| format!("starting the sandbox: {e}"))
    }

    /// Starts the container once and waits for it to exit. Returns how it
    /// ended and how long it ran.
    async fn run_once(&mut self, l: Launch, restart: i32) -> (Terminated, Duration) {
        let cid = format!("localnode://{}-{}-{}", self.p.uid, self.c.name, restart);
        let started_at = Timestamp::now();
        let began = Instant::now();
        let child = match self.spawn(&l, restart).await {
            Ok(c) => c,
            Err(msg) => {
                return (
                    self.start_failed(msg, started_at, cid, restart),
                    Duration::ZERO,
                );
            }
        };
        let pgid = child.id().map_or(0, |p| p as i32);
        self.p.rt.procs.add(pgid);
        sweep::record(&l.spec.scratch_dir, pgid);
        let image_id = l.image_id.clone();
        let running_id = cid.clone();
        self.update(|c| {
            c.state = CState::Running { started_at };
            c.container_id = Some(running_id);
            c.image_id = image_id;
            c.restart_count = restart;
            c.ready = false;
            c.started = false;
        });
        self.event(
            false,
            "Created",
            format!("Created container: {}", self.c.name),
        );
        self.event(
            false,
            "Started",
            format!("Started container {}", self.c.name),
        );
        let status = self.wait(child, pgid, &l).await;
        self.p.rt.procs.finish(pgid);
        sweep::forget(&l.spec.scratch_dir);
        let start_error = l
            .spec
            .error_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok());
        let t = termination(status, start_error, started_at, Timestamp::now(), cid);
        if t.reason == "StartError" {
            self.event(
                true,
                "Failed",
                format!("Error: {}", t.message.clone().unwrap_or_default()),
            );
        }
        let ended = t.clone();
        self.update(|c| {
            c.state = CState::Terminated(ended);
            c.ready = false;
            c.started = false;
        });
        (t, began.elapsed())
    }

    fn start_failed(
        &self,
        msg: String,
        started_at: Timestamp,
        cid: String,
        restart: i32,
    ) -> Terminated {
        self.event(true, "Failed", format!("Error: {msg}"));
        let t = Terminated {
            exit_code: sandbox::SETUP_FAILED,
            signal: None,
            reason: "StartError".into(),
            message: Some(msg),
            started_at: Some(started_at),
            finished_at: Timestamp::now(),
            container_id: Some(cid),
        };
        let ended = t.clone();
        self.update(|c| {
            c.state = CState::Terminated(ended);
            c.restart_count = restart;
        });
        t
    }

    /// Waits for the process, handling probe reports, kills and Pod stops.
    async fn wait(
        &mut self,
        mut child: tokio::process::Child,
        pgid: i32,
        l: &Launch,
    ) -> std::io::Result<ExitStatus> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let probe_task = tokio::spawn(probes::run(l.target.clone(), l.probes.clone(), tx.clone()));
        let hook_task = l
            .post_start
            .clone()
            .map(|a| tokio::spawn(post_start(l.target.clone(), a, tx)));
        let mut killer: Option<tokio::task::JoinHandle<()>> = None;
        let mut stop_rx = self.stop_rx.clone();
        let mut reports_open = true;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                r = rx.recv(), if reports_open => match r {
                    None => reports_open = false,
                    Some(Report::Kill { reason, grace }) if killer.is_none() => {
                        self.event(false, "Killing", format!("Container {} {reason}, will be restarted", self.c.name));
                        let grace = grace.unwrap_or_else(|| self.p.grace_seconds());
                        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
                        killer = Some(self.spawn_killer(pgid, deadline, l, true));
                    }
                    Some(r) => self.report(r),
                },
                stop = stop_rx.wait_for(Option::is_some), if killer.is_none() => {
                    let stop = stop.ok().and_then(|s| *s);
                    let deadline = stop.map_or_else(|| Instant::now() + Duration::from_secs(2), |s| s.deadline);
                    self.event(false, "Killing", format!("Stopping container {}", self.c.name));
                    killer = Some(self.spawn_killer(pgid, deadline, l, stop.is_some_and(|s| s.pre_stop)));
                }
            }
        };
        probe_task.abort();
        if let Some(h) = hook_task {
            h.abort();
        }
        if let Some(k) = killer {
            k.abort();
        }
        status
    }

    fn report(&self, r: Report) {
        match r {
            Report::Started => self.update(|c| c.started = true),
            Report::Ready(ready) => self.update(|c| c.ready = ready && c.started),
            Report::Unhealthy(msg) => self.event(true, "Unhealthy", msg),
            Report::Kill { .. } => {}
        }
    }

    fn spawn_killer(
        &self,
        pgid: i32,
        deadline: Instant,
        l: &Launch,
        run_pre_stop: bool,
    ) -> tokio::task::JoinHandle<()> {
        let pre_stop = l
            .pre_stop
            .clone()
            .filter(|_| run_pre_stop)
            .map(|a| (a, l.target.clone()));
        tokio::spawn(kill_sequence(
            pgid,
            deadline,
            self.stop_rx.clone(),
            pre_stop,
            l.stop_signal,
        ))
    }
}

/// Runs a postStart hook; a failure kills the container.
async fn post_start(t: Arc<Target>, a: Action, tx: mpsc::UnboundedSender<Report>) {
    if let probes::Outcome::Failure(m) = probes::run_action(&t, &a, Duration::from_secs(300)).await
    {
        let _ = tx.send(Report::Unhealthy(format!("PostStartHook failed: {m}")));
        let _ = tx.send(Report::Kill {
            reason: "failed its postStart hook".into(),
            grace: None,
        });
    }
}

/// preStop (bounded by the deadline), the stop signal to the process group,
/// then SIGKILL at the deadline (which a Pod stop may bring forward).
async fn kill_sequence(
    pgid: i32,
    deadline: Instant,
    mut stop_rx: watch::Receiver<Option<Stop>>,
    pre_stop: Option<(Action, Arc<Target>)>,
    sig: Signal,
) {
    let effective = |rx: &watch::Receiver<Option<Stop>>| {
        rx.borrow().map_or(deadline, |s| s.deadline.min(deadline))
    };
    if let Some((action, target)) = pre_stop {
        let budget = effective(&stop_rx).saturating_duration_since(Instant::now());
        if let probes::Outcome::Failure(m) = probes::run_action(&target, &action, budget).await {
            tracing::info!(pgid, message = %m, "preStop hook failed");
        }
    }
    signal_group(pgid, sig);
    loop {
        let until = effective(&stop_rx);
        tokio::select! {
            () = tokio::time::sleep_until(until) => break,
            r = stop_rx.changed() => if r.is_err() {
                tokio::time::sleep_until(until).await;
                break;
            },
        }
    }
    signal_group(pgid, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn restart_policies() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 1));
        let pod = |p: &str| -> Pod {
            serde_json::from_value(
                serde_json::json!({"spec": {"restartPolicy": p, "containers": []}}),
            )
            .unwrap()
        };
        assert_eq!(policy(&pod("Always"), Kind::Init), "OnFailure");
        assert_eq!(policy(&pod("Never"), Kind::Init), "Never");
        assert_eq!(policy(&pod("Never"), Kind::Sidecar), "Always");
        assert_eq!(policy(&pod("OnFailure"), Kind::Regular), "OnFailure");
    }

    #[test]
    fn terminations() {
        let t = |raw: i32, err: Option<&str>| {
            termination(
                Ok(ExitStatus::from_raw(raw)),
                err.map(str::to_string),
                ts(1),
                ts(2),
                "id".into(),
            )
        };
        let ok = t(0, None);
        assert_eq!(
            (ok.exit_code, ok.reason.as_str(), ok.signal),
            (0, "Completed", None)
        );
        let failed = t(3 << 8, None);
        assert_eq!((failed.exit_code, failed.reason.as_str()), (3, "Error"));
        let killed = t(9, None);
        assert_eq!(
            (killed.exit_code, killed.signal, killed.reason.as_str()),
            (137, Some(9), "Error")
        );
        let start = t(
            128 << 8,
            Some("exec: \"nope\": executable file not found in $PATH"),
        );
        assert_eq!(start.reason, "StartError");
        assert!(start.message.unwrap().contains("nope"));
        let stale = t(128 << 8, None);
        assert_eq!(stale.reason, "Error");
    }

    #[test]
    fn stop_signals() {
        let c = |s: Option<&str>| -> Container {
            serde_json::from_value(serde_json::json!({"name": "c", "lifecycle": {"stopSignal": s}}))
                .unwrap()
        };
        assert_eq!(stop_signal(&c(None)).unwrap(), Signal::SIGTERM);
        assert_eq!(stop_signal(&c(Some("SIGINT"))).unwrap(), Signal::SIGINT);
        assert!(stop_signal(&c(Some("SIGNOPE"))).is_err());
    }
}
