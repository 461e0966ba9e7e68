use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

pub(super) const TIMEOUT: Duration = Duration::from_millis(100);

pub(super) fn small_config() -> DiskStoreConfig {
    DiskStoreConfig {
        segment_bytes: 64 << 10,
        capacity_bytes: None,
        max_chunk_bytes: 64 << 10,
        max_puts_in_flight: 8,
        max_pending_durable: 1024,
        expected_chunks: 1024,
        drop_written_pages: false,
        direct_writes: true,
    }
}

pub(super) fn pattern(id: ChunkId, len: usize) -> Vec<u8> {
    let seed = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len as u64).map(|i| (seed.wrapping_add(i.wrapping_mul(0x2545_F491)) >> 13) as u8).collect()
}

/// Writes `data` in `frag_bytes` fragments, odd ones backwards, then even ones.
pub(super) fn write_scrambled(store: &mut DiskStore, put: PutReservation, data: &[u8], frag_bytes: usize) {
    let count = data.len().div_ceil(frag_bytes);
    let odd = (0..count).rev().filter(|index| index % 2 == 1);
    let even = (0..count).filter(|index| index % 2 == 0);
    for index in odd.chain(even) {
        let start = index * frag_bytes;
        let end = (start + frag_bytes).min(data.len());
        store.write_at(put, start as u32, &data[start..end]).unwrap();
    }
}

pub(super) fn put(store: &mut DiskStore, id: ChunkId, data: &[u8], ticket: u64) {
    let reservation = store.begin_put(id, data.len() as u32).unwrap();
    write_scrambled(store, reservation, data, 1000);
    store.commit_put(reservation, ticket).unwrap();
}

pub(super) fn read_all(store: &mut DiskStore, id: ChunkId) -> Result<Vec<u8>, StoreError> {
    let len = store.chunk_len(id).ok_or(StoreError::NotFound)?;
    let mut buf = vec![0u8; len as usize + 10];
    let read = store.read_at(id, 0, &mut buf)?;
    assert_eq!(read, len as usize);
    buf.truncate(read);
    Ok(buf)
}

/// Waits, boundedly, until `count` reports have arrived.
pub(super) fn drain_durable(store: &mut DiskStore, count: usize) -> Vec<Durable> {
    let mut reports = Vec::new();
    for _ in 0..1000 {
        if reports.len() >= count {
            break;
        }
        store.wait_durable(TIMEOUT);
        let mut batch = 0;
        store.poll_durable(&mut |durable| {
            reports.push(durable);
            batch += 1;
        });
        assert!(batch <= POLL_DURABLE_BATCH_MAX);
    }
    assert_eq!(reports.len(), count, "durability reports missing");
    assert_eq!(store.pending_durable(), 0);
    reports
}

pub(super) fn drain_all(store: &mut DiskStore) {
    let pending = store.pending_durable();
    for report in drain_durable(store, pending) {
        assert_eq!(report.result, Ok(()), "ticket {}", report.ticket);
    }
}

pub(super) fn open(dir: &Path, config: DiskStoreConfig) -> DiskStore {
    DiskStore::open(dir, config).unwrap()
}

pub(super) fn damage(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

proptest! {
    #[test]
    fn payload_crc_is_crc32c_for_any_split_and_order(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        rotate in any::<usize>(),
    ) {
        let mut bounds: Vec<usize> = cuts.iter().map(|cut| cut % (data.len() + 1)).collect();
        bounds.push(0);
        bounds.push(data.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut fragments: Vec<(usize, usize)> =
            bounds.windows(2).map(|pair| (pair[0], pair[1])).collect();
        if !fragments.is_empty() {
            let by = rotate % fragments.len();
            fragments.rotate_left(by);
            fragments.reverse();
        }
        let len = data.len() as u64;
        let mut crc = crc::PayloadCrc::default();
        for &(start, end) in &fragments {
            crc.add(start as u64, &data[start..end], len);
        }
        prop_assert_eq!(crc.finish(len), crc32c::crc32c(&data));
        // In order, as one run.
        let mut in_order = crc::PayloadCrc::default();
        for (start, end) in bounds.windows(2).map(|pair| (pair[0], pair[1])) {
            in_order.add(start as u64, &data[start..end], len);
        }
        prop_assert_eq!(in_order.finish(len), crc32c::crc32c(&data));
    }
}

#[test]
#[ignore]
fn bench_fragment_terms() {
    let data = pattern(1, 4 << 20);
    let len = data.len() as u64;
    for (name, reversed) in [("in order", false), ("reversed", true)] {
        let mut fragments: Vec<(usize, &[u8])> =
            data.chunks(1400).enumerate().map(|(index, fragment)| (index * 1400, fragment)).collect();
        if reversed {
            fragments.reverse();
        }
        let start = std::time::Instant::now();
        for _ in 0..20 {
            let mut crc = crc::PayloadCrc::default();
            for &(offset, fragment) in &fragments {
                crc.add(offset as u64, fragment, len);
            }
            assert_eq!(crc.finish(len), crc32c::crc32c(&data));
        }
        eprintln!("{name}: {:?} per 4 MiB chunk", start.elapsed() / 20);
    }
    let start = std::time::Instant::now();
    for _ in 0..20 {
        std::hint::black_box(crc32c::crc32c(&data));
    }
    eprintln!("plain crc32c: {:?}", start.elapsed() / 20);
}

#[derive(Debug, Clone)]
enum Op {
    Put { id: u8, len: u16, frag_bytes: u16, reversed: bool },
    Abort { id: u8, len: u16 },
    Delete { id: u8 },
    Compact,
    MaybeCompact,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..8u8, 0..3000u16, 1..1500u16, any::<bool>())
            .prop_map(|(id, len, frag_bytes, reversed)| {
                Op::Put { id, len, frag_bytes, reversed }
            }),
        1 => (0..8u8, 0..3000u16).prop_map(|(id, len)| Op::Abort { id, len }),
        3 => (0..10u8).prop_map(|id| Op::Delete { id }),
        1 => Just(Op::Compact),
        1 => Just(Op::MaybeCompact),
        1 => Just(Op::Restart),
    ]
}

fn check_model(store: &mut DiskStore, model: &HashMap<ChunkId, Vec<u8>>) {
    for id in 0..10u128 {
        assert_eq!(read_all(store, id).ok().as_ref(), model.get(&id), "chunk {id}");
    }
    let used: usize = model.values().map(Vec::len).sum();
    assert_eq!(store.used_bytes(), used as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_operations_match_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskStoreConfig { segment_bytes: 4096, ..small_config() };
        let mut store = open(dir.path(), config);
        let mut model: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put { id, len, frag_bytes, reversed } => {
                    let id = ChunkId::from(id);
                    let data = pattern(id * 1000 + step as u128, usize::from(len));
                    let put = store.begin_put(id, u32::from(len)).unwrap();
                    let mut fragments: Vec<usize> =
                        (0..data.len().div_ceil(usize::from(frag_bytes))).collect();
                    if reversed {
                        fragments.reverse();
                    }
                    for index in fragments {
                        let start = index * usize::from(frag_bytes);
                        let end = (start + usize::from(frag_bytes)).min(data.len());
                        store.write_at(put, start as u32, &data[start..end]).unwrap();
                    }
                    store.commit_put(put, step as u64).unwrap();
                    model.insert(id, data);
                }
                Op::Abort { id, len } => {
                    let put = store.begin_put(ChunkId::from(id), u32::from(len)).unwrap();
                    store.write_at(put, 0, &vec![0xEE; usize::from(len / 2)]).unwrap();
                    store.abort_put(put);
                }
                Op::Delete { id } => {
                    store.delete(ChunkId::from(id), step as u64).unwrap();
                    model.remove(&ChunkId::from(id));
                }
                Op::Compact => {
                    drain_all(&mut store);
                    store.compact().unwrap();
                }
                Op::MaybeCompact => {
                    drain_all(&mut store);
                    store.maybe_compact().unwrap();
                }
                Op::Restart => {
                    drain_all(&mut store);
                    drop(store);
                    store = open(dir.path(), config);
                    let report = *store.recovery_report();
                    prop_assert_eq!(report.torn_tail_bytes_truncated, 0);
                    prop_assert_eq!(report.corrupt_records_skipped, 0);
                    prop_assert_eq!(report.checksum_mismatches_discarded, 0);
                    prop_assert_eq!(report.chunks_live, model.len() as u64);
                }
            }
            check_model(&mut store, &model);
            let live: u64 = store.segments.values().map(|segment| segment.live_bytes).sum();
            let index_bytes: u64 =
                store.index.values().map(|location| record_bytes(location.len)).sum();
            let tombstone_bytes: u64 =
                store.tombstones.values().map(|entry| entry.record_bytes).sum();
            let expected_live = index_bytes + tombstone_bytes;
            prop_assert_eq!(live, expected_live);
            let disk: u64 = store.segments.values().map(|segment| segment.len_bytes).sum();
            prop_assert_eq!(disk, store.disk_bytes());
        }
        drain_all(&mut store);
        drop(store);
        let mut store = open(dir.path(), config);
        check_model(&mut store, &model);
    }
}

#[test]
fn shift_feeds_zero_bytes() {
    let data = b"beeline chunk payload";
    for zeros in [0usize, 1, 7, 64, 1000, 4097] {
        let mut padded = data.to_vec();
        padded.resize(data.len() + zeros, 0);
        assert_eq!(crc::shift(crc::raw(data), zeros as u64), crc::raw(&padded));
    }
    assert_eq!(crc::PayloadCrc::default().finish(0), crc32c::crc32c(&[]));
    // Unwritten bytes count as the zeros the file holds there.
    let mut crc = crc::PayloadCrc::default();
    crc.add(5, b"abc", 20);
    let mut expected = [0u8; 20];
    expected[5..8].copy_from_slice(b"abc");
    assert_eq!(crc.finish(20), crc32c::crc32c(&expected));
}

#[test]
fn header_round_trip_and_damage_detected() {
    let id: ChunkId = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
    let pending = encode_header(KIND_PUT, id, 5000, None);
    let decoded = decode_header(&pending).unwrap();
    assert_eq!(decoded, DecodedHeader { kind: KIND_PUT, id, len: 5000, commit: CommitState::Pending });

    let commit = encode_commit(frame_crc(KIND_PUT, id, 5000), 77, 0xdead_beef);
    let committed = encode_header(KIND_PUT, id, 5000, Some(commit));
    let expected = CommitState::Committed { seq: 77, payload_crc: 0xdead_beef };
    assert_eq!(decode_header(&committed).unwrap().commit, expected);

    for byte in 0..32 {
        let mut damaged = committed;
        damaged[byte] ^= 0x10;
        assert!(decode_header(&damaged).is_none(), "frame byte {byte}");
    }
    for byte in 32..64 {
        let mut damaged = committed;
        damaged[byte] ^= 0x10;
        assert_eq!(decode_header(&damaged).unwrap().commit, CommitState::Pending, "commit byte {byte}");
    }
    // A commit block belongs to its own frame only.
    let mut other = encode_header(KIND_PUT, id + 1, 5000, None);
    other[32..64].copy_from_slice(&commit);
    assert_eq!(decode_header(&other).unwrap().commit, CommitState::Pending);
    assert!(decode_header(&[0u8; 64]).is_none());

    let tombstone = encode_header(KIND_TOMBSTONE, id, 0, Some(encode_commit(frame_crc(KIND_TOMBSTONE, id, 0), 78, 0)));
    let decoded = decode_header(&tombstone).unwrap();
    assert_eq!(decoded.kind, KIND_TOMBSTONE);
    assert_eq!(decoded.commit, CommitState::Committed { seq: 78, payload_crc: 0 });
    assert_eq!(record_bytes(0), 64);
    assert_eq!(record_bytes(1), 128);
    assert_eq!(record_bytes(64), 128);
    assert_eq!(record_bytes(65), 192);
}

#[test]
fn segment_names() {
    assert_eq!(segment_path(Path::new("/d"), 1), Path::new("/d/seg-000001.log"));
    assert_eq!(parse_segment_name("seg-000001.log"), Some(1));
    assert_eq!(parse_segment_name("seg-1234567.log"), Some(1_234_567));
    assert_eq!(parse_segment_name("seg-000000.log"), None);
    assert_eq!(parse_segment_name("seg-00001.log"), None);
    assert_eq!(parse_segment_name("seg-00000x.log"), None);
    assert_eq!(parse_segment_name("LOCK"), None);
}

#[test]
fn round_trip_with_out_of_order_fragments() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), small_config());
    let data = pattern(1, 10_000);
    put(&mut store, 1, &data, 7);
    assert_eq!(store.chunk_len(1), Some(10_000));
    assert_eq!(store.used_bytes(), 10_000);
    assert_eq!(read_all(&mut store, 1).unwrap(), data);

    let mut buf = [0u8; 100];
    assert_eq!(store.read_at(1, 1234, &mut buf), Ok(100));
    assert_eq!(buf[..], data[1234..1334]);
    assert_eq!(store.read_at(1, 9950, &mut buf), Ok(50));
    assert_eq!(buf[..50], data[9950..]);
    assert_eq!(store.read_at(1, 10_000, &mut buf), Ok(0));
    assert_eq!(store.read_at(1, 20_000, &mut buf), Ok(0));
    assert_eq!(store.read_at(2, 0, &mut buf), Err(StoreError::NotFound));
    assert_eq!(store.chunk_len(2), None);

    // Fragments of one byte, and an empty chunk.
    let small = pattern(3, 300);
    let reservation = store.begin_put(3, 300).unwrap();
    write_scrambled(&mut store, reservation, &small, 1);
    store.commit_put(reservation, 8).unwrap();
    assert_eq!(read_all(&mut store, 3).unwrap(), small);
    put(&mut store, 4, &[], 9);
    assert_eq!(store.chunk_len(4), Some(0));

    let reports = drain_durable(&mut store, 3);
    let tickets: Vec<u64> = reports.iter().map(|report| report.ticket).collect();
    assert_eq!(tickets, [7, 8, 9]);
    assert!(reports.iter().all(|report| report.result.is_ok()));
    assert!(!store.wait_durable(TIMEOUT), "nothing pending: returns at once");
}

#[test]
fn restart_recovers_committed_skips_uncommitted_and_keeps_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let (a1, a2, b, c) = (pattern(10, 3000), pattern(11, 7000), pattern(12, 2500), pattern(13, 1));
    let mut store = open(dir.path(), config);
    put(&mut store, 1, &a1, 1);
    put(&mut store, 2, &b, 2);
    put(&mut store, 3, &c, 3);
    let unfinished = store.begin_put(4, 4000).unwrap();
    store.write_at(unfinished, 0, &pattern(14, 2000)).unwrap();
    let aborted = store.begin_put(5, 100).unwrap();
    store.write_at(aborted, 0, &pattern(15, 100)).unwrap();
    store.abort_put(aborted);
    store.delete(2, 4).unwrap();
    put(&mut store, 1, &a2, 5);
    assert_eq!(read_all(&mut store, 1).unwrap(), a2);
    assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
    drain_all(&mut store);
    drop(store);

    let mut store = open(dir.path(), config);
    let report = *store.recovery_report();
    assert_eq!(report.pending_reservations_skipped, 2, "{report:?}");
    assert_eq!(report.chunks_live, 2, "{report:?}");
    assert_eq!(report.torn_tail_bytes_truncated, 0);
    assert_eq!(read_all(&mut store, 1).unwrap(), a2);
    assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
    assert_eq!(read_all(&mut store, 3).unwrap(), c);
    assert_eq!(store.chunk_len(4), None);
    assert_eq!(store.chunk_len(5), None);
    assert_eq!(store.used_bytes(), (a2.len() + c.len()) as u64);

    // New records append after the recovered ones and survive another restart.
    let f = pattern(16, 4444);
    put(&mut store, 6, &f, 6);
    drain_all(&mut store);
    drop(store);
    let mut store = open(dir.path(), config);
    assert_eq!(read_all(&mut store, 6).unwrap(), f);
    assert_eq!(read_all(&mut store, 1).unwrap(), a2);
    assert_eq!(read_all(&mut store, 3).unwrap(), c);
    assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
}

fn torn_tail_case(tear: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let (a, b, c) = (pattern(1, 5000), pattern(2, 5000), pattern(3, 3000));
    let mut store = open(dir.path(), config);
    put(&mut store, 1, &a, 1);
    put(&mut store, 2, &b, 2);
    assert_eq!(store.index[&2].record_offset, record_bytes(5000));
    drain_all(&mut store);
    drop(store);
    tear(&segment_path(dir.path(), 1));

    let mut store = open(dir.path(), config);
    let report = *store.recovery_report();
    assert!(report.torn_tail_bytes_truncated > 0, "{report:?}");
    assert_eq!(report.corrupt_records_skipped, 0);
    assert_eq!(read_all(&mut store, 1).unwrap(), a);
    assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
    assert_eq!(store.disk_bytes(), record_bytes(5000));
    put(&mut store, 3, &c, 3);
    drain_all(&mut store);
    drop(store);

    let mut store = open(dir.path(), config);
    assert_eq!(store.recovery_report().torn_tail_bytes_truncated, 0);
    assert_eq!(read_all(&mut store, 1).unwrap(), a);
    assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
    assert_eq!(read_all(&mut store, 3).unwrap(), c);
}

#[test]
fn torn_tail_in_the_middle_of_a_payload_is_truncated() {
    torn_tail_case(|path| {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(record_bytes(5000) + RECORD_HEADER_BYTES + 1000).unwrap();
    });
}

#[test]
fn torn_tail_with_a_garbled_header_is_truncated() {
    torn_tail_case(|path| damage(path, record_bytes(5000) + 10, &[0xff, 0x00, 0x55]));
}

#[test]
fn corrupt_payload_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let mut store = open(dir.path(), config);
    let (a, b, x1, x2) = (pattern(1, 3000), pattern(2, 3000), pattern(3, 2000), pattern(4, 2000));
    put(&mut store, 1, &a, 1);
    put(&mut store, 2, &b, 2);
    put(&mut store, 3, &x1, 3);
    put(&mut store, 3, &x2, 4);
    let a_payload = store.index[&1].record_offset + RECORD_HEADER_BYTES;
    let x2_payload = store.index[&3].record_offset + RECORD_HEADER_BYTES;
    drain_all(&mut store);
    drop(store);
    let path = segment_path(dir.path(), 1);
    damage(&path, a_payload + 100, &[a[100] ^ 1]);
    damage(&path, x2_payload + 1999, &[x2[1999] ^ 0x80]);

    for _ in 0..2 {
        let mut store = open(dir.path(), config);
        let report = *store.recovery_report();
        assert_eq!(report.checksum_mismatches_discarded, 2, "{report:?}");
        assert_eq!(store.chunk_len(1), None);
        assert_eq!(read_all(&mut store, 1), Err(StoreError::NotFound));
        assert_eq!(read_all(&mut store, 2).unwrap(), b);
        // The older, intact version of chunk 3 is not served instead of the newer one.
        assert_eq!(read_all(&mut store, 3), Err(StoreError::NotFound));
        assert_eq!(store.used_bytes(), 3000);
    }
    let mut store = open(dir.path(), config);
    put(&mut store, 3, &x1, 5);
    drain_all(&mut store);
    drop(store);
    let mut store = open(dir.path(), config);
    assert_eq!(read_all(&mut store, 3).unwrap(), x1);
}

#[test]
fn corrupt_header_in_an_earlier_segment_skips_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiskStoreConfig { segment_bytes: 16 << 10, ..small_config() };
    let mut store = open(dir.path(), config);
    // 4032-byte payloads make 4096-byte records: four per segment.
    let chunks: Vec<Vec<u8>> = (0..10).map(|id| pattern(id, 4032)).collect();
    for (id, data) in chunks.iter().enumerate() {
        put(&mut store, id as ChunkId, data, id as u64);
    }
    drain_all(&mut store);
    assert_eq!(store.segment_count(), 3);
    drop(store);
    damage(&segment_path(dir.path(), 1), 4096 + 3, &[0xAA]);

    let mut store = open(dir.path(), config);
    let report = *store.recovery_report();
    assert_eq!(report.corrupt_records_skipped, 1, "{report:?}");
    assert_eq!(report.corrupt_bytes_skipped, 3 * 4096);
    assert_eq!(report.torn_tail_bytes_truncated, 0);
    for (id, data) in chunks.iter().enumerate() {
        let expected = if (1..=3).contains(&id) { Err(StoreError::NotFound) } else { Ok(data.clone()) };
        assert_eq!(read_all(&mut store, id as ChunkId), expected, "chunk {id}");
    }
    // The damaged segment is mostly dead: compaction keeps what it could read.
    let compaction = store.maybe_compact().unwrap();
    assert_eq!(compaction.segments_removed, 1, "{compaction:?}");
    drop(store);
    let mut store = open(dir.path(), config);
    assert_eq!(store.recovery_report().corrupt_records_skipped, 0);
    assert_eq!(store.segment_count(), 2);
    assert_eq!(read_all(&mut store, 0).unwrap(), chunks[0]);
    assert_eq!(read_all(&mut store, 4).unwrap(), chunks[4]);
    assert_eq!(read_all(&mut store, 1), Err(StoreError::NotFound));
}

#[test]
fn chunk_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiskStoreConfig { segment_bytes: 4096, ..small_config() };
    let mut store = open(dir.path(), config);
    let (small, big) = (pattern(1, 100), pattern(2, 20_000));
    put(&mut store, 1, &small, 1);
    put(&mut store, 2, &big, 2);
    put(&mut store, 3, &small, 3);
    assert_eq!(store.segment_count(), 3);
    drain_all(&mut store);
    drop(store);
    let mut store = open(dir.path(), config);
    assert_eq!(read_all(&mut store, 2).unwrap(), big);
    assert_eq!(read_all(&mut store, 3).unwrap(), small);
}

#[test]
fn group_commit_reports_every_ticket_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), small_config());
    let mut issued = Vec::new();
    for id in 0..400u128 {
        let ticket = 10_000 + id as u64;
        if id % 5 == 4 {
            // Deleting an absent chunk is a durability barrier.
            store.delete(1_000_000 + id, ticket).unwrap();
        } else {
            put(&mut store, id, &pattern(id, 200), ticket);
        }
        issued.push(ticket);
    }
    assert!(store.pending_durable() <= issued.len());
    let reports = drain_durable(&mut store, issued.len());
    let tickets: Vec<u64> = reports.iter().map(|report| report.ticket).collect();
    assert_eq!(tickets, issued, "reported in order, each once");
    assert_eq!(tickets.iter().collect::<HashSet<_>>().len(), issued.len());
    assert!(reports.iter().all(|report| report.result.is_ok()));
    store.poll_durable(&mut |durable| panic!("unexpected report {durable:?}"));
}

#[test]
fn bounds_busy_and_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiskStoreConfig { max_puts_in_flight: 2, max_pending_durable: 4, ..small_config() };
    let mut store = open(dir.path(), config);
    assert_eq!(store.begin_put(1, config.max_chunk_bytes + 1), Err(StoreError::TooLarge));
    let first = store.begin_put(1, 10).unwrap();
    let second = store.begin_put(2, 10).unwrap();
    assert_eq!(store.begin_put(3, 10), Err(StoreError::Busy));
    store.abort_put(first);
    let third = store.begin_put(3, 10).unwrap();
    assert_ne!(third, first, "a reused slot gets a new handle");
    for put in [second, third] {
        store.write_at(put, 0, &[7; 10]).unwrap();
        store.commit_put(put, 1).unwrap();
    }
    store.delete(2, 2).unwrap();
    store.delete(9, 3).unwrap();
    // Four changes await poll_durable: the bound is reached.
    assert_eq!(store.begin_put(4, 10), Err(StoreError::Busy));
    assert_eq!(store.delete(3, 4), Err(StoreError::Busy));
    drain_all(&mut store);
    let fourth = store.begin_put(4, 10).unwrap();
    store.abort_put(fourth);
    assert_eq!(store.used_bytes(), 10);
}

#[test]
#[should_panic(expected = "past a 10-byte chunk")]
fn write_past_the_reservation_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), small_config());
    let put = store.begin_put(1, 10).unwrap();
    let _ = store.write_at(put, 5, &[0; 6]);
}

#[test]
#[should_panic(expected = "not in flight")]
fn stale_reservation_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), small_config());
    let put = store.begin_put(1, 0).unwrap();
    store.commit_put(put, 1).unwrap();
    store.abort_put(put);
}

#[test]
fn a_data_directory_is_opened_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config());
    let error = DiskStore::open(dir.path(), small_config()).unwrap_err();
    assert!(matches!(error, DiskStoreError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("--data-dir"), "{error}");
    drop(store);
    drop(open(dir.path(), small_config()));
}

#[test]
fn invalid_config_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiskStoreConfig { max_chunk_bytes: MAX_CHUNK_LIMIT_BYTES + 1, ..small_config() };
    let error = DiskStore::open(dir.path(), config).unwrap_err();
    assert!(error.to_string().contains("max_chunk_bytes"), "{error}");
    let config = DiskStoreConfig { max_pending_durable: 0, ..small_config() };
    let error = DiskStore::open(dir.path(), config).unwrap_err();
    assert!(error.to_string().contains("max_pending_durable"), "{error}");
    let config = DiskStoreConfig { max_chunk_bytes: MAX_CHUNK_LIMIT_BYTES, ..DiskStoreConfig::default() };
    drop(open(dir.path(), config));
    // Room for every put slot's commit, whatever max_pending_durable says.
    let config = DiskStoreConfig { max_puts_in_flight: 8192, ..DiskStoreConfig::default() };
    let store = open(dir.path(), config);
    assert_eq!(store.config().max_pending_durable, 8192);
}

proptest! {
    /// A vectored read of any run of buffers (some empty, some past the chunk's end, more
    /// than one `preadv` takes) returns the same bytes as the trait's one-`pread`-per-buffer
    /// default, from any offset.
    #[test]
    fn vectored_reads_match_one_read_per_buffer(
        offset in 0u32..12_000,
        lens in proptest::collection::vec(0usize..300, 0..400),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), small_config());
        let data = pattern(3, 10_000);
        put(&mut store, 3, &data, 1);
        let mut vectored: Vec<Vec<u8>> = lens.iter().map(|len| vec![0xee; *len]).collect();
        let mut bufs: Vec<&mut [u8]> = vectored.iter_mut().map(Vec::as_mut_slice).collect();
        let read = store.read_vectored_at(3, offset, &mut bufs).unwrap();
        let want: usize = lens.iter().sum::<usize>().min(data.len().saturating_sub(offset as usize));
        prop_assert_eq!(read, want);
        let joined: Vec<u8> = vectored.concat();
        let expected = data.get(offset as usize..).unwrap_or(&[]);
        prop_assert_eq!(&joined[..read], &expected[..read]);
        prop_assert!(joined[read..].iter().all(|byte| *byte == 0xee), "bytes written past the chunk");
        let mut plain: Vec<Vec<u8>> = lens.iter().map(|len| vec![0xee; *len]).collect();
        let mut plain_bufs: Vec<&mut [u8]> = plain.iter_mut().map(Vec::as_mut_slice).collect();
        let plain_read = read_one_by_one(&mut store, 3, offset, &mut plain_bufs);
        prop_assert_eq!(plain_read, read);
        prop_assert_eq!(plain.concat(), joined);
    }
}

/// The trait's default `read_vectored_at`, for comparison with the store's own.
fn read_one_by_one(store: &mut DiskStore, id: ChunkId, offset: u32, bufs: &mut [&mut [u8]]) -> usize {
    let mut total = 0;
    for buf in bufs.iter_mut() {
        let read = store.read_at(id, offset + total as u32, buf).unwrap();
        total += read;
        if read < buf.len() {
            break;
        }
    }
    total
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Fragments written as vectored runs (`pwritev`), the runs in reverse order, store the
    /// same bytes and the same checksum as single writes: read back at once and after a
    /// reopen, which checks every record's crc.
    #[test]
    fn vectored_writes_store_what_single_writes_do(
        len in 1usize..(64 << 10),
        fragment_bytes in 1usize..5000,
        run_fragments in 1usize..20,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), small_config());
        let data = pattern(7, len);
        let reservation = store.begin_put(7, len as u32).unwrap();
        let fragments: Vec<&[u8]> = data.chunks(fragment_bytes).collect();
        let runs: Vec<&[&[u8]]> = fragments.chunks(run_fragments).collect();
        for (index, run) in runs.iter().enumerate().rev() {
            let offset = index * run_fragments * fragment_bytes;
            store.write_vectored_at(reservation, offset as u32, run).unwrap();
        }
        store.commit_put(reservation, 1).unwrap();
        drain_all(&mut store);
        prop_assert_eq!(read_all(&mut store, 7).unwrap(), data.clone());
        drop(store);
        let mut store = open(dir.path(), small_config());
        prop_assert_eq!(read_all(&mut store, 7).unwrap(), data);
    }
}

/// More buffers than one `pwritev` takes (`IOVECS_PER_CALL`), some of them empty: the write
/// goes on in a second call from the right buffer and byte.
#[test]
fn a_vectored_write_longer_than_one_call_stores_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), small_config());
    let sizes: Vec<usize> =
        (0..IOVECS_PER_CALL + 44).map(|index| if index % 7 == 0 { 0 } else { 1 + index % 239 }).collect();
    let len: usize = sizes.iter().sum();
    let data = pattern(9, len);
    let mut bufs: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for size in &sizes {
        bufs.push(&data[at..at + size]);
        at += size;
    }
    let reservation = store.begin_put(9, len as u32).unwrap();
    store.write_vectored_at(reservation, 0, &bufs).unwrap();
    store.commit_put(reservation, 1).unwrap();
    drain_all(&mut store);
    assert_eq!(read_all(&mut store, 9).unwrap(), data);
}

/// Whole pages of `id`'s record (a page it shares with a neighbour is left out) and how
/// many of them the page cache holds.
pub(super) fn record_pages_cached(store: &DiskStore, id: ChunkId) -> (usize, usize) {
    let location = store.index[&id];
    let file = &store.segments[&location.segment].file.file;
    let start = location.record_offset.div_ceil(DROP_PAGE_BYTES) * DROP_PAGE_BYTES;
    let end = (location.record_offset + record_bytes(location.len)) / DROP_PAGE_BYTES * DROP_PAGE_BYTES;
    let pages = ((end - start) / DROP_PAGE_BYTES) as usize;
    (cached_pages(file, start, (end - start) as usize), pages)
}

/// Records a skip of `test` and returns `true` when `dir` is on tmpfs, whose pages cannot
/// be dropped.
pub(super) fn skip_on_tmpfs(test: &str, dir: &Path) -> bool {
    let tmpfs = on_tmpfs(dir);
    if tmpfs {
        crate::testkit::skip(test, "the temporary directory is on tmpfs, whose pages cannot be dropped");
    }
    tmpfs
}

/// With `drop_written_pages`, a put's pages leave the page cache once it is durable;
/// without, they stay. The chunk reads back whole either way.
#[test]
fn durable_puts_leave_the_page_cache_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    if skip_on_tmpfs("durable_puts_leave_the_page_cache_when_asked", dir.path()) {
        return;
    }
    for drop_written_pages in [true, false] {
        let store_dir = dir.path().join(std::format!("drop-{drop_written_pages}"));
        let config = DiskStoreConfig { drop_written_pages, segment_bytes: 1 << 20, ..small_config() };
        let mut store = open(&store_dir, config);
        let data = pattern(7, 60_000);
        put(&mut store, 7, &data, 1);
        drain_all(&mut store);
        let pages = record_pages_cached(&store, 7).1;
        assert!(pages >= 10, "a 60 kB record spans at least 10 whole pages");
        let cached = || record_pages_cached(&store, 7).0;
        if drop_written_pages {
            // The sync thread drops them just after it reports the put durable: wait
            // (bounded) for it.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while cached() > 0 {
                assert!(std::time::Instant::now() < deadline, "{} of {pages} pages still cached", cached());
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            assert_eq!(cached(), pages, "the pages a put wrote stay cached by default");
        }
        assert_eq!(read_all(&mut store, 7).unwrap(), data);
    }
}

/// The per-put hint (`drop_when_durable`) drops that put's pages once durable, in a store
/// that keeps every other put's: the one put beside it stays cached.
#[test]
fn a_put_hinted_not_to_be_read_soon_leaves_the_page_cache_alone_of_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    if skip_on_tmpfs("a_put_hinted_not_to_be_read_soon_leaves_the_page_cache_alone_of_its_neighbours", dir.path()) {
        return;
    }
    let mut store = open(dir.path(), DiskStoreConfig { segment_bytes: 1 << 20, ..small_config() });
    let (hinted, kept) = (pattern(7, 60_000), pattern(8, 60_000));
    let reservation = store.begin_put(7, hinted.len() as u32).unwrap();
    store.drop_when_durable(reservation);
    store.write_at(reservation, 0, &hinted).unwrap();
    store.commit_put(reservation, 1).unwrap();
    put(&mut store, 8, &kept, 2);
    drain_all(&mut store);
    let pages = record_pages_cached(&store, 7).1;
    assert!(pages >= 10, "a 60 kB record spans at least 10 whole pages");
    // The sync thread drops them just after it reports the put durable: wait (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while record_pages_cached(&store, 7).0 > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {pages} hinted pages still cached",
            record_pages_cached(&store, 7).0
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (cached, pages) = record_pages_cached(&store, 8);
    assert_eq!(cached, pages, "the put without the hint stays cached");
    assert_eq!(read_all(&mut store, 7).unwrap(), hinted);
    assert_eq!(read_all(&mut store, 8).unwrap(), kept);
}

/// The get hint (`drop_after_read`) drops the pages of the chunk read, and of it alone: the
/// record beside it, read as well, stays cached; so does the hinted chunk's data.
#[test]
fn a_chunk_read_through_with_the_get_hint_leaves_the_page_cache_alone_of_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    if skip_on_tmpfs("a_chunk_read_through_with_the_get_hint_leaves_the_page_cache_alone_of_its_neighbours", dir.path())
    {
        return;
    }
    let mut store = open(dir.path(), DiskStoreConfig { segment_bytes: 1 << 20, ..small_config() });
    let (hinted, kept) = (pattern(7, 60_000), pattern(8, 60_000));
    put(&mut store, 7, &hinted, 1);
    put(&mut store, 8, &kept, 2);
    drain_all(&mut store);
    assert_eq!(read_all(&mut store, 7).unwrap(), hinted);
    assert_eq!(read_all(&mut store, 8).unwrap(), kept);
    let (cached, pages) = record_pages_cached(&store, 7);
    assert!(pages >= 10, "a 60 kB record spans at least 10 whole pages");
    assert_eq!(cached, pages, "a chunk just read is cached before the hint");
    store.drop_after_read(7);
    store.drop_after_read(99); // an absent chunk: nothing to drop, nothing fails
    assert_eq!(record_pages_cached(&store, 7).0, 0, "the hinted chunk's pages stayed cached");
    let (cached, pages) = record_pages_cached(&store, 8);
    assert_eq!(cached, pages, "the chunk beside it lost pages");
    assert_eq!(read_all(&mut store, 7).unwrap(), hinted, "read again from the disk");
}
