//! Throughput of the protocol and the poll loop on the in-memory `sim` network, with a
//! `MemStore` and no impairments: a client state machine puts or gets one 4 MiB chunk
//! through a node's `PollLoop`, both driven by the `sim_harness` in virtual time.
//!
//! Beside them, the in-run baselines that say what the numbers mean: a plain `memcpy` of
//! 4 MiB (the cost floor of touching the bytes once) and protocol v2's AES-128-GCM over
//! 4 MiB cut into 1400-byte fragments, sealed by one end and opened by the other exactly
//! as sessions do (what encryption and authentication cost, both ends together).
//!
//! Everything is reported as bytes/s of chunk payload; at 4 MiB per chunk, chunks/s is
//! bytes/s / 4194304. Compare the rows with each other, within one run: see
//! `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench -p beeline-dataplane --bench poll_loop
//! cargo bench -p beeline-dataplane --bench poll_loop -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use beeline_dataplane::client::Progress;
use beeline_dataplane::node::{BACKGROUND_TICKET, NoControl};
use beeline_dataplane::session::handshake::ClusterKeys;
use beeline_dataplane::session::peer::{SessionRx, SessionTx};
use beeline_dataplane::store::ChunkStore;
use beeline_dataplane::store::mem::MemStore;
use beeline_dataplane::testkit::harness::{SimHarness, SimOptions};
use beeline_dataplane::wire::{self, ChunkId, ClusterKey, Opcode, Repr};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CHUNK_BYTES: usize = 4 << 20;
/// Fits a 1500-byte MTU with IP, UDP and Beeline headers.
const FRAG_MTU: u16 = 1400;
/// The largest fragment a 2048-byte sim frame holds (2048 - 128 headroom - 80 header).
const FRAG_SIM_MAX: u16 = 1840;
/// Virtual milliseconds one chunk may take; without impairments it needs a handful.
const STEPS_MAX: u64 = 100_000;

fn key() -> ClusterKey {
    ClusterKey::new([0x5a; 32])
}

/// Deterministic, incompressible-looking chunk content (xorshift64*).
fn chunk_data(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(CHUNK_BYTES);
    while data.len() < CHUNK_BYTES {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    data.truncate(CHUNK_BYTES);
    data
}

fn harness() -> SimHarness<MemStore, NoControl> {
    SimHarness::new(SimOptions::new(7, key()), MemStore::new(), NoControl)
}

/// Puts of one 4 MiB chunk; only the put is timed. Each put uses a fresh chunk id (ids
/// are write-once) and the chunk is deleted afterwards, untimed, so memory stays flat.
fn bench_put(c: &mut Criterion) {
    let data = chunk_data(1);
    let mut group = c.benchmark_group("sim_put_4MiB");
    group.throughput(Throughput::Bytes(CHUNK_BYTES as u64));
    for frag_len in [FRAG_MTU, FRAG_SIM_MAX] {
        let mut harness = harness();
        let mut next_id: ChunkId = 1;
        group.bench_function(format!("frag_{frag_len}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let id = next_id;
                    next_id += 1;
                    let start = Instant::now();
                    let result = harness.put(id, black_box(&data), frag_len);
                    timed += start.elapsed();
                    assert_eq!(result, Ok(()), "put of chunk {id} failed");
                    harness.poll.node.store_mut().delete(id, BACKGROUND_TICKET).expect("MemStore deletes never fail");
                    harness.poll.finish_acks().unwrap_or_else(|never| match never {});
                }
                timed
            });
        });
        let counters = harness.poll.node.counters();
        assert_eq!(counters.fragments_duplicate, 0, "a clean network should need no resends");
        assert_eq!(counters.data_bytes_copied, 0);
    }
    group.finish();
}

/// Gets of one stored 4 MiB chunk into a reused buffer.
fn bench_get(c: &mut Criterion) {
    let data = chunk_data(2);
    let id: ChunkId = 42;
    let mut group = c.benchmark_group("sim_get_4MiB");
    group.throughput(Throughput::Bytes(CHUNK_BYTES as u64));
    for frag_len in [FRAG_MTU, FRAG_SIM_MAX] {
        let mut harness = harness();
        harness.put(id, &data, frag_len).expect("storing the chunk to get");
        let mut out = vec![0u8; CHUNK_BYTES];
        let mut checked = false;
        group.bench_function(format!("frag_{frag_len}"), |b| {
            b.iter(|| {
                let mut machines = [harness.get_machine(id, CHUNK_BYTES as u32, 0, &mut out, frag_len)];
                let progress = harness.run(&mut machines, STEPS_MAX);
                assert_eq!(progress[0], Progress::Done, "get failed");
            });
            if !checked {
                assert!(out == data, "the chunk came back different");
                checked = true;
            }
        });
    }
    group.finish();
}

/// The cost floor: copying 4 MiB once.
fn bench_memcpy(c: &mut Criterion) {
    let source = chunk_data(3);
    let mut destination = vec![0u8; CHUNK_BYTES];
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Bytes(CHUNK_BYTES as u64));
    group.bench_function("memcpy_4MiB", |b| {
        b.iter(|| {
            destination.copy_from_slice(black_box(&source));
            black_box(&mut destination);
        });
    });

    // What the session's AEAD costs: every 1400-byte fragment of a 4 MiB chunk sealed in
    // place by the sending half and opened in place by the receiving half.
    let keys = ClusterKeys::new(*key().bytes()).session(&[1; 32], &[2; 32]);
    let mut tx = SessionTx::new(7, keys.client_to_node);
    let mut rx = SessionRx::new(7, ClusterKeys::new(*key().bytes()).session(&[1; 32], &[2; 32]).client_to_node);
    let data = chunk_data(4);
    let count = wire::fragment_count(CHUNK_BYTES as u32, FRAG_MTU);
    let mut datagrams: Vec<Vec<u8>> = (0..count)
        .map(|index| {
            let start = index as usize * usize::from(FRAG_MTU);
            let len = wire::fragment_len(CHUNK_BYTES as u32, FRAG_MTU, index) as usize;
            let repr = Repr {
                chunk_id: 9,
                request_id: 1,
                index,
                count,
                total_len: CHUNK_BYTES as u32,
                frag_len: FRAG_MTU,
                payload_len: len as u16,
                ..Repr::new(Opcode::PutFrag)
            };
            let mut datagram = vec![0u8; repr.buffer_len()];
            repr.emit_with_payload(&mut datagram, &data[start..start + len]);
            datagram
        })
        .collect();
    group.bench_function("aead_seal_open_4MiB_in_1400B_fragments", |b| {
        b.iter(|| {
            let mut opened = 0u32;
            for datagram in &mut datagrams {
                tx.seal(black_box(datagram.as_mut_slice())).expect("far from the packet limit");
                opened += u32::from(rx.open(black_box(datagram.as_mut_slice())).is_ok());
            }
            assert_eq!(opened, count);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short by default: a few seconds per row keeps the whole run within minutes on a
    // small machine. Command-line options (--measurement-time, ...) override these.
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_memcpy, bench_put, bench_get
}
criterion_main!(benches);
