//! Whole-chunk requests of local clients (the shared-memory bulk path) against the node
//! engine and the in-memory store: the reply each one gets, and what the store holds.

use beeline_dataplane::arena::Arena;
use beeline_dataplane::io::{LocalRequest, local_peer};
use beeline_dataplane::node::{NoControl, TxQueue};
use beeline_dataplane::store::mem::MemStore;
use beeline_dataplane::testkit::fuzzing::pattern;
use beeline_dataplane::testkit::harness::{SimHarness, SimOptions};
use beeline_dataplane::wire::{ClusterKey, Opcode, Packet, Repr, Status};

const KEY: ClusterKey = ClusterKey::new([0x42; 32]);

/// The replies queued in `tx`, parsed (local replies are not sealed).
fn replies(arena: &mut Arena<'_>, tx: &mut TxQueue) -> Vec<Repr> {
    let mut out = Vec::new();
    while let Some(packet) = tx.pop_front() {
        assert_eq!(packet.peer, local_peer(3), "a local request's reply goes to its client");
        let start = usize::from(packet.offset);
        let bytes = &arena.frame(&packet.frame)[start..start + usize::from(packet.len)];
        out.push(Repr::parse(&Packet::new_checked(bytes).expect("the node emits well-formed replies")));
        arena.free(packet.frame);
    }
    out
}

fn put(request_id: u64, chunk_id: u128, data: &[u8]) -> LocalRequest<'_> {
    LocalRequest::Put { peer: local_peer(3), request_id, chunk_id, data, not_read_soon: false }
}

/// A local put carrying the client's not-read-soon hint reaches the store as one; a put
/// without it does not.
#[test]
fn the_not_read_soon_hint_of_a_local_put_reaches_the_store() {
    let mut sim = SimHarness::new(SimOptions::new(1, KEY), MemStore::new(), NoControl);
    let poll = &mut sim.poll;
    let mut tx = TxQueue::new();
    let data = pattern(5_000, 2);
    let hinted =
        LocalRequest::Put { peer: local_peer(3), request_id: 1, chunk_id: 7, data: &data, not_read_soon: true };
    poll.node.serve_local(0, &mut poll.arena, &mut tx, hinted);
    poll.node.serve_local(0, &mut poll.arena, &mut tx, put(2, 8, &data));
    poll.node.poll_store(&mut poll.arena, &mut tx);
    let done = replies(&mut poll.arena, &mut tx);
    assert_eq!(done.iter().filter(|reply| reply.opcode == Opcode::PutDone).count(), 2, "{done:?}");
    assert!(poll.node.store().hinted_not_read_soon(7), "the hinted put reached the store without its hint");
    assert!(!poll.node.store().hinted_not_read_soon(8), "a put without the hint arrived with one");
    assert_eq!(poll.node.store().chunk(7), Some(&data[..]));
}

fn get(request_id: u64, chunk_id: u128, offset: u32, out: &mut [u8]) -> LocalRequest<'_> {
    LocalRequest::Get { peer: local_peer(3), request_id, chunk_id, offset, out, not_read_soon: false }
}

/// A get of chunk 7 carrying the not-read-soon hint.
fn hinted_get(request_id: u64, offset: u32, out: &mut [u8]) -> LocalRequest<'_> {
    LocalRequest::Get { peer: local_peer(3), request_id, chunk_id: 7, offset, out, not_read_soon: true }
}

/// A local get carrying the client's not-read-soon hint tells the store once it has read
/// the chunk through its last byte; a hinted get of the chunk's start only, and a get
/// without the hint, do not.
#[test]
fn the_not_read_soon_hint_of_a_local_get_reaches_the_store_once_the_chunk_is_read_through() {
    let mut sim = SimHarness::new(SimOptions::new(1, KEY), MemStore::new(), NoControl);
    let poll = &mut sim.poll;
    let mut tx = TxQueue::new();
    let data = pattern(5_000, 3);
    poll.node.serve_local(0, &mut poll.arena, &mut tx, put(1, 7, &data));
    poll.node.poll_store(&mut poll.arena, &mut tx);
    assert_eq!(replies(&mut poll.arena, &mut tx)[0].opcode, Opcode::PutDone);
    let mut out = vec![0u8; 5_000];
    poll.node.serve_local(0, &mut poll.arena, &mut tx, get(2, 7, 0, &mut out[..]));
    poll.node.serve_local(0, &mut poll.arena, &mut tx, hinted_get(3, 0, &mut out[..4_000]));
    assert_eq!(poll.node.store().hinted_dropped_after_read(7), 0, "no hinted get read the chunk through yet");
    poll.node.serve_local(0, &mut poll.arena, &mut tx, hinted_get(4, 4_000, &mut out[4_000..]));
    let answers = replies(&mut poll.arena, &mut tx);
    assert!(answers.iter().all(|answer| answer.opcode == Opcode::GetData), "{answers:?}");
    assert_eq!(poll.node.store().hinted_dropped_after_read(7), 1, "the get of the chunk's end carried no hint");
    assert!(out == data, "the hinted gets read the chunk");
}

#[test]
fn local_puts_and_gets_are_answered_and_stored_in_place() {
    let mut sim = SimHarness::new(SimOptions::new(1, KEY), MemStore::new(), NoControl);
    let poll = &mut sim.poll;
    let mut tx = TxQueue::new();
    let data = pattern(300_000, 1);

    // A put is answered once durable, through the same path as a fragmented put.
    poll.node.serve_local(0, &mut poll.arena, &mut tx, put(1, 7, &data[..]));
    assert!(replies(&mut poll.arena, &mut tx).is_empty(), "nothing before the chunk is durable");
    // A retry while it is made durable: the answer goes to the newer request.
    poll.node.serve_local(0, &mut poll.arena, &mut tx, put(2, 7, &data[..]));
    poll.node.poll_store(&mut poll.arena, &mut tx);
    let done = replies(&mut poll.arena, &mut tx);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].opcode, done[0].request_id, done[0].total_len), (Opcode::PutDone, 2, 300_000));
    assert_eq!(poll.node.store().chunk(7), Some(&data[..]));
    // Retried after it is durable: answered at once. A different length: refused.
    poll.node.serve_local(0, &mut poll.arena, &mut tx, put(3, 7, &data[..]));
    poll.node.serve_local(0, &mut poll.arena, &mut tx, put(4, 7, &data[..10]));
    let answers = replies(&mut poll.arena, &mut tx);
    assert_eq!((answers[0].opcode, answers[0].request_id), (Opcode::PutDone, 3));
    assert_eq!((answers[1].opcode, answers[1].status), (Opcode::Error, Status::Conflict));
    // Larger than the node's largest chunk: refused, nothing stored.
    let huge = vec![0u8; poll.node.config().chunk_bytes_max as usize + 1];
    poll.node.serve_local(0, &mut poll.arena, &mut tx, put(5, 8, &huge[..]));
    assert_eq!(replies(&mut poll.arena, &mut tx)[0].status, Status::TooLarge);
    assert_eq!(poll.node.store().chunk(8), None);

    // Gets read straight into the caller's memory: whole, a range, past the end, missing.
    let mut out = vec![0u8; 300_000];
    poll.node.serve_local(0, &mut poll.arena, &mut tx, get(6, 7, 0, &mut out[..]));
    let answer = replies(&mut poll.arena, &mut tx)[0];
    assert_eq!((answer.opcode, answer.total_len, answer.count), (Opcode::GetData, 300_000, 300_000));
    assert!(out == data);
    let mut tail = vec![0u8; 1000];
    poll.node.serve_local(0, &mut poll.arena, &mut tx, get(7, 7, 299_500, &mut tail[..]));
    let answer = replies(&mut poll.arena, &mut tx)[0];
    assert_eq!((answer.index, answer.count), (299_500, 500), "only the bytes the chunk has");
    assert!(tail[..500] == data[299_500..]);
    poll.node.serve_local(0, &mut poll.arena, &mut tx, get(8, 7, 300_001, &mut tail[..]));
    poll.node.serve_local(0, &mut poll.arena, &mut tx, get(9, 99, 0, &mut tail[..]));
    let answers = replies(&mut poll.arena, &mut tx);
    assert_eq!(answers[0].status, Status::BadRequest);
    assert_eq!(answers[1].status, Status::NotFound);
    let counters = poll.node.counters();
    assert_eq!(counters.local_requests, 9);
    assert_eq!(counters.chunks_stored, 1);
    assert_eq!(counters.data_bytes_copied, 0, "the node copied no chunk bytes");
}
