//! Leftovers of a previous agent: a container's main process dies with the
//! agent (PDEATHSIG), but processes it forked may not. Each container run
//! records its session id (= the sandbox pid, which called `setsid`) in its
//! run directory; at start the agent kills every process still in one of
//! those sessions.

use std::collections::HashSet;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SESSION_FILE: &str = "session";

/// Records that a container's processes run in session `sid`.
pub fn record(run_dir: &Path, sid: i32) {
    let _ = std::fs::write(run_dir.join(SESSION_FILE), sid.to_string());
}

/// The container's session is over.
pub fn forget(run_dir: &Path) {
    let _ = std::fs::remove_file(run_dir.join(SESSION_FILE));
}

/// Kills the processes of every recorded session under `pods_root`; returns how many.
pub fn sweep(pods_root: &Path) -> usize {
    let sessions = recorded_sessions(pods_root);
    if sessions.is_empty() {
        return 0;
    }
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if session_of(&stat).is_some_and(|s| sessions.contains(&s))
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// Session ids recorded in `<pods_root>/*/run/*/session` (the files are removed).
fn recorded_sessions(pods_root: &Path) -> HashSet<i32> {
    let mut out = HashSet::new();
    let pods = std::fs::read_dir(pods_root).into_iter().flatten().flatten();
    for pod in pods {
        let runs = std::fs::read_dir(pod.path().join("run"))
            .into_iter()
            .flatten()
            .flatten();
        for run in runs {
            let file = run.path().join(SESSION_FILE);
            if let Some(sid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                out.insert(sid);
            }
            let _ = std::fs::remove_file(file);
        }
    }
    out.retain(|s: &i32| *s > 1);
    out
}

/// The session id in a `/proc/<pid>/stat` line.
fn session_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_session_ids() {
        assert_eq!(
            session_of("1234 (sh) S 1 1234 1234 0 -1 4194560"),
            Some(1234)
        );
        assert_eq!(session_of("77 (we ird) (x) R 5 70 71 0"), Some(71));
        assert_eq!(session_of("garbage"), None);
    }

    #[test]
    fn collects_and_clears_recorded_sessions() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("uid-1/run/main");
        std::fs::create_dir_all(&run).unwrap();
        record(&run, 4321);
        assert_eq!(recorded_sessions(tmp.path()), HashSet::from([4321]));
        assert!(
            recorded_sessions(tmp.path()).is_empty(),
            "files are consumed"
        );
        record(&run, 99);
        forget(&run);
        assert!(recorded_sessions(tmp.path()).is_empty());
    }

    #[test]
    fn kills_orphans_of_a_recorded_session() {
        use std::process::Command;
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("uid-1/run/c");
        std::fs::create_dir_all(&run).unwrap();
        // A session leader that leaves an orphan behind, like a container whose main process died.
        let out = Command::new("setsid")
            .args(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .output()
            .expect("setsid");
        let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap();
        record(&run, session_of(&stat).unwrap());
        assert_eq!(sweep(tmp.path()), 1);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || session_of(&state).is_some() && state.contains(") Z"),
            "{state}"
        );
    }
}
