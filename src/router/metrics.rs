//! The router's Prometheus series, registered on the shared
//! [`Metrics`](crate::runtime::metrics::Metrics) registry (prefix `ringmaster_`):
//!
//! | series | type | labels |
//! |---|---|---|
//! | `ringmaster_router_commands_total` | counter | `command`, `outcome` |
//! | `ringmaster_router_command_duration_seconds` | histogram (50 µs … 10 s) | — |
//! | `ringmaster_router_dual_write_failures_total` | counter | — |
//! | `ringmaster_router_backend_errors_total` | counter | `shard` |
//! | `ringmaster_router_routing_version` | gauge (applied version) | — |
//! | `ringmaster_router_clients` | gauge | — |
//! | `ringmaster_router_held_writes_total` | counter | — |
//!
//! `command` is the lower-case name from the command table (`unknown` otherwise), so
//! the label set stays bounded; `outcome` is one of [`Outcome`]'s names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::runtime::metrics::Metrics;

/// Upper bounds (seconds) of the command-duration buckets: 50 µs to 10 s.
pub const COMMAND_DURATION_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
    10.0,
];

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A non-error reply.
    Ok,
    /// An error reply from a shard or the router (wrong type, wrong arity, …).
    Error,
    /// A shard could not be reached in time.
    BackendError,
    /// Keys on different shards.
    CrossSlot,
    /// A held write timed out (TRYAGAIN).
    TryAgain,
    /// An unsupported or unknown command.
    Unsupported,
    /// Refused before authentication.
    NoAuth,
}

impl Outcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::BackendError => "backend_error",
            Outcome::CrossSlot => "crossslot",
            Outcome::TryAgain => "tryagain",
            Outcome::Unsupported => "unsupported",
            Outcome::NoAuth => "noauth",
        }
    }
}

/// `{command, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// Lower-case command name or `unknown`.
    pub command: &'static str,
    /// [`Outcome::as_str`].
    pub outcome: &'static str,
}

/// `{shard}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    /// The shard's index.
    pub shard: String,
}

/// The router's series. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RouterMetrics {
    commands: Family<CommandLabels, Counter>,
    duration: Histogram,
    dual_write_failures: Counter,
    backend_errors: Family<ShardLabels, Counter>,
    routing_version: Gauge,
    clients: Gauge,
    held_writes: Counter,
}

impl RouterMetrics {
    /// Creates the series and registers them on `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            commands: Family::default(),
            duration: Histogram::new(COMMAND_DURATION_BUCKETS),
            dual_write_failures: Counter::default(),
            backend_errors: Family::default(),
            routing_version: Gauge::default(),
            clients: Gauge::default(),
            held_writes: Counter::default(),
        };
        metrics.register(
            "router_commands",
            "Client commands handled, by command and outcome",
            this.commands.clone(),
        );
        metrics.register_with_unit(
            "router_command_duration",
            "Time from a command's dispatch to its reply",
            Unit::Seconds,
            this.duration.clone(),
        );
        metrics.register(
            "router_dual_write_failures",
            "Dual writes whose dirty-set SADD or target write failed",
            this.dual_write_failures.clone(),
        );
        metrics.register(
            "router_backend_errors",
            "Calls to a shard that failed (connection, timeout), by shard index",
            this.backend_errors.clone(),
        );
        metrics.register(
            "router_routing_version",
            "Routing table version applied by this router",
            this.routing_version.clone(),
        );
        metrics.register("router_clients", "Connected clients", this.clients.clone());
        metrics.register(
            "router_held_writes",
            "Writes held because their range was frozen",
            this.held_writes.clone(),
        );
        this
    }

    /// Counts a command and observes its duration.
    pub fn command(&self, command: &'static str, outcome: Outcome, seconds: f64) {
        let labels = CommandLabels {
            command,
            outcome: outcome.as_str(),
        };
        self.commands.get_or_create(&labels).inc();
        self.duration.observe(seconds);
    }

    /// Counts a failed dirty-set SADD or target write.
    pub fn dual_write_failed(&self) {
        self.dual_write_failures.inc();
    }

    /// Counts a failed call to shard `shard`.
    pub fn backend_error(&self, shard: i32) {
        let labels = ShardLabels {
            shard: shard.to_string(),
        };
        self.backend_errors.get_or_create(&labels).inc();
    }

    /// Sets the applied routing version.
    pub fn set_routing_version(&self, version: i64) {
        self.routing_version.set(version);
    }

    /// A client connected (`+1`) or left (`-1`).
    pub fn clients_changed(&self, delta: i64) {
        self.clients.inc_by(delta);
    }

    /// Counts a held write.
    pub fn write_held(&self) {
        self.held_writes.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_exported() {
        let metrics = Metrics::new();
        let router = RouterMetrics::register(&metrics);
        router.command("get", Outcome::Ok, 0.0002);
        router.command("set", Outcome::BackendError, 2.0);
        router.dual_write_failed();
        router.backend_error(1);
        router.set_routing_version(7);
        router.clients_changed(1);
        router.write_held();
        let text = metrics.encode();
        for line in [
            "ringmaster_router_commands_total{command=\"get\",outcome=\"ok\"} 1",
            "ringmaster_router_commands_total{command=\"set\",outcome=\"backend_error\"} 1",
            "ringmaster_router_command_duration_seconds_count 2",
            "ringmaster_router_dual_write_failures_total 1",
            "ringmaster_router_backend_errors_total{shard=\"1\"} 1",
            "ringmaster_router_routing_version 7",
            "ringmaster_router_clients 1",
            "ringmaster_router_held_writes_total 1",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
