//! Serving checks and the scrub against real files: reads across block boundaries, a
//! byte flipped in a segment file, a scrub pass.

use super::*;

const TIMEOUT: Duration = Duration::from_millis(100);

fn config() -> DiskStoreConfig {
    DiskStoreConfig { segment_bytes: 4 << 20, max_chunk_bytes: 1 << 20, ..DiskStoreConfig::default() }
}

fn pattern(salt: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 9) as u8).collect()
}

fn put(store: &mut DiskStore, id: ChunkId, data: &[u8]) {
    put_fragments(store, id, data, false);
}

/// Like [`put`], with the fragments written front to back, as a client sends them (the
/// store then builds the chunk's block table as it writes).
fn put_in_order(store: &mut DiskStore, id: ChunkId, data: &[u8]) {
    put_fragments(store, id, data, true);
}

/// Puts `data` in 1372-byte fragments, back to front unless `in_order`, and waits until it
/// is durable.
fn put_fragments(store: &mut DiskStore, id: ChunkId, data: &[u8], in_order: bool) {
    let reservation = store.begin_put(id, data.len() as u32).unwrap();
    let mut fragments: Vec<(usize, &[u8])> = data.chunks(1372).enumerate().collect();
    if !in_order {
        fragments.reverse();
    }
    for (index, piece) in fragments {
        store.write_at(reservation, (index * 1372) as u32, piece).unwrap();
    }
    store.commit_put(reservation, id as u64).unwrap();
    wait_until_durable(store);
}

/// Waits (at most 100 waits of [`TIMEOUT`]) until every committed put is durable, each one
/// successfully.
fn wait_until_durable(store: &mut DiskStore) {
    for _ in 0..100 {
        if store.pending_durable() == 0 {
            break;
        }
        store.wait_durable(TIMEOUT);
        store.poll_durable(&mut |durable| assert_eq!(durable.result, Ok(())));
    }
    assert_eq!(store.pending_durable(), 0, "the put never became durable");
}

/// Flips the payload byte at `offset` of `id`'s record in its segment file.
fn flip(store: &DiskStore, id: ChunkId, offset: u64) {
    use std::os::unix::fs::FileExt;
    let location = store.index[&id];
    let path = segment_path(&store.dir, location.segment);
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let at = location.record_offset + RECORD_HEADER_BYTES + offset;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
}

fn read(store: &mut DiskStore, id: ChunkId, offset: u32, len: usize) -> Result<Vec<u8>, StoreError> {
    let mut buf = vec![0u8; len];
    let read = store.read_at(id, offset, &mut buf)?;
    buf.truncate(read);
    Ok(buf)
}

#[test]
fn ranges_across_block_boundaries_read_back_verified() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStore::open(dir.path(), config()).unwrap();
    let block = VERIFY_BLOCK_BYTES as usize;
    let data = pattern(1, 3 * block + 777);
    put(&mut store, 1, &data);
    let ranges = [(0, 1), (0, data.len()), (block - 1, 2), (block, block), (2 * block + 5, block + 772), (100, 1372)];
    for (offset, len) in ranges {
        assert_eq!(read(&mut store, 1, offset as u32, len).unwrap(), data[offset..offset + len], "{offset}+{len}");
    }
    // A GET window: consecutive fragments, each in its own buffer, from inside the first
    // block across at least one boundary, ending inside a later block.
    let start = block / 2 + 3;
    let count = (data.len() - start) / 1372;
    assert!(count * 1372 > block, "the window crosses a block boundary");
    let mut frames = vec![vec![0u8; 1372]; count];
    let mut bufs: Vec<&mut [u8]> = frames.iter_mut().map(Vec::as_mut_slice).collect();
    let read = store.read_vectored_at(1, start as u32, &mut bufs).unwrap();
    assert_eq!(read, count * 1372);
    assert_eq!(frames.concat(), data[start..start + count * 1372]);
    assert_eq!(store.integrity_stats().reads_corrupt, 0);
}

#[test]
fn the_table_a_put_builds_in_order_matches_one_built_by_reading_the_chunk() {
    let block = VERIFY_BLOCK_BYTES as usize;
    let mut blocks = verify::InOrderBlocks::for_chunks_up_to(1 << 20);
    // Lengths around block boundaries; fragments of odd sizes, one of them a whole block
    // and more, so that pieces end exactly on, just before and just after boundaries.
    for len in [0, 1, block - 1, block, block + 1, 3 * block + 17, 1 << 20] {
        for fragment in [1, 1372, block, block + 5, 3 * block] {
            let data = pattern((len % 251) as u8 ^ fragment as u8, len);
            let mut payload_crc = crc::PayloadCrc::default();
            blocks.start();
            for (index, piece) in data.chunks(fragment).enumerate() {
                blocks.add(&mut payload_crc, (index * fragment) as u64, piece, len as u64);
            }
            let mut by_reading = verify::BlockCrcs::default();
            by_reading.feed(&data);
            let (whole, table) = by_reading.finish();
            assert_eq!(payload_crc.finish(len as u64), whole, "len {len}, fragments of {fragment}");
            let built = blocks.finish(&payload_crc, len as u64).expect("written in order");
            assert_eq!(built, table, "len {len}, fragments of {fragment}");
        }
    }
    // One fragment out of place: no table, the payload crc still right.
    let data = pattern(9, 3 * block);
    let mut payload_crc = crc::PayloadCrc::default();
    blocks.start();
    blocks.add(&mut payload_crc, block as u64, &data[block..], data.len() as u64);
    blocks.add(&mut payload_crc, 0, &data[..block], data.len() as u64);
    assert_eq!(blocks.finish(&payload_crc, data.len() as u64), None);
    assert_eq!(payload_crc.finish(data.len() as u64), crc32c::crc32c(&data));
}

#[test]
fn a_put_in_order_keeps_the_block_table_it_built_so_its_first_read_checks_only_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStore::open(dir.path(), config()).unwrap();
    let block = VERIFY_BLOCK_BYTES as usize;
    // Block-aligned, and with a partial last block.
    for (id, len) in [(1, 4 * block), (2, 3 * block + 100)] {
        let data = pattern(id as u8, len);
        put_in_order(&mut store, id, &data);
        // The table came with the put: damage in the last block does not touch a first
        // read of block 0 (a table built at the first read would read the whole chunk
        // and refuse it), and a read of the damaged block is refused.
        flip(&store, id, (len - 50) as u64);
        assert_eq!(read(&mut store, id, 0, 100).unwrap(), data[..100], "chunk {id}");
        assert_eq!(read(&mut store, id, (len - 60) as u32, 20), Err(StoreError::Corrupt), "chunk {id}");
    }
    // Written out of order: no table from the put, so the first read checks the whole
    // payload and refuses the chunk wherever it reads.
    let data = pattern(3, 4 * block);
    put(&mut store, 3, &data);
    flip(&store, 3, (4 * block - 50) as u64);
    assert_eq!(read(&mut store, 3, 0, 100), Err(StoreError::Corrupt));
    // A chunk put in order and read whole reads back as written, table and all.
    let data = pattern(4, 5 * block + 7);
    put_in_order(&mut store, 4, &data);
    assert_eq!(read(&mut store, 4, 0, data.len()).unwrap(), data);
}

#[test]
fn a_flipped_byte_is_refused_and_marks_the_chunk_until_it_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStore::open(dir.path(), config()).unwrap();
    let block = VERIFY_BLOCK_BYTES as usize;
    let data = pattern(2, 4 * block);
    put(&mut store, 7, &data);
    put(&mut store, 8, &data);

    // Never read before: the first read checks the whole payload, wherever it reads.
    flip(&store, 8, (3 * block + 10) as u64);
    assert_eq!(read(&mut store, 8, 0, 100), Err(StoreError::Corrupt));

    // Read once (its block table built), then damaged: only the damaged block's reads
    // see it, and from then on every read of the chunk is refused.
    assert_eq!(read(&mut store, 7, 0, 100).unwrap(), data[..100]);
    flip(&store, 7, (2 * block + 3) as u64);
    assert_eq!(read(&mut store, 7, 0, 100).unwrap(), data[..100], "block 0 is intact");
    assert_eq!(read(&mut store, 7, (2 * block) as u32, 10), Err(StoreError::Corrupt));
    assert_eq!(read(&mut store, 7, 0, 100), Err(StoreError::Corrupt), "the chunk stays marked");
    let stats = store.integrity_stats();
    assert_eq!((stats.reads_corrupt, stats.chunks_corrupt, stats.chunks_found_corrupt), (3, 2, 2));

    // Deleted and put again: a good copy reads back and the mark is gone.
    store.delete(7, 100).unwrap();
    put(&mut store, 7, &data);
    assert_eq!(read(&mut store, 7, 0, data.len()).unwrap(), data);
    assert_eq!(store.integrity_stats().chunks_corrupt, 1);
}

#[test]
fn the_scrub_walks_every_chunk_in_bounded_steps_and_finds_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStore::open(dir.path(), config()).unwrap();
    let sizes = [0usize, 1, 200_000, 1 << 20];
    for (id, len) in sizes.iter().enumerate() {
        put(&mut store, id as ChunkId, &pattern(id as u8, *len));
    }
    let total: usize = sizes.iter().sum();
    let budget = 100_000u64;
    let mut steps = 0;
    while store.integrity_stats().scrub_passes == 0 {
        let step = store.scrub_step(budget);
        assert!(step.bytes_read <= budget);
        assert_eq!(step.found_corrupt, None);
        steps += 1;
        assert!(steps < 100, "a pass over {total} bytes took more than 100 steps");
    }
    let stats = store.integrity_stats();
    assert_eq!((stats.scrub_chunks, stats.scrub_bytes), (sizes.len() as u64, total as u64));
    assert!(stats.scrub_last_pass_unix_ms > 0);

    flip(&store, 3, 777_777);
    let mut found = None;
    for _ in 0..100 {
        if let Some(id) = store.scrub_step(budget).found_corrupt {
            found = Some(id);
            break;
        }
    }
    assert_eq!(found, Some(3));
    assert_eq!(store.integrity_stats().scrub_corrupt_found, 1);
    assert_eq!(read(&mut store, 3, 0, 10), Err(StoreError::Corrupt), "marked by the scrub");
    assert_eq!(read(&mut store, 2, 0, 200_000).unwrap(), pattern(2, 200_000));
}

/// A local client's put and get: the whole chunk in one `write_at` and one `read_at`, which
/// the store reads in cache-sized pieces, each checked as it is read.
#[test]
fn a_whole_chunk_read_in_one_call_is_checked_piece_by_piece() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStore::open(dir.path(), config()).unwrap();
    let piece = CACHE_PIECE_BYTES as usize;
    let len = 3 * piece + VERIFY_BLOCK_BYTES as usize + 5;
    assert!(len <= config().max_chunk_bytes as usize);
    let data = pattern(9, len);
    let reservation = store.begin_put(1, len as u32).unwrap();
    store.write_at(reservation, 0, &data).unwrap();
    store.commit_put(reservation, 1).unwrap();
    wait_until_durable(&mut store);
    // Whole, from an offset that is no piece boundary, past the end, and at the end.
    assert_eq!(read(&mut store, 1, 0, len).unwrap(), data);
    assert_eq!(read(&mut store, 1, 1000, len).unwrap(), data[1000..]);
    assert_eq!(read(&mut store, 1, piece as u32 - 1, 2 * piece).unwrap(), data[piece - 1..3 * piece - 1]);
    assert_eq!(read(&mut store, 1, len as u32, piece + 1).unwrap(), Vec::<u8>::new());
    assert_eq!(read(&mut store, 2, 0, piece + 1), Err(StoreError::NotFound));
    // A byte damaged in the last piece: the whole read is refused, not cut short.
    flip(&store, 1, len as u64 - 2);
    assert_eq!(read(&mut store, 1, 0, len), Err(StoreError::Corrupt));
    assert_eq!(read(&mut store, 1, 0, piece + 1), Err(StoreError::Corrupt), "marked corrupt from then on");
}

#[test]
fn cache_pieces_cover_the_range_and_cut_only_at_piece_boundaries() {
    let piece = CACHE_PIECE_BYTES as usize;
    for (offset, len) in [(0u32, 0usize), (0, 1), (0, piece), (0, 4 * piece + 3), (7, piece), (piece as u32 - 1, 2)] {
        let pieces: Vec<(u32, core::ops::Range<usize>)> = cache_pieces(offset, len).collect();
        let mut expected_start = 0usize;
        for (at, range) in &pieces {
            assert_eq!(range.start, expected_start, "{offset}+{len}: contiguous");
            assert_eq!(*at as usize, offset as usize + range.start);
            assert!(!range.is_empty() && range.len() <= piece);
            let end = *at as usize + range.len();
            assert!(end == offset as usize + len || end.is_multiple_of(piece), "{offset}+{len}: cut at {end}");
            expected_start = range.end;
        }
        assert_eq!(expected_start, len, "{offset}+{len}: covered");
    }
}

/// A scrub pass leaves the page cache as it found it: a chunk that was not cached is read
/// from the disk and dropped again (but for the page it shares with the next record), a
/// chunk that was cached stays cached.
#[test]
fn a_scrub_pass_does_not_fill_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    if super::tests::skip_on_tmpfs("a_scrub_pass_does_not_fill_the_page_cache", dir.path()) {
        return;
    }
    let mut store = DiskStore::open(dir.path(), config()).unwrap();
    let (cold, hot) = (1, 2);
    put(&mut store, cold, &pattern(1, 1 << 20));
    put(&mut store, hot, &pattern(2, 1 << 20));
    let location = store.index[&cold];
    let file = &store.segments[&location.segment].file.file;
    drop_cached(file, location.record_offset, record_bytes(location.len)).unwrap();
    let (cached, pages) = super::tests::record_pages_cached(&store, cold);
    assert_eq!(cached, 0, "the cold chunk's {pages} pages were dropped before the scrub");
    assert_eq!(
        super::tests::record_pages_cached(&store, hot).0,
        super::tests::record_pages_cached(&store, hot).1,
        "the hot chunk is cached"
    );

    let mut steps = 0;
    while store.integrity_stats().scrub_passes == 0 {
        assert_eq!(store.scrub_step(100_000).found_corrupt, None);
        steps += 1;
        assert!(steps < 100, "a pass over 2 MiB took more than 100 steps");
    }
    assert_eq!(store.integrity_stats().scrub_chunks, 2, "both chunks were verified");
    let (cached, pages) = super::tests::record_pages_cached(&store, cold);
    assert!(cached <= 1, "the scrub left {cached} of the cold chunk's {pages} pages cached");
    // A scrub that misjudged the cache drops a whole piece (100 000 bytes: 24 pages or
    // more). A few pages may go without it: the kernel evicts some under the memory other
    // tests use (a clean-clone CI run saw 4 of these 256 pages gone, and the e2e page-cache
    // test 3 of 4096), so up to 8 are allowed.
    let (cached, pages) = super::tests::record_pages_cached(&store, hot);
    assert!(cached + 8 >= pages, "the scrub dropped {} of the hot chunk's {pages} pages", pages - cached);
    assert_eq!(read(&mut store, cold, 0, 1 << 20).unwrap(), pattern(1, 1 << 20));
}
