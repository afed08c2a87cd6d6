//! The sandbox helper (`localnode __sandbox`) run for real: bind mounts,
//! user switching with a generated passwd entry, host name, process group,
//! and start errors. Needs root (mount namespaces), like the node agent.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs the helper with `spec` on stdin.
fn sandbox(spec: &Value) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_localnode"))
        .arg("__sandbox")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting localnode __sandbox");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A uid ≥ 999 with no /etc/passwd entry on this machine.
fn unknown_uid() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    (999..60000)
        .find(|u| {
            !passwd
                .lines()
                .any(|l| l.split(':').nth(2) == Some(&u.to_string()))
        })
        .unwrap()
}

#[test]
fn binds_volumes_read_only_in_a_private_namespace() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("volume");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello"), "from the volume\n").unwrap();
    let target = tmp.path().join("mnt/data");
    let script = format!(
        "cat {t}/hello; if touch {t}/x 2>/dev/null; then echo writable; else echo read-only; fi; hostname; pwd; echo \"home=$HOME\"",
        t = target.display()
    );
    let spec = json!({
        "argv": ["sh", "-c", script],
        "env": [["PATH", PATH]],
        "cwd": tmp.path().join("work").display().to_string(),
        "mounts": [{"source": data, "target": target, "read_only": true}],
        "scratch_dir": tmp.path().join("scratch"),
        "hostname": "pod-a",
    });
    let out = sandbox(&spec);
    assert!(out.status.success(), "{out:?}");
    let want = format!(
        "from the volume\nread-only\npod-a\n{}\nhome=/root\n",
        tmp.path().join("work").display()
    );
    assert_eq!(stdout(&out), want);
    assert!(target.is_dir(), "mount point created");
    assert!(
        !target.join("hello").exists(),
        "the mount stays in the sandbox's namespace"
    );
    assert_ne!(
        nix::unistd::gethostname().unwrap(),
        "pod-a",
        "host name is private"
    );
}

#[test]
fn runs_as_a_user_without_passwd_entry() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let uid = unknown_uid();
    let spec = json!({
        "argv": ["sh", "-c", "id -u; id -g; id -G; id -un; echo $HOME"],
        "env": [["PATH", PATH]],
        "cwd": "/",
        "uid": uid,
        "gid": uid,
        "groups": [4242],
        "scratch_dir": tmp.path().join("scratch"),
    });
    let out = sandbox(&spec);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines[0], uid.to_string());
    assert_eq!(lines[1], uid.to_string());
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(
        groups.contains(&"4242") && groups.contains(&uid.to_string().as_str()),
        "{groups:?}"
    );
    assert_eq!(lines[3], format!("user{uid}"), "getpwuid works");
    assert_eq!(lines[4], "/");
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        !host_passwd.contains(&format!("user{uid}:")),
        "host passwd untouched"
    );
}

#[test]
fn leads_its_own_session_and_process_group() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = json!({
        "argv": ["sh", "-c", "read -r pid comm state ppid pgrp session rest < /proc/self/stat; echo $$ $pgrp $session"],
        "env": [["PATH", PATH]],
        "cwd": "/",
        "scratch_dir": tmp.path().join("scratch"),
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_localnode"))
        .arg("__sandbox")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // `read` runs in the shell itself, so /proc/self is the container's main process.
    let got: Vec<u32> = stdout(&out)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(
        got,
        vec![pid, pid, pid],
        "main process keeps the helper's pid and leads its group"
    );
}

#[test]
fn reports_start_errors() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let err = tmp.path().join("start-error");
    let spec = json!({
        "argv": ["no-such-program-here"],
        "env": [["PATH", PATH]],
        "cwd": "/",
        "scratch_dir": tmp.path().join("scratch"),
        "error_file": err,
    });
    let out = sandbox(&spec);
    assert_eq!(out.status.code(), Some(128));
    let msg = std::fs::read_to_string(&err).unwrap();
    assert!(msg.contains("executable file not found"), "{msg}");
    let missing = json!({
        "argv": ["true"], "env": [["PATH", PATH]], "cwd": "/",
        "mounts": [{"source": "/no/such/dir", "target": tmp.path().join("m"), "read_only": false}],
        "scratch_dir": tmp.path().join("scratch"), "error_file": err,
    });
    assert_eq!(sandbox(&missing).status.code(), Some(128));
    assert!(
        std::fs::read_to_string(&err)
            .unwrap()
            .contains("/no/such/dir")
    );
    assert!(!Path::new(&tmp.path().join("m")).exists());
}

#[test]
fn a_volume_over_the_directory_of_other_sources_hides_none_of_them() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Like an emptyDir mounted at /tmp while the node's state (the other volumes'
    // sources and the generated passwd) lives under /tmp: `outer` is mounted over
    // the directory that holds `inner`'s source.
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("state/empty");
    let inner = tmp.path().join("state/inner");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(inner.join("file"), "inner source\n").unwrap();
    let outer_target = tmp.path().join("state");
    let inner_target = tmp.path().join("elsewhere/inner");
    let script = format!(
        "cat {i}/file; ls -A {o}; id -un",
        i = inner_target.display(),
        o = outer_target.display()
    );
    let spec = json!({
        "argv": ["sh", "-c", script],
        "env": [["PATH", PATH]],
        "cwd": "/",
        "mounts": [
            {"source": empty, "target": outer_target, "read_only": false},
            {"source": inner, "target": inner_target, "read_only": true}
        ],
        "scratch_dir": tmp.path().join("state/scratch"),
        "uid": unknown_uid(),
    });
    let out = sandbox(&spec);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with("inner source\n"),
        "the inner source is still reachable: {text:?}"
    );
    assert!(
        !text.contains("inner\n"),
        "the outer volume (empty) covers the state directory: {text:?}"
    );
}
