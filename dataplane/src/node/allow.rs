//! Source-address allowlist: prefixes a node accepts storage packets from.

use core::net::IpAddr;

pub const PREFIXES_MAX: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len.min(32))).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len.min(128))).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V6(_), IpAddr::V4(ip)) => self.contains(IpAddr::V6(ip.to_ipv6_mapped())),
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }
}

/// An empty allowlist accepts every source (packets must still carry a valid MAC).
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    prefixes: heapless::Vec<Prefix, PREFIXES_MAX>,
}

impl Allowlist {
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Adds a prefix; `Err` when the list already holds `PREFIXES_MAX` prefixes.
    pub fn push(&mut self, prefix: Prefix) -> Result<(), Prefix> {
        self.prefixes.push(prefix)
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    pub fn prefixes(&self) -> &[Prefix] {
        &self.prefixes
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|prefix| prefix.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn prefixes_match() {
        let mut list = Allowlist::allow_all();
        assert!(list.allows(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))));
        list.push(Prefix { addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), len: 16 }).unwrap();
        assert!(list.allows(IpAddr::V4(Ipv4Addr::new(10, 1, 200, 3))));
        assert!(!list.allows(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))));
        assert!(list.allows(IpAddr::V6(Ipv4Addr::new(10, 1, 0, 9).to_ipv6_mapped())));
        assert!(!list.allows(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        list.push(Prefix { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), len: 0 }).unwrap();
        assert!(list.allows(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))));
    }
}
