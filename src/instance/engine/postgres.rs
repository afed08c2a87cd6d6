//! PostgreSQL: `initdb`, a ringmaster-managed configuration include and
//! `pg_hba.conf`, `postgres -D <pgdata>`, fast then immediate shutdown, and a
//! `SELECT 1` probe.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::programs;
use super::{ProbeInfo, StopStep, scrub_secrets};
use crate::instance::config::{Config, Replication};
use crate::instance::error::{InstanceError, ProbeError};
use crate::instance::fsutil;
use crate::instance::reaper::Reaper;

/// Subdirectory of the data directory that holds the cluster.
const PGDATA: &str = "pgdata";
/// The include file ringmaster owns, inside `pgdata`.
const INCLUDE_FILE: &str = "ringmaster.conf";
/// The line that pulls the include into `postgresql.conf`.
const INCLUDE_LINE: &str = "include 'ringmaster.conf'";
/// How long an immediate shutdown may take before the server is killed.
const IMMEDIATE_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// A PostgreSQL server and its programs.
#[derive(Debug)]
pub struct Postgres {
    config: Arc<Config>,
    bin_dir: PathBuf,
}

impl Postgres {
    /// Entries of the data directory created by initialisation.
    pub const OWNED_ENTRIES: &'static [&'static str] = &[PGDATA];

    /// Locates `postgres` (and `initdb` beside it); refuses to run as root.
    pub fn new(config: Arc<Config>) -> Result<Self, InstanceError> {
        if nix::unistd::geteuid().is_root() {
            return Err(InstanceError::RunningAsRoot);
        }
        let postgres = programs::on_path("postgres")
            .or_else(|| programs::in_versioned_dirs(Path::new("/usr/lib/postgresql"), "postgres"))
            .ok_or(InstanceError::ProgramNotFound {
                program: "postgres",
                hint: " nor in /usr/lib/postgresql/<major>/bin",
            })?;
        let bin_dir = postgres.parent().unwrap_or(Path::new("/")).to_path_buf();
        tracing::info!(bin_dir = %bin_dir.display(), "using PostgreSQL programs");
        Ok(Self { config, bin_dir })
    }

    /// The cluster directory.
    pub fn pgdata(&self) -> PathBuf {
        self.config.data_dir.join(PGDATA)
    }

    /// Runs `initdb` with the superuser's password in a short-lived 0600 file.
    pub async fn initialise(&self, reaper: &Reaper) -> Result<(), InstanceError> {
        fsutil::ensure_dir(&self.config.run_dir, 0o700)?;
        let pwfile = PasswordFile::create(&self.config.run_dir, self.config.password.expose())?;
        let mut cmd = Command::new(self.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(self.pgdata())
            .args([
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--data-checksums",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ])
            .arg(format!("--username={}", self.config.username))
            .arg(format!("--pwfile={}", pwfile.path().display()));
        scrub_secrets(&mut cmd);
        tracing::info!(pgdata = %self.pgdata().display(), "running initdb");
        let result = reaper.run(&mut cmd).await;
        drop(pwfile);
        result
    }

    /// Writes `ringmaster.conf` and `pg_hba.conf`, and makes sure
    /// `postgresql.conf` includes the former.
    pub fn render_config(&self) -> Result<(), InstanceError> {
        let pgdata = self.pgdata();
        fsutil::write_atomic(
            &pgdata.join(INCLUDE_FILE),
            render_settings(&self.config).as_bytes(),
            0o600,
        )?;
        fsutil::write_atomic(
            &pgdata.join("pg_hba.conf"),
            render_hba(&self.config).as_bytes(),
            0o600,
        )?;
        ensure_include(&pgdata.join("postgresql.conf"))
    }

    /// `postgres -D <pgdata>`.
    pub fn server_command(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D").arg(self.pgdata());
        cmd
    }

    /// Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL.
    pub fn stop_plan(&self) -> Vec<StopStep> {
        vec![
            StopStep {
                signal: Signal::SIGINT,
                wait: Some(self.config.stop_timeout),
            },
            StopStep {
                signal: Signal::SIGQUIT,
                wait: Some(IMMEDIATE_SHUTDOWN_WAIT),
            },
            StopStep {
                signal: Signal::SIGKILL,
                wait: None,
            },
        ]
    }

    /// Deadline of one probe.
    pub fn probe_timeout(&self) -> Duration {
        self.config.probe_timeout
    }

    /// Connects as the superuser over TCP and runs `SELECT 1`.
    pub async fn probe(&self) -> Result<ProbeInfo, ProbeError> {
        let c = &self.config;
        let mut pg = tokio_postgres::Config::new();
        pg.hostaddr(c.bind)
            .port(c.db_port)
            .user(&c.username)
            .password(c.password.expose())
            .dbname("postgres")
            .application_name("ringmaster-agent")
            .connect_timeout(c.probe_timeout);
        let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = client
            .query_one("SELECT 1, current_setting('server_version')", &[])
            .await;
        drop(client);
        driver.abort();
        let row = result?;
        let one: i32 = row.try_get(0)?;
        if one != 1 {
            return Err(ProbeError::Unexpected(format!("SELECT 1 returned {one}")));
        }
        Ok(ProbeInfo {
            version: row.try_get(1)?,
        })
    }
}

/// A password file that exists only while `initdb` reads it.
struct PasswordFile(PathBuf);

impl PasswordFile {
    fn create(dir: &Path, password: &str) -> Result<Self, InstanceError> {
        let path = dir.join(format!(".initdb-pwfile-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| InstanceError::io("creating", &path, e))?;
        let file = Self(path);
        writeln!(f, "{password}").map_err(|e| InstanceError::io("writing", &file.0, e))?;
        Ok(file)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PasswordFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "removing the initdb password file");
        }
    }
}

/// Appends the include line to `postgresql.conf` unless it is there.
fn ensure_include(conf: &Path) -> Result<(), InstanceError> {
    let text = std::fs::read_to_string(conf).map_err(|e| InstanceError::io("reading", conf, e))?;
    if text.lines().any(|l| l.trim() == INCLUDE_LINE) {
        return Ok(());
    }
    let mut new = text;
    if !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str("\n# Added by ringmaster: its settings, rewritten at every start.\n");
    new.push_str(INCLUDE_LINE);
    new.push('\n');
    fsutil::write_atomic(conf, new.as_bytes(), 0o600)
}

/// A string literal of `postgresql.conf`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The settings ringmaster owns (the include file).
pub fn render_settings(c: &Config) -> String {
    let standalone = match c.replication {
        Replication::Standalone => "# replication: none (standalone)",
    };
    let lines = [
        "# Managed by ringmaster: rewritten at every start of the instance agent. Do not edit."
            .to_string(),
        format!("listen_addresses = {}", quote(&c.bind.to_string())),
        format!("port = {}", c.db_port),
        format!(
            "unix_socket_directories = {}",
            quote(&c.run_dir.to_string_lossy())
        ),
        "unix_socket_permissions = 0700".into(),
        "password_encryption = 'scram-sha-256'".into(),
        format!("cluster_name = {}", quote(&c.pod_name)),
        "max_connections = 100".into(),
        "# logs: stderr only, collected with the container's".into(),
        "logging_collector = off".into(),
        "log_destination = 'stderr'".into(),
        "log_line_prefix = '%m [%p] %q%u@%d '".into(),
        "log_timezone = 'UTC'".into(),
        "log_checkpoints = on".into(),
        "log_lock_waits = on".into(),
        "# ready for streaming replicas and pg_rewind".into(),
        "wal_level = replica".into(),
        "max_wal_senders = 10".into(),
        "max_replication_slots = 10".into(),
        "wal_keep_size = '256MB'".into(),
        "wal_log_hints = on".into(),
        "hot_standby = on".into(),
        standalone.into(),
    ];
    lines.join("\n") + "\n"
}

/// `pg_hba.conf`: password (SCRAM) authentication everywhere.
pub fn render_hba(_c: &Config) -> String {
    [
        "# Managed by ringmaster: rewritten at every start of the instance agent. Do not edit.",
        "# TYPE  DATABASE  USER  ADDRESS    METHOD",
        "local   all       all              scram-sha-256",
        "host    all       all   0.0.0.0/0  scram-sha-256",
        "host    all       all   ::/0       scram-sha-256",
        "# replication entries: added with streaming replication",
    ]
    .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::config::{EngineKind, test_config};

    #[test]
    fn settings_follow_the_config() {
        let c = test_config(EngineKind::Postgres);
        let s = render_settings(&c);
        assert!(s.contains("listen_addresses = '127.0.50.7'\n"), "{s}");
        assert!(s.contains("port = 5432\n"));
        assert!(s.contains("unix_socket_directories = '/tmp/run'\n"));
        assert!(s.contains("password_encryption = 'scram-sha-256'\n"));
        assert!(s.contains("wal_level = replica\n"));
        assert!(s.contains("hot_standby = on\n"));
        assert!(s.contains("log_destination = 'stderr'\n"));
        assert!(!s.contains(c.password.expose()));
    }

    #[test]
    fn hba_is_scram_only() {
        let h = render_hba(&test_config(EngineKind::Postgres));
        let rules: Vec<&str> = h
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(rules.len(), 3);
        assert!(rules.iter().all(|r| r.ends_with("scram-sha-256")), "{h}");
    }

    #[test]
    fn quoting_escapes() {
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
    }

    #[test]
    fn include_is_added_once() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.conf");
        std::fs::write(&conf, "shared_buffers = 128MB").unwrap();
        ensure_include(&conf).unwrap();
        ensure_include(&conf).unwrap();
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.starts_with("shared_buffers = 128MB\n"));
        assert_eq!(text.matches(INCLUDE_LINE).count(), 1, "{text}");
        assert!(text.ends_with("include 'ringmaster.conf'\n"));
    }

    #[test]
    fn password_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = PasswordFile::create(dir.path(), "pw").unwrap();
        let p = f.path().to_path_buf();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "pw\n");
        drop(f);
        assert!(!p.exists());
    }
}
