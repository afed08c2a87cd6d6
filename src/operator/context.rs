//! What every reconciliation shares: the client, metrics, the Event recorder, the
//! settings and per-object error back-off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;

use crate::runtime::metrics::Metrics;

/// Settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of the `install-agent` init container.
    pub agent_image: String,
    /// How often an unchanged object is reconciled again (status refresh).
    pub requeue: Duration,
    /// Whether to ask the instance agents' `/status` for their role.
    pub query_agents: bool,
    /// How often a Shard with replicas is reconciled at least (health checks).
    pub health_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            agent_image: super::default_image(),
            requeue: Duration::from_secs(60),
            query_agents: true,
            health_interval: Duration::from_secs(1),
        }
    }
}

/// The caches of the controllers' main objects, by controller name.
pub type Stores = Arc<Mutex<Vec<(&'static str, Store<DynamicObject>)>>>;

/// The shared state of one controller.
#[derive(Clone)]
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Publishes Events as `ringmaster-operator`.
    pub recorder: Recorder,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Error back-off per object.
    pub backoff: Arc<Backoff>,
    /// The controllers' caches of their main objects, for the managed-objects gauge.
    pub stores: Stores,
    /// When each object's status was last written (or first seen), by key.
    pub status_writes: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Context {
    /// A context with no back-off history and no registered caches.
    pub fn new(client: Client, metrics: Metrics, recorder: Recorder, settings: Settings) -> Self {
        Self {
            client,
            metrics,
            recorder,
            settings: Arc::new(settings),
            backoff: Arc::default(),
            stores: Arc::default(),
            status_writes: Arc::default(),
        }
    }

    /// Records that the status of `key` was written now.
    pub fn status_written(&self, key: &str) {
        self.status_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), Instant::now());
    }

    /// How long ago the status of `key` was written; an object seen for the first
    /// time counts as written now (a restarted operator does not rewrite every
    /// status at once).
    pub fn status_age(&self, key: &str) -> Duration {
        self.status_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_insert_with(Instant::now)
            .elapsed()
    }

    /// Registers the cache of `controller`'s main objects.
    pub fn register_store(&self, controller: &'static str, store: Store<DynamicObject>) {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((controller, store));
    }

    /// Objects in the caches of `controller` (every scope).
    pub fn managed_objects(&self, controller: &str) -> i64 {
        let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        let total: usize = stores
            .iter()
            .filter(|(c, _)| *c == controller)
            .map(|(_, s)| s.len())
            .sum();
        i64::try_from(total).unwrap_or(i64::MAX)
    }

    /// Publishes an Event about `regarding`; failures are logged, never returned.
    /// `note` must never hold a secret value; a note longer than the API server
    /// accepts is cut (see [`event_note`]).
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(event_note(note)),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason, "publishing an Event failed");
        }
    }

    /// A Normal Event.
    pub async fn normal(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.event(regarding, EventType::Normal, reason, action, note)
            .await;
    }

    /// A Warning Event.
    pub async fn warning(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.event(regarding, EventType::Warning, reason, action, note)
            .await;
    }
}

/// Longest Event note the API server accepts.
pub const EVENT_NOTE_MAX: usize = 1024;

/// `note` cut to what an Event may hold (the whole text of a long message, e.g. a
/// verification naming every shard, stays in the object's status).
pub fn event_note(note: String) -> String {
    if note.len() <= EVENT_NOTE_MAX {
        return note;
    }
    let suffix = " … (see the object's status)";
    let mut end = EVENT_NOTE_MAX - suffix.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &note[..end])
}

/// Exponential back-off of failing objects: 2 s, 4 s, ... up to 5 min; reset on
/// success.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The delay after `failures` consecutive failures.
pub fn delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let backoff = Backoff::default();
        assert_eq!(backoff.failed("a"), Duration::from_secs(2));
        assert_eq!(backoff.failed("a"), Duration::from_secs(4));
        assert_eq!(backoff.failed("a"), Duration::from_secs(8));
        assert_eq!(backoff.failed("b"), Duration::from_secs(2), "per object");
        for _ in 0..20 {
            backoff.failed("a");
        }
        assert_eq!(backoff.failed("a"), BACKOFF_MAX);
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a"), Duration::from_secs(2));
    }

    #[test]
    fn event_notes_fit_the_api_limit() {
        assert_eq!(event_note("short".to_owned()), "short");
        let long = "é".repeat(EVENT_NOTE_MAX);
        let cut = event_note(long);
        assert!(cut.len() <= EVENT_NOTE_MAX, "{}", cut.len());
        assert!(cut.ends_with("(see the object's status)"));
    }
}
