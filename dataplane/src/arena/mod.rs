//! The buffer arena: one memory region carved into fixed-size frames.
//!
//! A frame's identity is its index (its byte offset is `index * frame_size`), so the same
//! number can name a frame in an AF_XDP descriptor, a DPDK mbuf or a store entry. A
//! [`FrameId`] is a move-only token: whoever holds it owns the frame's bytes, and handing
//! it on hands on the bytes without copying them. The free list lives in caller-provided
//! memory, so the arena never allocates.

#[cfg(feature = "std")]
#[allow(unsafe_code)] // mmap/munmap of the (hugepage) region
pub mod memory;

/// Bytes reserved at the start of every frame for lower-layer headers (Ethernet, VLAN,
/// IPv4/IPv6, UDP) that kernel-bypass backends write in front of a Beeline datagram.
pub const HEADROOM_BYTES: usize = 128;

/// Owner token for one frame. Not `Clone`/`Copy`: exactly one owner at a time.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameId(u32);

impl FrameId {
    /// The frame's index in the arena.
    pub fn index(&self) -> u32 {
        self.0
    }
}

/// Why an arena could not be built from the memory given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaError {
    /// `frame_size` must be a power of two between 512 and 65536 bytes.
    BadFrameSize,
    /// The free-list or ownership slices are too small for the number of frames.
    BookkeepingTooSmall,
    /// The region holds no frames at all.
    Empty,
}

/// A region of frames plus its free list. Single-threaded: the poll loop that owns it is
/// the only one that allocates and frees.
pub struct Arena<'m> {
    memory: &'m mut [u8],
    frame_size: usize,
    frame_count: u32,
    free: &'m mut [u32],
    free_len: usize,
    /// One bit per frame, set while the frame is allocated; catches double frees.
    allocated: &'m mut [u64],
    /// Where a datagram starts in a frame: [`HEADROOM_BYTES`] unless the backend keeps
    /// its own bookkeeping at the front of each frame (a DPDK mbuf header).
    headroom: usize,
}

impl<'m> Arena<'m> {
    /// Builds an arena over `memory`. `free` needs one slot per frame and `allocated` one
    /// bit per frame (`frames.div_ceil(64)` words).
    pub fn new(
        memory: &'m mut [u8],
        frame_size: usize,
        free: &'m mut [u32],
        allocated: &'m mut [u64],
    ) -> Result<Self, ArenaError> {
        if !frame_size.is_power_of_two() || !(512..=65536).contains(&frame_size) {
            return Err(ArenaError::BadFrameSize);
        }
        let frame_count = memory.len() / frame_size;
        if frame_count == 0 {
            return Err(ArenaError::Empty);
        }
        if free.len() < frame_count || allocated.len() * 64 < frame_count {
            return Err(ArenaError::BookkeepingTooSmall);
        }
        let frame_count = u32::try_from(frame_count).map_err(|_| ArenaError::BookkeepingTooSmall)?;
        // Hand out low frames first: they are the ones already touched and cached.
        for (slot, index) in free.iter_mut().zip((0..frame_count).rev()) {
            *slot = index;
        }
        allocated.iter_mut().for_each(|word| *word = 0);
        Ok(Self {
            memory,
            frame_size,
            frame_count,
            free,
            free_len: frame_count as usize,
            allocated,
            headroom: HEADROOM_BYTES,
        })
    }

    /// Moves where datagrams start in every frame. A backend whose frames begin with its
    /// own metadata (a DPDK mempool element: object header, mbuf, mbuf headroom) sets this
    /// once, before any frame is handed out; the node never writes in front of it.
    pub fn set_headroom(&mut self, headroom: usize) {
        assert_eq!(self.free_len, self.frame_count as usize, "headroom set after frames were handed out");
        assert!(headroom >= HEADROOM_BYTES && headroom + 512 <= self.frame_size, "headroom {headroom} leaves no room");
        self.headroom = headroom;
    }

    /// Where a datagram starts in a frame; the bytes in front of it are lower-layer headers
    /// and backend metadata.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    pub fn free_frames(&self) -> usize {
        self.free_len
    }

    pub fn allocated_frames(&self) -> usize {
        self.frame_count as usize - self.free_len
    }

    /// Takes a frame off the free list, or `None` when every frame is in use.
    pub fn alloc(&mut self) -> Option<FrameId> {
        if self.free_len == 0 {
            return None;
        }
        self.free_len -= 1;
        let index = self.free[self.free_len];
        let (word, bit) = (index as usize / 64, index % 64);
        assert!(self.allocated[word] & (1 << bit) == 0, "frame {index} on the free list twice");
        self.allocated[word] |= 1 << bit;
        Some(FrameId(index))
    }

    /// Returns a frame to the free list.
    pub fn free(&mut self, frame: FrameId) {
        let index = frame.0;
        let (word, bit) = (index as usize / 64, index % 64);
        assert!(self.allocated[word] & (1 << bit) != 0, "frame {index} freed twice");
        self.allocated[word] &= !(1 << bit);
        assert!(self.free_len < self.frame_count as usize);
        self.free[self.free_len] = index;
        self.free_len += 1;
    }

    /// The whole frame, headroom included.
    pub fn frame(&self, frame: &FrameId) -> &[u8] {
        let start = frame.0 as usize * self.frame_size;
        &self.memory[start..start + self.frame_size]
    }

    pub fn frame_mut(&mut self, frame: &FrameId) -> &mut [u8] {
        let start = frame.0 as usize * self.frame_size;
        &mut self.memory[start..start + self.frame_size]
    }

    /// The same byte range of several frames at once, in the order given (a GET window's
    /// payload areas, filled by one vectored read). `N` bounds how many.
    ///
    /// # Panics
    ///
    /// If more than `N` frames are given, one twice, or the range leaves the frame:
    /// contracts of the caller, which holds each `FrameId` once.
    pub fn frames_mut<const N: usize>(
        &mut self,
        frames: &[FrameId],
        range: core::ops::Range<usize>,
    ) -> heapless::Vec<&mut [u8], N> {
        assert!(frames.len() <= N && range.start <= range.end && range.end <= self.frame_size);
        // One pass over the region in frame order hands out each frame's slice once.
        let mut order: heapless::Vec<(u32, usize), N> = heapless::Vec::new();
        for (position, frame) in frames.iter().enumerate() {
            let pushed = order.push((frame.0, position));
            assert!(pushed.is_ok(), "checked against N");
        }
        order.sort_unstable();
        assert!(order.windows(2).all(|pair| pair[0].0 != pair[1].0), "a frame given twice");
        let mut slots: [Option<&mut [u8]>; N] = core::array::from_fn(|_| None);
        let mut chunks = self.memory.chunks_exact_mut(self.frame_size);
        let mut next = 0u32;
        for (index, position) in order {
            let frame = chunks.nth((index - next) as usize).expect("a FrameId names a frame of this arena");
            next = index + 1;
            slots[position] = Some(&mut frame[range.clone()]);
        }
        slots.into_iter().take(frames.len()).map(|slot| slot.expect("every position was filled")).collect()
    }

    /// One frame to read and another to write at once (a request and its reply).
    pub fn frame_pair(&mut self, read: &FrameId, write: &FrameId) -> (&[u8], &mut [u8]) {
        assert_ne!(read.0, write.0, "a frame cannot be read and written as two frames");
        let size = self.frame_size;
        let (read_start, write_start) = (read.0 as usize * size, write.0 as usize * size);
        if read_start < write_start {
            let (low, high) = self.memory.split_at_mut(write_start);
            (&low[read_start..read_start + size], &mut high[..size])
        } else {
            let (low, high) = self.memory.split_at_mut(read_start);
            (&high[..size], &mut low[write_start..write_start + size])
        }
    }

    /// Byte offset of a frame in the region (the AF_XDP UMEM address).
    pub fn offset_of(&self, frame: &FrameId) -> u64 {
        u64::from(frame.0) * self.frame_size as u64
    }

    /// Re-creates the token for the frame at `offset`, for backends whose rings hand frames
    /// back by address (an AF_XDP completion ring, a DPDK mbuf). Returns `None` for an
    /// offset that does not name a currently allocated frame.
    pub fn reclaim_by_offset(&mut self, offset: u64) -> Option<FrameId> {
        let index = offset / self.frame_size as u64;
        if index >= u64::from(self.frame_count) {
            return None;
        }
        let index = index as u32;
        let (word, bit) = (index as usize / 64, index % 64);
        (self.allocated[word] & (1 << bit) != 0).then_some(FrameId(index))
    }

    /// Raw base pointer of the region, for registering it with a NIC (UMEM, mempool).
    pub fn region_ptr(&mut self) -> *mut u8 {
        self.memory.as_mut_ptr()
    }

    pub fn region_len(&self) -> usize {
        self.memory.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames handed out in any order come back in that order, each the asked range of
    /// its own frame; one frame given twice is refused.
    #[test]
    fn frames_mut_hands_out_each_frame_once_in_the_order_given() {
        let mut mem = [0u8; 8 * 512];
        let mut free = [0u32; 8];
        let mut bits = [0u64; 1];
        let mut arena = Arena::new(&mut mem, 512, &mut free, &mut bits).unwrap();
        let frames: std::vec::Vec<FrameId> = (0..6).map(|_| arena.alloc().unwrap()).collect();
        let order = [frames[4].0, frames[0].0, frames[5].0, frames[2].0];
        let picked = [FrameId(order[0]), FrameId(order[1]), FrameId(order[2]), FrameId(order[3])];
        {
            let mut slices = arena.frames_mut::<8>(&picked, 100..110);
            for (position, slice) in slices.iter_mut().enumerate() {
                assert_eq!(slice.len(), 10);
                slice.fill(position as u8 + 1);
            }
        }
        for (position, frame) in picked.iter().enumerate() {
            let bytes = arena.frame(frame);
            assert!(bytes[100..110].iter().all(|byte| *byte == position as u8 + 1));
            assert!(bytes[..100].iter().chain(&bytes[110..]).all(|byte| *byte == 0));
        }
        let twice = [FrameId(order[0]), FrameId(order[0])];
        let refused = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
            let _ = arena.frames_mut::<8>(&twice, 0..1);
        }));
        assert!(refused.is_err(), "a frame given twice must be refused");
        for frame in frames {
            arena.free(frame);
        }
    }

    #[test]
    fn frames_move_without_copy_and_double_free_is_caught() {
        let mut mem = [0u8; 4096];
        let mut free = [0u32; 8];
        let mut bits = [0u64; 1];
        let mut arena = Arena::new(&mut mem, 1024, &mut free, &mut bits).unwrap();
        assert_eq!(arena.frame_count(), 4);
        let a = arena.alloc().unwrap();
        arena.frame_mut(&a)[0] = 42;
        let offset = arena.offset_of(&a);
        let again = arena.reclaim_by_offset(offset).unwrap();
        assert_eq!(arena.frame(&again)[0], 42);
        arena.free(again);
        assert!(arena.reclaim_by_offset(offset).is_none());
        assert_eq!(arena.free_frames(), 4);
        // `a` named the frame that went back through the reclaimed token.
        let _ = a;
    }

    #[test]
    fn exhaustion_returns_none() {
        let mut mem = [0u8; 2048];
        let mut free = [0u32; 2];
        let mut bits = [0u64; 1];
        let mut arena = Arena::new(&mut mem, 1024, &mut free, &mut bits).unwrap();
        let a = arena.alloc().unwrap();
        let b = arena.alloc().unwrap();
        assert!(arena.alloc().is_none());
        arena.free(a);
        arena.free(b);
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn double_free_panics() {
        let mut mem = [0u8; 2048];
        let mut free = [0u32; 2];
        let mut bits = [0u64; 1];
        let mut arena = Arena::new(&mut mem, 1024, &mut free, &mut bits).unwrap();
        let a = arena.alloc().unwrap();
        let forged = FrameId(a.index());
        arena.free(a);
        arena.free(forged);
    }
}
