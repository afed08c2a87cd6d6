//! Process plumbing shared by ringmaster's components.
//!
//! * [`telemetry`] — logging (`tracing`), text or JSON.
//! * [`metrics`] — the Prometheus registry and the reconcile metrics.
//! * [`http`] — `/metrics`, `/healthz`, `/readyz`.
//! * [`leader`] — leader election on a Lease.
//! * [`shutdown`] — SIGTERM/SIGINT and the shared stop flag.
//! * [`copy_self`] — `ringmaster copy-self`, the agent installer.

pub mod copy_self;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
