//! Making a data directory follow an upstream: `pg_basebackup` (clone),
//! `pg_rewind` (a former primary), `pg_controldata` (its timeline), and moving a
//! data directory that cannot be rewound aside.
//!
//! Passwords reach these programs through a 0600 password file in the run
//! directory (`PGPASSFILE`), never through their arguments or environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::config::{PASSFILE, render_passfile, superuser_conninfo};
use crate::instance::config::Config;
use crate::instance::engine::scrub_secrets;
use crate::instance::error::InstanceError;
use crate::instance::fsutil;
use crate::instance::reaper::Reaper;
use crate::instance::role::Upstream;

/// Prefix of a data directory moved aside.
const ASIDE_PREFIX: &str = "pgdata.old-";

/// Writes the password file (mode 0600) and returns its path.
pub fn write_passfile(c: &Config) -> Result<PathBuf, InstanceError> {
    fsutil::ensure_dir(&c.run_dir, 0o700)?;
    let path = c.run_dir.join(PASSFILE);
    fsutil::write_atomic(&path, render_passfile(c).as_bytes(), 0o600)?;
    Ok(path)
}

/// A command of the PostgreSQL programs with libpq pointed at the password file.
fn libpq_command(c: &Config, program: PathBuf) -> Result<Command, InstanceError> {
    let passfile = write_passfile(c)?;
    let mut cmd = Command::new(program);
    scrub_secrets(&mut cmd);
    cmd.env("PGPASSFILE", passfile)
        .env("PGCONNECT_TIMEOUT", "5")
        .env_remove("PGPASSWORD")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    Ok(cmd)
}

/// `pg_basebackup -X stream` of `upstream` into `pgdata` as the replication user.
pub async fn basebackup(
    c: &Config,
    bin_dir: &Path,
    pgdata: &Path,
    upstream: &Upstream,
    reaper: &Reaper,
) -> Result<(), InstanceError> {
    let mut cmd = libpq_command(c, bin_dir.join("pg_basebackup"))?;
    cmd.arg("--pgdata")
        .arg(pgdata)
        .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"])
        .arg(format!("--host={}", upstream.host))
        .arg(format!("--port={}", upstream.port))
        .arg(format!("--username={}", c.replication_username));
    tracing::info!(upstream = %upstream.address(), pgdata = %pgdata.display(), "cloning with pg_basebackup");
    reaper.run(&mut cmd).await
}

/// `pg_rewind --source-server` of `pgdata` to `upstream` as the superuser.
pub async fn rewind(
    c: &Config,
    bin_dir: &Path,
    pgdata: &Path,
    upstream: &Upstream,
    reaper: &Reaper,
) -> Result<(), InstanceError> {
    let mut cmd = libpq_command(c, bin_dir.join("pg_rewind"))?;
    cmd.arg("--target-pgdata")
        .arg(pgdata)
        .arg("--source-server")
        .arg(superuser_conninfo(c, upstream))
        .arg("--progress");
    tracing::info!(upstream = %upstream.address(), "rewinding with pg_rewind");
    reaper.run(&mut cmd).await
}

/// The timeline of a stopped data directory: the newer of its last checkpoint's
/// and its minimum recovery point's (`pg_controldata`).
pub async fn local_timeline(
    c: &Config,
    bin_dir: &Path,
    pgdata: &Path,
    reaper: &Reaper,
) -> Result<u64, InstanceError> {
    let out_path = c
        .run_dir
        .join(format!(".controldata-{}", std::process::id()));
    let out = std::fs::File::create(&out_path)
        .map_err(|e| InstanceError::io("creating", &out_path, e))?;
    let mut cmd = Command::new(bin_dir.join("pg_controldata"));
    scrub_secrets(&mut cmd);
    cmd.arg(pgdata).env("LC_ALL", "C").stdout(out);
    let result = reaper.run(&mut cmd).await;
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    result?;
    parse_timeline(&text)
        .ok_or_else(|| InstanceError::Replication("pg_controldata printed no timeline".into()))
}

/// The highest timeline `pg_controldata` prints.
pub fn parse_timeline(controldata: &str) -> Option<u64> {
    controldata
        .lines()
        .filter(|l| {
            l.starts_with("Latest checkpoint's TimeLineID:")
                || l.starts_with("Min recovery ending loc's timeline:")
        })
        .filter_map(|l| l.rsplit(':').next()?.trim().parse().ok())
        .max()
}

/// Moves `pgdata` aside as `pgdata.old-<unix time>` (removing older ones) so that
/// the next start clones again.
pub fn set_aside(data_dir: &Path, pgdata: &Path) -> Result<PathBuf, InstanceError> {
    for old in older_copies(data_dir)? {
        tracing::info!(path = %old.display(), "removing an older data directory set aside");
        fsutil::remove_any(&old)?;
    }
    let stamp = jiff::Timestamp::now().as_second();
    let aside = data_dir.join(format!("{ASIDE_PREFIX}{stamp}"));
    std::fs::rename(pgdata, &aside).map_err(|e| InstanceError::io("renaming", pgdata, e))?;
    fsutil::sync_parent(&aside)?;
    Ok(aside)
}

fn older_copies(data_dir: &Path) -> Result<Vec<PathBuf>, InstanceError> {
    let entries =
        std::fs::read_dir(data_dir).map_err(|e| InstanceError::io("listing", data_dir, e))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(ASIDE_PREFIX))
        .map(|e| e.path())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_from_controldata() {
        let text = "pg_control version number:            1300\n\
                    Latest checkpoint's TimeLineID:       3\n\
                    Latest checkpoint's PrevTimeLineID:   2\n\
                    Min recovery ending loc's timeline:   4\n";
        assert_eq!(parse_timeline(text), Some(4));
        assert_eq!(parse_timeline("nothing"), None);
    }

    #[test]
    fn set_aside_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("pgdata");
        std::fs::create_dir(&pgdata).unwrap();
        std::fs::create_dir(dir.path().join("pgdata.old-1")).unwrap();
        std::fs::write(dir.path().join(".ringmaster-role.json"), "{}").unwrap();
        let aside = set_aside(dir.path(), &pgdata).unwrap();
        assert!(aside.is_dir() && !pgdata.exists());
        assert!(!dir.path().join("pgdata.old-1").exists());
        assert!(dir.path().join(".ringmaster-role.json").exists());
    }
}
