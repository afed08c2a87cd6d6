//! The security settings every container the operator creates runs with.

use k8s_openapi::api::core::v1::{Capabilities, SecurityContext};

/// Non-root, no privilege escalation, a read-only root filesystem and every
/// capability dropped (the Kubernetes "restricted" profile for a container).
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}
