//! Pod IP allocation from the node's loopback pod CIDR.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Hands out pod IPs: never one in use, skipping network-, gateway- and
/// broadcast-looking addresses (last octet 0, 1 or 255).
#[derive(Debug)]
pub struct Ipam {
    net: Ipv4Net,
    by_ip: HashMap<Ipv4Addr, String>,
    by_uid: HashMap<String, Ipv4Addr>,
    cursor: u32,
}

impl Ipam {
    /// An allocator over `net`.
    pub fn new(net: Ipv4Net) -> Ipam {
        Ipam {
            net,
            by_ip: HashMap::new(),
            by_uid: HashMap::new(),
            cursor: 0,
        }
    }

    /// True if `ip` may be handed out at all.
    pub fn usable(&self, ip: Ipv4Addr) -> bool {
        let last = ip.octets()[3];
        self.net.contains(&ip)
            && ip != self.net.network()
            && ip != self.net.broadcast()
            && !matches!(last, 0 | 1 | 255)
    }

    /// The IP held by `uid`, or `preferred` if usable and free, or the next free one.
    pub fn allocate(&mut self, uid: &str, preferred: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_uid.get(uid) {
            return Some(*ip);
        }
        let ip = preferred
            .filter(|ip| self.usable(*ip) && !self.by_ip.contains_key(ip))
            .or_else(|| self.next_free())?;
        self.by_ip.insert(ip, uid.to_string());
        self.by_uid.insert(uid.to_string(), ip);
        Some(ip)
    }

    /// Gives `uid`'s IP back.
    pub fn release(&mut self, uid: &str) {
        if let Some(ip) = self.by_uid.remove(uid) {
            self.by_ip.remove(&ip);
        }
    }

    fn next_free(&mut self) -> Option<Ipv4Addr> {
        let base = u32::from(self.net.network());
        let size = 1u64 << (32 - self.net.prefix_len());
        for _ in 0..size {
            let offset = self.cursor;
            self.cursor = ((u64::from(self.cursor) + 1) % size) as u32;
            let ip = Ipv4Addr::from(base.wrapping_add(offset));
            if self.usable(ip) && !self.by_ip.contains_key(&ip) {
                return Some(ip);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(cidr: &str) -> Ipam {
        Ipam::new(cidr.parse().unwrap())
    }

    #[test]
    fn skips_reserved_addresses() {
        let mut a = ipam("127.10.0.0/16");
        assert_eq!(a.allocate("a", None), Some("127.10.0.2".parse().unwrap()));
        assert_eq!(a.allocate("b", None), Some("127.10.0.3".parse().unwrap()));
        assert_eq!(
            a.allocate("a", None),
            Some("127.10.0.2".parse().unwrap()),
            "sticky"
        );
        assert!(!a.usable("127.10.3.0".parse().unwrap()));
        assert!(!a.usable("127.10.3.1".parse().unwrap()));
        assert!(!a.usable("127.11.0.5".parse().unwrap()));
    }

    #[test]
    fn never_hands_out_an_ip_in_use() {
        let mut a = ipam("127.10.0.0/29"); // .2 .. .6 usable
        let ips: Vec<_> = (0..5)
            .map(|i| a.allocate(&i.to_string(), None).unwrap())
            .collect();
        let mut sorted = ips.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
        assert_eq!(a.allocate("x", None), None, "exhausted");
        a.release("3");
        assert_eq!(a.allocate("x", None), Some(ips[3]));
    }

    #[test]
    fn preferred_ip_when_free() {
        let mut a = ipam("127.10.0.0/16");
        let want: Ipv4Addr = "127.10.4.7".parse().unwrap();
        assert_eq!(a.allocate("a", Some(want)), Some(want));
        let other = a.allocate("b", Some(want)).unwrap();
        assert_ne!(other, want);
        assert_ne!(
            a.allocate("c", Some("127.10.4.1".parse().unwrap())),
            Some("127.10.4.1".parse().unwrap())
        );
    }
}
