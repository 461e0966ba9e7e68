//! The storage node's protocol engine: a sans-I/O state machine that turns received
//! frames into store operations and replies. It never allocates: put slots come from a
//! caller-provided slice and every table has a fixed capacity.

pub mod allow;
mod local;
pub mod poll;
pub mod sessions;
mod writes;

use core::net::SocketAddr;

use crate::arena::{Arena, FrameId};
use crate::bitmap::{FRAGMENTS_MAX, FragmentBitmap};
use crate::counters::{Counters, DropReason};
use crate::io::{RxPacket, TxPacket};
use crate::node::allow::Allowlist;
use crate::node::sessions::{HandshakeReply, SessionMemory, SessionRef, Sessions};
use crate::session::handshake::INITIATE_LEN;
use crate::store::{ChunkStore, Durable, POLL_DURABLE_BATCH_MAX, PutReservation, StoreError};
use crate::wire::{self, ChunkId, ClusterKey, HEADER_LEN, Opcode, Repr, Status, flags, v1};

/// Fragments a `PutStatus` bitmap covers after its first missing index.
pub const STATUS_BITMAP_BITS: u32 = 1024;
const STATUS_BITMAP_BYTES: usize = (STATUS_BITMAP_BITS / 8) as usize;
/// Deletes awaiting durability at once.
pub const PENDING_DELETES_MAX: usize = 64;
/// Put fragments held between [`Node::receive`] and [`Node::flush_writes`]: one receive
/// batch's worth, so the poll loop writes a batch's contiguous fragments with one call.
pub const PENDING_WRITES_MAX: usize = crate::io::BATCH_MAX;
pub use crate::io::TX_QUEUE_MAX;
/// Most fragments one `Get` is answered with: the window's bound.
const GET_RUN_MAX: usize = TX_QUEUE_MAX / 2;
pub type TxQueue = heapless::Deque<TxPacket, TX_QUEUE_MAX>;

const DELETE_TICKET_BIT: u64 = 1 << 63;
/// Ticket for store changes nobody waits for (chunks of a removed file).
pub const BACKGROUND_TICKET: u64 = DELETE_TICKET_BIT;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub key: ClusterKey,
    pub allow: Allowlist,
    /// Largest chunk accepted, in bytes.
    pub chunk_bytes_max: u32,
    /// Most fragments a client may have outstanding per chunk (put) or request at once
    /// (get); advertised as credits.
    pub window_fragments_max: u16,
    /// A put that receives nothing for this long is abandoned and its slot freed.
    pub put_idle_timeout_ms: u64,
    /// Largest fragment payload the backend can carry in one datagram, when that is less
    /// than a frame holds: a backend that writes its own IP headers (AF_XDP) cannot
    /// fragment, so the link MTU bounds it. `u16::MAX` = only the frame size limits it.
    pub fragment_bytes_cap: u16,
    /// A session older than this is ended; clients rekey well before (they start a new
    /// handshake after `session_lifetime_ms / 2`).
    pub session_lifetime_ms: u64,
}

/// Default session lifetime: clients rekey after 120 s, 60 s before the node ends it.
pub const SESSION_LIFETIME_MS_DEFAULT: u64 = 240_000;

impl NodeConfig {
    pub fn new(key: ClusterKey) -> Self {
        Self {
            key,
            allow: Allowlist::allow_all(),
            chunk_bytes_max: 4 << 20,
            window_fragments_max: 256,
            put_idle_timeout_ms: 30_000,
            fragment_bytes_cap: u16::MAX,
            session_lifetime_ms: SESSION_LIFETIME_MS_DEFAULT,
        }
    }
}

/// Handles `Control` requests (namespace and admin operations) on behalf of the control
/// plane. The response is written in place into the reply frame.
pub trait ControlHandler<S: ChunkStore> {
    /// Returns the response length, or a status for an `Error` reply.
    fn handle(&mut self, peer: SocketAddr, request: &[u8], response: &mut [u8], store: &mut S)
    -> Result<usize, Status>;
}

/// A node without a control plane: every control request is refused.
pub struct NoControl;

impl<S: ChunkStore> ControlHandler<S> for NoControl {
    fn handle(&mut self, _: SocketAddr, _: &[u8], _: &mut [u8], _: &mut S) -> Result<usize, Status> {
        Err(Status::BadRequest)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Receiving,
    /// Every fragment is in; waiting for the store to report it durable.
    Committing,
}

/// State of one put in flight.
#[derive(Clone)]
pub struct PutSlot {
    state: SlotState,
    generation: u32,
    chunk_id: ChunkId,
    request_id: u64,
    peer: SocketAddr,
    /// The session of the put's latest datagram: its acknowledgements are sealed for it.
    session: SessionRef,
    total_len: u32,
    frag_len: u16,
    frag_count: u32,
    received: FragmentBitmap,
    /// A fragment asked for an acknowledgement: it goes out after the pending writes.
    ack_due: bool,
    reservation: PutReservation,
    started_ms: u64,
    last_activity_ms: u64,
}

impl Default for PutSlot {
    fn default() -> Self {
        Self {
            state: SlotState::Free,
            generation: 0,
            chunk_id: 0,
            request_id: 0,
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            session: SessionRef::NONE,
            total_len: 0,
            frag_len: 0,
            frag_count: 0,
            received: FragmentBitmap::new(),
            ack_due: false,
            reservation: PutReservation(0),
            started_ms: 0,
            last_activity_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct PendingDelete {
    ticket: u64,
    peer: SocketAddr,
    session: SessionRef,
    request_id: u64,
    chunk_id: ChunkId,
}

pub struct Node<'s, S: ChunkStore, C: ControlHandler<S>> {
    config: NodeConfig,
    store: S,
    control: C,
    slots: &'s mut [PutSlot],
    sessions: Sessions<'s>,
    next_session_sweep_ms: u64,
    deletes: heapless::Vec<PendingDelete, PENDING_DELETES_MAX>,
    next_delete_ticket: u64,
    /// Put fragments received but not yet written (see [`Node::receive`]), in arrival order.
    pending_writes: heapless::Vec<PendingWrite, PENDING_WRITES_MAX>,
    /// Put slots (index, generation) whose acknowledgement waits for the pending writes.
    acks_due: heapless::Vec<(usize, u32), PENDING_WRITES_MAX>,
    /// Set by a fragment that joined `pending_writes`: `receive` keeps its frame.
    keep_frame: bool,
    counters: Counters,
    /// Latest clock reading seen, for timing completions that arrive without one.
    now_ms: u64,
}

use writes::PendingWrite;

/// What a put fragment asks the node to send back at once (an acknowledgement waits for
/// the fragment's write, see [`Node::flush_writes`]).
enum PutReply {
    Nothing,
    Done(u32),
    Error(Status),
}

/// Where a reply goes and which request it answers.
#[derive(Clone, Copy)]
struct ReplyTo {
    peer: SocketAddr,
    session: SessionRef,
    request_id: u64,
    chunk_id: ChunkId,
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound => Status::NotFound,
        StoreError::DiskFull => Status::DiskFull,
        StoreError::TooLarge => Status::TooLarge,
        StoreError::Busy => Status::Busy,
        StoreError::Io => Status::Internal,
        StoreError::Corrupt => Status::Corrupt,
    }
}

impl<'s, S: ChunkStore, C: ControlHandler<S>> Node<'s, S, C> {
    pub fn new(
        config: NodeConfig,
        store: S,
        control: C,
        slots: &'s mut [PutSlot],
        sessions: SessionMemory<'s>,
    ) -> Self {
        assert!(!slots.is_empty(), "a node needs at least one put slot");
        assert!(config.window_fragments_max > 0);
        assert!(usize::from(config.window_fragments_max) <= TX_QUEUE_MAX / 2);
        for slot in slots.iter_mut() {
            slot.state = SlotState::Free;
        }
        let sessions = Sessions::new(&config.key, config.session_lifetime_ms, sessions);
        Self {
            config,
            store,
            control,
            slots,
            sessions,
            next_session_sweep_ms: 0,
            deletes: heapless::Vec::new(),
            next_delete_ticket: 0,
            pending_writes: heapless::Vec::new(),
            acks_due: heapless::Vec::new(),
            keep_frame: false,
            counters: Counters::default(),
            now_ms: 0,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    pub fn control_mut(&mut self) -> &mut C {
        &mut self.control
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Replaces the allowlist at runtime.
    pub fn set_allowlist(&mut self, allow: Allowlist) {
        self.config.allow = allow;
    }

    /// Sessions in the table now.
    pub fn sessions_active(&self) -> usize {
        self.sessions.active()
    }

    pub fn puts_in_flight(&self) -> usize {
        self.slots.iter().filter(|slot| slot.state != SlotState::Free).count()
    }

    /// Largest fragment payload that fits a frame of this arena.
    pub fn fragment_bytes_max(arena: &Arena<'_>) -> u16 {
        let room = arena.frame_size() - arena.headroom() - HEADER_LEN;
        u16::try_from(room).unwrap_or(u16::MAX)
    }

    /// Largest fragment payload this node sends or accepts: what fits a frame, capped by
    /// what the backend can carry in one datagram.
    fn fragment_max(&self, arena: &Arena<'_>) -> u16 {
        Self::fragment_bytes_max(arena).min(self.config.fragment_bytes_cap)
    }

    /// Handles one received datagram; replies are appended to `tx`. The frame is freed
    /// here: payload is written to the store straight from it.
    pub fn handle(&mut self, now_ms: u64, arena: &mut Arena<'_>, rx: RxPacket, tx: &mut TxQueue) {
        self.receive(now_ms, arena, rx, tx);
        self.flush_writes(arena, tx);
    }

    /// As [`Node::handle`], except that a put fragment's write (and the acknowledgement it
    /// asked for) waits, in its receive frame, for [`Node::flush_writes`]: the poll loop
    /// calls that after each receive batch, and a batch's consecutive fragments of a chunk
    /// then reach the store as one vectored write. Many small writes cost the kernel far
    /// more than one large one (docs/benchmarks.md, "Put fragments written together").
    pub fn receive(&mut self, now_ms: u64, arena: &mut Arena<'_>, rx: RxPacket, tx: &mut TxQueue) {
        if self.pending_writes.is_full() || self.acks_due.is_full() {
            self.flush_writes(arena, tx);
        }
        self.counters.rx_packets += 1;
        self.now_ms = self.now_ms.max(now_ms);
        let RxPacket { frame, offset, len, peer } = rx;
        let outcome = self.dispatch(now_ms, arena, &frame, offset, len, peer, tx);
        if core::mem::take(&mut self.keep_frame) {
            let pending = self.pending_writes.last_mut().expect("a kept frame has its pending write");
            assert!(pending.frame.is_none(), "one frame per pending write");
            pending.frame = Some(frame);
        } else {
            arena.free(frame);
        }
        if let Err(reason) = outcome {
            self.counters.count_drop(reason);
        }
    }

    fn on_ping(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, to: ReplyTo) -> Result<(), DropReason> {
        self.counters.pings += 1;
        let pong = Repr {
            credits: self.config.window_fragments_max,
            total_len: self.config.chunk_bytes_max,
            frag_len: self.fragment_max(arena),
            count: FRAGMENTS_MAX,
            ..Self::reply_header(Opcode::Pong, to)
        };
        self.reply(arena, tx, to, pong, &[])
    }

    fn on_stat(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, to: ReplyTo) -> Result<(), DropReason> {
        self.counters.stats += 1;
        match self.store.chunk_len(to.chunk_id) {
            Some(total_len) => {
                let reply = Repr { total_len, ..Self::reply_header(Opcode::StatReply, to) };
                self.reply(arena, tx, to, reply, &[])
            }
            None => self.reply_error(arena, tx, to, Status::NotFound),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        now_ms: u64,
        arena: &mut Arena<'_>,
        frame: &FrameId,
        offset: u16,
        len: u16,
        peer: SocketAddr,
        tx: &mut TxQueue,
    ) -> Result<(), DropReason> {
        let start = usize::from(offset);
        let end = start + usize::from(len);
        let bytes = arena.frame_mut(frame).get_mut(start..end).ok_or(DropReason::Malformed)?;
        let (repr, session) = if crate::io::local_client(&peer).is_some() {
            // A local shared-memory client: plaintext, admitted by the Unix socket's
            // permission; only the node's own transport produces such a peer.
            self.counters.local_requests += 1;
            let packet = wire::Packet::new_checked(&*bytes).map_err(|_| DropReason::Malformed)?;
            (Repr::parse(&packet), SessionRef::LOCAL)
        } else {
            if !self.config.allow.allows(peer.ip()) {
                return Err(DropReason::NotAllowed);
            }
            if wire::is_handshake(bytes) {
                return self.on_handshake(now_ms, arena, tx, frame, start..end, peer);
            }
            if bytes.get(2) == Some(&v1::VERSION) {
                return self.on_version_one(arena, tx, frame, start..end, peer);
            }
            // The payload is decrypted in place; from here on the frame holds plaintext.
            self.sessions.open(now_ms, bytes, peer)?
        };
        let payload_range = start + HEADER_LEN..start + HEADER_LEN + usize::from(repr.payload_len);
        let to = ReplyTo { peer, session, request_id: repr.request_id, chunk_id: repr.chunk_id };
        match repr.opcode {
            Opcode::Ping => self.on_ping(arena, tx, to),
            Opcode::PutFrag => {
                let max_fragment = u32::from(self.fragment_max(arena));
                let reply = self.on_put_fragment(now_ms, max_fragment, to, &repr, payload_range);
                match reply {
                    PutReply::Nothing => Ok(()),
                    PutReply::Done(total_len) => {
                        let done = Repr { total_len, ..Self::reply_header(Opcode::PutDone, to) };
                        self.reply(arena, tx, to, done, &[])
                    }
                    PutReply::Error(status) => self.reply_error(arena, tx, to, status),
                }
            }
            Opcode::PutQuery => self.on_put_query(arena, tx, to),
            Opcode::Get => self.on_get(arena, tx, to, &repr),
            Opcode::Delete => self.on_delete(arena, tx, to),
            Opcode::Stat => self.on_stat(arena, tx, to),
            Opcode::Control => {
                self.counters.control_requests += 1;
                self.on_control(arena, tx, to, frame, payload_range)
            }
            Opcode::Pong
            | Opcode::PutStatus
            | Opcode::PutDone
            | Opcode::GetData
            | Opcode::DeleteDone
            | Opcode::StatReply
            | Opcode::ControlReply
            | Opcode::Error => Err(DropReason::Unexpected),
        }
    }

    /// Answers a handshake message with a Challenge or an Accept, sent as it is (these
    /// messages carry their own authentication).
    fn on_handshake(
        &mut self,
        now_ms: u64,
        arena: &mut Arena<'_>,
        tx: &mut TxQueue,
        frame: &FrameId,
        range: core::ops::Range<usize>,
        peer: SocketAddr,
    ) -> Result<(), DropReason> {
        let mut message = [0u8; INITIATE_LEN];
        let len = range.len();
        let copied = message.get_mut(..len).ok_or(DropReason::Malformed)?;
        copied.copy_from_slice(&arena.frame(frame)[range]);
        let reply = self.sessions.on_handshake(now_ms, &message[..len], peer, &mut self.counters)?;
        match reply {
            HandshakeReply::Challenge(bytes) => self.send_raw(arena, tx, peer, &bytes),
            HandshakeReply::Accept(bytes) => self.send_raw(arena, tx, peer, &bytes),
        }
    }

    /// Tells a version-1 client (one that proves the cluster key) to upgrade, in a reply
    /// it can parse and never larger than 3x its request.
    fn on_version_one(
        &mut self,
        arena: &mut Arena<'_>,
        tx: &mut TxQueue,
        frame: &FrameId,
        range: core::ops::Range<usize>,
        peer: SocketAddr,
    ) -> Result<(), DropReason> {
        let request = &arena.frame(frame)[range];
        if !v1::authentic(request, &self.config.key) {
            return Err(DropReason::BadMac);
        }
        let mut reply = [0u8; v1::REPLY_LEN];
        let len = v1::write_upgrade_reply(request, &self.config.key, &mut reply);
        assert!(len <= 3 * request.len());
        self.counters.upgrade_replies += 1;
        self.send_raw(arena, tx, peer, &reply[..len])
    }

    /// Queues bytes that need no sealing.
    fn send_raw(
        &mut self,
        arena: &mut Arena<'_>,
        tx: &mut TxQueue,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        if tx.is_full() {
            return Err(DropReason::NoBuffer);
        }
        let frame = arena.alloc().ok_or(DropReason::NoBuffer)?;
        let headroom = arena.headroom();
        arena.frame_mut(&frame)[headroom..headroom + bytes.len()].copy_from_slice(bytes);
        self.counters.tx_packets += 1;
        let packet = TxPacket { frame, offset: headroom as u16, len: bytes.len() as u16, peer };
        tx.push_back(packet).map_err(|packet| {
            arena.free(packet.frame);
            DropReason::NoBuffer
        })
    }

    fn reply_header(opcode: Opcode, to: ReplyTo) -> Repr {
        Repr { request_id: to.request_id, chunk_id: to.chunk_id, ..Repr::new(opcode) }
    }

    fn credits(&self) -> u16 {
        let free = self.slots.iter().filter(|slot| slot.state == SlotState::Free).count();
        // Fewer free slots means more senders at once: shrink each one's window.
        if free * 4 < self.slots.len() {
            (self.config.window_fragments_max / 4).max(1)
        } else {
            self.config.window_fragments_max
        }
    }

    /// Queues a reply whose small payload (a bitmap, a control response) is copied in,
    /// sealed for the request's session.
    fn reply(
        &mut self,
        arena: &mut Arena<'_>,
        tx: &mut TxQueue,
        to: ReplyTo,
        mut repr: Repr,
        payload: &[u8],
    ) -> Result<(), DropReason> {
        if tx.is_full() {
            return Err(DropReason::NoBuffer);
        }
        let frame = arena.alloc().ok_or(DropReason::NoBuffer)?;
        repr.payload_len = payload.len() as u16;
        let len = repr.buffer_len();
        let headroom = arena.headroom();
        let buffer = &mut arena.frame_mut(&frame)[headroom..];
        assert!(len <= buffer.len(), "reply larger than a frame");
        repr.emit_with_payload(buffer, payload);
        self.queue_sealed(arena, tx, to, frame, len)
    }

    /// Seals the datagram of `len` bytes at the frame's headroom for `to`'s session and
    /// queues it; the frame is freed if the session has ended since the request.
    fn queue_sealed(
        &mut self,
        arena: &mut Arena<'_>,
        tx: &mut TxQueue,
        to: ReplyTo,
        frame: FrameId,
        len: usize,
    ) -> Result<(), DropReason> {
        let headroom = arena.headroom();
        let sealed = if to.session == SessionRef::LOCAL {
            Ok(to.peer)
        } else {
            self.sessions.seal(to.session, &mut arena.frame_mut(&frame)[headroom..headroom + len])
        };
        let peer = match sealed {
            Ok(peer) => peer,
            Err(reason) => {
                arena.free(frame);
                return Err(reason);
            }
        };
        debug_assert_eq!(peer, to.peer, "a session's replies go to the address that made it");
        self.counters.tx_packets += 1;
        tx.push_back(TxPacket { frame, offset: headroom as u16, len: len as u16, peer }).map_err(|packet| {
            arena.free(packet.frame);
            DropReason::NoBuffer
        })
    }

    fn reply_error(
        &mut self,
        arena: &mut Arena<'_>,
        tx: &mut TxQueue,
        to: ReplyTo,
        status: Status,
    ) -> Result<(), DropReason> {
        match status {
            Status::Busy => self.counters.rejected_busy += 1,
            Status::NotFound => self.counters.rejected_not_found += 1,
            Status::DiskFull => self.counters.rejected_disk_full += 1,
            Status::BadRequest | Status::TooLarge | Status::Conflict => self.counters.rejected_bad_request += 1,
            Status::Internal | Status::Ok => self.counters.rejected_internal += 1,
            Status::Corrupt => self.counters.rejected_corrupt += 1,
        }
        let repr = Repr { status, credits: self.credits(), ..Self::reply_header(Opcode::Error, to) };
        self.reply(arena, tx, to, repr, &[])
    }

    fn find_slot(&self, chunk_id: ChunkId) -> Option<usize> {
        self.slots.iter().position(|slot| slot.state != SlotState::Free && slot.chunk_id == chunk_id)
    }

    fn put_ticket(&self, index: usize) -> u64 {
        (u64::from(self.slots[index].generation) << 32) | index as u64
    }

    fn send_status(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, index: usize) -> Result<(), DropReason> {
        let slot = &self.slots[index];
        let to =
            ReplyTo { peer: slot.peer, session: slot.session, request_id: slot.request_id, chunk_id: slot.chunk_id };
        let mut bitmap = [0u8; STATUS_BITMAP_BYTES];
        let (first_missing, complete) = match slot.state {
            SlotState::Committing => (slot.frag_count, flags::COMPLETE),
            _ => {
                let first = slot.received.first_clear(slot.frag_count);
                slot.received.export(first, slot.frag_count, &mut bitmap);
                (first, 0)
            }
        };
        let repr = Repr {
            flags: complete,
            credits: self.credits(),
            index: first_missing,
            count: slot.frag_count,
            total_len: slot.total_len,
            frag_len: slot.frag_len,
            ..Self::reply_header(Opcode::PutStatus, to)
        };
        // Send only as much of the bitmap as covers fragments that exist.
        let bits = slot.frag_count.saturating_sub(first_missing).min(STATUS_BITMAP_BITS);
        let bytes = bits.div_ceil(8) as usize;
        self.reply(arena, tx, to, repr, &bitmap[..bytes])
    }

    /// Why a fragment's header cannot describe a fragment of a chunk this node takes.
    fn fragment_shape_error(&self, max_fragment: u32, repr: &Repr) -> Option<Status> {
        let shape_ok = repr.frag_len > 0
            && u32::from(repr.frag_len) <= max_fragment
            && repr.total_len <= self.config.chunk_bytes_max
            && repr.count == wire::fragment_count(repr.total_len, repr.frag_len.max(1))
            && repr.count <= FRAGMENTS_MAX
            && repr.index < repr.count
            && u32::from(repr.payload_len) == wire::fragment_len(repr.total_len, repr.frag_len.max(1), repr.index);
        if shape_ok {
            None
        } else if repr.total_len > self.config.chunk_bytes_max {
            Some(Status::TooLarge)
        } else {
            Some(Status::BadRequest)
        }
    }

    /// The put slot a fragment belongs to, claiming a free one (and the store's space) for
    /// the first fragment of a chunk; `Err` is the reply instead (a retried put of a chunk
    /// already durable gets `Done`).
    fn slot_for_fragment(&mut self, now_ms: u64, repr: &Repr) -> Result<usize, PutReply> {
        match self.find_slot(repr.chunk_id) {
            Some(index) => {
                let slot = &self.slots[index];
                if slot.total_len != repr.total_len || slot.frag_len != repr.frag_len {
                    return Err(PutReply::Error(Status::Conflict));
                }
                Ok(index)
            }
            None => {
                if let Some(len) = self.store.chunk_len(repr.chunk_id) {
                    // Already durable: a retried put. Chunk ids are write-once.
                    if len != repr.total_len {
                        return Err(PutReply::Error(Status::Conflict));
                    }
                    self.counters.fragments_duplicate += 1;
                    return Err(PutReply::Done(len));
                }
                let Some(index) = self.slots.iter().position(|slot| slot.state == SlotState::Free) else {
                    return Err(PutReply::Error(Status::Busy));
                };
                let reservation = match self.store.begin_put(repr.chunk_id, repr.total_len) {
                    Ok(reservation) => reservation,
                    Err(error) => return Err(PutReply::Error(store_status(error))),
                };
                if repr.flags & flags::NOT_READ_SOON != 0 {
                    self.store.drop_when_durable(reservation);
                }
                let slot = &mut self.slots[index];
                slot.state = SlotState::Receiving;
                slot.generation = slot.generation.wrapping_add(1);
                slot.chunk_id = repr.chunk_id;
                slot.total_len = repr.total_len;
                slot.frag_len = repr.frag_len;
                slot.frag_count = repr.count;
                slot.received.clear();
                slot.ack_due = false;
                slot.reservation = reservation;
                slot.started_ms = now_ms;
                Ok(index)
            }
        }
    }

    fn on_put_fragment(
        &mut self,
        now_ms: u64,
        max_fragment: u32,
        to: ReplyTo,
        repr: &Repr,
        payload: core::ops::Range<usize>,
    ) -> PutReply {
        if let Some(status) = self.fragment_shape_error(max_fragment, repr) {
            return PutReply::Error(status);
        }
        let wants_ack = repr.flags & flags::ACK_REQUEST != 0;
        let index = match self.slot_for_fragment(now_ms, repr) {
            Ok(index) => index,
            Err(reply) => return reply,
        };
        if wants_ack {
            self.ack_later(index);
        }
        let slot = &mut self.slots[index];
        slot.peer = to.peer;
        slot.session = to.session;
        slot.request_id = to.request_id;
        slot.last_activity_ms = now_ms;
        if slot.state == SlotState::Committing || slot.received.get(repr.index) {
            self.counters.fragments_duplicate += 1;
            return PutReply::Nothing;
        }
        // Claimed now, so that a duplicate later in the same batch is not written twice;
        // the payload stays in its receive frame until `flush_writes` writes it.
        slot.received.set(repr.index);
        let pushed = self.pending_writes.push(PendingWrite {
            slot: index,
            generation: slot.generation,
            offset: repr.index * u32::from(repr.frag_len),
            frame: None,
            payload,
        });
        assert!(pushed.is_ok(), "receive flushes before pending_writes is full");
        self.keep_frame = true;
        PutReply::Nothing
    }

    fn release_slot(&mut self, index: usize, abort: bool) {
        let slot = &mut self.slots[index];
        if abort && slot.state == SlotState::Receiving {
            self.store.abort_put(slot.reservation);
        }
        slot.state = SlotState::Free;
    }

    fn on_put_query(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, to: ReplyTo) -> Result<(), DropReason> {
        if let Some(index) = self.find_slot(to.chunk_id) {
            self.slots[index].peer = to.peer;
            self.slots[index].session = to.session;
            self.slots[index].request_id = to.request_id;
            return self.send_status(arena, tx, index);
        }
        if let Some(total_len) = self.store.chunk_len(to.chunk_id) {
            let done = Repr { total_len, ..Self::reply_header(Opcode::PutDone, to) };
            return self.reply(arena, tx, to, done, &[]);
        }
        // Nothing known of this put (never started, or abandoned): nothing received.
        let repr = Repr { credits: self.credits(), ..Self::reply_header(Opcode::PutStatus, to) };
        self.reply(arena, tx, to, repr, &[])
    }

    fn on_get(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, to: ReplyTo, repr: &Repr) -> Result<(), DropReason> {
        self.counters.gets += 1;
        let max_fragment = self.fragment_max(arena);
        if repr.frag_len == 0 || repr.frag_len > max_fragment {
            return self.reply_error(arena, tx, to, Status::BadRequest);
        }
        let Some(total_len) = self.store.chunk_len(to.chunk_id) else {
            return self.reply_error(arena, tx, to, Status::NotFound);
        };
        let count = wire::fragment_count(total_len, repr.frag_len);
        if repr.index >= count {
            return self.reply_error(arena, tx, to, Status::BadRequest);
        }
        let wanted = repr.count.clamp(1, u32::from(self.config.window_fragments_max));
        let end = repr.index.saturating_add(wanted).min(count);
        // Frames for the whole run first, so that one vectored read fills them all.
        let mut frames: heapless::Vec<FrameId, GET_RUN_MAX> = heapless::Vec::new();
        let room = tx.capacity() - tx.len();
        for _ in repr.index..end {
            if frames.len() == room {
                break;
            }
            let Some(frame) = arena.alloc() else { break };
            let pushed = frames.push(frame);
            assert!(pushed.is_ok(), "a run is at most the window, which is at most GET_RUN_MAX");
        }
        if frames.is_empty() {
            return Err(DropReason::NoBuffer);
        }
        let short_of_buffers = frames.len() < (end - repr.index) as usize;
        let end = repr.index + frames.len() as u32;
        let frag_len = usize::from(repr.frag_len);
        let data_start = arena.headroom() + HEADER_LEN;
        let offset = repr.index * u32::from(repr.frag_len);
        let wanted_bytes = (u64::from(end) * frag_len as u64).min(u64::from(total_len)) - u64::from(offset);
        let read = {
            let mut payloads = arena.frames_mut::<GET_RUN_MAX>(&frames, data_start..data_start + frag_len);
            // Each buffer exactly its fragment: the run's last may end the chunk short.
            if let Some(last) = payloads.last_mut() {
                let last_len = wire::fragment_len(total_len, repr.frag_len, end - 1) as usize;
                let whole = core::mem::take(last);
                *last = &mut whole[..last_len];
            }
            self.store.read_vectored_at(to.chunk_id, offset, &mut payloads)
        };
        if read != Ok(wanted_bytes as usize) {
            for frame in frames {
                arena.free(frame);
            }
            let status = match read {
                Err(error) => store_status(error),
                Ok(_) => Status::Internal,
            };
            return self.reply_error(arena, tx, to, status);
        }
        if end == count && repr.flags & flags::NOT_READ_SOON != 0 {
            self.store.drop_after_read(to.chunk_id);
        }
        let headroom = arena.headroom();
        let mut frames = frames.into_iter();
        for index in repr.index..end {
            let frame = frames.next().expect("one frame per fragment of the run");
            let payload_len = wire::fragment_len(total_len, repr.frag_len, index) as usize;
            let header = Repr {
                index,
                count,
                total_len,
                frag_len: repr.frag_len,
                payload_len: payload_len as u16,
                credits: self.config.window_fragments_max,
                ..Self::reply_header(Opcode::GetData, to)
            };
            header.emit(&mut arena.frame_mut(&frame)[headroom..data_start]);
            // Sealed in place: the payload is encrypted where the store put it.
            if let Err(reason) = self.queue_sealed(arena, tx, to, frame, header.buffer_len()) {
                for unsent in frames {
                    arena.free(unsent);
                }
                return Err(reason);
            }
            self.counters.fragments_served += 1;
            self.counters.bytes_served += payload_len as u64;
        }
        if short_of_buffers { Err(DropReason::NoBuffer) } else { Ok(()) }
    }

    fn on_delete(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, to: ReplyTo) -> Result<(), DropReason> {
        if self.deletes.is_full() {
            return self.reply_error(arena, tx, to, Status::Busy);
        }
        if let Some(index) = self.find_slot(to.chunk_id) {
            if self.slots[index].state == SlotState::Receiving {
                self.release_slot(index, true);
            }
        }
        // Counter value 0 is BACKGROUND_TICKET, never used for a delete someone awaits.
        self.next_delete_ticket = self.next_delete_ticket.wrapping_add(1).max(1);
        let ticket = DELETE_TICKET_BIT | (self.next_delete_ticket & !DELETE_TICKET_BIT);
        match self.store.delete(to.chunk_id, ticket) {
            Ok(()) => {
                let pending = PendingDelete {
                    ticket,
                    peer: to.peer,
                    session: to.session,
                    request_id: to.request_id,
                    chunk_id: to.chunk_id,
                };
                let pushed = self.deletes.push(pending);
                assert!(pushed.is_ok(), "checked is_full above");
                Ok(())
            }
            Err(error) => self.reply_error(arena, tx, to, store_status(error)),
        }
    }

    fn on_control(
        &mut self,
        arena: &mut Arena<'_>,
        tx: &mut TxQueue,
        to: ReplyTo,
        request_frame: &FrameId,
        request: core::ops::Range<usize>,
    ) -> Result<(), DropReason> {
        if tx.is_full() {
            return Err(DropReason::NoBuffer);
        }
        let frame = arena.alloc().ok_or(DropReason::NoBuffer)?;
        let headroom = arena.headroom();
        let data_start = headroom + HEADER_LEN;
        // A reply must fit one datagram the backend can carry (the link MTU on kernel
        // bypass), not only a frame.
        let response_max =
            (arena.frame_size() - data_start).min(wire::PAYLOAD_MAX).min(usize::from(self.fragment_max(arena)));
        let (request_bytes, response_bytes) = arena.frame_pair(request_frame, &frame);
        let outcome = self.control.handle(
            to.peer,
            &request_bytes[request],
            &mut response_bytes[data_start..data_start + response_max],
            &mut self.store,
        );
        match outcome {
            Ok(len) => {
                assert!(len <= response_max);
                let header = Repr { payload_len: len as u16, ..Self::reply_header(Opcode::ControlReply, to) };
                header.emit(&mut arena.frame_mut(&frame)[headroom..data_start]);
                self.queue_sealed(arena, tx, to, frame, header.buffer_len())
            }
            Err(status) => {
                arena.free(frame);
                self.reply_error(arena, tx, to, status)
            }
        }
    }

    /// Acknowledges every change the store made durable since the last call.
    pub fn poll_store(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue) {
        let mut done: heapless::Vec<Durable, POLL_DURABLE_BATCH_MAX> = heapless::Vec::new();
        // Bounded by the store's contract; the rest wait for the next call.
        let mut overflow = false;
        self.store.poll_durable(&mut |durable| {
            if done.push(durable).is_err() {
                overflow = true;
            }
        });
        assert!(!overflow, "store reported more than POLL_DURABLE_BATCH_MAX completions in one poll");
        for durable in done {
            if durable.ticket & DELETE_TICKET_BIT != 0 {
                self.on_delete_durable(arena, tx, durable);
            } else {
                self.on_put_durable(arena, tx, durable);
            }
        }
    }

    fn on_put_durable(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, durable: Durable) {
        let index = (durable.ticket & 0xffff_ffff) as usize;
        let generation = (durable.ticket >> 32) as u32;
        let Some(slot) = self.slots.get(index) else { return };
        if slot.state != SlotState::Committing || slot.generation != generation {
            return;
        }
        let to =
            ReplyTo { peer: slot.peer, session: slot.session, request_id: slot.request_id, chunk_id: slot.chunk_id };
        let total_len = slot.total_len;
        let latency_us = self.now_ms.saturating_sub(slot.started_ms) * 1000;
        self.release_slot(index, false);
        self.counters.put_latency.observe_us(latency_us);
        let outcome = match durable.result {
            Ok(()) => {
                self.counters.chunks_stored += 1;
                self.counters.bytes_stored += u64::from(total_len);
                let done = Repr { total_len, ..Self::reply_header(Opcode::PutDone, to) };
                self.reply(arena, tx, to, done, &[])
            }
            Err(error) => self.reply_error(arena, tx, to, store_status(error)),
        };
        // A lost PutDone is recovered by the client's PutQuery.
        if let Err(reason) = outcome {
            self.counters.count_drop(reason);
        }
    }

    fn on_delete_durable(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, durable: Durable) {
        let Some(position) = self.deletes.iter().position(|pending| pending.ticket == durable.ticket) else { return };
        let pending = self.deletes.swap_remove(position);
        let to = ReplyTo {
            peer: pending.peer,
            session: pending.session,
            request_id: pending.request_id,
            chunk_id: pending.chunk_id,
        };
        let outcome = match durable.result {
            Ok(()) => {
                self.counters.chunks_deleted += 1;
                self.reply(arena, tx, to, Self::reply_header(Opcode::DeleteDone, to), &[])
            }
            Err(error) => self.reply_error(arena, tx, to, store_status(error)),
        };
        if let Err(reason) = outcome {
            self.counters.count_drop(reason);
        }
    }

    /// Abandons puts that have been idle too long, freeing their slots and reservations,
    /// and (once a second) ends sessions past their lifetime.
    /// Abandons the puts still receiving from `peer` (a local client that went away), so
    /// their slots and store space come back now instead of after the idle timeout. Puts
    /// already committing finish: their data is going to disk either way.
    pub fn forget_peer(&mut self, peer: &SocketAddr) {
        for index in 0..self.slots.len() {
            if self.slots[index].state == SlotState::Receiving && self.slots[index].peer == *peer {
                self.release_slot(index, true);
                self.counters.puts_abandoned += 1;
            }
        }
    }

    pub fn expire(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if now_ms >= self.next_session_sweep_ms {
            self.sessions.expire(now_ms);
            self.next_session_sweep_ms = now_ms + 1000;
        }
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.state == SlotState::Receiving
                && now_ms.saturating_sub(slot.last_activity_ms) > self.config.put_idle_timeout_ms
            {
                self.release_slot(index, true);
                self.counters.puts_abandoned += 1;
            }
        }
    }
}
