//! Direct writes (`direct_writes`): a large payload write goes to the disk with `O_DIRECT`,
//! past the page cache.
//!
//! Why: a buffered write copies every byte into page-cache pages, and on a VM whose freed
//! memory goes back to its host those pages are fresh memory each time, which the host
//! faults in one by one: the node's `pwrite`s were 37 % of all CPU samples of a `cp` into
//! `beeline mount`, and without them the copy ran as fast as one between two directories
//! (docs/benchmarks.md, mount run 8). A direct write is the disk's DMA instead.
//!
//! How, without changing the record format: direct I/O needs the file offset, the length
//! and the memory aligned to the device's block, and a payload starts 64 bytes into a
//! record that itself starts at any multiple of 64. So only the whole aligned blocks inside
//! one write go direct, copied first into an aligned bounce buffer allocated at open (warm
//! memory, reused, a fraction of a page-cache copy's cost); the partial blocks at either end
//! go through the page cache as before. A block a direct write covers therefore holds only
//! bytes of that write: never another record's, never a byte written by a buffered write of
//! the same put (each byte range of a put is written once), so the page cache and the disk
//! never disagree about it. Durability is unchanged: the group commit's `fdatasync` covers
//! the file whichever descriptor wrote it, and a put is acknowledged only after it.

use std::os::unix::fs::OpenOptionsExt;

use super::*;

/// Direct I/O alignment of file offsets, lengths and memory: a page, a multiple of every
/// logical block size Linux supports.
pub(super) const DIRECT_ALIGN_BYTES: u64 = 4096;
/// Writes shorter than this go through the page cache: a small write would be mostly
/// partial blocks, and a direct write waits for the device.
pub(super) const DIRECT_WRITE_MIN_BYTES: u64 = 128 << 10;
/// The bounce buffer, the most one direct `pwrite` moves.
const DIRECT_PIECE_BYTES: usize = 1 << 20;
const _: () = assert!((DIRECT_PIECE_BYTES as u64).is_multiple_of(DIRECT_ALIGN_BYTES));

/// Opens `path` for direct writes.
pub(super) fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path)
}

/// The bounce buffer of direct writes, allocated once when the store opens.
pub(super) struct DirectWriter {
    /// [`DIRECT_PIECE_BYTES`] plus room to start them at an aligned address.
    bounce: Vec<u8>,
}

impl DirectWriter {
    pub(super) fn new() -> Self {
        Self { bounce: vec![0u8; DIRECT_PIECE_BYTES + DIRECT_ALIGN_BYTES as usize] }
    }

    fn aligned_window(&mut self) -> &mut [u8] {
        let skew = self.bounce.as_ptr().align_offset(DIRECT_ALIGN_BYTES as usize);
        assert!(skew < DIRECT_ALIGN_BYTES as usize, "a byte buffer can always be aligned within one block");
        &mut self.bounce[skew..skew + DIRECT_PIECE_BYTES]
    }

    /// Writes `bufs`, one after the other, to `segment` from file offset `offset`: the
    /// whole aligned blocks with direct I/O, the rest through the page cache (all of it
    /// for a write under [`DIRECT_WRITE_MIN_BYTES`], or when the segment takes no direct
    /// I/O).
    pub(super) fn write(&mut self, dir: &Path, segment: &SegmentFile, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let len: u64 = bufs.iter().map(|buf| buf.len() as u64).sum();
        let end = offset + len;
        let first = offset.next_multiple_of(DIRECT_ALIGN_BYTES);
        let last = end / DIRECT_ALIGN_BYTES * DIRECT_ALIGN_BYTES;
        let direct = if len >= DIRECT_WRITE_MIN_BYTES && first < last { segment.direct(dir) } else { None };
        let Some(direct) = direct else {
            return write_all_vectored_at(&segment.file, bufs, offset);
        };
        write_part_buffered(&segment.file, bufs, 0, first - offset, offset)?;
        write_part_buffered(&segment.file, bufs, last - offset, len, last)?;
        let mut at = first;
        // Bounded: every pass writes a piece of at least one block, or fails.
        while at < last {
            let piece = (last - at).min(DIRECT_PIECE_BYTES as u64) as usize;
            let window = &mut self.aligned_window()[..piece];
            gather(bufs, at - offset, window);
            debug_assert!(at.is_multiple_of(DIRECT_ALIGN_BYTES) && (piece as u64).is_multiple_of(DIRECT_ALIGN_BYTES));
            match direct.write_all_at(window, at) {
                Ok(()) => {}
                // A file system that opened the file for direct I/O but refuses this
                // write's alignment: the page cache takes it as it took everything before.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => segment.file.write_all_at(window, at)?,
                Err(error) => return Err(error),
            }
            at += piece as u64;
        }
        Ok(())
    }
}

/// Copies bytes `from..from + out.len()` of the concatenation of `bufs` into `out`.
fn gather(bufs: &[&[u8]], from: u64, out: &mut [u8]) {
    let (mut skip, mut filled) = (from as usize, 0usize);
    for buf in bufs {
        if filled == out.len() {
            break;
        }
        if skip >= buf.len() {
            skip -= buf.len();
            continue;
        }
        let take = (buf.len() - skip).min(out.len() - filled);
        out[filled..filled + take].copy_from_slice(&buf[skip..skip + take]);
        filled += take;
        skip = 0;
    }
    assert_eq!(filled, out.len(), "the range gathered lies within the buffers");
}

/// Writes bytes `from..to` of the concatenation of `bufs` (less than a block) through the
/// page cache at file offset `at`.
fn write_part_buffered(file: &File, bufs: &[&[u8]], from: u64, to: u64, at: u64) -> io::Result<()> {
    assert!(from <= to && to - from < DIRECT_ALIGN_BYTES, "a partial block is shorter than a block");
    if from == to {
        return Ok(());
    }
    let mut part = [0u8; DIRECT_ALIGN_BYTES as usize];
    let part = &mut part[..(to - from) as usize];
    gather(bufs, from, part);
    file.write_all_at(part, at)
}

#[cfg(test)]
mod tests {
    use super::gather;

    #[test]
    fn gather_copies_any_range_across_buffer_boundaries() {
        let whole: std::vec::Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let bufs: [&[u8]; 4] = [&whole[..1], &whole[1..400], &[], &whole[400..]];
        for (from, len) in [(0, 1000), (0, 1), (1, 399), (399, 2), (400, 600), (999, 1), (5, 0)] {
            let mut out = std::vec![0u8; len];
            gather(&bufs, from as u64, &mut out);
            assert_eq!(out, whole[from..from + len], "{from}+{len}");
        }
    }
}
