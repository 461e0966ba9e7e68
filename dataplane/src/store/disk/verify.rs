//! Checking what is served and what lies on disk: per-block checksums and the scrub.
//!
//! The record format keeps one crc32c of the whole payload. Checking it on every GET
//! would read the whole chunk for each window of fragments (up to 4 MiB for a 1,372-byte
//! range read), so the store keeps, in memory, a crc32c per [`VERIFY_BLOCK_BYTES`] block
//! of every chunk it has verified once against the payload crc (at its first read or by
//! the scrub), or whose put arrived in order (the table is then built from the bytes as
//! they are written: [`InOrderBlocks`]). A read then checks only the blocks it touches:
//! it reads the rest of the first and last block beside the caller's buffers and compares
//! each block's crc.
//! Nothing on disk changed, so data written before this check existed is served and
//! checked the same way. Tables cost 4 bytes per 16 KiB of chunk data (1 KiB for a
//! 4 MiB chunk), are built while a put is written or at the first read, and are not
//! persisted, so a restart costs no extra reads.
//!
//! A chunk found corrupt, by a read or by the scrub, is marked: every later read of it
//! answers [`StoreError::Corrupt`] until it is deleted or put again. The store never
//! deletes it by itself: it cannot know whether another node holds a good copy, and a
//! copy that fails its crc in one block may still be the last one to salvage from.

use super::*;

/// Bytes covered by one in-memory block checksum.
pub const VERIFY_BLOCK_BYTES: u32 = 16 << 10;
/// Chunk ids skipped (deleted since the pass began) by one scrub step at most.
const SCRUB_SKIPS_PER_STEP_MAX: usize = 1024;

/// What the store found checking its chunks: reads refused and the scrub's progress.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IntegrityStats {
    /// Reads answered `Corrupt` (no bytes handed out).
    pub reads_corrupt: u64,
    /// Chunks marked corrupt since the store was opened, by reads or by the scrub.
    pub chunks_found_corrupt: u64,
    /// Chunks marked corrupt now (deleting or replacing one clears its mark).
    pub chunks_corrupt: u64,
    pub scrub_bytes: u64,
    pub scrub_chunks: u64,
    /// Corrupt chunks the scrub found (a subset of `chunks_found_corrupt`).
    pub scrub_corrupt_found: u64,
    pub scrub_passes: u64,
    /// Bytes of the current pass verified so far, and its total (chunks present when it
    /// began).
    pub scrub_pass_done_bytes: u64,
    pub scrub_pass_total_bytes: u64,
    /// When the last pass completed (Unix ms), 0 before the first one.
    pub scrub_last_pass_unix_ms: u64,
}

/// What one [`DiskStore::scrub_step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScrubStep {
    pub bytes_read: u64,
    /// A chunk this step found corrupt (now marked).
    pub found_corrupt: Option<ChunkId>,
    /// A chunk this step could not read (I/O error); the scrub moves on.
    pub unreadable: Option<ChunkId>,
    /// The step completed a pass.
    pub pass_completed: bool,
}

#[derive(Debug, Default)]
pub(super) struct ScrubState {
    /// The chunks of the current pass, in id order; `next` is the one to start next.
    queue: Vec<ChunkId>,
    next: usize,
    current: Option<ScrubChunk>,
}

#[derive(Debug)]
struct ScrubChunk {
    id: ChunkId,
    /// The record being verified; a chunk replaced or moved meanwhile is started over.
    seq: u64,
    segment: u32,
    offset: u64,
    crcs: BlockCrcs,
    /// The segment opened again for this chunk's reads, without read-ahead (see
    /// `scrub_step`); `None` until the first piece, or when it could not be opened.
    file: Option<File>,
}

/// The whole-payload crc and the per-block crcs of bytes fed in order from offset 0.
#[derive(Debug, Default)]
pub(super) struct BlockCrcs {
    whole: u32,
    block: u32,
    block_filled: u32,
    blocks: Vec<u32>,
}

impl BlockCrcs {
    pub(super) fn feed(&mut self, mut data: &[u8]) {
        self.whole = crc32c::crc32c_append(self.whole, data);
        while !data.is_empty() {
            let take = data.len().min((VERIFY_BLOCK_BYTES - self.block_filled) as usize);
            self.block = crc32c::crc32c_append(self.block, &data[..take]);
            self.block_filled += take as u32;
            data = &data[take..];
            if self.block_filled == VERIFY_BLOCK_BYTES {
                self.blocks.push(self.block);
                self.block = 0;
                self.block_filled = 0;
            }
        }
    }

    pub(super) fn finish(mut self) -> (u32, Box<[u32]>) {
        if self.block_filled > 0 {
            self.blocks.push(self.block);
        }
        (self.whole, self.blocks.into_boxed_slice())
    }
}

/// The block table of a put whose fragments arrive in order (the usual case: a client
/// sends a chunk front to back), built as they are written, so that the chunk's first read
/// need not read the whole chunk back to build it. No byte is read twice: the payload's own
/// crc ([`crc::PayloadCrc`]) runs over the fragments, split at block boundaries, and each
/// block's crc follows from its register at the two boundaries ([`crc::piece_crc`]). A
/// fragment anywhere but where the last one ended gives up: that chunk's table is built at
/// its first read, as for chunks stored before a restart. The table's memory is allocated
/// once per put slot, for the largest chunk, and reused by every put of that slot.
#[derive(Debug)]
pub(super) struct InOrderBlocks {
    blocks: Vec<u32>,
    /// Payload offset the next fragment must start at to stay in order.
    next: u64,
    /// The payload crc's raw register at the start of the current block.
    raw_at_block_start: u32,
    in_order: bool,
}

impl InOrderBlocks {
    pub(super) fn for_chunks_up_to(max_chunk_bytes: u32) -> Self {
        InOrderBlocks {
            blocks: Vec::with_capacity(max_chunk_bytes.div_ceil(VERIFY_BLOCK_BYTES) as usize),
            next: 0,
            raw_at_block_start: 0,
            in_order: true,
        }
    }

    /// Starts the table of a new put.
    pub(super) fn start(&mut self) {
        self.blocks.clear();
        self.next = 0;
        self.raw_at_block_start = 0;
        self.in_order = true;
    }

    /// Adds `data`, written at payload offset `offset` of a `len_bytes` payload, to the
    /// payload's crc and, while the payload arrives in order, to the table.
    pub(super) fn add(&mut self, payload_crc: &mut crc::PayloadCrc, offset: u64, mut data: &[u8], len_bytes: u64) {
        if !self.in_order || offset != self.next {
            self.in_order = false;
            payload_crc.add(offset, data, len_bytes);
            return;
        }
        let block = u64::from(VERIFY_BLOCK_BYTES);
        while !data.is_empty() {
            let block_end = (self.next / block + 1) * block;
            let take = data.len().min((block_end - self.next) as usize);
            payload_crc.add(self.next, &data[..take], len_bytes);
            self.next += take as u64;
            data = &data[take..];
            if self.next == block_end {
                let raw = payload_crc.prefix_raw(self.next).expect("an in-order payload is one run from offset 0");
                assert!(self.blocks.len() < self.blocks.capacity(), "more blocks than the largest chunk has");
                self.blocks.push(crc::piece_crc(self.raw_at_block_start, raw, block));
                self.raw_at_block_start = raw;
            }
        }
    }

    /// The table of the `len_bytes` payload whose crc is `payload_crc`, if every byte of it
    /// was added in order.
    pub(super) fn finish(&mut self, payload_crc: &crc::PayloadCrc, len_bytes: u64) -> Option<Box<[u32]>> {
        if !self.in_order || self.next != len_bytes {
            return None;
        }
        let block = u64::from(VERIFY_BLOCK_BYTES);
        let tail = len_bytes % block;
        if tail > 0 {
            let raw = payload_crc.prefix_raw(len_bytes).expect("an in-order payload is one run from offset 0");
            assert!(self.blocks.len() < self.blocks.capacity(), "more blocks than the largest chunk has");
            self.blocks.push(crc::piece_crc(self.raw_at_block_start, raw, tail));
        }
        debug_assert_eq!(self.blocks.len() as u64, len_bytes.div_ceil(block));
        Some(self.blocks.as_slice().into())
    }
}

/// Compares bytes fed in order, from the start of block `block`, with a chunk's table.
struct BlockCheck<'t> {
    table: &'t [u32],
    len: u64,
    block: usize,
    filled: u32,
    crc: u32,
    bad: bool,
}

impl BlockCheck<'_> {
    fn block_len(&self) -> u32 {
        let start = self.block as u64 * u64::from(VERIFY_BLOCK_BYTES);
        self.len.saturating_sub(start).min(u64::from(VERIFY_BLOCK_BYTES)) as u32
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = data.len().min(self.block_len().saturating_sub(self.filled) as usize);
            if take == 0 {
                // More bytes than the chunk has: never what a correct caller feeds.
                self.bad = true;
                return;
            }
            self.crc = crc32c::crc32c_append(self.crc, &data[..take]);
            self.filled += take as u32;
            data = &data[take..];
            if self.filled == self.block_len() {
                self.bad |= self.table.get(self.block) != Some(&self.crc);
                self.block += 1;
                self.filled = 0;
                self.crc = 0;
            }
        }
    }

    /// Every block fed was whole and matched.
    fn passed(&self) -> bool {
        !self.bad && self.filled == 0
    }
}

impl DiskStore {
    /// What reads and the scrub found so far.
    pub fn integrity_stats(&self) -> IntegrityStats {
        IntegrityStats { chunks_corrupt: self.corrupt.len() as u64, ..self.integrity }
    }

    /// Whether `id` is marked corrupt (found so by a read or the scrub).
    pub fn is_marked_corrupt(&self, id: ChunkId) -> bool {
        self.corrupt.contains(&id)
    }

    /// Marks `id` corrupt: reads of it answer `Corrupt` from now on.
    pub(super) fn mark_corrupt(&mut self, id: ChunkId) {
        self.block_crcs.remove(&id);
        if self.corrupt.insert(id) {
            self.integrity.chunks_found_corrupt += 1;
        }
    }

    /// Forgets what was known of `id`'s bytes: it was deleted or replaced.
    pub(super) fn forget_verified(&mut self, id: ChunkId) {
        self.block_crcs.remove(&id);
        self.corrupt.remove(&id);
    }

    /// Keeps the block table a put built as it was written, for the chunk just committed.
    pub(super) fn keep_put_table(&mut self, id: ChunkId, table: Box<[u32]>) {
        self.block_crcs.insert(id, table);
    }

    /// Checks bytes just read for a caller (`bufs`, holding `offset..offset+total` of the
    /// chunk) against the chunk's block crcs, building them first if needed.
    pub(super) fn verify_served(
        &mut self,
        id: ChunkId,
        location: Location,
        offset: u32,
        bufs: &[&mut [u8]],
    ) -> Result<(), StoreError> {
        let total: u64 = bufs.iter().map(|buf| buf.len() as u64).sum();
        if total == 0 {
            return Ok(());
        }
        if !self.block_crcs.contains_key(&id) {
            let (whole, table) = self.chunk_crcs(location).map_err(|_| StoreError::Io)?;
            if whole != location.payload_crc {
                self.mark_corrupt(id);
                return Err(StoreError::Corrupt);
            }
            self.block_crcs.insert(id, table);
        }
        let block = u64::from(VERIFY_BLOCK_BYTES);
        let start = u64::from(offset);
        let end = start + total;
        let first_block_start = start / block * block;
        let last_block_end = (end.div_ceil(block) * block).min(u64::from(location.len));
        let head = (start - first_block_start) as usize;
        let tail = (last_block_end - end) as usize;
        let payload_offset = location.record_offset + RECORD_HEADER_BYTES;
        let file = &self.segments[&location.segment].file.file;
        let (head_buf, rest) = self.scratch.split_at_mut(head);
        let tail_buf = &mut rest[..tail];
        file.read_exact_at(head_buf, payload_offset + first_block_start).map_err(|_| StoreError::Io)?;
        file.read_exact_at(tail_buf, payload_offset + end).map_err(|_| StoreError::Io)?;
        let table = &self.block_crcs[&id];
        let mut check = BlockCheck {
            table,
            len: u64::from(location.len),
            block: (first_block_start / block) as usize,
            filled: 0,
            crc: 0,
            bad: false,
        };
        check.feed(head_buf);
        for buf in bufs {
            check.feed(buf);
        }
        check.feed(tail_buf);
        if check.passed() {
            Ok(())
        } else {
            self.mark_corrupt(id);
            Err(StoreError::Corrupt)
        }
    }

    /// Reads a whole payload: its crc and block crcs.
    fn chunk_crcs(&mut self, location: Location) -> io::Result<(u32, Box<[u32]>)> {
        let file = &self.segments[&location.segment].file.file;
        let payload_offset = location.record_offset + RECORD_HEADER_BYTES;
        let mut crcs = BlockCrcs::default();
        let mut done = 0u64;
        while done < u64::from(location.len) {
            let piece_bytes = (u64::from(location.len) - done).min(SCRATCH_BYTES as u64) as usize;
            let piece = &mut self.scratch[..piece_bytes];
            file.read_exact_at(piece, payload_offset + done)?;
            crcs.feed(piece);
            done += piece_bytes as u64;
        }
        Ok(crcs.finish())
    }

    /// Verifies up to `budget_bytes` (at most 1 MiB) more of the stored chunks against
    /// their checksums, continuing where the last step stopped; a pass walks every chunk
    /// present when it began, in id order, and the next pass starts right after. Bounded:
    /// one read, at most [`SCRUB_SKIPS_PER_STEP_MAX`] index lookups and, at a pass's end,
    /// one walk of the index. Marks the chunks it finds corrupt.
    pub fn scrub_step(&mut self, budget_bytes: u64) -> ScrubStep {
        let mut step = ScrubStep::default();
        if self.scrub.current.is_none() && !self.scrub_next_chunk(&mut step) {
            return step;
        }
        let mut current = self.scrub.current.take().expect("a chunk to scrub was chosen");
        let Some(location) = self.index.get(&current.id).copied() else {
            return step; // deleted meanwhile
        };
        if location.seq != current.seq || location.segment != current.segment {
            // Replaced or moved by compaction: verify the new record from its start.
            self.integrity.scrub_pass_done_bytes = self.integrity.scrub_pass_done_bytes.saturating_sub(current.offset);
            self.scrub.current = Some(ScrubChunk {
                id: current.id,
                seq: location.seq,
                segment: location.segment,
                offset: 0,
                crcs: BlockCrcs::default(),
                file: None,
            });
            return step;
        }
        let left = u64::from(location.len) - current.offset;
        let piece_bytes = left.min(budget_bytes).min(SCRATCH_BYTES as u64) as usize;
        let piece = &mut self.scratch[..piece_bytes];
        // The scrub reads through a descriptor of its own with read-ahead off, so that it
        // reads only the pages it checks and can tell which of them the page cache held
        // before: those come from it and stay; the ones it reads from the disk leave the
        // cache again below, so a pass over every stored chunk does not evict what readers
        // use. Without its own descriptor it reads through the store's and drops nothing.
        if current.file.is_none() {
            current.file = open_without_read_ahead(&segment_path(&self.dir, location.segment)).ok();
        }
        let (file, own) = match &current.file {
            Some(file) => (file, true),
            None => (&self.segments[&location.segment].file.file, false),
        };
        let start = location.record_offset + RECORD_HEADER_BYTES + current.offset;
        // `None`: nothing known of the cache (no descriptor of its own, or a kernel that
        // cannot tell): the whole piece is read as before and nothing dropped.
        let cached_bytes = if own { cached_prefix_bytes(file, start, piece_bytes) } else { None };
        if file.read_exact_at(piece, start).is_err() {
            step.unreadable = Some(current.id);
            self.integrity.scrub_pass_done_bytes += left;
            return step;
        }
        if let Some(cached_bytes) = cached_bytes.filter(|cached| *cached < piece_bytes) {
            // Only whole pages go, so the page a piece ends in stays, and the next piece
            // finds it cached: when nothing past that page was, it goes with this piece.
            let first_page_end = start.div_ceil(DROP_PAGE_BYTES) * DROP_PAGE_BYTES;
            let cached_end = start + cached_bytes as u64;
            let from =
                if cached_end <= first_page_end { start / DROP_PAGE_BYTES * DROP_PAGE_BYTES } else { cached_end };
            // Advice only: a failure leaves pages cached, nothing else.
            let _ = drop_cached(file, from, start + piece_bytes as u64 - from);
        }
        current.crcs.feed(piece);
        current.offset += piece_bytes as u64;
        step.bytes_read = piece_bytes as u64;
        self.integrity.scrub_bytes += piece_bytes as u64;
        self.integrity.scrub_pass_done_bytes += piece_bytes as u64;
        if current.offset < u64::from(location.len) {
            self.scrub.current = Some(current);
            return step;
        }
        self.integrity.scrub_chunks += 1;
        let (whole, table) = current.crcs.finish();
        if whole == location.payload_crc {
            if !self.corrupt.contains(&current.id) {
                self.block_crcs.insert(current.id, table);
            }
        } else {
            if !self.corrupt.contains(&current.id) {
                self.integrity.scrub_corrupt_found += 1;
                step.found_corrupt = Some(current.id);
            }
            self.mark_corrupt(current.id);
        }
        step
    }

    /// Picks the next chunk of the pass (starting a new pass when this one is done);
    /// `false` when there is nothing to scrub in this step.
    fn scrub_next_chunk(&mut self, step: &mut ScrubStep) -> bool {
        for _ in 0..SCRUB_SKIPS_PER_STEP_MAX {
            if self.scrub.next >= self.scrub.queue.len() {
                if !self.scrub.queue.is_empty() {
                    self.integrity.scrub_passes += 1;
                    self.integrity.scrub_last_pass_unix_ms = unix_ms();
                    step.pass_completed = true;
                }
                self.scrub.queue.clear();
                self.scrub.queue.extend(self.index.keys().copied());
                self.scrub.queue.sort_unstable();
                self.scrub.next = 0;
                self.integrity.scrub_pass_done_bytes = 0;
                self.integrity.scrub_pass_total_bytes =
                    self.index.values().map(|location| u64::from(location.len)).sum();
                if self.scrub.queue.is_empty() || step.pass_completed {
                    return false;
                }
            }
            let id = self.scrub.queue[self.scrub.next];
            self.scrub.next += 1;
            if let Some(location) = self.index.get(&id) {
                self.scrub.current = Some(ScrubChunk {
                    id,
                    seq: location.seq,
                    segment: location.segment,
                    offset: 0,
                    crcs: BlockCrcs::default(),
                    file: None,
                });
                return true;
            }
        }
        false
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
