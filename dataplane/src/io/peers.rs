//! Routes back to recent peers, learned from the datagrams they sent: kernel-bypass
//! backends (AF_XDP, DPDK) address replies with them, since no kernel neighbour table sits
//! in between.

use core::net::SocketAddr;
use std::boxed::Box;
use std::vec;

use crate::arena::{Arena, FrameId};
use crate::io::netstack::{self, Datagram, Route};
use crate::io::{RxPacket, TxPacket};

/// Why a datagram could not be given its lower-layer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// No datagram from this peer was seen, so the route back (MACs, VLAN) is unknown.
    NoRoute,
    /// The headers do not fit in front of the datagram, or it overruns its frame.
    BadPacket,
}

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

impl PeerTable {
    /// Learns the route back to `datagram`'s sender and makes the packet the node takes from
    /// `frame`, whose Ethernet header starts `start` bytes in.
    pub fn accept(&mut self, frame: FrameId, start: usize, datagram: &Datagram) -> RxPacket {
        self.learn(Route::reply_to(datagram));
        // Offsets fit u16: they lie inside a frame of at most 65536 bytes, and a UDP
        // payload is shorter than 65536 bytes.
        RxPacket {
            frame,
            offset: (start + datagram.payload.start) as u16,
            len: datagram.payload.len() as u16,
            peer: datagram.src,
        }
    }

    /// Writes Ethernet (+ VLAN) + IP + UDP headers in front of `packet`'s datagram, on the
    /// route back to its peer, using no frame byte below `floor`; returns the frame offset
    /// the packet to send now starts at, and its length.
    pub fn address(
        &mut self,
        arena: &mut Arena<'_>,
        packet: &TxPacket,
        floor: usize,
        ip_id: u16,
    ) -> Result<(usize, usize), AddressError> {
        let route = self.route(&packet.peer).ok_or(AddressError::NoRoute)?;
        let header_len = route.header_len().ok_or(AddressError::BadPacket)?;
        let (offset, len) = (usize::from(packet.offset), usize::from(packet.len));
        if offset < floor + header_len || offset + len > arena.frame_size() {
            return Err(AddressError::BadPacket);
        }
        let start = offset - header_len;
        netstack::write_headers(&route, ip_id, &mut arena.frame_mut(&packet.frame)[start..offset + len])
            .map_err(|_| AddressError::BadPacket)?;
        Ok((start, header_len + len))
    }
}
