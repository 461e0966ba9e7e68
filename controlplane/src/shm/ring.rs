//! The shared region of one local client and the two single-producer/single-consumer
//! descriptor rings in it (memif's model: a ring of descriptors naming buffers in one
//! region, indices that only grow, a flag saying the consumer sleeps). All the `unsafe`
//! of the shared memory is here; the layout is in `docs/protocol.md`.
//!
//! Layout (every integer little-endian, offsets from the region's start):
//!
//! ```text
//! 0                 RegionHeader (magic, version, slots, frame bytes, offsets)
//! PAGE              request ring    (client produces, node consumes)
//! PAGE + ring_bytes completion ring (node produces, client consumes)
//! frames_offset     slots request frames, then slots completion frames, frame_bytes each
//! bulk_area         bulk_slots slots of bulk_slot_bytes: whole chunks, written and read
//!                   in place by the node's store (a request frame only names them)
//! ```
//!
//! A ring is `head` (written by the producer only), `tail` (written by the consumer only),
//! `consumer_waiting` (written by the consumer: 1 while it sleeps on its eventfd), each on
//! its own cache line, then `slots` descriptors `{offset: u32, len: u32}`. Slot `i` of a
//! ring is `index % slots`; `head - tail` (wrapping) is how many descriptors are queued.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering, fence};

pub const MAGIC: u64 = u64::from_le_bytes(*b"BEESHM01");
pub const VERSION: u32 = 2;
const PAGE: usize = 4096;
const CACHE_LINE: usize = 64;
const HEAD: usize = 0;
const TAIL: usize = CACHE_LINE;
const WAITING: usize = 2 * CACHE_LINE;
const DESCRIPTORS: usize = 3 * CACHE_LINE;
pub const DESCRIPTOR_BYTES: usize = 8;
/// Most bulk slots a region has (a client keeps their use in one `u32` mask).
pub const BULK_SLOTS_MAX: u32 = 32;
/// Set in a request descriptor's length: the frame holds a bulk request (a header naming a
/// bulk slot), not a message for the protocol engine.
pub const BULK_DESCRIPTOR_BIT: u32 = 1 << 31;

/// Where everything lies in a region of `slots` ring slots and `frame_bytes` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub slots: u32,
    pub frame_bytes: u32,
    pub request_ring: usize,
    pub completion_ring: usize,
    pub request_frames: usize,
    pub completion_frames: usize,
    pub bulk_area: usize,
    pub bulk_slots: u32,
    pub bulk_slot_bytes: u32,
    /// Bytes the layout needs (the region may be larger: hugepage rounding).
    pub bytes: usize,
}

impl Layout {
    /// `slots` a power of two, `frame_bytes` a power of two of at least a page, at most
    /// `BULK_SLOTS_MAX` bulk slots of whole pages.
    pub fn new(slots: u32, frame_bytes: u32, bulk_slots: u32, bulk_slot_bytes: u32) -> Option<Layout> {
        if !slots.is_power_of_two() || !frame_bytes.is_power_of_two() || (frame_bytes as usize) < PAGE {
            return None;
        }
        if bulk_slots > BULK_SLOTS_MAX || !(bulk_slot_bytes as usize).is_multiple_of(PAGE) {
            return None;
        }
        let ring_bytes = (DESCRIPTORS + slots as usize * DESCRIPTOR_BYTES).next_multiple_of(PAGE);
        let request_ring = PAGE;
        let completion_ring = request_ring + ring_bytes;
        let request_frames = (completion_ring + ring_bytes).next_multiple_of(frame_bytes as usize);
        let pool = slots as usize * frame_bytes as usize;
        let completion_frames = request_frames + pool;
        let bulk_area = completion_frames + pool;
        let bytes = bulk_area.checked_add(bulk_slots as usize * bulk_slot_bytes as usize)?;
        // Descriptors and bulk requests name offsets as u32.
        if u32::try_from(bytes).is_err() {
            return None;
        }
        Some(Layout {
            slots,
            frame_bytes,
            request_ring,
            completion_ring,
            request_frames,
            completion_frames,
            bulk_area,
            bulk_slots,
            bulk_slot_bytes,
            bytes,
        })
    }

    /// Where bulk slot `slot` starts, if it exists.
    pub fn bulk_slot(&self, slot: u32) -> Option<usize> {
        (slot < self.bulk_slots).then(|| self.bulk_area + slot as usize * self.bulk_slot_bytes as usize)
    }

    /// The frame of request slot `index`.
    pub fn request_frame(&self, index: u32) -> usize {
        self.request_frames + (index & (self.slots - 1)) as usize * self.frame_bytes as usize
    }

    pub fn completion_frame(&self, index: u32) -> usize {
        self.completion_frames + (index & (self.slots - 1)) as usize * self.frame_bytes as usize
    }
}

/// Why a descriptor from the peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// `offset + len` outside the frame pool the ring may name.
    OutOfBounds,
    /// `offset` not at the start of a frame.
    Misaligned,
    /// Longer than a frame, or shorter than a message header.
    BadLength,
    /// `head - tail` larger than the ring: the peer wrote garbage into its index.
    BadIndex,
    /// A bulk request that is not a well-formed put or get of a bulk slot that exists.
    BadBulk,
}

impl Reject {
    pub const ALL: [Reject; 5] =
        [Reject::OutOfBounds, Reject::Misaligned, Reject::BadLength, Reject::BadIndex, Reject::BadBulk];

    pub fn name(self) -> &'static str {
        match self {
            Reject::OutOfBounds => "out_of_bounds",
            Reject::Misaligned => "misaligned",
            Reject::BadLength => "bad_length",
            Reject::BadIndex => "bad_index",
            Reject::BadBulk => "bad_bulk",
        }
    }
}

/// Checks a descriptor against the pool `pool_start..pool_start + slots * frame_bytes`:
/// the only part of the region that ring may name. Pure arithmetic, no memory touched.
pub fn check_descriptor(
    layout: &Layout,
    pool_start: usize,
    offset: u32,
    len: u32,
    len_min: usize,
) -> Result<(), Reject> {
    let offset = offset as usize;
    let len = len as usize;
    let pool_end = pool_start + layout.slots as usize * layout.frame_bytes as usize;
    if offset < pool_start || offset >= pool_end {
        return Err(Reject::OutOfBounds);
    }
    if !(offset - pool_start).is_multiple_of(layout.frame_bytes as usize) {
        return Err(Reject::Misaligned);
    }
    if len < len_min || len > layout.frame_bytes as usize {
        return Err(Reject::BadLength);
    }
    // Within one frame of the pool, so within the region.
    debug_assert!(offset + len <= pool_end);
    Ok(())
}

/// The address range of one shared mapping, unmapped when its last holder drops it: the
/// region, and on the client any [`SlotBytes`] still read in place.
struct Mapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: a `Mapping` only owns the address range (it unmaps it once, on drop) and gives
// no access to the bytes by itself; every access goes through `Region` or `SlotBytes`,
// whose own contracts say why it is sound. Holding or dropping it from any thread is fine.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: `&Mapping` exposes nothing but the address.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping `Region::map` made, unmapped once
        // here, when no `Region` or `SlotBytes` (each holds the `Arc`) can reach it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// One mapping of a region. The node maps every client's, a client only its own.
pub struct Region {
    mapping: std::sync::Arc<Mapping>,
    /// `mapping.base`, kept here so that no access goes through the `Arc`.
    base: *mut u8,
    len: usize,
    layout: Layout,
}

// SAFETY: the mapping is owned by this value (and by the client's `SlotBytes`, which only
// read slots the node answered) and every access goes through its methods, which take
// `&mut self` for writes; moving it to another thread moves that ownership.
unsafe impl Send for Region {}

impl Region {
    /// Maps `len` bytes of `fd` shared, read and write.
    pub fn map(fd: BorrowedFd<'_>, len: usize, layout: Layout) -> std::io::Result<Region> {
        if len < layout.bytes {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "region smaller than its layout"));
        }
        // SAFETY: a fresh shared mapping of an fd we hold open; the kernel picks the address,
        // so no existing mapping is replaced. The result is checked against MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = base.cast::<u8>();
        Ok(Region { mapping: std::sync::Arc::new(Mapping { base, len }), base, len, layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the header a client checks before trusting the layout (node side, once).
    pub fn write_header(&mut self) {
        let words = header_words(&self.layout);
        for (index, word) in words.iter().enumerate() {
            // SAFETY: 80 bytes at the region's start, inside the first page of a mapping of at
            // least `layout.bytes`; u64-aligned since the mapping is page-aligned.
            unsafe { self.base.cast::<u64>().add(index).write_volatile(word.to_le()) };
        }
    }

    /// Whether the header says what `layout` says (client side, after mapping).
    pub fn header_matches(&self) -> bool {
        let expected = header_words(&self.layout);
        expected.iter().enumerate().all(|(index, word)| {
            // SAFETY: as in `write_header`: inside the first page, aligned.
            let found = unsafe { self.base.cast::<u64>().add(index).read_volatile() };
            u64::from_le(found) == *word
        })
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= self.len && offset.is_multiple_of(4));
        // SAFETY: in bounds and 4-aligned (asserted); AtomicU32 has u32's layout and the
        // word is only ever accessed atomically by both processes.
        unsafe { &*self.base.add(offset).cast::<AtomicU32>() }
    }

    pub fn request_ring(&self) -> Ring<'_> {
        Ring { region: self, at: self.layout.request_ring }
    }

    pub fn completion_ring(&self) -> Ring<'_> {
        Ring { region: self, at: self.layout.completion_ring }
    }

    /// Copies `bytes` to `offset`. The caller owns that frame by the ring protocol.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset.checked_add(bytes.len()).is_some_and(|end| end <= self.len), "write outside the region");
        // SAFETY: in bounds (asserted); `bytes` is local memory, so no overlap. The region is
        // shared memory written through raw pointers only (no `&mut` to it exists), and the
        // peer does not read this frame until its descriptor is published with Release.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(offset), bytes.len()) };
    }

    /// Copies `out.len()` bytes from `offset`: bytes a peer wrote are taken out of shared
    /// memory before anyone parses them, so the peer cannot change them under the parser.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(offset.checked_add(out.len()).is_some_and(|end| end <= self.len), "read outside the region");
        // SAFETY: in bounds (asserted); `out` is local memory. A misbehaving peer writing
        // the same bytes meanwhile only garbles its own message, which is checked after.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(offset), out.as_mut_ptr(), out.len()) };
    }

    /// Replaces `out`'s contents with the `len` bytes at `offset`, without zeroing `out`
    /// first: a 4 MiB chunk taken out of a bulk slot is copied once, not zeroed and copied.
    pub fn read_to_vec(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "read outside the region");
        out.clear();
        out.reserve(len);
        // SAFETY: the source is in bounds (asserted) and the destination is `out`'s spare
        // capacity, at least `len` bytes after `reserve`, local memory that cannot overlap
        // the mapping. After the copy the first `len` bytes are initialized, so `set_len` is
        // sound. A peer writing the source meanwhile only garbles this chunk's bytes (any
        // byte value is valid), which `get` and the cluster client check against its hash.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(offset), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        debug_assert_eq!(out.len(), len);
    }

    /// Borrows `len` bytes at `offset` for the store to write a chunk from or read one into
    /// in place (node side: a bulk slot the client handed over with a request).
    pub fn bulk_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "bulk slot outside the region");
        assert!(offset >= self.layout.bulk_area, "only the bulk area is lent to the store");
        // SAFETY: in bounds of the mapping, which outlives the borrow (tied to `&mut self`, so
        // no other borrow of this region exists in this process meanwhile: the node never
        // takes `SlotBytes`, which only the client's `slot_bytes` makes). The client
        // process owns these bytes until the node answers and promised not to touch them;
        // one that does anyway races only its own chunk's bytes, where any value is valid,
        // and the store's checksum (taken as it writes) then reports that chunk corrupt.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(offset), len) }
    }

    /// The `len` bytes of the bulk area at `offset`, to read in place (client side). Only
    /// for a bulk slot whose one request the node answered, sent once: the node serves a
    /// client's bulk requests in ring order, so every earlier request naming the slot
    /// (a retransmission of an older get included) was served before that answer, and none
    /// is left to write the slot again. The caller then names the slot in no request for
    /// as long as the result lives.
    pub fn slot_bytes(&self, offset: usize, len: usize) -> SlotBytes {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "bulk slot outside the region");
        assert!(offset >= self.layout.bulk_area, "only the bulk area is read in place");
        SlotBytes { mapping: self.mapping.clone(), offset, len }
    }

    /// Borrows `len` bytes at `offset` (client side: a completion the node published).
    pub fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "slice outside the region");
        // SAFETY: in bounds (asserted). The node wrote this completion frame before its
        // Release on `head` (which the caller's Acquire paired with) and does not write it
        // again until the caller moves `tail` past it, after this borrow ends.
        unsafe { std::slice::from_raw_parts(self.base.add(offset), len) }
    }
}

/// A bulk get's bytes read where the node put them, in the client's bulk slot (client
/// side), instead of copied out: the copy was a quarter of a shared-memory get's cost to
/// the client. Keeps the mapping alive, so a reconnect that maps a new region does not
/// unmap it under a reader. The caller keeps the slot itself (names it in no request) for
/// as long as this lives; see [`Region::slot_bytes`].
pub struct SlotBytes {
    mapping: std::sync::Arc<Mapping>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for SlotBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `offset + len` is inside the mapping (asserted by `slot_bytes`), which the
        // `Arc` keeps mapped for as long as the borrow (tied to `&self`) lasts. The node
        // wrote these bytes before it published the answer with Release, paired with the
        // client's Acquire before `slot_bytes` was called. By `slot_bytes`' contract the
        // node has no request naming this slot left to serve, and the client names it in
        // none while this value lives, so the node does not write these bytes meanwhile;
        // a node that broke that would only change this chunk's bytes (any value is a valid
        // `u8`) in this client's own region.
        unsafe { std::slice::from_raw_parts(self.mapping.base.add(self.offset), self.len) }
    }
}

impl std::fmt::Debug for SlotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotBytes").field("offset", &self.offset).field("len", &self.len).finish()
    }
}

/// One ring of a region.
pub struct Ring<'r> {
    region: &'r Region,
    at: usize,
}

impl Ring<'_> {
    fn head_word(&self) -> &AtomicU32 {
        self.region.word(self.at + HEAD)
    }

    fn tail_word(&self) -> &AtomicU32 {
        self.region.word(self.at + TAIL)
    }

    fn waiting_word(&self) -> &AtomicU32 {
        self.region.word(self.at + WAITING)
    }

    /// Producer: the index the consumer has released up to.
    pub fn consumer_tail(&self) -> u32 {
        // Ordering: Acquire pairs with the consumer's Release in `release`, so its reads of
        // the frames before that index are done before the producer reuses them.
        self.tail_word().load(Ordering::Acquire)
    }

    /// Consumer: the index the producer has published up to.
    pub fn producer_head(&self) -> u32 {
        // Ordering: Acquire pairs with the producer's Release in `publish`: descriptors and
        // frames written before it are visible.
        self.head_word().load(Ordering::Acquire)
    }

    /// The producer's own head (only it writes the word).
    pub fn own_head(&self) -> u32 {
        // Ordering: Relaxed: this side is the only writer, so it reads its own last store.
        self.head_word().load(Ordering::Relaxed)
    }

    /// The consumer's own tail (only it writes the word).
    pub fn own_tail(&self) -> u32 {
        // Ordering: Relaxed: this side is the only writer.
        self.tail_word().load(Ordering::Relaxed)
    }

    /// Producer: writes the descriptor of slot `index` (not yet published).
    pub fn set_descriptor(&self, index: u32, offset: u32, len: u32) {
        let slot = self.at + DESCRIPTORS + (index & (self.region.layout.slots - 1)) as usize * DESCRIPTOR_BYTES;
        // Ordering: Relaxed: published by the Release store of `publish` that follows.
        self.region.word(slot).store(offset, Ordering::Relaxed);
        // Ordering: as above.
        self.region.word(slot + 4).store(len, Ordering::Relaxed);
    }

    /// Consumer: the descriptor of slot `index` as the peer wrote it (untrusted).
    pub fn descriptor(&self, index: u32) -> (u32, u32) {
        let slot = self.at + DESCRIPTORS + (index & (self.region.layout.slots - 1)) as usize * DESCRIPTOR_BYTES;
        // Ordering: Relaxed: made visible by the Acquire load of `producer_head` before.
        let offset = self.region.word(slot).load(Ordering::Relaxed);
        // Ordering: as above.
        (offset, self.region.word(slot + 4).load(Ordering::Relaxed))
    }

    /// Producer: makes every descriptor before `head` visible to the consumer.
    pub fn publish(&self, head: u32) {
        // Ordering: Release pairs with the consumer's Acquire in `producer_head`.
        self.head_word().store(head, Ordering::Release);
    }

    /// Consumer: gives every slot before `tail` back to the producer.
    pub fn release(&self, tail: u32) {
        // Ordering: Release pairs with the producer's Acquire in `consumer_tail`: our reads
        // of those frames happen before the producer overwrites them.
        self.tail_word().store(tail, Ordering::Release);
    }

    /// Producer, after `publish`: whether the consumer sleeps and needs its doorbell.
    pub fn consumer_sleeps(&self) -> bool {
        // Ordering: SeqCst fence pairs with the one in `prepare_sleep`: either the consumer
        // sees our new head after setting its flag, or we see its flag here (Dekker).
        fence(Ordering::SeqCst);
        // Ordering: Relaxed: ordered by the fence above.
        self.waiting_word().load(Ordering::Relaxed) != 0
    }

    /// Consumer, before sleeping: raises the flag and says whether anything is queued
    /// (then it must not sleep).
    pub fn prepare_sleep(&self) -> bool {
        // Ordering: Relaxed store, ordered before the head load by the SeqCst fence.
        self.waiting_word().store(1, Ordering::Relaxed);
        // Ordering: SeqCst fence pairs with the one in `consumer_sleeps`.
        fence(Ordering::SeqCst);
        self.producer_head() != self.own_tail()
    }

    /// Consumer, awake again.
    pub fn end_sleep(&self) {
        // Ordering: Relaxed: at worst the producer rings once more than needed.
        self.waiting_word().store(0, Ordering::Relaxed);
    }

    /// Test-only scribbling: overwrites the head word with anything.
    pub fn scribble_head(&self, value: u32) {
        // Ordering: Relaxed: a deliberately broken producer.
        self.head_word().store(value, Ordering::Relaxed);
    }
}

/// The region header's words for `l`: what the node writes and a client checks.
fn header_words(l: &Layout) -> [u64; 10] {
    [
        MAGIC,
        u64::from(VERSION),
        u64::from(l.slots),
        u64::from(l.frame_bytes),
        l.request_ring as u64,
        l.completion_ring as u64,
        l.request_frames as u64,
        l.completion_frames as u64,
        l.bulk_area as u64,
        (u64::from(l.bulk_slots) << 32) | u64::from(l.bulk_slot_bytes),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_outside_the_pool_or_off_a_frame_are_refused() {
        let layout = Layout::new(8, 4096, 0, 0).unwrap();
        let pool = layout.request_frames;
        assert_eq!(check_descriptor(&layout, pool, pool as u32, 80, 80), Ok(()));
        assert_eq!(check_descriptor(&layout, pool, (pool + 7 * 4096) as u32, 4096, 80), Ok(()));
        assert_eq!(check_descriptor(&layout, pool, (pool + 8 * 4096) as u32, 80, 80), Err(Reject::OutOfBounds));
        assert_eq!(check_descriptor(&layout, pool, 0, 80, 80), Err(Reject::OutOfBounds));
        assert_eq!(check_descriptor(&layout, pool, u32::MAX, 80, 80), Err(Reject::OutOfBounds));
        assert_eq!(check_descriptor(&layout, pool, (pool + 1) as u32, 80, 80), Err(Reject::Misaligned));
        assert_eq!(check_descriptor(&layout, pool, pool as u32, 4097, 80), Err(Reject::BadLength));
        assert_eq!(check_descriptor(&layout, pool, pool as u32, 79, 80), Err(Reject::BadLength));
    }

    #[test]
    fn layout_keeps_rings_and_pools_apart() {
        let layout = Layout::new(2048, 4096, 2, 8192).unwrap();
        assert!(layout.request_ring + DESCRIPTORS + 2048 * 8 <= layout.completion_ring);
        assert!(layout.completion_ring + DESCRIPTORS + 2048 * 8 <= layout.request_frames);
        assert_eq!(layout.completion_frames, layout.request_frames + 2048 * 4096);
        assert_eq!(layout.bulk_area, layout.completion_frames + 2048 * 4096);
        assert_eq!(layout.bulk_slot(1), Some(layout.bulk_area + 8192));
        assert_eq!(layout.bulk_slot(2), None);
        assert_eq!(layout.bytes, layout.bulk_area + 2 * 8192);
        assert!(Layout::new(3, 4096, 0, 0).is_none());
        assert!(Layout::new(8, 1000, 0, 0).is_none());
        assert!(Layout::new(8, 4096, BULK_SLOTS_MAX + 1, 4096).is_none());
        assert!(Layout::new(8, 4096, 1, 4097).is_none());
        assert!(Layout::new(8, 4096, 4, 1 << 30).is_none(), "offsets must fit u32");
    }
}
