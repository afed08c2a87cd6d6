//! `redis.conf`: the server's settings for the desired role, and the subset of them
//! that a running server takes with `CONFIG SET`.

use std::fmt::Write as _;
use std::path::Path;

use crate::api::ReplicationMode;
use crate::instance::config::Config;
use crate::instance::role::{DesiredRole, DesiredState, Upstream};

/// Redis's built-in superuser.
pub const DEFAULT_USER: &str = "default";
/// Seconds without an acknowledgement after which a replica stops counting
/// towards `min-replicas-to-write` (`sync` mode).
pub const MIN_REPLICAS_MAX_LAG: u32 = 10;
/// `min-replicas-to-write` of a server that must not take writes (a replica without
/// an upstream yet, a fenced instance): more replicas than can ever connect.
pub const WRITES_FENCED: &str = "2147483647";

/// One setting that a running server also takes with `CONFIG SET`. No `Debug`:
/// values include `masterauth`.
pub struct Setting {
    /// The directive (and `CONFIG SET` parameter).
    pub name: &'static str,
    /// Its value, unquoted.
    pub value: String,
}

impl Setting {
    fn new(name: &'static str, value: impl Into<String>) -> Self {
        Self {
            name,
            value: value.into(),
        }
    }
}

/// A string argument of `redis.conf`, quoted and escaped.
pub fn quote(s: &str) -> String {
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

/// A value as `redis.conf` needs it: bare when it is a plain word, else quoted.
fn conf_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain { v.to_string() } else { quote(v) }
}

/// The authentication lines: the built-in `default` user's password (or a named
/// superuser with `default` disabled), and the replication user, allowed only what
/// a replica sends its primary.
fn auth_lines(c: &Config) -> Vec<String> {
    let pw = c.password.expose();
    let mut lines = if c.username == DEFAULT_USER {
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
    };
    // the superuser may replicate too: a same-named replication user adds nothing
    if c.replication_username != c.username {
        lines.push(format!(
            "user {} on {} +psync +replconf +ping",
            quote(&c.replication_username),
            quote(&format!(">{}", c.replication_password.expose()))
        ));
    }
    lines
}

/// The upstream a server in `desired` follows, if any. A fenced instance follows
/// the primary-to-be when it is known, should its server ever be started.
pub fn upstream(desired: &DesiredState) -> Option<&Upstream> {
    match desired.role {
        DesiredRole::Primary => None,
        DesiredRole::Replica | DesiredRole::Fenced => desired.upstream.as_ref(),
    }
}

/// `min-replicas-to-write` for `desired`: 1 for a `sync` primary, 0 for an `async`
/// one and for a replica, and "never" for a server that should follow someone but
/// has no upstream yet (it runs as a master and must not take writes).
fn min_replicas_to_write(desired: &DesiredState) -> &'static str {
    match (desired.role, upstream(desired), desired.mode) {
        (DesiredRole::Primary, _, ReplicationMode::Sync) => "1",
        (DesiredRole::Primary, _, ReplicationMode::Async) => "0",
        (_, Some(_), _) => "0",
        (_, None, _) => WRITES_FENCED,
    }
}

/// The replication settings for `desired`, all of them changeable at run time.
///
/// Every role gets the replica-side settings: a primary that hands over with
/// `FAILOVER` becomes a replica of the target with the settings it runs with.
/// `repl-ping-replica-period` must stay below `repl-timeout`, or an idle link times
/// out.
pub fn replication_settings(c: &Config, desired: &DesiredState) -> Vec<Setting> {
    let mut settings = vec![
        Setting::new("repl-diskless-sync", "yes"),
        Setting::new("repl-diskless-sync-delay", "0"),
        Setting::new("repl-timeout", "5"),
        Setting::new("repl-ping-replica-period", "1"),
        Setting::new("replica-read-only", "yes"),
        Setting::new("replica-serve-stale-data", "yes"),
        Setting::new("masteruser", c.replication_username.clone()),
        Setting::new("masterauth", c.replication_password.expose()),
        Setting::new("min-replicas-to-write", min_replicas_to_write(desired)),
        Setting::new("min-replicas-max-lag", MIN_REPLICAS_MAX_LAG.to_string()),
    ];
    // the primary lists (and `FAILOVER TO` matches) replicas by the address they
    // announce, not by the source address of their connection
    if !c.bind.is_unspecified() {
        settings.push(Setting::new("replica-announce-ip", c.bind.to_string()));
    }
    settings
}

/// The lines that decide the role: `replicaof` or why there is none.
fn role_lines(desired: &DesiredState) -> Vec<String> {
    match (desired.role, upstream(desired)) {
        (DesiredRole::Primary, _) => vec![format!("# role: primary ({:?})", desired.mode)],
        (_, Some(up)) => vec![
            format!("# role: replica of {}", up.name),
            format!("replicaof {} {}", conf_value(&up.host), up.port),
        ],
        (_, None) => vec!["# role: replica without an upstream yet: writes are refused".into()],
    }
}

/// `redis.conf` for the settings and the desired role; `dir` is Redis's working
/// directory.
pub fn render(c: &Config, dir: &Path, desired: &DesiredState) -> String {
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
    ];
    lines.extend(role_lines(desired));
    lines.extend(
        replication_settings(c, desired)
            .iter()
            .map(|s| format!("{} {}", s.name, conf_value(&s.value))),
    );
    lines.extend(auth_lines(c));
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::config::{EngineKind, test_config};
    use crate::instance::role::StopMode;

    fn desired(
        role: DesiredRole,
        mode: ReplicationMode,
        upstream: Option<Upstream>,
    ) -> DesiredState {
        DesiredState {
            epoch: 1,
            role,
            upstream,
            replicas: vec![],
            mode,
            stop: StopMode::Clean,
            hold_crashed_primary_seconds: 0,
            last_server_role: None,
        }
    }

    fn primary(mode: ReplicationMode) -> DesiredState {
        desired(DesiredRole::Primary, mode, None)
    }

    fn up() -> Upstream {
        Upstream {
            name: "c-0-1".into(),
            host: "127.0.50.9".into(),
            port: 6380,
        }
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn conf_follows_the_config() {
        let c = test_config(EngineKind::Redis);
        let text = render(
            &c,
            Path::new("/data/redis"),
            &primary(ReplicationMode::Async),
        );
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
            "user \"ringmaster_replication\" on \">test-password\" +psync +replconf +ping",
        ] {
            assert!(has(&text, line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("user default off"));
    }

    #[test]
    fn named_user_gets_an_acl_and_default_is_off() {
        let mut c = test_config(EngineKind::Redis);
        c.username = "admin".into();
        let text = render(&c, Path::new("/d"), &primary(ReplicationMode::Async));
        assert!(text.contains("user default off\n"), "{text}");
        assert!(
            text.contains("user \"admin\" on \">test-password\" ~* &* +@all\n"),
            "{text}"
        );
        assert!(
            text.contains("user \"ringmaster_replication\" on"),
            "{text}"
        );
        assert!(!text.contains("requirepass"));
    }

    #[test]
    fn every_role_can_follow_and_replicate_fast() {
        let c = test_config(EngineKind::Redis);
        for d in [
            primary(ReplicationMode::Sync),
            desired(DesiredRole::Replica, ReplicationMode::Async, Some(up())),
        ] {
            let text = render(&c, Path::new("/d"), &d);
            for line in [
                "masteruser ringmaster_replication",
                "masterauth test-password",
                "replica-read-only yes",
                "replica-serve-stale-data yes",
                "repl-timeout 5",
                "repl-ping-replica-period 1",
                "repl-diskless-sync yes",
                "repl-diskless-sync-delay 0",
                "replica-announce-ip 127.0.50.7",
                "min-replicas-max-lag 10",
            ] {
                assert!(has(&text, line), "missing {line:?} in\n{text}");
            }
        }
    }

    #[test]
    fn primary_modes() {
        let c = test_config(EngineKind::Redis);
        let sync = render(&c, Path::new("/d"), &primary(ReplicationMode::Sync));
        assert!(has(&sync, "min-replicas-to-write 1"), "{sync}");
        assert!(!sync.contains("replicaof"), "{sync}");
        let not_sync = render(&c, Path::new("/d"), &primary(ReplicationMode::Async));
        assert!(has(&not_sync, "min-replicas-to-write 0"), "{not_sync}");
    }

    #[test]
    fn replica_follows_its_upstream() {
        let c = test_config(EngineKind::Redis);
        let d = desired(DesiredRole::Replica, ReplicationMode::Sync, Some(up()));
        let text = render(&c, Path::new("/d"), &d);
        assert!(has(&text, "replicaof 127.0.50.9 6380"), "{text}");
        assert!(has(&text, "min-replicas-to-write 0"), "{text}");
        let fenced = desired(DesiredRole::Fenced, ReplicationMode::Async, Some(up()));
        let text = render(&c, Path::new("/d"), &fenced);
        assert!(has(&text, "replicaof 127.0.50.9 6380"), "{text}");
    }

    #[test]
    fn replica_without_upstream_refuses_writes() {
        let c = test_config(EngineKind::Redis);
        for role in [DesiredRole::Replica, DesiredRole::Fenced] {
            let text = render(
                &c,
                Path::new("/d"),
                &desired(role, ReplicationMode::Async, None),
            );
            assert!(!text.contains("replicaof"), "{text}");
            assert!(
                has(&text, &format!("min-replicas-to-write {WRITES_FENCED}")),
                "{text}"
            );
        }
    }

    #[test]
    fn secrets_are_quoted_when_needed() {
        let mut c = test_config(EngineKind::Redis);
        c.replication_password = crate::instance::secret::Secret::new("a b\"c");
        c.replication_username = "admin".into();
        c.username = "admin".into();
        let text = render(&c, Path::new("/d"), &primary(ReplicationMode::Async));
        assert!(has(&text, r#"masterauth "a b\"c""#), "{text}");
        assert_eq!(text.matches("user \"admin\"").count(), 1, "{text}");
    }

    #[test]
    fn quoting_escapes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny"), r#""x\x0ay""#);
        assert_eq!(conf_value("10"), "10");
        assert_eq!(conf_value(""), "\"\"");
    }
}
