//! PostgreSQL: `initdb` or a clone of the upstream, a ringmaster-managed
//! configuration include and `pg_hba.conf`, `postgres -D <pgdata>`, fast then
//! immediate shutdown, a `SELECT 1` probe, and replication: promotion, standby
//! settings applied with a reload, slots, `pg_rewind`.

mod clone;
mod config;
mod replication;
mod sql;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;

pub use self::config::{render_hba, render_settings};
use self::replication::SlotChanges;
use super::{ProbeInfo, RewindNeed, ServerView, StopStep, programs, scrub_secrets, within};
use crate::api::agent::ReplicationReport;
use crate::instance::config::Config;
use crate::instance::error::{InstanceError, ProbeError};
use crate::instance::fsutil;
use crate::instance::reaper::Reaper;
use crate::instance::role::{DesiredRole, DesiredState, Role, Upstream};

/// Subdirectory of the data directory that holds the cluster.
const PGDATA: &str = "pgdata";
/// How long an immediate shutdown may take before the server is killed.
const IMMEDIATE_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Deadline of the agent's own SQL steps (promotion waits longer, in SQL).
const SQL_TIMEOUT: Duration = Duration::from_secs(10);
/// Files that make PostgreSQL start in recovery.
const SIGNAL_FILES: &[&str] = &[config::STANDBY_SIGNAL, "recovery.signal"];

/// A PostgreSQL server and its programs.
#[derive(Debug)]
pub struct Postgres {
    config: Arc<Config>,
    bin_dir: PathBuf,
    /// The upstream the configuration follows (reported while not connected).
    upstream: Mutex<Option<Upstream>>,
}

impl Postgres {
    /// Entries of the data directory created by initialisation.
    pub const OWNED_ENTRIES: &'static [&'static str] = &[PGDATA];

    /// Locates `postgres` (and the other programs beside it); refuses to run as root.
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
        Ok(Self {
            config,
            bin_dir,
            upstream: Mutex::new(None),
        })
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

    /// Clones `upstream` into the (absent) cluster directory.
    pub async fn clone_from(
        &self,
        upstream: &Upstream,
        reaper: &Reaper,
    ) -> Result<(), InstanceError> {
        let pgdata = self.pgdata();
        fsutil::remove_any(&pgdata)?;
        clone::basebackup(&self.config, &self.bin_dir, &pgdata, upstream, reaper).await
    }

    /// Whether the stopped data directory must be rewound before it follows
    /// `upstream`: always after it ran as primary (once the upstream is a primary),
    /// else when the upstream's timeline is newer than its own.
    pub async fn rewind_need(
        &self,
        last_server_role: Option<Role>,
        upstream: &Upstream,
        reaper: &Reaper,
    ) -> Result<RewindNeed, InstanceError> {
        let was_primary = last_server_role == Some(Role::Primary);
        let not_yet = if was_primary {
            RewindNeed::WaitForUpstream
        } else {
            RewindNeed::No
        };
        let Some(up) = self.primary_session(upstream).await else {
            return Ok(not_yet);
        };
        if was_primary {
            return Ok(RewindNeed::Yes);
        }
        let theirs = replication::primary_timeline(&up).await?;
        let ours =
            clone::local_timeline(&self.config, &self.bin_dir, &self.pgdata(), reaper).await?;
        Ok(if theirs > ours {
            RewindNeed::Yes
        } else {
            RewindNeed::No
        })
    }

    /// Whether `upstream` accepts a connection and is not in recovery.
    pub async fn upstream_is_primary(&self, upstream: &Upstream) -> bool {
        self.primary_session(upstream).await.is_some()
    }

    /// A session on `upstream` when it answers within the probe deadline and is not
    /// in recovery.
    async fn primary_session(&self, upstream: &Upstream) -> Option<sql::Session> {
        let up = sql::connect(
            &self.config,
            &upstream.host,
            upstream.port,
            self.config.probe_timeout,
        )
        .await
        .ok()?;
        matches!(replication::in_recovery(&up).await, Ok(false)).then_some(up)
    }

    /// Rewinds the stopped data directory to `upstream` (a primary).
    pub async fn rewind(&self, upstream: &Upstream, reaper: &Reaper) -> Result<(), InstanceError> {
        // pg_rewind reads the source's timeline from its control file, which a
        // promotion updates only at the next checkpoint
        let up = sql::connect(&self.config, &upstream.host, upstream.port, SQL_TIMEOUT).await?;
        up.client.batch_execute("CHECKPOINT").await?;
        drop(up);
        // pg_rewind's crash recovery runs a single-user server: not in standby mode
        remove_signal_files(&self.pgdata())?;
        clone::rewind(
            &self.config,
            &self.bin_dir,
            &self.pgdata(),
            upstream,
            reaper,
        )
        .await
    }

    /// Moves the cluster directory aside (`pgdata.old-<time>`); the next start clones.
    pub fn set_aside(&self) -> Result<PathBuf, InstanceError> {
        clone::set_aside(&self.config.data_dir, &self.pgdata())
    }

    /// Writes `ringmaster.conf`, `pg_hba.conf` and the password file, makes sure
    /// `postgresql.conf` includes the former, and creates `standby.signal` for a
    /// replica (removes it for a primary).
    pub fn render_config(&self, desired: &DesiredState) -> Result<(), InstanceError> {
        let pgdata = self.pgdata();
        clone::write_passfile(&self.config)?;
        fsutil::write_atomic(
            &pgdata.join(config::INCLUDE_FILE),
            render_settings(&self.config, desired).as_bytes(),
            0o600,
        )?;
        fsutil::write_atomic(
            &pgdata.join("pg_hba.conf"),
            render_hba(&self.config).as_bytes(),
            0o600,
        )?;
        config::ensure_include(&pgdata.join("postgresql.conf"))?;
        match (desired.role, config::followed(desired)) {
            (_, Some(_)) => fsutil::write_atomic(&pgdata.join(config::STANDBY_SIGNAL), b"", 0o600)?,
            (DesiredRole::Primary, None) => remove_signal_files(&pgdata)?,
            _ => {}
        }
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) =
            config::followed(desired).cloned();
        Ok(())
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
        probe_on(&sql::local(&self.config, self.config.probe_timeout).await?).await
    }

    /// [`Postgres::probe`], then what the server is and its replication on the same
    /// connection; each step within the probe deadline.
    pub async fn probe_and_report(&self) -> Result<ServerView, ProbeError> {
        let deadline = self.config.probe_timeout;
        let (s, info) = within(deadline, async {
            let s = sql::local(&self.config, deadline).await?;
            let info = probe_on(&s).await?;
            Ok((s, info))
        })
        .await?;
        let role_and_report = within(deadline, self.role_and_report(&s)).await.ok();
        Ok(ServerView {
            info,
            role_and_report,
        })
    }

    /// Promotes the running standby (`pg_promote(wait => true)`); a primary stays.
    pub async fn promote(&self) -> Result<(), InstanceError> {
        let s = sql::local(&self.config, SQL_TIMEOUT).await?;
        if replication::in_recovery(&s).await? {
            tracing::info!("promoting the standby");
            replication::promote(&s).await?;
            // records the new timeline in the control file (pg_rewind of the others reads it)
            s.client.batch_execute("CHECKPOINT").await?;
        }
        Ok(())
    }

    /// Applies the rendered configuration to the running server with a reload;
    /// on a primary also keeps the replication role and the replicas' slots.
    pub async fn apply_live(&self, desired: &DesiredState) -> Result<(), InstanceError> {
        let s = sql::local(&self.config, SQL_TIMEOUT).await?;
        replication::reload(&s).await?;
        if desired.role == DesiredRole::Primary && !replication::in_recovery(&s).await? {
            replication::ensure_replication_role(&s, &self.config).await?;
            let changes = replication::sync_slots(&s, &desired.replicas).await?;
            if changes != SlotChanges::default() {
                tracing::info!(created = ?changes.create, dropped = ?changes.drop, "replication slots changed");
            }
        }
        Ok(())
    }

    /// Replication as the running server sees it.
    pub async fn replication_report(&self) -> Result<ReplicationReport, ProbeError> {
        let s = sql::local(&self.config, self.config.probe_timeout).await?;
        Ok(self.role_and_report(&s).await?.1)
    }

    /// What the server on `s` is — a standby (`pg_is_in_recovery()`) or a primary —
    /// and its replication.
    async fn role_and_report(
        &self,
        s: &sql::Session,
    ) -> Result<(Role, ReplicationReport), ProbeError> {
        if replication::in_recovery(s).await? {
            let configured = self
                .upstream
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(Upstream::address);
            Ok((
                Role::Replica,
                replication::standby_report(s, configured).await?,
            ))
        } else {
            Ok((Role::Primary, replication::primary_report(s).await?))
        }
    }
}

/// `SELECT 1` and the server's version on `s`.
async fn probe_on(s: &sql::Session) -> Result<ProbeInfo, ProbeError> {
    let row = s
        .client
        .query_one("SELECT 1, current_setting('server_version')", &[])
        .await?;
    let one: i32 = row.try_get(0)?;
    if one != 1 {
        return Err(ProbeError::Unexpected(format!("SELECT 1 returned {one}")));
    }
    Ok(ProbeInfo {
        version: row.try_get(1)?,
    })
}

/// Removes `standby.signal` and `recovery.signal`.
fn remove_signal_files(pgdata: &Path) -> Result<(), InstanceError> {
    SIGNAL_FILES
        .iter()
        .try_for_each(|f| fsutil::remove_any(&pgdata.join(f)))
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

#[cfg(test)]
mod tests {
    use super::*;

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
