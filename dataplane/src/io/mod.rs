//! The packet-I/O boundary every backend implements (`sim`, `udp`, `afxdp`, `dpdk`), the
//! backends themselves, and the L2–L4 framing the kernel-bypass backends write and parse.
//!
//! Backends move whole frames: a received datagram lands in an arena frame at
//! [`HEADROOM_BYTES`](crate::arena::HEADROOM_BYTES) (or wherever the NIC put it, given by
//! `offset`), and a datagram to send is a frame whose bytes `offset..offset + len` are the
//! Beeline datagram. Lower-layer headers, if the backend needs them, go in the headroom.

pub mod netstack;
pub mod responder;
pub mod sim;

#[cfg(feature = "std")]
pub mod peers;

#[cfg(all(feature = "std", target_os = "linux"))]
#[allow(unsafe_code)] // the AF_XDP socket, its ring mmaps and the shared ring indices
pub mod afxdp;
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)] // every DPDK call, and the mbuf <-> frame arithmetic
pub mod dpdk;
#[cfg(feature = "std")]
#[allow(unsafe_code)] // socket syscalls (recvmmsg/sendmmsg, setsockopt)
pub mod udp;

use core::net::SocketAddr;

use crate::arena::{Arena, FrameId};

/// Replies queued between two flushes of the poll loop (the node's TX queue), which also
/// bounds how many TX descriptors a kernel-bypass backend needs in flight.
pub const TX_QUEUE_MAX: usize = 1024;

/// Most packets moved in one `recv_batch`/`send_batch` call.
pub const BATCH_MAX: usize = 64;

/// The scope id that marks a peer as a local shared-memory client. A kernel or a
/// parsed frame never yields it: scope ids come from interface indices, and the address
/// `::` with a non-zero scope id is not a valid source.
const LOCAL_SCOPE_ID: u32 = 0xBEE1_5A4D;

/// The peer address standing for local shared-memory client `client`. Requests from it
/// are plaintext (no session): only the node's own shared-memory transport may produce
/// such a peer, and backends drop any received datagram that claims one.
pub fn local_peer(client: u16) -> SocketAddr {
    SocketAddr::V6(core::net::SocketAddrV6::new(core::net::Ipv6Addr::UNSPECIFIED, client, 0, LOCAL_SCOPE_ID))
}

/// The shared-memory client `peer` stands for, if it is one (see [`local_peer`]).
pub fn local_client(peer: &SocketAddr) -> Option<u16> {
    match peer {
        SocketAddr::V6(v6) if v6.scope_id() == LOCAL_SCOPE_ID && v6.ip().is_unspecified() => Some(v6.port()),
        _ => None,
    }
}

/// A received datagram, owned by whoever holds it until its frame is freed or stored.
#[derive(Debug)]
pub struct RxPacket {
    pub frame: FrameId,
    /// Where the Beeline datagram starts inside the frame.
    pub offset: u16,
    /// Length of the Beeline datagram in bytes.
    pub len: u16,
    pub peer: SocketAddr,
}

/// A datagram to send. The backend returns the frame to the arena once the NIC or the
/// kernel no longer needs it.
#[derive(Debug)]
pub struct TxPacket {
    pub frame: FrameId,
    pub offset: u16,
    pub len: u16,
    pub peer: SocketAddr,
}

pub type RxBatch = heapless::Vec<RxPacket, BATCH_MAX>;
pub type TxBatch = heapless::Vec<TxPacket, BATCH_MAX>;

/// Outcome of asking a backend to wait for traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    TimedOut,
}

/// A whole-chunk request from a local client, its bytes in the client's shared memory.
///
/// The client promised not to touch `data`/`out` until the node answers; one that breaks
/// the promise can garble only its own chunk, which the node's checksums then report.
#[derive(Debug)]
pub enum LocalRequest<'a> {
    /// Store `data` as chunk `chunk_id`; answered with `PutDone` once durable.
    /// `not_read_soon`: the client's hint (`flags::NOT_READ_SOON`).
    Put { peer: SocketAddr, request_id: u64, chunk_id: crate::wire::ChunkId, data: &'a [u8], not_read_soon: bool },
    /// Read chunk `chunk_id` from byte `offset` into `out` (at most its length); answered
    /// with a header-only `GetData` whose `total_len` is the chunk's length and `count`
    /// the bytes placed in `out`. `not_read_soon`: the client's hint (`flags::NOT_READ_SOON`).
    Get {
        peer: SocketAddr,
        request_id: u64,
        chunk_id: crate::wire::ChunkId,
        offset: u32,
        out: &'a mut [u8],
        not_read_soon: bool,
    },
}

/// Most local whole-chunk requests one [`PacketIo::serve_local`] call may hand over (each
/// queues one reply; the poll loop keeps more room than this in its transmit queue).
pub const LOCAL_REQUESTS_PER_TURN: usize = 16;

/// A packet-I/O backend.
pub trait PacketIo {
    type Error: core::fmt::Debug;

    /// Receives up to `out`'s spare capacity into frames taken from `arena`; returns how
    /// many were appended. Stops early (without error) when the arena runs out of frames.
    fn recv_batch(&mut self, arena: &mut Arena<'_>, out: &mut RxBatch) -> Result<usize, Self::Error>;

    /// Sends every packet in `batch`, draining it. Frames of packets that could not be sent
    /// are freed and counted by the backend; sending never blocks for long.
    fn send_batch(&mut self, arena: &mut Arena<'_>, batch: &mut TxBatch) -> Result<(), Self::Error>;

    /// Waits until a datagram may be ready or `timeout_us` passes. This is the idle
    /// back-off of the poll loop; backends without a kernel to sleep in return at once.
    fn wait(&mut self, timeout_us: u32) -> Readiness;

    /// Packets the backend itself dropped (socket errors, oversized datagrams, ...).
    fn dropped(&self) -> u64 {
        0
    }

    /// Hands `serve` each whole-chunk request of a local client whose bytes stay in memory
    /// the backend shares with it (see [`LocalRequest`]), at most
    /// [`LOCAL_REQUESTS_PER_TURN`]; returns how many. Network backends have none.
    fn serve_local(&mut self, serve: &mut dyn FnMut(LocalRequest<'_>)) -> usize {
        let _ = serve;
        0
    }
}
