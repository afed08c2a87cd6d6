//! `INFO replication`, parsed: the server's role and its [`ReplicationReport`].

use crate::api::agent::{ConnectedReplica, ReplicationReport};
use crate::instance::config::Role;
use crate::instance::error::ProbeError;

/// `master_failover_state` when no `FAILOVER` is under way.
pub const NO_FAILOVER: &str = "no-failover";

/// The `key:value` fields of an `INFO` answer, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    fields: Vec<(String, String)>,
}

impl Info {
    /// Parses `INFO` text: `# Section` headers and blank lines are skipped, every
    /// other line is `key:value` (the value may contain `:`).
    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self { fields }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a number.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.get(key)?.parse().ok()
    }

    /// The role: `master` is primary, `slave` a replica.
    pub fn role(&self) -> Result<Role, ProbeError> {
        match self.get("role") {
            Some("master") => Ok(Role::Primary),
            Some("slave") => Ok(Role::Replica),
            other => Err(ProbeError::Unexpected(format!(
                "INFO replication has role {other:?}"
            ))),
        }
    }

    /// A replica's `master_host:master_port`.
    pub fn upstream(&self) -> Option<String> {
        Some(format!(
            "{}:{}",
            self.get("master_host")?,
            self.get("master_port")?
        ))
    }

    /// `master_failover_state` (`no-failover` when absent, as before Redis 6.2).
    pub fn failover_state(&self) -> &str {
        self.get("master_failover_state").unwrap_or(NO_FAILOVER)
    }

    /// A primary's replicas, from the `slaveN` fields.
    pub fn replicas(&self) -> Vec<ConnectedReplica> {
        self.fields
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix("slave")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter_map(|(_, v)| parse_replica(v))
            .collect()
    }

    /// What `GET /status` reports about replication.
    pub fn report(&self) -> Result<ReplicationReport, ProbeError> {
        let id = self.get("master_replid").map(str::to_string);
        Ok(match self.role()? {
            Role::Primary => ReplicationReport {
                replication_id: id,
                position: self.number("master_repl_offset").unwrap_or(0),
                replicas: self.replicas(),
                ..Default::default()
            },
            Role::Replica => {
                let position = self
                    .number("slave_repl_offset")
                    .or_else(|| self.number("master_repl_offset"))
                    .unwrap_or(0);
                ReplicationReport {
                    replication_id: id,
                    position,
                    received: Some(position),
                    replayed: Some(position),
                    upstream: self.upstream(),
                    streaming: self.streaming(),
                    lag_seconds: self.last_io_seconds(),
                    ..Default::default()
                }
            }
        })
    }

    /// A replica's link to its primary is up and not in a full sync.
    pub fn streaming(&self) -> bool {
        self.get("master_link_status") == Some("up")
            && self.get("master_sync_in_progress") == Some("0")
    }

    /// `master_last_io_seconds_ago`; none while the link is down (`-1`).
    fn last_io_seconds(&self) -> Option<f64> {
        self.number::<i64>("master_last_io_seconds_ago")
            .filter(|s| *s >= 0)
            .map(|s| s as f64)
    }
}

/// One `slaveN` value: `ip=10.0.0.5,port=6379,state=online,offset=123,lag=0`.
fn parse_replica(value: &str) -> Option<ConnectedReplica> {
    let field = |name: &str| {
        value
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    Some(ConnectedReplica {
        name: format!("{}:{}", field("ip")?, field("port")?),
        state: field("state")?.to_string(),
        position: field("offset")?.parse().ok()?,
        sync: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Redis 7.0.15.
    const PRIMARY: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.61.202,port=7002,state=online,offset=217,lag=0\r\n\
        slave1:ip=127.0.61.203,port=7003,state=wait_bgsave,offset=0,lag=1\r\n\
        master_failover_state:waiting-for-sync\r\n\
        master_replid:1bf6a8e074d9cb6717a326dd35f85b375e54f4b5\r\n\
        master_replid2:0000000000000000000000000000000000000000\r\n\
        master_repl_offset:217\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\n\
        repl_backlog_size:1048576\r\nrepl_backlog_first_byte_offset:1\r\n\
        repl_backlog_histlen:217\r\n";

    /// Captured from Redis 7.0.15.
    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.61.201\r\n\
        master_port:7001\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:1\r\n\
        master_sync_in_progress:0\r\nslave_read_repl_offset:78\r\nslave_repl_offset:78\r\n\
        slave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\n\
        connected_slaves:0\r\nmaster_failover_state:no-failover\r\n\
        master_replid:1bf6a8e074d9cb6717a326dd35f85b375e54f4b5\r\n\
        master_replid2:0000000000000000000000000000000000000000\r\n\
        master_repl_offset:78\r\nsecond_repl_offset:-1\r\n";

    #[test]
    fn primary_report() {
        let info = Info::parse(PRIMARY);
        assert_eq!(info.role().unwrap(), Role::Primary);
        assert_eq!(info.failover_state(), "waiting-for-sync");
        let r = info.report().unwrap();
        assert_eq!(
            r.replication_id.as_deref(),
            Some("1bf6a8e074d9cb6717a326dd35f85b375e54f4b5")
        );
        assert_eq!(r.position, 217);
        assert_eq!(r.received, None);
        assert!(!r.streaming);
        assert_eq!(
            r.replicas,
            vec![
                ConnectedReplica {
                    name: "127.0.61.202:7002".into(),
                    state: "online".into(),
                    position: 217,
                    sync: false,
                },
                ConnectedReplica {
                    name: "127.0.61.203:7003".into(),
                    state: "wait_bgsave".into(),
                    position: 0,
                    sync: false,
                },
            ]
        );
    }

    #[test]
    fn replica_report() {
        let info = Info::parse(REPLICA);
        assert_eq!(info.role().unwrap(), Role::Replica);
        assert_eq!(info.failover_state(), NO_FAILOVER);
        let r = info.report().unwrap();
        assert_eq!(r.position, 78);
        assert_eq!(r.received, Some(78));
        assert_eq!(r.replayed, Some(78));
        assert_eq!(r.upstream.as_deref(), Some("127.0.61.201:7001"));
        assert!(r.streaming);
        assert_eq!(r.lag_seconds, Some(1.0));
        assert!(r.replicas.is_empty());
    }

    #[test]
    fn replica_with_a_broken_link() {
        let text = REPLICA
            .replace("master_link_status:up", "master_link_status:down")
            .replace(
                "master_last_io_seconds_ago:1",
                "master_last_io_seconds_ago:-1",
            );
        let r = Info::parse(&text).report().unwrap();
        assert!(!r.streaming);
        assert_eq!(r.lag_seconds, None);
        let syncing = REPLICA.replace("master_sync_in_progress:0", "master_sync_in_progress:1");
        assert!(!Info::parse(&syncing).report().unwrap().streaming);
        // no slave_repl_offset: the replication offset stands in
        let bare = REPLICA.replace("slave_repl_offset:78", "");
        assert_eq!(Info::parse(&bare).report().unwrap().received, Some(78));
    }

    #[test]
    fn odd_answers() {
        assert!(Info::parse("# Replication\r\n").role().is_err());
        assert!(Info::parse("role:sentinel").report().is_err());
        let info = Info::parse("slave0:garbage\nslaves:1\nrole:master\nmaster_replid:a:b\n");
        assert!(info.replicas().is_empty());
        assert_eq!(info.get("master_replid"), Some("a:b"));
        assert_eq!(info.report().unwrap().position, 0);
    }
}
