//! What the tests that run `ringmaster instance` directly on this host share: the
//! agent's `PATH`, running it as a non-root user, a blocking HTTP client for its API
//! and `/proc` inspection of its processes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `PATH` for the agent: the newest PostgreSQL bin directory first (Debian keeps it
/// off `PATH`; the postgres image puts it on), then the usual ones.
pub fn agent_path() -> String {
    let mut dirs: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    dirs.sort();
    let mut path: Vec<String> = dirs
        .pop()
        .map(|(_, d)| d.display().to_string())
        .into_iter()
        .collect();
    path.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from));
    path.join(":")
}

/// Whether `program` is on the agent's `PATH`.
pub fn installed(program: &str) -> bool {
    std::env::split_paths(&agent_path()).any(|d| d.join(program).is_file())
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The command prefix that runs the agent as a non-root user, or why it can't.
pub fn non_root_prefix() -> Result<Vec<String>, String> {
    if !is_root() {
        return Ok(Vec::new());
    }
    let prefix: Vec<String> = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
    ]
    .map(String::from)
    .to_vec();
    let can_run = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(env!("CARGO_BIN_EXE_ringmaster"))
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if can_run {
        Ok(prefix)
    } else {
        Err("setpriv cannot run the built binary as nobody".into())
    }
}

/// `ringmaster instance` from the test build, as a non-root user (see
/// [`non_root_prefix`]), with an empty environment but the agent's `PATH`.
pub fn agent_command() -> Command {
    let prefix = non_root_prefix().unwrap();
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_ringmaster"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_ringmaster")),
    };
    cmd.arg("instance").env_clear().env("PATH", agent_path());
    cmd
}

/// Why a test of an agent running `program` cannot run here, if it cannot.
pub fn skip_reason(program: &str) -> Option<String> {
    if !installed(program) {
        return Some(format!("{program} is not installed"));
    }
    non_root_prefix().err()
}

/// `method path` with an optional bearer token and JSON body: status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

/// State and parent of a process from `/proc`: `None` when it does not exist.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(s, _)| s != 'Z')
}

/// The processes whose parent is `parent` and whose state satisfies `state`.
pub fn children_where(parent: u32, state: impl Fn(char) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_state(pid).is_some_and(|(s, p)| p == parent && state(s)))
        .collect()
}

/// Sends `sig` to `pid` (ignoring a process that is gone).
pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}
