//! Free TCP ports on 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The ports one cluster listens on, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// etcd's client port.
    pub etcd_client: u16,
    /// etcd's peer port.
    pub etcd_peer: u16,
    /// kube-apiserver's secure port.
    pub apiserver: u16,
    /// kube-controller-manager's secure (health) port.
    pub controller_manager: u16,
    /// The node agent's kubelet API.
    pub kubelet: u16,
}

impl Ports {
    /// Picks five distinct free ports.
    pub fn pick() -> Result<Ports> {
        let p = free_ports(5)?;
        Ok(Ports {
            etcd_client: p[0],
            etcd_peer: p[1],
            apiserver: p[2],
            controller_manager: p[3],
            kubelet: p[4],
        })
    }

    /// Every port with the name of its listener.
    pub fn all(&self) -> [(&'static str, u16); 5] {
        [
            ("etcd-client", self.etcd_client),
            ("etcd-peer", self.etcd_peer),
            ("kube-apiserver", self.apiserver),
            ("kube-controller-manager", self.controller_manager),
            ("kubelet", self.kubelet),
        ]
    }
}

/// Picks `n` distinct free ports by binding 127.0.0.1:0 `n` times at once.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0 to find free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
///
/// A connection to a free port in the ephemeral range can connect to itself (TCP
/// simultaneous open when the kernel picks that very port as the source port);
/// such a self-connection does not count.
pub fn is_listening(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(stream) => stream.local_addr().ok() != Some(addr),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_distinct_and_free() {
        let ports = Ports::pick().unwrap();
        let mut all: Vec<u16> = ports.all().iter().map(|(_, p)| *p).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|p| !is_listening(*p)));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, ports.apiserver)).unwrap();
        assert!(is_listening(ports.apiserver));
        drop(listener);
    }
}
