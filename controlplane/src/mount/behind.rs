//! Write-behind: a file written from its start, in order (as `cp` and most programs write),
//! is stored while it is being written, by a thread of its own reading the spool file
//! behind the writer, so that the last close waits for the file's last chunks only, not for
//! all of it. Any other kind of write (back into what was written, past the end, a
//! truncate), an unlink or a failed put abandons it, and the file is then stored whole from
//! the spool on close, as it would have been without write-behind.
//!
//! What the node has made durable is freed from the spool as the put goes (a hole punched
//! behind it): a `cp` of a large file then reuses the same few megabytes of page cache
//! instead of filling a fresh page for every byte, which on a VM costs as much as the copy
//! (`docs/benchmarks.md`, mount run 10), and the spool never holds the whole file on disk.
//! Once anything was freed, the spool alone no longer holds the file: whoever needs it
//! whole again finishes the put first and reads the rest back from the store
//! (`State::whole_spool`); a put that fails, or a writer that pauses long, has what was
//! freed read back from the node by chunk id (`Store::restore_durable`).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::store::{Store, StoreError, StoreResult, Target};
use crate::control::FileRecord;

/// A file starts being stored behind its writer once this much was written in order:
/// smaller files are stored on close, without a thread and a connection of their own.
pub const WRITE_BEHIND_AFTER_BYTES: u64 = 8 << 20;

/// At most this many files are stored behind their writers at once; more are stored on
/// close.
pub const WRITE_BEHIND_FILES_MAX: usize = 4;

/// How long a read of the spool waits for the writer before it returns `WouldBlock`.
const WRITER_WAIT: Duration = Duration::from_millis(20);

/// The spool is freed in whole pages.
const FREE_ALIGN_BYTES: u64 = 4096;

/// What the writer has done, as the storing thread sees it.
#[derive(Debug, Default)]
struct Tail {
    /// Bytes of the spool written in order from its start.
    written_bytes: u64,
    /// The writer closed (or synced) the file: what was written is the whole file.
    finished: bool,
    /// The file is no longer written in order, or no longer wanted: the put must fail.
    abandoned: bool,
    /// Bytes from the spool's start that were stored durable and then freed from the spool
    /// (reading them there gives zeros). Never grows once `abandoned` or `keep_spool` is set.
    freed_bytes: u64,
    /// Someone reads the spool besides the put: nothing more is freed from it.
    keep_spool: bool,
}

#[derive(Debug, Default)]
struct Progress {
    tail: Mutex<Tail>,
    changed: Condvar,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Tail)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }
}

/// A file being stored behind its writer.
pub struct WriteBehind {
    /// The id its chunks are stored under (on a single node).
    file_id: u64,
    progress: Arc<Progress>,
    worker: Option<JoinHandle<StoreResult<FileRecord>>>,
    active: Arc<AtomicUsize>,
}

impl WriteBehind {
    /// Starts storing `name` from `spool`, whose first `written_bytes` are written; `None`
    /// when [`WRITE_BEHIND_FILES_MAX`] files are being stored already (counted in
    /// `active`) or no thread can be started.
    pub fn start(
        target: &Target,
        name: &str,
        spool: &File,
        written_bytes: u64,
        active: &Arc<AtomicUsize>,
    ) -> Option<WriteBehind> {
        let taken = active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
            (count < WRITE_BEHIND_FILES_MAX).then_some(count + 1)
        });
        if taken.is_err() {
            return None;
        }
        let progress = Arc::new(Progress::default());
        progress.lock().written_bytes = written_bytes;
        let file_id = crate::client::new_file_id();
        // A file copied in is seldom read back at once: the node drops what it wrote from
        // its page cache, instead of filling fresh memory with all of it.
        let target = match target {
            Target::Node(options) => {
                Target::Node(crate::client::ClientOptions { puts_not_read_soon: true, ..options.clone() })
            }
            Target::Cluster { .. } => target.clone(),
        };
        let started = spool.try_clone().and_then(|spool| {
            let freer_spool = spool.try_clone()?;
            let thread_progress = progress.clone();
            let name = name.to_owned();
            std::thread::Builder::new().name("beeline-write-behind".into()).spawn(move || {
                let mut store = Store::open(&target)?;
                // The node forgets the chunks of a put that stalls for its grace period, so
                // a writer pausing for a quarter of it gets what was freed put back. What a
                // cluster made durable cannot be read back before the put commits (see
                // `Store::put_behind`), so its spool is kept whole.
                // A grace of 0 means no background collection: nothing to refill against.
                let grace_ms = store.gc_grace_ms().ok().flatten();
                let refill_after =
                    grace_ms.filter(|grace_ms| *grace_ms > 0).map(|grace_ms| Duration::from_millis(grace_ms / 4));
                let mut freer =
                    SpoolFreer { spool: freer_spool, progress: thread_progress.clone(), can_free: grace_ms.is_some() };
                // Unbuffered: the put reads whole chunks straight into its buffers.
                let mut reader = SpoolTail {
                    spool,
                    position: 0,
                    progress: thread_progress,
                    refill: refill_after.map(|after| PauseRefill {
                        target: target.clone(),
                        file_id,
                        after,
                        paused_since: None,
                    }),
                };
                store.put_behind(&name, file_id, &mut reader, &mut |durable_bytes| freer.free_up_to(durable_bytes))
            })
        });
        match started {
            Ok(worker) => Some(WriteBehind { file_id, progress, worker: Some(worker), active: active.clone() }),
            Err(error) => {
                active.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!("no write-behind for {name}: {error}");
                None
            }
        }
    }

    /// The writer wrote the spool in order up to `end_bytes`.
    pub fn written(&self, end_bytes: u64) {
        self.progress.update(|tail| tail.written_bytes = tail.written_bytes.max(end_bytes));
    }

    /// The spool holds the whole file: waits until it is stored and returns its record,
    /// or the error that stopped the put, with what it had freed from the spool.
    pub fn finish(mut self) -> Result<FileRecord, Failed> {
        self.progress.update(|tail| tail.finished = true);
        let result = self.join();
        let tail = self.progress.lock();
        let (freed_bytes, written_bytes) = (tail.freed_bytes, tail.written_bytes);
        drop(tail);
        result.map_err(|error| Failed { error, file_id: self.file_id, freed_bytes, written_bytes })
    }

    /// Stops storing the file; whether the spool still holds all that was written (nothing
    /// was freed from it). Nothing is freed after this.
    pub fn abandon(mut self) -> bool {
        self.stop();
        self.progress.lock().freed_bytes == 0
    }

    /// Frees nothing more from the spool; whether anything was freed already (then the
    /// spool no longer holds the whole file).
    pub fn keep_spool_freed_any(&self) -> bool {
        let mut tail = self.progress.lock();
        tail.keep_spool = true;
        tail.freed_bytes > 0
    }

    fn stop(&mut self) {
        if self.worker.is_some() {
            self.progress.update(|tail| tail.abandoned = true);
            if let Err(error) = self.join() {
                tracing::debug!("write-behind abandoned: {error}");
            }
        }
    }

    fn join(&mut self) -> StoreResult<FileRecord> {
        let worker = self.worker.take().expect("joined once");
        worker.join().unwrap_or_else(|_| Err(StoreError::new(libc::EIO, "the write-behind thread panicked")))
    }
}

impl Drop for WriteBehind {
    /// Abandons the put (unless finished) and waits for its thread.
    fn drop(&mut self) {
        self.stop();
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A write-behind that did not store its file.
#[derive(Debug)]
pub struct Failed {
    pub error: StoreError,
    /// The id the put stored its chunks under.
    pub file_id: u64,
    /// Bytes from the spool's start that were durable and freed from it (0: the spool
    /// holds everything written). `Store::restore_durable` reads them back.
    pub freed_bytes: u64,
    /// The file's length when the put stopped.
    pub written_bytes: u64,
}

/// Frees from the spool what the put reports durable.
struct SpoolFreer {
    spool: File,
    progress: Arc<Progress>,
    /// Cleared when the file system cannot punch holes: the spool then stays whole.
    can_free: bool,
}

impl SpoolFreer {
    fn free_up_to(&mut self, durable_bytes: u64) {
        if !self.can_free {
            return;
        }
        // Under the lock, so that whoever abandons the put knows what was freed.
        let mut tail = self.progress.lock();
        assert!(durable_bytes <= tail.written_bytes, "{durable_bytes} bytes durable of {} written", tail.written_bytes);
        let end = durable_bytes / FREE_ALIGN_BYTES * FREE_ALIGN_BYTES;
        if tail.abandoned || tail.keep_spool || end <= tail.freed_bytes {
            return;
        }
        match punch_hole(&self.spool, tail.freed_bytes, end - tail.freed_bytes) {
            Ok(()) => tail.freed_bytes = end,
            Err(error) => {
                tracing::debug!("the spool's file system cannot free what was stored ({error}): it keeps it");
                self.can_free = false;
            }
        }
    }
}

/// Gives bytes `offset..offset + len` of `file` back to its file system; the size stays.
fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let (offset, len) = (i64::try_from(offset), i64::try_from(len));
    let (Ok(offset), Ok(len)) = (offset, len) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: `file` is an open descriptor borrowed for the call; fallocate takes no
    // pointers, so it cannot touch memory owned by Rust.
    let rc = unsafe {
        libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len)
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The spool as the put reads it: what the writer wrote so far, waiting for more until the
/// file is finished.
struct SpoolTail {
    spool: File,
    position: u64,
    progress: Arc<Progress>,
    /// Where the spool may be freed (a single node): how it is put back when the writer
    /// pauses too long.
    refill: Option<PauseRefill>,
}

/// Puts back into the spool what was freed, once the writer has paused `after`: the
/// node's garbage collection takes the chunks of a put that stops growing for its grace
/// period, after which they could no longer be read back should the put fail.
struct PauseRefill {
    target: Target,
    file_id: u64,
    after: Duration,
    /// Since when the writer gave nothing new (`None`: it is writing).
    paused_since: Option<std::time::Instant>,
}

impl SpoolTail {
    /// The writer gave nothing new for a while: once that is `after` long, reads back
    /// what was freed (from a connection of its own: the put holds this thread's) and
    /// frees nothing more. A refill that fails is tried again after as long once more.
    fn paused(&mut self) {
        let Some(refill) = self.refill.as_mut() else { return };
        let since = *refill.paused_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < refill.after {
            return;
        }
        refill.paused_since = None;
        let (freed_bytes, written_bytes) = {
            let tail = self.progress.lock();
            (tail.freed_bytes, tail.written_bytes)
        };
        if freed_bytes == 0 {
            return;
        }
        let restored = Store::open(&refill.target)
            .and_then(|mut store| store.restore_durable(refill.file_id, written_bytes, freed_bytes, &self.spool));
        match restored {
            Ok(()) => {
                let mut tail = self.progress.lock();
                assert_eq!(tail.freed_bytes, freed_bytes, "only this thread frees the spool");
                tail.freed_bytes = 0;
                tail.keep_spool = true;
                tracing::debug!("the writer paused: {freed_bytes} freed bytes are back in the spool");
            }
            Err(error) => tracing::warn!(
                "the writer paused, and what was freed from the spool could not be read back yet: {error}"
            ),
        }
    }
}

impl Read for SpoolTail {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let available = {
            let mut tail = self.progress.lock();
            loop {
                if tail.abandoned {
                    return Err(std::io::Error::other("write-behind abandoned: the file is stored whole on close"));
                }
                if tail.written_bytes > self.position {
                    break tail.written_bytes - self.position;
                }
                if tail.finished {
                    return Ok(0);
                }
                // Woken by every write, the close, or abandonment. After a while without
                // any, the put is told so (`WouldBlock`), to move the chunks it has in
                // flight (over UDP their fragments wait for it) before it asks again.
                let (woken, waited) =
                    self.progress.changed.wait_timeout(tail, WRITER_WAIT).unwrap_or_else(PoisonError::into_inner);
                tail = woken;
                if waited.timed_out() && tail.written_bytes <= self.position && !tail.finished && !tail.abandoned {
                    drop(tail);
                    self.paused();
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
            }
        };
        if let Some(refill) = self.refill.as_mut() {
            refill.paused_since = None;
        }
        let len = buf.len().min(usize::try_from(available).unwrap_or(usize::MAX));
        let read = self.spool.read_at(&mut buf[..len], self.position)?;
        if read == 0 {
            // Written bytes cannot vanish while the file is written in order: a truncate
            // abandons first. Fail rather than wait forever.
            return Err(std::io::Error::other("the spool file is shorter than what was written"));
        }
        self.position += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail_of(bytes: &[u8], written: u64) -> (SpoolTail, Arc<Progress>) {
        let mut spool = tempfile::tempfile().unwrap();
        spool.write_all(bytes).unwrap();
        let progress = Arc::new(Progress::default());
        progress.lock().written_bytes = written;
        (SpoolTail { spool, position: 0, progress: progress.clone(), refill: None }, progress)
    }

    #[test]
    fn the_reader_gets_what_is_written_then_waits_for_more_until_the_end() {
        let (mut reader, progress) = tail_of(b"hello world", 5);
        let mut buf = [0u8; 64];
        assert_eq!(reader.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        let writer = {
            let progress = progress.clone();
            std::thread::spawn(move || {
                progress.update(|tail| tail.written_bytes = 11);
                progress.update(|tail| tail.finished = true);
            })
        };
        let mut rest = Vec::new();
        // Bounded by the writer, which finishes the file.
        loop {
            match reader.read_to_end(&mut rest) {
                Ok(_) => break,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) => panic!("{error}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(rest, b" world");
    }

    #[test]
    fn a_reader_waiting_for_its_writer_is_told_so_after_a_while_and_reads_on_later() {
        let (mut reader, progress) = tail_of(b"abcdef", 3);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        let waited = std::time::Instant::now();
        let error = reader.read(&mut buf).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
        assert!(waited.elapsed() >= WRITER_WAIT, "it waited for the writer first");
        progress.update(|tail| tail.written_bytes = 6);
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"def");
        progress.update(|tail| tail.finished = true);
        assert_eq!(reader.read(&mut buf).unwrap(), 0, "then the end, not a wait");
    }

    #[test]
    fn abandoning_fails_a_waiting_reader() {
        let (mut reader, progress) = tail_of(b"abc", 3);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        let abandon = {
            let progress = progress.clone();
            std::thread::spawn(move || progress.update(|tail| tail.abandoned = true))
        };
        // Bounded by the abandoning thread.
        let error = loop {
            match reader.read(&mut buf) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => break other.expect_err("an abandoned put must not end as if the file were whole"),
            }
        };
        assert!(error.to_string().contains("abandoned"), "{error}");
        abandon.join().unwrap();
    }

    #[test]
    fn a_spool_shorter_than_what_was_written_is_an_error_not_a_wait() {
        let (mut reader, _progress) = tail_of(b"abc", 10);
        let mut buf = [0u8; 16];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        assert!(reader.read(&mut buf).is_err());
    }
}
