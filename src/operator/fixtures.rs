//! Test helpers: YAML fixtures from `tests/fixtures/operator/` and objects as the
//! apiserver would return them.

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use serde::de::DeserializeOwned;

/// Reads `tests/fixtures/operator/<name>` as a `T`.
pub fn load<T: DeserializeOwned>(name: &str) -> T {
    let path = format!(
        "{}/tests/fixtures/operator/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Parses inline YAML as a `T`.
pub fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

/// `pod` as it runs: phase Running, a pod IP, and Ready as given.
pub fn running(mut pod: Pod, ip: &str, ready: bool) -> Pod {
    pod.metadata.uid = Some(format!(
        "uid-{}",
        pod.metadata.name.clone().unwrap_or_default()
    ));
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some(ip.into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    pod
}
