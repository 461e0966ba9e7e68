//! Direct writes: where a large payload's record goes so that the payload starts on a
//! page, and the `O_DIRECT` write of its whole pages from the caller's buffer (see
//! [`DiskStoreConfig::direct_writes`]).

use super::*;

/// Direct-written payloads start at a multiple of this (at least the filesystem's direct
/// I/O alignment), and their direct part is a multiple of it: a page then never holds both
/// bytes written through the page cache (a header, the payload's tail) and bytes written
/// around it, which would make the kernel write back and re-read that page.
pub(super) const DIRECT_PAGE_BYTES: u64 = 4096;
/// Most `pwrite` calls one direct write makes (a call interrupted by a signal is retried).
const DIRECT_WRITE_CALLS_MAX: u32 = 64;

impl DiskStore {
    /// Where a `len`-byte payload should start for a direct write, if it will get one.
    pub(super) fn payload_alignment(&self, len: u32) -> Option<u64> {
        let direct = self.direct?;
        (len >= DIRECT_WRITE_BYTES_MIN).then(|| direct.offset_bytes.max(DIRECT_PAGE_BYTES))
    }

    /// Writes the longest prefix of `data` that direct I/O takes at `file_offset` of
    /// `segment` with `O_DIRECT`; returns its length, 0 when none (the buffer or the offset
    /// is not aligned, the payload is short, or direct writes are off). The caller writes
    /// the rest through the page cache. A filesystem that refuses direct I/O after all
    /// turns direct writes off for good.
    pub(super) fn write_direct_prefix(&mut self, segment: u32, file_offset: u64, data: &[u8]) -> io::Result<usize> {
        let Some(direct) = self.direct else { return Ok(0) };
        let unit = direct.offset_bytes.max(DIRECT_PAGE_BYTES);
        let aligned =
            file_offset.is_multiple_of(unit) && (data.as_ptr() as usize as u64).is_multiple_of(direct.memory_bytes);
        if !aligned || data.len() < DIRECT_WRITE_BYTES_MIN as usize {
            return Ok(0);
        }
        let len = (data.len() as u64 / unit * unit) as usize;
        assert!(self.segments.contains_key(&segment), "a reservation's segment exists");
        if self.direct_file.as_ref().is_none_or(|(id, _)| *id != segment) {
            self.direct_file = None;
            match open_direct(&segment_path(&self.dir, segment)) {
                Ok(file) => self.direct_file = Some((segment, file)),
                Err(_) => {
                    self.direct = None;
                    return Ok(0);
                }
            }
        }
        let (_, file) = self.direct_file.as_ref().expect("opened above");
        let mut done = 0usize;
        for _ in 0..DIRECT_WRITE_CALLS_MAX {
            if done == len {
                break;
            }
            match file.write_at(&data[done..len], file_offset + done as u64) {
                Ok(0) => break,
                Ok(written) => {
                    done += written;
                    if !(written as u64).is_multiple_of(unit) {
                        break; // A short write off the alignment: the rest goes through the cache.
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct = None;
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        self.write_stats.direct_bytes += done as u64;
        Ok(done)
    }
}
