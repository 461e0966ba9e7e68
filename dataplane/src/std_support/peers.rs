//! Routes back to recent peers, learned from the datagrams they sent: kernel-bypass
//! backends (AF_XDP, DPDK) address replies with them, since no kernel neighbour table sits
//! in between.

use core::net::SocketAddr;
use std::boxed::Box;
use std::vec;

use crate::netstack::Route;

/// One remembered route, keyed by the peer's address.
#[derive(Debug, Clone, Copy)]
struct PeerSlot {
    route: Route,
    last_used: u64,
}

/// Routes of recent peers: a fixed-size open-addressed table with short probes, the least
/// recently used entry of a probe run evicted when it is full.
pub struct PeerTable {
    slots: Box<[Option<PeerSlot>]>,
    tick: u64,
}

pub const PEER_PROBES: usize = 8;

impl PeerTable {
    pub fn new(capacity: usize) -> Self {
        Self { slots: vec![None; capacity.next_power_of_two().max(PEER_PROBES)].into_boxed_slice(), tick: 0 }
    }

    fn home(&self, peer: &SocketAddr) -> usize {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |bytes: &[u8]| {
            for byte in bytes {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        match peer {
            SocketAddr::V4(v4) => mix(&v4.ip().octets()),
            SocketAddr::V6(v6) => mix(&v6.ip().octets()),
        }
        mix(&peer.port().to_be_bytes());
        (hash as usize) & (self.slots.len() - 1)
    }

    pub fn learn(&mut self, route: Route) {
        self.tick += 1;
        let home = self.home(&route.dst);
        let mask = self.slots.len() - 1;
        let mut victim = home;
        let mut oldest = u64::MAX;
        for probe in 0..PEER_PROBES {
            let index = (home + probe) & mask;
            match &mut self.slots[index] {
                Some(slot) if slot.route.dst == route.dst => {
                    slot.route = route;
                    slot.last_used = self.tick;
                    return;
                }
                Some(slot) => {
                    if slot.last_used < oldest {
                        oldest = slot.last_used;
                        victim = index;
                    }
                }
                None => {
                    if oldest != 0 {
                        oldest = 0;
                        victim = index;
                    }
                }
            }
        }
        self.slots[victim] = Some(PeerSlot { route, last_used: self.tick });
    }

    pub fn route(&mut self, peer: &SocketAddr) -> Option<Route> {
        let home = self.home(peer);
        let mask = self.slots.len() - 1;
        for probe in 0..PEER_PROBES {
            if let Some(slot) = &mut self.slots[(home + probe) & mask] {
                if slot.route.dst == *peer {
                    return Some(slot.route);
                }
            }
        }
        None
    }
}
