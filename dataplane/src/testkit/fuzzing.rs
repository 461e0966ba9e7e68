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
        assert!(repr.opcode.is_reply(), "the node sent a request opcode {:?}", repr.opcode);
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

mod frame;
mod seeds;
pub use frame::{FRAME_NODE_IP, FRAME_NODE_MAC, frames, fuzz_frame};
pub use seeds::{Seed, seed_corpus};

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
