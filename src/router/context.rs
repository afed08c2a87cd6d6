//! State shared by every session: the routing table in effect (with the connection
//! pools of its shards), the pools, the metrics and the settings.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::api::routing::{RoutingShard, RoutingTable};
use crate::runtime::http::HealthState;

use super::backend::{BackendError, Backends, Db, Pool};
use super::metrics::RouterMetrics;
use super::route::Routing;
use super::table::{Lease, TableHandle};

/// Connections of one shard.
#[derive(Debug, Clone)]
pub struct ShardConns {
    /// Database 0 of the primary (`rw` address).
    pub primary: Arc<Pool>,
    /// The dirty-set database of the primary.
    pub dirty: Arc<Pool>,
    /// Database 0 of the first listed replica, for reads.
    pub replica: Option<Arc<Pool>>,
}

/// One routing table version as the sessions use it.
#[derive(Debug)]
pub struct Installed {
    /// The routing rules.
    pub routing: Routing,
    /// Connections of every shard with a primary address, by index.
    pub conns: HashMap<i32, ShardConns>,
}

impl Installed {
    /// The connections of shard `index`.
    pub fn conns(&self, index: i32) -> Option<&ShardConns> {
        self.conns.get(&index)
    }

    /// `index (name)` of a shard, for messages.
    pub fn shard_label(&self, index: i32) -> String {
        match self.routing.shard(index) {
            Some(shard) => format!("{index} ({})", shard.name),
            None => index.to_string(),
        }
    }
}

/// The settings a session needs.
#[derive(Clone)]
pub struct Settings {
    /// The username clients authenticate as.
    pub username: String,
    /// The password; `None` when clients need no AUTH.
    pub password: Option<String>,
    /// How long a write into a frozen range waits.
    pub hold_timeout: Duration,
    /// Whether FLUSHDB is allowed.
    pub allow_flush: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("username", &self.username)
            .field("hold_timeout", &self.hold_timeout)
            .field("allow_flush", &self.allow_flush)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Whether `username` / `password` match, compared in constant time (the username
    /// defaults to the configured one, as `AUTH password` does).
    pub fn credentials_match(&self, username: Option<&[u8]>, password: &[u8]) -> bool {
        let Some(expected) = &self.password else {
            return false;
        };
        let user = username.unwrap_or(self.username.as_bytes());
        let user_ok = user.ct_eq(self.username.as_bytes());
        let password_ok = password.ct_eq(expected.as_bytes());
        bool::from(user_ok & password_ok)
    }
}

/// Everything the sessions share.
#[derive(Debug)]
pub struct Context {
    /// The routing table in effect.
    pub table: Arc<TableHandle<Installed>>,
    /// Connection pools.
    pub backends: Backends,
    /// The router's series.
    pub metrics: RouterMetrics,
    /// Settings.
    pub settings: Settings,
    /// Readiness of `/readyz`.
    pub health: HealthState,
    next_client: AtomicU64,
}

impl Context {
    /// A context without a table.
    pub fn new(
        backends: Backends,
        metrics: RouterMetrics,
        settings: Settings,
        health: HealthState,
    ) -> Self {
        Self {
            table: Arc::new(TableHandle::new()),
            backends,
            metrics,
            settings,
            health,
            next_client: AtomicU64::new(1),
        }
    }

    /// A fresh client id (also picks the session's connection slot).
    pub fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// A lease on the table in effect.
    pub fn lease(&self) -> Option<Lease<Installed>> {
        self.table.lease()
    }

    /// Parses `document` and installs it when it is a valid, newer table; the version
    /// is reported applied (status, metric, readiness) once the barrier passes.
    pub fn accept_document(self: &Arc<Self>, document: &str) {
        let table = match serde_json::from_str::<RoutingTable>(document) {
            Ok(table) => table,
            Err(error) => {
                tracing::warn!(%error, "ignoring a routing document that does not parse");
                return;
            }
        };
        let version = table.version;
        if version <= self.table.installed_version() {
            return;
        }
        let routing = match Routing::new(table) {
            Ok(routing) => routing,
            Err(error) => {
                tracing::error!(version, %error, "rejecting routing table");
                return;
            }
        };
        let installed = match self.connect(routing) {
            Ok(installed) => installed,
            Err(error) => {
                tracing::error!(version, %error, "rejecting routing table");
                return;
            }
        };
        let ready = installed.routing.all_shards_addressed();
        let migrations: Vec<String> = installed
            .routing
            .table()
            .migrations
            .iter()
            .map(|m| format!("{}={:?}", m.name, m.phase))
            .collect();
        let Some(applied) = self.table.install(version, installed) else {
            return;
        };
        tracing::info!(version, ?migrations, "routing table installed");
        let this = Arc::clone(self);
        tokio::spawn(async move {
            applied.await;
            this.on_applied(version, ready);
        });
    }

    /// Readiness, metric and log once `version` is applied.
    fn on_applied(&self, version: i64, ready: bool) {
        self.metrics
            .set_routing_version(self.table.applied_version());
        if self.table.installed_version() != version {
            return;
        }
        if ready {
            self.health
                .set_ready(true, format!("routing table version {version} applied"));
        } else {
            self.health.set_ready(
                false,
                format!("routing table version {version}: a shard has no rw address"),
            );
        }
        tracing::info!(version, "routing table version applied");
    }

    /// The pools of every addressed shard of `routing`; drops pools of addresses no
    /// longer used.
    fn connect(&self, routing: Routing) -> Result<Installed, BackendError> {
        let mut conns = HashMap::new();
        let mut addresses = HashSet::new();
        // Keep the pools of the table in effect: its commands may still run.
        if let Some(current) = self.table.lease() {
            addresses.extend(current.routing.shards().flat_map(shard_addresses));
        }
        for shard in routing.shards() {
            addresses.extend(shard_addresses(shard));
            let Some(rw) = &shard.rw else { continue };
            let replica = match shard.replicas.first() {
                Some(r) => Some(self.backends.pool(&r.address, Db::Data)?),
                None => None,
            };
            conns.insert(
                shard.index,
                ShardConns {
                    primary: self.backends.pool(rw, Db::Data)?,
                    dirty: self.backends.pool(rw, Db::Dirty)?,
                    replica,
                },
            );
        }
        self.backends.retain(&addresses);
        Ok(Installed { routing, conns })
    }
}

fn shard_addresses(shard: &RoutingShard) -> impl Iterator<Item = String> + '_ {
    shard
        .rw
        .iter()
        .cloned()
        .chain(shard.replicas.iter().map(|r| r.address.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(password: Option<&str>) -> Settings {
        Settings {
            username: "default".into(),
            password: password.map(str::to_owned),
            hold_timeout: Duration::from_secs(5),
            allow_flush: false,
        }
    }

    #[test]
    fn credentials_are_checked() {
        let s = settings(Some("pw"));
        assert!(s.credentials_match(None, b"pw"));
        assert!(s.credentials_match(Some(b"default"), b"pw"));
        assert!(!s.credentials_match(Some(b"other"), b"pw"));
        assert!(!s.credentials_match(None, b"pW"));
        assert!(!s.credentials_match(None, b"pw2"));
        assert!(!settings(None).credentials_match(None, b""));
    }

    #[test]
    fn settings_debug_hides_the_password() {
        assert!(!format!("{:?}", settings(Some("s3cret"))).contains("s3cret"));
    }
}
