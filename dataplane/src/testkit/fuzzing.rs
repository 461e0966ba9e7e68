//! Fuzzing entry points, shared by the `cargo fuzz` targets in `fuzz/` and by the corpus
//! replay test (`tests/fuzz_corpus.rs`), so that an input libFuzzer finds reproduces
//! under a plain `cargo test` and stays fixed once it is in the corpus.
//!
//! Each entry point takes arbitrary bytes as one datagram and asserts what must hold
//! whatever those bytes are. A fuzzer cannot forge an AES-GCM tag, which would stop every
//! input at the door, so each input is also delivered a second time sealed with the
//! session the fuzzed node made with its client at start-up (the seeds are plaintext
//! datagrams for that reason): that is what carries the fuzzer into the protocol paths
//! behind the tag. The sealed copy is then delivered once more, and must be dropped as a
//! replay without any effect.
//!
//! Every call builds a fresh, small node in the same preloaded state (see [`ids`]), so an
//! input's outcome never depends on the inputs that ran before it.
#![cfg(feature = "std")]

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::boxed::Box;
use std::cell::RefCell;
use std::string::String;
use std::sync::OnceLock;
use std::vec::Vec;

use crate::arena::{Arena, HEADROOM_BYTES};
use crate::client::{self, Exchange, GetChunk, Progress, PutChunk, Timing, Transmit};
use crate::counters::{Counters, DropReason};
use crate::io::RxPacket;
use crate::node::sessions::{SeenRandom, SessionMemory, SessionSlot};
use crate::node::{NoControl, Node, NodeConfig, PutSlot, TxQueue};
use crate::session::handshake::{self as hs, ClusterKeys, Kind, Message};
use crate::session::peer::{ClientHandshake, OpenError, Session, SessionRx, SessionTx};
use crate::session::replay::Replay;
use crate::store::ChunkStore;
use crate::store::mem::MemStore;
use crate::wire::{
    self, AAD_LEN, ChunkId, ClusterKey, HEADER_LEN, MAGIC, Opcode, Packet, Repr, Status, TAG_LEN, VERSION, WireError,
    flags, v1,
};

/// The cluster key of the fuzzed node and clients.
pub const FUZZ_KEY: ClusterKey = ClusterKey::new([0x5a; 32]);
/// The fuzzed node's secret seed and its client's handshake random: fixed, so that every
/// fresh node makes the very same session with its client.
const NODE_SEED: [u8; 32] = [0x5e; 32];
const CLIENT_RANDOM: [u8; 32] = [0xc1; 32];
const CLIENT_INDEX: u32 = 0xc11e;
const SESSION_SLOTS: usize = 2;

/// Where every datagram comes from and every reply goes to.
pub const PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000));

// Small on purpose: a fresh node per input must cost microseconds, and with fewer frames
// than a GET window the out-of-buffers paths are reachable too.
const FRAME_BYTES: usize = 2048;
const FRAMES: usize = 8;
const PUT_SLOTS: usize = 4;
const WINDOW_FRAGMENTS: u16 = 8;
const CHUNK_BYTES_MAX: u32 = 64 << 10;
/// Equal to the largest chunk, so that a big put on top of the preloaded data hits `DiskFull`.
const STORE_CAPACITY_BYTES: u64 = 64 << 10;
/// Longest datagram a frame receives; real backends drop longer ones, the fuzzed node
/// gets their first `RX_ROOM` bytes so that long inputs still exercise it.
const RX_ROOM: usize = FRAME_BYTES - HEADROOM_BYTES;
const NOW_MS: u64 = 1_000;
const IDLE_TIMEOUT_MS: u64 = 30_000;
/// Header bytes a `Repr` captures: everything before the session fields.
const REPR_BYTES: usize = 48;

/// Chunk ids of the state every fuzzed node starts in; the seed corpus aims at them.
pub mod ids {
    use crate::wire::ChunkId;

    /// Durable, [`STORED_LEN`] bytes.
    pub const STORED: ChunkId = 1;
    pub const STORED_LEN: u32 = 5000;
    /// Durable and empty.
    pub const EMPTY: ChunkId = 2;
    /// A put under way: two fragments of [`PARTIAL_FRAG`] bytes, the first one received.
    pub const PARTIAL: ChunkId = 3;
    pub const PARTIAL_LEN: u32 = 1500;
    pub const PARTIAL_FRAG: u16 = 1000;
    /// A put under way with holes on both sides of a bitmap word boundary: fragments
    /// [`SPARSE_RECEIVED`] of [`SPARSE_COUNT`] received.
    pub const SPARSE: ChunkId = 4;
    pub const SPARSE_FRAG: u16 = 8;
    pub const SPARSE_COUNT: u32 = 100;
    pub const SPARSE_RECEIVED: [u32; 10] = [0, 1, 2, 3, 5, 9, 63, 64, 70, 98];
    /// Every fragment received; the store has not reported it durable yet.
    pub const COMMITTING: ChunkId = 5;
    pub const COMMITTING_LEN: u32 = 10;
    /// Unknown to the node.
    pub const FRESH: ChunkId = 10;

    /// Chunk and request id of the client machines of [`fuzz_client`](super::fuzz_client).
    pub const CLIENT_CHUNK: ChunkId = (0xf11e << 64) | 7;
    pub const CLIENT_REQUEST: u64 = 0x5eed_0001;
}

/// Deterministic filler so that stored chunks and client data are not all zeroes.
pub fn pattern(len: usize, salt: u64) -> Vec<u8> {
    let mut state = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A plaintext datagram (session fields and tag zero); `repr.payload_len` is taken from
/// `payload`. Seeds are these: the rig seals them with its session.
pub fn unsealed(repr: Repr, payload: &[u8]) -> Vec<u8> {
    let repr = Repr { payload_len: u16::try_from(payload.len()).expect("payload fits a datagram"), ..repr };
    let mut buffer = vec![0u8; repr.buffer_len()];
    repr.emit_with_payload(&mut buffer, payload);
    buffer
}

/// `datagram` (up to its declared payload) sealed with `tx`, when it passes the wire
/// checks at all.
fn sealed_with(datagram: &[u8], tx: &mut SessionTx) -> Option<Vec<u8>> {
    let packet = Packet::new_checked(datagram).ok()?;
    let mut copy = packet.datagram().to_vec();
    tx.seal(&mut copy).expect("the rig's session is far from its packet limit");
    Some(copy)
}

std::thread_local! {
    // Reused rather than allocated per input: fresh allocations under AddressSanitizer
    // cost page faults that dominated the run time. Reset before every use.
    static BACKING: RefCell<Box<Backing>> = RefCell::new(Box::new(Backing::new()));
}

/// Exercises the wire layer on `data`, then delivers it to a fresh node as-is and
/// re-sealed, checking the node's invariants after each step.
pub fn fuzz_packet(data: &[u8]) {
    run_packet(data);
}

/// `fuzz_packet`, returning the node's counters after the preload and at the end.
fn run_packet(data: &[u8]) -> (Counters, Counters) {
    check_wire(data);
    let datagram = &data[..data.len().min(RX_ROOM)];
    BACKING.with_borrow_mut(|backing| {
        let mut rig = NodeRig::new(backing);
        let preloaded = *rig.node.counters();
        rig.deliver(NOW_MS, datagram);
        if let Some(sealed) = sealed_with(datagram, &mut rig.client.tx) {
            rig.deliver(NOW_MS + 1, &sealed);
            let replayed_before = rig.node.counters().dropped_replayed;
            rig.deliver(NOW_MS + 2, &sealed);
            assert_eq!(
                rig.node.counters().dropped_replayed,
                replayed_before + 1,
                "a replayed datagram was not refused"
            );
        }
        rig.settle(NOW_MS + 3);
        (preloaded, *rig.node.counters())
    })
}

fn be_u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// The checked view, `Repr` and MAC must agree with each other and with the raw bytes.
fn check_wire(data: &[u8]) {
    let packet = match Packet::new_checked(data) {
        Ok(packet) => packet,
        Err(error) => return check_rejection(data, error),
    };
    let repr = Repr::parse(&packet);
    assert_eq!(
        (packet.opcode(), packet.status(), packet.flags(), packet.credits(), packet.request_id(), packet.chunk_id()),
        (repr.opcode, repr.status, repr.flags, repr.credits, repr.request_id, repr.chunk_id)
    );
    assert_eq!(
        (packet.index(), packet.count(), packet.total_len(), packet.frag_len(), packet.payload_len()),
        (repr.index, repr.count, repr.total_len, repr.frag_len, repr.payload_len)
    );
    assert_eq!(repr.flags & !flags::KNOWN, 0, "accepted flags this version does not define");
    let payload = packet.payload();
    assert_eq!(packet.datagram(), &data[..repr.buffer_len()]);
    assert_eq!(payload, &data[HEADER_LEN..repr.buffer_len()]);
    assert_eq!(packet.receiver_index().to_be_bytes(), data[48..52]);
    assert_eq!(packet.packet_number().to_be_bytes(), data[56..64]);
    assert_eq!(packet.tag()[..], data[AAD_LEN..HEADER_LEN]);
    assert!(!wire::is_handshake(data), "a handshake message parsed as data");

    let mut rebuilt = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit_with_payload(&mut rebuilt, payload), repr.buffer_len());
    let again = Packet::new_checked(&rebuilt[..]).expect("a re-emitted packet must pass the checks it came through");
    assert_eq!(Repr::parse(&again), repr, "parse -> emit -> parse changed the header");
    assert_eq!(again.payload(), payload);
    // Every header byte before the session fields belongs to a field, so nothing the
    // sender put there can be lost or normalised by a parse/emit round trip.
    assert_eq!(rebuilt[..REPR_BYTES], data[..REPR_BYTES], "header bytes not captured by Repr");
    assert_eq!(packet.into_inner(), data);

    let mut header = [0xffu8; HEADER_LEN];
    repr.emit(&mut header);
    assert_eq!(header[..REPR_BYTES], data[..REPR_BYTES]);
    assert_eq!(header[REPR_BYTES..], [0u8; HEADER_LEN - REPR_BYTES], "emit must zero the session fields and tag");
    let _ = TAG_LEN;

    check_fragment_arithmetic(repr.total_len, repr.frag_len, repr.index);
}

/// The fragment helpers on whatever lengths the datagram claims.
fn check_fragment_arithmetic(total_len: u32, frag_len: u16, index: u32) {
    if frag_len == 0 {
        return;
    }
    let count = wire::fragment_count(total_len, frag_len);
    let len = wire::fragment_len(total_len, frag_len, index);
    assert!(count >= 1);
    let expected = match index.cmp(&(count - 1)) {
        core::cmp::Ordering::Less => u64::from(frag_len),
        core::cmp::Ordering::Equal => u64::from(total_len) - u64::from(count - 1) * u64::from(frag_len),
        core::cmp::Ordering::Greater => 0,
    };
    assert_eq!(u64::from(len), expected, "fragment_len({total_len}, {frag_len}, {index})");
}

/// A rejection must name a reason the bytes really have.
fn check_rejection(data: &[u8], error: WireError) {
    if error == WireError::Truncated {
        let declared = if data.len() >= HEADER_LEN { usize::from(be_u16_at(data, 46)) } else { 0 };
        assert!(data.len() < HEADER_LEN + declared, "rejected as truncated but {} bytes are enough", data.len());
        return;
    }
    assert!(data.len() >= HEADER_LEN, "{error:?} for bytes shorter than a header");
    match error {
        WireError::Truncated => {}
        WireError::BadMagic => assert_ne!(be_u16_at(data, 0), MAGIC),
        WireError::UnsupportedVersion => assert_ne!(data[2], VERSION),
        WireError::UnknownOpcode => assert!(Opcode::from_u8(data[3]).is_none()),
        WireError::UnknownStatus => assert!(Status::from_u8(data[5]).is_none()),
        WireError::UnknownFlags => assert!(data[4] & !flags::KNOWN != 0 || data[52..56] != [0; 4]),
    }
}

/// Memory a fuzzed node borrows, kept off the stack.
struct Backing {
    memory: [u8; FRAMES * FRAME_BYTES],
    free: [u32; FRAMES],
    allocated: [u64; FRAMES.div_ceil(64)],
    slots: [PutSlot; PUT_SLOTS],
    sessions: [SessionSlot; SESSION_SLOTS],
    seen: [SeenRandom; SESSION_SLOTS * 4],
    tx: TxQueue,
}

impl Backing {
    fn new() -> Self {
        Self {
            memory: [0; FRAMES * FRAME_BYTES],
            free: [0; FRAMES],
            allocated: [0; FRAMES.div_ceil(64)],
            slots: core::array::from_fn(|_| PutSlot::default()),
            sessions: core::array::from_fn(|_| SessionSlot::default()),
            seen: [SeenRandom::default(); SESSION_SLOTS * 4],
            tx: TxQueue::new(),
        }
    }

    /// Back to the state of `new`, whatever a previous (possibly panicked) input left,
    /// so that no input's outcome depends on the ones before it.
    fn reset(&mut self) {
        self.memory.fill(0);
        self.slots.fill(PutSlot::default());
        self.tx.clear();
    }
}

/// The plaintext datagrams that build the preloaded state, sealed anew for every input.
struct Preload {
    /// Chunks made durable before anything else.
    durable: Vec<Vec<u8>>,
    /// Puts left in flight.
    in_flight: Vec<Vec<u8>>,
}

fn preload() -> &'static Preload {
    static PRELOAD: OnceLock<Preload> = OnceLock::new();
    PRELOAD.get_or_init(|| {
        let stored = pattern(ids::STORED_LEN as usize, 1);
        let frag = (FRAME_BYTES - HEADROOM_BYTES - HEADER_LEN) as u16;
        let mut durable: Vec<Vec<u8>> = stored
            .chunks(usize::from(frag))
            .enumerate()
            .map(|(index, piece)| put_fragment(ids::STORED, ids::STORED_LEN, frag, index as u32, piece, 0))
            .collect();
        durable.push(put_fragment(ids::EMPTY, 0, 100, 0, &[], 0));

        let partial = pattern(ids::PARTIAL_LEN as usize, 3);
        let first = &partial[..usize::from(ids::PARTIAL_FRAG)];
        let mut in_flight = vec![put_fragment(ids::PARTIAL, ids::PARTIAL_LEN, ids::PARTIAL_FRAG, 0, first, 0)];
        let sparse_len = ids::SPARSE_COUNT * u32::from(ids::SPARSE_FRAG);
        let piece = [0xab; ids::SPARSE_FRAG as usize];
        for index in ids::SPARSE_RECEIVED {
            in_flight.push(put_fragment(ids::SPARSE, sparse_len, ids::SPARSE_FRAG, index, &piece, 0));
        }
        let committing = pattern(ids::COMMITTING_LEN as usize, 5);
        let frag = ids::COMMITTING_LEN as u16;
        in_flight.push(put_fragment(ids::COMMITTING, ids::COMMITTING_LEN, frag, 0, &committing, 0));
        Preload { durable, in_flight }
    })
}

/// A reply the node queued, copied out of its frame.
struct Reply {
    repr: Repr,
    payload: Vec<u8>,
}

/// A node with its arena and TX queue, driven one datagram at a time, and its client's
/// session; `shadow` is an independent copy of the node's receiving half, which predicts
/// whether the node must accept each datagram.
struct NodeRig<'b> {
    arena: Arena<'b>,
    node: Node<'b, MemStore, NoControl>,
    tx: &'b mut TxQueue,
    client: Session,
    shadow: SessionRx,
}

/// What a datagram is, as the node must classify it.
enum Verdict {
    Handshake,
    VersionOne,
    Dropped(DropReason),
    Accepted(Repr),
}

impl<'b> NodeRig<'b> {
    fn new(backing: &'b mut Backing) -> Self {
        backing.reset();
        let Backing { memory, free, allocated, slots, sessions, seen, tx } = backing;
        let arena = Arena::new(memory, FRAME_BYTES, free, allocated).expect("valid arena constants");
        let config = NodeConfig {
            chunk_bytes_max: CHUNK_BYTES_MAX,
            window_fragments_max: WINDOW_FRAGMENTS,
            put_idle_timeout_ms: IDLE_TIMEOUT_MS,
            ..NodeConfig::new(FUZZ_KEY)
        };
        let memory = SessionMemory { slots: sessions, seen, seed: NODE_SEED };
        let mut node = Node::new(config, MemStore::with_capacity_bytes(STORE_CAPACITY_BYTES), NoControl, slots, memory);
        let mut arena = arena;
        let (client, shadow) = handshake(&mut node, &mut arena, tx);
        let mut rig = Self { arena, node, tx, client, shadow };
        rig.preload();
        rig
    }

    /// Seals a plaintext datagram with the client's session and delivers it.
    fn seal_and_deliver(&mut self, now_ms: u64, datagram: &[u8]) {
        let sealed = sealed_with(datagram, &mut self.client.tx).expect("preload datagrams are well formed");
        self.deliver(now_ms, &sealed);
    }

    /// Builds the state described in [`ids`] through the node's own request path.
    fn preload(&mut self) {
        let preload = preload();
        for datagram in &preload.durable {
            self.seal_and_deliver(0, datagram);
        }
        self.settle_store();
        for datagram in &preload.in_flight {
            self.seal_and_deliver(0, datagram);
        }
        assert_eq!(self.node.puts_in_flight(), 3, "preload leaves three puts in flight");
        assert_eq!(self.node.store().chunk_len(ids::STORED), Some(ids::STORED_LEN));
    }

    /// What the node must make of `datagram`, decided without it.
    fn verdict(&mut self, datagram: &[u8]) -> Verdict {
        if wire::is_handshake(datagram) {
            return Verdict::Handshake;
        }
        if datagram.get(2) == Some(&v1::VERSION) {
            return Verdict::VersionOne;
        }
        let mut copy = datagram.to_vec();
        match self.shadow.open(&mut copy) {
            Ok(repr) => Verdict::Accepted(repr),
            Err(OpenError::Malformed) => Verdict::Dropped(DropReason::Malformed),
            Err(OpenError::WrongSession) => Verdict::Dropped(DropReason::NoSession),
            Err(OpenError::Replayed(Replay::Duplicate | Replay::TooOld)) => Verdict::Dropped(DropReason::Replayed),
            Err(OpenError::Unauthenticated) => Verdict::Dropped(DropReason::BadMac),
        }
    }

    /// Hands `datagram` to the node as a received frame and checks what it did.
    fn deliver(&mut self, now_ms: u64, datagram: &[u8]) {
        assert!(datagram.len() <= RX_ROOM);
        let frame = self.arena.alloc().expect("the rig drains its TX queue, so every frame is free");
        self.arena.frame_mut(&frame)[HEADROOM_BYTES..HEADROOM_BYTES + datagram.len()].copy_from_slice(datagram);
        let rx = RxPacket { frame, offset: HEADROOM_BYTES as u16, len: datagram.len() as u16, peer: PEER };

        let before = *self.node.counters();
        let puts_before = self.node.puts_in_flight();
        let used_before = self.node.store().used_bytes();
        let verdict = self.verdict(datagram);
        let stored = match &verdict {
            Verdict::Accepted(repr) => self.node.store().chunk(repr.chunk_id).map(<[u8]>::to_vec),
            _ => None,
        };

        self.node.handle(now_ms, &mut self.arena, rx, self.tx);

        let after = *self.node.counters();
        assert_eq!(after.rx_packets, before.rx_packets + 1, "every received datagram is counted once");
        assert!(after.dropped_total() <= before.dropped_total() + 1, "one datagram, at most one drop");
        let raw = self.drain(before.tx_packets);
        let request = match verdict {
            Verdict::Handshake | Verdict::VersionOne => {
                // Before a session: no state change, and never more than 3x the bytes in.
                let sent: usize = raw.iter().map(Vec::len).sum();
                assert!(raw.len() <= 1 && sent <= 3 * datagram.len(), "{sent} bytes for {}", datagram.len());
                assert_eq!(self.node.puts_in_flight(), puts_before);
                assert_eq!(self.node.store().used_bytes(), used_before);
                return;
            }
            Verdict::Dropped(reason) => {
                // A datagram the node may not act on must have no effect beyond being counted.
                let mut expected = before;
                expected.rx_packets += 1;
                expected.count_drop(reason);
                assert_eq!(after, expected, "a datagram dropped as {reason:?} changed the node");
                assert!(raw.is_empty(), "a datagram dropped as {reason:?} was answered");
                assert_eq!(self.node.puts_in_flight(), puts_before);
                assert_eq!(self.node.store().used_bytes(), used_before);
                return;
            }
            Verdict::Accepted(repr) => repr,
        };
        for reason in [DropReason::Malformed, DropReason::BadMac, DropReason::NotAllowed, DropReason::Replayed] {
            assert_eq!(after.dropped(reason), before.dropped(reason), "authenticated datagram dropped as {reason:?}");
        }
        let replies: Vec<Reply> = raw.iter().map(|bytes| self.open_reply(bytes)).collect();
        self.check_answer(&request, stored.as_deref(), &before, &after, &replies);
    }

    /// Replies must answer the request they were sent for, in the shape its opcode allows.
    // Long on purpose: one assertion block per reply opcode the node can send.
    fn check_answer(
        &self,
        request: &Repr,
        stored: Option<&[u8]>,
        before: &Counters,
        after: &Counters,
        replies: &[Reply],
    ) {
        let no_buffer = after.dropped_no_buffer > before.dropped_no_buffer;
        for reply in replies {
            assert_eq!(
                (reply.repr.request_id, reply.repr.chunk_id),
                (request.request_id, request.chunk_id),
                "{:?} reply to {:?} names another request",
                reply.repr.opcode,
                request.opcode
            );
        }
        let opcodes: Vec<Opcode> = replies.iter().map(|reply| reply.repr.opcode).collect();
        match request.opcode {
            Opcode::Ping => {
                assert_eq!(opcodes, [Opcode::Pong]);
                let pong = &replies[0].repr;
                assert_eq!((pong.credits, pong.total_len), (WINDOW_FRAGMENTS, CHUNK_BYTES_MAX));
                assert_eq!(pong.frag_len, Node::<MemStore, NoControl>::fragment_bytes_max(&self.arena));
            }
            Opcode::PutFrag => {
                assert!(replies.len() <= 1, "one fragment, at most one answer: {opcodes:?}");
                if let Some(reply) = replies.first() {
                    match reply.repr.opcode {
                        Opcode::PutStatus => {
                            assert_eq!(
                                (reply.repr.total_len, reply.repr.frag_len),
                                (request.total_len, request.frag_len)
                            );
                            assert_eq!(reply.repr.count, request.count);
                            assert!(reply.repr.index <= reply.repr.count);
                            assert!(reply.payload.len() <= 128, "status bitmap beyond STATUS_BITMAP_BITS");
                        }
                        Opcode::PutDone => assert_eq!(reply.repr.total_len, request.total_len),
                        Opcode::Error => assert_ne!(reply.repr.status, Status::Ok),
                        other => panic!("{other:?} in answer to a put fragment"),
                    }
                } else if request.flags & flags::ACK_REQUEST != 0 {
                    assert!(no_buffer, "a fragment asking for an ack got no answer");
                }
            }
            Opcode::PutQuery => {
                assert!(matches!(opcodes[..], [Opcode::PutStatus] | [Opcode::PutDone]), "{opcodes:?}");
            }
            Opcode::Get => self.check_get(request, stored, replies, no_buffer),
            Opcode::Delete => {
                // Answered only once durable (by poll_store), or refused at once.
                assert!(opcodes.is_empty() || opcodes == [Opcode::Error], "{opcodes:?}");
                if opcodes.is_empty() {
                    assert_eq!(self.node.store().chunk_len(request.chunk_id), None, "chunk survived its delete");
                }
            }
            Opcode::Stat => match stored {
                Some(data) => {
                    assert_eq!(opcodes, [Opcode::StatReply]);
                    assert_eq!(replies[0].repr.total_len as usize, data.len());
                }
                None => {
                    assert_eq!(opcodes, [Opcode::Error]);
                    assert_eq!(replies[0].repr.status, Status::NotFound);
                }
            },
            Opcode::Control => {
                // NoControl refuses everything.
                assert_eq!(opcodes, [Opcode::Error]);
                assert_eq!(replies[0].repr.status, Status::BadRequest);
            }
            Opcode::Pong
            | Opcode::PutStatus
            | Opcode::PutDone
            | Opcode::GetData
            | Opcode::DeleteDone
            | Opcode::StatReply
            | Opcode::ControlReply
            | Opcode::Error => {
                assert!(replies.is_empty(), "a reply opcode was answered");
                assert_eq!(after.dropped_unexpected, before.dropped_unexpected + 1);
            }
        }
    }

    /// GET answers: a run of consecutive fragments of the stored bytes, or one error.
    fn check_get(&self, request: &Repr, stored: Option<&[u8]>, replies: &[Reply], no_buffer: bool) {
        let data_replies = replies.iter().take_while(|reply| reply.repr.opcode == Opcode::GetData).count();
        assert!(replies.len() - data_replies <= 1, "GET answered with more than one non-data packet");
        if let Some(error) = replies.get(data_replies) {
            assert_eq!(error.repr.opcode, Opcode::Error);
            assert_ne!(error.repr.status, Status::Ok);
        }
        assert!(data_replies <= usize::from(WINDOW_FRAGMENTS), "GET served more than a window");
        if data_replies == 0 {
            assert!(no_buffer || replies.len() == 1, "GET got no answer");
            return;
        }
        let data = stored.expect("GetData for a chunk the store does not hold");
        let frag_len = u32::from(request.frag_len);
        for (offset, reply) in replies[..data_replies].iter().enumerate() {
            let index = request.index + offset as u32;
            assert_eq!(reply.repr.index, index, "GetData out of order");
            assert_eq!((reply.repr.total_len as usize, reply.repr.frag_len), (data.len(), request.frag_len));
            assert_eq!(reply.repr.count, wire::fragment_count(reply.repr.total_len, request.frag_len));
            let start = (index * frag_len) as usize;
            let end = (start + frag_len as usize).min(data.len());
            assert!(reply.payload == data[start..end], "GetData {index} carries other bytes than the store holds");
        }
    }

    /// Checks that every frame is free or queued, takes the queued datagrams out and frees
    /// their frames.
    fn drain(&mut self, tx_packets_before: u64) -> Vec<Vec<u8>> {
        let queued = self.tx.len();
        let frames = self.arena.frame_count() as usize;
        assert_eq!(self.arena.free_frames() + queued, frames, "a frame is neither free nor queued for sending");
        assert_eq!(
            self.node.counters().tx_packets - tx_packets_before,
            queued as u64,
            "tx_packets disagrees with the queue"
        );
        let mut replies = Vec::with_capacity(queued);
        while let Some(packet) = self.tx.pop_front() {
            assert_eq!(packet.peer, PEER);
            let start = usize::from(packet.offset);
            let bytes = self.arena.frame(&packet.frame).get(start..start + usize::from(packet.len));
            replies.push(bytes.expect("queued datagram lies inside its frame").to_vec());
            self.arena.free(packet.frame);
        }
        assert_eq!(self.arena.free_frames(), frames);
        replies
    }

    /// Lets the store report durability and expires every put, then checks no slot leaked.
    fn settle(&mut self, now_ms: u64) {
        self.settle_store();
        self.node.expire(now_ms + IDLE_TIMEOUT_MS + 1);
        assert_eq!(self.node.puts_in_flight(), 0, "a put slot outlived its put");
    }

    fn settle_store(&mut self) {
        let before = *self.node.counters();
        self.node.poll_store(&mut self.arena, self.tx);
        for bytes in self.drain(before.tx_packets) {
            let opcode = self.open_reply(&bytes).repr.opcode;
            assert!(
                matches!(opcode, Opcode::PutDone | Opcode::DeleteDone | Opcode::Error),
                "{opcode:?} from poll_store"
            );
        }
        let after = *self.node.counters();
        assert_eq!(after.rx_packets, before.rx_packets);
    }
}

impl NodeRig<'_> {
    /// A datagram the node queued must be a complete reply sealed for the client's
    /// session, that the client opens.
    fn open_reply(&mut self, bytes: &[u8]) -> Reply {
        let packet = Packet::new_checked(bytes).expect("the node sent a datagram that fails its own checks");
        assert_eq!(packet.datagram().len(), bytes.len(), "the node sent bytes beyond the declared payload");
        let mut copy = bytes.to_vec();
        let repr = self.client.rx.open(&mut copy).expect("the client cannot open the node's reply");
        assert!(
            matches!(
                repr.opcode,
                Opcode::Pong
                    | Opcode::PutStatus
                    | Opcode::PutDone
                    | Opcode::GetData
                    | Opcode::DeleteDone
                    | Opcode::StatReply
                    | Opcode::ControlReply
                    | Opcode::Error
            ),
            "the node sent a request opcode {:?}",
            repr.opcode
        );
        Reply { repr, payload: copy[HEADER_LEN..].to_vec() }
    }
}

/// Runs the handshake with a fresh node; returns the client's session and an independent
/// copy of the node's receiving half.
fn handshake(
    node: &mut Node<'_, MemStore, NoControl>,
    arena: &mut Arena<'_>,
    tx: &mut TxQueue,
) -> (Session, SessionRx) {
    let keys = ClusterKeys::new(*FUZZ_KEY.bytes());
    let mut attempt = ClientHandshake::new(&keys, CLIENT_INDEX, CLIENT_RANDOM);
    let mut initiate = [0u8; hs::INITIATE_LEN];
    attempt.initiate(&mut initiate);
    let challenge = exchange_raw(node, arena, tx, &initiate);
    let node_random = Message::new_checked(&challenge[..]).ok().and_then(|m| m.node_random()).expect("a Challenge");
    let mut confirm = [0u8; hs::CONFIRM_LEN];
    attempt.on_challenge(&challenge, &mut confirm).expect("the node's Challenge authenticates");
    let accept = exchange_raw(node, arena, tx, &confirm);
    let message = Message::new_checked(&accept[..]).expect("an Accept");
    assert_eq!(message.kind(), Kind::Accept);
    let node_index = message.node_index().expect("an Accept names the session");
    let session = attempt.on_accept(&accept).expect("the node's Accept authenticates");
    let shadow = SessionRx::new(node_index, keys.session(&CLIENT_RANDOM, &node_random).client_to_node);
    (session, shadow)
}

/// Delivers one handshake message and returns the node's only reply.
fn exchange_raw(
    node: &mut Node<'_, MemStore, NoControl>,
    arena: &mut Arena<'_>,
    tx: &mut TxQueue,
    message: &[u8],
) -> Vec<u8> {
    let frame = arena.alloc().expect("a free frame");
    arena.frame_mut(&frame)[HEADROOM_BYTES..HEADROOM_BYTES + message.len()].copy_from_slice(message);
    node.handle(0, arena, RxPacket { frame, offset: HEADROOM_BYTES as u16, len: message.len() as u16, peer: PEER }, tx);
    let packet = tx.pop_front().expect("the node answers a handshake message");
    assert!(tx.is_empty());
    let start = usize::from(packet.offset);
    let reply = arena.frame(&packet.frame)[start..start + usize::from(packet.len)].to_vec();
    arena.free(packet.frame);
    reply
}

fn put_fragment(chunk_id: ChunkId, total_len: u32, frag_len: u16, index: u32, payload: &[u8], flags: u8) -> Vec<u8> {
    let repr = Repr {
        flags,
        request_id: 100 + u64::from(index),
        chunk_id,
        index,
        count: wire::fragment_count(total_len, frag_len),
        total_len,
        frag_len,
        ..Repr::new(Opcode::PutFrag)
    };
    unsealed(repr, payload)
}

// The client machines of `fuzz_client`: a put of `CLIENT_PUT_LEN` bytes, a get of a range
// that starts and ends inside fragments, and a ping exchange, all sharing one chunk and
// request id so that every reply reaches all three.
const CLIENT_PUT_LEN: usize = 9600;
const CLIENT_PUT_FRAG: u16 = 64;
const CLIENT_PUT_CREDITS: u16 = 16;
const CLIENT_GET_TOTAL: u32 = 3000;
const CLIENT_GET_FRAG: u16 = 100;
const CLIENT_GET_START: u32 = 150;
const CLIENT_GET_LEN: usize = 2000;
const CLIENT_GET_WINDOW: u16 = 8;
const CLIENT_TIMING: Timing = Timing { rto_initial_ms: 20, rto_max_ms: 80, timeouts_max: 2 };

/// Checks every request a client machine sends.
struct RequestSink<'d> {
    put_data: &'d [u8],
    sent: usize,
}

impl Transmit for RequestSink<'_> {
    fn transmit(&mut self, header: &[u8], payload: &[u8]) {
        self.sent += 1;
        assert_eq!(header.len(), HEADER_LEN, "a header comes whole, the payload after it");
        let datagram = &[header, payload].concat()[..];
        assert!(datagram.len() <= client::DATAGRAM_BYTES_MAX);
        let packet = Packet::new_checked(datagram).expect("a client sent a datagram that fails the wire checks");
        assert_eq!(packet.datagram().len(), datagram.len());
        // Machines hand datagrams over unsealed: the driver owns the session.
        assert_eq!((packet.receiver_index(), packet.packet_number(), packet.tag()), (0, 0, [0; TAG_LEN]));
        let repr = Repr::parse(&packet);
        assert_eq!((repr.chunk_id, repr.request_id), (ids::CLIENT_CHUNK, ids::CLIENT_REQUEST));
        match repr.opcode {
            Opcode::PutFrag => {
                let total_len = self.put_data.len() as u32;
                assert_eq!((repr.total_len, repr.frag_len), (total_len, CLIENT_PUT_FRAG));
                assert_eq!(repr.count, wire::fragment_count(total_len, CLIENT_PUT_FRAG));
                assert!(repr.index < repr.count, "PutFrag {} of {}", repr.index, repr.count);
                let start = repr.index as usize * usize::from(CLIENT_PUT_FRAG);
                let end = (start + usize::from(CLIENT_PUT_FRAG)).min(self.put_data.len());
                assert!(
                    packet.payload() == &self.put_data[start..end],
                    "PutFrag {} carries the wrong bytes",
                    repr.index
                );
            }
            Opcode::PutQuery | Opcode::Ping => assert_eq!(repr.payload_len, 0),
            Opcode::Get => {
                assert_eq!(repr.frag_len, CLIENT_GET_FRAG);
                let first = CLIENT_GET_START / u32::from(CLIENT_GET_FRAG);
                let end = (CLIENT_GET_START + CLIENT_GET_LEN as u32).div_ceil(u32::from(CLIENT_GET_FRAG));
                assert!(repr.count >= 1, "empty GET");
                assert!(
                    repr.index >= first && u64::from(repr.index) + u64::from(repr.count) <= u64::from(end),
                    "GET {}+{} outside {first}..{end}",
                    repr.index,
                    repr.count
                );
            }
            other => panic!("a client sent {other:?}"),
        }
    }
}

/// Feeds `data` as a reply to a put, a get and a ping exchange in flight, as-is and
/// re-sealed, then runs their timers out; checks every datagram they send in response.
pub fn fuzz_client(data: &[u8]) {
    let put_data = pattern(CLIENT_PUT_LEN, 11);
    let mut sink = RequestSink { put_data: &put_data, sent: 0 };
    let (chunk, request) = (ids::CLIENT_CHUNK, ids::CLIENT_REQUEST);
    let mut put =
        Box::new(PutChunk::new(chunk, request, &put_data[..], CLIENT_PUT_FRAG, CLIENT_PUT_CREDITS, CLIENT_TIMING, 0));
    put.start(0, &mut sink);
    assert_eq!(sink.sent, usize::from(CLIENT_PUT_CREDITS), "a put starts with one credit window");
    let mut out = vec![0u8; CLIENT_GET_LEN];
    let mut get = Box::new(GetChunk::new(
        chunk,
        request,
        CLIENT_GET_TOTAL,
        CLIENT_GET_START,
        &mut out[..],
        CLIENT_GET_FRAG,
        CLIENT_GET_WINDOW,
        CLIENT_TIMING,
        0,
    ));
    get.start(&mut sink);
    let ping = Repr { request_id: request, chunk_id: chunk, ..Repr::new(Opcode::Ping) };
    let mut exchange = Box::new(Exchange::new(ping, &[], Opcode::Pong, CLIENT_TIMING, 0));
    exchange.start(&mut sink);

    // The client's session with a node: the input as it came (no fuzzer forges a tag),
    // then sealed by the node's half, which the client must open.
    let keys = ClusterKeys::new(*FUZZ_KEY.bytes());
    let session = || keys.session(&HANDSHAKE_RANDOMS.0, &HANDSHAKE_RANDOMS.1).node_to_client;
    let mut client_rx = SessionRx::new(CLIENT_INDEX, session());
    let mut node_tx = SessionTx::new(CLIENT_INDEX, session());
    let open = |rx: &mut SessionRx, bytes: &[u8]| {
        let mut copy = bytes.to_vec();
        rx.open(&mut copy)
            .ok()
            .map(|repr| (repr, copy[HEADER_LEN..HEADER_LEN + usize::from(repr.payload_len)].to_vec()))
    };
    let as_is = open(&mut client_rx, data);
    assert!(as_is.is_none() || Packet::new_checked(data).is_ok(), "opened bytes that fail the wire checks");
    let sealed_copy = sealed_with(data, &mut node_tx);
    let resealed = sealed_copy.map(|bytes| open(&mut client_rx, &bytes).expect("the client opens a sealed reply"));
    let deliveries = as_is.into_iter().chain(resealed);
    for (turn, (repr, payload)) in deliveries.enumerate() {
        let now_ms = 30 + turn as u64;
        put.on_packet(&repr, &payload, now_ms, &mut sink);
        get.on_packet(&repr, &payload, now_ms, &mut sink);
        exchange.on_packet(&repr, &payload, now_ms);
        check_client_state(&put, &get, &exchange);
    }

    // Run every timer to its end: whatever the reply did, the machines must settle.
    let mut now_ms = 40;
    for _ in 0..16 {
        now_ms = now_ms.max(put.deadline_ms()).max(get.deadline_ms()).max(exchange.deadline_ms());
        put.on_timer(now_ms, &mut sink);
        get.on_timer(now_ms, &mut sink);
        exchange.on_timer(now_ms, &mut sink);
        check_client_state(&put, &get, &exchange);
    }
    for progress in [put.progress(), get.progress(), exchange.progress()] {
        assert_ne!(progress, Progress::Pending, "a client machine never gave up");
    }
}

fn check_client_state(put: &PutChunk<&[u8]>, get: &GetChunk<&mut [u8]>, exchange: &Exchange) {
    let fragments = wire::fragment_count(CLIENT_PUT_LEN as u32, CLIENT_PUT_FRAG);
    assert!(put.acked_bytes() <= u64::from(fragments) * u64::from(CLIENT_PUT_FRAG));
    let first = CLIENT_GET_START / u32::from(CLIENT_GET_FRAG);
    let end = (CLIENT_GET_START + CLIENT_GET_LEN as u32).div_ceil(u32::from(CLIENT_GET_FRAG));
    assert!(get.received_fragments() <= end - first);
    match exchange.progress() {
        Progress::Done => {
            let (reply, _) = exchange.reply().expect("a finished exchange keeps its reply");
            assert_eq!(reply.opcode, Opcode::Pong);
        }
        Progress::Pending | Progress::Failed(_) => {}
    }
}

/// One file of the seed corpus.
pub struct Seed {
    /// The fuzz target (and `fuzz/corpus/` directory) it belongs to.
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Hand-made inputs that reach each protocol path on the preloaded node and each client
/// reaction, as plaintext datagrams (the targets seal them), plus malformed variants. libFuzzer starts from
/// these instead of having to discover the header layout and the preloaded ids.
/// The node's own address on a kernel-bypass port, for [`fuzz_frame`].
pub const FRAME_NODE_MAC: crate::io::netstack::MacAddr = [0x02, 0xbe, 0xe1, 0, 0, 1];
pub const FRAME_NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// One untrusted Ethernet frame, as a DPDK port receives it: the ARP / ICMP / ND
/// responder may rewrite it into a reply (which must then be well formed and no longer
/// than the frame) or must leave it untouched; then the UDP parser must not panic and must
/// point inside the frame.
pub fn fuzz_frame(data: &[u8]) {
    use crate::io::netstack;
    use crate::io::responder::{Answer, LocalAddrs, answer_in_place};
    use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet};

    let local = LocalAddrs::new(FRAME_NODE_MAC, FRAME_NODE_IP);
    let mut frame = data.to_vec();
    match answer_in_place(&mut frame, &local) {
        Answer::NotMine => assert_eq!(frame, data, "a frame the responder does not answer must stay as it was"),
        Answer::ArpReply { len } => {
            assert!(len <= frame.len());
            assert_eq!(frame[6..12], FRAME_NODE_MAC, "an ARP reply comes from the node");
            assert_eq!(frame[28..32], FRAME_NODE_IP.octets(), "an ARP reply announces the node's address");
            assert_eq!(frame[20..22], [0, 2], "an ARP reply has opcode 2");
        }
        Answer::EchoReply { len } => {
            assert!(len <= frame.len());
            let ip = Ipv4Packet::new_checked(&frame[14..len]).expect("a well-formed IPv4 reply");
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert!(Icmpv4Packet::new_checked(ip.payload()).unwrap().verify_checksum(), "ICMP checksum");
            assert_eq!(ip.src_addr(), FRAME_NODE_IP, "an echo reply comes from the node");
        }
        Answer::NeighborAdvert { len } | Answer::Echo6Reply { len } => {
            assert!(len <= frame.len());
            assert_eq!(frame[6..12], FRAME_NODE_MAC, "an ICMPv6 reply comes from the node");
            let ip = Ipv6Packet::new_checked(&frame[14..len]).expect("a well-formed IPv6 reply");
            assert_eq!(14 + ip.total_len(), len);
            assert_eq!(ip.src_addr(), local.ipv6_link_local, "an ICMPv6 reply comes from the node's address");
            let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("a well-formed ICMPv6 reply");
            assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()), "ICMPv6 checksum");
        }
    }
    if let Ok(datagram) = netstack::parse(data) {
        assert!(datagram.payload.start <= datagram.payload.end && datagram.payload.end <= data.len());
    }
}

/// Test frames for the responder: requests as peers send them.
pub mod frames {
    use core::net::{Ipv4Addr, Ipv6Addr};
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet,
        IpProtocol, Ipv4Packet, Ipv6Packet, NdiscRepr, RawHardwareAddress,
    };
    use std::vec::Vec;

    use crate::io::netstack::{ETHERNET_LEN, IPV4_LEN, IPV6_LEN, MacAddr};

    fn ethernet(dst: MacAddr, src: MacAddr, ethertype: EthernetProtocol, body_len: usize) -> Vec<u8> {
        let mut frame = std::vec![0u8; ETHERNET_LEN + body_len];
        let mut ethernet = EthernetFrame::new_unchecked(&mut frame[..]);
        ethernet.set_dst_addr(EthernetAddress(dst));
        ethernet.set_src_addr(EthernetAddress(src));
        ethernet.set_ethertype(ethertype);
        frame
    }

    /// A 60-byte (padded) ARP who-has `target` from `peer`.
    pub fn arp_request(peer_mac: MacAddr, peer_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut frame = ethernet([0xff; 6], peer_mac, EthernetProtocol::Arp, 46);
        frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        frame[22..28].copy_from_slice(&peer_mac);
        frame[28..32].copy_from_slice(&peer_ip.octets());
        frame[38..42].copy_from_slice(&target.octets());
        frame
    }

    /// A ping from `peer` to `node`, with valid checksums.
    pub fn echo_request(node: (MacAddr, Ipv4Addr), peer: (MacAddr, Ipv4Addr), payload: &[u8]) -> Vec<u8> {
        let icmp_len = 8 + payload.len();
        let mut frame = ethernet(node.0, peer.0, EthernetProtocol::Ipv4, IPV4_LEN + icmp_len);
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETHERNET_LEN..]);
        ip.set_version(4);
        ip.set_header_len(IPV4_LEN as u8);
        ip.set_total_len((IPV4_LEN + icmp_len) as u16);
        ip.set_hop_limit(64);
        ip.set_next_header(IpProtocol::Icmp);
        ip.set_src_addr(peer.1);
        ip.set_dst_addr(node.1);
        ip.fill_checksum();
        let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
        icmp.set_msg_type(Icmpv4Message::EchoRequest);
        icmp.set_echo_ident(0x1234);
        icmp.set_echo_seq_no(1);
        icmp.data_mut().copy_from_slice(payload);
        icmp.fill_checksum();
        frame
    }

    /// An IPv6 frame carrying an ICMPv6 body that `fill` writes; its checksum is then filled.
    pub fn icmpv6(
        macs: (MacAddr, MacAddr),
        addrs: (Ipv6Addr, Ipv6Addr),
        hop_limit: u8,
        icmp_len: usize,
        fill: impl FnOnce(&mut Icmpv6Packet<&mut [u8]>),
    ) -> Vec<u8> {
        let (dst_mac, src_mac) = macs;
        let (src, dst) = addrs;
        let mut frame = ethernet(dst_mac, src_mac, EthernetProtocol::Ipv6, IPV6_LEN + icmp_len);
        let mut ip = Ipv6Packet::new_unchecked(&mut frame[ETHERNET_LEN..]);
        ip.set_version(6);
        ip.set_payload_len(icmp_len as u16);
        ip.set_next_header(IpProtocol::Icmpv6);
        ip.set_hop_limit(hop_limit);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        let mut icmp = Icmpv6Packet::new_unchecked(ip.payload_mut());
        fill(&mut icmp);
        icmp.fill_checksum(&src, &dst);
        frame
    }

    /// A Neighbor Solicitation for `target` from `peer`, to `dst` (the target itself or
    /// its solicited-node group) at `dst_mac`, with the source link-layer address option.
    pub fn neighbor_solicitation(
        dst_mac: MacAddr,
        dst: Ipv6Addr,
        peer: (MacAddr, Ipv6Addr),
        target: Ipv6Addr,
        hop_limit: u8,
    ) -> Vec<u8> {
        let solicit = NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: Some(RawHardwareAddress::from(EthernetAddress(peer.0))),
        };
        icmpv6((dst_mac, peer.0), (peer.1, dst), hop_limit, solicit.buffer_len(), |icmp| solicit.emit(icmp))
    }

    /// An ICMPv6 echo request from `peer` to `node`.
    pub fn echo6_request(node: (MacAddr, Ipv6Addr), peer: (MacAddr, Ipv6Addr), payload: &[u8]) -> Vec<u8> {
        icmpv6((node.0, peer.0), (peer.1, node.1), 64, 8 + payload.len(), |icmp| {
            icmp.set_msg_type(Icmpv6Message::EchoRequest);
            icmp.set_msg_code(0);
            icmp.set_echo_ident(0x1234);
            icmp.set_echo_seq_no(1);
            icmp.payload_mut().copy_from_slice(payload);
        })
    }
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::io::netstack::{Route, Vlan, write_headers};
    use crate::io::responder::{link_local_from_mac, solicited_node};
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let peer_mac = [0x02, 0, 0, 0, 0, 2];
    let peer_ip = Ipv4Addr::new(10, 0, 0, 2);
    let arp = frames::arp_request(peer_mac, peer_ip, FRAME_NODE_IP);
    seeds.push(("arp-request".into(), arp.clone()));
    let mut other = arp;
    other[41] = 99;
    seeds.push(("arp-request-other-ip".into(), other));

    let echo = frames::echo_request((FRAME_NODE_MAC, FRAME_NODE_IP), (peer_mac, peer_ip), &[0; 16]);
    seeds.push(("icmp-echo".into(), echo.clone()));
    seeds.push(("icmp-echo-truncated".into(), echo[..40].to_vec()));

    let node6 = link_local_from_mac(FRAME_NODE_MAC);
    let peer6 = (peer_mac, link_local_from_mac(peer_mac));
    let group = solicited_node(node6);
    let group_mac = [0x33, 0x33, 0xff, 0, 0, 1];
    seeds.push(("nd-solicit-multicast".into(), frames::neighbor_solicitation(group_mac, group, peer6, node6, 255)));
    seeds.push(("nd-solicit-unicast".into(), frames::neighbor_solicitation(FRAME_NODE_MAC, node6, peer6, node6, 255)));
    seeds.push(("nd-solicit-hop-64".into(), frames::neighbor_solicitation(group_mac, group, peer6, node6, 64)));
    let echo6 = frames::echo6_request((FRAME_NODE_MAC, node6), peer6, &[0; 16]);
    seeds.push(("icmpv6-echo".into(), echo6.clone()));
    seeds.push(("icmpv6-echo-truncated".into(), echo6[..60].to_vec()));

    let datagram = unsealed(request(Opcode::Ping, 0), &[]);
    for (name, vlan, dst) in [
        ("udp-v4", None, SocketAddr::from((FRAME_NODE_IP, 7777))),
        ("udp-v4-vlan", Some(Vlan { tpid: 0x8100, tci: 7 }), SocketAddr::from((FRAME_NODE_IP, 7777))),
        ("udp-v6", None, "[fd00::1]:7777".parse().expect("constant address")),
    ] {
        let src = if dst.is_ipv4() {
            SocketAddr::from((peer_ip, 40000))
        } else {
            "[fd00::2]:40000".parse().expect("constant")
        };
        let route = Route { src_mac: peer_mac, dst_mac: FRAME_NODE_MAC, vlan, src, dst };
        let header_len = route.header_len().expect("same family");
        let mut frame = std::vec![0u8; header_len + datagram.len()];
        frame[header_len..].copy_from_slice(&datagram);
        write_headers(&route, 1, &mut frame).expect("fits");
        seeds.push((name.into(), frame));
    }
    seeds
}

pub fn seed_corpus() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed { target, name: std::format!("seed-{name}"), bytes });
    };
    for (name, bytes) in packet_seeds() {
        add("packet", &name, bytes);
    }
    for (name, bytes) in client_seeds() {
        add("client_reply", &name, bytes);
    }
    for (name, bytes) in frame_seeds() {
        add("frame", &name, bytes);
    }
    for (name, bytes) in handshake_seeds() {
        add("handshake", &name, bytes);
    }
    seeds
}

/// The randoms of the session the handshake fuzz target and its seeds use.
const HANDSHAKE_RANDOMS: ([u8; 32], [u8; 32]) = ([0x11; 32], [0x22; 32]);

/// One untrusted datagram as a protocol v2 handshake message: the checked view and its
/// accessors must never panic, whatever the bytes, and a message only reports the fields
/// of its kind; seeds that authenticate carry the fuzzer past `mac1` and the seal.
pub fn fuzz_handshake(data: &[u8]) {
    use crate::session::handshake::{ClusterKeys, fuzz_parse};
    let keys = ClusterKeys::new(*FUZZ_KEY.bytes());
    let session = keys.session(&HANDSHAKE_RANDOMS.0, &HANDSHAKE_RANDOMS.1);
    fuzz_parse(data, &keys, &session.client_to_node);
    fuzz_parse(data, &keys, &session.node_to_client);
}

fn handshake_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::session::handshake::*;
    let keys = ClusterKeys::new(*FUZZ_KEY.bytes());
    let (client_random, node_random) = HANDSHAKE_RANDOMS;
    let session = keys.session(&client_random, &node_random);
    let cookie = [0x33; COOKIE_LEN];
    let mut initiate = [0u8; INITIATE_LEN];
    write_initiate(&mut initiate, &keys, 7, &client_random);
    let mut challenge = [0u8; CHALLENGE_LEN];
    write_challenge(&mut challenge, &keys, 7, &node_random, &cookie);
    let mut confirm = [0u8; CONFIRM_LEN];
    write_confirm(&mut confirm, &session, 7, &client_random, &node_random, &cookie);
    let mut accept = [0u8; ACCEPT_LEN];
    write_accept(&mut accept, &session, 7, 8);
    std::vec![
        ("initiate".into(), initiate.to_vec()),
        ("challenge".into(), challenge.to_vec()),
        ("confirm".into(), confirm.to_vec()),
        ("accept".into(), accept.to_vec()),
    ]
}

fn request(opcode: Opcode, chunk_id: ChunkId) -> Repr {
    Repr { request_id: 0x77, chunk_id, ..Repr::new(opcode) }
}

// Long on purpose: a list of seed datagrams, one per protocol path.
fn packet_seeds() -> Vec<(String, Vec<u8>)> {
    use ids::*;
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| seeds.push((name.into(), bytes));
    let frag_max = (FRAME_BYTES - HEADROOM_BYTES - HEADER_LEN) as u16;
    let ack = flags::ACK_REQUEST;

    add("ping", unsealed(request(Opcode::Ping, 0), &[]));
    add("put-fresh-single", put_fragment(FRESH, 100, 100, 0, &pattern(100, 7), ack));
    add("put-fresh-first-of-three", put_fragment(FRESH, 2500, 1000, 0, &pattern(1000, 7), ack));
    add("put-fresh-last-of-three", put_fragment(FRESH, 2500, 1000, 2, &pattern(500, 7), 0));
    add("put-fresh-empty", put_fragment(FRESH, 0, 512, 0, &[], ack));
    add(
        "put-fresh-frag-max",
        put_fragment(FRESH, u32::from(frag_max) * 2, frag_max, 1, &pattern(frag_max.into(), 7), ack),
    );
    add("put-fresh-frag-over-max", put_fragment(FRESH, 4000, frag_max + 1, 0, &[1; 8], ack));
    add("put-fresh-fragments-max", put_fragment(FRESH, 8192 * 6, 6, 8191, &[6; 6], ack));
    add("put-fresh-fragments-over-max", put_fragment(FRESH, 8192 * 6 + 1, 6, 8192, &[6; 1], ack));
    add("put-fresh-too-large", put_fragment(FRESH, CHUNK_BYTES_MAX + 1, 1024, 0, &[9; 1024], ack));
    add("put-fresh-disk-full", put_fragment(FRESH, CHUNK_BYTES_MAX, 1024, 0, &[9; 1024], ack));
    add("put-partial-complete", put_fragment(PARTIAL, PARTIAL_LEN, PARTIAL_FRAG, 1, &pattern(500, 3), ack));
    add("put-partial-duplicate", put_fragment(PARTIAL, PARTIAL_LEN, PARTIAL_FRAG, 0, &pattern(1000, 3), ack));
    add("put-partial-conflict", put_fragment(PARTIAL, PARTIAL_LEN, 500, 1, &[3; 500], ack));
    let sparse_len = SPARSE_COUNT * u32::from(SPARSE_FRAG);
    add("put-sparse-hole", put_fragment(SPARSE, sparse_len, SPARSE_FRAG, 4, &[4; 8], ack));
    add("put-sparse-last", put_fragment(SPARSE, sparse_len, SPARSE_FRAG, SPARSE_COUNT - 1, &[4; 8], ack));
    add("put-committing-again", put_fragment(COMMITTING, COMMITTING_LEN, COMMITTING_LEN as u16, 0, &[5; 10], ack));
    add("put-stored-retry", put_fragment(STORED, STORED_LEN, 1000, 0, &pattern(1000, 1), ack));
    add("put-stored-conflict", put_fragment(STORED, STORED_LEN + 1, 1000, 0, &[1; 1000], ack));
    let mut zero_frag = put_fragment(FRESH, 100, 100, 0, &[0; 100], ack);
    zero_frag[44..46].fill(0);
    add("put-zero-frag-len", zero_frag);
    let mut bad_count = put_fragment(FRESH, 3000, 1000, 0, &[0; 1000], ack);
    bad_count[36..40].copy_from_slice(&2u32.to_be_bytes());
    add("put-wrong-count", bad_count);
    let mut bad_index = put_fragment(FRESH, 3000, 1000, 0, &[0; 1000], ack);
    bad_index[32..36].copy_from_slice(&3u32.to_be_bytes());
    add("put-index-past-count", bad_index);
    add(
        "put-short-payload",
        unsealed(
            Repr { index: 0, count: 3, total_len: 3000, frag_len: 1000, ..request(Opcode::PutFrag, FRESH) },
            &[0; 999],
        ),
    );

    for id in [PARTIAL, SPARSE, COMMITTING, STORED, FRESH] {
        add(&std::format!("put-query-{id}"), unsealed(request(Opcode::PutQuery, id), &[]));
    }
    let get = |id: ChunkId, index: u32, count: u32, frag_len: u16| {
        unsealed(Repr { index, count, frag_len, ..request(Opcode::Get, id) }, &[])
    };
    add("get-stored-window", get(STORED, 0, 8, 500));
    add("get-stored-tail", get(STORED, 4, 3, 1000));
    add("get-stored-count-zero", get(STORED, 0, 0, 1000));
    add("get-stored-frag-max", get(STORED, 0, 3, frag_max));
    add("get-stored-frag-over-max", get(STORED, 0, 3, frag_max + 1));
    add("get-stored-frag-zero", get(STORED, 0, 3, 0));
    add("get-stored-index-past-end", get(STORED, 5, 1, 1000));
    add("get-stored-out-of-frames", get(STORED, 0, 100, 64));
    add("get-stored-huge-count", get(STORED, 1, u32::MAX, 1));
    add("get-empty", get(EMPTY, 0, 1, 1000));
    add("get-committing", get(COMMITTING, 0, 1, 1000));
    add("get-fresh", get(FRESH, 0, 1, 1000));
    for (name, id) in [("stored", STORED), ("partial", PARTIAL), ("committing", COMMITTING), ("fresh", FRESH)] {
        add(&std::format!("delete-{name}"), unsealed(request(Opcode::Delete, id), &[]));
        add(&std::format!("stat-{name}"), unsealed(request(Opcode::Stat, id), &[]));
    }
    add("control", unsealed(request(Opcode::Control, 0), b"\x01\x02postcard-ish"));
    // Every reply opcode takes the same path; a few are enough to start from.
    for opcode in [Opcode::Pong, Opcode::GetData, Opcode::Error] {
        add(&std::format!("unexpected-{opcode:?}").to_lowercase(), unsealed(request(opcode, STORED), &[]));
    }

    // Malformed and unauthenticated variants of a valid datagram.
    let base = put_fragment(FRESH, 2500, 1000, 0, &pattern(1000, 7), ack);
    let mut trailing = base.clone();
    trailing.extend_from_slice(b"trailing bytes past the payload");
    add("trailing-bytes", trailing);
    add("oversized-for-frame", put_fragment(FRESH, 4000, 2000, 0, &pattern(2000, 8), ack));
    add("empty", Vec::new());
    add("truncated-header", base[..40].to_vec());
    add("truncated-payload", base[..HEADER_LEN + 10].to_vec());
    let variant = |at: usize, value: u8| {
        let mut bytes = base.clone();
        bytes[at] = value;
        bytes
    };
    add("bad-magic", variant(0, 0xbf));
    add("bad-version", variant(2, VERSION + 1));
    add("opcode-zero", variant(3, 0));
    add("opcode-unknown", variant(3, 16));
    add("flags-unknown", variant(4, 0x80));
    add("status-unknown", variant(5, 8));
    add("reserved-nonzero", variant(53, 1));
    add("handshake-kind-unknown", variant(3, 0x85));
    // As it comes, this one names the fuzzed node's session with a fresh packet number
    // and a wrong tag: dropped as unauthenticated.
    let mut bad_tag = base.clone();
    bad_tag[48..52].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    bad_tag[56..64].copy_from_slice(&1_000_000u64.to_be_bytes());
    add("bad-tag", bad_tag);
    // Handshake messages and an old client's request reach the node's stateless paths.
    let keys = ClusterKeys::new(*FUZZ_KEY.bytes());
    let mut initiate = [0u8; hs::INITIATE_LEN];
    hs::write_initiate(&mut initiate, &keys, 9, &[0x44; 32]);
    add("handshake-initiate", initiate.to_vec());
    let session = keys.session(&[0x44; 32], &[0x55; 32]);
    let mut confirm = [0u8; hs::CONFIRM_LEN];
    hs::write_confirm(&mut confirm, &session, 9, &[0x44; 32], &[0x55; 32], &[0x66; hs::COOKIE_LEN]);
    add("handshake-confirm-bad-cookie", confirm.to_vec());
    let mut old = [0u8; v1::HEADER_LEN];
    v1::write_request(Opcode::Get, 5, &FUZZ_KEY, &mut old);
    add("version-one-get", old.to_vec());
    seeds
}

fn client_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| seeds.push((name.into(), bytes));
    let reply =
        |opcode: Opcode| Repr { request_id: ids::CLIENT_REQUEST, chunk_id: ids::CLIENT_CHUNK, ..Repr::new(opcode) };
    let put_count = wire::fragment_count(CLIENT_PUT_LEN as u32, CLIENT_PUT_FRAG);
    let status = |index: u32, flags: u8, credits: u16| Repr {
        index,
        flags,
        credits,
        count: put_count,
        total_len: CLIENT_PUT_LEN as u32,
        frag_len: CLIENT_PUT_FRAG,
        ..reply(Opcode::PutStatus)
    };
    add("put-status-nothing", unsealed(status(0, 0, CLIENT_PUT_CREDITS), &[]));
    add("put-status-some", unsealed(status(10, 0, 64), &[0b1010_0101, 0xff, 0x01]));
    add("put-status-holes", unsealed(status(3, 0, 8), &[0xfe; 16]));
    add("put-status-beyond-count", unsealed(status(put_count + 5, 0, u16::MAX), &[0xff; 128]));
    add("put-status-complete", unsealed(status(put_count, flags::COMPLETE, 1), &[]));
    add("put-done", unsealed(Repr { total_len: CLIENT_PUT_LEN as u32, ..reply(Opcode::PutDone) }, &[]));
    add("put-done-wrong-len", unsealed(Repr { total_len: 1, ..reply(Opcode::PutDone) }, &[]));
    for status in [Status::Busy, Status::NotFound, Status::DiskFull, Status::Conflict, Status::Ok] {
        add(&std::format!("error-{status:?}").to_lowercase(), unsealed(Repr { status, ..reply(Opcode::Error) }, &[]));
    }
    let get_data = |index: u32, total_len: u32, frag_len: u16, len: usize| {
        let repr = Repr {
            index,
            total_len,
            frag_len,
            count: wire::fragment_count(total_len, frag_len),
            ..reply(Opcode::GetData)
        };
        unsealed(repr, &pattern(len, u64::from(index)))
    };
    let frag = CLIENT_GET_FRAG;
    add("get-data-first", get_data(1, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-last-of-range", get_data(21, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-before-range", get_data(0, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-past-range", get_data(25, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-unrequested", get_data(15, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-short", get_data(2, CLIENT_GET_TOTAL, frag, 99));
    add("get-data-wrong-total", get_data(1, CLIENT_GET_TOTAL + 1, frag, 100));
    add("get-data-wrong-frag", get_data(1, CLIENT_GET_TOTAL, frag * 2, 200));
    add("pong", unsealed(Repr { credits: 8, total_len: CHUNK_BYTES_MAX, frag_len: 1856, ..reply(Opcode::Pong) }, &[]));
    add("pong-with-payload", unsealed(reply(Opcode::Pong), b"unexpected but harmless"));
    add("pong-payload-too-big", unsealed(reply(Opcode::Pong), &[0x70; client::DATAGRAM_BYTES_MAX + 1]));
    add("delete-done", unsealed(reply(Opcode::DeleteDone), &[]));
    add("other-request-id", unsealed(Repr { request_id: 1, ..reply(Opcode::PutDone) }, &[]));
    add("other-chunk", unsealed(Repr { chunk_id: 1, ..reply(Opcode::Pong) }, &[]));
    add("request-opcode", unsealed(reply(Opcode::Get), &[]));
    let mut tag_set = unsealed(reply(Opcode::Pong), &[]);
    tag_set[HEADER_LEN - 1] ^= 1;
    add("tag-set", tag_set);
    add("truncated", unsealed(reply(Opcode::Pong), &[])[..30].to_vec());
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are what lets a short CI run start deep in the protocol: each outcome
    /// the fuzzed node can reach from one datagram must be reached by some seed.
    /// Two cannot be: `rejected_busy` (the preloaded node has one free slot, and one
    /// datagram, delivered twice, starts at most one put) and `rejected_internal` (the
    /// in-memory store never fails an I/O).
    #[test]
    fn packet_seeds_reach_every_outcome() {
        type Field = fn(&Counters) -> u64;
        let outcomes: [(&str, Field); 23] = [
            ("pings", |c| c.pings),
            ("fragments_stored", |c| c.fragments_stored),
            ("fragments_duplicate", |c| c.fragments_duplicate),
            ("chunks_stored", |c| c.chunks_stored),
            ("gets", |c| c.gets),
            ("fragments_served", |c| c.fragments_served),
            ("chunks_deleted", |c| c.chunks_deleted),
            ("stats", |c| c.stats),
            ("control_requests", |c| c.control_requests),
            ("rejected_bad_request", |c| c.rejected_bad_request),
            ("rejected_not_found", |c| c.rejected_not_found),
            ("rejected_disk_full", |c| c.rejected_disk_full),
            ("dropped_malformed", |c| c.dropped_malformed),
            ("dropped_bad_mac", |c| c.dropped_bad_mac),
            ("dropped_no_session", |c| c.dropped_no_session),
            ("dropped_bad_cookie", |c| c.dropped_bad_cookie),
            ("handshake_challenges", |c| c.handshake_challenges),
            ("upgrade_replies", |c| c.upgrade_replies),
            ("dropped_replayed", |c| c.dropped_replayed),
            ("dropped_unexpected", |c| c.dropped_unexpected),
            ("dropped_no_buffer", |c| c.dropped_no_buffer),
            ("puts_abandoned", |c| c.puts_abandoned),
            ("bytes_served", |c| c.bytes_served),
        ];
        let runs: Vec<(Counters, Counters)> =
            seed_corpus().iter().filter(|seed| seed.target == "packet").map(|seed| run_packet(&seed.bytes)).collect();
        let missed: Vec<&str> = outcomes
            .iter()
            .filter(|(_, field)| runs.iter().all(|(preloaded, end)| field(end) == field(preloaded)))
            .map(|(name, _)| *name)
            .collect();
        assert!(missed.is_empty(), "no packet seed reaches {missed:?}");
    }

    #[test]
    fn seeds_replay_and_stay_small() {
        let seeds = seed_corpus();
        assert!(seeds.len() < 200);
        assert!(seeds.iter().map(|seed| seed.bytes.len()).sum::<usize>() < 1 << 20);
        for seed in &seeds {
            match seed.target {
                "packet" => fuzz_packet(&seed.bytes),
                "client_reply" => fuzz_client(&seed.bytes),
                "frame" => fuzz_frame(&seed.bytes),
                "handshake" => fuzz_handshake(&seed.bytes),
                other => panic!("seed for unknown target {other}"),
            }
        }
    }
}
