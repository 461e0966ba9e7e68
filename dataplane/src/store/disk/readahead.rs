//! Read-ahead across chunks. A large file's chunks are read one after another by a GET
//! (the client asks for the next ones while it checks the first), and they lie one after
//! another in a segment, since a put appends them in order. The kernel's own read-ahead
//! stops at a few hundred KiB and at every new `pread` that is not a continuation, so each
//! 4 MiB chunk of a file whose pages are not cached was read from the disk while the node
//! waited. Now, when a chunk is read from its start right after the chunk before it in the
//! same segment, the kernel is asked (`POSIX_FADV_WILLNEED`, which starts the reads and
//! returns) for the next [`SEQUENTIAL_READAHEAD_BYTES`] of the segment, and a chunk read
//! out of any order is asked for whole, so that a GET's later fragment runs find it read.

use super::record::record_bytes;

/// Chunks smaller than this get no hint: a small read is one short `pread` either way,
/// and the hint would cost a 4 KiB GET a system call.
pub(super) const READAHEAD_CHUNK_BYTES_MIN: u32 = 256 << 10;

/// How far past the end of the chunk being read the kernel is asked to read, while reads
/// go through a segment in order: two 4 MiB chunks.
pub(super) const SEQUENTIAL_READAHEAD_BYTES: u64 = 8 << 20;

/// A record this close behind the end of the last one read still follows it: the gap is
/// the padding that puts a large chunk's payload on a page (see `DIRECT_WRITE_BYTES_MIN`).
const FOLLOWING_GAP_BYTES_MAX: u64 = 64 << 10;

/// Where the last large chunk read from its start ended, and how far the kernel was asked
/// to read.
#[derive(Debug, Clone, Copy)]
struct Sequence {
    segment: u32,
    next_record_offset: u64,
    advised_to: u64,
}

#[derive(Debug, Default)]
pub(super) struct ReadAhead {
    last: Option<Sequence>,
    /// Bytes the kernel was asked to read ahead, in all.
    pub(super) advised_bytes: u64,
}

impl ReadAhead {
    /// A read of a chunk from its start: the record at `record_offset` of `segment`, with
    /// `len` payload bytes. Returns the (offset, length) of the segment to ask the kernel
    /// for, if any.
    pub(super) fn on_chunk_start(&mut self, segment: u32, record_offset: u64, len: u32) -> Option<(u64, u64)> {
        if len < READAHEAD_CHUNK_BYTES_MIN {
            return None;
        }
        let record_end = record_offset + record_bytes(len);
        let follows = self.last.filter(|last| {
            last.segment == segment
                && record_offset.checked_sub(last.next_record_offset).is_some_and(|gap| gap < FOLLOWING_GAP_BYTES_MAX)
        });
        let (from, to) = match follows {
            Some(last) => (last.advised_to.max(record_offset), record_end + SEQUENTIAL_READAHEAD_BYTES),
            None => (record_offset, record_end),
        };
        self.last = Some(Sequence { segment, next_record_offset: record_end, advised_to: to.max(from) });
        if to <= from {
            return None;
        }
        self.advised_bytes += to - from;
        Some((from, to - from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u32 = 4 << 20;

    #[test]
    fn chunks_read_in_order_keep_the_kernel_reading_ahead_without_asking_twice() {
        let mut ahead = ReadAhead::default();
        let record = record_bytes(CHUNK);
        // The first chunk: itself.
        assert_eq!(ahead.on_chunk_start(3, 64, CHUNK), Some((64, record)));
        // The next one in the segment: from where the last hint ended to two chunks past it.
        let second = 64 + record;
        assert_eq!(ahead.on_chunk_start(3, second, CHUNK), Some((second, record + SEQUENTIAL_READAHEAD_BYTES)));
        // And on: only what was not asked for yet, one chunk each time.
        let third = second + record;
        assert_eq!(
            ahead.on_chunk_start(3, third, CHUNK),
            Some((third + record + SEQUENTIAL_READAHEAD_BYTES - record, record))
        );
        assert_eq!(ahead.advised_bytes, 3 * record + SEQUENTIAL_READAHEAD_BYTES);
    }

    #[test]
    fn reads_out_of_order_or_in_another_segment_ask_for_their_chunk_alone() {
        let mut ahead = ReadAhead::default();
        let record = record_bytes(CHUNK);
        ahead.on_chunk_start(1, 64, CHUNK);
        // A chunk further on in the same segment, not the next one.
        assert_eq!(ahead.on_chunk_start(1, 64 + 3 * record, CHUNK), Some((64 + 3 * record, record)));
        // The next record's offset, but in another segment.
        assert_eq!(ahead.on_chunk_start(2, 64 + 4 * record, CHUNK), Some((64 + 4 * record, record)));
        // Going back.
        assert_eq!(ahead.on_chunk_start(2, 64, CHUNK), Some((64, record)));
    }

    /// Padding between two records (a large chunk's payload placed on a page) does not
    /// break a sequence; a gap as large as a chunk does.
    #[test]
    fn a_chunk_behind_padding_still_follows() {
        let mut ahead = ReadAhead::default();
        let record = record_bytes(CHUNK);
        ahead.on_chunk_start(1, 4032, CHUNK);
        let after_padding = 4032 + record + 4032;
        assert!(ahead.on_chunk_start(1, after_padding, CHUNK).is_some_and(|(_, len)| len > record));
        let far = after_padding + 2 * record;
        assert_eq!(ahead.on_chunk_start(1, far, CHUNK), Some((far, record)));
    }

    #[test]
    fn small_chunks_get_no_hint_and_do_not_break_a_sequence() {
        let mut ahead = ReadAhead::default();
        let record = record_bytes(CHUNK);
        ahead.on_chunk_start(1, 64, CHUNK);
        assert_eq!(ahead.on_chunk_start(1, 64 + record, 4096), None);
        assert_eq!(ahead.advised_bytes, record);
        assert!(ahead.on_chunk_start(1, 64 + record, CHUNK).is_some_and(|(_, len)| len > record));
    }

    /// The store asks for read-ahead when its chunks are read in the order they were put.
    #[test]
    fn the_store_reads_ahead_through_chunks_put_in_order() {
        use super::super::{DiskStore, DiskStoreConfig};
        use crate::store::ChunkStore;
        let dir = tempfile::tempdir().unwrap();
        let config =
            DiskStoreConfig { segment_bytes: 16 << 20, max_chunk_bytes: 1 << 20, ..DiskStoreConfig::default() };
        let mut store = DiskStore::open(dir.path(), config).unwrap();
        let len = 512u32 << 10;
        let data: std::vec::Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for id in 1..=3u128 {
            let put = store.begin_put(id, len).unwrap();
            store.write_at(put, 0, &data).unwrap();
            store.commit_put(put, id as u64).unwrap();
        }
        let mut buf = std::vec![0u8; len as usize];
        let record = record_bytes(len);
        store.read_at(1, 0, &mut buf).unwrap();
        assert_eq!(store.read_ahead.advised_bytes, record, "the first chunk alone");
        store.read_at(2, 0, &mut buf).unwrap();
        assert_eq!(store.read_ahead.advised_bytes, 2 * record + SEQUENTIAL_READAHEAD_BYTES, "and on past the next");
        assert!(buf == data, "read-ahead changes no byte read");
        // Reads within a chunk ask for nothing more.
        store.read_at(2, 4096, &mut buf[..4096]).unwrap();
        assert_eq!(store.read_ahead.advised_bytes, 2 * record + SEQUENTIAL_READAHEAD_BYTES);
    }
}
