//! Segment files, space allocation and the directory lock: the store's few syscalls
//! that std does not wrap.

use super::*;

pub(super) fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{id:06}{SEGMENT_SUFFIX}"))
}

pub(super) fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() < 6 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id > 0)
}

pub(super) fn create_segment(dir: &Path, id: u32) -> Result<Segment, DiskStoreError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| DiskStoreError::io("creating", &path, source))?;
    let file = Arc::new(SegmentFile { id, file, sync_failed: AtomicBool::new(false) });
    Ok(Segment { file, len_bytes: 0, live_bytes: 0, puts_in_flight: 0, tombstones: 0 })
}

/// Allocates `len_bytes` at `offset`, extending the file, so that a full disk shows up
/// here rather than in a later write.
pub(super) fn allocate(file: &File, offset: u64, len_bytes: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "file offset too large");
        let start = libc::off_t::try_from(offset).map_err(|_| too_large())?;
        let len = libc::off_t::try_from(len_bytes).map_err(|_| too_large())?;
        for _ in 0..FALLOCATE_EINTR_RETRIES {
            // SAFETY: `file` is an open descriptor borrowed for the whole call, and
            // fallocate takes no pointers, so it cannot touch memory owned by Rust.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, start, len) };
            if rc == 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The filesystem cannot preallocate: extend the file instead.
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => break,
                _ => return Err(error),
            }
        }
    }
    let end = offset.checked_add(len_bytes).ok_or_else(|| io::Error::other("file offset overflow"))?;
    if file.metadata()?.len() < end {
        file.set_len(end)?;
    }
    Ok(())
}

/// Takes the exclusive `flock` on `file`, retrying for a second; `false` when another open
/// file description still holds it.
pub(super) fn lock_exclusive(file: &File) -> io::Result<bool> {
    for attempt in 0..LOCK_ATTEMPTS {
        if attempt > 0 {
            thread::sleep(Duration::from_millis(LOCK_RETRY_INTERVAL_MS));
        }
        if try_lock_exclusive(file)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Takes the exclusive `flock` on `file` without waiting; `false` when another open file
/// description holds it.
pub(super) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: `file` is an open descriptor borrowed for the whole call; flock takes no
    // pointers.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(false) } else { Err(error) }
}

pub(super) fn is_no_space(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

pub(super) fn io_store_error(error: &io::Error) -> StoreError {
    if is_no_space(error) { StoreError::DiskFull } else { StoreError::Io }
}

pub(super) fn store_error(error: &DiskStoreError) -> StoreError {
    match error {
        DiskStoreError::DiskFull { .. } => StoreError::DiskFull,
        _ => StoreError::Io,
    }
}

/// Most buffers one `preadv` takes here (Linux allows 1024).
pub(super) const IOVECS_PER_CALL: usize = 256;

/// How far a vectored transfer over a list of buffers has come: the buffer it is in and the
/// bytes of it already done. Shared by the read and the write below.
#[derive(Default)]
struct Cursor {
    buf: usize,
    within: usize,
}

impl Cursor {
    /// Steps over finished buffers (`len_of(i)` is buffer `i`'s length, for `count` of them);
    /// false once all are done.
    fn settle(&mut self, count: usize, len_of: impl Fn(usize) -> usize) -> bool {
        while self.buf < count && len_of(self.buf) == self.within {
            self.buf += 1;
            self.within = 0;
        }
        self.buf < count
    }

    /// Moves over `done` bytes just transferred.
    fn advance(&mut self, mut done: usize, len_of: impl Fn(usize) -> usize) {
        // Bounded: every pass consumes the rest of a buffer or all of `done`.
        while done > 0 {
            let room = len_of(self.buf) - self.within;
            if done < room {
                self.within += done;
                done = 0;
            } else {
                done -= room;
                self.buf += 1;
                self.within = 0;
            }
        }
    }
}

/// What a `preadv`/`pwritev` returned: bytes moved, `None` to retry (interrupted), or the
/// error (`at_zero` when nothing moved: the end of the file, or a write that took nothing).
fn transferred(rc: isize, at_zero: io::ErrorKind) -> Option<io::Result<usize>> {
    match rc {
        rc if rc < 0 => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted { None } else { Some(Err(error)) }
        }
        0 => Some(Err(at_zero.into())),
        rc => Some(Ok(rc as usize)),
    }
}

fn file_offset(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))
}

/// Asks the kernel to start reading `len` bytes of `file` from `offset` into the page cache
/// and returns at once (`posix_fadvise(2)`, `POSIX_FADV_WILLNEED`). Only a hint: the read
/// that follows works without it, so a failure is ignored.
pub(super) fn advise_will_need(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (file_offset(offset), file_offset(len)) else { return };
    // SAFETY: `file` is an open descriptor borrowed for the call; posix_fadvise reads
    // nothing but its integer arguments and touches no memory of this process.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
}

/// Fills every buffer of `bufs`, in order, with the file's bytes from `offset`: one
/// `preadv(2)` per [`IOVECS_PER_CALL`] buffers unless the kernel returns short, where the
/// rest is asked for again. Reaching the end of the file first is `UnexpectedEof`.
pub(super) fn read_exact_vectored_at(file: &File, bufs: &mut [&mut [u8]], offset: u64) -> io::Result<()> {
    let (mut cursor, mut offset) = (Cursor::default(), offset);
    // Bounded: every pass reads at least one byte or returns.
    while cursor.settle(bufs.len(), |index| bufs[index].len()) {
        let mut iovecs = [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; IOVECS_PER_CALL];
        let mut count = 0;
        for (index, slice) in bufs[cursor.buf..].iter_mut().take(IOVECS_PER_CALL).enumerate() {
            let rest = &mut slice[if index == 0 { cursor.within } else { 0 }..];
            iovecs[count] = libc::iovec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() };
            count += 1;
        }
        let start = file_offset(offset)?;
        // SAFETY: `file` is an open descriptor borrowed for the call; the first `count`
        // iovecs point into distinct, live, mutably borrowed slices of `bufs` with their
        // exact remaining lengths, so the kernel writes only memory this call may write.
        let rc = unsafe { libc::preadv(file.as_raw_fd(), iovecs.as_ptr(), count as libc::c_int, start) };
        let Some(read) = transferred(rc, io::ErrorKind::UnexpectedEof) else { continue };
        let read = read?;
        offset += read as u64;
        cursor.advance(read, |index| bufs[index].len());
    }
    Ok(())
}

/// Writes every buffer of `bufs`, in order, to the file from `offset`: one `pwritev(2)` per
/// [`IOVECS_PER_CALL`] buffers unless the kernel writes short, where the rest is written
/// again. Many small writes cost the kernel far more than one large one (per call, and in
/// zeroing the parts of new page-cache folios a write does not cover).
pub(super) fn write_all_vectored_at(file: &File, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
    let (mut cursor, mut offset) = (Cursor::default(), offset);
    // Bounded: every pass writes at least one byte or returns.
    while cursor.settle(bufs.len(), |index| bufs[index].len()) {
        let mut iovecs = [libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }; IOVECS_PER_CALL];
        let mut count = 0;
        for (index, slice) in bufs[cursor.buf..].iter().take(IOVECS_PER_CALL).enumerate() {
            let rest = &slice[if index == 0 { cursor.within } else { 0 }..];
            iovecs[count] = libc::iovec { iov_base: rest.as_ptr().cast_mut().cast(), iov_len: rest.len() };
            count += 1;
        }
        let start = file_offset(offset)?;
        // SAFETY: `file` is an open descriptor borrowed for the call; the first `count`
        // iovecs point into live slices of `bufs` with their exact remaining lengths, which
        // `pwritev` only reads (the `*mut` is the C type's, not a licence to write).
        let rc = unsafe { libc::pwritev(file.as_raw_fd(), iovecs.as_ptr(), count as libc::c_int, start) };
        let Some(written) = transferred(rc, io::ErrorKind::WriteZero) else { continue };
        let written = written?;
        offset += written as u64;
        cursor.advance(written, |index| bufs[index].len());
    }
    Ok(())
}

/// Opens `path` read-only for reads that bring in only what they ask for: read-ahead off
/// on this descriptor (`POSIX_FADV_RANDOM`; the store's own descriptor keeps it).
pub(super) fn open_without_read_ahead(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    // SAFETY: `file` is an open descriptor owned here; posix_fadvise reads nothing but its
    // integer arguments and touches no memory of this process.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    if rc == 0 { Ok(file) } else { Err(io::Error::from_raw_os_error(rc)) }
}

/// Which pages of `len` bytes of `file` from `offset` (a multiple of `page_bytes`) the page
/// cache holds, a byte per page (bit 0 set: cached), by `mincore(2)` on a mapping made for
/// the question, which starts no I/O. `None` when the range cannot be mapped.
fn residency(file: &File, offset: u64, len: usize, page_bytes: u64) -> Option<Vec<u8>> {
    assert_eq!(offset % page_bytes, 0, "mmap needs a page-aligned offset");
    // SAFETY: a fresh read-only shared mapping of an open file, never dereferenced, unmapped
    // below; the kernel checks the descriptor and the page-aligned offset.
    let address = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            file_offset(offset).ok()?,
        )
    };
    if address == libc::MAP_FAILED {
        return None;
    }
    let mut pages = std::vec![0u8; len.div_ceil(page_bytes as usize)];
    // SAFETY: `address` maps `len` bytes and `pages` has a byte for each of their pages.
    let rc = unsafe { libc::mincore(address, len, pages.as_mut_ptr()) };
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(address, len) };
    (rc == 0).then_some(pages)
}

fn page_bytes() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok().filter(|bytes| *bytes > 0)
}

/// How many of the `len` bytes of `file` from `offset` the page cache holds in an unbroken
/// run from the start: they end where the first page not cached begins. Asked with
/// `mincore(2)`, which starts no I/O: a read with `RWF_NOWAIT` would start read-ahead for
/// the pages it misses, and on a busy machine could then find some of them already read
/// and count them as cached before. `None` when the range cannot be mapped (the caller
/// then knows nothing of the cache).
pub(super) fn cached_prefix_bytes(file: &File, offset: u64, len: usize) -> Option<usize> {
    if len == 0 {
        return Some(0);
    }
    let page_bytes = page_bytes()?;
    let map_start = offset / page_bytes * page_bytes;
    let map_len = usize::try_from(offset + len as u64 - map_start).ok()?;
    let pages = residency(file, map_start, map_len, page_bytes)?;
    let resident_pages = pages.iter().take_while(|page| *page & 1 != 0).count() as u64;
    let resident_end = map_start + resident_pages * page_bytes;
    Some(usize::try_from(resident_end.saturating_sub(offset)).ok()?.min(len))
}

/// The page size [`drop_cached`] ranges are rounded to by their callers (the kernel drops
/// only whole pages of its own size within a range: on larger pages, fewer go).
pub(super) const DROP_PAGE_BYTES: u64 = 4096;

/// Asks the kernel to drop the cached pages of `len` bytes of `file` from `offset`
/// (`POSIX_FADV_DONTNEED`). Only pages wholly inside the range go, and only clean ones: the
/// caller passes a range it has just made durable, so pages shared with a neighbouring
/// record still being written stay. Advice only: an error changes nothing stored.
pub(super) fn drop_cached(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (start, len) = (file_offset(offset)?, file_offset(len)?);
    // SAFETY: `file` is an open descriptor borrowed for the call; `posix_fadvise` reads no
    // memory of ours and changes no data of the file, only what the page cache holds.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) }
}

/// Pages of `len` bytes of `file` from `offset` (a multiple of the page size) that the
/// page cache holds.
#[cfg(test)]
pub(super) fn cached_pages(file: &File, offset: u64, len: usize) -> usize {
    let pages = residency(file, offset, len, page_bytes().expect("a page size")).expect("mmap and mincore");
    pages.iter().filter(|page| *page & 1 != 0).count()
}

/// Whether `path` is on a tmpfs, whose pages are the file itself (the kernel ignores
/// `POSIX_FADV_DONTNEED` there).
#[cfg(test)]
pub(super) fn on_tmpfs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: an all-zero statfs is a valid value of the plain C struct.
    let mut stat: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a writable statfs.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    assert_eq!(rc, 0, "statfs: {}", io::Error::last_os_error());
    stat.f_type == libc::TMPFS_MAGIC
}

/// What `O_DIRECT` asks of a write on a filesystem: buffer addresses aligned to
/// `memory_bytes`, file offsets and lengths to `offset_bytes` (powers of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DirectAlignment {
    pub(super) memory_bytes: u64,
    pub(super) offset_bytes: u64,
}

/// The alignment direct I/O needs on `file` (`statx(2)`, `STATX_DIOALIGN`, Linux 6.1);
/// `None` when the filesystem does no direct I/O or the kernel cannot tell.
pub(super) fn direct_alignment(file: &File) -> Option<DirectAlignment> {
    // SAFETY: an all-zero statx is a valid value of the plain C struct.
    let mut stat: libc::statx = unsafe { core::mem::zeroed() };
    // SAFETY: `file` is an open descriptor borrowed for the call, the empty path is
    // NUL-terminated and `AT_EMPTY_PATH` makes the kernel describe the descriptor itself;
    // `stat` is a writable statx the kernel fills and nothing else.
    let rc =
        unsafe { libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_DIOALIGN, &mut stat) };
    if rc != 0 || stat.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let (memory_bytes, offset_bytes) = (u64::from(stat.stx_dio_mem_align), u64::from(stat.stx_dio_offset_align));
    (memory_bytes.is_power_of_two() && offset_bytes.is_power_of_two())
        .then_some(DirectAlignment { memory_bytes, offset_bytes })
}

/// A second descriptor of segment `path` for writing with `O_DIRECT`: DMA from the
/// caller's buffer to the disk, no copy into the page cache.
pub(super) fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path)
}
