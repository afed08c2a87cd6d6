//! The sandbox helper: how a container's process is started.
//!
//! The node agent re-executes its own binary as `localnode __sandbox` and
//! writes a JSON [`Spec`] to the helper's stdin. The helper ([`main`]) becomes
//! a session and process-group leader, enters a private mount namespace,
//! bind-mounts the container's volumes and files, makes sure its user has a
//! passwd entry, takes the pod's host name (private UTS namespace), drops privileges and finally `execve`s the container's
//! command — so the container's main process keeps the helper's pid, and the
//! whole container can be signalled as the process group `-pid`.
//!
//! When the helper fails before `execve` it writes the reason to
//! [`Spec::error_file`] and exits with [`SETUP_FAILED`].

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

/// Hidden first argument that turns the binary into the sandbox helper.
pub const SUBCOMMAND: &str = "__sandbox";

/// Exit code of the helper when it could not start the command.
pub const SETUP_FAILED: i32 = 128;

/// Everything the helper needs to start one container process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Spec {
    /// The command and its arguments; `argv[0]` is looked up in the `PATH` of `env`.
    pub argv: Vec<String>,
    /// The complete environment (nothing is inherited from the agent).
    pub env: Vec<(String, String)>,
    /// Working directory (created if missing).
    pub cwd: String,
    /// User to run as (`None`: root).
    pub uid: Option<u32>,
    /// Primary group (`None`: the user's passwd group, else 0).
    pub gid: Option<u32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Bind mounts, applied in order.
    pub mounts: Vec<Mount>,
    /// A private directory for generated files (passwd, group).
    pub scratch_dir: PathBuf,
    /// Where to write the reason of a failure before `execve`.
    pub error_file: Option<PathBuf>,
    /// Host name in a private UTS namespace (`None`: keep the node's).
    pub hostname: Option<String>,
}

/// One bind mount.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Mount {
    /// Path on the host (a directory or a file).
    pub source: PathBuf,
    /// Path in the container; created when missing.
    pub target: PathBuf,
    /// Remount read-only.
    pub read_only: bool,
}

impl Spec {
    /// Starts the helper (`exe __sandbox`) for this spec with the given stdout
    /// and stderr, on the calling thread (see [`Spawner`] for why that matters).
    /// Needs a tokio runtime context.
    pub fn spawn(
        &self,
        exe: &Path,
        stdout: Stdio,
        stderr: Stdio,
    ) -> std::io::Result<tokio::process::Child> {
        let json = serde_json::to_vec(self)?;
        let mut child = tokio::process::Command::new(exe)
            .arg(SUBCOMMAND)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(&json).await;
            });
        }
        Ok(child)
    }
}

/// A spawn request for the [`Spawner`] thread.
struct Request {
    spec: Spec,
    exe: PathBuf,
    stdout: Stdio,
    stderr: Stdio,
    reply: tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
}

/// Starts sandboxes from one dedicated thread that lives as long as the agent.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
/// the process; runtime threads may come and go, so every container is forked
/// from this thread instead.
#[derive(Clone)]
pub struct Spawner {
    tx: std::sync::mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the spawner thread (call from within the tokio runtime).
    pub fn new() -> std::io::Result<Spawner> {
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("sandbox-spawner".into())
            .spawn(move || {
                let _runtime = handle.enter();
                for req in rx {
                    let child = req.spec.spawn(&req.exe, req.stdout, req.stderr);
                    let _ = req.reply.send(child);
                }
            })?;
        Ok(Spawner { tx })
    }

    /// Starts the helper for `spec` (see [`Spec::spawn`]).
    pub async fn spawn(
        &self,
        spec: &Spec,
        exe: &Path,
        stdout: Stdio,
        stderr: Stdio,
    ) -> std::io::Result<tokio::process::Child> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let req = Request {
            spec: spec.clone(),
            exe: exe.to_path_buf(),
            stdout,
            stderr,
            reply,
        };
        let gone = || std::io::Error::other("the sandbox spawner thread is gone");
        self.tx.send(req).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Entry point of the helper process (never returns on success).
pub fn main() -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let spec: Spec = serde_json::from_slice(&input).context("reading the sandbox spec")?;
    let err = match enter(&spec) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let msg = format!("{err:#}");
    if let Some(path) = &spec.error_file {
        let _ = std::fs::write(path, &msg);
    }
    let _ = writeln!(std::io::stderr(), "localnode sandbox: {msg}");
    std::process::exit(SETUP_FAILED);
}

/// Sets the process up and executes the command.
fn enter(spec: &Spec) -> anyhow::Result<std::convert::Infallible> {
    let parent = nix::unistd::getppid();
    reopen_stdin()?;
    nix::unistd::setsid().context("setsid")?;
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    if let Some(name) = &spec.hostname {
        unshare(CloneFlags::CLONE_NEWUTS).context("unshare(CLONE_NEWUTS)")?;
        nix::unistd::sethostname(name).with_context(|| format!("sethostname {name}"))?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;
    let mut env = spec.env.clone();
    let (uid, gid, overlays) = ensure_user(spec, &mut env)?;
    // Every source is opened before anything is mounted, so a volume mounted over a
    // directory holding other sources (an emptyDir at /tmp, say) cannot hide them.
    let mut all: Vec<&Mount> = sorted_mounts(&spec.mounts);
    all.extend(overlays.iter());
    let prepared = all
        .into_iter()
        .map(prepare)
        .collect::<anyhow::Result<Vec<_>>>()?;
    for p in &prepared {
        bind(p)?;
    }
    make_dir(Path::new(&spec.cwd))?;
    nix::unistd::chdir(spec.cwd.as_str()).with_context(|| format!("chdir {}", spec.cwd))?;
    drop_privileges(uid, gid, &spec.groups)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    if nix::unistd::getppid() != parent {
        bail!("the node agent exited while the container was starting");
    }
    reset_signals()?;
    exec(&spec.argv, &env)
}

fn reopen_stdin() -> anyhow::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(null).context("dup2 /dev/null")?;
    Ok(())
}

/// Mounts ordered so that a parent directory is mounted before paths inside it.
fn sorted_mounts(mounts: &[Mount]) -> Vec<&Mount> {
    let mut v: Vec<&Mount> = mounts.iter().collect();
    v.sort_by_key(|m| m.target.components().count());
    v
}

/// A mount whose source is already open (`O_PATH`), immune to later mounts.
struct Prepared<'a> {
    mount: &'a Mount,
    source: std::os::fd::OwnedFd,
    is_dir: bool,
}

/// Opens `m.source` so it can be mounted from its descriptor later.
fn prepare(m: &Mount) -> anyhow::Result<Prepared<'_>> {
    let what = || format!("opening {} for {}", m.source.display(), m.target.display());
    let is_dir = std::fs::metadata(&m.source).with_context(what)?.is_dir();
    let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC;
    let source =
        nix::fcntl::open(&m.source, flags, nix::sys::stat::Mode::empty()).with_context(what)?;
    Ok(Prepared {
        mount: m,
        source,
        is_dir,
    })
}

/// Bind-mounts the prepared source at its target, creating the mount point.
fn bind(p: &Prepared<'_>) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let m = p.mount;
    let what = || format!("mounting {} at {}", m.source.display(), m.target.display());
    if p.is_dir {
        make_dir(&m.target).with_context(what)?;
    } else {
        touch(&m.target).with_context(what)?;
    }
    let source = format!("/proc/self/fd/{}", p.source.as_raw_fd());
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(
        Some(source.as_str()),
        &m.target,
        None::<&str>,
        flags,
        None::<&str>,
    )
    .with_context(what)?;
    if m.read_only {
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, &m.target, None::<&str>, ro, None::<&str>)
            .with_context(|| format!("remounting {} read-only", m.target.display()))?;
    }
    Ok(())
}

fn make_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("mkdir -p {}", path.display()))
}

fn touch(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        make_dir(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

/// Makes sure the user and group exist in /etc/passwd and /etc/group (returning
/// mounts of generated copies over them if not) and sets `HOME`.
/// Returns (uid, gid, mounts).
fn ensure_user(
    spec: &Spec,
    env: &mut Vec<(String, String)>,
) -> anyhow::Result<(u32, u32, Vec<Mount>)> {
    let mut overlays = Vec::new();
    let uid = spec.uid.unwrap_or(0);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let gid = spec
        .gid
        .or_else(|| passwd_entry(&passwd, uid).map(|e| e.gid))
        .unwrap_or(0);
    if let Some(generated) = passwd_with_user(&passwd, uid, gid) {
        overlays.push(overlay_file(
            &spec.scratch_dir,
            "passwd",
            &generated,
            Path::new("/etc/passwd"),
        )?);
    }
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    if let Some(generated) = group_with_gid(&group, gid) {
        overlays.push(overlay_file(
            &spec.scratch_dir,
            "group",
            &generated,
            Path::new("/etc/group"),
        )?);
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        let home = passwd_entry(&passwd, uid).map_or_else(|| "/".to_string(), |e| e.home);
        env.push(("HOME".to_string(), home));
    }
    Ok((uid, gid, overlays))
}

/// Writes `content` to `dir/name` (atomically); returns its read-only mount over `target`.
fn overlay_file(dir: &Path, name: &str, content: &str, target: &Path) -> anyhow::Result<Mount> {
    make_dir(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, &path)?;
    Ok(Mount {
        source: path,
        target: target.to_path_buf(),
        read_only: true,
    })
}

/// A parsed /etc/passwd line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    gid: u32,
    home: String,
}

/// The passwd entry of `uid`, if any.
fn passwd_entry(passwd: &str, uid: u32) -> Option<PasswdEntry> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse() == Ok(uid)).then(|| PasswdEntry {
            gid: f[3].parse().unwrap_or(0),
            home: f[5].to_string(),
        })
    })
}

/// `passwd` plus an entry for `uid`, or `None` if it already has one.
fn passwd_with_user(passwd: &str, uid: u32, gid: u32) -> Option<String> {
    if passwd_entry(passwd, uid).is_some() {
        return None;
    }
    let mut out = passwd.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "user{uid}:x:{uid}:{gid}:container user {uid}:/:/bin/sh\n"
    ));
    Some(out)
}

/// `group` plus an entry for `gid`, or `None` if it already has one.
fn group_with_gid(group: &str, gid: u32) -> Option<String> {
    let known = group
        .lines()
        .any(|l| l.split(':').nth(2).and_then(|g| g.parse::<u32>().ok()) == Some(gid));
    if known {
        return None;
    }
    let mut out = group.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("group{gid}:x:{gid}:\n"));
    Some(out)
}

fn drop_privileges(uid: u32, gid: u32, groups: &[u32]) -> anyhow::Result<()> {
    let mut all: BTreeSet<u32> = groups.iter().copied().collect();
    all.insert(gid);
    let gids: Vec<Gid> = all.into_iter().map(Gid::from_raw).collect();
    nix::unistd::setgroups(&gids).context("setgroups")?;
    nix::unistd::setgid(Gid::from_raw(gid)).context("setgid")?;
    nix::unistd::setuid(Uid::from_raw(uid)).context("setuid")?;
    Ok(())
}

/// Undoes what the Rust runtime did to signals (SIGPIPE ignored), which `execve` would keep.
fn reset_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{SigHandler, signal};
    // SAFETY: single-threaded process about to exec; installing SIG_DFL runs no handler code.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.context("resetting SIGPIPE")?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).context("sigprocmask")?;
    Ok(())
}

/// Looks the command up in the container's `PATH` and executes it.
fn exec(argv: &[String], env: &[(String, String)]) -> anyhow::Result<std::convert::Infallible> {
    let Some(cmd) = argv.first() else {
        bail!("no command to run")
    };
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    let program = find_program(cmd, path_var, is_executable)
        .with_context(|| format!("exec: {cmd:?}: executable file not found in $PATH"))?;
    let c = |s: &str| CString::new(s).context("NUL byte in command or environment");
    let args = argv
        .iter()
        .map(|a| c(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| c(&format!("{k}={v}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let prog = c(&program.to_string_lossy())?;
    let err = nix::unistd::execve(&prog, &args, &envp).unwrap_err();
    bail!("exec {}: {err}", program.display())
}

fn is_executable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file()
}

/// Resolves a command like `execvp` would, using `path_var` instead of our own `PATH`.
fn find_program(cmd: &str, path_var: &str, executable: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    path_var
        .split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(|d| Path::new(d).join(cmd))
        .find(|p| executable(p))
}

/// True if `rel` is a relative path that stays below its base (no `..`, not absolute).
pub fn is_safe_relative(rel: &str) -> bool {
    Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\npostgres:x:105:110::/var/lib/postgresql:/bin/bash";

    #[test]
    fn passwd_generation() {
        assert_eq!(passwd_with_user(PASSWD, 105, 110), None);
        let g = passwd_with_user(PASSWD, 999, 999).unwrap();
        assert!(g.starts_with(PASSWD));
        assert!(
            g.ends_with("\nuser999:x:999:999:container user 999:/:/bin/sh\n"),
            "{g}"
        );
        assert_eq!(passwd_entry(&g, 999).unwrap().home, "/");
        assert_eq!(passwd_entry(PASSWD, 105).unwrap().gid, 110);
    }

    #[test]
    fn group_generation() {
        let group = "root:x:0:\npostgres:x:110:\n";
        assert_eq!(group_with_gid(group, 110), None);
        assert_eq!(
            group_with_gid(group, 7).unwrap(),
            format!("{group}group7:x:7:\n")
        );
    }

    #[test]
    fn program_lookup() {
        let exists = |p: &Path| p == Path::new("/b/tool");
        assert_eq!(
            find_program("tool", "/a:/b", exists),
            Some(PathBuf::from("/b/tool"))
        );
        assert_eq!(find_program("nope", "/a:/b", exists), None);
        assert_eq!(find_program("./x", "", exists), Some(PathBuf::from("./x")));
    }

    #[test]
    fn mount_order_parents_first() {
        let m = |t: &str| Mount {
            target: t.into(),
            ..Default::default()
        };
        let mounts = [m("/a/b/c"), m("/a"), m("/a/b")];
        let order: Vec<_> = sorted_mounts(&mounts)
            .iter()
            .map(|m| m.target.clone())
            .collect();
        assert_eq!(
            order,
            vec![PathBuf::from("/a"), "/a/b".into(), "/a/b/c".into()]
        );
    }

    #[test]
    fn safe_relative_paths() {
        assert!(is_safe_relative("a/b"));
        assert!(is_safe_relative(""));
        assert!(!is_safe_relative("../x"));
        assert!(!is_safe_relative("a/../../x"));
        assert!(!is_safe_relative("/abs"));
    }
}
