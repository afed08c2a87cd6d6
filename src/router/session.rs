//! One client connection: authentication, local commands, MULTI queues, and the
//! pipeline of replies.
//!
//! The session reads every complete request available, dispatches each in order and
//! keeps their reply futures in a [`FuturesOrdered`], so replies go back in order
//! while commands to different shards run concurrently. Each reply future is polled
//! once as soon as it is created — that writes its command to the shard connection —
//! so the commands of one client reach one shard in the order the client sent them.
//!
//! A write held by a frozen range is a barrier: nothing the client sent after it is
//! dispatched before it has been answered. Pending commands are always run to
//! completion, also when the client goes away, so no dual write stops half-way.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::runtime::shutdown::Shutdown;

use super::commands::{Command, Kind, LocalCmd};
use super::context::Context;
use super::dispatch::{self, Body, CROSSSLOT, Dispatched, Reply, ReplyFuture, ready};
use super::metrics::Outcome;
use super::resp::{Frame, RequestParser, encode_value};
use super::route::{Dest, command_dest, unsupported_text};
use super::scatter;

/// Most commands of one client in flight; reading pauses beyond.
const MAX_PENDING: usize = 1024;
/// Initial size of the read and write buffers.
const BUFFER: usize = 16 * 1024;

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// A MULTI in progress.
#[derive(Debug, Default)]
struct Transaction {
    commands: Vec<Command>,
    /// A command was refused while queueing: EXEC aborts.
    failed: bool,
    /// Destination of the keys queued so far.
    dest: Option<Dest>,
}

/// What the session does after a command.
enum Next {
    /// Go on.
    Continue,
    /// Close once the pending replies are written (QUIT, protocol error).
    Close,
}

/// The state of one client.
struct Session {
    ctx: Arc<Context>,
    id: u64,
    slot: usize,
    authenticated: bool,
    name: Option<Bytes>,
    tx: Option<Transaction>,
}

/// Serves one client until it leaves, sends QUIT, breaks the protocol or the router
/// shuts down.
pub async fn serve<S>(ctx: Arc<Context>, stream: S, shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let id = ctx.next_client_id();
    let session = Session {
        authenticated: ctx.settings.password.is_none(),
        slot: usize::try_from(id).unwrap_or(0),
        ctx,
        id,
        name: None,
        tx: None,
    };
    session.run(stream, shutdown).await;
}

impl Session {
    async fn run<S>(mut self, stream: S, shutdown: Shutdown)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut parser = RequestParser::default();
        let mut input = BytesMut::with_capacity(BUFFER);
        let mut output = BytesMut::with_capacity(BUFFER);
        let mut pending: FuturesOrdered<ReplyFuture> = FuturesOrdered::new();
        // A held write is pending: dispatch nothing after it until it is answered.
        let mut barrier = false;
        // QUIT, protocol error or shutdown: answer what is pending, then close.
        let mut closing = false;
        // The client sent EOF: answer what is pending, then close.
        let mut eof = false;
        // Writing failed: run what is pending (never cut a dual write short), then close.
        let mut broken = false;
        loop {
            if barrier && pending.is_empty() {
                barrier = false;
            }
            if !barrier && !closing && !broken {
                match self.dispatch_buffered(&mut parser, &mut input, &mut pending, &mut output) {
                    Ok((held, next)) => {
                        barrier = held;
                        closing = matches!(next, Next::Close);
                    }
                    Err(frame) => {
                        pending.push_back(ready(Reply::frame(frame)));
                        closing = true;
                    }
                }
            }
            if !output.is_empty() {
                if !broken && writer.write_all(&output).await.is_err() {
                    broken = true;
                }
                output.clear();
            }
            if pending.is_empty() && (closing || eof || broken) {
                break;
            }
            let can_read = !closing && !eof && !broken && !barrier && pending.len() < MAX_PENDING;
            tokio::select! {
                biased;
                Some(reply) = pending.next(), if !pending.is_empty() => {
                    encode(&reply, &mut output);
                    while let Some(Some(reply)) = pending.next().now_or_never() {
                        encode(&reply, &mut output);
                    }
                }
                read = reader.read_buf(&mut input), if can_read => {
                    match read {
                        Ok(0) => eof = true,
                        Ok(_) => {}
                        Err(_) => broken = true,
                    }
                }
                () = shutdown.wait(), if !closing => closing = true,
            }
        }
        let _ = writer.shutdown().await;
        tracing::debug!(client = self.id, "client session ended");
    }

    /// Dispatches every complete request in `input`, stopping after a barrier or a
    /// QUIT, or when too many are pending. Returns whether the last one is a barrier;
    /// `Err` is a protocol error to answer before closing.
    fn dispatch_buffered(
        &mut self,
        parser: &mut RequestParser,
        input: &mut BytesMut,
        pending: &mut FuturesOrdered<ReplyFuture>,
        output: &mut BytesMut,
    ) -> Result<(bool, Next), Frame> {
        while pending.len() < MAX_PENDING {
            let args = match parser.next_request(input) {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(error) => return Err(Frame::error(format!("ERR {error}"))),
            };
            let command = Command::new(args);
            let (label, dispatched_at) = (command.label(), Instant::now());
            let (dispatched, next) = self.handle(command);
            let barrier = dispatched.barrier;
            let ctx = Arc::clone(&self.ctx);
            let timed = dispatched.reply.map(move |reply| {
                let seconds = dispatched_at.elapsed().as_secs_f64();
                ctx.metrics.command(label, reply.outcome, seconds);
                reply
            });
            match start(timed) {
                // Fast path: nothing ahead of it, answer at once.
                Started::Done(reply) if pending.is_empty() => encode(&reply, output),
                started => pending.push_back(started.into_future()),
            }
            if barrier || matches!(next, Next::Close) {
                return Ok((barrier, next));
            }
        }
        Ok((false, Next::Continue))
    }

    /// Dispatches one command.
    fn handle(&mut self, command: Command) -> (Dispatched, Next) {
        let kind = command.spec.map(|spec| spec.kind);
        if !self.authenticated
            && !matches!(
                kind,
                Some(Kind::Local(
                    LocalCmd::Auth | LocalCmd::Hello | LocalCmd::Quit
                ))
            )
        {
            return (now(Reply::error(NOAUTH, Outcome::NoAuth)), Next::Continue);
        }
        if self.tx.is_some() {
            return self.in_transaction(command);
        }
        match kind {
            None => (
                now(Reply::error(
                    unsupported_text(&command.display_name(), None),
                    Outcome::Unsupported,
                )),
                Next::Continue,
            ),
            Some(Kind::Local(cmd)) => self.local(cmd, &command),
            Some(Kind::Scatter(cmd)) => (
                scatter::run(&self.ctx, self.slot, cmd, command),
                Next::Continue,
            ),
            Some(Kind::Unsupported(reason)) => {
                let name = command.spec.map_or("", |s| s.name);
                (
                    now(Reply::error(
                        unsupported_text(name, reason),
                        Outcome::Unsupported,
                    )),
                    Next::Continue,
                )
            }
            Some(Kind::Data(..)) => (
                dispatch::data(&self.ctx, self.slot, command),
                Next::Continue,
            ),
        }
    }

    /// Commands answered by the router.
    fn local(&mut self, cmd: LocalCmd, command: &Command) -> (Dispatched, Next) {
        if let Some(spec) = command.spec
            && let Err(error) = spec.check_arity(command.args.len())
        {
            return (
                now(Reply::error(error.to_string(), Outcome::Error)),
                Next::Continue,
            );
        }
        let frame = match cmd {
            LocalCmd::Auth => self.auth(&command.args[1..]),
            LocalCmd::Hello => self.hello(&command.args[1..]),
            LocalCmd::Echo => Frame::Bulk(command.args[1].clone()),
            LocalCmd::Select => select(&command.args[1]),
            LocalCmd::Client => self.client(command),
            LocalCmd::Command => command_info(command),
            LocalCmd::Quit => return (now(Reply::frame(Frame::ok())), Next::Close),
            LocalCmd::Reset => self.reset(),
            LocalCmd::Multi => {
                self.tx = Some(Transaction::default());
                Frame::ok()
            }
            LocalCmd::Exec => Frame::error("ERR EXEC without MULTI"),
            LocalCmd::Discard => Frame::error("ERR DISCARD without MULTI"),
            LocalCmd::Unwatch => Frame::ok(),
        };
        (now(Reply::frame(frame)), Next::Continue)
    }

    /// AUTH [username] password
    fn auth(&mut self, args: &[Bytes]) -> Frame {
        if self.ctx.settings.password.is_none() {
            return Frame::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        }
        let (username, password) = match args {
            [password] => (None, password),
            [username, password] => (Some(&username[..]), password),
            _ => return Frame::error("ERR syntax error"),
        };
        if self.ctx.settings.credentials_match(username, password) {
            self.authenticated = true;
            Frame::ok()
        } else {
            tracing::info!(client = self.id, "client authentication failed");
            Frame::error(WRONGPASS)
        }
    }

    /// HELLO [protover [AUTH username password] [SETNAME name]]
    fn hello(&mut self, args: &[Bytes]) -> Frame {
        if let Some(version) = args.first() {
            match super::resp::parse_int(version) {
                Some(2) => {}
                Some(_) => return Frame::error("NOPROTO unsupported protocol version"),
                None => {
                    return Frame::error("ERR Protocol version is not an integer or out of range");
                }
            }
        }
        let mut rest = args.iter().skip(1);
        let mut name = None;
        while let Some(option) = rest.next() {
            if option.eq_ignore_ascii_case(b"AUTH") {
                let (Some(user), Some(password)) = (rest.next(), rest.next()) else {
                    return Frame::error("ERR Syntax error in HELLO option 'auth'");
                };
                let auth = self.auth(&[user.clone(), password.clone()]);
                if auth.is_error() {
                    return auth;
                }
            } else if option.eq_ignore_ascii_case(b"SETNAME") {
                let Some(value) = rest.next() else {
                    return Frame::error("ERR Syntax error in HELLO option 'setname'");
                };
                name = Some(value.clone());
            } else {
                return Frame::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                ));
            }
        }
        if !self.authenticated {
            return Frame::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        if name.is_some() {
            self.name = name;
        }
        hello_reply(self.id)
    }

    /// CLIENT SETNAME / GETNAME / SETINFO / ID.
    fn client(&mut self, command: &Command) -> Frame {
        let sub = command.arg_upper(1).unwrap_or_default();
        match (sub.as_str(), command.args.len()) {
            ("SETNAME", 3) => {
                let name = &command.args[2];
                if name.iter().any(|b| !b.is_ascii_graphic()) {
                    return Frame::error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then(|| name.clone());
                Frame::ok()
            }
            ("GETNAME", 2) => self.name.clone().map_or(Frame::Null, Frame::Bulk),
            ("SETINFO", 4) => Frame::ok(),
            ("ID", 2) => Frame::Integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ("SETNAME" | "GETNAME" | "SETINFO" | "ID", _) => Frame::error(format!(
                "ERR wrong number of arguments for 'client|{}' command",
                sub.to_ascii_lowercase()
            )),
            _ => Frame::error(unsupported_text(
                &format!("client|{}", sub.to_ascii_lowercase()),
                None,
            )),
        }
    }

    /// RESET: leaves MULTI, forgets the name and authentication.
    fn reset(&mut self) -> Frame {
        self.tx = None;
        self.name = None;
        self.authenticated = self.ctx.settings.password.is_none();
        Frame::Simple("RESET".to_owned())
    }

    /// A command while MULTI is open.
    fn in_transaction(&mut self, command: Command) -> (Dispatched, Next) {
        let kind = command.spec.map(|spec| spec.kind);
        let frame = match kind {
            Some(Kind::Local(LocalCmd::Exec)) => return (self.exec(), Next::Continue),
            Some(Kind::Local(LocalCmd::Discard)) => {
                self.tx = None;
                Frame::ok()
            }
            Some(Kind::Local(LocalCmd::Multi)) => Frame::error("ERR MULTI calls can not be nested"),
            Some(Kind::Local(LocalCmd::Quit)) => {
                self.tx = None;
                return (now(Reply::frame(Frame::ok())), Next::Close);
            }
            Some(Kind::Local(LocalCmd::Reset)) => self.reset(),
            Some(Kind::Data(..)) => self.queue(command),
            _ if command.label() == "watch" => {
                Frame::error("ERR WATCH inside MULTI is not allowed")
            }
            Some(Kind::Unsupported(reason)) => {
                self.fail_tx(Frame::error(unsupported_text(command.label(), reason)))
            }
            None => self.fail_tx(Frame::error(unsupported_text(
                &command.display_name(),
                None,
            ))),
            Some(_) => self.fail_tx(Frame::error(format!(
                "ERR '{}' inside MULTI is not supported by ringmaster router",
                command.label()
            ))),
        };
        (now(Reply::frame(frame)), Next::Continue)
    }

    /// Queues a data command, refusing it when its keys leave the transaction's shard.
    fn queue(&mut self, command: Command) -> Frame {
        let checked = match self.ctx.lease() {
            Some(lease) => match command_dest(&lease.routing, &command) {
                Ok(Some(dest)) => Ok(Some(dest)),
                Ok(None) => Err(CROSSSLOT.to_owned()),
                Err(text) => Err(text),
            },
            None => match command.spec.map(|spec| spec.keys(&command.args)) {
                Some(Err(error)) => Err(error.to_string()),
                _ => Ok(None),
            },
        };
        let dest = match checked {
            Ok(dest) => dest,
            Err(text) => return self.fail_tx(Frame::error(text)),
        };
        let Some(tx) = self.tx.as_mut() else {
            return Frame::error("ERR EXEC without MULTI");
        };
        if let Some(dest) = dest {
            if tx.dest.is_some_and(|existing| existing != dest) {
                tx.failed = true;
                return Frame::error(CROSSSLOT);
            }
            tx.dest = Some(dest);
        }
        tx.commands.push(command);
        Frame::Simple("QUEUED".to_owned())
    }

    /// Marks the transaction failed and returns `frame`.
    fn fail_tx(&mut self, frame: Frame) -> Frame {
        if let Some(tx) = self.tx.as_mut() {
            tx.failed = true;
        }
        frame
    }

    fn exec(&mut self) -> Dispatched {
        let Some(tx) = self.tx.take() else {
            return now(Reply::frame(Frame::error("ERR EXEC without MULTI")));
        };
        if tx.failed {
            return now(Reply::error(
                "EXECABORT Transaction discarded because of previous errors.",
                Outcome::Error,
            ));
        }
        if tx.commands.is_empty() {
            return now(Reply::frame(Frame::Array(Vec::new())));
        }
        dispatch::transaction(&self.ctx, self.slot, tx.commands)
    }
}

/// SELECT: database 0 only.
fn select(db: &[u8]) -> Frame {
    match super::resp::parse_int(db) {
        Some(0) => Frame::ok(),
        Some(_) => {
            Frame::error("ERR DB index is out of range (ringmaster router serves database 0 only)")
        }
        None => Frame::error("ERR value is not an integer or out of range"),
    }
}

/// COMMAND and its sub-commands: enough for redis-cli and client libraries.
fn command_info(command: &Command) -> Frame {
    let sub = command.arg_upper(1).unwrap_or_default();
    match sub.as_str() {
        "" | "DOCS" | "LIST" => Frame::Array(Vec::new()),
        "COUNT" => Frame::Integer(super::commands::all().count() as i64),
        "INFO" => Frame::Array(vec![Frame::Null; command.args.len().saturating_sub(2)]),
        _ => Frame::error(unsupported_text(
            &format!("command|{}", sub.to_ascii_lowercase()),
            None,
        )),
    }
}

/// HELLO's reply in RESP2: the map as a flat array.
fn hello_reply(id: u64) -> Frame {
    let text = |s: &str| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()));
    Frame::Array(vec![
        text("server"),
        text("ringmaster"),
        text("version"),
        text(env!("CARGO_PKG_VERSION")),
        text("proto"),
        Frame::Integer(2),
        text("id"),
        Frame::Integer(i64::try_from(id).unwrap_or(i64::MAX)),
        text("mode"),
        text("standalone"),
        text("role"),
        text("master"),
        text("modules"),
        Frame::Array(Vec::new()),
    ])
}

fn now(reply: Reply) -> Dispatched {
    Dispatched::ready(reply)
}

fn encode(reply: &Reply, out: &mut BytesMut) {
    match &reply.body {
        Body::Frame(frame) => frame.encode(out),
        Body::Value(value) => encode_value(value, out),
    }
}

/// A reply future polled once: done, or still running (its command is written).
enum Started {
    Done(Reply),
    Running(ReplyFuture),
}

impl Started {
    fn into_future(self) -> ReplyFuture {
        match self {
            Started::Done(reply) => ready(reply),
            Started::Running(future) => future,
        }
    }
}

/// Polls `future` once, so that the command it sends is written now, in dispatch
/// order. Its waker is re-registered when the pipeline polls it again.
///
/// The future runs outside Tokio's cooperative budget: with the budget spent (after
/// a hundred-odd commands of one pipeline), a lock or channel would answer `Pending`
/// without queueing the command, and later polls could write it out of order.
fn start(future: impl Future<Output = Reply> + Send + 'static) -> Started {
    let mut future = tokio::task::unconstrained(future).boxed();
    let mut cx = TaskContext::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(reply) => Started::Done(reply),
        Poll::Pending => Started::Running(future),
    }
}
