//! Executing routing decisions on the shards: single-shard commands (with replica
//! reads), dual writes, held writes and transactions.
//!
//! Every function returns a future that owns what it needs (`'static`), holding the
//! [`Lease`] of the table version that routed it until the whole command — including
//! the dirty-set SADD and the target write of a dual write — has finished. The first
//! write to a shard happens when the future is first polled.

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use redis::{Cmd, Pipeline, Value};

use crate::api::routing::dirty_set_key;

use super::backend::{BackendError, Pool};
use super::commands::{Access, Command};
use super::context::{Context, Installed};
use super::metrics::Outcome;
use super::resp::Frame;
use super::route::{Decision, TxDecision, route, route_transaction};
use super::table::Lease;

/// Error of a write held past `--hold-timeout`.
pub const TRYAGAIN_HELD: &str = "TRYAGAIN ringmaster: hash range is switching shards, retry";
/// Error before the first routing table.
pub const TRYAGAIN_NO_TABLE: &str = "TRYAGAIN ringmaster: no routing table yet, retry";
/// Error of keys on different shards.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same shard";

/// A reply to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Built by the router.
    Frame(Frame),
    /// Returned by a shard.
    Value(Value),
}

/// A reply and how the command ended (for the metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// What the client gets.
    pub body: Body,
    /// The `outcome` label.
    pub outcome: Outcome,
}

impl Reply {
    /// A router-built reply; error frames count as [`Outcome::Error`].
    pub fn frame(frame: Frame) -> Self {
        let outcome = if frame.is_error() {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        Self {
            body: Body::Frame(frame),
            outcome,
        }
    }

    /// An error reply with a specific outcome.
    pub fn error(text: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            body: Body::Frame(Frame::error(text)),
            outcome,
        }
    }

    /// A shard's reply.
    pub fn value(value: Value) -> Self {
        let outcome = if is_error(&value) {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        Self {
            body: Body::Value(value),
            outcome,
        }
    }

    /// Whether the reply is an error.
    pub fn is_error(&self) -> bool {
        match &self.body {
            Body::Frame(frame) => frame.is_error(),
            Body::Value(value) => is_error(value),
        }
    }
}

/// A reply in the making.
pub type ReplyFuture = BoxFuture<'static, Reply>;

/// A dispatched command: its reply, and whether later commands of the client must
/// wait for it (a held write: nothing may overtake it).
pub struct Dispatched {
    /// The reply.
    pub reply: ReplyFuture,
    /// Whether it is a barrier.
    pub barrier: bool,
}

impl Dispatched {
    /// A reply that is already known.
    pub fn ready(reply: Reply) -> Self {
        Self {
            reply: ready(reply),
            barrier: false,
        }
    }
}

fn is_error(value: &Value) -> bool {
    matches!(value, Value::ServerError(_))
}

/// The shard command of a client request.
pub fn to_cmd(args: &[Bytes]) -> Cmd {
    let mut cmd = Cmd::new();
    for arg in args {
        cmd.arg(&arg[..]);
    }
    cmd
}

/// Routes and starts a data command (or a held write) of the client on `slot`.
pub fn data(ctx: &Arc<Context>, slot: usize, command: Command) -> Dispatched {
    let Some(lease) = ctx.lease() else {
        return Dispatched::ready(Reply::error(TRYAGAIN_NO_TABLE, Outcome::Error));
    };
    match route(&lease.routing, &command) {
        Decision::Held { .. } => Dispatched {
            reply: hold(Arc::clone(ctx), slot, Held::Command(command), lease).boxed(),
            barrier: true,
        },
        decision => Dispatched {
            reply: execute(Arc::clone(ctx), slot, lease, command, decision),
            barrier: false,
        },
    }
}

/// Runs a routed (not held) decision.
fn execute(
    ctx: Arc<Context>,
    slot: usize,
    lease: Lease<Installed>,
    command: Command,
    decision: Decision,
) -> ReplyFuture {
    match decision {
        Decision::Single { shard, access } => {
            single(ctx, slot, lease, shard, access, to_cmd(&command.args)).boxed()
        }
        Decision::DualWrite {
            source,
            target,
            migration,
        } => {
            let keys = command
                .spec
                .and_then(|spec| spec.keys(&command.args).ok())
                .unwrap_or_default();
            let write = DualWrite {
                source,
                target,
                migration,
                keys,
            };
            dual_write(ctx, slot, lease, write, to_cmd(&command.args)).boxed()
        }
        Decision::CrossSlot => ready(Reply::error(CROSSSLOT, Outcome::CrossSlot)),
        Decision::Unsupported(text) => ready(Reply::error(text, Outcome::Unsupported)),
        Decision::Error(text) => ready(Reply::error(text, Outcome::Error)),
        other => ready(Reply::error(
            format!("ERR ringmaster router: cannot execute {other:?} here"),
            Outcome::Error,
        )),
    }
}

/// A reply future that is already done.
pub fn ready(reply: Reply) -> ReplyFuture {
    futures::future::ready(reply).boxed()
}

/// The reply for a shard call's result; failures are counted against `shard`.
fn shard_reply(
    ctx: &Context,
    table: &Installed,
    shard: i32,
    result: Result<Value, BackendError>,
) -> Reply {
    match result {
        Ok(value) => Reply::value(value),
        Err(error) => {
            ctx.metrics.backend_error(shard);
            let label = table.shard_label(shard);
            tracing::warn!(shard = %label, %error, "shard call failed");
            Reply::error(
                format!("ERR ringmaster router: shard {label} unavailable: {error}"),
                Outcome::BackendError,
            )
        }
    }
}

/// The reply for a shard without connections (no `rw` address in the table).
pub fn no_conns(table: &Installed, shard: i32) -> Reply {
    Reply::error(
        format!(
            "TRYAGAIN ringmaster: shard {} has no address yet, retry",
            table.shard_label(shard)
        ),
        Outcome::Error,
    )
}

/// One shard: writes to the primary; reads to the first replica when there is one,
/// falling back to the primary when it fails.
async fn single(
    ctx: Arc<Context>,
    slot: usize,
    lease: Lease<Installed>,
    shard: i32,
    access: Access,
    cmd: Cmd,
) -> Reply {
    let Some(conns) = lease.conns(shard) else {
        return no_conns(&lease, shard);
    };
    if let (Access::Read, Some(replica)) = (access, &conns.replica) {
        match replica.call(slot, &cmd).await {
            Ok(value) if !replica_refused(&value) => return Reply::value(value),
            Ok(value) => {
                tracing::debug!(shard, reply = ?value, "replica refused a read; using the primary");
            }
            Err(error) => {
                tracing::debug!(shard, %error, "replica read failed; using the primary");
            }
        }
    }
    let result = conns.primary.call(slot, &cmd).await;
    shard_reply(&ctx, &lease, shard, result)
}

/// Replica errors that mean "ask the primary" (loading, detached, …).
fn replica_refused(value: &Value) -> bool {
    match value {
        Value::ServerError(error) => matches!(error.code(), "LOADING" | "MASTERDOWN" | "READONLY"),
        _ => false,
    }
}

/// A write into a dual-written range.
struct DualWrite {
    source: i32,
    target: i32,
    migration: usize,
    keys: Vec<Bytes>,
}

/// Source, then the target, then the dirty set; the client gets the source's reply.
async fn dual_write(
    ctx: Arc<Context>,
    slot: usize,
    lease: Lease<Installed>,
    write: DualWrite,
    cmd: Cmd,
) -> Reply {
    let (Some(source), Some(target)) = (lease.conns(write.source), lease.conns(write.target))
    else {
        return no_conns(&lease, write.source);
    };
    let result = source.primary.call(slot, &cmd).await;
    let reply = shard_reply(&ctx, &lease, write.source, result);
    if reply.is_error() {
        return reply;
    }
    let migration = lease.routing.migration_name(write.migration);
    match target.primary.call(slot, &cmd).await {
        Ok(value) if !is_error(&value) => {}
        outcome => {
            ctx.metrics.dual_write_failed();
            let reason = match outcome {
                Ok(value) => format!("{value:?}"),
                Err(error) => error.to_string(),
            };
            tracing::warn!(
                target_shard = %lease.shard_label(write.target),
                %migration, %reason,
                "dual write to the target failed (the dirty set repairs it)"
            );
        }
    }
    // After the target write, never before: a re-copy that pops the key between the
    // two writes would otherwise be overtaken by this write (an INCR applied twice)
    // with the key no longer marked.
    mark_dirty(&ctx, slot, &source.dirty, migration, &write.keys).await;
    reply
}

/// `SADD ringmaster:dirty:<migration> keys…` on the source's dirty-set database.
async fn mark_dirty(ctx: &Context, slot: usize, dirty: &Pool, migration: &str, keys: &[Bytes]) {
    if keys.is_empty() {
        return;
    }
    let mut sadd = redis::cmd("SADD");
    sadd.arg(dirty_set_key(migration));
    for key in keys {
        sadd.arg(&key[..]);
    }
    match dirty.call(slot, &sadd).await {
        Ok(value) if !is_error(&value) => {}
        outcome => {
            ctx.metrics.dual_write_failed();
            tracing::error!(
                %migration, addr = dirty.addr(), ?outcome,
                "adding keys to the dirty set failed"
            );
        }
    }
}

/// What a held write is.
enum Held {
    /// One command.
    Command(Command),
    /// A transaction's commands.
    Transaction(Vec<Command>),
}

/// Waits for a newer routing version (up to the hold timeout) and routes again.
async fn hold(ctx: Arc<Context>, slot: usize, held: Held, lease: Lease<Installed>) -> Reply {
    ctx.metrics.write_held();
    let deadline = tokio::time::Instant::now() + ctx.settings.hold_timeout;
    let mut versions = ctx.table.subscribe();
    let mut seen = lease.version();
    // Nothing was sent under this version: it need not wait for us.
    drop(lease);
    loop {
        // The guard `wait_for` returns must not live across the awaits below.
        let newer = matches!(
            tokio::time::timeout_at(deadline, versions.wait_for(|v| *v > seen)).await,
            Ok(Ok(_))
        );
        if !newer {
            return Reply::error(TRYAGAIN_HELD, Outcome::TryAgain);
        }
        let Some(lease) = ctx.lease() else {
            return Reply::error(TRYAGAIN_HELD, Outcome::TryAgain);
        };
        seen = lease.version();
        match &held {
            Held::Command(command) => match route(&lease.routing, command) {
                Decision::Held { .. } => continue,
                decision => {
                    return execute(Arc::clone(&ctx), slot, lease, command.clone(), decision).await;
                }
            },
            Held::Transaction(commands) => match route_transaction(&lease.routing, commands) {
                TxDecision::Held { .. } => continue,
                decision => {
                    return run_transaction(
                        Arc::clone(&ctx),
                        slot,
                        lease,
                        commands.clone(),
                        decision,
                    )
                    .await;
                }
            },
        }
    }
}

/// Routes and starts a transaction (MULTI … EXEC of `commands`, all data commands).
pub fn transaction(ctx: &Arc<Context>, slot: usize, commands: Vec<Command>) -> Dispatched {
    let Some(lease) = ctx.lease() else {
        return Dispatched::ready(Reply::error(
            format!("EXECABORT Transaction discarded because of: {TRYAGAIN_NO_TABLE}"),
            Outcome::Error,
        ));
    };
    match route_transaction(&lease.routing, &commands) {
        TxDecision::Held { .. } => Dispatched {
            reply: hold(Arc::clone(ctx), slot, Held::Transaction(commands), lease).boxed(),
            barrier: true,
        },
        decision => Dispatched {
            reply: run_transaction(Arc::clone(ctx), slot, lease, commands, decision).boxed(),
            barrier: false,
        },
    }
}

/// Sends MULTI, the commands and EXEC in one write to the chosen primary; the client
/// gets EXEC's reply. In a dual-written range, the transaction runs on the source
/// only and then every key is added to the dirty set.
async fn run_transaction(
    ctx: Arc<Context>,
    slot: usize,
    lease: Lease<Installed>,
    commands: Vec<Command>,
    decision: TxDecision,
) -> Reply {
    let (shard, dirty_migration) = match decision {
        TxDecision::Single(shard) => (shard, None),
        TxDecision::SourceThenDirty { source, migration } => (source, Some(migration)),
        TxDecision::CrossSlot => {
            return Reply::error(
                format!("EXECABORT Transaction discarded because of: {CROSSSLOT}"),
                Outcome::CrossSlot,
            );
        }
        TxDecision::Error(text) => {
            return Reply::error(
                format!("EXECABORT Transaction discarded because of: {text}"),
                Outcome::Error,
            );
        }
        TxDecision::Held { .. } => return Reply::error(TRYAGAIN_HELD, Outcome::TryAgain),
    };
    let Some(conns) = lease.conns(shard) else {
        return no_conns(&lease, shard);
    };
    let mut pipeline = Pipeline::new();
    pipeline.add_command(redis::cmd("MULTI"));
    for command in &commands {
        pipeline.add_command(to_cmd(&command.args));
    }
    pipeline.add_command(redis::cmd("EXEC"));
    let count = commands.len() + 2;
    let result = conns.primary.call_pipeline(slot, &pipeline, count).await;
    let reply = match result {
        Ok(mut values) => Reply::value(values.pop().unwrap_or(Value::Nil)),
        Err(error) => shard_reply(&ctx, &lease, shard, Err(error)),
    };
    if let (Some(migration), Body::Value(Value::Array(_))) = (dirty_migration, &reply.body) {
        let keys: Vec<Bytes> = commands
            .iter()
            .filter_map(|c| c.spec.and_then(|spec| spec.keys(&c.args).ok()))
            .flatten()
            .collect();
        let name = lease.routing.migration_name(migration);
        mark_dirty(&ctx, slot, &conns.dirty, name, &keys).await;
    }
    reply
}
