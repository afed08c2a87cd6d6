//! Throw-away namespaces for tests.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::health;
use crate::wait::wait_for;

/// Label on every test namespace.
pub const TEST_LABEL: &str = "ringmaster.dev/e2e";
/// Set to keep test namespaces (for debugging) instead of deleting them.
pub const KEEP_ENV: &str = "RINGMASTER_E2E_KEEP_NAMESPACES";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);

/// A uniquely named namespace, deleted (and awaited) when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubectl: Command,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>` and waits until Pods can be created in it.
    pub(crate) async fn create(client: &Client, prefix: &str, kubectl: Command) -> Result<Self> {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api: Api<Namespace> = Api::all(client.clone());
        api.create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let ns = TestNamespace { name, kubectl };
        let what = format!("namespace {} to be usable", ns.name);
        let poll = Duration::from_millis(100);
        wait_for(&what, READY_TIMEOUT, poll, || {
            health::namespace_ready(client, &ns.name)
        })
        .await?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!("keeping namespace {} ({KEEP_ENV} is set)", self.name);
            return;
        }
        let timeout = format!("--timeout={}s", DELETE_TIMEOUT.as_secs());
        let out = self
            .kubectl
            .args([
                "delete",
                "namespace",
                &self.name,
                "--ignore-not-found",
                "--wait=true",
            ])
            .arg(timeout)
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: namespace {} was not deleted within {DELETE_TIMEOUT:?}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: deleting namespace {}: {e}", self.name),
        }
    }
}

/// `<prefix>-<6 random characters>`, a valid namespace name.
pub fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        clean = "test".into();
    }
    format!("{clean}-{}", random_suffix(6))
}

fn random_suffix(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let mut bits = hasher.finish();
    (0..len)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize];
            bits /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_unique() {
        let a = unique_name("My_Test");
        let b = unique_name("My_Test");
        assert_ne!(a, b);
        assert!(a.starts_with("my-test-"), "{a}");
        assert_eq!(a.len(), "my-test-".len() + 6);
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63);
        assert!(unique_name("--").starts_with("test-"));
        let valid = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        assert!(valid(&a) && valid(&long));
    }
}
