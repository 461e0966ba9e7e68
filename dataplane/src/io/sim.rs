//! The `sim` backend: an in-memory network between a node and its clients with seeded
//! loss, duplication, reordering and corruption. Deterministic: the same seed replays the
//! same run. No allocation: datagram storage is a caller-provided slice.

use core::cell::RefCell;
use core::net::SocketAddr;

use crate::arena::Arena;
use crate::io::{BATCH_MAX, PacketIo, Readiness, RxBatch, RxPacket, TxBatch};

/// Largest datagram the simulated network carries.
pub const SIM_DATAGRAM_BYTES_MAX: usize = 2048;

/// Impairments in parts per million of datagrams.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairments {
    pub loss_ppm: u32,
    pub duplicate_ppm: u32,
    pub reorder_ppm: u32,
    pub corrupt_ppm: u32,
}

impl Impairments {
    pub const NONE: Impairments = Impairments { loss_ppm: 0, duplicate_ppm: 0, reorder_ppm: 0, corrupt_ppm: 0 };
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// Dropped because the destination queue was full (a full NIC ring).
    pub overflowed: u64,
}

#[derive(Clone)]
pub struct SimDatagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub len: u16,
    pub bytes: [u8; SIM_DATAGRAM_BYTES_MAX],
}

impl SimDatagram {
    pub const EMPTY: SimDatagram = SimDatagram {
        from: SocketAddr::V4(core::net::SocketAddrV4::new(core::net::Ipv4Addr::UNSPECIFIED, 0)),
        to: SocketAddr::V4(core::net::SocketAddrV4::new(core::net::Ipv4Addr::UNSPECIFIED, 0)),
        len: 0,
        bytes: [0; SIM_DATAGRAM_BYTES_MAX],
    };

    pub fn data(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// xorshift64*: small, fast, good enough for fault injection.
#[derive(Debug, Clone, Copy)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }
}

/// A bounded FIFO over caller-provided slots.
struct Queue<'q> {
    slots: &'q mut [SimDatagram],
    head: usize,
    len: usize,
}

impl<'q> Queue<'q> {
    fn new(slots: &'q mut [SimDatagram]) -> Self {
        assert!(!slots.is_empty());
        Self { slots, head: 0, len: 0 }
    }

    fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    /// Appends at the back, or at the front to make it overtake what is queued; returns
    /// the queued bytes (for the network to damage), or `None` when full.
    fn push(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8], front: bool) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let capacity = self.slots.len();
        let position = if front {
            self.head = (self.head + capacity - 1) % capacity;
            self.head
        } else {
            (self.head + self.len) % capacity
        };
        self.len += 1;
        let slot = &mut self.slots[position];
        slot.from = from;
        slot.to = to;
        slot.len = bytes.len() as u16;
        slot.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(&mut slot.bytes[..bytes.len()])
    }

    fn pop(&mut self) -> Option<&SimDatagram> {
        if self.len == 0 {
            return None;
        }
        let position = self.head;
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        Some(&self.slots[position])
    }
}

/// A two-sided network: datagrams to the node and datagrams to the clients.
pub struct SimNet<'q> {
    to_node: Queue<'q>,
    to_clients: Queue<'q>,
    rng: SimRng,
    impairments: Impairments,
    stats: SimStats,
}

impl<'q> SimNet<'q> {
    pub fn new(
        to_node: &'q mut [SimDatagram],
        to_clients: &'q mut [SimDatagram],
        seed: u64,
        impairments: Impairments,
    ) -> Self {
        Self {
            to_node: Queue::new(to_node),
            to_clients: Queue::new(to_clients),
            rng: SimRng::new(seed),
            impairments,
            stats: SimStats::default(),
        }
    }

    pub fn stats(&self) -> SimStats {
        self.stats
    }

    pub fn set_impairments(&mut self, impairments: Impairments) {
        self.impairments = impairments;
    }

    fn send(&mut self, toward_node: bool, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        assert!(bytes.len() <= SIM_DATAGRAM_BYTES_MAX, "datagram larger than the simulated MTU");
        self.stats.sent += 1;
        if self.rng.chance_ppm(self.impairments.loss_ppm) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance_ppm(self.impairments.duplicate_ppm) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let reorder = self.rng.chance_ppm(self.impairments.reorder_ppm);
            let corrupt = self.rng.chance_ppm(self.impairments.corrupt_ppm);
            let flipped_bit = (corrupt && !bytes.is_empty()).then(|| self.rng.below(bytes.len() as u64 * 8) as usize);
            self.stats.reordered += u64::from(reorder);
            let queue = if toward_node { &mut self.to_node } else { &mut self.to_clients };
            // Copied once, into the queue's slot, and damaged there.
            match queue.push(from, to, bytes, reorder) {
                Some(queued) => {
                    if let Some(bit) = flipped_bit {
                        queued[bit / 8] ^= 1 << (bit % 8);
                        self.stats.corrupted += 1;
                    }
                }
                None => self.stats.overflowed += 1,
            }
        }
    }

    /// A client sends a datagram toward the node.
    pub fn send_to_node(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.send(true, from, to, bytes);
    }

    /// Delivers the next datagram waiting for the clients, if any.
    pub fn recv_for_client(&mut self, out: &mut [u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
        let datagram = self.to_clients.pop()?;
        let len = usize::from(datagram.len);
        out[..len].copy_from_slice(datagram.data());
        Some((datagram.from, datagram.to, len))
    }
}

/// The node's side of a [`SimNet`], as a packet-I/O backend.
pub struct SimNodeIo<'n, 'q> {
    net: &'n RefCell<SimNet<'q>>,
    address: SocketAddr,
}

impl<'n, 'q> SimNodeIo<'n, 'q> {
    pub fn new(net: &'n RefCell<SimNet<'q>>, address: SocketAddr) -> Self {
        Self { net, address }
    }
}

impl PacketIo for SimNodeIo<'_, '_> {
    type Error = core::convert::Infallible;

    fn recv_batch(&mut self, arena: &mut Arena<'_>, out: &mut RxBatch) -> Result<usize, Self::Error> {
        let mut net = self.net.borrow_mut();
        let mut received = 0;
        while !out.is_full() && received < BATCH_MAX {
            if net.to_node.len == 0 {
                break;
            }
            let Some(frame) = arena.alloc() else { break };
            let datagram = net.to_node.pop().expect("checked len");
            let len = usize::from(datagram.len);
            let peer = datagram.from;
            let headroom = arena.headroom();
            let room = arena.frame_size() - headroom;
            if len > room {
                arena.free(frame);
                continue;
            }
            // The simulated NIC's DMA into the frame.
            arena.frame_mut(&frame)[headroom..headroom + len].copy_from_slice(datagram.data());
            let packet = RxPacket { frame, offset: headroom as u16, len: len as u16, peer };
            let pushed = out.push(packet);
            assert!(pushed.is_ok(), "checked is_full");
            received += 1;
        }
        Ok(received)
    }

    fn send_batch(&mut self, arena: &mut Arena<'_>, batch: &mut TxBatch) -> Result<(), Self::Error> {
        let mut net = self.net.borrow_mut();
        for packet in batch.drain(..) {
            let start = usize::from(packet.offset);
            let end = start + usize::from(packet.len);
            net.send(false, self.address, packet.peer, &arena.frame(&packet.frame)[start..end]);
            arena.free(packet.frame);
        }
        Ok(())
    }

    fn wait(&mut self, _timeout_us: u32) -> Readiness {
        Readiness::Ready
    }
}
