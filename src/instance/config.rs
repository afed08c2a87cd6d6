//! The agent's settings: flags over environment over defaults, validated once.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[cfg(test)]
use super::args::Flags;
use clap::ValueEnum;

use super::args::InstanceArgs;
use super::error::InstanceError;
use super::secret::Secret;
pub use crate::api::Engine as EngineKind;
pub use crate::api::ReplicationMode;
pub use crate::api::shard::Role;
use crate::runtime::telemetry::LogFormat;

/// Default data directory (on the PVC).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ringmaster/data";
/// Default run directory (an emptyDir).
pub const DEFAULT_RUN_DIR: &str = "/run/ringmaster";
/// Default name of the replication user.
pub const DEFAULT_REPLICATION_USER: &str = "ringmaster_replication";
/// Default port of the agent's HTTP API.
pub const DEFAULT_AGENT_PORT: u16 = 8000;

/// The validated settings of the agent.
#[derive(Debug, Clone)]
pub struct Config {
    /// Engine of the server.
    pub engine: EngineKind,
    /// Role at creation (`RINGMASTER_ROLE`): the desired role until the operator
    /// sends one (see [`super::role`]).
    pub role: Role,
    /// Epoch of the environment's role (`RINGMASTER_EPOCH`, default 0).
    pub epoch: u64,
    /// Replication mode of the shard (`RINGMASTER_REPLICATION_MODE`, default async).
    pub replication_mode: ReplicationMode,
    /// Seconds a crashed primary is held down (`RINGMASTER_HOLD_CRASHED_PRIMARY`,
    /// default 0).
    pub hold_crashed_primary_seconds: u64,
    /// Cluster name, when known.
    pub cluster: Option<String>,
    /// Shard index, when known.
    pub shard: Option<String>,
    /// Data directory (persistent).
    pub data_dir: PathBuf,
    /// Run directory (sockets, temporary files).
    pub run_dir: PathBuf,
    /// Database superuser.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// Bearer token of `/status`.
    pub agent_token: Secret,
    /// Name of the replication user (PostgreSQL role with REPLICATION; Redis ACL user
    /// allowed `PSYNC`, `REPLCONF` and `PING`).
    pub replication_username: String,
    /// Its password (`RINGMASTER_REPLICATION_PASSWORD`; the superuser's password when
    /// unset, for instances created before replication users existed).
    pub replication_password: Secret,
    /// Pod name.
    pub pod_name: String,
    /// Address the server and the agent listen on.
    pub bind: IpAddr,
    /// Port of the server.
    pub db_port: u16,
    /// Port of the HTTP API.
    pub agent_port: u16,
    /// Grace given to the server to stop cleanly.
    pub stop_timeout: Duration,
    /// Deadline of one probe.
    pub probe_timeout: Duration,
    /// Quick crashes in a row after which the agent gives up.
    pub max_restarts: u32,
    /// Log filter directives.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
}

/// Where settings come from besides flags: the environment, or a map in tests.
pub trait Env {
    /// The value of variable `name`, when set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.is_empty())
    }
}

/// Resolves one setting: its flag, else its variable.
struct Resolver<'a> {
    env: &'a dyn Env,
}

impl Resolver<'_> {
    fn get(&self, flag: &Option<String>, var: &'static str) -> Option<(String, &'static str)> {
        flag.clone()
            .filter(|v| !v.is_empty())
            .or_else(|| self.env.var(var))
            .map(|v| (v, var))
    }

    fn required(&self, flag: &Option<String>, var: &'static str) -> Result<String, InstanceError> {
        self.get(flag, var)
            .map(|(v, _)| v)
            .ok_or(InstanceError::MissingSetting { var })
    }

    fn parsed<T: FromStr>(
        &self,
        flag: &Option<String>,
        var: &'static str,
    ) -> Result<Option<T>, InstanceError>
    where
        T::Err: fmt::Display,
    {
        self.get(flag, var)
            .map(|(v, var)| {
                v.trim()
                    .parse::<T>()
                    .map_err(|e| InstanceError::InvalidSetting {
                        var,
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }

    fn seconds(
        &self,
        flag: &Option<String>,
        var: &'static str,
        default: f64,
    ) -> Result<Duration, InstanceError> {
        let secs = self.parsed::<f64>(flag, var)?.unwrap_or(default);
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or(InstanceError::InvalidSetting {
                var,
                reason: "expected a positive number of seconds".into(),
            })
    }
}

/// Parses a secret variable (environment only).
fn secret(env: &dyn Env, var: &'static str) -> Result<Secret, InstanceError> {
    env.var(var)
        .map(Secret::new)
        .ok_or(InstanceError::MissingSetting { var })
}

impl Config {
    /// Builds the settings from flags over `env`, failing on the first missing
    /// or invalid one with a message naming its variable.
    pub fn resolve(args: &InstanceArgs, env: &dyn Env) -> Result<Self, InstanceError> {
        let args = &args.flags;
        let r = Resolver { env };
        let engine: EngineKind =
            r.parsed(&args.engine, "RINGMASTER_ENGINE")?
                .ok_or(InstanceError::MissingSetting {
                    var: "RINGMASTER_ENGINE",
                })?;
        let role: Role =
            r.parsed(&args.role, "RINGMASTER_ROLE")?
                .ok_or(InstanceError::MissingSetting {
                    var: "RINGMASTER_ROLE",
                })?;
        let username = r.required(&args.username, "RINGMASTER_USERNAME")?;
        let password = secret(env, "RINGMASTER_PASSWORD")?;
        let agent_token = secret(env, "RINGMASTER_AGENT_TOKEN")?;
        let replication_password =
            secret(env, "RINGMASTER_REPLICATION_PASSWORD").unwrap_or_else(|_| password.clone());
        let pod_ip: Option<IpAddr> = r.parsed(&args.pod_ip, "POD_IP")?;
        let bind = r
            .parsed(&args.bind, "RINGMASTER_BIND")?
            .or(pod_ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        Ok(Self {
            engine,
            role,
            epoch: r.parsed(&None, "RINGMASTER_EPOCH")?.unwrap_or(0),
            replication_mode: r
                .get(&None, "RINGMASTER_REPLICATION_MODE")
                .map(|(v, var)| parse_mode(&v, var))
                .transpose()?
                .unwrap_or_default(),
            hold_crashed_primary_seconds: r
                .parsed(&None, "RINGMASTER_HOLD_CRASHED_PRIMARY")?
                .unwrap_or(0),
            cluster: r.get(&args.cluster, "RINGMASTER_CLUSTER").map(|(v, _)| v),
            shard: r.get(&args.shard, "RINGMASTER_SHARD").map(|(v, _)| v),
            data_dir: r
                .get(&args.data_dir, "RINGMASTER_DATA_DIR")
                .map_or_else(|| DEFAULT_DATA_DIR.into(), |(v, _)| v.into()),
            run_dir: r
                .get(&args.run_dir, "RINGMASTER_RUN_DIR")
                .map_or_else(|| DEFAULT_RUN_DIR.into(), |(v, _)| v.into()),
            username,
            password,
            agent_token,
            replication_username: r
                .get(&None, "RINGMASTER_REPLICATION_USERNAME")
                .map_or_else(|| DEFAULT_REPLICATION_USER.into(), |(v, _)| v),
            replication_password,
            pod_name: r
                .get(&args.pod_name, "POD_NAME")
                .map(|(v, _)| v)
                .unwrap_or_else(host_name),
            bind,
            db_port: r
                .parsed(&args.db_port, "RINGMASTER_DB_PORT")?
                .unwrap_or(engine.default_port()),
            agent_port: r
                .parsed(&args.agent_port, "RINGMASTER_AGENT_PORT")?
                .unwrap_or(DEFAULT_AGENT_PORT),
            stop_timeout: r.seconds(&args.stop_timeout, "RINGMASTER_STOP_TIMEOUT", 20.0)?,
            probe_timeout: r.seconds(&args.probe_timeout, "RINGMASTER_PROBE_TIMEOUT", 2.0)?,
            max_restarts: r
                .parsed(&args.max_restarts, "RINGMASTER_MAX_RESTARTS")?
                .unwrap_or(5),
            log_level: r
                .get(&args.log_level, "RINGMASTER_LOG_LEVEL")
                .map_or_else(|| "info".into(), |(v, _)| v),
            log_format: r
                .get(&args.log_format, "RINGMASTER_LOG_FORMAT")
                .map(|(v, var)| {
                    LogFormat::from_str(&v, true)
                        .map_err(|reason| InstanceError::InvalidSetting { var, reason })
                })
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// Parses `async` or `sync`.
fn parse_mode(value: &str, var: &'static str) -> Result<ReplicationMode, InstanceError> {
    match value.trim() {
        "async" => Ok(ReplicationMode::Async),
        "sync" => Ok(ReplicationMode::Sync),
        _ => Err(InstanceError::InvalidSetting {
            var,
            reason: "expected `async` or `sync`".into(),
        }),
    }
}

/// Settings for unit tests: bind 127.0.50.7, run dir `/tmp/run`, data dir `/tmp/data`.
#[cfg(test)]
pub fn test_config(engine: EngineKind) -> Config {
    let env = |k: &str| -> Option<String> {
        Some(
            match k {
                "RINGMASTER_ENGINE" => engine.as_str(),
                "RINGMASTER_ROLE" => "primary",
                "RINGMASTER_USERNAME" => match engine {
                    EngineKind::Redis => "default",
                    EngineKind::Postgres => "postgres",
                },
                "RINGMASTER_PASSWORD" => "test-password",
                "RINGMASTER_AGENT_TOKEN" => "test-token",
                "RINGMASTER_DATA_DIR" => "/tmp/data",
                "RINGMASTER_RUN_DIR" => "/tmp/run",
                "POD_IP" => "127.0.50.7",
                "POD_NAME" => "c-0-0",
                _ => return None,
            }
            .to_string(),
        )
    };
    Config::resolve(&InstanceArgs::default(), &env).expect("test settings are valid")
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("RINGMASTER_ENGINE", "postgres"),
        ("RINGMASTER_ROLE", "primary"),
        ("RINGMASTER_USERNAME", "postgres"),
        ("RINGMASTER_PASSWORD", "pw"),
        ("RINGMASTER_AGENT_TOKEN", "tok"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        BASE.iter().chain(extra).copied().collect()
    }

    #[test]
    fn defaults_from_the_contract() {
        let c = Config::resolve(&InstanceArgs::default(), &env(BASE)).unwrap();
        assert_eq!(c.engine, EngineKind::Postgres);
        assert_eq!(c.role, Role::Primary);
        assert_eq!(c.db_port, 5432);
        assert_eq!(c.agent_port, 8000);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/ringmaster/data"));
        assert_eq!(c.run_dir, PathBuf::from("/run/ringmaster"));
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.stop_timeout, Duration::from_secs(20));
        assert_eq!(c.probe_timeout, Duration::from_secs(2));
        assert_eq!(c.password.expose(), "pw");
        assert_eq!(c.agent_token.expose(), "tok");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.epoch, 0);
        assert_eq!(c.replication_mode, ReplicationMode::Async);
        assert_eq!(c.hold_crashed_primary_seconds, 0);
        assert_eq!(c.replication_username, "ringmaster_replication");
        assert_eq!(c.replication_password.expose(), "pw");
    }

    #[test]
    fn replication_settings() {
        let e = with(&[
            ("RINGMASTER_EPOCH", "7"),
            ("RINGMASTER_REPLICATION_MODE", "sync"),
            ("RINGMASTER_HOLD_CRASHED_PRIMARY", "35"),
            ("RINGMASTER_REPLICATION_USERNAME", "repl"),
            ("RINGMASTER_REPLICATION_PASSWORD", "rpw"),
        ]);
        let c = Config::resolve(&InstanceArgs::default(), &env(&e)).unwrap();
        assert_eq!(c.epoch, 7);
        assert_eq!(c.replication_mode, ReplicationMode::Sync);
        assert_eq!(c.hold_crashed_primary_seconds, 35);
        assert_eq!(c.replication_username, "repl");
        assert_eq!(c.replication_password.expose(), "rpw");
    }

    #[test]
    fn redis_port_and_pod_ip_bind() {
        let e = with(&[
            ("RINGMASTER_ENGINE", "redis"),
            ("POD_IP", "127.0.50.9"),
            ("POD_NAME", "c-0-1"),
            ("RINGMASTER_CLUSTER", "c"),
            ("RINGMASTER_SHARD", "0"),
        ]);
        // later entries win in the map: the engine is redis
        let c = Config::resolve(&InstanceArgs::default(), &env(&e)).unwrap();
        assert_eq!(c.engine, EngineKind::Redis);
        assert_eq!(c.db_port, 6379);
        assert_eq!(c.bind, "127.0.50.9".parse::<IpAddr>().unwrap());
        assert_eq!(c.pod_name, "c-0-1");
        assert_eq!(c.cluster.as_deref(), Some("c"));
        assert_eq!(c.shard.as_deref(), Some("0"));
    }

    #[test]
    fn flags_override_env() {
        let e = with(&[("POD_IP", "127.0.50.9"), ("RINGMASTER_DB_PORT", "1")]);
        let flags = Flags {
            engine: Some("redis".into()),
            role: Some("replica".into()),
            bind: Some("127.0.0.2".into()),
            db_port: Some("7000".into()),
            agent_port: Some("8001".into()),
            data_dir: Some("/d".into()),
            stop_timeout: Some("1.5".into()),
            ..Default::default()
        };
        let args = InstanceArgs {
            flags: Box::new(flags),
        };
        let c = Config::resolve(&args, &env(&e)).unwrap();
        assert_eq!(c.engine, EngineKind::Redis);
        assert_eq!(c.role, Role::Replica);
        assert_eq!(c.bind, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(c.db_port, 7000);
        assert_eq!(c.agent_port, 8001);
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.stop_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn missing_settings_name_their_variable() {
        for var in [
            "RINGMASTER_ENGINE",
            "RINGMASTER_ROLE",
            "RINGMASTER_USERNAME",
            "RINGMASTER_PASSWORD",
            "RINGMASTER_AGENT_TOKEN",
        ] {
            let e: Vec<_> = BASE.iter().filter(|(k, _)| *k != var).copied().collect();
            let err = Config::resolve(&InstanceArgs::default(), &env(&e)).unwrap_err();
            assert!(err.to_string().contains(var), "{err}");
        }
        // an empty value counts as missing
        let e = with(&[("RINGMASTER_PASSWORD", "")]);
        let err = Config::resolve(&InstanceArgs::default(), &env(&e)).unwrap_err();
        assert!(err.to_string().contains("RINGMASTER_PASSWORD"), "{err}");
    }

    #[test]
    fn invalid_settings_name_their_variable() {
        for (var, value) in [
            ("RINGMASTER_ENGINE", "mysql"),
            ("RINGMASTER_ROLE", "leader"),
            ("POD_IP", "not-an-ip"),
            ("RINGMASTER_DB_PORT", "70000"),
            ("RINGMASTER_STOP_TIMEOUT", "-1"),
            ("RINGMASTER_PROBE_TIMEOUT", "0"),
            ("RINGMASTER_LOG_FORMAT", "xml"),
            ("RINGMASTER_EPOCH", "-1"),
            ("RINGMASTER_REPLICATION_MODE", "quorum"),
            ("RINGMASTER_HOLD_CRASHED_PRIMARY", "soon"),
        ] {
            let e = with(&[(var, value)]);
            let err = Config::resolve(&InstanceArgs::default(), &env(&e)).unwrap_err();
            assert!(err.to_string().contains(var), "{var}: {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let e = with(&[
            ("RINGMASTER_PASSWORD", "s3cr3t-pw"),
            ("RINGMASTER_AGENT_TOKEN", "s3cr3t-tok"),
        ]);
        let c = Config::resolve(&InstanceArgs::default(), &env(&e)).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
    }
}
