//! Where the binaries the cluster runs are found.
//!
//! * Control plane (etcd, kube-apiserver, kube-controller-manager, kubectl, helm):
//!   `$RINGMASTER_K8S_BIN`, else the directory `e2e/k8s/build.sh --print-bin-dir` names.
//! * Workspace binaries (`localnode`, `e2e-cluster`, `ringmaster`): an environment
//!   override, else cargo's target directory next to the running executable (a test
//!   executable lives in `target/<profile>/deps/`), else `target/debug` of the workspace.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Environment override of the control-plane binary directory.
pub const K8S_BIN_ENV: &str = "RINGMASTER_K8S_BIN";
/// Environment override of the `localnode` binary.
pub const LOCALNODE_ENV: &str = "RINGMASTER_LOCALNODE_BIN";
/// Environment override of the `e2e-cluster` binary.
pub const E2E_CLUSTER_ENV: &str = "RINGMASTER_E2E_CLUSTER_BIN";
/// Environment override of the `ringmaster` binary (also read by the node's image map).
pub const RINGMASTER_ENV: &str = "RINGMASTER_BIN";
/// Environment override of the cache directory (`~/.cache/ringmaster`).
pub const CACHE_ENV: &str = "RINGMASTER_CACHE";

/// The binaries that must be in the control-plane directory.
pub const K8S_BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "helm",
];

/// The workspace root (this crate lives in `<root>/e2e/cluster`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// `$RINGMASTER_CACHE`, else `~/.cache/ringmaster`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/ringmaster")
}

/// The control-plane binary directory, checked to hold every binary.
pub fn k8s_bin_dir() -> Result<PathBuf> {
    let dir = match env::var_os(K8S_BIN_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => print_bin_dir()?,
    };
    let missing: Vec<_> = K8S_BINARIES
        .iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "control-plane binaries {missing:?} are missing in {}: run e2e/k8s/build.sh \
             (or `make k8s`), or point {K8S_BIN_ENV} at a directory holding {K8S_BINARIES:?}",
            dir.display()
        );
    }
    Ok(dir)
}

fn print_bin_dir() -> Result<PathBuf> {
    let script = workspace_root().join("e2e/k8s/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-bin-dir")
        .output()
        .with_context(|| format!("running {} --print-bin-dir", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match (out.status.success(), last) {
        (true, Some(line)) => Ok(PathBuf::from(line.trim())),
        _ => bail!(
            "{} --print-bin-dir failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Directories cargo builds workspace binaries into, most specific first.
pub fn target_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if exe_dir.file_name().is_some_and(|n| n == "deps") {
            dirs.extend(exe_dir.parent().map(Path::to_path_buf));
        }
        dirs.push(exe_dir);
    }
    dirs.push(workspace_root().join("target/debug"));
    dirs
}

/// Where workspace binary `name` is (override in `env_var`), whether or not it exists.
pub fn workspace_bin_path(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = env::var_os(env_var).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let dirs = target_dirs();
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| dirs[0].join(name))
}

/// The existing workspace binary `name` (override in `env_var`).
pub fn workspace_bin(name: &str, env_var: &str) -> Result<PathBuf> {
    let path = workspace_bin_path(name, env_var);
    if !path.is_file() {
        bail!(
            "binary `{name}` not found at {} (searched {:?}): run `cargo build --workspace --bins` \
             or set {env_var}",
            path.display(),
            target_dirs()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn target_dirs_start_next_to_the_executable() {
        let dirs = target_dirs();
        let exe = env::current_exe().unwrap();
        // Unit tests run from target/<profile>/deps: the profile directory comes first.
        assert_eq!(dirs[0], exe.parent().unwrap().parent().unwrap());
        assert!(dirs.last().unwrap().ends_with("target/debug"));
    }
}
