//! What a PostgreSQL server does for replication, over SQL: the replication role,
//! physical slots, promotion, and the [`ReplicationReport`].

use std::collections::BTreeSet;

use postgres_protocol::password::scram_sha_256;

use super::sql::{Session, ident, literal};
use crate::api::agent::{ConnectedReplica, ReplicationReport, parse_lsn, slot_name};
use crate::instance::config::Config;
use crate::instance::error::ProbeError;

/// The current WAL position's timeline on a primary (`pg_walfile_name` names the
/// segment after the insertion timeline, which changes at promotion at once).
const PRIMARY_POSITION: &str = "SELECT pg_current_wal_lsn()::text, \
     ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint";

const CONNECTED_REPLICAS: &str = "SELECT coalesce(application_name, ''), coalesce(state, ''), \
     coalesce(flush_lsn::text, '0/0'), sync_state IN ('sync', 'quorum') \
     FROM pg_stat_replication ORDER BY application_name";

const STANDBY_POSITION: &str = "SELECT \
     coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text, \
     pg_last_wal_replay_lsn()::text, \
     (SELECT status FROM pg_stat_wal_receiver), \
     (SELECT received_tli::bigint FROM pg_stat_wal_receiver), \
     (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver), \
     extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, \
     (SELECT timeline_id::bigint FROM pg_control_checkpoint())";

/// Whether the server is a standby (`pg_is_in_recovery()`).
pub async fn in_recovery(s: &Session) -> Result<bool, ProbeError> {
    Ok(s.client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .try_get(0)?)
}

/// The timeline a primary writes on.
pub async fn primary_timeline(s: &Session) -> Result<u64, ProbeError> {
    let row = s.client.query_one(PRIMARY_POSITION, &[]).await?;
    Ok(row.try_get::<_, i64>(1)?.unsigned_abs())
}

/// Promotes a standby and waits until it accepts writes.
pub async fn promote(s: &Session) -> Result<(), ProbeError> {
    let promoted: bool = s
        .client
        .query_one("SELECT pg_promote(wait => true, wait_seconds => 60)", &[])
        .await?
        .try_get(0)?;
    if promoted {
        Ok(())
    } else {
        Err(ProbeError::Unexpected(
            "pg_promote did not finish within 60 s".into(),
        ))
    }
}

/// Creates or updates the replication role; its password is sent as a SCRAM
/// verifier computed here, never in plain text.
pub async fn ensure_replication_role(s: &Session, c: &Config) -> Result<(), ProbeError> {
    let exists = s
        .client
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&c.replication_username],
        )
        .await?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let verifier = scram_sha_256(c.replication_password.expose().as_bytes());
    let sql = format!(
        "{verb} ROLE {} WITH REPLICATION LOGIN PASSWORD {}",
        ident(&c.replication_username),
        literal(&verifier)
    );
    s.client.batch_execute(&sql).await?;
    Ok(())
}

/// Slots to create and to drop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SlotChanges {
    /// Listed replicas without a slot.
    pub create: Vec<String>,
    /// Inactive slots of instances no longer listed.
    pub drop: Vec<String>,
}

/// Compares the physical slots `(name, active)` with the replicas' slot names.
pub fn slot_changes(existing: &[(String, bool)], replicas: &[String]) -> SlotChanges {
    let wanted: BTreeSet<String> = replicas.iter().map(|r| slot_name(r)).collect();
    let have: BTreeSet<&str> = existing.iter().map(|(n, _)| n.as_str()).collect();
    SlotChanges {
        create: wanted
            .iter()
            .filter(|w| !have.contains(w.as_str()))
            .cloned()
            .collect(),
        drop: existing
            .iter()
            .filter(|(n, active)| !active && !wanted.contains(n))
            .map(|(n, _)| n.clone())
            .collect(),
    }
}

/// One physical slot per replica; drops inactive slots of instances not listed.
pub async fn sync_slots(s: &Session, replicas: &[String]) -> Result<SlotChanges, ProbeError> {
    let existing: Vec<(String, bool)> = s
        .client
        .query(
            "SELECT slot_name::text, active FROM pg_replication_slots WHERE slot_type = 'physical'",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    let changes = slot_changes(&existing, replicas);
    for name in &changes.create {
        s.client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true)",
                &[name],
            )
            .await?;
    }
    for name in &changes.drop {
        // it may have become active since: not fatal
        if let Err(e) = s
            .client
            .execute("SELECT pg_drop_replication_slot($1)", &[name])
            .await
        {
            tracing::warn!(slot = %name, error = %e, "dropping a replication slot");
        }
    }
    Ok(changes)
}

/// Reloads the configuration files.
pub async fn reload(s: &Session) -> Result<(), ProbeError> {
    s.client.execute("SELECT pg_reload_conf()", &[]).await?;
    Ok(())
}

fn lsn(text: &str) -> Result<u64, ProbeError> {
    parse_lsn(text).ok_or_else(|| ProbeError::Unexpected(format!("not an LSN: {text}")))
}

/// What a primary reports: its position and timeline, and its replicas.
pub async fn primary_report(s: &Session) -> Result<ReplicationReport, ProbeError> {
    let row = s.client.query_one(PRIMARY_POSITION, &[]).await?;
    let replicas = s
        .client
        .query(CONNECTED_REPLICAS, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(ConnectedReplica {
                name: r.try_get(0)?,
                state: r.try_get(1)?,
                position: lsn(r.try_get(2)?)?,
                sync: r.try_get(3)?,
            })
        })
        .collect::<Result<_, ProbeError>>()?;
    Ok(ReplicationReport {
        timeline: Some(row.try_get::<_, i64>(1)?.unsigned_abs()),
        position: lsn(row.try_get(0)?)?,
        replicas,
        ..ReplicationReport::default()
    })
}

/// What a standby reports; `configured` is the upstream it was told to follow
/// (reported while it is not connected).
pub async fn standby_report(
    s: &Session,
    configured: Option<String>,
) -> Result<ReplicationReport, ProbeError> {
    let row = s.client.query_one(STANDBY_POSITION, &[]).await?;
    let received: Option<&str> = row.try_get(0)?;
    let received = received.map(lsn).transpose()?.unwrap_or(0);
    let replayed: Option<&str> = row.try_get(1)?;
    let replayed = replayed.map(lsn).transpose()?.unwrap_or(0);
    let status: Option<String> = row.try_get(2)?;
    let receiver_tli: Option<i64> = row.try_get(3)?;
    let sender: Option<String> = row.try_get(4)?;
    let behind: Option<f64> = row.try_get(5)?;
    let control_tli: Option<i64> = row.try_get(6)?;
    Ok(ReplicationReport {
        timeline: receiver_tli.or(control_tli).map(i64::unsigned_abs),
        position: received,
        received: Some(received),
        replayed: Some(replayed),
        upstream: configured.or(sender),
        streaming: status.as_deref() == Some("streaming"),
        lag_seconds: Some(if received <= replayed {
            0.0
        } else {
            behind.unwrap_or(0.0).max(0.0)
        }),
        ..ReplicationReport::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_replica_list() {
        let existing = vec![
            ("c_0_1".to_string(), true),
            ("c_0_3".to_string(), false),
            ("c_0_4".to_string(), true),
        ];
        let changes = slot_changes(&existing, &["c-0-1".into(), "c-0-2".into()]);
        assert_eq!(
            changes,
            SlotChanges {
                create: vec!["c_0_2".into()],
                drop: vec!["c_0_3".into()],
            }
        );
        assert_eq!(slot_changes(&[], &[]), SlotChanges::default());
    }
}
