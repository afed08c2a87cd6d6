//! Clients of a Redis ShardedCluster's routers: a preload, a continuous and bounded
//! read/write load through the router Service that checks read-your-writes, and the
//! audit after a migration (through the router, and shard by shard directly).
//!
//! Every key is `k:<n>` (one in ten `k:{t<n mod 101>}:<n>`, with a hash tag); its
//! value is a version, increasing over the whole run. The [`Ledger`] remembers, per
//! key, the highest version whose `SET` was acknowledged and the highest version ever
//! sent (a `SET` that failed may still have been applied): a read must return a
//! version in `[acknowledged, sent]`.
//!
//! A load worker owns the keys `n ≡ w (mod workers)`, so its reads of its own keys
//! race with nothing: a `GET` after an acknowledged `SET` that returns an older
//! version (or nothing) is a read-your-write violation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    RedisError,
};
use ringmaster::ring::Ring;

/// Deadline of one command of the load: longer than the router's 5 s hold of writes
/// to a frozen range.
pub const OP_DEADLINE: Duration = Duration::from_secs(8);
/// Deadline of a connection attempt (with `AUTH`).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(3);
/// Pause after a failed command before the next one.
const ERROR_PAUSE: Duration = Duration::from_millis(20);
/// Keys per pipeline of the preload and the audit.
const PIPELINE: usize = 500;
/// Attempts of one pipeline of the preload or the audit.
const ATTEMPTS: usize = 10;
/// Examples kept per kind of finding.
const EXAMPLES: usize = 8;

/// A Redis endpoint: the router Service or a shard's `-rw` Service.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// User.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Connects and authenticates (deadline [`CONNECT_DEADLINE`]; commands
/// [`OP_DEADLINE`]).
pub async fn connect(endpoint: &Endpoint) -> redis::RedisResult<MultiplexedConnection> {
    let (host, port) = endpoint.addr.rsplit_once(':').ok_or_else(|| {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "not host:port",
            endpoint.addr.clone(),
        ))
    })?;
    let port: u16 = port.parse().map_err(|_| {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "bad port",
            endpoint.addr.clone(),
        ))
    })?;
    let info = ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()?
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_username(&endpoint.username)
                .set_password(&endpoint.password)
                .set_skip_set_lib_name(),
        );
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_DEADLINE))
        .set_response_timeout(Some(OP_DEADLINE));
    let client = Client::open(info)?;
    let attempt = client.get_multiplexed_async_connection_with_config(&config);
    match tokio::time::timeout(CONNECT_DEADLINE * 2, attempt).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting to {}", endpoint.addr),
        ))),
    }
}

/// The key of index `n`: `k:<n>`, or `k:{t<n mod 101>}:<n>` for one in ten.
pub fn key(n: u64) -> String {
    if n % 10 == 7 {
        format!("k:{{t{}}}:{n}", n % 101)
    } else {
        format!("k:{n}")
    }
}

/// The index of a key made by [`key`].
pub fn parse_key(key: &str) -> Option<u64> {
    let n: u64 = key.rsplit(':').next()?.parse().ok()?;
    (self::key(n) == key).then_some(n)
}

/// What is known of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The highest version acknowledged.
    pub acked: Option<u64>,
    /// The highest version sent (acknowledged or not).
    pub sent: u64,
}

impl Entry {
    /// Whether `value` is a possible value of the key now: a version in `[acked,
    /// sent]`, or nothing when no write was acknowledged.
    pub fn admits(&self, value: Option<u64>) -> bool {
        match (self.acked, value) {
            (Some(acked), Some(v)) => v >= acked && v <= self.sent,
            (Some(_), None) => false,
            (None, Some(v)) => v >= 1 && v <= self.sent,
            (None, None) => true,
        }
    }

    /// Whether `value` shows a lost acknowledged write (older than acknowledged, or
    /// missing).
    pub fn lost(&self, value: Option<u64>) -> bool {
        match (self.acked, value) {
            (Some(acked), Some(v)) => v < acked,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// Every key written and its versions.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Per key index.
    pub entries: BTreeMap<u64, Entry>,
    /// The next version to write.
    pub next_version: u64,
    /// The next unused key index.
    pub next_key: u64,
}

impl Ledger {
    /// A ledger whose first version is 1.
    pub fn new() -> Self {
        Self {
            next_version: 1,
            ..Self::default()
        }
    }

    /// Keys with an acknowledged write.
    pub fn acked_keys(&self) -> usize {
        self.entries.values().filter(|e| e.acked.is_some()).count()
    }
}

/// Writes keys `keys` once each through `router` in pipelines, retrying a failed
/// pipeline (bounded); every write ends acknowledged or the preload fails.
pub async fn preload(
    router: &Endpoint,
    ledger: &mut Ledger,
    keys: Range<u64>,
) -> anyhow::Result<()> {
    let mut conn: Option<MultiplexedConnection> = None;
    let indexes: Vec<u64> = keys.clone().collect();
    for chunk in indexes.chunks(PIPELINE) {
        for attempt in 1..=ATTEMPTS {
            let mut pipe = redis::pipe();
            let mut versions = Vec::with_capacity(chunk.len());
            for &n in chunk {
                let version = ledger.next_version;
                ledger.next_version += 1;
                let entry = ledger.entries.entry(n).or_default();
                entry.sent = entry.sent.max(version);
                pipe.cmd("SET").arg(key(n)).arg(version).ignore();
                versions.push(version);
            }
            match try_pipeline::<()>(router, &mut conn, &pipe).await {
                Ok(()) => {
                    for (&n, version) in chunk.iter().zip(versions) {
                        let entry = ledger.entries.entry(n).or_default();
                        entry.acked = Some(entry.acked.map_or(version, |a| a.max(version)));
                    }
                    break;
                }
                Err(_) if attempt < ATTEMPTS => backoff(attempt).await,
                Err(e) => {
                    return Err(anyhow!(
                        "preloading keys {} to {} through {}: {e}",
                        chunk[0],
                        chunk[chunk.len() - 1],
                        router.addr
                    ));
                }
            }
        }
    }
    ledger.next_key = ledger.next_key.max(keys.end);
    Ok(())
}

/// Back-off between attempts of a pipeline (not a synchronisation: the next attempt
/// checks the outcome).
async fn backoff(attempt: usize) {
    let millis = 100u64 * u64::try_from(attempt).unwrap_or(1);
    tokio::time::sleep(Duration::from_millis(millis.min(1000))).await;
}

/// One attempt of `pipe` on `endpoint` (connecting first when `conn` is `None`) within
/// twice [`OP_DEADLINE`]; a failed attempt drops the connection.
async fn try_pipeline<T: redis::FromRedisValue>(
    endpoint: &Endpoint,
    conn: &mut Option<MultiplexedConnection>,
    pipe: &redis::Pipeline,
) -> Result<T, String> {
    let attempt = async {
        if conn.is_none() {
            *conn = Some(connect(endpoint).await?);
        }
        pipe.query_async::<T>(conn.as_mut().expect("connected"))
            .await
    };
    let error = match tokio::time::timeout(OP_DEADLINE * 2, attempt).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {:?}", OP_DEADLINE * 2),
    };
    *conn = None;
    Err(error)
}

/// The version a `GET` returned (a value that is no number reads as 0, a version never
/// sent).
fn read_version(value: Option<&str>) -> Option<u64> {
    value.map(|v| v.parse::<u64>().unwrap_or(0))
}

/// Counts `n` more of error `message`, keeping at most [`EXAMPLES`] distinct messages.
fn note_error(examples: &mut BTreeMap<String, u64>, message: String, n: u64) {
    if examples.len() < EXAMPLES || examples.contains_key(&message) {
        *examples.entry(message).or_default() += n;
    }
}

/// Client errors by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// `-TRYAGAIN` replies (writes held past the router's hold timeout, or no table).
    pub tryagain: u64,
    /// Connection errors: refused, reset, closed, timed out.
    pub connection: u64,
    /// Any other error reply.
    pub other: u64,
}

impl ErrorCounts {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.tryagain + self.connection + self.other
    }

    fn add(&mut self, other: &ErrorCounts) {
        self.tryagain += other.tryagain;
        self.connection += other.connection;
        self.other += other.other;
    }
}

/// Bounds of a load.
#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    /// Concurrent client connections, each sequential.
    pub workers: u64,
    /// Most commands in all.
    pub max_ops: u64,
    /// Most time.
    pub max_time: Duration,
    /// Share (percent) of the writes that create a new key; the others overwrite a
    /// key of the ledger.
    pub new_key_percent: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            workers: 3,
            max_ops: 2_000_000,
            max_time: Duration::from_secs(240),
            new_key_percent: 30,
        }
    }
}

/// What a load did.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Commands sent (SET and GET, failed ones included; connection attempts that
    /// failed count as one command each).
    pub ops: u64,
    /// `SET`s sent.
    pub sets: u64,
    /// `SET`s acknowledged.
    pub acked: u64,
    /// `GET`s that returned.
    pub reads: u64,
    /// Client errors.
    pub errors: ErrorCounts,
    /// Reads that returned a version older than the acknowledged one (or nothing).
    pub ryw_violations: u64,
    /// Some of them: `key: got …, acknowledged …`.
    pub ryw_examples: Vec<String>,
    /// Some error messages, with their count.
    pub error_examples: BTreeMap<String, u64>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Errors per command.
    pub fn error_rate(&self) -> f64 {
        if self.ops == 0 {
            return 0.0;
        }
        self.errors.total() as f64 / self.ops as f64
    }

    /// One line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} ops in {:.1?} ({:.0}/s): {} SETs ({} acknowledged), {} GETs; errors {} \
             ({:.3}%: TRYAGAIN {}, connection {}, other {}); read-your-write violations {}{}",
            self.ops,
            self.elapsed,
            self.ops as f64 / self.elapsed.as_secs_f64().max(0.001),
            self.sets,
            self.acked,
            self.reads,
            self.errors.total(),
            self.error_rate() * 100.0,
            self.errors.tryagain,
            self.errors.connection,
            self.errors.other,
            self.ryw_violations,
            if self.error_examples.is_empty() {
                String::new()
            } else {
                format!("; errors seen: {:?}", self.error_examples)
            }
        )
    }

    fn merge(&mut self, other: LoadReport) {
        self.ops += other.ops;
        self.sets += other.sets;
        self.acked += other.acked;
        self.reads += other.reads;
        self.errors.add(&other.errors);
        self.ryw_violations += other.ryw_violations;
        let room = EXAMPLES.saturating_sub(self.ryw_examples.len());
        self.ryw_examples
            .extend(other.ryw_examples.into_iter().take(room));
        for (message, n) in other.error_examples {
            note_error(&mut self.error_examples, message, n);
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// Counters shared by the workers, readable while the load runs.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    ops: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    ryw_violations: AtomicU64,
    versions: AtomicU64,
}

/// A running load.
pub struct Load {
    shared: Arc<Shared>,
    workers: Vec<tokio::task::JoinHandle<(LoadReport, HashMap<u64, Entry>)>>,
}

impl Load {
    /// Starts `config.workers` workers through `router` over the keys of `ledger`
    /// (which they take over until [`Load::finish`]) and new keys.
    pub fn start(router: &Endpoint, ledger: &mut Ledger, config: LoadConfig) -> Self {
        let shared = Arc::new(Shared {
            versions: AtomicU64::new(ledger.next_version),
            ..Shared::default()
        });
        let workers = config.workers.max(1);
        let mut parts: Vec<HashMap<u64, Entry>> = (0..workers).map(|_| HashMap::new()).collect();
        for (n, entry) in std::mem::take(&mut ledger.entries) {
            parts[usize::try_from(n % workers).expect("small")].insert(n, entry);
        }
        let first_new_key = ledger.next_key;
        let started = Instant::now();
        let handles = parts
            .into_iter()
            .enumerate()
            .map(|(w, keys)| {
                let worker = Worker {
                    index: w as u64,
                    workers,
                    router: router.clone(),
                    config,
                    shared: Arc::clone(&shared),
                    keys,
                    first_new_key,
                    created: 0,
                    started,
                    rng: 0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Self {
            shared,
            workers: handles,
        }
    }

    /// Commands sent so far.
    pub fn ops(&self) -> u64 {
        self.shared.ops.load(Ordering::Relaxed)
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Relaxed)
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `n` more writes than now are acknowledged.
    pub async fn wait_progress(&self, n: u64, what: &str, timeout: Duration) -> anyhow::Result<()> {
        let target = self.acked() + n;
        ringmaster_e2e::wait_for(what, timeout, Duration::from_millis(100), || async {
            let acked = self.acked();
            if acked >= target {
                Ok(Some(()))
            } else {
                Err(anyhow!(
                    "{acked} of {target} writes acknowledged, {} errors, {} ops",
                    self.errors(),
                    self.ops()
                ))
            }
        })
        .await
    }

    /// Stops the workers, hands the keys back to `ledger` and returns the report.
    pub async fn finish(self, ledger: &mut Ledger) -> LoadReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut report = LoadReport::default();
        for handle in self.workers {
            let (part, keys) = handle.await.expect("a load worker panicked");
            report.merge(part);
            ledger.entries.extend(keys);
        }
        ledger.next_version = ledger
            .next_version
            .max(self.shared.versions.load(Ordering::Relaxed));
        ledger.next_key = ledger
            .entries
            .keys()
            .next_back()
            .map_or(ledger.next_key, |&n| ledger.next_key.max(n + 1));
        report
    }
}

/// What an error was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `-TRYAGAIN`.
    TryAgain,
    /// The connection failed or timed out: reconnect.
    Connection,
    /// Another error reply.
    Other,
}

/// Classifies a client error.
pub fn classify(e: &RedisError) -> ErrorKind {
    if e.code() == Some("TRYAGAIN") {
        ErrorKind::TryAgain
    } else if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
    {
        ErrorKind::Connection
    } else {
        ErrorKind::Other
    }
}

struct Worker {
    index: u64,
    workers: u64,
    router: Endpoint,
    config: LoadConfig,
    shared: Arc<Shared>,
    keys: HashMap<u64, Entry>,
    first_new_key: u64,
    created: u64,
    started: Instant,
    rng: u64,
}

impl Worker {
    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn done(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
            || self.shared.ops.load(Ordering::Relaxed) >= self.config.max_ops
            || self.started.elapsed() >= self.config.max_time
    }

    /// A key of this worker: a new one, or one it wrote before.
    fn pick_write(&mut self, owned: &[u64]) -> (u64, bool) {
        if owned.is_empty() || self.random() % 100 < self.config.new_key_percent {
            // new keys of worker w: first_new_key + w + k × workers
            let n = self.first_new_key + self.index + self.created * self.workers;
            self.created += 1;
            (n, true)
        } else {
            let i = usize::try_from(self.random() % owned.len() as u64).expect("small");
            (owned[i], false)
        }
    }

    async fn run(mut self) -> (LoadReport, HashMap<u64, Entry>) {
        let mut report = LoadReport::default();
        let mut owned: Vec<u64> = self.keys.keys().copied().collect();
        owned.sort_unstable();
        let mut conn: Option<MultiplexedConnection> = None;
        while !self.done() {
            let (n, new) = self.pick_write(&owned);
            if new && !self.keys.contains_key(&n) {
                owned.push(n);
            }
            let version = self.shared.versions.fetch_add(1, Ordering::Relaxed);
            let entry = self.keys.entry(n).or_default();
            entry.sent = entry.sent.max(version);
            report.sets += 1;
            let set = redis::cmd("SET").arg(key(n)).arg(version).clone();
            match self.command::<()>(&mut conn, &set, &mut report).await {
                Some(()) => {
                    let entry = self.keys.get_mut(&n).expect("written key");
                    entry.acked = Some(entry.acked.map_or(version, |a| a.max(version)));
                    report.acked += 1;
                    self.shared.acked.fetch_add(1, Ordering::Relaxed);
                }
                None => continue,
            }
            if self.done() {
                break;
            }
            // read the key just written, or another acknowledged one of this worker
            let read = if self.random().is_multiple_of(2) {
                n
            } else {
                let i = usize::try_from(self.random() % owned.len() as u64).expect("small");
                owned[i]
            };
            let Some(expected) = self.keys.get(&read).copied() else {
                continue;
            };
            let get = redis::cmd("GET").arg(key(read)).clone();
            let Some(value) = self
                .command::<Option<String>>(&mut conn, &get, &mut report)
                .await
            else {
                continue;
            };
            report.reads += 1;
            if !expected.admits(read_version(value.as_deref())) {
                report.ryw_violations += 1;
                self.shared.ryw_violations.fetch_add(1, Ordering::Relaxed);
                if report.ryw_examples.len() < EXAMPLES {
                    report.ryw_examples.push(format!(
                        "{}: read {value:?}, acknowledged {:?}, sent {} (after {:.1?})",
                        key(read),
                        expected.acked,
                        expected.sent,
                        self.started.elapsed()
                    ));
                }
            }
        }
        report.elapsed = self.started.elapsed();
        (report, self.keys)
    }

    /// One command with reconnection; `None` after an error (counted).
    async fn command<T: redis::FromRedisValue>(
        &mut self,
        conn: &mut Option<MultiplexedConnection>,
        cmd: &redis::Cmd,
        report: &mut LoadReport,
    ) -> Option<T> {
        self.shared.ops.fetch_add(1, Ordering::Relaxed);
        report.ops += 1;
        let result = async {
            if conn.is_none() {
                *conn = Some(connect(&self.router).await?);
            }
            let c = conn.as_mut().expect("connected");
            cmd.query_async::<T>(c).await
        };
        let error = match tokio::time::timeout(OP_DEADLINE + Duration::from_secs(1), result).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(e)) => {
                let kind = classify(&e);
                let text = e.to_string();
                (kind, text)
            }
            Err(_) => (
                ErrorKind::Connection,
                format!("no answer within {OP_DEADLINE:?}"),
            ),
        };
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        match error.0 {
            ErrorKind::TryAgain => report.errors.tryagain += 1,
            ErrorKind::Connection => {
                report.errors.connection += 1;
                *conn = None;
            }
            ErrorKind::Other => report.errors.other += 1,
        }
        let message: String = error.1.chars().take(160).collect();
        note_error(&mut report.error_examples, message, 1);
        tokio::time::sleep(ERROR_PAUSE).await;
        None
    }
}

/// What the audit found.
#[derive(Clone, Debug, Default)]
pub struct Audit {
    /// Keys of the ledger read through the router.
    pub checked: usize,
    /// Keys with an acknowledged write, read through the router, whose value is older
    /// than acknowledged or missing: `key: got …, acknowledged …`.
    pub lost_via_router: Vec<String>,
    /// Keys whose value (router or owner) is no version ever sent.
    pub impossible: Vec<String>,
    /// Acknowledged keys not on their owner under the ring.
    pub missing_on_owner: Vec<String>,
    /// Keys on a shard that does not own them: `key on shard s (owner o)`.
    pub misplaced: Vec<String>,
    /// Keys on a shard that are not the load's.
    pub foreign: Vec<String>,
    /// Acknowledged keys whose value on their owner is older than acknowledged.
    pub lost_on_owner: Vec<String>,
    /// Keys per shard (database 0).
    pub per_shard: BTreeMap<i32, usize>,
}

impl Audit {
    /// Acknowledged writes lost (through the router or on the owner), each key once.
    pub fn lost(&self) -> usize {
        let keys: BTreeSet<&str> = self
            .lost_via_router
            .iter()
            .chain(&self.lost_on_owner)
            .chain(&self.missing_on_owner)
            .map(|s| s.split(' ').next().unwrap_or_default())
            .collect();
        keys.len()
    }

    /// One paragraph for failure messages and the output.
    pub fn summary(&self) -> String {
        let some = |v: &[String]| {
            format!(
                "{} {:?}",
                v.len(),
                v.iter().take(EXAMPLES).collect::<Vec<_>>()
            )
        };
        format!(
            "audit of {} keys: keys per shard {:?}; lost through the router {}; lost on \
             the owner {}; missing on the owner {}; misplaced {}; impossible values {}; \
             foreign keys {}",
            self.checked,
            self.per_shard,
            some(&self.lost_via_router),
            some(&self.lost_on_owner),
            some(&self.missing_on_owner),
            some(&self.misplaced),
            some(&self.impossible),
            some(&self.foreign)
        )
    }

    /// Nothing lost (beyond `max_lost` acknowledged writes), misplaced, duplicated
    /// or unexplained.
    pub fn clean(&self, max_lost: usize) -> bool {
        self.lost() <= max_lost
            && self.misplaced.is_empty()
            && self.impossible.is_empty()
            && self.foreign.is_empty()
    }
}

/// Runs a pipeline of `GET`s of `keys` on `endpoint`, retrying (bounded) on errors.
async fn read_values(
    endpoint: &Endpoint,
    conn: &mut Option<MultiplexedConnection>,
    keys: &[String],
) -> anyhow::Result<Vec<Option<String>>> {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("GET").arg(k);
    }
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match try_pipeline(endpoint, conn, &pipe).await {
            Ok(values) => return Ok(values),
            Err(e) => last = e,
        }
        backoff(attempt).await;
    }
    Err(anyhow!(
        "reading {} keys from {} failed {ATTEMPTS} times; last: {last}",
        keys.len(),
        endpoint.addr
    ))
}

/// Every key of database 0 of `endpoint` (a full `SCAN`).
pub async fn scan_all(endpoint: &Endpoint) -> anyhow::Result<BTreeSet<String>> {
    let mut conn = connect(endpoint)
        .await
        .with_context(|| format!("connecting to {}", endpoint.addr))?;
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    for _ in 0..1_000_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .with_context(|| format!("SCAN {cursor} on {}", endpoint.addr))?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
    Err(anyhow!("SCAN of {} did not end", endpoint.addr))
}

/// Files a value read of a key under `lost` (older than acknowledged, or missing) or
/// `impossible` (no version sent) unless its ledger `entry` admits it; `read` names
/// the key, where it was read and the value.
fn judge(
    entry: &Entry,
    value: Option<&str>,
    read: impl FnOnce() -> String,
    lost: &mut Vec<String>,
    impossible: &mut Vec<String>,
) {
    let version = read_version(value);
    if entry.lost(version) {
        lost.push(format!("{}, acknowledged {:?}", read(), entry.acked));
    } else if !entry.admits(version) {
        impossible.push(format!(
            "{}, acknowledged {:?}, sent {}",
            read(),
            entry.acked,
            entry.sent
        ));
    }
}

/// Audits `ledger` after a migration: (1) every key read through `router` holds a
/// version in `[acknowledged, sent]`; (2) reading every shard of `shards` directly,
/// each key is only on its owner under `ring`, holds a possible version there, and
/// no acknowledged key is missing.
pub async fn audit(
    router: &Endpoint,
    shards: &BTreeMap<i32, Endpoint>,
    ring: &Ring,
    ledger: &Ledger,
) -> anyhow::Result<Audit> {
    let mut audit = Audit::default();
    let entries: Vec<(u64, Entry)> = ledger.entries.iter().map(|(&n, &e)| (n, e)).collect();
    let mut conn = None;
    for chunk in entries.chunks(PIPELINE) {
        let keys: Vec<String> = chunk.iter().map(|(n, _)| key(*n)).collect();
        let values = read_values(router, &mut conn, &keys).await?;
        for ((k, (_, entry)), value) in keys.iter().zip(chunk).zip(values) {
            audit.checked += 1;
            judge(
                entry,
                value.as_deref(),
                || format!("{k} (router): got {value:?}"),
                &mut audit.lost_via_router,
                &mut audit.impossible,
            );
        }
    }
    let mut found: HashMap<u64, Vec<i32>> = HashMap::new();
    for (&index, endpoint) in shards {
        let keys = scan_all(endpoint).await?;
        audit.per_shard.insert(index, keys.len());
        let mut owned = Vec::new();
        for k in keys {
            let Some(n) = parse_key(&k) else {
                audit.foreign.push(format!("{k} on shard {index}"));
                continue;
            };
            found.entry(n).or_default().push(index);
            let owner = ring.owner_of_key(k.as_bytes());
            if owner != Some(index) {
                audit
                    .misplaced
                    .push(format!("{k} on shard {index} (owner {owner:?})"));
            } else {
                owned.push((n, k));
            }
        }
        // values on the owner
        let mut direct = None;
        for chunk in owned.chunks(PIPELINE) {
            let keys: Vec<String> = chunk.iter().map(|(_, k)| k.clone()).collect();
            let values = read_values(endpoint, &mut direct, &keys).await?;
            for ((n, k), value) in chunk.iter().zip(values) {
                let entry = ledger.entries.get(n).copied().unwrap_or_default();
                if value.is_none() {
                    // deleted between the SCAN and the GET: nobody deletes keys
                    audit
                        .missing_on_owner
                        .push(format!("{k} vanished from shard {index} during the audit"));
                } else {
                    judge(
                        &entry,
                        value.as_deref(),
                        || format!("{k} on shard {index}: {value:?}"),
                        &mut audit.lost_on_owner,
                        &mut audit.impossible,
                    );
                }
            }
        }
    }
    for (&n, entry) in &ledger.entries {
        if entry.acked.is_none() {
            continue;
        }
        let k = key(n);
        let owner = ring.owner_of_key(k.as_bytes());
        let on = found.get(&n).map(Vec::as_slice).unwrap_or_default();
        if !owner.is_some_and(|o| on.contains(&o)) {
            audit.missing_on_owner.push(format!(
                "{k} (owner {owner:?}, found on {on:?}, acknowledged {:?})",
                entry.acked
            ));
        }
    }
    Ok(audit)
}
