//! Pod status: built from the runtime view (pure) and written to the API by a
//! per-pod task that patches only when the computed status changes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::fieldref::HOST_IP;
use super::state::{CState, ContainerRt, PodRt, Terminated};

/// How long status changes are collected before one write.
const COALESCE: Duration = Duration::from_millis(100);
/// Field manager of the status writes.
const FIELD_MANAGER: &str = "localnode";
/// Delay before retrying a failed write.
const RETRY: Duration = Duration::from_secs(1);

/// Pod phase from the container states (the kubelet's `getPhase`).
pub fn phase(pod: &Pod, rt: &PodRt) -> &'static str {
    if let Some(p) = rt.final_phase {
        return p;
    }
    let policy = restart_policy(pod);
    for c in &rt.init {
        if let CState::Terminated(t) = &c.state
            && t.exit_code != 0
            && policy == "Never"
            && !c.sidecar
        {
            return "Failed";
        }
    }
    if !rt.initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &rt.containers {
        match &c.state {
            CState::Running { .. } => running += 1,
            CState::Terminated(t) => {
                stopped += 1;
                succeeded += usize::from(t.exit_code == 0);
            }
            CState::Waiting { .. } if c.last_state.is_some() => stopped += 1,
            CState::Waiting { .. } => waiting += 1,
        }
    }
    match () {
        _ if waiting > 0 => "Pending",
        _ if running > 0 => "Running",
        _ if stopped > 0 && policy == "Always" => "Running",
        _ if stopped > 0 && stopped == succeeded => "Succeeded",
        _ if stopped > 0 && policy == "Never" => "Failed",
        _ if stopped > 0 => "Running",
        _ => "Pending",
    }
}

/// The Pod's restartPolicy (default Always).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// One condition before timestamps: (type, status, reason, message).
type Cond = (&'static str, bool, Option<String>, Option<String>);

fn conditions(pod: &Pod, rt: &PodRt, phase: &str) -> Vec<Cond> {
    let names = |v: Vec<&ContainerRt>| -> String {
        v.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let incomplete: Vec<&ContainerRt> = rt
        .init
        .iter()
        .filter(|c| {
            if c.sidecar {
                !c.started
            } else {
                !c.succeeded()
            }
        })
        .collect();
    let initialized = rt.initialized || incomplete.is_empty();
    let unready: Vec<&ContainerRt> = rt
        .containers
        .iter()
        .chain(rt.init.iter().filter(|c| c.sidecar))
        .filter(|c| !c.ready)
        .collect();
    let containers_ready = unready.is_empty() && rt.final_phase.is_none();
    let not_ready = |what: &str| -> (Option<String>, Option<String>) {
        if phase == "Succeeded" {
            (Some("PodCompleted".into()), None)
        } else {
            let msg = format!(
                "containers with unready status: [{}]",
                names(unready.clone())
            );
            (Some(what.into()), Some(msg))
        }
    };
    let gates = readiness_gates(pod);
    let ready = containers_ready && gates.is_none();
    let (cr_reason, cr_msg) = if containers_ready {
        (None, None)
    } else {
        not_ready("ContainersNotReady")
    };
    let (r_reason, r_msg) = match (&gates, containers_ready) {
        (_, false) => not_ready("ContainersNotReady"),
        (Some(m), true) => (Some("ReadinessGatesNotReady".into()), Some(m.clone())),
        (None, true) => (None, None),
    };
    let (i_reason, i_msg) = if initialized {
        (None, None)
    } else {
        let msg = format!("containers with incomplete status: [{}]", names(incomplete));
        (Some("ContainersNotInitialized".into()), Some(msg))
    };
    let sandbox = rt.sandbox_ready && rt.final_phase.is_none();
    vec![
        ("PodReadyToStartContainers", sandbox, None, None),
        ("Initialized", initialized, i_reason, i_msg),
        ("Ready", ready, r_reason, r_msg),
        ("ContainersReady", containers_ready, cr_reason, cr_msg),
        ("PodScheduled", true, None, None),
    ]
}

/// A message if a readiness gate is not satisfied.
fn readiness_gates(pod: &Pod) -> Option<String> {
    let gates = pod.spec.as_ref()?.readiness_gates.as_ref()?;
    let current = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    gates.iter().find_map(|g| {
        let t = &g.condition_type;
        match current.and_then(|cs| cs.iter().find(|c| &c.type_ == t)) {
            None => Some(format!(
                "corresponding condition of pod readiness gate \"{t}\" does not exist."
            )),
            Some(c) if c.status != "True" => Some(format!(
                "the status of pod readiness gate \"{t}\" is not \"True\", but {}",
                c.status
            )),
            Some(_) => None,
        }
    })
}

/// Conditions with `lastTransitionTime` carried over from `prev` unless the status changed.
fn stamp(
    conds: Vec<Cond>,
    prev: &[PodCondition],
    now: &Timestamp,
    generation: Option<i64>,
) -> Vec<PodCondition> {
    conds
        .into_iter()
        .map(|(type_, ok, reason, message)| {
            let status = if ok { "True" } else { "False" }.to_string();
            let old = prev.iter().find(|c| c.type_ == type_);
            let since = match old {
                Some(o) if o.status == status => o.last_transition_time.clone(),
                _ => Some(Time(*now)),
            };
            PodCondition {
                type_: type_.to_string(),
                status,
                reason,
                message,
                last_transition_time: since,
                observed_generation: generation,
                last_probe_time: None,
            }
        })
        .collect()
}

fn time(t: &Timestamp) -> Time {
    Time(*t)
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.as_ref().map(time),
        finished_at: Some(time(&t.finished_at)),
        container_id: t.container_id.clone(),
    }
}

fn container_state(s: &CState) -> ContainerState {
    match s {
        CState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        CState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(started_at)),
            }),
            ..Default::default()
        },
        CState::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        },
    }
}

/// The API status of one container.
pub fn container_status(c: &ContainerRt) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        state: Some(container_state(&c.state)),
        last_state: Some(match &c.last_state {
            Some(t) => ContainerState {
                terminated: Some(terminated(t)),
                ..Default::default()
            },
            None => ContainerState::default(),
        }),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        ..Default::default()
    }
}

/// The Pod status for the runtime view; `prev` are the conditions last written.
pub fn build(pod: &Pod, rt: &PodRt, prev: &[PodCondition], now: &Timestamp) -> PodStatus {
    let phase = phase(pod, rt);
    let generation = pod.metadata.generation;
    let ip = rt.pod_ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(stamp(conditions(pod, rt, phase), prev, now, generation)),
        host_ip: Some(HOST_IP.to_string()),
        host_ips: Some(vec![HostIP {
            ip: HOST_IP.to_string(),
        }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: rt.start_time.as_ref().map(time),
        init_container_statuses: Some(rt.init.iter().map(container_status).collect()),
        container_statuses: Some(rt.containers.iter().map(container_status).collect()),
        observed_generation: generation,
        ..Default::default()
    }
}

/// The strategic-merge patch body; condition `reason`/`message` are written as
/// explicit nulls so stale values are removed (conditions merge by type).
pub fn patch_body(status: &PodStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Some(conds) = v.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conds.iter_mut().filter_map(Value::as_object_mut) {
            for key in ["reason", "message"] {
                c.entry(key).or_insert(Value::Null);
            }
        }
    }
    serde_json::json!({ "status": v })
}

/// Writes the Pod's status whenever the runtime view or the Pod changes,
/// coalescing bursts, until `done` is cancelled.
pub async fn writer(
    api: Api<Pod>,
    mut pod_rx: watch::Receiver<Arc<Pod>>,
    mut rt_rx: watch::Receiver<PodRt>,
    done: CancellationToken,
) {
    let name = pod_rx.borrow().metadata.name.clone().unwrap_or_default();
    let mut prev = pod_rx
        .borrow()
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut last: Option<PodStatus> = None;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut dirty = true;
    loop {
        if !dirty {
            tokio::select! {
                r = rt_rx.changed() => if r.is_err() { return },
                r = pod_rx.changed() => if r.is_err() { return },
                () = done.cancelled() => return,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(COALESCE) => {},
            () = done.cancelled() => return,
        }
        let pod = pod_rx.borrow_and_update().clone();
        let rt = rt_rx.borrow_and_update().clone();
        let status = build(&pod, &rt, &prev, &Timestamp::now());
        if last.as_ref() == Some(&status) {
            dirty = false;
            continue;
        }
        match api
            .patch_status(&name, &params, &Patch::Strategic(patch_body(&status)))
            .await
        {
            Ok(_) => {
                prev = status.conditions.clone().unwrap_or_default();
                last = Some(status);
                dirty = false;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "writing pod status");
                dirty = true;
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {},
                    () = done.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 3},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}
        }))
        .unwrap()
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some(ts(10)),
            finished_at: ts(20),
            container_id: Some("localnode://u-a-0".into()),
        }
    }

    fn rt(states: [CState; 2]) -> PodRt {
        let mk = |name: &str, state: CState| {
            let c: Container =
                serde_json::from_value(serde_json::json!({"name": name, "image": "busybox"}))
                    .unwrap();
            ContainerRt {
                state,
                ..ContainerRt::new(&c, "x", false)
            }
        };
        let [s1, s2] = states;
        PodRt {
            pod_ip: Some("127.10.0.2".parse().unwrap()),
            start_time: Some(ts(1)),
            sandbox_ready: true,
            initialized: true,
            containers: vec![mk("a", s1), mk("b", s2)],
            ..Default::default()
        }
    }

    fn waiting() -> CState {
        CState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        }
    }

    fn running() -> CState {
        CState::Running { started_at: ts(5) }
    }

    #[test]
    fn phases() {
        let p = pod("Always");
        assert_eq!(phase(&p, &rt([waiting(), running()])), "Pending");
        assert_eq!(phase(&p, &rt([running(), running()])), "Running");
        assert_eq!(
            phase(&p, &rt([CState::Terminated(term(1)), running()])),
            "Running"
        );
        assert_eq!(
            phase(
                &pod("Never"),
                &rt([CState::Terminated(term(0)), CState::Terminated(term(0))])
            ),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &pod("Never"),
                &rt([CState::Terminated(term(0)), CState::Terminated(term(2))])
            ),
            "Failed"
        );
        assert_eq!(
            phase(
                &pod("OnFailure"),
                &rt([CState::Terminated(term(0)), CState::Terminated(term(2))])
            ),
            "Running"
        );
        let mut crashloop = rt([running(), waiting()]);
        crashloop.containers[1].last_state = Some(term(1));
        assert_eq!(phase(&p, &crashloop), "Running");
        let mut not_init = rt([waiting(), waiting()]);
        not_init.initialized = false;
        assert_eq!(phase(&p, &not_init), "Pending");
        let mut frozen = rt([running(), running()]);
        frozen.final_phase = Some("Failed");
        assert_eq!(phase(&p, &frozen), "Failed");
    }

    #[test]
    fn builds_status_and_keeps_transition_times() {
        let p = pod("Always");
        let mut r = rt([running(), running()]);
        r.containers[0].ready = true;
        let s1 = build(&p, &r, &[], &ts(100));
        assert_eq!(s1.phase.as_deref(), Some("Running"));
        assert_eq!(s1.pod_ip.as_deref(), Some("127.10.0.2"));
        assert_eq!(s1.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(s1.observed_generation, Some(3));
        let cond = |s: &PodStatus, t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .cloned()
                .unwrap()
        };
        let ready = cond(&s1, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        // Same state later: identical status, so nothing to write.
        let s2 = build(&p, &r, s1.conditions.as_ref().unwrap(), &ts(200));
        assert_eq!(s1, s2);
        // b becomes ready: Ready transitions at 300, PodScheduled keeps its time.
        r.containers[1].ready = true;
        let s3 = build(&p, &r, s2.conditions.as_ref().unwrap(), &ts(300));
        assert_eq!(cond(&s3, "Ready").status, "True");
        assert_eq!(cond(&s3, "Ready").last_transition_time, Some(Time(ts(300))));
        assert_eq!(
            cond(&s3, "PodScheduled").last_transition_time,
            Some(Time(ts(100)))
        );
        let cs = &s3.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert!(cs.state.as_ref().unwrap().running.is_some());
    }

    #[test]
    fn readiness_gates_hold_ready() {
        let mut p = pod("Always");
        p.spec.as_mut().unwrap().readiness_gates =
            Some(vec![k8s_openapi::api::core::v1::PodReadinessGate {
                condition_type: "x/ok".into(),
            }]);
        let mut r = rt([running(), running()]);
        r.containers.iter_mut().for_each(|c| c.ready = true);
        let s = build(&p, &r, &[], &ts(1));
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
    }

    #[test]
    fn patch_nulls_stale_condition_fields() {
        let s = build(&pod("Always"), &rt([running(), running()]), &[], &ts(1));
        let body = patch_body(&s);
        let c = &body["status"]["conditions"][0];
        assert!(c.as_object().unwrap().contains_key("reason"));
        assert_eq!(
            body["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
            "1970-01-01T00:00:05Z"
        );
    }
}
