//! Routing decisions (pure): given a routing table, its built ring and a command, where
//! the command goes.
//!
//! A key with hash `h` is routed (see `docs/migration.md`):
//!
//! 1. if `h` is in a move of a migration (the first migration listing it): by that
//!    migration's phase — reads from the source (`dualWrite`) or the target
//!    (`switchReads`, `frozen`); writes dual-written (`dualWrite`, `switchReads`) or
//!    held (`frozen`);
//! 2. else to the ring owner of `h`.
//!
//! A multi-key command is routed only when every key has the same [`Dest`]: the same
//! ring owner, or moves of the same migration with the same source and target.

use std::collections::BTreeMap;

use crate::api::Engine;
use crate::api::routing::{RoutingPhase, RoutingShard, RoutingTable};
use crate::ring::{Ring, key_hash};

use super::commands::{Access, Command, Kind, LocalCmd, ScatterCmd};

/// Why a routing table cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The table is for PostgreSQL.
    #[error("routing table of cluster {0} is not for the redis engine")]
    Engine(String),
    /// Two shards share an index.
    #[error("shard index {0} appears twice")]
    DuplicateShard(i32),
    /// The ring or a move names a shard that is not in `shards`.
    #[error("{what} names shard {index}, which is not in the table's shards")]
    UnknownShard {
        /// Where the index appears.
        what: String,
        /// The index.
        index: i32,
    },
}

/// Where all keys of a command go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Outside every moving range: the ring owner.
    Shard(i32),
    /// In a move of migration number `migration` (its position in the table).
    Moving {
        /// Position of the migration in `RoutingTable::migrations`.
        migration: usize,
        /// Source shard index.
        source: i32,
        /// Target shard index.
        target: i32,
    },
}

/// What to do with one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send to one shard: its primary for writes, a replica or the primary for reads.
    Single {
        /// Shard index.
        shard: i32,
        /// Read or write.
        access: Access,
    },
    /// Write to the source, add the keys to the dirty set, write to the target.
    DualWrite {
        /// Source shard index.
        source: i32,
        /// Target shard index.
        target: i32,
        /// Position of the migration in the table.
        migration: usize,
    },
    /// A write into a frozen range: wait for the next routing version.
    Held {
        /// Position of the migration in the table.
        migration: usize,
    },
    /// The keys do not share a destination.
    CrossSlot,
    /// Sent to every shard, replies merged.
    Scatter(ScatterCmd),
    /// Answered by the router.
    Local(LocalCmd),
    /// Refused: the error text (`ERR …`).
    Unsupported(String),
    /// Cannot be routed: the error text (`ERR …`).
    Error(String),
}

/// What to do with a transaction (MULTI … EXEC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxDecision {
    /// Run on this shard's primary.
    Single(i32),
    /// Run on the source of a moving range only, then add every key to the dirty set.
    SourceThenDirty {
        /// Source shard index.
        source: i32,
        /// Position of the migration in the table.
        migration: usize,
    },
    /// It writes into a frozen range: wait for the next routing version.
    Held {
        /// Position of the migration in the table.
        migration: usize,
    },
    /// The keys do not share a destination.
    CrossSlot,
    /// Cannot be routed: the error text.
    Error(String),
}

/// One moving range as an inclusive interval `[lo, hi]` of hashes.
#[derive(Clone, Copy, Debug)]
struct Interval {
    lo: u64,
    hi: u64,
    migration: usize,
    source: i32,
    target: i32,
}

/// A routing table with its ring built and its moves indexed.
#[derive(Clone, Debug)]
pub struct Routing {
    table: RoutingTable,
    ring: Option<Ring>,
    /// Shard index → position in `table.shards`.
    shards: BTreeMap<i32, usize>,
    /// Moving ranges sorted by `lo`.
    intervals: Vec<Interval>,
    /// Whether two intervals overlap (then lookups scan in table order).
    overlapping: bool,
}

impl Routing {
    /// Builds the ring and the move index of `table`, checking that every shard it
    /// names exists.
    pub fn new(table: RoutingTable) -> Result<Self, TableError> {
        if table.engine != Engine::Redis {
            return Err(TableError::Engine(table.cluster.clone()));
        }
        let shards = shard_positions(&table.shards)?;
        let known = |what: &str, index: i32| {
            if shards.contains_key(&index) {
                Ok(())
            } else {
                Err(TableError::UnknownShard {
                    what: what.to_owned(),
                    index,
                })
            }
        };
        if let Some(ring) = &table.ring {
            for member in &ring.members {
                known("the ring", member.shard)?;
            }
        }
        for migration in &table.migrations {
            let what = format!("migration {}", migration.name);
            for mv in &migration.moves {
                known(&what, mv.source)?;
                known(&what, mv.target)?;
            }
        }
        let mut intervals = build_intervals(&table);
        intervals.sort_by_key(|i| (i.lo, i.migration));
        let overlapping = intervals.windows(2).any(|w| w[1].lo <= w[0].hi);
        let ring = table.ring.clone().map(Ring::build);
        Ok(Self {
            table,
            ring,
            shards,
            intervals,
            overlapping,
        })
    }

    /// The table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The table's version.
    pub fn version(&self) -> i64 {
        self.table.version
    }

    /// The shard with index `index`.
    pub fn shard(&self, index: i32) -> Option<&RoutingShard> {
        self.shards.get(&index).map(|&pos| &self.table.shards[pos])
    }

    /// Every shard, by index.
    pub fn shards(&self) -> impl Iterator<Item = &RoutingShard> {
        self.shards.values().map(|&pos| &self.table.shards[pos])
    }

    /// The phase of migration number `migration`.
    pub fn phase(&self, migration: usize) -> RoutingPhase {
        self.table.migrations[migration].phase
    }

    /// The name of migration number `migration`.
    pub fn migration_name(&self, migration: usize) -> &str {
        &self.table.migrations[migration].name
    }

    /// Whether every shard has a primary address.
    pub fn all_shards_addressed(&self) -> bool {
        self.table.shards.iter().all(|s| s.rw.is_some())
    }

    /// The moving range containing `hash`, if any.
    fn moving(&self, hash: u64) -> Option<Interval> {
        if self.overlapping {
            return self
                .intervals
                .iter()
                .filter(|i| i.lo <= hash && hash <= i.hi)
                .min_by_key(|i| i.migration)
                .copied();
        }
        let after = self.intervals.partition_point(|i| i.lo <= hash);
        let candidate = self.intervals.get(after.checked_sub(1)?)?;
        (hash <= candidate.hi).then_some(*candidate)
    }

    /// Where `key` goes.
    pub fn dest(&self, key: &[u8]) -> Result<Dest, String> {
        let hash = key_hash(key);
        if let Some(interval) = self.moving(hash) {
            return Ok(Dest::Moving {
                migration: interval.migration,
                source: interval.source,
                target: interval.target,
            });
        }
        let ring = self
            .ring
            .as_ref()
            .ok_or_else(|| "ERR ringmaster router: the routing table has no ring".to_owned())?;
        ring.owner(hash)
            .map(Dest::Shard)
            .ok_or_else(|| "ERR ringmaster router: the ring has no members".to_owned())
    }

    /// The shard that serves reads of `key` (KEYS and SCAN list a key only there).
    pub fn read_owner(&self, key: &[u8]) -> Option<i32> {
        match self.dest(key).ok()? {
            Dest::Shard(shard) => Some(shard),
            Dest::Moving {
                migration,
                source,
                target,
            } => Some(match self.phase(migration) {
                RoutingPhase::DualWrite => source,
                RoutingPhase::SwitchReads | RoutingPhase::Frozen => target,
            }),
        }
    }

    /// The destination shared by every key; `Ok(None)` when they differ.
    fn common_dest<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<Dest>, String> {
        let mut common = None;
        for key in keys {
            let dest = self.dest(key)?;
            match common {
                None => common = Some(dest),
                Some(existing) if existing == dest => {}
                Some(_) => return Ok(None),
            }
        }
        common
            .ok_or_else(|| {
                "ERR ringmaster router: a command without keys cannot be routed".to_owned()
            })
            .map(Some)
    }

    /// The decision for a data command with `keys` and `access`.
    fn decide(&self, keys: &[bytes::Bytes], access: Access) -> Decision {
        let dest = match self.common_dest(keys.iter().map(|k| &k[..])) {
            Ok(Some(dest)) => dest,
            Ok(None) => return Decision::CrossSlot,
            Err(message) => return Decision::Error(message),
        };
        let decision = match dest {
            Dest::Shard(shard) => Decision::Single { shard, access },
            Dest::Moving {
                migration,
                source,
                target,
            } => moving_decision(self.phase(migration), access, migration, source, target),
        };
        self.check_addresses(decision)
    }

    /// Turns a decision naming a shard without a primary address into an error.
    fn check_addresses(&self, decision: Decision) -> Decision {
        let shards: &[i32] = match &decision {
            Decision::Single { shard, .. } => &[*shard],
            Decision::DualWrite { source, target, .. } => &[*source, *target],
            _ => &[],
        };
        for &index in shards {
            if self.shard(index).and_then(|s| s.rw.as_ref()).is_none() {
                return Decision::Error(format!(
                    "TRYAGAIN ringmaster: shard {index} has no address yet, retry"
                ));
            }
        }
        decision
    }
}

fn shard_positions(shards: &[RoutingShard]) -> Result<BTreeMap<i32, usize>, TableError> {
    let mut positions = BTreeMap::new();
    for (pos, shard) in shards.iter().enumerate() {
        if positions.insert(shard.index, pos).is_some() {
            return Err(TableError::DuplicateShard(shard.index));
        }
    }
    Ok(positions)
}

/// The moves of every migration as inclusive intervals (a wrapping range is split).
fn build_intervals(table: &RoutingTable) -> Vec<Interval> {
    let mut intervals = Vec::new();
    for (migration, m) in table.migrations.iter().enumerate() {
        for mv in &m.moves {
            let (start, end) = (mv.range.start, mv.range.end);
            let mut push = |lo: u64, hi: u64| {
                intervals.push(Interval {
                    lo,
                    hi,
                    migration,
                    source: mv.source,
                    target: mv.target,
                })
            };
            if start < end {
                push(start + 1, end);
            } else if start == end {
                push(0, u64::MAX);
            } else {
                if start < u64::MAX {
                    push(start + 1, u64::MAX);
                }
                push(0, end);
            }
        }
    }
    intervals
}

/// Reads and writes into a moving range, by phase.
fn moving_decision(
    phase: RoutingPhase,
    access: Access,
    migration: usize,
    source: i32,
    target: i32,
) -> Decision {
    match (phase, access) {
        (RoutingPhase::DualWrite, Access::Read) => Decision::Single {
            shard: source,
            access,
        },
        (RoutingPhase::SwitchReads | RoutingPhase::Frozen, Access::Read) => Decision::Single {
            shard: target,
            access,
        },
        (RoutingPhase::DualWrite | RoutingPhase::SwitchReads, Access::Write) => {
            Decision::DualWrite {
                source,
                target,
                migration,
            }
        }
        (RoutingPhase::Frozen, Access::Write) => Decision::Held { migration },
    }
}

/// The error text of an unsupported or unknown command.
pub fn unsupported_text(name: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) if reason.contains("ringmaster router") => format!("ERR {reason}"),
        Some(reason) => format!("ERR unsupported command '{name}' in ringmaster router: {reason}"),
        None => format!("ERR unsupported command '{name}' in ringmaster router"),
    }
}

/// Where `command` goes under `routing`.
pub fn route(routing: &Routing, command: &Command) -> Decision {
    let Some(spec) = command.spec else {
        return Decision::Unsupported(unsupported_text(&command.display_name(), None));
    };
    match spec.kind {
        Kind::Local(cmd) => Decision::Local(cmd),
        Kind::Scatter(cmd) => Decision::Scatter(cmd),
        Kind::Unsupported(reason) => Decision::Unsupported(unsupported_text(spec.name, reason)),
        Kind::Data(access, _) => match spec.keys(&command.args) {
            Ok(keys) => routing.decide(&keys, access),
            Err(error) => Decision::Error(error.to_string()),
        },
    }
}

/// Where a transaction of `commands` (each a data command) goes under `routing`.
pub fn route_transaction(routing: &Routing, commands: &[Command]) -> TxDecision {
    let mut keys = Vec::new();
    let mut writes = false;
    for command in commands {
        let Some(spec) = command.spec else {
            return TxDecision::Error(unsupported_text(&command.display_name(), None));
        };
        writes |= spec.access() == Some(Access::Write);
        match spec.keys(&command.args) {
            Ok(k) => keys.extend(k),
            Err(error) => return TxDecision::Error(error.to_string()),
        }
    }
    let access = if writes { Access::Write } else { Access::Read };
    match routing.decide(&keys, access) {
        Decision::Single { shard, .. } => TxDecision::Single(shard),
        Decision::DualWrite {
            source, migration, ..
        } => TxDecision::SourceThenDirty { source, migration },
        Decision::Held { migration } => TxDecision::Held { migration },
        Decision::CrossSlot => TxDecision::CrossSlot,
        Decision::Error(message) => TxDecision::Error(message),
        other => TxDecision::Error(format!("ERR ringmaster router: unexpected {other:?}")),
    }
}

/// The destination of one queued command, to refuse a cross-shard transaction as soon
/// as its commands are queued. `Ok(None)` when its keys already differ.
pub fn command_dest(routing: &Routing, command: &Command) -> Result<Option<Dest>, String> {
    let Some(spec) = command.spec else {
        return Err(unsupported_text(&command.display_name(), None));
    };
    let keys = spec.keys(&command.args).map_err(|e| e.to_string())?;
    routing.common_dest(keys.iter().map(|k| &k[..]))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::api::routing::{RoutingMigration, RoutingReplica};
    use crate::ring::{HashRange, RangeMove, RingDescriptor, RingMember};

    fn shard(index: i32) -> RoutingShard {
        RoutingShard {
            index,
            name: format!("c-{index}"),
            weight: 1,
            rw: Some(format!("10.0.0.{index}:6379")),
            ro: None,
            primary: format!("c-{index}-0"),
            replicas: vec![RoutingReplica {
                name: format!("c-{index}-1"),
                address: format!("10.0.1.{index}:6379"),
            }],
        }
    }

    fn table(shards: i32, migrations: Vec<RoutingMigration>) -> RoutingTable {
        RoutingTable {
            cluster: "c".into(),
            engine: Engine::Redis,
            version: 1,
            shards: (0..shards).map(shard).collect(),
            ring: Some(RingDescriptor {
                version: 1,
                vnodes_per_weight: 16,
                members: (0..shards.min(2))
                    .map(|shard| RingMember { shard, weight: 1 })
                    .collect(),
            }),
            migrations,
        }
    }

    fn cmd(words: &[&str]) -> Command {
        Command::new(
            words
                .iter()
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect(),
        )
    }

    /// A move covering exactly the hash of `key` (and nothing else).
    fn move_of(key: &str, source: i32, target: i32) -> RangeMove {
        let hash = key_hash(key.as_bytes());
        RangeMove {
            range: HashRange {
                start: hash.wrapping_sub(1),
                end: hash,
            },
            source,
            target,
        }
    }

    fn migration(name: &str, phase: RoutingPhase, moves: Vec<RangeMove>) -> RoutingMigration {
        RoutingMigration {
            name: name.into(),
            phase,
            moves,
        }
    }

    /// Three shards and one migration `m` in `phase` with `moves`.
    fn migrating(phase: RoutingPhase, moves: Vec<RangeMove>) -> Routing {
        Routing::new(table(3, vec![migration("m", phase, moves)])).unwrap()
    }

    /// A key (with a hash tag) owned by `shard` on the 2-member ring of `table`.
    fn key_on(routing: &Routing, shard: i32, prefix: &str) -> String {
        (0..10_000)
            .map(|i| format!("{{{prefix}{i}}}"))
            .find(|k| routing.dest(k.as_bytes()) == Ok(Dest::Shard(shard)))
            .expect("a key on the shard")
    }

    #[test]
    fn single_keys_go_to_their_ring_owner() {
        let routing = Routing::new(table(2, vec![])).unwrap();
        let ring = Ring::build(routing.table().ring.clone().unwrap());
        for i in 0..200 {
            let key = format!("key:{i}");
            let owner = ring.owner(key_hash(key.as_bytes())).unwrap();
            assert_eq!(
                route(&routing, &cmd(&["GET", &key])),
                Decision::Single {
                    shard: owner,
                    access: Access::Read
                }
            );
            assert_eq!(
                route(&routing, &cmd(&["SET", &key, "v"])),
                Decision::Single {
                    shard: owner,
                    access: Access::Write
                }
            );
        }
    }

    #[test]
    fn hash_tags_keep_keys_together_and_others_cross() {
        let routing = Routing::new(table(2, vec![])).unwrap();
        let decision = route(&routing, &cmd(&["MSET", "{u1}a", "1", "{u1}b", "2"]));
        assert!(matches!(
            decision,
            Decision::Single {
                access: Access::Write,
                ..
            }
        ));
        let a = key_on(&routing, 0, "a");
        let b = key_on(&routing, 1, "b");
        assert_eq!(
            route(&routing, &cmd(&["MGET", &a, &b])),
            Decision::CrossSlot
        );
        assert_eq!(
            route(&routing, &cmd(&["MSET", &a, "1", &b, "2"])),
            Decision::CrossSlot
        );
    }

    #[test]
    fn dual_write_phase() {
        let base = Routing::new(table(3, vec![])).unwrap();
        let key = key_on(&base, 0, "k");
        let routing = migrating(RoutingPhase::DualWrite, vec![move_of(&key, 0, 2)]);
        assert_eq!(
            route(&routing, &cmd(&["GET", &key])),
            Decision::Single {
                shard: 0,
                access: Access::Read
            }
        );
        assert_eq!(
            route(&routing, &cmd(&["SET", &key, "v"])),
            Decision::DualWrite {
                source: 0,
                target: 2,
                migration: 0
            }
        );
        assert_eq!(routing.read_owner(key.as_bytes()), Some(0));
    }

    #[test]
    fn switch_reads_phase() {
        let base = Routing::new(table(3, vec![])).unwrap();
        let key = key_on(&base, 1, "k");
        let routing = migrating(RoutingPhase::SwitchReads, vec![move_of(&key, 1, 2)]);
        assert_eq!(
            route(&routing, &cmd(&["GET", &key])),
            Decision::Single {
                shard: 2,
                access: Access::Read
            }
        );
        assert_eq!(
            route(&routing, &cmd(&["INCR", &key])),
            Decision::DualWrite {
                source: 1,
                target: 2,
                migration: 0
            }
        );
        assert_eq!(routing.read_owner(key.as_bytes()), Some(2));
    }

    #[test]
    fn frozen_phase_holds_writes_and_reads_the_target() {
        let base = Routing::new(table(3, vec![])).unwrap();
        let key = key_on(&base, 0, "k");
        let routing = migrating(RoutingPhase::Frozen, vec![move_of(&key, 0, 2)]);
        assert_eq!(
            route(&routing, &cmd(&["GET", &key])),
            Decision::Single {
                shard: 2,
                access: Access::Read
            }
        );
        assert_eq!(
            route(&routing, &cmd(&["DEL", &key])),
            Decision::Held { migration: 0 }
        );
    }

    #[test]
    fn keys_outside_moves_are_unaffected_by_migrations() {
        let base = Routing::new(table(3, vec![])).unwrap();
        let moving = key_on(&base, 0, "k");
        let staying = key_on(&base, 0, "s");
        let routing = migrating(RoutingPhase::Frozen, vec![move_of(&moving, 0, 2)]);
        assert_eq!(
            route(&routing, &cmd(&["SET", &staying, "v"])),
            Decision::Single {
                shard: 0,
                access: Access::Write
            }
        );
        // A moving key and a staying key of the same source do not share a destination.
        assert_eq!(
            route(&routing, &cmd(&["DEL", &moving, &staying])),
            Decision::CrossSlot
        );
    }

    #[test]
    fn keys_in_one_migration_move_together() {
        let base = Routing::new(table(3, vec![])).unwrap();
        let a = key_on(&base, 0, "a");
        let b = key_on(&base, 0, "b");
        let routing = migrating(
            RoutingPhase::DualWrite,
            vec![move_of(&a, 0, 2), move_of(&b, 0, 2)],
        );
        assert_eq!(
            route(&routing, &cmd(&["MSET", &a, "1", &b, "2"])),
            Decision::DualWrite {
                source: 0,
                target: 2,
                migration: 0
            }
        );
    }

    #[test]
    fn wrapping_and_whole_circle_moves() {
        let wrap = RangeMove {
            range: HashRange {
                start: u64::MAX - 10,
                end: 10,
            },
            source: 0,
            target: 1,
        };
        let routing = Routing::new(table(
            2,
            vec![migration("m", RoutingPhase::DualWrite, vec![wrap])],
        ))
        .unwrap();
        for (hash, inside) in [
            (u64::MAX - 10, false),
            (u64::MAX - 9, true),
            (u64::MAX, true),
            (0, true),
            (10, true),
            (11, false),
        ] {
            assert_eq!(routing.moving(hash).is_some(), inside, "{hash:#x}");
        }
        let whole = RangeMove {
            range: HashRange { start: 5, end: 5 },
            source: 0,
            target: 1,
        };
        let routing = Routing::new(table(
            2,
            vec![migration("m", RoutingPhase::Frozen, vec![whole])],
        ))
        .unwrap();
        assert!(routing.moving(0).is_some() && routing.moving(u64::MAX).is_some());
    }

    #[test]
    fn first_migration_wins_on_overlap() {
        let mv = |target| RangeMove {
            range: HashRange {
                start: 100,
                end: 200,
            },
            source: 0,
            target,
        };
        let routing = Routing::new(table(
            3,
            vec![
                migration("a", RoutingPhase::SwitchReads, vec![mv(1)]),
                migration("b", RoutingPhase::DualWrite, vec![mv(2)]),
            ],
        ))
        .unwrap();
        assert_eq!(routing.moving(150).unwrap().migration, 0);
        assert_eq!(routing.moving(150).unwrap().target, 1);
    }

    #[test]
    fn local_scatter_unsupported_and_unknown() {
        let routing = Routing::new(table(2, vec![])).unwrap();
        assert_eq!(
            route(&routing, &cmd(&["ping"])),
            Decision::Scatter(ScatterCmd::Ping)
        );
        assert_eq!(
            route(&routing, &cmd(&["echo", "x"])),
            Decision::Local(LocalCmd::Echo)
        );
        assert_eq!(
            route(&routing, &cmd(&["FLUSHALL"])),
            Decision::Unsupported(
                "ERR unsupported command 'flushall' in ringmaster router: server administration goes to the shards directly".into()
            )
        );
        assert_eq!(
            route(&routing, &cmd(&["WATCH", "k"])),
            Decision::Unsupported("ERR WATCH is not supported by ringmaster router".into())
        );
        assert_eq!(
            route(&routing, &cmd(&["FOO", "k"])),
            Decision::Unsupported("ERR unsupported command 'foo' in ringmaster router".into())
        );
        assert_eq!(
            route(&routing, &cmd(&["GET"])),
            Decision::Error("ERR wrong number of arguments for 'get' command".into())
        );
        assert!(matches!(
            route(&routing, &cmd(&["EVAL", "return 1", "0"])),
            Decision::Error(message) if message.contains("without keys")
        ));
    }

    #[test]
    fn shard_without_address_is_retryable() {
        let mut t = table(2, vec![]);
        t.shards[1].rw = None;
        let routing = Routing::new(t).unwrap();
        assert!(!routing.all_shards_addressed());
        let key = key_on(&routing, 1, "k");
        assert!(matches!(
            route(&routing, &cmd(&["GET", &key])),
            Decision::Error(message) if message.starts_with("TRYAGAIN")
        ));
    }

    #[test]
    fn invalid_tables_are_rejected() {
        let mut t = table(2, vec![]);
        t.engine = Engine::Postgres;
        assert!(matches!(Routing::new(t), Err(TableError::Engine(_))));
        let mut t = table(2, vec![]);
        t.shards[1].index = 0;
        assert_eq!(Routing::new(t).unwrap_err(), TableError::DuplicateShard(0));
        let t = table(
            2,
            vec![migration(
                "m",
                RoutingPhase::DualWrite,
                vec![move_of("k", 0, 7)],
            )],
        );
        assert!(matches!(
            Routing::new(t),
            Err(TableError::UnknownShard { index: 7, .. })
        ));
        let mut t = table(2, vec![]);
        t.ring = None;
        let routing = Routing::new(t).unwrap();
        assert!(matches!(
            route(&routing, &cmd(&["GET", "k"])),
            Decision::Error(_)
        ));
    }

    #[test]
    fn transactions() {
        let base = Routing::new(table(3, vec![])).unwrap();
        let a = key_on(&base, 0, "a");
        let b = key_on(&base, 1, "b");
        let moving = key_on(&base, 0, "m");
        let tx = |words: &[&[&str]]| words.iter().map(|w| cmd(w)).collect::<Vec<_>>();
        assert_eq!(
            route_transaction(&base, &tx(&[&["SET", &a, "1"], &["INCR", &a]])),
            TxDecision::Single(0)
        );
        assert_eq!(
            route_transaction(&base, &tx(&[&["SET", &a, "1"], &["GET", &b]])),
            TxDecision::CrossSlot
        );
        for (phase, writes, reads) in [
            (
                RoutingPhase::DualWrite,
                TxDecision::SourceThenDirty {
                    source: 0,
                    migration: 0,
                },
                TxDecision::Single(0),
            ),
            (
                RoutingPhase::SwitchReads,
                TxDecision::SourceThenDirty {
                    source: 0,
                    migration: 0,
                },
                TxDecision::Single(2),
            ),
            (
                RoutingPhase::Frozen,
                TxDecision::Held { migration: 0 },
                TxDecision::Single(2),
            ),
        ] {
            let routing = migrating(phase, vec![move_of(&moving, 0, 2)]);
            assert_eq!(
                route_transaction(&routing, &tx(&[&["GET", &moving], &["SET", &moving, "1"]])),
                writes,
                "{phase:?}"
            );
            assert_eq!(
                route_transaction(&routing, &tx(&[&["GET", &moving]])),
                reads,
                "{phase:?}"
            );
        }
        assert!(matches!(
            route_transaction(&base, &tx(&[&["GET"]])),
            TxDecision::Error(_)
        ));
    }

    #[test]
    fn command_dest_for_queued_commands() {
        let routing = Routing::new(table(2, vec![])).unwrap();
        let a = key_on(&routing, 0, "a");
        let b = key_on(&routing, 1, "b");
        assert_eq!(
            command_dest(&routing, &cmd(&["SET", &a, "1"])),
            Ok(Some(Dest::Shard(0)))
        );
        assert_eq!(command_dest(&routing, &cmd(&["MGET", &a, &b])), Ok(None));
        assert!(command_dest(&routing, &cmd(&["GET"])).is_err());
    }
}
