//! Errors of a reconciliation.

use super::{cluster, shard};

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not deserialise into its type (e.g. written under an older
    /// schema). Reported once per change of the object, never retried hot.
    #[error("{kind} {namespace}/{name} cannot be read: {source}")]
    InvalidObject {
        /// The kind.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What did not match.
        #[source]
        source: serde_json::Error,
    },
    /// Planning a ShardedCluster failed.
    #[error(transparent)]
    ClusterPlan(#[from] cluster::plan::PlanError),
    /// Planning a Shard failed.
    #[error(transparent)]
    ShardPlan(#[from] shard::plan::PlanError),
    /// An API call failed.
    #[error("{verb} {kind} {name}: {source}")]
    Api {
        /// What was attempted: `create`, `apply`, `delete`, `list`, ...
        verb: &'static str,
        /// The kind of the object.
        kind: String,
        /// The object's name (or a selector for lists).
        name: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
}

impl Error {
    /// A short, bounded kind for metrics and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidObject { .. } => "InvalidObject",
            Error::ClusterPlan(_) | Error::ShardPlan(_) => "PlanFailed",
            Error::Api { verb, .. } => match *verb {
                "create" => "CreateFailed",
                "apply" => "ApplyFailed",
                "delete" => "DeleteFailed",
                "patch" => "PatchFailed",
                "status" => "StatusUpdateFailed",
                _ => "ReadFailed",
            },
        }
    }
}

/// Wraps a client error with what was attempted.
pub fn api(
    verb: &'static str,
    kind: impl Into<String>,
    name: impl Into<String>,
) -> impl FnOnce(kube::Error) -> Error {
    let (kind, name) = (kind.into(), name.into());
    move |source| Error::Api {
        verb,
        kind,
        name,
        source: Box::new(source),
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
