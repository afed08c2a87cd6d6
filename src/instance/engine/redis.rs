//! Redis: a generated `redis.conf` (mode 0600, it holds the password),
//! `redis-server <conf>`, SIGTERM (Redis fsyncs its AOF and exits), and an
//! `AUTH` + `PING` probe.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};

use super::programs;
use super::{ProbeInfo, StopStep};
use crate::instance::config::{Config, Replication};
use crate::instance::error::{InstanceError, ProbeError};
use crate::instance::fsutil;

/// Subdirectory of the data directory that holds Redis's files.
const REDIS_DIR: &str = "redis";
/// Redis's built-in superuser.
const DEFAULT_USER: &str = "default";

/// A Redis server and its program.
#[derive(Debug)]
pub struct Redis {
    config: Arc<Config>,
    program: PathBuf,
}

impl Redis {
    /// Entries of the data directory created by initialisation.
    pub const OWNED_ENTRIES: &'static [&'static str] = &[REDIS_DIR];

    /// Locates `redis-server`.
    pub fn new(config: Arc<Config>) -> Result<Self, InstanceError> {
        let program = programs::on_path("redis-server").ok_or(InstanceError::ProgramNotFound {
            program: "redis-server",
            hint: "",
        })?;
        Ok(Self { config, program })
    }

    /// Redis's working directory (RDB, AOF and its configuration).
    pub fn dir(&self) -> PathBuf {
        self.config.data_dir.join(REDIS_DIR)
    }

    /// The generated configuration file.
    pub fn conf_path(&self) -> PathBuf {
        self.dir().join("redis.conf")
    }

    /// Creates Redis's working directory.
    pub fn initialise(&self) -> Result<(), InstanceError> {
        fsutil::ensure_dir(&self.dir(), 0o700)?;
        fsutil::ensure_dir(&self.config.run_dir, 0o700)?;
        fsutil::sync_parent(&self.dir())
    }

    /// Writes `redis.conf` (mode 0600).
    pub fn render_config(&self) -> Result<(), InstanceError> {
        let text = render(&self.config, &self.dir());
        fsutil::write_atomic(&self.conf_path(), text.as_bytes(), 0o600)
    }

    /// `redis-server <conf>`.
    pub fn server_command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg(self.conf_path());
        cmd
    }

    /// SIGTERM (Redis flushes and fsyncs, then exits), then SIGKILL.
    pub fn stop_plan(&self) -> Vec<StopStep> {
        vec![
            StopStep {
                signal: Signal::SIGTERM,
                wait: Some(self.config.stop_timeout),
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

    /// Authenticates over TCP, `PING`s and reads the version from `INFO server`.
    pub async fn probe(&self) -> Result<ProbeInfo, ProbeError> {
        let c = &self.config;
        let info = ConnectionAddr::Tcp(c.bind.to_string(), c.db_port)
            .into_connection_info()?
            .set_redis_settings(
                RedisConnectionInfo::default()
                    .set_username(&c.username)
                    .set_password(c.password.expose())
                    .set_skip_set_lib_name(),
            );
        let timeouts = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(c.probe_timeout))
            .set_response_timeout(Some(c.probe_timeout));
        let mut con = Client::open(info)?
            .get_multiplexed_async_connection_with_config(&timeouts)
            .await?;
        let pong: String = redis::cmd("PING").query_async(&mut con).await?;
        if pong != "PONG" {
            return Err(ProbeError::Unexpected(format!("PING answered {pong:?}")));
        }
        let server: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut con)
            .await?;
        let version = server
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| ProbeError::Unexpected("INFO server has no redis_version".into()))?;
        Ok(ProbeInfo { version })
    }
}

/// A string argument of `redis.conf`, quoted and escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// The authentication lines: the built-in `default` user's password, or a
/// named superuser with `default` disabled.
fn auth_lines(c: &Config) -> Vec<String> {
    let pw = c.password.expose();
    if c.username == DEFAULT_USER {
        vec![format!("requirepass {}", quote(pw))]
    } else {
        vec![
            "user default off".into(),
            format!(
                "user {} on {} ~* &* +@all",
                quote(&c.username),
                quote(&format!(">{pw}"))
            ),
        ]
    }
}

/// `redis.conf` for the settings; `dir` is Redis's working directory.
pub fn render(c: &Config, dir: &Path) -> String {
    let replication = match c.replication {
        Replication::Standalone => "# replication: none (standalone)",
    };
    let mut lines = vec![
        "# Managed by ringmaster: rewritten at every start of the instance agent. Do not edit."
            .to_string(),
        format!("bind {}", c.bind),
        format!("port {}", c.db_port),
        "protected-mode yes".into(),
        "daemonize no".into(),
        "supervised no".into(),
        "# logs: stdout, collected with the container's".into(),
        "logfile \"\"".into(),
        "loglevel notice".into(),
        format!("dir {}", quote(&dir.to_string_lossy())),
        "dbfilename dump.rdb".into(),
        "appendonly yes".into(),
        "appendfsync everysec".into(),
        "save 3600 1 300 100 60 10000".into(),
        format!(
            "unixsocket {}",
            quote(&c.run_dir.join("redis.sock").to_string_lossy())
        ),
        "unixsocketperm 700".into(),
        "tcp-keepalive 300".into(),
        replication.into(),
    ];
    lines.extend(auth_lines(c));
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::config::{EngineKind, test_config};

    #[test]
    fn conf_follows_the_config() {
        let c = test_config(EngineKind::Redis);
        let text = render(&c, Path::new("/data/redis"));
        for line in [
            "bind 127.0.50.7",
            "port 6379",
            "dir \"/data/redis\"",
            "appendonly yes",
            "appendfsync everysec",
            "daemonize no",
            "logfile \"\"",
            "unixsocket \"/tmp/run/redis.sock\"",
            "unixsocketperm 700",
            "requirepass \"test-password\"",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("user default off"));
    }

    #[test]
    fn named_user_gets_an_acl_and_default_is_off() {
        let mut c = test_config(EngineKind::Redis);
        c.username = "admin".into();
        let text = render(&c, Path::new("/d"));
        assert!(text.contains("user default off\n"), "{text}");
        assert!(
            text.contains("user \"admin\" on \">test-password\" ~* &* +@all\n"),
            "{text}"
        );
        assert!(!text.contains("requirepass"));
    }

    #[test]
    fn quoting_escapes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny"), r#""x\x0ay""#);
    }
}
