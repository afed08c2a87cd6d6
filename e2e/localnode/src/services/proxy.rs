//! The user-space proxy: one listener per Service IP and port, forwarding each
//! connection to an endpoint.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::endpoints::{Backends, Desired};
use super::watch::AbortOnDrop;

/// How long a connection attempt to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Delay between attempts to bind a listen address.
const BIND_RETRY: Duration = Duration::from_secs(2);
/// Bind failures are logged at warn level every this many attempts.
const BIND_WARN_EVERY: u32 = 15;

/// The running listeners.
#[derive(Default)]
pub struct Proxies {
    listeners: HashMap<SocketAddr, Listener>,
}

/// One running listener and the channel its backends are updated through.
struct Listener {
    backends: watch::Sender<Backends>,
    _task: AbortOnDrop,
}

/// Listen addresses to open and to close.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenerDiff {
    /// Addresses to start listening on.
    pub added: Vec<SocketAddr>,
    /// Addresses to stop listening on.
    pub removed: Vec<SocketAddr>,
}

/// Compares the current listen addresses with the desired ones.
pub fn diff<'a>(
    current: impl IntoIterator<Item = &'a SocketAddr>,
    desired: impl IntoIterator<Item = &'a SocketAddr>,
) -> ListenerDiff {
    let current: BTreeSet<_> = current.into_iter().copied().collect();
    let desired: BTreeSet<_> = desired.into_iter().copied().collect();
    ListenerDiff {
        added: desired.difference(&current).copied().collect(),
        removed: current.difference(&desired).copied().collect(),
    }
}

impl Proxies {
    /// Opens, closes and updates listeners to match `desired`. Established connections
    /// of closed listeners are left alone, like conntrack entries.
    pub fn apply(&mut self, mut desired: Desired) {
        let d = diff(self.listeners.keys(), desired.keys());
        for addr in &d.removed {
            self.listeners.remove(addr);
            tracing::info!(%addr, "service listener closed");
        }
        for addr in &d.added {
            let backends = desired.remove(addr).unwrap_or_default();
            tracing::info!(%addr, service = %backends.service, endpoints = ?backends.endpoints, "service listener added");
            let (tx, rx) = watch::channel(backends);
            let task = tokio::spawn(serve(*addr, rx));
            self.listeners.insert(
                *addr,
                Listener {
                    backends: tx,
                    _task: AbortOnDrop(task),
                },
            );
        }
        for (addr, backends) in desired {
            if let Some(l) = self.listeners.get(&addr) {
                l.backends
                    .send_if_modified(|cur| update(cur, backends, addr));
            }
        }
    }
}

/// Replaces the backends if they changed; says whether they did.
fn update(current: &mut Backends, new: Backends, addr: SocketAddr) -> bool {
    if *current == new {
        return false;
    }
    tracing::info!(%addr, service = %new.service, endpoints = ?new.endpoints, "service endpoints changed");
    *current = new;
    true
}

/// Binds `addr` (retrying until it succeeds) and forwards its connections.
async fn serve(addr: SocketAddr, backends: watch::Receiver<Backends>) {
    let listener = bind(addr).await;
    accept_loop(listener, backends).await;
}

/// Binds `addr`, retrying forever: the address may still be held by a process.
async fn bind(addr: SocketAddr) -> TcpListener {
    let mut attempt: u32 = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                if attempt.is_multiple_of(BIND_WARN_EVERY) {
                    tracing::warn!(%addr, error = %e, "cannot listen on service address; retrying");
                }
                attempt = attempt.wrapping_add(1);
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

/// Accepts connections forever, forwarding each in its own task.
pub async fn accept_loop(listener: TcpListener, backends: watch::Receiver<Backends>) {
    let balancer = Arc::new(Balancer::default());
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                let current = backends.borrow().clone();
                tokio::spawn(forward(conn, peer.ip(), current, balancer.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connects to the first reachable endpoint (in balancing order) and copies bytes both
/// ways until both sides are done. Without a reachable endpoint the client connection
/// is reset.
async fn forward(
    mut inbound: TcpStream,
    client: IpAddr,
    backends: Backends,
    balancer: Arc<Balancer>,
) {
    for endpoint in balancer.order(client, &backends) {
        let mut outbound = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(&endpoint),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(service = %backends.service, %endpoint, error = %e, "endpoint refused; trying the next");
                continue;
            }
            Err(_) => {
                tracing::debug!(service = %backends.service, %endpoint, "endpoint connect timed out; trying the next");
                continue;
            }
        };
        balancer.remember(client, &endpoint, backends.affinity);
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
            tracing::debug!(service = %backends.service, %endpoint, error = %e, "proxied connection ended with an error");
        }
        return;
    }
    tracing::debug!(service = %backends.service, "no reachable endpoint; rejecting connection");
    let _ = inbound.set_zero_linger();
}

/// Round-robin endpoint choice with optional client-IP affinity.
#[derive(Default)]
struct Balancer {
    next: AtomicUsize,
    sticky: Mutex<HashMap<IpAddr, (String, Instant)>>,
}

impl Balancer {
    /// Endpoints in the order to try them for this client.
    fn order(&self, client: IpAddr, backends: &Backends) -> Vec<String> {
        let n = backends.endpoints.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut order = rotated(&backends.endpoints, start);
        let pinned = backends.affinity.and_then(|_| self.pinned(client));
        if let Some(i) = pinned.and_then(|p| order.iter().position(|e| *e == p)) {
            let e = order.remove(i);
            order.insert(0, e);
        }
        order
    }

    /// The endpoint the client is pinned to, if the pin has not expired.
    fn pinned(&self, client: IpAddr) -> Option<String> {
        let sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
        let (endpoint, until) = sticky.get(&client)?;
        (Instant::now() < *until).then(|| endpoint.clone())
    }

    /// Pins the client to the endpoint it reached (with affinity configured).
    fn remember(&self, client: IpAddr, endpoint: &str, affinity: Option<Duration>) {
        let Some(ttl) = affinity else { return };
        let now = Instant::now();
        let mut sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
        sticky.retain(|_, (_, until)| *until > now);
        sticky.insert(client, (endpoint.to_owned(), now + ttl));
    }
}

/// `items` starting at index `start`, wrapping around.
fn rotated(items: &[String], start: usize) -> Vec<String> {
    items[start..]
        .iter()
        .chain(&items[..start])
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn backends(endpoints: &[String], affinity: Option<Duration>) -> Backends {
        Backends {
            endpoints: endpoints.to_vec(),
            affinity,
            service: "ns/s:80".into(),
        }
    }

    #[test]
    fn diff_adds_and_removes() {
        let current = addrs(&["127.11.0.1:80", "127.11.0.2:80"]);
        let desired = addrs(&["127.11.0.2:80", "127.11.0.3:80"]);
        let d = diff(&current, &desired);
        assert_eq!(d.added, addrs(&["127.11.0.3:80"]));
        assert_eq!(d.removed, addrs(&["127.11.0.1:80"]));
        assert_eq!(diff(&current, &current), ListenerDiff::default());
    }

    #[test]
    fn round_robin_and_affinity() {
        let eps: Vec<String> = ["a:1", "b:1", "c:1"].map(String::from).to_vec();
        let b = Balancer::default();
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let firsts: Vec<String> = (0..3)
            .map(|_| b.order(client, &backends(&eps, None))[0].clone())
            .collect();
        assert_eq!(firsts, eps);
        assert_eq!(rotated(&eps, 1), ["b:1", "c:1", "a:1"]);

        let sticky = backends(&eps, Some(Duration::from_secs(60)));
        b.remember(client, "c:1", sticky.affinity);
        for _ in 0..3 {
            assert_eq!(b.order(client, &sticky)[0], "c:1");
        }
        // Without affinity configured the pin is ignored.
        let plain = backends(&eps, None);
        let firsts: BTreeSet<String> = (0..3).map(|_| b.order(client, &plain)[0].clone()).collect();
        assert_eq!(firsts.len(), 3);
        assert!(b.order(client, &backends(&[], None)).is_empty());
    }

    /// An echo server on `ip`; returns its address.
    async fn echo_server(ip: &str) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        addr
    }

    /// A proxy listener on `ip` with the given endpoints; returns its address and the
    /// channel to update its backends.
    async fn proxy(ip: &str, endpoints: Vec<String>) -> (SocketAddr, watch::Sender<Backends>) {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(backends(&endpoints, None));
        tokio::spawn(accept_loop(listener, rx));
        (addr, tx)
    }

    /// Sends `msg`, half-closes, and reads everything until EOF.
    async fn roundtrip(addr: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(msg).await?;
        s.shutdown().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    }

    /// A loopback port with nothing listening on it.
    async fn dead_endpoint(ip: &str) -> String {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn forwards_with_half_close_and_failover() {
        let echo = echo_server("127.77.0.1").await;
        let dead = dead_endpoint("127.77.0.3").await;
        let (addr, tx) = proxy("127.77.0.2", vec![dead, echo.to_string()]).await;
        for i in 0..4 {
            let msg = format!("hello {i}").repeat(1000);
            let out =
                tokio::time::timeout(Duration::from_secs(10), roundtrip(addr, msg.as_bytes()))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(out, msg.as_bytes());
        }

        // Without endpoints the connection is closed at once.
        tx.send(backends(&[], None)).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), roundtrip(addr, b"x"))
            .await
            .unwrap();
        assert!(matches!(&r, Ok(v) if v.is_empty()) || r.is_err(), "{r:?}");

        // Endpoints are updated live.
        tx.send(backends(&[echo.to_string()], None)).unwrap();
        let out = roundtrip(addr, b"back").await.unwrap();
        assert_eq!(out, b"back");
    }

    #[tokio::test]
    async fn proxies_open_update_and_close_listeners() {
        let echo = echo_server("127.77.1.1").await;
        let port = dead_endpoint("127.77.1.2")
            .await
            .parse::<SocketAddr>()
            .unwrap()
            .port();
        let listen: SocketAddr = SocketAddr::new("127.77.1.2".parse().unwrap(), port);
        let mut proxies = Proxies::default();
        proxies.apply(Desired::from([(
            listen,
            backends(&[echo.to_string()], None),
        )]));
        let mut ok = false;
        for _ in 0..50 {
            if let Ok(out) = roundtrip(listen, b"ping").await {
                assert_eq!(out, b"ping");
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "listener never came up");
        proxies.apply(Desired::new());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            TcpStream::connect(listen).await.is_err(),
            "listener still open"
        );
    }
}
