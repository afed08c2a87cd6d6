//! What the node knows about a Pod's containers at runtime (the input of the
//! status builder).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::jiff::Timestamp;

/// The state of one container.
#[derive(Debug, Clone, PartialEq)]
pub enum CState {
    /// Not running: why.
    Waiting {
        /// CamelCase reason (ContainerCreating, CrashLoopBackOff, …).
        reason: String,
        /// Human-readable detail.
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// When the process started.
        started_at: Timestamp,
    },
    /// Exited.
    Terminated(Terminated),
}

/// How a container run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    /// Exit code (128 + signal when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Completed, Error or StartError.
    pub reason: String,
    /// Detail (e.g. why it could not start).
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Timestamp,
    /// The run's container ID.
    pub container_id: Option<String>,
}

/// Runtime view of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRt {
    /// Container name.
    pub name: String,
    /// Image as in the spec.
    pub image: String,
    /// `localnode://<resolved path>` once known.
    pub image_id: String,
    /// ID of the current (or last) run.
    pub container_id: Option<String>,
    /// Current state.
    pub state: CState,
    /// How the previous run ended.
    pub last_state: Option<Terminated>,
    /// Number of restarts.
    pub restart_count: i32,
    /// Readiness.
    pub ready: bool,
    /// Started (startup probe passed).
    pub started: bool,
    /// An init container with restartPolicy Always (a sidecar).
    pub sidecar: bool,
}

impl ContainerRt {
    /// A container that has not started yet.
    pub fn new(c: &Container, reason: &str, sidecar: bool) -> ContainerRt {
        ContainerRt {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            container_id: None,
            state: CState::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            sidecar,
        }
    }

    /// True if the container has exited with code 0 (and is not restarting).
    pub fn succeeded(&self) -> bool {
        matches!(&self.state, CState::Terminated(t) if t.exit_code == 0)
    }

    /// Sets a waiting state (keeps the last termination).
    pub fn wait(&mut self, reason: &str, message: Option<String>) {
        self.state = CState::Waiting {
            reason: reason.to_string(),
            message,
        };
        self.ready = false;
        self.started = false;
    }
}

/// Runtime view of a Pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRt {
    /// Allocated pod IP.
    pub pod_ip: Option<Ipv4Addr>,
    /// When the node accepted the Pod.
    pub start_time: Option<Timestamp>,
    /// The pod directory and IP exist.
    pub sandbox_ready: bool,
    /// Init containers in spec order.
    pub init: Vec<ContainerRt>,
    /// Regular containers in spec order.
    pub containers: Vec<ContainerRt>,
    /// Every init container has completed (sidecars: started).
    pub initialized: bool,
    /// Final phase once decided (Succeeded or Failed); never changes after.
    pub final_phase: Option<&'static str>,
}

/// Which list a container belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `spec.initContainers` (run to completion).
    Init,
    /// `spec.initContainers` with restartPolicy Always.
    Sidecar,
    /// `spec.containers`.
    Regular,
}

impl PodRt {
    /// The runtime entry of a container.
    pub fn container_mut(&mut self, kind: Kind, index: usize) -> &mut ContainerRt {
        match kind {
            Kind::Regular => &mut self.containers[index],
            Kind::Init | Kind::Sidecar => &mut self.init[index],
        }
    }

    /// The runtime entry of a container.
    pub fn container(&self, kind: Kind, index: usize) -> &ContainerRt {
        match kind {
            Kind::Regular => &self.containers[index],
            Kind::Init | Kind::Sidecar => &self.init[index],
        }
    }
}
