//! A durable, log-structured [`ChunkStore`] on a local filesystem.
//!
//! # Layout
//!
//! The data directory holds a lock file `LOCK` (held with `flock` while a store has the
//! directory open, so two processes never share it) and segment files `seg-000001.log`,
//! `seg-000002.log`, ... Records are only ever appended at the tail of the newest
//! ("active") segment; older segments are sealed. When a record would not fit in the
//! active segment (`segment_bytes`), a new segment is started. A record larger than a
//! whole segment gets a fresh segment of its own.
//!
//! The rest lives beside this file: [`record`] (the record format), [`crc`] (the
//! order-independent payload checksum), [`group_commit`] (durability), [`recovery`]
//! (restart), [`compaction`] (space reclamation), [`tail`] (appending at the active
//! segment's tail) and [`files`] (segment files and locks).

mod compaction;
mod crc;
mod direct;
#[cfg(test)]
mod direct_tests;
#[allow(unsafe_code)] // fallocate(2), flock(2), preadv(2), posix_fadvise(2) and mincore(2)
mod files;
mod group_commit;
mod readahead;
mod record;
mod recovery;
#[cfg(test)]
#[allow(unsafe_code)] // geteuid(2), to skip what root can do anyway
mod space_tests;
mod tail;
#[cfg(test)]
mod tests;
mod verify;
#[cfg(test)]
mod verify_tests;

use files::*;
use group_commit::*;
use record::*;
use recovery::*;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::vec::Vec;
pub use verify::{IntegrityStats, ScrubStep, VERIFY_BLOCK_BYTES};

use crate::store::{ChunkInfo, ChunkStore, Durable, PutReservation, StoreError};
use crate::wire::ChunkId;

/// Latency of each group commit (the directory and segment syncs of one batch), shared
/// with whoever exports metrics. Locked once per batch, never on the packet path.
pub type SyncLatency = Arc<std::sync::Mutex<crate::counters::LatencyHistogram>>;

/// Size of a record header.
pub const RECORD_HEADER_BYTES: u64 = 64;
/// Records start at multiples of this.
pub const RECORD_ALIGN_BYTES: u64 = 64;
/// The largest chunk the format (and any configuration) allows.
pub const MAX_CHUNK_LIMIT_BYTES: u32 = 64 << 20;
/// Most completions handed out by one `poll_durable` call; the rest wait for the next
/// call (the node collects them into a fixed 256-entry buffer).
pub use crate::store::POLL_DURABLE_BATCH_MAX;

const MIN_SEGMENT_BYTES: u64 = 4096;
const MAX_PUTS_IN_FLIGHT_LIMIT: usize = 1 << 16;
const MAX_PENDING_DURABLE_LIMIT: usize = 1 << 20;
/// Buffer used for maintenance copies and for checking payloads at start-up.
const SCRATCH_BYTES: usize = 1 << 20;
/// Large reads are split into pieces of this many bytes (at offsets of the chunk that are
/// multiples of it), each checked while it is still in the CPU's cache.
/// A multiple of the verify block, so that a piece's check reads nothing beside it.
const CACHE_PIECE_BYTES: u32 = 256 << 10;
const _: () = assert!(CACHE_PIECE_BYTES.is_multiple_of(VERIFY_BLOCK_BYTES));

/// `len` bytes from chunk offset `offset`, cut at chunk offsets that are multiples of
/// [`CACHE_PIECE_BYTES`]: (chunk offset, range within the caller's buffer) of each piece.
fn cache_pieces(offset: u32, len: usize) -> impl Iterator<Item = (u32, core::ops::Range<usize>)> {
    let piece_max = CACHE_PIECE_BYTES as usize;
    let mut done = 0usize;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = offset as usize + done;
        let piece = (piece_max - at % piece_max).min(len - done);
        let range = done..done + piece;
        done += piece;
        Some((at as u32, range))
    })
}
const FALLOCATE_EINTR_RETRIES: u32 = 16;
/// Payloads at least this long are written with `O_DIRECT` when their buffer allows it
/// ([`DiskStoreConfig::direct_writes`]), and their records are placed so that the payload
/// starts on a page. Shorter ones go through the page cache: padding would cost them more
/// than the copy.
pub const DIRECT_WRITE_BYTES_MIN: u32 = 256 << 10;
/// Chunk id of padding records: never-committed put reservations that place the next
/// record's payload on a page. Any reader of the format steps over them like any abandoned
/// reservation; recovery counts them apart.
const PADDING_ID: ChunkId = 0;
/// `open` retries a held lock this often, this far apart (one second in all): the holder
/// may be a process that is exiting, or a child forked by this process that still shares
/// the lock's file description until it calls `exec`.
const LOCK_ATTEMPTS: u32 = 100;
const LOCK_RETRY_INTERVAL_MS: u64 = 10;

const MAGIC: [u8; 4] = *b"BLR1";
const FORMAT_VERSION: u8 = 1;
const KIND_PUT: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const STATE_COMMITTED: u32 = u32::from_le_bytes(*b"CMT1");
const COMMIT_OFFSET: u64 = 32;
const LOCK_FILE_NAME: &str = "LOCK";
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".log";

/// Tuning of a [`DiskStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStoreConfig {
    /// Target size of a segment file. At least 4 KiB.
    pub segment_bytes: u64,
    /// Soft cap on the bytes of all segment files (live data, reservations and dead
    /// space not yet compacted). `begin_put` returns `DiskFull` rather than exceed it;
    /// deletes and compaction may go past it, since they are how space is freed.
    pub capacity_bytes: Option<u64>,
    /// Largest chunk accepted by `begin_put`; at most [`MAX_CHUNK_LIMIT_BYTES`].
    pub max_chunk_bytes: u32,
    /// Most puts reserved and not yet committed or aborted; more get `Busy`.
    pub max_puts_in_flight: usize,
    /// Most changes (puts in flight plus commits and deletes not yet reported by
    /// `poll_durable`); beyond it `begin_put` and `delete` return `Busy`. This bounds the
    /// group-commit queues. Raised to `max_puts_in_flight` when lower.
    pub max_pending_durable: usize,
    /// Chunks the in-memory index has room for without growing.
    pub expected_chunks: usize,
    /// Drop a put's pages from the kernel's page cache once it is durable
    /// (`POSIX_FADV_DONTNEED` on the record, after the group commit's sync). Off by
    /// default: a chunk read soon after its put then comes from the disk, and freeing the
    /// pages costs the sync thread CPU. On: written chunks do not push out what readers use,
    /// and the next writes reuse those pages instead of fresh ones (what a large write pays
    /// most for on a VM that hands freed memory back to its host).
    pub drop_written_pages: bool,
    /// Write a payload of at least [`DIRECT_WRITE_BYTES_MIN`] whose buffer is aligned for
    /// direct I/O (a local client's chunk in shared memory: its bulk slots start on pages)
    /// with `O_DIRECT`: the disk takes it straight from that memory, and the node neither
    /// copies it into the page cache nor writes it back at the next sync. A chunk read soon
    /// after such a put comes from the disk. On by default; ignored, with everything written
    /// through the page cache, on a filesystem without direct I/O (tmpfs).
    pub direct_writes: bool,
}

impl Default for DiskStoreConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            capacity_bytes: None,
            max_chunk_bytes: 4 << 20,
            max_puts_in_flight: 64,
            max_pending_durable: 4096,
            expected_chunks: 1 << 16,
            drop_written_pages: false,
            direct_writes: true,
        }
    }
}

impl DiskStoreConfig {
    fn validate(&self) -> Result<(), DiskStoreError> {
        let reason = if self.segment_bytes < MIN_SEGMENT_BYTES {
            format!("segment_bytes is {}, it must be at least {MIN_SEGMENT_BYTES}", self.segment_bytes)
        } else if self.max_chunk_bytes > MAX_CHUNK_LIMIT_BYTES {
            format!("max_chunk_bytes is {}, it must be at most {MAX_CHUNK_LIMIT_BYTES}", self.max_chunk_bytes)
        } else if self.max_puts_in_flight == 0 || self.max_puts_in_flight > MAX_PUTS_IN_FLIGHT_LIMIT {
            format!(
                "max_puts_in_flight is {}, it must be within 1..={MAX_PUTS_IN_FLIGHT_LIMIT}",
                self.max_puts_in_flight
            )
        } else if self.max_pending_durable == 0 || self.max_pending_durable > MAX_PENDING_DURABLE_LIMIT {
            format!(
                "max_pending_durable is {}, it must be within 1..={MAX_PENDING_DURABLE_LIMIT}",
                self.max_pending_durable
            )
        } else {
            return Ok(());
        };
        Err(DiskStoreError::InvalidConfig { reason })
    }
}

/// Why a [`DiskStore`] could not be opened or maintained.
#[derive(Debug, thiserror::Error)]
pub enum DiskStoreError {
    #[error("invalid disk store configuration: {reason}; fix the store settings")]
    InvalidConfig { reason: String },
    #[error("cannot create data directory {}: {source}; create it by hand or pass --data-dir", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("data directory {} is not writable: {source}; check permissions or pass --data-dir", dir.display())]
    NotWritable { dir: PathBuf, source: io::Error },
    #[error(
        "data directory {} is in use by another process (it holds the lock on {}): stop that process or pass another --data-dir",
        dir.display(),
        lock_path.display()
    )]
    Locked { dir: PathBuf, lock_path: PathBuf },
    #[error("disk full while {action} {}: free space on the disk or lower the store's capacity", path.display())]
    DiskFull { action: &'static str, path: PathBuf, source: io::Error },
    #[error("I/O error while {action} {}: {source}; check the disk and the kernel log (dmesg)", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
}

impl DiskStoreError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        if is_no_space(&source) { Self::DiskFull { action, path, source } } else { Self::Io { action, path, source } }
    }
}

/// What `open` found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: u64,
    /// Committed records (puts and tombstones) accepted by the scan: valid header and, for
    /// puts, valid payload. Some may have been superseded by records scanned later; records
    /// already superseded when scanned are skipped without reading their payload.
    pub records_loaded: u64,
    /// Chunks readable after recovery.
    pub chunks_live: u64,
    /// Bytes cut off the end of the last segment (a write torn by a crash).
    pub torn_tail_bytes_truncated: u64,
    /// Invalid headers found in segments other than the last; each one makes the scan skip
    /// the rest of its segment.
    pub corrupt_records_skipped: u64,
    /// Bytes skipped because of those invalid headers.
    pub corrupt_bytes_skipped: u64,
    /// Committed puts whose payload did not match its checksum; they are never served.
    pub checksum_mismatches_discarded: u64,
    /// Reservations that were never committed (or whose commit was torn).
    pub pending_reservations_skipped: u64,
    /// Padding records stepped over (they place direct-written payloads on pages).
    pub padding_records_skipped: u64,
}

/// How the bytes of puts reached the disk since the store was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Payload bytes written with `O_DIRECT` ([`DiskStoreConfig::direct_writes`]).
    pub direct_bytes: u64,
    /// Payload bytes written through the page cache.
    pub page_cache_bytes: u64,
    /// Bytes of padding records placed before direct-written payloads.
    pub padding_bytes: u64,
}

/// What one `compact`/`maybe_compact` call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_removed: u64,
    /// Live records (puts and tombstones) copied to the tail.
    pub records_copied: u64,
    /// Bytes written by those copies.
    pub bytes_copied: u64,
    /// Bytes of segment files deleted.
    pub bytes_freed: u64,
    /// Tombstones no longer needed, dropped.
    pub tombstones_dropped: u64,
    /// Chunks whose payload no longer matched its checksum when copied; they are deleted.
    pub corrupt_chunks_discarded: u64,
}

/// A durable, log-structured chunk store. See the module documentation.
pub struct DiskStore {
    sync_latency: SyncLatency,
    dir: PathBuf,
    config: DiskStoreConfig,
    /// Holds the `flock` on the data directory for the store's lifetime.
    _lock: File,
    dir_file: File,
    segments: BTreeMap<u32, Segment>,
    /// Id of the segment records are appended to (the newest).
    active: u32,
    /// A failed write left the active segment's tail unknown: start a new one.
    roll_requested: bool,
    /// A segment file was created since the directory was last synced.
    dir_dirty: bool,
    disk_bytes: u64,
    used_bytes: u64,
    next_seq: u64,
    index: HashMap<ChunkId, Location>,
    /// Tombstones (and discarded corrupt records) that are the newest record of an absent
    /// chunk, so they keep shadowing older records of it.
    tombstones: HashMap<ChunkId, TombstoneEntry>,
    slots: Vec<Slot>,
    free_slots: Vec<u16>,
    puts_in_flight: usize,
    /// Tickets queued for durability, in the order the group-commit thread reports them.
    outstanding: VecDeque<u64>,
    /// A completion received by `wait_durable`, handed out by the next `poll_durable`.
    peeked: Option<Durable>,
    requests: SyncSender<Request>,
    completions: Receiver<Durable>,
    committer: Option<JoinHandle<()>>,
    scratch: Vec<u8>,
    recovery: RecoveryReport,
    /// When `open` returned: chunk ages count from here.
    opened: Instant,
    /// Per-block crcs of chunks verified once against their payload crc (see `verify`).
    block_crcs: HashMap<ChunkId, Box<[u32]>>,
    /// Chunks found corrupt: reads answer `Corrupt` until they are deleted or put again.
    corrupt: HashSet<ChunkId>,
    integrity: IntegrityStats,
    scrub: verify::ScrubState,
    read_ahead: readahead::ReadAhead,
    /// What direct writes need on this filesystem; `None` when they are off or impossible.
    direct: Option<DirectAlignment>,
    /// The segment last written direct, opened with `O_DIRECT` (one descriptor, not one per
    /// segment: nearly every direct write goes to the active segment).
    direct_file: Option<(u32, File)>,
    write_stats: WriteStats,
}

struct SegmentFile {
    id: u32,
    file: File,
    /// Set by whoever sees `fdatasync` fail on this file; never cleared.
    sync_failed: AtomicBool,
}

struct Segment {
    file: Arc<SegmentFile>,
    /// Bytes of the file in use (its length).
    len_bytes: u64,
    /// Bytes of live records, needed tombstones and open reservations.
    live_bytes: u64,
    puts_in_flight: u32,
    /// Needed tombstones held by this segment.
    tombstones: u32,
}

#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u32,
    record_offset: u64,
    len: u32,
    seq: u64,
    payload_crc: u32,
    /// When the store first held the chunk, in ms since it was opened (0 for chunks found
    /// on disk then); compaction keeps it.
    first_seen_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct TombstoneEntry {
    segment: u32,
    record_offset: u64,
    seq: u64,
    /// Size of the record on disk (a discarded corrupt put is a whole put record).
    record_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    id: ChunkId,
    segment: u32,
    record_offset: u64,
    len: u32,
    written_bytes: u64,
    /// Checksum of the fragments written so far.
    crc: crc::PayloadCrc,
    /// Its pages leave the page cache once durable ([`ChunkStore::drop_when_durable`]).
    drop_when_durable: bool,
}

struct Slot {
    generation: u16,
    put: Option<Reservation>,
    /// The block table of the slot's put, while its fragments arrive in order.
    blocks: verify::InOrderBlocks,
}

/// The records of a segment being compacted.
#[derive(Default)]
struct VictimRecords {
    live: Vec<(ChunkId, Location)>,
    tombstones: Vec<(ChunkId, TombstoneEntry)>,
}

enum Request {
    /// `written` is the byte range of the record a put committed (offset, length), whose
    /// pages may leave the page cache once synced.
    Sync {
        ticket: u64,
        segment: Option<Arc<SegmentFile>>,
        written: Option<(u64, u64)>,
        dir_sync: bool,
    },
    Shutdown,
}

impl DiskStore {
    /// Opens (creating if needed) the store in `dir`, recovering whatever is on disk.
    // Long on purpose: the store's start-up in order: lock, recover, start the group-commit thread, open the tail segment; each needs the previous one's result.
    pub fn open(dir: &Path, config: DiskStoreConfig) -> Result<DiskStore, DiskStoreError> {
        config.validate()?;
        let config = DiskStoreConfig {
            max_pending_durable: config.max_pending_durable.max(config.max_puts_in_flight),
            ..config
        };
        fs::create_dir_all(dir).map_err(|source| DiskStoreError::CreateDir { dir: dir.to_path_buf(), source })?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path).map_err(
            |source| match source.kind() {
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                    DiskStoreError::NotWritable { dir: dir.to_path_buf(), source }
                }
                _ => DiskStoreError::io("creating the lock file", &lock_path, source),
            },
        )?;
        if !lock_exclusive(&lock).map_err(|source| DiskStoreError::io("locking", &lock_path, source))? {
            return Err(DiskStoreError::Locked { dir: dir.to_path_buf(), lock_path });
        }
        let dir_file =
            File::open(dir).map_err(|source| DiskStoreError::io("opening the data directory", dir, source))?;

        let mut scratch = vec![0u8; SCRATCH_BYTES];
        let recovered = recover(dir, &config, &mut scratch)?;
        let Recovered { mut segments, index, tombstones, used_bytes, max_seq, mut report } = recovered;
        report.chunks_live = index.len() as u64;

        let mut dir_dirty = false;
        let active = match segments.keys().next_back() {
            Some(&id) => id,
            None => {
                let segment = create_segment(dir, 1)?;
                segments.insert(1, segment);
                dir_dirty = true;
                1
            }
        };
        if dir_dirty {
            dir_file.sync_all().map_err(|source| DiskStoreError::io("syncing", dir, source))?;
        }
        let disk_bytes = segments.values().map(|segment| segment.len_bytes).sum();
        let direct = if config.direct_writes { direct_alignment(&segments[&active].file.file) } else { None };

        let slots = (0..config.max_puts_in_flight)
            .map(|_| Slot {
                generation: 0,
                put: None,
                blocks: verify::InOrderBlocks::for_chunks_up_to(config.max_chunk_bytes),
            })
            .collect();
        // Popped from the end: slot 0 is handed out first.
        let free_slots = (0..config.max_puts_in_flight).rev().map(|slot| slot as u16).collect();

        // One slot more than the most requests that can be outstanding, for Shutdown.
        let queue_len = config.max_pending_durable + 1;
        let (requests, request_rx) = mpsc::sync_channel(queue_len);
        let (completion_tx, completions) = mpsc::sync_channel(queue_len);
        let thread_dir = dir_file.try_clone().map_err(|source| DiskStoreError::io("opening", dir, source))?;
        let sync_latency: SyncLatency = Arc::default();
        let committer = thread::Builder::new()
            .name("beeline-group-commit".to_string())
            .spawn({
                let sync_latency = sync_latency.clone();
                move || run_group_commit(&request_rx, &completion_tx, &thread_dir, queue_len, &sync_latency)
            })
            .map_err(|source| DiskStoreError::io("starting the group-commit thread for", dir, source))?;

        Ok(DiskStore {
            sync_latency,
            dir: dir.to_path_buf(),
            config,
            _lock: lock,
            dir_file,
            segments,
            active,
            roll_requested: false,
            dir_dirty: false,
            disk_bytes,
            used_bytes,
            next_seq: max_seq + 1,
            index,
            tombstones,
            slots,
            free_slots,
            puts_in_flight: 0,
            outstanding: VecDeque::with_capacity(config.max_pending_durable),
            peeked: None,
            requests,
            completions,
            committer: Some(committer),
            scratch,
            recovery: report,
            opened: Instant::now(),
            block_crcs: HashMap::new(),
            corrupt: HashSet::new(),
            integrity: IntegrityStats::default(),
            read_ahead: readahead::ReadAhead::default(),
            scrub: verify::ScrubState::default(),
            direct,
            direct_file: None,
            write_stats: WriteStats::default(),
        })
    }

    /// How puts' bytes reached the disk since `open`.
    pub fn write_stats(&self) -> WriteStats {
        self.write_stats
    }

    /// Whether large aligned payloads are written with `O_DIRECT` (configured, and the
    /// filesystem does direct I/O).
    pub fn writes_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// What `open` found on disk.
    /// Latency of group commits so far, shared with the metrics exporter.
    pub fn sync_latency(&self) -> SyncLatency {
        self.sync_latency.clone()
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &DiskStoreConfig {
        &self.config
    }

    /// Bytes of all segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Chunks readable now.
    pub fn chunk_count(&self) -> usize {
        self.index.len()
    }

    /// Bytes of segment files that hold nothing needed: deleted or replaced chunks,
    /// abandoned reservations, reservations a crash left pending. Compaction frees them.
    pub fn dead_bytes(&self) -> u64 {
        self.segments.values().map(|segment| segment.len_bytes - segment.live_bytes).sum()
    }

    /// Blocks until a durability report is ready for `poll_durable` or `timeout` passes.
    /// Returns at once with `false` when nothing is pending. Returns whether a report is
    /// ready.
    pub fn wait_durable(&mut self, timeout: Duration) -> bool {
        if self.peeked.is_some() {
            return true;
        }
        if self.outstanding.is_empty() {
            return false;
        }
        match self.completions.recv_timeout(timeout) {
            Ok(durable) => {
                self.peeked = Some(durable);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            // The thread is gone: poll_durable reports the outstanding tickets as failed.
            Err(RecvTimeoutError::Disconnected) => true,
        }
    }

    /// Deletes a chunk whose payload turned out corrupt, with a fresh tombstone.
    fn discard_corrupt(&mut self, id: ChunkId, location: Location) -> Result<(), DiskStoreError> {
        let seq = self.take_seq();
        let (segment, record_offset) = self.append_tombstone(id, seq)?;
        let removed = self.index.remove(&id);
        assert!(removed.is_some(), "discarding a chunk that is not indexed");
        self.forget_verified(id);
        self.used_bytes -= u64::from(location.len);
        self.segment_mut(location.segment).live_bytes -= record_bytes(location.len);
        let previous = self
            .tombstones
            .insert(id, TombstoneEntry { segment, record_offset, seq, record_bytes: RECORD_HEADER_BYTES });
        assert!(previous.is_none(), "a live chunk also had a needed tombstone");
        Ok(())
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Makes `location` the chunk's current record; the record it replaces (if any)
    /// becomes dead. The new record's bytes must already be counted live.
    fn install_put(&mut self, id: ChunkId, location: Location) {
        self.forget_verified(id);
        self.used_bytes += u64::from(location.len);
        if let Some(old) = self.index.insert(id, location) {
            self.used_bytes -= u64::from(old.len);
            self.segment_mut(old.segment).live_bytes -= record_bytes(old.len);
        }
        if let Some(tombstone) = self.tombstones.remove(&id) {
            let segment = self.segment_mut(tombstone.segment);
            segment.live_bytes -= tombstone.record_bytes;
            segment.tombstones -= 1;
        }
    }

    fn segment_mut(&mut self, id: u32) -> &mut Segment {
        self.segments.get_mut(&id).expect("records only point at existing segments")
    }

    fn sync_dir(&self) -> Result<(), DiskStoreError> {
        self.dir_file.sync_all().map_err(|source| DiskStoreError::io("syncing", &self.dir, source))
    }

    fn at_change_limit(&self) -> bool {
        self.puts_in_flight + self.outstanding.len() >= self.config.max_pending_durable
    }

    fn reservation(&self, put: PutReservation) -> (usize, Reservation) {
        let slot = (put.0 & 0xffff) as usize;
        let generation = (put.0 >> 16) as u16;
        let entry = self.slots.get(slot).expect("PutReservation was not issued by this store");
        let reservation = entry.put.filter(|_| entry.generation == generation);
        (slot, reservation.expect("PutReservation is not in flight (already committed or aborted?)"))
    }

    fn release_slot(&mut self, slot: usize, reservation: &Reservation) {
        self.slots[slot].put = None;
        self.free_slots.push(slot as u16);
        self.puts_in_flight -= 1;
        self.segment_mut(reservation.segment).puts_in_flight -= 1;
    }

    /// Queues `ticket` for the group-commit thread; `segment` is the segment holding the
    /// change, if any; `written`, a range of it whose pages leave the page cache once synced.
    fn queue_durable(
        &mut self,
        ticket: u64,
        segment: Option<u32>,
        written: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        assert!(self.outstanding.len() < self.config.max_pending_durable, "durability queue over its bound");
        assert!(written.is_none() || segment.is_some(), "a written range belongs to a segment");
        let file = segment.map(|id| Arc::clone(&self.segments[&id].file));
        let request = Request::Sync { ticket, segment: file, written, dir_sync: self.dir_dirty };
        match self.requests.try_send(request) {
            Ok(()) => {
                self.dir_dirty = false;
                self.outstanding.push_back(ticket);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                panic!("group-commit queue full although its bound was enforced")
            }
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Io),
        }
    }

    fn deliver(&mut self, durable: Durable, done: &mut dyn FnMut(Durable)) {
        let expected = self.outstanding.pop_front();
        assert_eq!(expected, Some(durable.ticket), "group commit reported tickets out of order");
        done(durable);
    }
}

impl ChunkStore for DiskStore {
    fn chunk_len(&self, id: ChunkId) -> Option<u32> {
        self.index.get(&id).map(|location| location.len)
    }

    fn begin_put(&mut self, id: ChunkId, len: u32) -> Result<PutReservation, StoreError> {
        if len > self.config.max_chunk_bytes {
            return Err(StoreError::TooLarge);
        }
        if self.puts_in_flight >= self.config.max_puts_in_flight || self.at_change_limit() {
            return Err(StoreError::Busy);
        }
        let record_bytes = record_bytes(len);
        let payload_align = self.payload_alignment(len);
        if let Some(capacity_bytes) = self.config.capacity_bytes {
            let padding_bytes_max = payload_align.map_or(0, |align| align - RECORD_HEADER_BYTES);
            if self.disk_bytes.saturating_add(padding_bytes_max + record_bytes) > capacity_bytes {
                return Err(StoreError::DiskFull);
            }
        }
        let header = encode_header(KIND_PUT, id, len, None);
        let (segment, record_offset) =
            self.append_record(record_bytes, &header, payload_align).map_err(|error| store_error(&error))?;
        let entry = self.segment_mut(segment);
        entry.live_bytes += record_bytes;
        entry.puts_in_flight += 1;
        let slot = self.free_slots.pop().expect("a free slot exists below max_puts_in_flight");
        let slot_entry = &mut self.slots[usize::from(slot)];
        assert!(slot_entry.put.is_none(), "free slot {slot} is in use");
        slot_entry.generation = slot_entry.generation.wrapping_add(1);
        slot_entry.put = Some(Reservation {
            id,
            segment,
            record_offset,
            len,
            written_bytes: 0,
            crc: crc::PayloadCrc::default(),
            drop_when_durable: false,
        });
        slot_entry.blocks.start();
        self.puts_in_flight += 1;
        Ok(PutReservation((u32::from(slot_entry.generation) << 16) | u32::from(slot)))
    }

    fn write_at(&mut self, put: PutReservation, offset: u32, data: &[u8]) -> Result<(), StoreError> {
        let (slot, reservation) = self.reservation(put);
        let end = u64::from(offset) + data.len() as u64;
        assert!(
            end <= u64::from(reservation.len),
            "write of {offset}+{} past a {}-byte chunk",
            data.len(),
            reservation.len
        );
        assert!(
            reservation.written_bytes + data.len() as u64 <= u64::from(reservation.len),
            "more bytes written than reserved: a byte range was written twice"
        );
        // One `pwrite` for the whole buffer, even a whole chunk: written in cache-sized pieces
        // with each piece's checksums between them, a local client's put cost the node less
        // CPU but stored 10 % slower (three A/B rounds), probably because the group commit's
        // `fdatasync` then catches chunks half written (not verified).
        let file_offset = reservation.record_offset + RECORD_HEADER_BYTES + u64::from(offset);
        let direct_bytes =
            self.write_direct_prefix(reservation.segment, file_offset, data).map_err(|error| io_store_error(&error))?;
        let rest = &data[direct_bytes..];
        let file = &self.segments[&reservation.segment].file.file;
        file.write_all_at(rest, file_offset + direct_bytes as u64).map_err(|error| io_store_error(&error))?;
        self.write_stats.page_cache_bytes += rest.len() as u64;
        let slot_entry = &mut self.slots[slot];
        let entry = slot_entry.put.as_mut().expect("reservation checked above");
        entry.written_bytes += data.len() as u64;
        slot_entry.blocks.add(&mut entry.crc, u64::from(offset), data, u64::from(reservation.len));
        Ok(())
    }

    fn write_vectored_at(&mut self, put: PutReservation, offset: u32, bufs: &[&[u8]]) -> Result<(), StoreError> {
        let (slot, reservation) = self.reservation(put);
        let len: u64 = bufs.iter().map(|buf| buf.len() as u64).sum();
        let end = u64::from(offset) + len;
        assert!(end <= u64::from(reservation.len), "write of {offset}+{len} past a {}-byte chunk", reservation.len);
        assert!(
            reservation.written_bytes + len <= u64::from(reservation.len),
            "more bytes written than reserved: a byte range was written twice"
        );
        let file = &self.segments[&reservation.segment].file.file;
        write_all_vectored_at(file, bufs, reservation.record_offset + RECORD_HEADER_BYTES + u64::from(offset))
            .map_err(|error| io_store_error(&error))?;
        self.write_stats.page_cache_bytes += len;
        let slot_entry = &mut self.slots[slot];
        let entry = slot_entry.put.as_mut().expect("reservation checked above");
        entry.written_bytes += len;
        let mut at = u64::from(offset);
        for buf in bufs {
            slot_entry.blocks.add(&mut entry.crc, at, buf, u64::from(reservation.len));
            at += buf.len() as u64;
        }
        Ok(())
    }

    /// On error the reservation is still held: the caller aborts it.
    fn commit_put(&mut self, put: PutReservation, ticket: u64) -> Result<(), StoreError> {
        let (slot, reservation) = self.reservation(put);
        assert_eq!(
            reservation.written_bytes,
            u64::from(reservation.len),
            "commit_put before every byte of the chunk was written"
        );
        let payload_crc = reservation.crc.finish(u64::from(reservation.len));
        let seq = self.take_seq();
        let commit = encode_commit(frame_crc(KIND_PUT, reservation.id, reservation.len), seq, payload_crc);
        let file = &self.segments[&reservation.segment].file.file;
        file.write_all_at(&commit, reservation.record_offset + COMMIT_OFFSET)
            .map_err(|error| io_store_error(&error))?;
        let written = (reservation.record_offset, record_bytes(reservation.len));
        let drop_pages = self.config.drop_written_pages || reservation.drop_when_durable;
        self.queue_durable(ticket, Some(reservation.segment), Some(written).filter(|_| drop_pages))?;
        let table = self.slots[slot].blocks.finish(&reservation.crc, u64::from(reservation.len));
        self.release_slot(slot, &reservation);
        let location = Location {
            segment: reservation.segment,
            record_offset: reservation.record_offset,
            len: reservation.len,
            seq,
            payload_crc,
            first_seen_ms: self.opened.elapsed().as_millis() as u64,
        };
        self.install_put(reservation.id, location);
        if let Some(table) = table {
            self.keep_put_table(reservation.id, table);
        }
        Ok(())
    }

    fn drop_when_durable(&mut self, put: PutReservation) {
        let (slot, _) = self.reservation(put);
        if let Some(reservation) = self.slots[slot].put.as_mut() {
            reservation.drop_when_durable = true;
        }
    }

    fn drop_after_read(&mut self, id: ChunkId) {
        if let Some(location) = self.index.get(&id) {
            let file = &self.segments[&location.segment].file.file;
            // Only pages wholly inside the record go: a neighbour's shared page stays.
            let _ = drop_cached(file, location.record_offset, record_bytes(location.len));
        }
    }

    fn abort_put(&mut self, put: PutReservation) {
        let (slot, reservation) = self.reservation(put);
        self.release_slot(slot, &reservation);
        // The pending header stays on disk; a restart steps over it.
        self.segment_mut(reservation.segment).live_bytes -= record_bytes(reservation.len);
    }

    fn delete(&mut self, id: ChunkId, ticket: u64) -> Result<(), StoreError> {
        if self.at_change_limit() {
            return Err(StoreError::Busy);
        }
        // An absent chunk has nothing on disk that could come back (its newest record is a
        // tombstone or a discarded one), so its delete is only a durability barrier.
        let segment = match self.index.get(&id).copied() {
            None => None,
            Some(location) => {
                let seq = self.take_seq();
                let (segment, record_offset) = self.append_tombstone(id, seq).map_err(|error| store_error(&error))?;
                self.index.remove(&id);
                self.forget_verified(id);
                self.used_bytes -= u64::from(location.len);
                self.segment_mut(location.segment).live_bytes -= record_bytes(location.len);
                let entry = TombstoneEntry { segment, record_offset, seq, record_bytes: RECORD_HEADER_BYTES };
                let previous = self.tombstones.insert(id, entry);
                assert!(previous.is_none(), "a live chunk also had a needed tombstone");
                Some(segment)
            }
        };
        self.queue_durable(ticket, segment, None)
    }

    /// A large read (a local client's whole chunk) is read and checked piece by piece, so
    /// that the check finds each piece still in the CPU's cache.
    fn read_at(&mut self, id: ChunkId, offset: u32, buf: &mut [u8]) -> Result<usize, StoreError> {
        let wanted = match self.index.get(&id) {
            Some(location) if buf.len() > CACHE_PIECE_BYTES as usize && offset < location.len => {
                buf.len().min((location.len - offset) as usize)
            }
            _ => return self.read_vectored_at(id, offset, &mut [buf]),
        };
        let mut placed = 0usize;
        for (at, piece) in cache_pieces(offset, wanted) {
            let read = self.read_vectored_at(id, at, &mut [&mut buf[piece.clone()]])?;
            placed += read;
            if read < piece.len() {
                break;
            }
        }
        Ok(placed)
    }

    /// One `preadv` for the whole run of buffers (a GET window) instead of one `pread`
    /// per fragment.
    /// Every byte handed out passed its block's crc (see `verify`); a chunk that fails
    /// answers `Corrupt` from then on, with no bytes.
    fn read_vectored_at(&mut self, id: ChunkId, offset: u32, bufs: &mut [&mut [u8]]) -> Result<usize, StoreError> {
        let location = *self.index.get(&id).ok_or(StoreError::NotFound)?;
        if self.corrupt.contains(&id) {
            self.integrity.reads_corrupt += 1;
            return Err(StoreError::Corrupt);
        }
        if offset >= location.len {
            return Ok(0);
        }
        if offset == 0 {
            let segment = location.segment;
            if let Some((from, len)) = self.read_ahead.on_chunk_start(segment, location.record_offset, location.len) {
                advise_will_need(&self.segments[&segment].file.file, from, len);
            }
        }
        // The run stops at the chunk's end: later buffers get nothing, the one holding
        // the end is cut short (the caller's slice array is left with that shorter slice).
        let mut left = (location.len - offset) as usize;
        let mut count = 0;
        while count < bufs.len() && left > 0 {
            if bufs[count].len() > left {
                let whole = core::mem::take(&mut bufs[count]);
                bufs[count] = &mut whole[..left];
            }
            left -= bufs[count].len();
            count += 1;
        }
        let total = (location.len - offset) as usize - left;
        let file = &self.segments[&location.segment].file.file;
        let start = location.record_offset + RECORD_HEADER_BYTES + u64::from(offset);
        read_exact_vectored_at(file, &mut bufs[..count], start).map_err(|_| StoreError::Io)?;
        if let Err(error) = self.verify_served(id, location, offset, &bufs[..count]) {
            if error == StoreError::Corrupt {
                self.integrity.reads_corrupt += 1;
            }
            return Err(error);
        }
        Ok(total)
    }

    /// Hands out at most [`POLL_DURABLE_BATCH_MAX`] reports per call.
    fn poll_durable(&mut self, done: &mut dyn FnMut(Durable)) {
        let mut delivered = 0usize;
        if let Some(durable) = self.peeked.take() {
            self.deliver(durable, done);
            delivered += 1;
        }
        while delivered < POLL_DURABLE_BATCH_MAX && !self.outstanding.is_empty() {
            match self.completions.try_recv() {
                Ok(durable) => self.deliver(durable, done),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    // The group-commit thread died: nothing outstanding is known durable.
                    let ticket = self.outstanding.pop_front().expect("checked non-empty");
                    done(Durable { ticket, result: Err(StoreError::Io) });
                }
            }
            delivered += 1;
        }
    }

    fn pending_durable(&self) -> usize {
        self.outstanding.len()
    }

    fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    fn for_each_chunk(&self, visit: &mut dyn FnMut(ChunkInfo)) {
        let now_ms = self.opened.elapsed().as_millis() as u64;
        for (&id, location) in &self.index {
            visit(ChunkInfo { id, len: location.len, age_ms: now_ms.saturating_sub(location.first_seen_ms) });
        }
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // Never blocks: the queue keeps a slot free for this message.
        let _ = self.requests.send(Request::Shutdown);
        if let Some(committer) = self.committer.take() {
            // A panicked thread has nothing left to flush.
            let _ = committer.join();
        }
    }
}

impl fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("active", &self.active)
            .field("chunks", &self.index.len())
            .field("used_bytes", &self.used_bytes)
            .field("disk_bytes", &self.disk_bytes)
            .field("puts_in_flight", &self.puts_in_flight)
            .field("pending_durable", &self.outstanding.len())
            .finish_non_exhaustive()
    }
}
