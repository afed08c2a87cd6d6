//! ringmaster's local Kubernetes cluster: a control plane built from the Kubernetes
//! sources (etcd, kube-apiserver, kube-controller-manager), the process-backed node
//! `localnode`, and the API integration tests use to get at them.
//!
//! ```no_run
//! # async fn example() {
//! use ringmaster_e2e::Cluster;
//! let cluster = Cluster::shared();
//! let ns = cluster.namespace("demo").await;
//! let client = cluster.client().await;
//! let out = cluster.kubectl(&["get", "pods", "-n", ns.name()]);
//! assert!(out.status.success());
//! # drop(client);
//! # }
//! ```
//!
//! See `e2e/README.md` for how the cluster is built and where it differs from a
//! real one.

#![warn(missing_docs)]

pub mod bins;
pub mod client;
pub mod cluster;
pub mod components;
pub mod daemon;
pub mod health;
pub mod info;
pub mod kubeconfig;
pub mod layout;
pub mod logging;
pub mod namespace;
pub mod pki;
pub mod ports;
pub mod process;
pub mod slot;
pub mod supervisor;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions};
pub use info::ClusterInfo;
pub use namespace::TestNamespace;
pub use wait::wait_for;
