//! The files ringmaster owns in `pgdata`: `ringmaster.conf` (included from
//! `postgresql.conf`), `pg_hba.conf`, `standby.signal`, and the libpq password file
//! in the run directory.

use std::path::Path;

use super::sql::ident;
use crate::instance::config::Config;
use crate::instance::error::InstanceError;
use crate::instance::fsutil;
use crate::instance::role::{DesiredRole, DesiredState, ReplicationMode, Upstream};

/// The include file ringmaster owns, inside `pgdata`.
pub const INCLUDE_FILE: &str = "ringmaster.conf";
/// The line that pulls the include into `postgresql.conf`.
pub const INCLUDE_LINE: &str = "include 'ringmaster.conf'";
/// The file whose presence makes PostgreSQL start as a standby.
pub const STANDBY_SIGNAL: &str = "standby.signal";
/// The libpq password file, in the run directory.
pub const PASSFILE: &str = "pgpass";

/// Appends the include line to `postgresql.conf` unless it is there.
pub fn ensure_include(conf: &Path) -> Result<(), InstanceError> {
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
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A value of a libpq connection string.
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A field of a libpq password file.
fn passfile_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// The upstream a desired state follows, if it is a replica with one.
pub fn followed(desired: &DesiredState) -> Option<&Upstream> {
    match desired.role {
        DesiredRole::Replica => desired.upstream.as_ref(),
        DesiredRole::Primary | DesiredRole::Fenced => None,
    }
}

/// `synchronous_standby_names` (unquoted): `ANY 1 ("a", "b")` for a sync primary
/// with replicas, else empty.
pub fn sync_standby_names(desired: &DesiredState) -> String {
    if desired.role != DesiredRole::Primary
        || desired.mode != ReplicationMode::Sync
        || desired.replicas.is_empty()
    {
        return String::new();
    }
    let names: Vec<String> = desired.replicas.iter().map(|n| ident(n)).collect();
    format!("ANY 1 ({})", names.join(", "))
}

/// `primary_conninfo` for following `upstream`: the replication user, the password
/// from the password file, `application_name` = this instance.
pub fn primary_conninfo(c: &Config, upstream: &Upstream) -> String {
    conninfo(&[
        ("host", upstream.host.clone()),
        ("port", upstream.port.to_string()),
        ("user", c.replication_username.clone()),
        (
            "passfile",
            c.run_dir.join(PASSFILE).to_string_lossy().into(),
        ),
        ("application_name", c.pod_name.clone()),
        ("connect_timeout", "5".into()),
    ])
}

/// A connection string to `upstream` as the superuser (`pg_rewind`).
pub fn superuser_conninfo(c: &Config, upstream: &Upstream) -> String {
    conninfo(&[
        ("host", upstream.host.clone()),
        ("port", upstream.port.to_string()),
        ("user", c.username.clone()),
        ("dbname", "postgres".into()),
        (
            "passfile",
            c.run_dir.join(PASSFILE).to_string_lossy().into(),
        ),
        ("connect_timeout", "5".into()),
    ])
}

/// A libpq connection string of `fields`, in order.
fn conninfo(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", conninfo_value(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The password file: the replication user's and the superuser's passwords for
/// any host.
pub fn render_passfile(c: &Config) -> String {
    [
        (&c.replication_username, c.replication_password.expose()),
        (&c.username, c.password.expose()),
    ]
    .iter()
    .map(|(user, pw)| format!("*:*:*:{}:{}\n", passfile_field(user), passfile_field(pw)))
    .collect()
}

/// Lines that depend on the desired role.
fn replication_lines(c: &Config, desired: &DesiredState) -> Vec<String> {
    let mut lines = vec![
        format!(
            "synchronous_standby_names = {}",
            quote(&sync_standby_names(desired))
        ),
        "synchronous_commit = on".into(),
    ];
    match followed(desired) {
        Some(u) => lines.extend([
            format!("# standby of {} ({})", u.name, u.address()),
            format!("primary_conninfo = {}", quote(&primary_conninfo(c, u))),
            format!(
                "primary_slot_name = {}",
                quote(&crate::api::agent::slot_name(&c.pod_name))
            ),
            "recovery_target_timeline = 'latest'".into(),
        ]),
        None => lines.push("# primary: no upstream".into()),
    }
    lines
}

/// The settings ringmaster owns (the include file).
pub fn render_settings(c: &Config, desired: &DesiredState) -> String {
    let mut lines = vec![
        "# Managed by ringmaster: rewritten by the instance agent. Do not edit.".to_string(),
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
        "# streaming replication and pg_rewind".into(),
        "wal_level = replica".into(),
        "max_wal_senders = 10".into(),
        "max_replication_slots = 10".into(),
        "wal_keep_size = '256MB'".into(),
        "wal_log_hints = on".into(),
        "hot_standby = on".into(),
        "hot_standby_feedback = on".into(),
        "wal_receiver_timeout = '5s'".into(),
        "wal_retrieve_retry_interval = '1s'".into(),
    ];
    lines.extend(replication_lines(c, desired));
    lines.join("\n") + "\n"
}

/// `pg_hba.conf`: password (SCRAM) authentication everywhere; replication
/// connections for the replication user only.
pub fn render_hba(c: &Config) -> String {
    let user = ident(&c.replication_username);
    [
        "# Managed by ringmaster: rewritten by the instance agent. Do not edit.".to_string(),
        "# TYPE  DATABASE     USER  ADDRESS    METHOD".into(),
        "local   all          all              scram-sha-256".into(),
        "host    all          all   0.0.0.0/0  scram-sha-256".into(),
        "host    all          all   ::/0       scram-sha-256".into(),
        format!("host    replication  {user}  0.0.0.0/0  scram-sha-256"),
        format!("host    replication  {user}  ::/0       scram-sha-256"),
    ]
    .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::config::{EngineKind, test_config};
    use crate::instance::role::StopMode;

    fn desired(role: DesiredRole, mode: ReplicationMode, replicas: &[&str]) -> DesiredState {
        DesiredState {
            epoch: 2,
            role,
            upstream: (role == DesiredRole::Replica).then(|| Upstream {
                name: "c-0-1".into(),
                host: "127.0.0.9".into(),
                port: 5433,
            }),
            replicas: replicas.iter().map(|s| s.to_string()).collect(),
            mode,
            stop: StopMode::Clean,
            hold_crashed_primary_seconds: 0,
            last_server_role: None,
        }
    }

    #[test]
    fn primary_settings() {
        let c = test_config(EngineKind::Postgres);
        let s = render_settings(
            &c,
            &desired(DesiredRole::Primary, ReplicationMode::Async, &["a"]),
        );
        assert!(s.contains("listen_addresses = '127.0.50.7'\n"), "{s}");
        assert!(s.contains("port = 5432\n"));
        assert!(s.contains("unix_socket_directories = '/tmp/run'\n"));
        assert!(s.contains("wal_level = replica\n"));
        assert!(s.contains("hot_standby_feedback = on\n"));
        assert!(s.contains("wal_keep_size = '256MB'\n"));
        assert!(s.contains("synchronous_standby_names = ''\n"), "{s}");
        assert!(!s.contains("primary_conninfo"));
        assert!(!s.contains(c.password.expose()));
    }

    #[test]
    fn sync_primary_names_its_replicas() {
        let c = test_config(EngineKind::Postgres);
        let d = desired(
            DesiredRole::Primary,
            ReplicationMode::Sync,
            &["c-0-1", "c-0-2"],
        );
        assert_eq!(sync_standby_names(&d), r#"ANY 1 ("c-0-1", "c-0-2")"#);
        let s = render_settings(&c, &d);
        assert!(
            s.contains("synchronous_standby_names = 'ANY 1 (\"c-0-1\", \"c-0-2\")'\n"),
            "{s}"
        );
        let none = desired(DesiredRole::Primary, ReplicationMode::Sync, &[]);
        assert_eq!(sync_standby_names(&none), "");
        let quoted = desired(DesiredRole::Primary, ReplicationMode::Sync, &["a\"b"]);
        assert_eq!(sync_standby_names(&quoted), r#"ANY 1 ("a""b")"#);
        let replica = desired(DesiredRole::Replica, ReplicationMode::Sync, &["x"]);
        assert_eq!(sync_standby_names(&replica), "");
    }

    #[test]
    fn replica_settings_follow_the_upstream() {
        let c = test_config(EngineKind::Postgres);
        let s = render_settings(
            &c,
            &desired(DesiredRole::Replica, ReplicationMode::Async, &[]),
        );
        assert!(
            s.contains(
                "primary_conninfo = 'host=''127.0.0.9'' port=''5433'' user=''ringmaster_replication'' \
                 passfile=''/tmp/run/pgpass'' application_name=''c-0-0'' connect_timeout=''5'''\n"
            ),
            "{s}"
        );
        assert!(s.contains("primary_slot_name = 'c_0_0'\n"), "{s}");
        assert!(s.contains("recovery_target_timeline = 'latest'\n"));
        assert!(s.contains("wal_receiver_timeout = '5s'\n"));
        assert!(!s.contains(c.replication_password.expose()));
    }

    #[test]
    fn hba_is_scram_only_with_replication_for_its_user() {
        let h = render_hba(&test_config(EngineKind::Postgres));
        let rules: Vec<&str> = h
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(rules.len(), 5);
        assert!(rules.iter().all(|r| r.ends_with("scram-sha-256")), "{h}");
        assert!(
            h.contains("host    replication  \"ringmaster_replication\"  0.0.0.0/0  scram-sha-256"),
            "{h}"
        );
    }

    #[test]
    fn passfile_escapes() {
        let mut c = test_config(EngineKind::Postgres);
        c.replication_password = crate::instance::secret::Secret::new("a:b\\c");
        let p = render_passfile(&c);
        assert_eq!(
            p,
            "*:*:*:ringmaster_replication:a\\:b\\\\c\n*:*:*:postgres:test-password\n"
        );
    }

    #[test]
    fn quoting_escapes() {
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(conninfo_value("a'b\\c"), "'a\\'b\\\\c'");
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
}
