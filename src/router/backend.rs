//! Connections to the shards: per address and database, a few pipelined connections
//! (`redis::aio::MultiplexedConnection`), each connected on first use and reconnected
//! after a failure.
//!
//! * Every call has a deadline (`--backend-timeout`). When it passes, or the call
//!   fails, the connection is dropped and the next call connects again: a shard
//!   address is a Service ClusterIP whose backend changes on failover, and a
//!   connection to a vanished Pod may hang rather than fail.
//! * A client session always uses the same slot (its id modulo the slot count), so its
//!   commands to one shard travel in order over one connection. A command is written
//!   when its future is first polled, which the session does in the client's order;
//!   while a slot connects, commands wait on a fair lock and are written in the same
//!   order.
//! * Connections authenticate with the router's username and password and select
//!   database 0, or [`DIRTY_DB`](crate::api::routing::DIRTY_DB) for the dirty sets.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    Value,
};
use tokio::sync::{Mutex, MutexGuard};

/// Errors of a call to a shard (error *replies* are values, not errors).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The deadline passed.
    #[error("no reply from {addr} within {after:?}")]
    Timeout {
        /// The shard address.
        addr: String,
        /// The deadline.
        after: Duration,
    },
    /// Connecting or talking to the shard failed.
    #[error("{addr}: {source}")]
    Redis {
        /// The shard address.
        addr: String,
        /// The client error.
        #[source]
        source: redis::RedisError,
    },
    /// The address is not `host:port`.
    #[error("invalid shard address {0:?}")]
    Address(String),
}

/// How to reach the shards.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Username for AUTH.
    pub username: String,
    /// Password for AUTH; none means no AUTH.
    pub password: Option<String>,
    /// Deadline of every call.
    pub timeout: Duration,
    /// Connections per address and database.
    pub connections: usize,
}

/// Which connections of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Db {
    /// Database 0: the clients' data.
    Data,
    /// [`DIRTY_DB`](crate::api::routing::DIRTY_DB): the migrations' dirty sets.
    Dirty,
}

impl Db {
    fn number(self) -> i64 {
        match self {
            Db::Data => 0,
            Db::Dirty => crate::api::routing::DIRTY_DB,
        }
    }
}

/// The connection pools, by address and database; pools are shared between routing
/// table versions while their address stays.
#[derive(Debug)]
pub struct Backends {
    config: BackendConfig,
    pools: RwLock<HashMap<(String, Db), Arc<Pool>>>,
}

impl Backends {
    /// No pools yet; they are created on first use.
    pub fn new(config: BackendConfig) -> Self {
        Self {
            config,
            pools: RwLock::new(HashMap::new()),
        }
    }

    /// The pool of `addr` / `db`, created (without connecting) when new.
    pub fn pool(&self, addr: &str, db: Db) -> Result<Arc<Pool>, BackendError> {
        let key = (addr.to_owned(), db);
        if let Some(pool) = self.read_pools().get(&key) {
            return Ok(Arc::clone(pool));
        }
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(&key) {
            return Ok(Arc::clone(pool));
        }
        let pool = Arc::new(Pool::new(&self.config, addr, db)?);
        pools.insert(key, Arc::clone(&pool));
        Ok(pool)
    }

    /// Drops the pools of addresses not in `keep` (a shard moved or went away).
    pub fn retain(&self, keep: &HashSet<String>) {
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        pools.retain(|(addr, _), _| keep.contains(addr));
    }

    fn read_pools(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, Db), Arc<Pool>>> {
        self.pools.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Capacity of a connection's queue of commands not yet written.
///
/// Far above what can be in flight (clients × their pending commands): when that
/// queue is full, the redis crate enqueues a waiting command when its future is next
/// polled, in no particular order, which would break the order of a client's
/// commands. With room to spare, a command is enqueued by its future's first poll.
const PIPELINE_BUFFER: usize = 1 << 24;

/// A few connections to one address and database.
pub struct Pool {
    addr: String,
    client: redis::Client,
    config: AsyncConnectionConfig,
    timeout: Duration,
    slots: Vec<Slot>,
}

/// One pipelined connection: connected on first use, dropped after a failure or a
/// missed deadline (the next call connects again).
///
/// Every call locks the slot until its command is *written* to the connection (not
/// until the reply). The lock is fair, so commands are written in the order they
/// first asked for it, also while the connection is being (re)established.
#[derive(Default)]
struct Slot {
    live: Mutex<Option<Live>>,
    generations: AtomicU64,
}

/// An established connection and its generation (to drop only the one that failed).
#[derive(Clone)]
struct Live {
    generation: u64,
    conn: MultiplexedConnection,
}

/// What to send.
enum Request<'a> {
    One(&'a Cmd),
    Many(&'a Pipeline, usize),
}

/// What came back.
enum Response {
    One(Value),
    Many(Vec<Value>),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    fn new(config: &BackendConfig, addr: &str, db: Db) -> Result<Self, BackendError> {
        let client = client_for(config, addr, db)?;
        // Calls have their own deadline (`send`), which also drops the connection.
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(None)
            .set_pipeline_buffer_size(PIPELINE_BUFFER);
        Ok(Self {
            addr: addr.to_owned(),
            client,
            config: connection_config,
            timeout: config.timeout,
            slots: (0..config.connections.max(1))
                .map(|_| Slot::default())
                .collect(),
        })
    }

    /// The address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `cmd` on connection `slot` and waits for its reply, within the deadline.
    /// The command is written when the returned future is first polled (or, while the
    /// slot connects, in the order of first polls).
    pub async fn call(&self, slot: usize, cmd: &Cmd) -> Result<Value, BackendError> {
        match self.send(slot, Request::One(cmd)).await? {
            Response::One(value) => Ok(value),
            Response::Many(mut values) => Ok(values.pop().unwrap_or(Value::Nil)),
        }
    }

    /// Sends the commands of `pipeline` together on connection `slot` (nothing else is
    /// interleaved) and returns their `count` replies, within the deadline.
    pub async fn call_pipeline(
        &self,
        slot: usize,
        pipeline: &Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, BackendError> {
        match self.send(slot, Request::Many(pipeline, count)).await? {
            Response::Many(values) => Ok(values),
            Response::One(value) => Ok(vec![value]),
        }
    }

    async fn send(&self, index: usize, request: Request<'_>) -> Result<Response, BackendError> {
        let slot = &self.slots[index % self.slots.len()];
        let mut used = None;
        let exchange = async {
            let (guard, live) = self.acquire(slot).await?;
            used = Some(live.generation);
            let mut conn = live.conn;
            let send = async move {
                match request {
                    Request::One(cmd) => conn.send_packed_command(cmd).await.map(Response::One),
                    Request::Many(pipeline, count) => conn
                        .send_packed_commands(pipeline, 0, count)
                        .await
                        .map(Response::Many),
                }
            };
            let mut send = std::pin::pin!(send);
            // The first poll writes the command; then the next caller may write.
            let first = futures::poll!(send.as_mut());
            drop(guard);
            let reply = match first {
                Poll::Ready(reply) => reply,
                Poll::Pending => send.await,
            };
            reply.map_err(|source| self.redis_error(source))
        };
        let result = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout {
                addr: self.addr.clone(),
                after: self.timeout,
            }),
        };
        if let (Err(_), Some(generation)) = (&result, used) {
            Self::drop_connection(slot, generation).await;
        }
        result
    }

    /// Locks `slot` and returns its connection, connecting first when it has none.
    async fn acquire<'s>(
        &self,
        slot: &'s Slot,
    ) -> Result<(MutexGuard<'s, Option<Live>>, Live), BackendError> {
        let mut guard = slot.live.lock().await;
        if let Some(live) = guard.as_ref() {
            let live = live.clone();
            return Ok((guard, live));
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|source| self.redis_error(source))?;
        let live = Live {
            generation: slot.generations.fetch_add(1, Ordering::Relaxed),
            conn,
        };
        *guard = Some(live.clone());
        Ok((guard, live))
    }

    /// Forgets the slot's connection when it is still generation `generation`.
    async fn drop_connection(slot: &Slot, generation: u64) {
        let mut guard = slot.live.lock().await;
        if guard
            .as_ref()
            .is_some_and(|live| live.generation == generation)
        {
            *guard = None;
        }
    }

    fn redis_error(&self, source: redis::RedisError) -> BackendError {
        BackendError::Redis {
            addr: self.addr.clone(),
            source,
        }
    }
}

/// A client of `addr` (`host:port`) with the router's credentials and `db`.
fn client_for(config: &BackendConfig, addr: &str, db: Db) -> Result<redis::Client, BackendError> {
    let (host, port) = split_addr(addr).ok_or_else(|| BackendError::Address(addr.to_owned()))?;
    let mut redis_settings = RedisConnectionInfo::default()
        .set_db(db.number())
        .set_skip_set_lib_name();
    if let Some(password) = &config.password {
        redis_settings = redis_settings
            .set_username(&config.username)
            .set_password(password);
    }
    let redis_error = |source| BackendError::Redis {
        addr: addr.to_owned(),
        source,
    };
    let info = ConnectionAddr::Tcp(host, port)
        .into_connection_info()
        .map_err(redis_error)?
        .set_redis_settings(redis_settings)
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).map_err(redis_error)
}

/// `host:port`, also `[v6]:port`.
fn split_addr(addr: &str) -> Option<(String, u16)> {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return Some((socket.ip().to_string(), socket.port()));
    }
    let (host, port) = addr.rsplit_once(':')?;
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(timeout: Duration) -> BackendConfig {
        BackendConfig {
            username: "default".into(),
            password: Some("pw".into()),
            timeout,
            connections: 2,
        }
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(split_addr("10.0.0.1:6379"), Some(("10.0.0.1".into(), 6379)));
        assert_eq!(split_addr("[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(
            split_addr("redis.ns.svc:6379"),
            Some(("redis.ns.svc".into(), 6379))
        );
        assert_eq!(split_addr("nohost"), None);
        assert_eq!(split_addr(":6379"), None);
        assert_eq!(split_addr("h:notaport"), None);
    }

    #[tokio::test]
    async fn pools_are_shared_and_retained_by_address() {
        let backends = Backends::new(config(Duration::from_secs(1)));
        let a = backends.pool("127.0.0.1:1", Db::Data).unwrap();
        let again = backends.pool("127.0.0.1:1", Db::Data).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let dirty = backends.pool("127.0.0.1:1", Db::Dirty).unwrap();
        assert!(!Arc::ptr_eq(&a, &dirty));
        assert!(matches!(
            backends.pool("bad", Db::Data),
            Err(BackendError::Address(_))
        ));
        backends.retain(&HashSet::new());
        let fresh = backends.pool("127.0.0.1:1", Db::Data).unwrap();
        assert!(!Arc::ptr_eq(&a, &fresh));
    }

    #[tokio::test]
    async fn unreachable_shard_fails_within_the_deadline() {
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let backends = Backends::new(config(Duration::from_millis(300)));
        let pool = backends.pool(&addr, Db::Data).unwrap();
        let started = std::time::Instant::now();
        let result = pool.call(0, &redis::cmd("PING")).await;
        assert!(result.is_err(), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
