//! SQL connections of the agent: to its own server and to an upstream, as the
//! superuser, over TCP.

use std::net::IpAddr;
use std::time::Duration;

use crate::instance::config::Config;
use crate::instance::error::ProbeError;

/// A connected client; its connection task ends when it is dropped.
pub struct Session {
    /// The client.
    pub client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects to `host:port` as the superuser within `timeout`.
pub async fn connect(
    c: &Config,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Session, ProbeError> {
    let mut pg = tokio_postgres::Config::new();
    match host.parse::<IpAddr>() {
        Ok(ip) => pg.hostaddr(ip),
        Err(_) => pg.host(host),
    };
    pg.port(port)
        .user(&c.username)
        .password(c.password.expose())
        .dbname("postgres")
        .application_name("ringmaster-agent")
        // the agent's own writes (replication role, slots) must not wait for a
        // synchronous standby: the standbys need them to connect in the first place
        .options("-c synchronous_commit=local")
        .connect_timeout(timeout);
    let connect = async {
        let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok::<_, ProbeError>(Session { client, driver })
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

/// Connects to this instance's own server.
pub async fn local(c: &Config, timeout: Duration) -> Result<Session, ProbeError> {
    connect(c, &c.bind.to_string(), c.db_port, timeout).await
}

/// A quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted SQL string literal (standard_conforming_strings is on).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
