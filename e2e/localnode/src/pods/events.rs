//! Kubernetes Events about Pods and their containers.

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Publishes Events as the `localnode` controller, instance = node name.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// A publisher for this node.
    pub fn new(client: kube::Client, node: &str) -> Events {
        let reporter = Reporter {
            controller: "localnode".into(),
            instance: Some(node.to_string()),
        };
        Events {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes an Event in the background; `field` is e.g. `spec.containers{db}`.
    pub fn publish(
        &self,
        pod: &Pod,
        field: Option<String>,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let mut reference = pod.object_ref(&());
        reference.field_path = field;
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: reason.to_string(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!(error = %e, reason = %ev.reason, "publishing event");
            }
        });
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
