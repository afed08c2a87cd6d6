//! Connections: [`Endpoint`] → [`connect`] → [`Conn`], a multiplexed connection to one
//! database of one server, with a deadline on every call.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue,
    IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisError, Value,
};

use super::error::{MigrateError, Result};

/// Where a shard's primary is reached and who to authenticate as.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// ACL user (`default` for the default user).
    pub username: String,
    /// The user's password.
    pub password: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A connection to database `db` of one server; every call has the deadline given to
/// [`connect`]. Cloning shares the underlying multiplexed connection.
#[derive(Clone)]
pub struct Conn {
    con: MultiplexedConnection,
    address: String,
    db: i64,
    timeout: Duration,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("address", &self.address)
            .field("db", &self.db)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Connects to `endpoint`, authenticates and selects `db`, within `timeout`; every
/// later call on the connection has the same deadline.
pub async fn connect(endpoint: &Endpoint, db: i64, timeout: Duration) -> Result<Conn> {
    let connect_error = |source: RedisError| MigrateError::Connect {
        address: endpoint.address.clone(),
        db,
        username: endpoint.username.clone(),
        source,
    };
    let info = connection_info(endpoint, db).map_err(connect_error)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let client = Client::open(info).map_err(connect_error)?;
    let con = within(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .ok_or_else(|| MigrateError::ConnectTimeout {
        address: endpoint.address.clone(),
        db,
        timeout,
    })?
    .map_err(connect_error)?;
    Ok(Conn {
        con,
        address: endpoint.address.clone(),
        db,
        timeout,
    })
}

/// The client's connection info for `endpoint`: TCP, the user and password, `db`.
fn connection_info(endpoint: &Endpoint, db: i64) -> Result<ConnectionInfo, RedisError> {
    let (host, port) = split_address(&endpoint.address).ok_or_else(|| {
        RedisError::from((
            ::redis::ErrorKind::InvalidClientConfig,
            "address is not host:port",
        ))
    })?;
    Ok(ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()?
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_username(&endpoint.username)
                .set_password(&endpoint.password)
                .set_db(db)
                .set_skip_set_lib_name(),
        ))
}

/// `host:port` (or `[v6]:port`) split into host and port.
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

impl Conn {
    /// `host:port` of the server.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The selected database.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `cmd` within the deadline; `operation` names it in errors.
    pub(crate) async fn query<T: FromRedisValue>(
        &mut self,
        operation: impl FnOnce() -> String,
        cmd: &Cmd,
    ) -> Result<T> {
        let con = &mut self.con;
        let answer = within(self.timeout, cmd.query_async::<T>(con)).await;
        self.settle(operation, answer)
    }

    /// Runs `pipe` (built with [`pipeline`]) within the deadline: one reply per
    /// command, error replies as [`Value::ServerError`] rather than an `Err`.
    pub(crate) async fn pipeline(
        &mut self,
        operation: impl FnOnce() -> String,
        pipe: &Pipeline,
    ) -> Result<Vec<Value>> {
        if pipe.is_empty() {
            return Ok(Vec::new());
        }
        let con = &mut self.con;
        let answer = within(self.timeout, pipe.query_async::<Vec<Value>>(con)).await;
        let replies = self.settle(operation, answer)?;
        if replies.len() != pipe.len() {
            return Err(self.unexpected(
                || "pipeline".to_owned(),
                format!("{} replies to {} commands", replies.len(), pipe.len()),
            ));
        }
        Ok(replies)
    }

    /// Turns a timed call's outcome into the crate's error.
    fn settle<T>(
        &self,
        operation: impl FnOnce() -> String,
        answer: Option<Result<T, RedisError>>,
    ) -> Result<T> {
        match answer {
            None => Err(MigrateError::Timeout {
                address: self.address.clone(),
                db: self.db,
                operation: operation(),
                timeout: self.timeout,
            }),
            Some(Err(source)) => Err(MigrateError::Command {
                address: self.address.clone(),
                db: self.db,
                operation: operation(),
                source,
            }),
            Some(Ok(value)) => Ok(value),
        }
    }

    /// An [`MigrateError::Unexpected`] of this connection.
    pub(crate) fn unexpected(
        &self,
        operation: impl FnOnce() -> String,
        reply: impl Into<String>,
    ) -> MigrateError {
        MigrateError::Unexpected {
            address: self.address.clone(),
            db: self.db,
            operation: operation(),
            reply: reply.into(),
        }
    }

    /// A [`MigrateError::Key`] of this connection.
    pub(crate) fn key_error(
        &self,
        operation: &'static str,
        key: &[u8],
        reply: impl Into<String>,
    ) -> MigrateError {
        MigrateError::Key {
            address: self.address.clone(),
            db: self.db,
            operation,
            key: super::error::printable_key(key),
            reply: reply.into(),
        }
    }
}

/// A pipeline whose error replies come back per command (see [`Conn::pipeline`]).
pub(crate) fn pipeline() -> Pipeline {
    let mut pipe = ::redis::pipe();
    pipe.ignore_errors();
    pipe
}

/// `future` unless `timeout` passes first (`None`).
async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, future).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split() {
        assert_eq!(split_address("10.0.0.5:6379"), Some(("10.0.0.5", 6379)));
        assert_eq!(split_address("[::1]:7000"), Some(("::1", 7000)));
        assert_eq!(split_address("c-0-rw:6379"), Some(("c-0-rw", 6379)));
        assert_eq!(split_address("nohost"), None);
        assert_eq!(split_address(":6379"), None);
        assert_eq!(split_address("h:port"), None);
    }

    #[test]
    fn debug_hides_the_password() {
        let e = Endpoint {
            address: "h:1".into(),
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
