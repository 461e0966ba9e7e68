//! Direct writes (`O_DIRECT`) of large payloads from aligned buffers: where their records
//! land, what reaches the page cache, and that padding is stepped over and reclaimed.

use super::direct::DIRECT_PAGE_BYTES;
use super::tests::{drain_all, open, pattern, put, read_all, small_config};
use super::*;

const CHUNK_BYTES: usize = 1 << 20;

fn config() -> DiskStoreConfig {
    DiskStoreConfig { segment_bytes: 8 << 20, max_chunk_bytes: 4 << 20, ..small_config() }
}

/// `data` copied into memory that starts at a multiple of 4096 bytes, plus `shift`
/// (what a local client's bulk slot is, with `shift` 0).
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(data: &[u8], shift: usize) -> Aligned {
        let mut buf = vec![0u8; data.len() + 8192];
        let start = buf.as_ptr().align_offset(4096) + shift;
        buf[start..start + data.len()].copy_from_slice(data);
        Aligned { buf, start, len: data.len() }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// Opens a store in `dir`; `None` (with the skip recorded) where the filesystem of the
/// temporary directory does no direct I/O.
fn open_direct_store(test: &str, dir: &Path) -> Option<DiskStore> {
    let store = open(dir, config());
    if !store.writes_direct() {
        crate::testkit::skip(test, "the temporary directory's filesystem does no direct I/O (tmpfs?)");
        return None;
    }
    Some(store)
}

fn put_from(store: &mut DiskStore, id: ChunkId, data: &[u8], ticket: u64) {
    let reservation = store.begin_put(id, data.len() as u32).unwrap();
    store.write_at(reservation, 0, data).unwrap();
    store.commit_put(reservation, ticket).unwrap();
}

/// A 1 MiB + 100 B chunk from a page-aligned buffer, put after a small one: its payload
/// starts on a page behind a padding record, its whole pages go to the disk directly (none
/// of them in the page cache), the 100-byte tail through the cache; it reads back, the
/// padding is dead space, and a restart steps over the padding and finds both chunks.
#[test]
fn a_large_put_from_aligned_memory_is_written_direct_on_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut store) = open_direct_store("a_large_put_from_aligned_memory_is_written_direct_on_a_page", dir.path())
    else {
        return;
    };
    let small = pattern(1, 1000);
    put(&mut store, 1, &small, 1);
    let large = pattern(2, CHUNK_BYTES + 100);
    let aligned = Aligned::new(&large, 0);
    put_from(&mut store, 2, aligned.bytes(), 2);
    drain_all(&mut store);

    let stats = store.write_stats();
    assert_eq!(stats.direct_bytes, CHUNK_BYTES as u64, "the whole pages of the payload go direct");
    assert_eq!(stats.page_cache_bytes, 1000 + 100, "the small chunk and the tail go through the cache");
    let location = store.index[&2];
    assert_eq!((location.record_offset + RECORD_HEADER_BYTES) % 4096, 0, "the payload starts on a page");
    assert_eq!(stats.padding_bytes, location.record_offset - record_bytes(1000), "padding fills the gap");
    assert!(stats.padding_bytes > 0, "the small record left the tail off a page");
    assert_eq!(store.dead_bytes(), stats.padding_bytes, "padding is dead space, for compaction to reclaim");
    let file = &store.segments[&location.segment].file.file;
    let payload_offset = location.record_offset + RECORD_HEADER_BYTES;
    assert_eq!(cached_pages(file, payload_offset, CHUNK_BYTES), 0, "a direct write leaves nothing in the page cache");
    assert_eq!(read_all(&mut store, 2).unwrap(), large);
    drop(store);

    let mut store = open(dir.path(), config());
    let report = *store.recovery_report();
    assert_eq!(report.padding_records_skipped, 1);
    assert_eq!(report.pending_reservations_skipped, 0, "padding is not counted as an abandoned put");
    assert_eq!(report.chunks_live, 2);
    assert_eq!(read_all(&mut store, 1).unwrap(), small);
    assert_eq!(read_all(&mut store, 2).unwrap(), large);
}

/// What cannot go direct goes through the page cache, whole and readable: a buffer off the
/// memory alignment, a large chunk arriving in fragments (its record is still placed on a
/// page), a chunk under the minimum, and every put of a store with direct writes off,
/// which never pads.
#[test]
fn puts_that_cannot_go_direct_go_through_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let test = "puts_that_cannot_go_direct_go_through_the_page_cache";
    let Some(mut store) = open_direct_store(test, &dir.path().join("on")) else { return };
    let large = pattern(3, CHUNK_BYTES);
    let unaligned = Aligned::new(&large, 1);
    put_from(&mut store, 3, unaligned.bytes(), 1);
    put(&mut store, 4, &large, 2); // 1000-byte fragments
    let short = Aligned::new(&pattern(5, DIRECT_WRITE_BYTES_MIN as usize - 4096), 0);
    put_from(&mut store, 5, short.bytes(), 3);
    drain_all(&mut store);
    let stats = store.write_stats();
    assert_eq!(stats.direct_bytes, 0);
    assert_eq!(stats.page_cache_bytes, 2 * CHUNK_BYTES as u64 + u64::from(DIRECT_WRITE_BYTES_MIN) - 4096);
    for id in [3, 4] {
        assert_eq!((store.index[&id].record_offset + RECORD_HEADER_BYTES) % 4096, 0, "chunk {id} starts on a page");
    }
    assert_eq!(read_all(&mut store, 3).unwrap(), large);
    assert_eq!(read_all(&mut store, 4).unwrap(), large);

    let mut off = open(&dir.path().join("off"), DiskStoreConfig { direct_writes: false, ..config() });
    assert!(!off.writes_direct());
    let aligned = Aligned::new(&large, 0);
    put(&mut off, 1, &pattern(1, 1000), 1);
    put_from(&mut off, 3, aligned.bytes(), 2);
    drain_all(&mut off);
    let stats = off.write_stats();
    assert_eq!((stats.direct_bytes, stats.padding_bytes), (0, 0));
    assert_eq!(off.index[&3].record_offset, record_bytes(1000), "records follow each other unpadded");
    assert_eq!(read_all(&mut off, 3).unwrap(), large);
}

/// Compaction reclaims padding like any dead space: once the padded chunk is deleted and
/// its segment sealed, compacting removes that segment, and what is left dead is at most
/// the padding in front of the one chunk that opened the new segment.
#[test]
fn padding_is_reclaimed_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut store) = open_direct_store("padding_is_reclaimed_by_compaction", dir.path()) else { return };
    put(&mut store, 1, &pattern(1, 1000), 1);
    let aligned = Aligned::new(&pattern(2, CHUNK_BYTES), 0);
    put_from(&mut store, 2, aligned.bytes(), 2);
    store.delete(2, 3).unwrap();
    // 4 MiB chunks: the second no longer fits the 8 MiB segment and opens a new one.
    let filler = Aligned::new(&pattern(4, 4 << 20), 0);
    for id in 4..6u128 {
        put_from(&mut store, id, filler.bytes(), 10 + id as u64);
    }
    drain_all(&mut store);
    assert_eq!(store.segment_count(), 2);
    let padding_bytes = store.write_stats().padding_bytes;
    assert!(store.dead_bytes() > padding_bytes, "the padding and the deleted chunk are dead");
    store.compact().unwrap();
    drain_all(&mut store);
    assert!(!store.segments.contains_key(&1), "the segment with the padding was compacted away");
    assert!(store.dead_bytes() < DIRECT_PAGE_BYTES, "{} dead bytes left", store.dead_bytes());
    assert_eq!(read_all(&mut store, 1).unwrap(), pattern(1, 1000));
    for id in 4..6 {
        assert_eq!(read_all(&mut store, id).unwrap(), pattern(4, 4 << 20));
    }
}

/// A full disk counts the padding a large put may need: with room for the record and
/// less than a page beside it, the put is refused up front (`DiskFull`) rather than
/// allocated past the capacity; a store that writes nothing direct takes the same put.
#[test]
fn the_capacity_counts_the_padding_a_large_put_may_need() {
    let dir = tempfile::tempdir().unwrap();
    let test = "the_capacity_counts_the_padding_a_large_put_may_need";
    let Some(probe) = open_direct_store(test, &dir.path().join("probe")) else { return };
    drop(probe);
    let len = CHUNK_BYTES as u32;
    let capacity_bytes = Some(record_bytes(len) + 1024);
    let mut store = open(&dir.path().join("direct"), DiskStoreConfig { capacity_bytes, ..config() });
    assert_eq!(store.begin_put(1, len), Err(StoreError::DiskFull));
    assert_eq!(store.disk_bytes(), 0, "nothing was allocated for the refused put");
    let mut buffered =
        open(&dir.path().join("buffered"), DiskStoreConfig { capacity_bytes, direct_writes: false, ..config() });
    let aligned = Aligned::new(&pattern(1, CHUNK_BYTES), 0);
    put_from(&mut buffered, 1, aligned.bytes(), 1);
    drain_all(&mut buffered);
    assert_eq!(read_all(&mut buffered, 1).unwrap(), pattern(1, CHUNK_BYTES));
}

/// The `O_DIRECT` descriptor of a segment cannot be opened (here its file was renamed away
/// under the store, which still writes through the descriptor it holds): the put goes
/// through the page cache instead, reads back, and direct writes stay off for the store.
#[test]
fn a_segment_that_cannot_be_opened_for_direct_io_turns_direct_writes_off() {
    let dir = tempfile::tempdir().unwrap();
    let test = "a_segment_that_cannot_be_opened_for_direct_io_turns_direct_writes_off";
    let Some(mut store) = open_direct_store(test, dir.path()) else { return };
    let active = segment_path(dir.path(), store.active);
    let aside = dir.path().join("aside");
    std::fs::rename(&active, &aside).unwrap();
    let large = pattern(3, CHUNK_BYTES);
    let aligned = Aligned::new(&large, 0);
    put_from(&mut store, 3, aligned.bytes(), 1);
    drain_all(&mut store);
    assert!(!store.writes_direct(), "a failed O_DIRECT open turns direct writes off");
    let stats = store.write_stats();
    assert_eq!(stats.direct_bytes, 0);
    assert_eq!(stats.page_cache_bytes, CHUNK_BYTES as u64, "the whole chunk went through the page cache");
    assert_eq!(read_all(&mut store, 3).unwrap(), large);
    // Later large puts do not try again, and pad no more.
    let padding_bytes = stats.padding_bytes;
    put_from(&mut store, 4, Aligned::new(&pattern(4, CHUNK_BYTES), 0).bytes(), 2);
    drain_all(&mut store);
    assert_eq!(store.write_stats().direct_bytes, 0);
    assert_eq!(store.write_stats().padding_bytes, padding_bytes, "no padding once direct writes are off");
    drop(store);
    std::fs::rename(&aside, &active).unwrap();
    let mut store = open(dir.path(), config());
    assert_eq!(read_all(&mut store, 3).unwrap(), large, "the chunk survives a restart");
}
