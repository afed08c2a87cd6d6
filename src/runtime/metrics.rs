//! Prometheus metrics of the operator, on one prometheus-client [`Registry`].
//!
//! Every series is prefixed `ringmaster_`:
//!
//! | series | type | labels |
//! |---|---|---|
//! | `ringmaster_reconciles_total` | counter | `controller` |
//! | `ringmaster_reconcile_errors_total` | counter | `controller`, `reason` |
//! | `ringmaster_reconcile_duration_seconds` | histogram (1 ms … 30 s) | `controller` |
//! | `ringmaster_managed_objects` | gauge | `controller` |
//! | `ringmaster_leader` | gauge (1 while this replica leads) | — |
//! | `ringmaster_failovers_total` | counter | `kind` (`failover`, `switchover`), `namespace`, `shard` |
//! | `ringmaster_failover_duration_seconds` | histogram (0.5 s … 5 min) | `kind` |
//! | `ringmaster_replication_lag_bytes` | gauge | `namespace`, `shard`, `instance` |
//!
//! Other modules add their own metrics with [`Metrics::register`] (or
//! [`Metrics::with_registry`] for sub-registries) at any time, also while serving.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

/// Prefix of every series in the registry.
pub const METRIC_PREFIX: &str = "ringmaster";

/// Upper bounds (seconds) of the reconcile-duration buckets: 1 ms to 30 s.
pub const RECONCILE_DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds (seconds) of the failover-duration buckets: 0.5 s to 5 min.
pub const FAILOVER_DURATION_BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 120.0, 300.0,
];

/// Label set `{kind, namespace, shard}` of completed failovers and switchovers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    /// `failover` or `switchover`.
    pub kind: String,
    /// The Shard's namespace.
    pub namespace: String,
    /// The Shard's name.
    pub shard: String,
}

/// Label set `{kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `failover` or `switchover`.
    pub kind: String,
}

/// Label set `{namespace, shard, instance}` of per-instance series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// The Shard's namespace.
    pub namespace: String,
    /// The Shard's name.
    pub shard: String,
    /// The instance (Pod) name.
    pub instance: String,
}

/// Label set `{namespace, migration}` of a ShardMigration's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MigrationLabels {
    /// The ShardMigration's namespace.
    pub namespace: String,
    /// Its name.
    pub migration: String,
}

/// Label set `{controller}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller's name, e.g. `shardedcluster`.
    pub controller: String,
}

/// Label set `{controller, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller's name.
    pub controller: String,
    /// A short, bounded error kind (an enum variant name, never a message).
    pub reason: String,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;
type KindHistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

/// The operator's metrics. Cheap to clone: every clone shares the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Mutex<Registry>,
    reconciles: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: HistogramFamily,
    managed_objects: Family<ControllerLabels, Gauge>,
    leader: Gauge,
    failovers: Family<FailoverLabels, Counter>,
    failover_duration: KindHistogramFamily,
    replication_lag: Family<InstanceLabels, Gauge>,
    migration_keys: Family<MigrationLabels, Counter>,
    migration_bytes: Family<MigrationLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry holding the operator's standard series.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let managed_objects = Family::<ControllerLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error kind",
            reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconciliation",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "managed_objects",
            "Objects of the controller's kind currently managed",
            managed_objects.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease, else 0",
            leader.clone(),
        );
        let failovers = Family::<FailoverLabels, Counter>::default();
        let failover_duration: KindHistogramFamily =
            Family::new_with_constructor(failover_histogram);
        let replication_lag = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "failovers",
            "Completed changes of primary (automatic failovers and switchovers)",
            failovers.clone(),
        );
        registry.register_with_unit(
            "failover_duration",
            "Duration of a change of primary, from detection (failover) or decision \
             (switchover) to the new primary accepting writes",
            Unit::Seconds,
            failover_duration.clone(),
        );
        registry.register(
            "replication_lag_bytes",
            "Bytes a replica is behind its primary",
            replication_lag.clone(),
        );
        let migration_keys = Family::<MigrationLabels, Counter>::default();
        let migration_bytes = Family::<MigrationLabels, Counter>::default();
        registry.register(
            "migration_keys_copied",
            "Keys copied by ShardMigrations (backfill and dirty-key re-copies)",
            migration_keys.clone(),
        );
        registry.register_with_unit(
            "migration_copied",
            "Serialized value bytes copied by ShardMigrations",
            Unit::Bytes,
            migration_bytes.clone(),
        );
        let inner = Inner {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            managed_objects,
            leader,
            failovers,
            failover_duration,
            replication_lag,
            migration_keys,
            migration_bytes,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Starts timing one reconciliation of `controller`; see [`ReconcileTimer`].
    pub fn reconcile_timer(&self, controller: &str) -> ReconcileTimer {
        ReconcileTimer {
            metrics: self.clone(),
            controller: controller.to_owned(),
            started: Instant::now(),
            failure: None,
        }
    }

    /// Counts one failed reconciliation of `controller` with error kind `reason`.
    ///
    /// Not needed when the failure was given to a [`ReconcileTimer`], which counts it.
    pub fn reconcile_failed(&self, controller: &str, reason: &str) {
        let labels = ErrorLabels {
            controller: controller.to_owned(),
            reason: reason.to_owned(),
        };
        self.inner.reconcile_errors.get_or_create(&labels).inc();
    }

    /// Sets the number of objects `controller` currently manages.
    pub fn set_managed_objects(&self, controller: &str, count: i64) {
        let labels = controller_labels(controller);
        self.inner.managed_objects.get_or_create(&labels).set(count);
    }

    /// Sets the `leader` gauge: 1 when `leading`, else 0.
    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// Counts a completed change of primary of kind `kind` (`failover` or
    /// `switchover`) of Shard `namespace/shard` that took `seconds`.
    pub fn failover_completed(&self, kind: &str, namespace: &str, shard: &str, seconds: f64) {
        let labels = FailoverLabels {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            shard: shard.to_owned(),
        };
        self.inner.failovers.get_or_create(&labels).inc();
        let kind = KindLabels {
            kind: kind.to_owned(),
        };
        self.inner
            .failover_duration
            .get_or_create(&kind)
            .observe(seconds);
    }

    /// Sets the replication lag of `instance` of Shard `namespace/shard`; `None`
    /// removes the series (the instance is gone or its lag is unknown).
    pub fn set_replication_lag(
        &self,
        namespace: &str,
        shard: &str,
        instance: &str,
        bytes: Option<i64>,
    ) {
        let labels = InstanceLabels {
            namespace: namespace.to_owned(),
            shard: shard.to_owned(),
            instance: instance.to_owned(),
        };
        match bytes {
            Some(bytes) => {
                self.inner.replication_lag.get_or_create(&labels).set(bytes);
            }
            None => {
                self.inner.replication_lag.remove(&labels);
            }
        }
    }

    /// Counts `keys` keys and `bytes` bytes copied by migration `namespace/migration`.
    pub fn migration_copied(&self, namespace: &str, migration: &str, keys: u64, bytes: u64) {
        let labels = MigrationLabels {
            namespace: namespace.to_owned(),
            migration: migration.to_owned(),
        };
        self.inner
            .migration_keys
            .get_or_create(&labels)
            .inc_by(keys);
        self.inner
            .migration_bytes
            .get_or_create(&labels)
            .inc_by(bytes);
    }

    /// Registers another metric (`name` gets the `ringmaster_` prefix).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.with_registry(|registry| registry.register(name, help, metric));
    }

    /// Registers another metric with a unit suffix (e.g. `_seconds`, `_bytes`).
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.with_registry(|registry| registry.register_with_unit(name, help, unit, metric));
    }

    /// Runs `f` with the registry locked, e.g. to add a sub-registry with a prefix.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut registry)
    }

    /// Every series in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let result = self.with_registry(|registry| {
            prometheus_client::encoding::text::encode(&mut out, registry)
        });
        if let Err(error) = result {
            tracing::error!(%error, "encoding the metrics failed");
        }
        out
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(RECONCILE_DURATION_BUCKETS)
}

fn failover_histogram() -> Histogram {
    Histogram::new(FAILOVER_DURATION_BUCKETS)
}

fn controller_labels(controller: &str) -> ControllerLabels {
    ControllerLabels {
        controller: controller.to_owned(),
    }
}

/// Times one reconciliation. When dropped it counts the reconciliation in
/// `reconciles_total`, observes its duration and, if [`set_failed`](Self::set_failed)
/// was called, counts it in `reconcile_errors_total` with that reason.
///
/// ```
/// # use ringmaster::runtime::metrics::Metrics;
/// let metrics = Metrics::new();
/// let mut timer = metrics.reconcile_timer("shard");
/// let result: Result<(), &str> = Err("boom");
/// if result.is_err() {
///     timer.set_failed("ApplyFailed");
/// }
/// drop(timer); // or let it go out of scope at the end of `reconcile`
/// ```
#[derive(Debug)]
#[must_use = "the reconciliation is recorded when the timer is dropped"]
pub struct ReconcileTimer {
    metrics: Metrics,
    controller: String,
    started: Instant,
    failure: Option<String>,
}

impl ReconcileTimer {
    /// Marks the reconciliation as failed with error kind `reason`.
    pub fn set_failed(&mut self, reason: impl Into<String>) {
        self.failure = Some(reason.into());
    }

    /// Marks the reconciliation failed when `result` is an error, with `reason(error)`.
    pub fn record<T, E>(&mut self, result: &Result<T, E>, reason: impl FnOnce(&E) -> String) {
        if let Err(error) = result {
            self.set_failed(reason(error));
        }
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        let inner = &self.metrics.inner;
        let labels = controller_labels(&self.controller);
        inner.reconciles.get_or_create(&labels).inc();
        let seconds = self.started.elapsed().as_secs_f64();
        inner
            .reconcile_duration
            .get_or_create(&labels)
            .observe(seconds);
        if let Some(reason) = self.failure.take() {
            self.metrics.reconcile_failed(&self.controller, &reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_starting(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn fresh_registry_shows_leader_and_omits_empty_families() {
        let text = Metrics::new().encode();
        assert!(text.contains("# TYPE ringmaster_leader gauge"), "{text}");
        assert!(text.contains("ringmaster_leader 0\n"), "{text}");
        assert!(!text.contains("ringmaster_reconciles"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn used_registry_describes_every_standard_family() {
        let metrics = Metrics::new();
        let mut timer = metrics.reconcile_timer("shard");
        timer.set_failed("Kube");
        drop(timer);
        metrics.set_managed_objects("shard", 1);
        let text = metrics.encode();
        for family in [
            "# TYPE ringmaster_reconciles counter",
            "# TYPE ringmaster_reconcile_errors counter",
            "# TYPE ringmaster_reconcile_duration_seconds histogram",
            "# UNIT ringmaster_reconcile_duration_seconds seconds",
            "# TYPE ringmaster_managed_objects gauge",
            "# TYPE ringmaster_leader gauge",
        ] {
            assert!(text.contains(family), "{family} missing in:\n{text}");
        }
    }

    #[test]
    fn successful_timer_counts_and_observes() {
        let metrics = Metrics::new();
        drop(metrics.reconcile_timer("shard"));
        drop(metrics.reconcile_timer("shard"));
        let text = metrics.encode();
        assert!(
            text.contains("ringmaster_reconciles_total{controller=\"shard\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ringmaster_reconcile_duration_seconds_count{controller=\"shard\"} 2"),
            "{text}"
        );
        assert!(lines_starting(&text, "ringmaster_reconcile_errors_total").is_empty());
    }

    #[test]
    fn histogram_has_buckets_from_1ms_to_30s() {
        let metrics = Metrics::new();
        drop(metrics.reconcile_timer("shard"));
        let buckets = lines_starting(
            &metrics.encode(),
            "ringmaster_reconcile_duration_seconds_bucket",
        );
        assert_eq!(
            buckets.len(),
            RECONCILE_DURATION_BUCKETS.len() + 1,
            "{buckets:?}"
        );
        assert!(buckets[0].contains("le=\"0.001\""), "{buckets:?}");
        assert!(buckets[13].contains("le=\"30.0\""), "{buckets:?}");
        assert!(buckets[14].contains("le=\"+Inf\""), "{buckets:?}");
    }

    #[test]
    fn failed_timer_counts_error_with_reason() {
        let metrics = Metrics::new();
        let mut timer = metrics.reconcile_timer("shardedcluster");
        let result: Result<(), std::io::Error> = Err(std::io::ErrorKind::TimedOut.into());
        timer.record(&result, |e| format!("{:?}", e.kind()));
        drop(timer);
        let text = metrics.encode();
        assert!(
            text.contains(
                "ringmaster_reconcile_errors_total{controller=\"shardedcluster\",reason=\"TimedOut\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ringmaster_reconciles_total{controller=\"shardedcluster\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn gauges_follow_the_setters() {
        let metrics = Metrics::new();
        metrics.set_leader(true);
        metrics.set_managed_objects("shard", 7);
        let text = metrics.clone().encode();
        assert!(text.contains("ringmaster_leader 1\n"), "{text}");
        assert!(
            text.contains("ringmaster_managed_objects{controller=\"shard\"} 7"),
            "{text}"
        );
        metrics.set_leader(false);
        assert!(metrics.encode().contains("ringmaster_leader 0\n"));
    }

    #[test]
    fn failovers_and_replication_lag_are_exported() {
        let metrics = Metrics::new();
        metrics.failover_completed("failover", "ns", "c-0", 7.5);
        metrics.failover_completed("switchover", "ns", "c-0", 1.2);
        metrics.set_replication_lag("ns", "c-0", "c-0-1", Some(4096));
        metrics.set_replication_lag("ns", "c-0", "c-0-2", Some(1));
        metrics.set_replication_lag("ns", "c-0", "c-0-2", None);
        let text = metrics.encode();
        for line in [
            "ringmaster_failovers_total{kind=\"failover\",namespace=\"ns\",shard=\"c-0\"} 1",
            "ringmaster_failovers_total{kind=\"switchover\",namespace=\"ns\",shard=\"c-0\"} 1",
            "ringmaster_failover_duration_seconds_count{kind=\"failover\"} 1",
            "ringmaster_replication_lag_bytes{namespace=\"ns\",shard=\"c-0\",instance=\"c-0-1\"} 4096",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert!(!text.contains("c-0-2"), "{text}");
    }

    #[test]
    fn other_modules_can_register_metrics_later() {
        let metrics = Metrics::new();
        let widgets = Counter::<u64>::default();
        metrics.register("widgets", "Widgets made", widgets.clone());
        widgets.inc();
        metrics.with_registry(|registry| {
            registry.sub_registry_with_prefix("router").register(
                "clients",
                "Connected clients",
                Gauge::<i64>::default(),
            )
        });
        let text = metrics.encode();
        assert!(text.contains("ringmaster_widgets_total 1"), "{text}");
        assert!(text.contains("ringmaster_router_clients 0"), "{text}");
    }
}
