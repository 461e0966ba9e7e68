//! Deterministic protocol tests on the `sim` backend. Every run is seeded; a failure
//! prints its seed, and `BEELINE_SIM_SEED=<seed>` replays exactly that run.

use beeline_dataplane::client::{ClientError, Progress, PutChunk, Transmit};
use beeline_dataplane::io::sim::Impairments;
use beeline_dataplane::node::NoControl;
use beeline_dataplane::node::allow::{Allowlist, Prefix};
use beeline_dataplane::store::mem::MemStore;
use beeline_dataplane::store::{ChunkStore, Durable, PutReservation, StoreError};
use beeline_dataplane::testkit::fuzzing::pattern;
use beeline_dataplane::testkit::harness::{self, Machine, SimHarness, SimOptions, outcome};
use beeline_dataplane::wire::{ClusterKey, Opcode, Repr, Status, flags};

const KEY: ClusterKey = ClusterKey::new([0x42; 32]);
const FRAG: u16 = 1400;

fn seeds() -> Vec<u64> {
    harness::seeds(12)
}

fn harness(options: SimOptions) -> SimHarness<MemStore, NoControl> {
    SimHarness::new(options, MemStore::new(), NoControl)
}

#[test]
fn chunks_round_trip_without_impairments() {
    let mut sim = harness(SimOptions::new(1, KEY));
    for (index, len) in [0usize, 1, 1399, 1400, 1401, 300_000, 4 << 20].into_iter().enumerate() {
        let data = pattern(len, index as u64);
        let id = 1000 + index as u128;
        sim.put(id, &data, FRAG).unwrap_or_else(|error| panic!("put of {len} bytes failed: {error:?}"));
        assert_eq!(sim.poll.node.store().chunk(id), Some(&data[..]));
        let back = sim.get(id, len as u32, FRAG).unwrap();
        assert!(back == data, "chunk of {len} bytes came back different");
    }
    let counters = *sim.poll.node.counters();
    assert_eq!(counters.chunks_stored, 7);
    assert_eq!(counters.dropped_total(), 0);
}

/// A put whose fragments carry the not-read-soon hint reaches the store as hinted (the
/// disk store then drops its pages once durable); a put without it does not.
#[test]
fn a_put_hinted_not_to_be_read_soon_reaches_the_store_with_its_hint() {
    let mut sim = harness(SimOptions::new(1, KEY));
    let data = pattern(300_000, 3);
    let Machine::Put(put) = sim.put_machine(1, &data, FRAG) else { unreachable!("a put machine") };
    let mut machines = [Machine::Put(Box::new(put.with_flags(flags::NOT_READ_SOON)))];
    outcome(sim.run(&mut machines, 1_000_000)[0]).expect("the hinted put completes");
    sim.put(2, &data, FRAG).expect("the plain put completes");
    let store = sim.poll.node.store();
    assert_eq!(store.chunk(1), Some(&data[..]));
    assert!(store.hinted_not_read_soon(1), "the hint did not reach the store");
    assert!(!store.hinted_not_read_soon(2), "a put without the hint arrived with one");
}

/// A get whose requests carry the not-read-soon hint tells the store once its fragments
/// reach the chunk's end (the disk store then drops the chunk's pages); the same get
/// without the hint does not, and neither does a hinted get of the chunk's first bytes.
#[test]
fn a_get_hinted_not_to_be_read_soon_tells_the_store_once_it_read_the_chunk_through() {
    let mut sim = harness(SimOptions::new(1, KEY));
    let data = pattern(300_000, 4);
    sim.put(1, &data, FRAG).expect("the put completes");
    assert_eq!(sim.get(1, 300_000, FRAG).expect("the plain get completes"), data);
    assert_eq!(sim.poll.node.store().hinted_dropped_after_read(1), 0, "a get without the hint arrived with one");
    let mut head = vec![0u8; 10_000];
    let Machine::Get(get) = sim.get_machine(1, 300_000, 0, &mut head, FRAG) else { unreachable!("a get machine") };
    let mut machines = [Machine::Get(Box::new(get.with_flags(flags::NOT_READ_SOON)))];
    outcome(sim.run(&mut machines, 1_000_000)[0]).expect("the hinted get of the head completes");
    drop(machines);
    assert_eq!(head, data[..10_000]);
    assert_eq!(sim.poll.node.store().hinted_dropped_after_read(1), 0, "a get of the head alone dropped the chunk");
    let mut out = vec![0u8; 300_000];
    let Machine::Get(get) = sim.get_machine(1, 300_000, 0, &mut out, FRAG) else { unreachable!("a get machine") };
    let mut machines = [Machine::Get(Box::new(get.with_flags(flags::NOT_READ_SOON)))];
    outcome(sim.run(&mut machines, 1_000_000)[0]).expect("the hinted get completes");
    drop(machines);
    assert_eq!(out, data);
    assert!(sim.poll.node.store().hinted_dropped_after_read(1) >= 1, "the hint did not reach the store");
}

/// A store that records whether every payload slice the node hands it lies inside the
/// arena: the proof that the node writes from, and reads into, the frames themselves.
struct ZeroCopyProbe {
    inner: MemStore,
    arena: std::rc::Rc<std::cell::Cell<(usize, usize)>>,
    inside_bytes: u64,
    outside_bytes: u64,
    /// Calls of `write_vectored_at`, and the fragments they carried.
    vectored_writes: u64,
    fragments_written: u64,
}

impl ZeroCopyProbe {
    fn check(&mut self, slice: &[u8]) {
        let (start, len) = self.arena.get();
        let address = slice.as_ptr() as usize;
        if address >= start && address + slice.len() <= start + len {
            self.inside_bytes += slice.len() as u64;
        } else {
            self.outside_bytes += slice.len() as u64;
        }
    }
}

impl ChunkStore for ZeroCopyProbe {
    fn chunk_len(&self, id: u128) -> Option<u32> {
        self.inner.chunk_len(id)
    }
    fn begin_put(&mut self, id: u128, len: u32) -> Result<PutReservation, StoreError> {
        self.inner.begin_put(id, len)
    }
    fn write_at(&mut self, put: PutReservation, offset: u32, data: &[u8]) -> Result<(), StoreError> {
        self.check(data);
        self.inner.write_at(put, offset, data)
    }
    fn write_vectored_at(&mut self, put: PutReservation, offset: u32, bufs: &[&[u8]]) -> Result<(), StoreError> {
        for buf in bufs {
            self.check(buf);
        }
        self.vectored_writes += 1;
        self.fragments_written += bufs.len() as u64;
        self.inner.write_vectored_at(put, offset, bufs)
    }
    fn commit_put(&mut self, put: PutReservation, ticket: u64) -> Result<(), StoreError> {
        self.inner.commit_put(put, ticket)
    }
    fn abort_put(&mut self, put: PutReservation) {
        self.inner.abort_put(put)
    }
    fn delete(&mut self, id: u128, ticket: u64) -> Result<(), StoreError> {
        self.inner.delete(id, ticket)
    }
    fn read_at(&mut self, id: u128, offset: u32, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.check(buf);
        self.inner.read_at(id, offset, buf)
    }
    fn poll_durable(&mut self, done: &mut dyn FnMut(Durable)) {
        self.inner.poll_durable(done)
    }
    fn pending_durable(&self) -> usize {
        self.inner.pending_durable()
    }
    fn used_bytes(&self) -> u64 {
        self.inner.used_bytes()
    }
}

/// A store that never reports anything durable: a node that dies before its fsync.
struct NeverDurable(MemStore);

impl ChunkStore for NeverDurable {
    fn chunk_len(&self, id: u128) -> Option<u32> {
        self.0.chunk_len(id)
    }
    fn begin_put(&mut self, id: u128, len: u32) -> Result<PutReservation, StoreError> {
        self.0.begin_put(id, len)
    }
    fn write_at(&mut self, put: PutReservation, offset: u32, data: &[u8]) -> Result<(), StoreError> {
        self.0.write_at(put, offset, data)
    }
    fn commit_put(&mut self, put: PutReservation, ticket: u64) -> Result<(), StoreError> {
        self.0.commit_put(put, ticket)
    }
    fn abort_put(&mut self, put: PutReservation) {
        self.0.abort_put(put)
    }
    fn delete(&mut self, id: u128, ticket: u64) -> Result<(), StoreError> {
        self.0.delete(id, ticket)
    }
    fn read_at(&mut self, id: u128, offset: u32, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.0.read_at(id, offset, buf)
    }
    fn poll_durable(&mut self, _: &mut dyn FnMut(Durable)) {}
    fn pending_durable(&self) -> usize {
        0
    }
    fn used_bytes(&self) -> u64 {
        self.0.used_bytes()
    }
}

/// Every fragment of a chunk reached a node that then died before the chunk was durable;
/// the node that comes back at the same address knows nothing of it. The put starts over
/// there and completes instead of waiting for an acknowledgement that never comes.
#[test]
fn a_put_whose_node_restarted_before_durability_starts_over_and_completes() {
    let data = pattern(200_000, 13);
    let mut first = SimHarness::new(SimOptions::new(13, KEY), NeverDurable(MemStore::new()), NoControl);
    let mut machines = [first.put_machine(5, &data, FRAG)];
    first.start(&mut machines);
    let count = u64::from(beeline_dataplane::wire::fragment_count(data.len() as u32, FRAG));
    for _ in 0..100_000 {
        if first.poll.node.counters().fragments_stored == count {
            break;
        }
        first.step(&mut machines);
    }
    assert_eq!(first.poll.node.counters().fragments_stored, count, "every fragment reached the first node");
    let mut restarted = harness(SimOptions::new(14, KEY));
    restarted.now_ms = first.now_ms;
    drop(first);
    for _ in 0..100_000 {
        if machines[0].progress() != Progress::Pending {
            break;
        }
        restarted.step(&mut machines);
    }
    assert_eq!(machines[0].progress(), Progress::Done);
    assert!(restarted.poll.node.store().chunk(5) == Some(&data[..]));
}

#[test]
fn node_hands_the_store_arena_frames_not_copies() {
    let arena = std::rc::Rc::new(std::cell::Cell::new((0usize, 0usize)));
    let probe = ZeroCopyProbe {
        inner: MemStore::new(),
        arena: arena.clone(),
        inside_bytes: 0,
        outside_bytes: 0,
        vectored_writes: 0,
        fragments_written: 0,
    };
    let mut sim = SimHarness::new(SimOptions::new(11, KEY), probe, NoControl);
    let region = (sim.poll.arena.region_ptr() as usize, sim.poll.arena.region_len());
    arena.set(region);
    let data = pattern(1 << 20, 11);
    sim.put(1, &data, FRAG).unwrap();
    assert_eq!(sim.get(1, data.len() as u32, FRAG).unwrap(), data);
    let store = sim.poll.node.store();
    // Every payload byte was written from a receive frame and read into a send frame.
    assert_eq!(store.inside_bytes, 2 * data.len() as u64);
    assert_eq!(store.outside_bytes, 0, "the node copied payload into a buffer of its own");
    // A receive batch's consecutive fragments of the chunk went to the store together.
    let fragments = data.len().div_ceil(usize::from(FRAG)) as u64;
    assert_eq!(store.fragments_written, fragments);
    assert!(
        store.vectored_writes * 4 <= fragments,
        "{} writes for {fragments} fragments: the node wrote them one by one",
        store.vectored_writes
    );
}

/// A DPDK node keeps each frame's mbuf (and the mempool's object header) in front of the
/// datagram: nothing the node or the store does may write there.
#[test]
fn nothing_writes_in_front_of_the_headroom() {
    const HEADROOM: usize = 320;
    const CANARY: u8 = 0xC3;
    let mut options = SimOptions::new(12, KEY);
    options.headroom_bytes = HEADROOM;
    options.frame_count = 1024;
    options.impairments = Impairments { loss_ppm: 50_000, duplicate_ppm: 20_000, reorder_ppm: 50_000, corrupt_ppm: 0 };
    let mut sim = harness(options);
    let paint = |arena: &mut beeline_dataplane::Arena<'_>, check: bool| {
        let frames: Vec<_> = std::iter::from_fn(|| arena.alloc()).collect();
        assert_eq!(frames.len(), arena.frame_count() as usize, "frames still held after the transfers");
        for frame in frames {
            let front = &mut arena.frame_mut(&frame)[..HEADROOM];
            if check {
                assert!(front.iter().all(|byte| *byte == CANARY), "frame {} was written in front", frame.index());
            }
            front.fill(CANARY);
            arena.free(frame);
        }
    };
    paint(&mut sim.poll.arena, false);
    let data = pattern(300_000, 12);
    sim.put(1, &data, 1400).unwrap();
    assert_eq!(sim.get(1, data.len() as u32, 1400).unwrap(), data);
    assert_eq!(sim.poll.arena.headroom(), HEADROOM);
    paint(&mut sim.poll.arena, true);
}

#[test]
fn lossy_reordering_duplicating_network_still_round_trips() {
    let impairments = Impairments { loss_ppm: 100_000, duplicate_ppm: 50_000, reorder_ppm: 100_000, corrupt_ppm: 0 };
    for seed in seeds() {
        let mut options = SimOptions::new(seed, KEY);
        options.impairments = impairments;
        let mut sim = harness(options);
        let files: Vec<Vec<u8>> =
            [0usize, 1, 1400, 77_777, 1 << 20].iter().map(|len| pattern(*len, seed + *len as u64)).collect();
        // All puts in parallel, then all gets in parallel.
        let mut machines: Vec<_> =
            files.iter().enumerate().map(|(i, data)| sim.put_machine(i as u128, data, FRAG)).collect();
        let results = sim.run(&mut machines, 2_000_000);
        assert!(results.iter().all(|r| *r == Progress::Done), "seed {seed}: puts ended {results:?}");
        drop(machines);
        let mut outputs: Vec<Vec<u8>> = files.iter().map(|data| vec![0u8; data.len()]).collect();
        let mut machines: Vec<_> = outputs
            .iter_mut()
            .enumerate()
            .map(|(i, out)| {
                let len = out.len() as u32;
                sim.get_machine(i as u128, len, 0, out, FRAG)
            })
            .collect();
        let results = sim.run(&mut machines, 2_000_000);
        assert!(results.iter().all(|r| *r == Progress::Done), "seed {seed}: gets ended {results:?}");
        drop(machines);
        for (index, (sent, got)) in files.iter().zip(&outputs).enumerate() {
            assert!(sent == got, "seed {seed}: file {index} differs after the round trip");
        }
        let stats = sim.net.borrow().stats();
        assert!(
            stats.lost > 0 && stats.duplicated > 0 && stats.reordered > 0,
            "seed {seed}: impairments never fired: {stats:?}"
        );
        // A datagram the network duplicated is refused by the session's replay window
        // before the put logic sees it; a retransmission is a new datagram, counted there.
        let counters = *sim.poll.node.counters();
        assert!(counters.dropped_replayed > 0, "seed {seed}: duplicated datagrams were not refused");
    }
}

#[test]
fn corrupted_packets_are_counted_and_ignored() {
    for seed in seeds() {
        let mut options = SimOptions::new(seed, KEY);
        options.impairments = Impairments { corrupt_ppm: 50_000, loss_ppm: 20_000, ..Impairments::NONE };
        let mut sim = harness(options);
        let data = pattern(500_000, seed);
        sim.put(7, &data, FRAG).unwrap_or_else(|error| panic!("seed {seed}: {error:?}"));
        let back = sim.get(7, data.len() as u32, FRAG).unwrap_or_else(|error| panic!("seed {seed}: {error:?}"));
        assert!(back == data, "seed {seed}: corrupted data was served");
        let counters = *sim.poll.node.counters();
        let rejected = counters.dropped_bad_mac + counters.dropped_malformed;
        assert!(rejected > 0, "seed {seed}: no corrupted packet was caught");
        assert!(rejected <= sim.net.borrow().stats().corrupted);
    }
}

#[test]
fn unauthenticated_client_is_dropped_and_counted() {
    let mut sim = harness(SimOptions::new(3, KEY));
    sim.set_client_key(&ClusterKey::new([0x13; 32]));
    let data = pattern(10_000, 3);
    let mut machines = [sim.put_machine(9, &data, FRAG)];
    let results = sim.run(&mut machines, 100_000);
    assert_eq!(results[0], Progress::Failed(ClientError::Unreachable));
    let counters = *sim.poll.node.counters();
    assert!(counters.dropped_bad_mac >= 8, "every Initiate fails its mac1: {counters:?}");
    assert_eq!((counters.handshake_challenges, counters.sessions_established), (0, 0));
    assert!(!sim.has_session());
    assert_eq!(counters.fragments_stored, 0);
    assert_eq!(sim.poll.node.store().chunk_count(), 0);
}

#[test]
fn sources_outside_the_allowlist_are_dropped() {
    let mut options = SimOptions::new(4, KEY);
    let mut allow = Allowlist::allow_all();
    allow.push(Prefix { addr: "192.168.0.0".parse().unwrap(), len: 16 }).unwrap();
    options.node_config.allow = allow;
    let mut sim = harness(options);
    let mut ping = [sim.exchange(Repr::new(Opcode::Ping), &[], Opcode::Pong)];
    let results = sim.run(&mut ping, 100_000);
    assert_eq!(results[0], Progress::Failed(ClientError::Unreachable));
    assert!(sim.poll.node.counters().dropped_not_allowed > 0);
    // Allowing the client's prefix at runtime lets it in.
    let mut allow = Allowlist::allow_all();
    allow.push(Prefix { addr: "10.0.0.0".parse().unwrap(), len: 8 }).unwrap();
    sim.poll.node.set_allowlist(allow);
    let mut ping = [sim.exchange(Repr::new(Opcode::Ping), &[], Opcode::Pong)];
    assert_eq!(sim.run(&mut ping, 100_000)[0], Progress::Done);
}

#[test]
fn full_slot_table_answers_busy_and_clients_get_through() {
    let mut options = SimOptions::new(5, KEY);
    options.put_slots = 1;
    let mut sim = harness(options);
    let files: Vec<Vec<u8>> = (0..4).map(|i| pattern(200_000, i)).collect();
    let mut machines: Vec<_> =
        files.iter().enumerate().map(|(i, data)| sim.put_machine(i as u128, data, FRAG)).collect();
    let results = sim.run(&mut machines, 2_000_000);
    assert!(results.iter().all(|r| *r == Progress::Done), "{results:?}");
    assert!(sim.poll.node.counters().rejected_busy > 0);
    for (i, data) in files.iter().enumerate() {
        assert_eq!(sim.poll.node.store().chunk(i as u128), Some(&data[..]));
    }
}

#[test]
fn full_disk_is_reported_to_the_client() {
    let mut sim = SimHarness::new(SimOptions::new(6, KEY), MemStore::with_capacity_bytes(100_000), NoControl);
    sim.put(1, &pattern(60_000, 1), FRAG).unwrap();
    let error = sim.put(2, &pattern(60_000, 2), FRAG).unwrap_err();
    assert_eq!(error, ClientError::Rejected(Status::DiskFull));
    assert!(sim.poll.node.counters().rejected_disk_full > 0);
    assert_eq!(sim.get(1, 60_000, FRAG).unwrap(), pattern(60_000, 1));
}

/// A store write that fails (a disk answering EIO) while fragments are written in
/// batches: the put is aborted and its client told at once, not left to time out; its
/// only slot is free again, and once the disk works the same chunk is stored.
#[test]
fn a_failed_store_write_fails_the_put_and_frees_its_slot() {
    let mut options = SimOptions::new(11, KEY);
    options.put_slots = 1;
    let mut sim = harness(options);
    let data = pattern(50_000, 11);
    sim.poll.node.store_mut().set_failing_writes(true);
    assert_eq!(sim.put(1, &data, FRAG).unwrap_err(), ClientError::Rejected(Status::Internal));
    assert!(sim.poll.node.counters().rejected_internal > 0);
    assert_eq!(sim.poll.node.store().chunk(1), None);
    sim.poll.node.store_mut().set_failing_writes(false);
    sim.put(1, &data, FRAG).unwrap();
    assert_eq!(sim.poll.node.store().chunk(1), Some(&data[..]));
}

#[test]
fn range_get_returns_exactly_the_range() {
    let mut sim = harness(SimOptions::new(7, KEY));
    let data = pattern(100_000, 7);
    sim.put(1, &data, 1000).unwrap();
    for (start, len) in [(0usize, 1usize), (999, 2), (12_345, 54_321), (99_999, 1), (50_000, 50_000)] {
        let mut out = vec![0u8; len];
        let mut machines = [sim.get_machine(1, data.len() as u32, start as u32, &mut out, 1200)];
        outcome(sim.run(&mut machines, 100_000)[0]).unwrap();
        drop(machines);
        assert_eq!(out, data[start..start + len], "range {start}+{len}");
    }
}

#[test]
fn retried_put_is_idempotent_and_missing_chunk_is_not_found() {
    let mut sim = harness(SimOptions::new(8, KEY));
    let data = pattern(20_000, 8);
    sim.put(5, &data, FRAG).unwrap();
    sim.put(5, &data, FRAG).unwrap();
    assert_eq!(sim.poll.node.counters().chunks_stored, 1);
    assert_eq!(sim.get(6, 10, FRAG).unwrap_err(), ClientError::Rejected(Status::NotFound));
    // Same id, different length: refused, the stored chunk is untouched.
    assert_eq!(sim.put(5, &data[..100], FRAG).unwrap_err(), ClientError::Rejected(Status::Conflict));
    assert_eq!(sim.poll.node.store().chunk(5), Some(&data[..]));
}

#[test]
fn delete_and_stat() {
    let mut sim = harness(SimOptions::new(9, KEY));
    sim.put(5, &pattern(3000, 1), FRAG).unwrap();
    let stat = Repr { chunk_id: 5, ..Repr::new(Opcode::Stat) };
    let mut machines = [sim.exchange(stat, &[], Opcode::StatReply)];
    sim.run(&mut machines, 10_000);
    let beeline_dataplane::testkit::harness::Machine::Exchange(exchange) = &machines[0] else { unreachable!() };
    assert_eq!(exchange.reply().unwrap().0.total_len, 3000);
    let delete = Repr { chunk_id: 5, ..Repr::new(Opcode::Delete) };
    let mut machines = [sim.exchange(delete, &[], Opcode::DeleteDone)];
    assert_eq!(sim.run(&mut machines, 10_000)[0], Progress::Done);
    let mut machines = [sim.exchange(stat, &[], Opcode::StatReply)];
    assert_eq!(sim.run(&mut machines, 10_000)[0], Progress::Failed(ClientError::Rejected(Status::NotFound)));
}

#[test]
fn abandoned_put_is_expired_and_its_slot_reused() {
    let mut options = SimOptions::new(10, KEY);
    options.put_slots = 1;
    options.node_config.put_idle_timeout_ms = 500;
    options.timing.timeouts_max = 1;
    let mut sim = harness(options);
    let data = pattern(1 << 20, 10);
    // A client whose first ten fragments arrive, and which is then never heard from...
    struct Collect(Vec<Vec<u8>>);
    impl Transmit for Collect {
        fn transmit(&mut self, header: &[u8], payload: &[u8]) {
            self.0.push([header, payload].concat());
        }
    }
    assert!(sim.establish(1000));
    let mut put = PutChunk::new(1, 77, &data, FRAG, 256, sim.timing, 0);
    let mut sent = Collect(Vec::new());
    put.start(0, &mut sent);
    for datagram in &sent.0[..10] {
        sim.send_sealed(datagram);
    }
    sim.step(&mut []);
    assert_eq!(sim.poll.node.puts_in_flight(), 1);
    assert_eq!(sim.poll.node.counters().fragments_stored, 10);
    // ...and once the idle timeout passes, the node frees the slot for another put.
    sim.net.borrow_mut().set_impairments(Impairments::NONE);
    for _ in 0..600 {
        sim.step(&mut []);
    }
    assert_eq!(sim.poll.node.counters().puts_abandoned, 1);
    sim.put(2, &data, FRAG).unwrap();
}

mod reassembly {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Any chunk size and fragment size, any mix of loss, duplication and reordering:
        /// the node reassembles exactly the bytes sent, and a get with another fragment
        /// size returns them.
        #[test]
        fn any_shape_and_impairment_reassembles_exactly(
            len in 0usize..300_000,
            put_frag in 512u16..=1840,
            get_frag in 256u16..=1840,
            loss_ppm in 0u32..200_000,
            duplicate_ppm in 0u32..200_000,
            reorder_ppm in 0u32..300_000,
            seed: u64,
        ) {
            let mut options = SimOptions::new(seed, KEY);
            options.impairments = Impairments { loss_ppm, duplicate_ppm, reorder_ppm, corrupt_ppm: 0 };
            let mut sim = harness(options);
            let data = pattern(len, seed);
            let put = sim.put(1, &data, put_frag);
            prop_assert!(put.is_ok(), "put failed: {:?}", put);
            prop_assert_eq!(sim.poll.node.store().chunk(1), Some(&data[..]));
            let back = sim.get(1, len as u32, get_frag);
            prop_assert!(back.as_ref().is_ok_and(|back| *back == data), "get differs or failed");
        }
    }
}

/// A put with one fragment under heavy loss: each timeout resends the fragment itself
/// rather than only asking what arrived, so one round trip per timeout can finish it. The
/// input is the one CI's proptest run found failing when a timeout only sent a query.
#[test]
fn single_fragment_put_finishes_under_heavy_loss() {
    for (len, seed) in [(0usize, 15_842_445_357_930_274_839u64), (0, 1), (300, 2), (511, 3)] {
        let mut options = SimOptions::new(seed, KEY);
        options.impairments = Impairments { loss_ppm: 180_227, duplicate_ppm: 62_767, reorder_ppm: 1, corrupt_ppm: 0 };
        let mut sim = harness(options);
        let data = pattern(len, seed);
        assert_eq!(sim.put(1, &data, 512), Ok(()), "len {len} seed {seed}");
        assert_eq!(sim.poll.node.store().chunk(1), Some(&data[..]));
    }
}
