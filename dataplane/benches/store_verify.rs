//! What checking the stored crc32c on serve costs a GET, and why per block: one 4 MiB
//! chunk in a `DiskStore` (in the page cache), read as a small range (one 1,372-byte
//! fragment) and as a GET window (256 such fragments in their own buffers, one `preadv`).
//!
//! Rows per size: `unverified` (one plain `pread` of the run, as the store's one `preadv`
//! did before: the baseline), `per_block` (the store's read, which checks the 16 KiB blocks it touches),
//! and `whole_chunk` (the plain read plus reading and crc-ing the whole 4 MiB payload, what
//! a whole-chunk check on every GET would cost). Compare rows within one run:
//! `docs/benchmarks.md`.
//!
//! ```text
//! cargo bench -p beeline-dataplane --bench store_verify -- --warm-up-time 1 --measurement-time 3
//! ```

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;

use beeline_dataplane::store::ChunkStore;
use beeline_dataplane::store::disk::{DiskStore, DiskStoreConfig, RECORD_HEADER_BYTES};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CHUNK_BYTES: usize = 4 << 20;
const FRAGMENT_BYTES: usize = 1372;
const WINDOW_FRAGMENTS: usize = 256;
/// Inside the chunk and across a block boundary, as a range read lands anywhere.
const OFFSET: u32 = 3 * 65_536 - 100;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStore::open(dir.path(), DiskStoreConfig::default()).unwrap();
    let data: Vec<u8> = (0..CHUNK_BYTES).map(|i| (i * 7 + (i >> 12)) as u8).collect();
    let put = store.begin_put(1, CHUNK_BYTES as u32).unwrap();
    store.write_at(put, 0, &data).unwrap();
    store.commit_put(put, 1).unwrap();
    while store.pending_durable() > 0 {
        store.wait_durable(std::time::Duration::from_millis(100));
        store.poll_durable(&mut |durable| assert_eq!(durable.result, Ok(())));
    }
    // The chunk is the first record of the first segment.
    let segment = File::open(dir.path().join("seg-000001.log")).unwrap();
    let payload_at = RECORD_HEADER_BYTES;
    let mut whole = vec![0u8; CHUNK_BYTES];

    for fragments in [1usize, WINDOW_FRAGMENTS] {
        let bytes = fragments * FRAGMENT_BYTES;
        let mut group = c.benchmark_group(format!("get_{fragments}x{FRAGMENT_BYTES}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        let mut frames = vec![vec![0u8; FRAGMENT_BYTES]; fragments];
        // One read for the run, as the store's one preadv: same syscalls, no checks.
        let mut run = vec![0u8; bytes];
        group.bench_function("unverified", |b| {
            b.iter(|| {
                segment.read_exact_at(&mut run, payload_at + u64::from(OFFSET)).unwrap();
                black_box(&run);
            })
        });
        group.bench_function("per_block", |b| {
            b.iter(|| {
                let mut bufs: Vec<&mut [u8]> = frames.iter_mut().map(Vec::as_mut_slice).collect();
                black_box(store.read_vectored_at(1, OFFSET, &mut bufs).unwrap());
            })
        });
        group.bench_function("whole_chunk", |b| {
            b.iter(|| {
                segment.read_exact_at(&mut run, payload_at + u64::from(OFFSET)).unwrap();
                black_box(&run);
                segment.read_exact_at(&mut whole, payload_at).unwrap();
                black_box(crc32c::crc32c(&whole));
            })
        });
        group.finish();
    }
    assert_eq!(store.integrity_stats().reads_corrupt, 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
