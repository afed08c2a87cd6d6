//! Which hash ring is in effect, which migration moves ranges now, which one to
//! create next and which drained Shards to delete (pure).
//!
//! * The ring in effect is `status.ring` (the spec's ring, version 1, for a new
//!   cluster), advanced through every migration from it whose target ring is
//!   committed.
//! * When the spec's shards or weights describe another ring and no migration runs,
//!   a ShardMigration from the ring in effect to the spec's ring (one version up) is
//!   created — once every Shard of both rings is Ready. A migration to that ring that
//!   was rolled back blocks this until the user reverts the spec or deletes it.
//! * A Shard outside the spec, the ring in effect and every running migration that a
//!   migration emptied (drained by a completed one, or the new target of a rolled-back
//!   one) is deleted; any other Shard outside them is reported and left alone.

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::api::routing::RoutingMigration;
use crate::api::shard_migration::{MigrationRouting, ShardMigrationSpec, VerificationMode};
use crate::api::{Shard, ShardMigration, ShardedCluster};
use crate::operator::cluster::status::shard_ready;
use crate::operator::migration::saga::{self, phase};
use crate::operator::names;
use crate::ring::{DEFAULT_VNODES_PER_WEIGHT, RingDescriptor, RingMember};

/// The outcome of planning the ring.
#[derive(Clone, Debug, Default)]
pub struct RingPlan {
    /// The ring in effect.
    pub current: Option<RingDescriptor>,
    /// The running migration's name.
    pub active: Option<String>,
    /// The migration to create.
    pub create: Option<ShardMigration>,
    /// Why the spec's ring is not being moved to: `(reason, message, degraded)`.
    pub waiting: Option<(&'static str, String, bool)>,
    /// Shard indexes that hold or will hold keys (published in the routing table).
    pub keep: BTreeSet<i32>,
    /// Shards a completed migration drained, by name: deleted.
    pub delete: Vec<String>,
    /// Other Shards outside the spec and the rings, by name: reported, never deleted
    /// (they may hold keys written to them directly).
    pub extra: Vec<String>,
    /// Moving ranges for the routing table.
    pub routing: Vec<RoutingMigration>,
}

/// The spec's ring members.
pub fn desired_members(cluster: &ShardedCluster) -> Vec<RingMember> {
    (0..cluster.spec.shards)
        .map(|shard| RingMember {
            shard,
            weight: u32::try_from(cluster.spec.weight(shard)).unwrap_or(1),
        })
        .collect()
}

/// Plans the ring of `cluster` given its Shards and the ShardMigrations of the
/// cluster.
pub fn plan(cluster: &ShardedCluster, shards: &[Shard], migrations: &[ShardMigration]) -> RingPlan {
    let members = desired_members(cluster);
    let previous = cluster.status.as_ref().and_then(|s| s.ring.clone());
    let mut current = previous.unwrap_or_else(|| RingDescriptor {
        version: 1,
        vnodes_per_weight: DEFAULT_VNODES_PER_WEIGHT,
        members: members.clone(),
    });
    current = advance(current, migrations);
    let active = migrations.iter().find(|m| running(m));
    let mut plan = RingPlan {
        active: active.map(ResourceExt::name_any),
        routing: migrations.iter().filter_map(routing_entry).collect(),
        ..RingPlan::default()
    };
    plan.keep = keep(cluster, &current, active);
    let drained = drained(migrations);
    for shard in shards.iter().filter(|s| !plan.keep.contains(&s.spec.index)) {
        if drained.contains(&shard.spec.index) {
            plan.delete.push(shard.name_any());
        } else {
            plan.extra.push(shard.name_any());
        }
    }
    plan.delete.sort();
    plan.extra.sort();
    if current.members != members && active.is_none() {
        next_migration(cluster, shards, migrations, &current, members, &mut plan);
    }
    plan.current = Some(current);
    plan
}

/// `current` moved forward through every committed migration that starts from it.
fn advance(mut current: RingDescriptor, migrations: &[ShardMigration]) -> RingDescriptor {
    while let Some(next) = migrations.iter().find(|m| {
        m.spec.from_ring == current
            && m.status.as_ref().and_then(|s| s.routing) == Some(MigrationRouting::Committed)
    }) {
        current = next.spec.to_ring.clone();
    }
    current
}

/// Shards a migration emptied: those a completed migration moved every range away
/// from, and the new targets of a rolled-back one (its copies were deleted, and they
/// never owned a range).
fn drained(migrations: &[ShardMigration]) -> BTreeSet<i32> {
    let only_in = |ring: &RingDescriptor, other: &RingDescriptor| -> Vec<i32> {
        ring.members
            .iter()
            .map(|m| m.shard)
            .filter(|shard| !other.members.iter().any(|o| o.shard == *shard))
            .collect()
    };
    migrations
        .iter()
        .flat_map(
            |m| match m.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some(phase::COMPLETED) => only_in(&m.spec.from_ring, &m.spec.to_ring),
                Some(phase::ROLLED_BACK) => only_in(&m.spec.to_ring, &m.spec.from_ring),
                _ => Vec::new(),
            },
        )
        .collect()
}

/// Whether a migration has not ended.
pub fn running(migration: &ShardMigration) -> bool {
    let phase = migration.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some(phase::COMPLETED | phase::ROLLED_BACK))
}

/// The routing-table entry of a migration whose moving ranges routers treat
/// specially now.
fn routing_entry(migration: &ShardMigration) -> Option<RoutingMigration> {
    let routing = migration.status.as_ref()?.routing;
    let phase = saga::routing_phase(routing)?;
    Some(RoutingMigration {
        name: migration.name_any(),
        phase,
        moves: saga::moves(migration),
    })
}

fn keep(
    cluster: &ShardedCluster,
    current: &RingDescriptor,
    active: Option<&ShardMigration>,
) -> BTreeSet<i32> {
    let mut keep: BTreeSet<i32> = (0..cluster.spec.shards).collect();
    keep.extend(current.members.iter().map(|m| m.shard));
    if let Some(m) = active {
        keep.extend(m.spec.from_ring.members.iter().map(|m| m.shard));
        keep.extend(m.spec.to_ring.members.iter().map(|m| m.shard));
    }
    keep
}

fn next_migration(
    cluster: &ShardedCluster,
    shards: &[Shard],
    migrations: &[ShardMigration],
    current: &RingDescriptor,
    members: Vec<RingMember>,
    plan: &mut RingPlan,
) {
    let target = RingDescriptor {
        version: current.version + 1,
        vnodes_per_weight: current.vnodes_per_weight,
        members,
    };
    if let Some(rolled_back) = migrations
        .iter()
        .find(|m| m.spec.from_ring == *current && m.spec.to_ring == target)
    {
        plan.waiting = Some((
            "RebalanceRolledBack",
            format!(
                "ShardMigration {} to ring version {} was rolled back, so the ring stays at \
                 version {}; set shards and weights back to match it, or delete the migration \
                 to try again",
                rolled_back.name_any(),
                target.version,
                current.version
            ),
            true,
        ));
        return;
    }
    let cluster_name = cluster.name_any();
    let not_ready: Vec<String> = current
        .members
        .iter()
        .chain(&target.members)
        .map(|m| names::shard_name(&cluster_name, m.shard))
        .filter(|name| {
            !shards
                .iter()
                .any(|s| &s.name_any() == name && shard_ready(s))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !not_ready.is_empty() {
        plan.waiting = Some((
            "WaitingForShards",
            format!(
                "moving to ring version {} once {} Ready",
                target.version,
                crate::operator::conditions::name_list(&not_ready, 5)
            ),
            false,
        ));
        return;
    }
    let taken: BTreeSet<String> = migrations.iter().map(ResourceExt::name_any).collect();
    let base = names::migration_name(&cluster_name, target.version);
    let name = std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|n| !taken.contains(n))
        .unwrap_or(base);
    plan.create = Some(migration(cluster, &name, current.clone(), target));
}

/// The ShardMigration `name` from `from` to `to`, owned by `cluster`.
pub fn migration(
    cluster: &ShardedCluster,
    name: &str,
    from: RingDescriptor,
    to: RingDescriptor,
) -> ShardMigration {
    let cluster_name = cluster.name_any();
    let mut migration = ShardMigration::new(
        name,
        ShardMigrationSpec {
            cluster: cluster_name.clone(),
            from_ring: from,
            to_ring: to,
            batch_size: 500,
            verification: VerificationMode::Sample,
            paused: false,
            rollback: false,
        },
    );
    migration.metadata.namespace = cluster.metadata.namespace.clone();
    migration.metadata.labels = Some(names::cluster_labels(cluster.spec.engine, &cluster_name));
    migration.metadata.owner_references = names::cluster_ref(cluster).map(|r| vec![r]);
    migration
}
