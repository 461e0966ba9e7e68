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
//! # Record format
//!
//! Every record starts at a multiple of [`RECORD_ALIGN_BYTES`] (64) and is a 64-byte
//! header followed by the payload, padded to the next multiple of 64. All integers are
//! little endian.
//!
//! ```text
//! frame, written once when the space is reserved:
//!   0..4    magic "BLR1"
//!   4       format version (1)
//!   5       kind: 1 = put, 2 = tombstone
//!   6..8    zero
//!   8..24   chunk id (u128)
//!   24..28  payload length in bytes (u32; 0 for tombstones)
//!   28..32  frame crc32c (over bytes 0..28)
//! commit block, all zero while the put is pending, written once at commit:
//!   32..36  state "CMT1" (committed)
//!   36..40  payload crc32c (standard crc32c of the whole payload)
//!   40..48  sequence number (u64)
//!   48..60  zero
//!   60..64  commit crc32c (over bytes 28..60: binds the block to its frame)
//! ```
//!
//! A put writes its frame (with a zero commit block) when `begin_put` reserves the space,
//! so a restart can always step over the reservation by its length even if the put never
//! completed. `commit_put` writes only the commit block, bytes that were zero until then,
//! so a torn commit can never damage the framing: a commit block that fails its crc reads
//! as "never committed". A header is 64 bytes at a 64-byte aligned offset, so it never
//! straddles a sector. Tombstones are a single header written in one `pwrite`.
//!
//! Sequence numbers are taken from one counter when a put is *committed* and when a
//! delete is issued, so the record with the highest sequence number for a chunk id is
//! the current state of that chunk, both in memory and after a restart (compaction keeps
//! a record's sequence number when it moves it).
//!
//! # Payload checksum
//!
//! The payload checksum is the standard crc32c of the whole payload, which is what the
//! restart scan recomputes while streaming the payload. Fragments reach `write_at` in any
//! order, so the writer cannot simply feed them to a running crc. Instead it uses the
//! linearity of the CRC over GF(2): with `raw(m)` the CRC register after feeding `m` into
//! a zero register,
//!
//! ```text
//! raw(payload) = XOR over fragments f of shift(raw(f), bytes of payload after f)
//! crc32c(payload) = !(shift(0xFFFF_FFFF, payload_len) ^ raw(payload))
//! ```
//!
//! where `shift(r, n)` (feeding `n` zero bytes) is a multiplication by `x^(8n)` modulo the
//! Castagnoli polynomial (a few hundred shift-and-xor steps). A fragment that starts where
//! the previous one ended simply continues a running register at plain crc32c speed; only
//! a fragment that starts elsewhere closes the run and pays for one shift, so in-order
//! arrival costs two shifts per chunk. The writer reads each fragment exactly once, from
//! the caller's slice; no payload is copied or read back, and the result does not depend
//! on how the payload was split or ordered.
//! Bytes that were never written read back as zeros (the space is `fallocate`d) and count
//! as zeros in the checksum too, so the checksum always matches what is on disk.
//!
//! # Durability (group commit)
//!
//! `commit_put` and `delete` write their records with `pwrite` and queue a sync request
//! (ticket, segment file) over a bounded channel to a background thread. The thread takes
//! every request queued so far, calls `fdatasync` once per segment file named in the
//! batch (and `fsync`s the directory if a segment file was created), then reports each
//! ticket back in request order. A failed `fdatasync` fails every ticket of that segment,
//! then and forever after (the kernel may have dropped the dirty pages), and makes the
//! store start a new segment. `poll_durable` drains the reports without blocking (at
//! most [`POLL_DURABLE_BATCH_MAX`] per call); `wait_durable` blocks for one. Puts in
//! flight plus unreported changes are bounded by `max_pending_durable` (`Busy` beyond),
//! which bounds both channels, so neither side ever blocks on a full queue.
//!
//! # Restart
//!
//! `open` scans the segments in order and validates every header. A header that fails
//! validation, or a record that runs past the end of its file, is a torn tail in the last
//! segment (the file is truncated there) and corruption in an earlier one (the rest of
//! that segment is skipped and counted). Pending reservations are skipped by length.
//! Committed puts have their payload checksum verified (this reads every committed
//! payload once at start-up); a mismatch discards the record, and a discarded record
//! still shadows older versions of its chunk, so a stale version is never served.
//! Tombstones and puts are ordered by sequence number.
//!
//! # Space reclamation
//!
//! Live and dead bytes are tracked per segment. [`DiskStore::compact`] rewrites sealed
//! segments that hold dead bytes, [`DiskStore::maybe_compact`] only those that are more
//! than half dead: live records are copied to the tail (keeping their sequence numbers),
//! the copies are synced, then the old segment file is deleted. A tombstone is carried
//! along unless no older segment exists that could still hold a record it kills.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
use std::time::Duration;
use std::vec::Vec;

use crate::store::{ChunkStore, Durable, PutReservation, StoreError};
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
pub const POLL_DURABLE_BATCH_MAX: usize = 256;

const MIN_SEGMENT_BYTES: u64 = 4096;
const MAX_PUTS_IN_FLIGHT_LIMIT: usize = 1 << 16;
const MAX_PENDING_DURABLE_LIMIT: usize = 1 << 20;
/// Buffer used for maintenance copies and for checking payloads at start-up.
const SCRATCH_BYTES: usize = 1 << 20;
const FALLOCATE_EINTR_RETRIES: u32 = 16;
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
    crc: payload_crc::PayloadCrc,
}

struct Slot {
    generation: u16,
    put: Option<Reservation>,
}

/// The records of a segment being compacted.
#[derive(Default)]
struct VictimRecords {
    live: Vec<(ChunkId, Location)>,
    tombstones: Vec<(ChunkId, TombstoneEntry)>,
}

enum Request {
    Sync { ticket: u64, segment: Option<Arc<SegmentFile>>, dir_sync: bool },
    Shutdown,
}

impl DiskStore {
    /// Opens (creating if needed) the store in `dir`, recovering whatever is on disk.
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

        let slots = (0..config.max_puts_in_flight).map(|_| Slot { generation: 0, put: None }).collect();
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
        })
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

    /// Rewrites every sealed segment that holds dead bytes (and drops tombstones that are
    /// no longer needed), then deletes it. Store maintenance: call it when idle; it copies
    /// and syncs synchronously, so it can take a while.
    pub fn compact(&mut self) -> Result<CompactionReport, DiskStoreError> {
        let oldest = self.segments.keys().next().copied();
        self.compact_where(usize::MAX, |id, segment| {
            segment.len_bytes > segment.live_bytes || (Some(id) == oldest && segment.tombstones > 0)
        })
    }

    /// Like [`compact`](Self::compact) but only for sealed segments that are more than half
    /// dead, and at most one segment per call (the oldest such), so one call copies at most
    /// half a segment. Cheap when there is nothing to do: call it whenever idle.
    pub fn maybe_compact(&mut self) -> Result<CompactionReport, DiskStoreError> {
        self.compact_where(1, |_, segment| (segment.len_bytes - segment.live_bytes) * 2 > segment.len_bytes)
    }

    fn compact_where(
        &mut self,
        segments_max: usize,
        wanted: impl Fn(u32, &Segment) -> bool,
    ) -> Result<CompactionReport, DiskStoreError> {
        let mut report = CompactionReport::default();
        let mut victims: BTreeMap<u32, VictimRecords> = self
            .segments
            .iter()
            .filter(|&(&id, segment)| {
                id != self.active && segment.puts_in_flight == 0 && (segment.len_bytes == 0 || wanted(id, segment))
            })
            .take(segments_max)
            .map(|(&id, _)| (id, VictimRecords::default()))
            .collect();
        if victims.is_empty() {
            return Ok(report);
        }
        // One pass over the index for all victims. Moving one victim's records never
        // touches another's: a chunk id has one location or one tombstone, not both.
        for (&id, &location) in &self.index {
            if let Some(records) = victims.get_mut(&location.segment) {
                records.live.push((id, location));
            }
        }
        for (&id, &entry) in &self.tombstones {
            if let Some(records) = victims.get_mut(&entry.segment) {
                records.tombstones.push((id, entry));
            }
        }
        // Oldest first, one at a time: whether a tombstone may be dropped depends on which
        // older segments still exist.
        for (victim, records) in victims {
            self.compact_segment(victim, records, &mut report)?;
        }
        Ok(report)
    }

    fn compact_segment(
        &mut self,
        victim: u32,
        records: VictimRecords,
        report: &mut CompactionReport,
    ) -> Result<(), DiskStoreError> {
        let VictimRecords { mut live, mut tombstones } = records;
        // In file order: the old segment is read sequentially.
        live.sort_unstable_by_key(|(_, location)| location.record_offset);
        tombstones.sort_unstable_by_key(|(_, entry)| entry.record_offset);
        // A tombstone kills records with lower sequence numbers, which were all written
        // before it: they can only be in this segment or older ones.
        let older_segment_exists = self.segments.range(..victim).next().is_some();
        let first_target = self.active;
        let mut copied = false;

        for (id, location) in live {
            self.copy_chunk(id, location, report)?;
            copied = true;
        }
        for (id, entry) in tombstones {
            if older_segment_exists {
                self.copy_tombstone(id, entry, report)?;
                copied = true;
            } else {
                self.tombstones.remove(&id);
                let segment = self.segment_mut(victim);
                segment.tombstones -= 1;
                segment.live_bytes -= entry.record_bytes;
                report.tombstones_dropped += 1;
            }
        }

        if copied {
            // The copies must be on disk before the only other copy goes away.
            let targets: Vec<Arc<SegmentFile>> =
                self.segments.range(first_target..).map(|(_, segment)| Arc::clone(&segment.file)).collect();
            for target in targets {
                if let Err(source) = target.file.sync_data() {
                    target.sync_failed.store(true, Ordering::Release);
                    return Err(DiskStoreError::io("syncing", &segment_path(&self.dir, target.id), source));
                }
            }
        }
        if self.dir_dirty {
            self.sync_dir()?;
            self.dir_dirty = false;
        }

        let segment = &self.segments[&victim];
        assert_eq!(segment.live_bytes, 0, "segment {victim} still holds live bytes after compaction");
        assert_eq!(segment.tombstones, 0, "segment {victim} still holds tombstones after compaction");
        assert_eq!(segment.puts_in_flight, 0, "segment {victim} has puts in flight");
        let len_bytes = segment.len_bytes;
        let path = segment_path(&self.dir, victim);
        fs::remove_file(&path).map_err(|source| DiskStoreError::io("deleting", &path, source))?;
        self.segments.remove(&victim);
        self.disk_bytes -= len_bytes;
        self.sync_dir()?;
        report.segments_removed += 1;
        report.bytes_freed += len_bytes;
        Ok(())
    }

    /// Copies a live chunk to the tail, keeping its sequence number.
    fn copy_chunk(&mut self, id: ChunkId, from: Location, report: &mut CompactionReport) -> Result<(), DiskStoreError> {
        let record_bytes = record_bytes(from.len);
        let from_file = Arc::clone(&self.segments[&from.segment].file);
        let (segment, record_offset) =
            self.append_record(record_bytes, &encode_header(KIND_PUT, id, from.len, None))?;
        let target = Arc::clone(&self.segments[&segment].file);
        let source_offset = from.record_offset + RECORD_HEADER_BYTES;
        let target_offset = record_offset + RECORD_HEADER_BYTES;
        let mut crc = 0u32;
        let mut copied_bytes = 0u64;
        let pieces = u64::from(from.len).div_ceil(SCRATCH_BYTES as u64);
        for _ in 0..pieces {
            let piece_bytes = (u64::from(from.len) - copied_bytes).min(SCRATCH_BYTES as u64) as usize;
            let piece = &mut self.scratch[..piece_bytes];
            from_file.file.read_exact_at(piece, source_offset + copied_bytes).map_err(|source| {
                DiskStoreError::io("reading a chunk to compact from", &segment_path(&self.dir, from.segment), source)
            })?;
            target.file.write_all_at(piece, target_offset + copied_bytes).map_err(|source| {
                DiskStoreError::io("copying a chunk into", &segment_path(&self.dir, segment), source)
            })?;
            crc = crc32c::crc32c_append(crc, piece);
            copied_bytes += piece_bytes as u64;
        }
        if crc != from.payload_crc {
            // The stored payload rotted: never copy bad bytes under a good checksum. The
            // copy stays a pending (dead) reservation; a tombstone makes the loss explicit.
            report.corrupt_chunks_discarded += 1;
            return self.discard_corrupt(id, from);
        }
        let commit = encode_commit(frame_crc(KIND_PUT, id, from.len), from.seq, from.payload_crc);
        target
            .file
            .write_all_at(&commit, record_offset + COMMIT_OFFSET)
            .map_err(|source| DiskStoreError::io("copying a chunk into", &segment_path(&self.dir, segment), source))?;
        self.segment_mut(segment).live_bytes += record_bytes;
        self.install_put(id, Location { segment, record_offset, ..from });
        report.records_copied += 1;
        report.bytes_copied += record_bytes;
        Ok(())
    }

    fn copy_tombstone(
        &mut self,
        id: ChunkId,
        from: TombstoneEntry,
        report: &mut CompactionReport,
    ) -> Result<(), DiskStoreError> {
        let (segment, record_offset) = self.append_tombstone(id, from.seq)?;
        let old = self.segment_mut(from.segment);
        old.tombstones -= 1;
        old.live_bytes -= from.record_bytes;
        self.tombstones
            .insert(id, TombstoneEntry { segment, record_offset, seq: from.seq, record_bytes: RECORD_HEADER_BYTES });
        report.records_copied += 1;
        report.bytes_copied += RECORD_HEADER_BYTES;
        Ok(())
    }

    /// Deletes a chunk whose payload turned out corrupt, with a fresh tombstone.
    fn discard_corrupt(&mut self, id: ChunkId, location: Location) -> Result<(), DiskStoreError> {
        let seq = self.take_seq();
        let (segment, record_offset) = self.append_tombstone(id, seq)?;
        let removed = self.index.remove(&id);
        assert!(removed.is_some(), "discarding a chunk that is not indexed");
        self.used_bytes -= u64::from(location.len);
        self.segment_mut(location.segment).live_bytes -= record_bytes(location.len);
        let previous = self
            .tombstones
            .insert(id, TombstoneEntry { segment, record_offset, seq, record_bytes: RECORD_HEADER_BYTES });
        assert!(previous.is_none(), "a live chunk also had a needed tombstone");
        Ok(())
    }

    /// Appends a committed tombstone and accounts it as a needed tombstone of its segment.
    fn append_tombstone(&mut self, id: ChunkId, seq: u64) -> Result<(u32, u64), DiskStoreError> {
        let frame_crc = frame_crc(KIND_TOMBSTONE, id, 0);
        let header = encode_header(KIND_TOMBSTONE, id, 0, Some(encode_commit(frame_crc, seq, 0)));
        let (segment, record_offset) = self.append_record(RECORD_HEADER_BYTES, &header)?;
        let target = self.segment_mut(segment);
        target.live_bytes += RECORD_HEADER_BYTES;
        target.tombstones += 1;
        Ok((segment, record_offset))
    }

    /// Reserves `record_bytes` at the tail and writes `header` there. On success the bytes
    /// belong to the file but are not yet counted live.
    fn append_record(&mut self, record_bytes: u64, header: &[u8; 64]) -> Result<(u32, u64), DiskStoreError> {
        let (segment, record_offset) = self.reserve_tail(record_bytes)?;
        let file = Arc::clone(&self.segments[&segment].file);
        if let Err(source) = file.file.write_all_at(header, record_offset) {
            self.give_back_tail(segment, record_offset, record_bytes);
            return Err(DiskStoreError::io("writing a record header to", &segment_path(&self.dir, segment), source));
        }
        Ok((segment, record_offset))
    }

    /// Extends the active segment (starting a new one first if needed) by `record_bytes`
    /// of allocated space.
    fn reserve_tail(&mut self, record_bytes: u64) -> Result<(u32, u64), DiskStoreError> {
        let active = &self.segments[&self.active];
        let roll = active.len_bytes > 0
            && (self.roll_requested
                || active.len_bytes + record_bytes > self.config.segment_bytes
                || active.file.sync_failed.load(Ordering::Acquire));
        if roll {
            let Some(id) = self.active.checked_add(1) else {
                let source = io::Error::other("segment ids exhausted");
                return Err(DiskStoreError::io("starting a new segment in", &self.dir, source));
            };
            let segment = create_segment(&self.dir, id)?;
            self.segments.insert(id, segment);
            self.active = id;
            self.roll_requested = false;
            self.dir_dirty = true;
        }
        let segment = self.segments.get_mut(&self.active).expect("the active segment exists");
        let record_offset = segment.len_bytes;
        if let Err(source) = allocate(&segment.file.file, record_offset, record_bytes) {
            // Undo any partial extension; if even that fails, leave the tail alone.
            if segment.file.file.set_len(record_offset).is_err() {
                self.roll_requested = true;
            }
            return Err(DiskStoreError::io("allocating space in", &segment_path(&self.dir, self.active), source));
        }
        segment.len_bytes += record_bytes;
        self.disk_bytes += record_bytes;
        Ok((self.active, record_offset))
    }

    /// Returns a just-reserved tail range whose header could not be written. If it cannot
    /// be cut off, the segment is sealed so no record ever follows the headerless range.
    fn give_back_tail(&mut self, segment: u32, record_offset: u64, record_bytes: u64) {
        let entry = self.segments.get_mut(&segment).expect("the segment exists");
        assert_eq!(entry.len_bytes, record_offset + record_bytes, "only the tail can be given back");
        if entry.file.file.set_len(record_offset).is_ok() {
            entry.len_bytes = record_offset;
            self.disk_bytes -= record_bytes;
        } else {
            self.roll_requested = true;
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Makes `location` the chunk's current record; the record it replaces (if any)
    /// becomes dead. The new record's bytes must already be counted live.
    fn install_put(&mut self, id: ChunkId, location: Location) {
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
    /// change, if any.
    fn queue_durable(&mut self, ticket: u64, segment: Option<u32>) -> Result<(), StoreError> {
        assert!(self.outstanding.len() < self.config.max_pending_durable, "durability queue over its bound");
        let file = segment.map(|id| Arc::clone(&self.segments[&id].file));
        let request = Request::Sync { ticket, segment: file, dir_sync: self.dir_dirty };
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
        if let Some(capacity_bytes) = self.config.capacity_bytes {
            if self.disk_bytes.saturating_add(record_bytes) > capacity_bytes {
                return Err(StoreError::DiskFull);
            }
        }
        let header = encode_header(KIND_PUT, id, len, None);
        let (segment, record_offset) =
            self.append_record(record_bytes, &header).map_err(|error| store_error(&error))?;
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
            crc: payload_crc::PayloadCrc::default(),
        });
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
        let file = &self.segments[&reservation.segment].file.file;
        file.write_all_at(data, reservation.record_offset + RECORD_HEADER_BYTES + u64::from(offset))
            .map_err(|error| io_store_error(&error))?;
        let entry = self.slots[slot].put.as_mut().expect("reservation checked above");
        entry.written_bytes += data.len() as u64;
        entry.crc.add(u64::from(offset), data, u64::from(reservation.len));
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
        self.queue_durable(ticket, Some(reservation.segment))?;
        self.release_slot(slot, &reservation);
        let location = Location {
            segment: reservation.segment,
            record_offset: reservation.record_offset,
            len: reservation.len,
            seq,
            payload_crc,
        };
        self.install_put(reservation.id, location);
        Ok(())
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
                self.used_bytes -= u64::from(location.len);
                self.segment_mut(location.segment).live_bytes -= record_bytes(location.len);
                let entry = TombstoneEntry { segment, record_offset, seq, record_bytes: RECORD_HEADER_BYTES };
                let previous = self.tombstones.insert(id, entry);
                assert!(previous.is_none(), "a live chunk also had a needed tombstone");
                Some(segment)
            }
        };
        self.queue_durable(ticket, segment)
    }

    fn read_at(&mut self, id: ChunkId, offset: u32, buf: &mut [u8]) -> Result<usize, StoreError> {
        let location = self.index.get(&id).ok_or(StoreError::NotFound)?;
        if offset >= location.len {
            return Ok(0);
        }
        let len = buf.len().min((location.len - offset) as usize);
        let file = &self.segments[&location.segment].file.file;
        file.read_exact_at(&mut buf[..len], location.record_offset + RECORD_HEADER_BYTES + u64::from(offset))
            .map_err(|_| StoreError::Io)?;
        Ok(len)
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

/// The group-commit thread: one `fdatasync` per dirty segment per batch of requests.
/// Runs until the store sends `Shutdown` (after everything queued before it) or goes away.
fn run_group_commit(
    requests: &Receiver<Request>,
    completions: &SyncSender<Durable>,
    dir: &File,
    batch_max: usize,
    sync_latency: &SyncLatency,
) {
    let mut tickets: Vec<(u64, Option<usize>)> = Vec::with_capacity(batch_max);
    let mut files: Vec<Arc<SegmentFile>> = Vec::with_capacity(batch_max);
    let mut dir_pending = false;
    loop {
        let Ok(first) = requests.recv() else { return };
        let mut shutdown = absorb(first, &mut tickets, &mut files, &mut dir_pending);
        while !shutdown && tickets.len() < batch_max {
            match requests.try_recv() {
                Ok(request) => shutdown = absorb(request, &mut tickets, &mut files, &mut dir_pending),
                Err(_) => break,
            }
        }
        let sync_started = std::time::Instant::now();
        let dir_ok = !dir_pending || dir.sync_all().is_ok();
        if dir_ok {
            dir_pending = false;
        }
        for file in &files {
            if file.file.sync_data().is_err() {
                file.sync_failed.store(true, Ordering::Release);
            }
        }
        if let Ok(mut histogram) = sync_latency.lock() {
            histogram.observe_us(sync_started.elapsed().as_micros() as u64);
        }
        for (ticket, file) in tickets.drain(..) {
            let file_ok = file.is_none_or(|index| !files[index].sync_failed.load(Ordering::Acquire));
            let result = if dir_ok && file_ok { Ok(()) } else { Err(StoreError::Io) };
            // Never blocks: the store bounds the tickets outstanding to the queue length.
            // An error means the store is gone and nobody is waiting for the report.
            let _ = completions.send(Durable { ticket, result });
        }
        files.clear();
        if shutdown {
            return;
        }
    }
}

/// Adds a request to the batch; returns whether it was `Shutdown`.
fn absorb(
    request: Request,
    tickets: &mut Vec<(u64, Option<usize>)>,
    files: &mut Vec<Arc<SegmentFile>>,
    dir_pending: &mut bool,
) -> bool {
    match request {
        Request::Shutdown => true,
        Request::Sync { ticket, segment, dir_sync } => {
            *dir_pending |= dir_sync;
            let index = segment.map(|segment| match files.iter().position(|file| file.id == segment.id) {
                Some(index) => index,
                None => {
                    files.push(segment);
                    files.len() - 1
                }
            });
            tickets.push((ticket, index));
            false
        }
    }
}

// ---------------------------------------------------------------------------------------
// Recovery.

struct Recovered {
    segments: BTreeMap<u32, Segment>,
    index: HashMap<ChunkId, Location>,
    tombstones: HashMap<ChunkId, TombstoneEntry>,
    used_bytes: u64,
    max_seq: u64,
    report: RecoveryReport,
}

#[derive(Clone, Copy)]
enum Winner {
    Live {
        len: u32,
        payload_crc: u32,
    },
    Tombstone,
    /// A committed put whose payload failed its checksum: served as absent.
    Corrupt,
}

/// The newest record seen for a chunk id during the scan.
#[derive(Clone, Copy)]
struct Best {
    seq: u64,
    segment: u32,
    record_offset: u64,
    record_bytes: u64,
    winner: Winner,
}

fn recover(dir: &Path, config: &DiskStoreConfig, scratch: &mut [u8]) -> Result<Recovered, DiskStoreError> {
    let mut ids = Vec::new();
    let entries = fs::read_dir(dir).map_err(|source| DiskStoreError::io("listing", dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| DiskStoreError::io("listing", dir, source))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();

    let mut report = RecoveryReport::default();
    let mut best: HashMap<ChunkId, Best> = HashMap::with_capacity(config.expected_chunks);
    let mut max_seq = 0u64;
    let mut segments = BTreeMap::new();
    let last = ids.last().copied();
    for id in ids {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| DiskStoreError::io("opening", &path, source))?;
        let file_len =
            file.metadata().map_err(|source| DiskStoreError::io("reading the size of", &path, source))?.len();
        report.segments_scanned += 1;
        let mut scan = Scan { segment: id, file: &file, path: &path, file_len, best: &mut best, max_seq: &mut max_seq };
        let bad_at = scan.run(scratch, &mut report)?;
        let mut len_bytes = file_len;
        if let Some(bad_at) = bad_at {
            if Some(id) == last {
                file.set_len(bad_at)
                    .map_err(|source| DiskStoreError::io("truncating the torn tail of", &path, source))?;
                file.sync_all().map_err(|source| DiskStoreError::io("syncing", &path, source))?;
                report.torn_tail_bytes_truncated += file_len - bad_at;
                len_bytes = bad_at;
            } else {
                report.corrupt_records_skipped += 1;
                report.corrupt_bytes_skipped += file_len - bad_at;
            }
        }
        let file = Arc::new(SegmentFile { id, file, sync_failed: AtomicBool::new(false) });
        segments.insert(id, Segment { file, len_bytes, live_bytes: 0, puts_in_flight: 0, tombstones: 0 });
    }

    let mut index = HashMap::with_capacity(config.expected_chunks.max(best.len()));
    let mut tombstones = HashMap::new();
    let mut used_bytes = 0u64;
    for (id, best) in best {
        let segment = segments.get_mut(&best.segment).expect("scanned segment");
        segment.live_bytes += best.record_bytes;
        let Best { seq, segment: segment_id, record_offset, record_bytes, winner } = best;
        match winner {
            Winner::Live { len, payload_crc } => {
                used_bytes += u64::from(len);
                index.insert(id, Location { segment: segment_id, record_offset, len, seq, payload_crc });
            }
            Winner::Tombstone | Winner::Corrupt => {
                segment.tombstones += 1;
                tombstones.insert(id, TombstoneEntry { segment: segment_id, record_offset, seq, record_bytes });
            }
        }
    }
    Ok(Recovered { segments, index, tombstones, used_bytes, max_seq, report })
}

struct Scan<'a> {
    segment: u32,
    file: &'a File,
    path: &'a Path,
    file_len: u64,
    best: &'a mut HashMap<ChunkId, Best>,
    max_seq: &'a mut u64,
}

impl Scan<'_> {
    /// Scans every record; returns the offset of the first one that is not a whole,
    /// valid record, if any.
    fn run(&mut self, scratch: &mut [u8], report: &mut RecoveryReport) -> Result<Option<u64>, DiskStoreError> {
        let mut offset = 0u64;
        // Every record is at least a header long.
        let records_max = self.file_len / RECORD_HEADER_BYTES + 1;
        for _ in 0..records_max {
            if offset >= self.file_len {
                break;
            }
            if self.file_len - offset < RECORD_HEADER_BYTES {
                return Ok(Some(offset));
            }
            let mut header = [0u8; RECORD_HEADER_BYTES as usize];
            self.file.read_exact_at(&mut header, offset).map_err(|source| self.error(source))?;
            let Some(decoded) = decode_header(&header) else {
                return Ok(Some(offset));
            };
            let record_bytes = record_bytes(decoded.len);
            if record_bytes > self.file_len - offset {
                return Ok(Some(offset));
            }
            match decoded.commit {
                CommitState::Pending => report.pending_reservations_skipped += 1,
                CommitState::Committed { seq, payload_crc } => {
                    *self.max_seq = (*self.max_seq).max(seq);
                    let candidate = Best {
                        seq,
                        segment: self.segment,
                        record_offset: offset,
                        record_bytes,
                        winner: if decoded.kind == KIND_TOMBSTONE {
                            Winner::Tombstone
                        } else {
                            Winner::Live { len: decoded.len, payload_crc }
                        },
                    };
                    self.offer(decoded.id, candidate, scratch, report)?;
                }
            }
            offset += record_bytes;
        }
        Ok(None)
    }

    fn offer(
        &mut self,
        id: ChunkId,
        mut candidate: Best,
        scratch: &mut [u8],
        report: &mut RecoveryReport,
    ) -> Result<(), DiskStoreError> {
        let current = self.best.get(&id).copied();
        if current.is_some_and(|current| current.seq > candidate.seq) {
            // Superseded: no need to read its payload.
            return Ok(());
        }
        if let Winner::Live { len, payload_crc } = candidate.winner {
            let payload_offset = candidate.record_offset + RECORD_HEADER_BYTES;
            if self.payload_crc(payload_offset, len, scratch)? != payload_crc {
                report.checksum_mismatches_discarded += 1;
                candidate.winner = Winner::Corrupt;
            }
        }
        report.records_loaded += u64::from(!matches!(candidate.winner, Winner::Corrupt));
        let replace = match current {
            None => true,
            Some(current) if current.seq < candidate.seq => true,
            // The same sequence number twice is a compaction copy next to its original
            // (a crash came before the original's segment was deleted): the later copy
            // wins unless it is corrupt and the other is not.
            Some(current) => !matches!(candidate.winner, Winner::Corrupt) || matches!(current.winner, Winner::Corrupt),
        };
        if replace {
            self.best.insert(id, candidate);
        }
        Ok(())
    }

    fn payload_crc(&self, payload_offset: u64, len: u32, scratch: &mut [u8]) -> Result<u32, DiskStoreError> {
        let mut crc = 0u32;
        let mut read_bytes = 0u64;
        let pieces = u64::from(len).div_ceil(scratch.len() as u64);
        for _ in 0..pieces {
            let piece_bytes = (u64::from(len) - read_bytes).min(scratch.len() as u64) as usize;
            let piece = &mut scratch[..piece_bytes];
            self.file.read_exact_at(piece, payload_offset + read_bytes).map_err(|source| self.error(source))?;
            crc = crc32c::crc32c_append(crc, piece);
            read_bytes += piece_bytes as u64;
        }
        Ok(crc)
    }

    fn error(&self, source: io::Error) -> DiskStoreError {
        DiskStoreError::io("reading", self.path, source)
    }
}

// ---------------------------------------------------------------------------------------
// Record encoding.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitState {
    /// Never committed, or the commit block was torn.
    Pending,
    Committed {
        seq: u64,
        payload_crc: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DecodedHeader {
    kind: u8,
    id: ChunkId,
    len: u32,
    commit: CommitState,
}

/// Bytes a record with a `len`-byte payload takes on disk.
fn record_bytes(len: u32) -> u64 {
    (RECORD_HEADER_BYTES + u64::from(len)).next_multiple_of(RECORD_ALIGN_BYTES)
}

fn encode_frame(kind: u8, id: ChunkId, len: u32) -> [u8; 32] {
    let mut frame = [0u8; 32];
    frame[0..4].copy_from_slice(&MAGIC);
    frame[4] = FORMAT_VERSION;
    frame[5] = kind;
    frame[8..24].copy_from_slice(&id.to_le_bytes());
    frame[24..28].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&frame[0..28]);
    frame[28..32].copy_from_slice(&crc.to_le_bytes());
    frame
}

fn frame_crc(kind: u8, id: ChunkId, len: u32) -> u32 {
    let frame = encode_frame(kind, id, len);
    u32::from_le_bytes([frame[28], frame[29], frame[30], frame[31]])
}

fn commit_crc(frame_crc: u32, block: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame_crc.to_le_bytes()), &block[0..28])
}

fn encode_commit(frame_crc: u32, seq: u64, payload_crc: u32) -> [u8; 32] {
    let mut block = [0u8; 32];
    block[0..4].copy_from_slice(&STATE_COMMITTED.to_le_bytes());
    block[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    block[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = commit_crc(frame_crc, &block);
    block[28..32].copy_from_slice(&crc.to_le_bytes());
    block
}

fn encode_header(kind: u8, id: ChunkId, len: u32, commit: Option<[u8; 32]>) -> [u8; 64] {
    let mut header = [0u8; 64];
    header[0..32].copy_from_slice(&encode_frame(kind, id, len));
    if let Some(commit) = commit {
        header[32..64].copy_from_slice(&commit);
    }
    header
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

/// `None` when the frame is not a valid record frame (torn, garbage or zeros).
fn decode_header(header: &[u8; 64]) -> Option<DecodedHeader> {
    let frame = &header[0..32];
    let frame_crc = le_u32(&frame[28..32]);
    if frame[0..4] != MAGIC
        || frame[4] != FORMAT_VERSION
        || frame[6..8] != [0, 0]
        || crc32c::crc32c(&frame[0..28]) != frame_crc
    {
        return None;
    }
    let kind = frame[5];
    let id = ChunkId::from_le_bytes(frame[8..24].try_into().expect("16 bytes"));
    let len = le_u32(&frame[24..28]);
    let valid_shape = match kind {
        KIND_PUT => len <= MAX_CHUNK_LIMIT_BYTES,
        KIND_TOMBSTONE => len == 0,
        _ => false,
    };
    if !valid_shape {
        return None;
    }
    let block = &header[32..64];
    let committed = le_u32(&block[0..4]) == STATE_COMMITTED
        && block[16..28].iter().all(|&byte| byte == 0)
        && commit_crc(frame_crc, block) == le_u32(&block[28..32]);
    let commit = if committed {
        let seq = u64::from_le_bytes(block[8..16].try_into().expect("8 bytes"));
        CommitState::Committed { seq, payload_crc: le_u32(&block[4..8]) }
    } else {
        CommitState::Pending
    };
    Some(DecodedHeader { kind, id, len, commit })
}

// ---------------------------------------------------------------------------------------
// Files.

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{id:06}{SEGMENT_SUFFIX}"))
}

fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() < 6 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id > 0)
}

fn create_segment(dir: &Path, id: u32) -> Result<Segment, DiskStoreError> {
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
fn allocate(file: &File, offset: u64, len_bytes: u64) -> io::Result<()> {
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
fn lock_exclusive(file: &File) -> io::Result<bool> {
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
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: `file` is an open descriptor borrowed for the whole call; flock takes no
    // pointers.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(false) } else { Err(error) }
}

fn is_no_space(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

fn io_store_error(error: &io::Error) -> StoreError {
    if is_no_space(error) { StoreError::DiskFull } else { StoreError::Io }
}

fn store_error(error: &DiskStoreError) -> StoreError {
    match error {
        DiskStoreError::DiskFull { .. } => StoreError::DiskFull,
        _ => StoreError::Io,
    }
}

// ---------------------------------------------------------------------------------------
// Order-independent payload checksum (see the module documentation).

mod payload_crc {
    /// The Castagnoli polynomial, bit-reflected (as the crc32c register uses it).
    const POLY: u32 = 0x82F6_3B78;

    /// `a * b mod P` over GF(2), both in reflected order (bit 31 is the `x^0` term).
    const fn mul_mod_p(a: u32, mut b: u32) -> u32 {
        let mut product = 0u32;
        let mut bit = 0;
        while bit < 32 {
            if a & (1u32 << (31 - bit)) != 0 {
                product ^= b;
            }
            b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
            bit += 1;
        }
        product
    }

    /// `X_POW_2K[k]` is `x^(2^k) mod P`.
    const X_POW_2K: [u32; 64] = {
        let mut table = [0u32; 64];
        let mut power = 1u32 << 30; // x^1
        let mut k = 0;
        while k < 64 {
            table[k] = power;
            power = mul_mod_p(power, power);
            k += 1;
        }
        table
    };

    /// `x^(8 * len_bytes) mod P`: the operator that feeds `len_bytes` zero bytes.
    fn x_pow_8n(len_bytes: u64) -> u32 {
        let mut result = 1u32 << 31; // x^0
        let mut rest = len_bytes;
        let mut k = 3; // 8 = 2^3
        while rest != 0 && k < 64 {
            if rest & 1 != 0 {
                result = mul_mod_p(X_POW_2K[k], result);
            }
            rest >>= 1;
            k += 1;
        }
        result
    }

    /// The register after feeding `len_bytes` zero bytes into `register`.
    pub(super) fn shift(register: u32, len_bytes: u64) -> u32 {
        mul_mod_p(x_pow_8n(len_bytes), register)
    }

    /// The CRC register after feeding `data` into a zero register (no pre/post inversion).
    #[cfg(test)]
    pub(super) fn raw(data: &[u8]) -> u32 {
        !crc32c::crc32c_append(!0, data)
    }

    /// The crc32c of a payload whose fragments arrive in any order.
    ///
    /// Fragments that continue the current run (start where the previous one ended) are
    /// folded into the run's raw CRC at plain crc32c speed; a fragment anywhere else
    /// closes the run, which is shifted into place once and XORed into `acc`. In-order
    /// arrival therefore costs two shifts per chunk, fully scrambled arrival one per
    /// fragment.
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct PayloadCrc {
        /// XOR of the closed runs, each shifted by the payload bytes after it.
        acc: u32,
        /// Raw CRC of the open run.
        run_raw: u32,
        /// Payload offset just past the open run.
        run_end: u64,
    }

    impl PayloadCrc {
        /// Adds `data`, written at `offset` of a `len_bytes` payload. Byte ranges must not
        /// overlap.
        pub(super) fn add(&mut self, offset: u64, data: &[u8], len_bytes: u64) {
            assert!(offset + data.len() as u64 <= len_bytes, "fragment past the payload");
            if offset != self.run_end {
                self.acc ^= shift(self.run_raw, len_bytes - self.run_end);
                self.run_raw = 0;
            }
            // Continue the raw register: crc32c_append inverts on the way in and out.
            self.run_raw = !crc32c::crc32c_append(!self.run_raw, data);
            self.run_end = offset + data.len() as u64;
        }

        /// The standard crc32c of the `len_bytes` payload (unwritten bytes count as zeros).
        pub(super) fn finish(&self, len_bytes: u64) -> u32 {
            assert!(self.run_end <= len_bytes, "payload shorter than its fragments");
            let raw = self.acc ^ shift(self.run_raw, len_bytes - self.run_end);
            // Standard crc32c starts from an all-ones register and inverts the result.
            !(shift(!0, len_bytes) ^ raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::process::Command;

    const TIMEOUT: Duration = Duration::from_millis(100);

    fn small_config() -> DiskStoreConfig {
        DiskStoreConfig {
            segment_bytes: 64 << 10,
            capacity_bytes: None,
            max_chunk_bytes: 64 << 10,
            max_puts_in_flight: 8,
            max_pending_durable: 1024,
            expected_chunks: 1024,
        }
    }

    fn pattern(id: ChunkId, len: usize) -> Vec<u8> {
        let seed = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (0..len as u64).map(|i| (seed.wrapping_add(i.wrapping_mul(0x2545_F491)) >> 13) as u8).collect()
    }

    /// Writes `data` in `frag_bytes` fragments, odd ones backwards, then even ones.
    fn write_scrambled(store: &mut DiskStore, put: PutReservation, data: &[u8], frag_bytes: usize) {
        let count = data.len().div_ceil(frag_bytes);
        let odd = (0..count).rev().filter(|index| index % 2 == 1);
        let even = (0..count).filter(|index| index % 2 == 0);
        for index in odd.chain(even) {
            let start = index * frag_bytes;
            let end = (start + frag_bytes).min(data.len());
            store.write_at(put, start as u32, &data[start..end]).unwrap();
        }
    }

    fn put(store: &mut DiskStore, id: ChunkId, data: &[u8], ticket: u64) {
        let reservation = store.begin_put(id, data.len() as u32).unwrap();
        write_scrambled(store, reservation, data, 1000);
        store.commit_put(reservation, ticket).unwrap();
    }

    fn read_all(store: &mut DiskStore, id: ChunkId) -> Result<Vec<u8>, StoreError> {
        let len = store.chunk_len(id).ok_or(StoreError::NotFound)?;
        let mut buf = vec![0u8; len as usize + 10];
        let read = store.read_at(id, 0, &mut buf)?;
        assert_eq!(read, len as usize);
        buf.truncate(read);
        Ok(buf)
    }

    /// Waits, boundedly, until `count` reports have arrived.
    fn drain_durable(store: &mut DiskStore, count: usize) -> Vec<Durable> {
        let mut reports = Vec::new();
        for _ in 0..1000 {
            if reports.len() >= count {
                break;
            }
            store.wait_durable(TIMEOUT);
            let mut batch = 0;
            store.poll_durable(&mut |durable| {
                reports.push(durable);
                batch += 1;
            });
            assert!(batch <= POLL_DURABLE_BATCH_MAX);
        }
        assert_eq!(reports.len(), count, "durability reports missing");
        assert_eq!(store.pending_durable(), 0);
        reports
    }

    fn drain_all(store: &mut DiskStore) {
        let pending = store.pending_durable();
        for report in drain_durable(store, pending) {
            assert_eq!(report.result, Ok(()), "ticket {}", report.ticket);
        }
    }

    fn open(dir: &Path, config: DiskStoreConfig) -> DiskStore {
        DiskStore::open(dir, config).unwrap()
    }

    fn damage(path: &Path, offset: u64, bytes: &[u8]) {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(bytes, offset).unwrap();
    }

    proptest! {
        #[test]
        fn payload_crc_is_crc32c_for_any_split_and_order(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            rotate in any::<usize>(),
        ) {
            let mut bounds: Vec<usize> = cuts.iter().map(|cut| cut % (data.len() + 1)).collect();
            bounds.push(0);
            bounds.push(data.len());
            bounds.sort_unstable();
            bounds.dedup();
            let mut fragments: Vec<(usize, usize)> =
                bounds.windows(2).map(|pair| (pair[0], pair[1])).collect();
            if !fragments.is_empty() {
                let by = rotate % fragments.len();
                fragments.rotate_left(by);
                fragments.reverse();
            }
            let len = data.len() as u64;
            let mut crc = payload_crc::PayloadCrc::default();
            for &(start, end) in &fragments {
                crc.add(start as u64, &data[start..end], len);
            }
            prop_assert_eq!(crc.finish(len), crc32c::crc32c(&data));
            // In order, as one run.
            let mut in_order = payload_crc::PayloadCrc::default();
            for (start, end) in bounds.windows(2).map(|pair| (pair[0], pair[1])) {
                in_order.add(start as u64, &data[start..end], len);
            }
            prop_assert_eq!(in_order.finish(len), crc32c::crc32c(&data));
        }
    }

    #[test]
    #[ignore]
    fn bench_fragment_terms() {
        let data = pattern(1, 4 << 20);
        let len = data.len() as u64;
        for (name, reversed) in [("in order", false), ("reversed", true)] {
            let mut fragments: Vec<(usize, &[u8])> =
                data.chunks(1400).enumerate().map(|(index, fragment)| (index * 1400, fragment)).collect();
            if reversed {
                fragments.reverse();
            }
            let start = std::time::Instant::now();
            for _ in 0..20 {
                let mut crc = payload_crc::PayloadCrc::default();
                for &(offset, fragment) in &fragments {
                    crc.add(offset as u64, fragment, len);
                }
                assert_eq!(crc.finish(len), crc32c::crc32c(&data));
            }
            eprintln!("{name}: {:?} per 4 MiB chunk", start.elapsed() / 20);
        }
        let start = std::time::Instant::now();
        for _ in 0..20 {
            std::hint::black_box(crc32c::crc32c(&data));
        }
        eprintln!("plain crc32c: {:?}", start.elapsed() / 20);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put { id: u8, len: u16, frag_bytes: u16, reversed: bool },
        Abort { id: u8, len: u16 },
        Delete { id: u8 },
        Compact,
        MaybeCompact,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..8u8, 0..3000u16, 1..1500u16, any::<bool>())
                .prop_map(|(id, len, frag_bytes, reversed)| {
                    Op::Put { id, len, frag_bytes, reversed }
                }),
            1 => (0..8u8, 0..3000u16).prop_map(|(id, len)| Op::Abort { id, len }),
            3 => (0..10u8).prop_map(|id| Op::Delete { id }),
            1 => Just(Op::Compact),
            1 => Just(Op::MaybeCompact),
            1 => Just(Op::Restart),
        ]
    }

    fn check_model(store: &mut DiskStore, model: &HashMap<ChunkId, Vec<u8>>) {
        for id in 0..10u128 {
            assert_eq!(read_all(store, id).ok().as_ref(), model.get(&id), "chunk {id}");
        }
        let used: usize = model.values().map(Vec::len).sum();
        assert_eq!(store.used_bytes(), used as u64);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_operations_match_a_model(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let config = DiskStoreConfig { segment_bytes: 4096, ..small_config() };
            let mut store = open(dir.path(), config);
            let mut model: HashMap<ChunkId, Vec<u8>> = HashMap::new();
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Put { id, len, frag_bytes, reversed } => {
                        let id = ChunkId::from(id);
                        let data = pattern(id * 1000 + step as u128, usize::from(len));
                        let put = store.begin_put(id, u32::from(len)).unwrap();
                        let mut fragments: Vec<usize> =
                            (0..data.len().div_ceil(usize::from(frag_bytes))).collect();
                        if reversed {
                            fragments.reverse();
                        }
                        for index in fragments {
                            let start = index * usize::from(frag_bytes);
                            let end = (start + usize::from(frag_bytes)).min(data.len());
                            store.write_at(put, start as u32, &data[start..end]).unwrap();
                        }
                        store.commit_put(put, step as u64).unwrap();
                        model.insert(id, data);
                    }
                    Op::Abort { id, len } => {
                        let put = store.begin_put(ChunkId::from(id), u32::from(len)).unwrap();
                        store.write_at(put, 0, &vec![0xEE; usize::from(len / 2)]).unwrap();
                        store.abort_put(put);
                    }
                    Op::Delete { id } => {
                        store.delete(ChunkId::from(id), step as u64).unwrap();
                        model.remove(&ChunkId::from(id));
                    }
                    Op::Compact => {
                        drain_all(&mut store);
                        store.compact().unwrap();
                    }
                    Op::MaybeCompact => {
                        drain_all(&mut store);
                        store.maybe_compact().unwrap();
                    }
                    Op::Restart => {
                        drain_all(&mut store);
                        drop(store);
                        store = open(dir.path(), config);
                        let report = *store.recovery_report();
                        prop_assert_eq!(report.torn_tail_bytes_truncated, 0);
                        prop_assert_eq!(report.corrupt_records_skipped, 0);
                        prop_assert_eq!(report.checksum_mismatches_discarded, 0);
                        prop_assert_eq!(report.chunks_live, model.len() as u64);
                    }
                }
                check_model(&mut store, &model);
                let live: u64 = store.segments.values().map(|segment| segment.live_bytes).sum();
                let index_bytes: u64 =
                    store.index.values().map(|location| record_bytes(location.len)).sum();
                let tombstone_bytes: u64 =
                    store.tombstones.values().map(|entry| entry.record_bytes).sum();
                let expected_live = index_bytes + tombstone_bytes;
                prop_assert_eq!(live, expected_live);
                let disk: u64 = store.segments.values().map(|segment| segment.len_bytes).sum();
                prop_assert_eq!(disk, store.disk_bytes());
            }
            drain_all(&mut store);
            drop(store);
            let mut store = open(dir.path(), config);
            check_model(&mut store, &model);
        }
    }

    #[test]
    fn shift_feeds_zero_bytes() {
        let data = b"beeline chunk payload";
        for zeros in [0usize, 1, 7, 64, 1000, 4097] {
            let mut padded = data.to_vec();
            padded.resize(data.len() + zeros, 0);
            assert_eq!(payload_crc::shift(payload_crc::raw(data), zeros as u64), payload_crc::raw(&padded));
        }
        assert_eq!(payload_crc::PayloadCrc::default().finish(0), crc32c::crc32c(&[]));
        // Unwritten bytes count as the zeros the file holds there.
        let mut crc = payload_crc::PayloadCrc::default();
        crc.add(5, b"abc", 20);
        let mut expected = [0u8; 20];
        expected[5..8].copy_from_slice(b"abc");
        assert_eq!(crc.finish(20), crc32c::crc32c(&expected));
    }

    #[test]
    fn header_round_trip_and_damage_detected() {
        let id: ChunkId = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        let pending = encode_header(KIND_PUT, id, 5000, None);
        let decoded = decode_header(&pending).unwrap();
        assert_eq!(decoded, DecodedHeader { kind: KIND_PUT, id, len: 5000, commit: CommitState::Pending });

        let commit = encode_commit(frame_crc(KIND_PUT, id, 5000), 77, 0xdead_beef);
        let committed = encode_header(KIND_PUT, id, 5000, Some(commit));
        let expected = CommitState::Committed { seq: 77, payload_crc: 0xdead_beef };
        assert_eq!(decode_header(&committed).unwrap().commit, expected);

        for byte in 0..32 {
            let mut damaged = committed;
            damaged[byte] ^= 0x10;
            assert!(decode_header(&damaged).is_none(), "frame byte {byte}");
        }
        for byte in 32..64 {
            let mut damaged = committed;
            damaged[byte] ^= 0x10;
            assert_eq!(decode_header(&damaged).unwrap().commit, CommitState::Pending, "commit byte {byte}");
        }
        // A commit block belongs to its own frame only.
        let mut other = encode_header(KIND_PUT, id + 1, 5000, None);
        other[32..64].copy_from_slice(&commit);
        assert_eq!(decode_header(&other).unwrap().commit, CommitState::Pending);
        assert!(decode_header(&[0u8; 64]).is_none());

        let tombstone =
            encode_header(KIND_TOMBSTONE, id, 0, Some(encode_commit(frame_crc(KIND_TOMBSTONE, id, 0), 78, 0)));
        let decoded = decode_header(&tombstone).unwrap();
        assert_eq!(decoded.kind, KIND_TOMBSTONE);
        assert_eq!(decoded.commit, CommitState::Committed { seq: 78, payload_crc: 0 });
        assert_eq!(record_bytes(0), 64);
        assert_eq!(record_bytes(1), 128);
        assert_eq!(record_bytes(64), 128);
        assert_eq!(record_bytes(65), 192);
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_path(Path::new("/d"), 1), Path::new("/d/seg-000001.log"));
        assert_eq!(parse_segment_name("seg-000001.log"), Some(1));
        assert_eq!(parse_segment_name("seg-1234567.log"), Some(1_234_567));
        assert_eq!(parse_segment_name("seg-000000.log"), None);
        assert_eq!(parse_segment_name("seg-00001.log"), None);
        assert_eq!(parse_segment_name("seg-00000x.log"), None);
        assert_eq!(parse_segment_name("LOCK"), None);
    }

    #[test]
    fn round_trip_with_out_of_order_fragments() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), small_config());
        let data = pattern(1, 10_000);
        put(&mut store, 1, &data, 7);
        assert_eq!(store.chunk_len(1), Some(10_000));
        assert_eq!(store.used_bytes(), 10_000);
        assert_eq!(read_all(&mut store, 1).unwrap(), data);

        let mut buf = [0u8; 100];
        assert_eq!(store.read_at(1, 1234, &mut buf), Ok(100));
        assert_eq!(buf[..], data[1234..1334]);
        assert_eq!(store.read_at(1, 9950, &mut buf), Ok(50));
        assert_eq!(buf[..50], data[9950..]);
        assert_eq!(store.read_at(1, 10_000, &mut buf), Ok(0));
        assert_eq!(store.read_at(1, 20_000, &mut buf), Ok(0));
        assert_eq!(store.read_at(2, 0, &mut buf), Err(StoreError::NotFound));
        assert_eq!(store.chunk_len(2), None);

        // Fragments of one byte, and an empty chunk.
        let small = pattern(3, 300);
        let reservation = store.begin_put(3, 300).unwrap();
        write_scrambled(&mut store, reservation, &small, 1);
        store.commit_put(reservation, 8).unwrap();
        assert_eq!(read_all(&mut store, 3).unwrap(), small);
        put(&mut store, 4, &[], 9);
        assert_eq!(store.chunk_len(4), Some(0));

        let reports = drain_durable(&mut store, 3);
        let tickets: Vec<u64> = reports.iter().map(|report| report.ticket).collect();
        assert_eq!(tickets, [7, 8, 9]);
        assert!(reports.iter().all(|report| report.result.is_ok()));
        assert!(!store.wait_durable(TIMEOUT), "nothing pending: returns at once");
    }

    #[test]
    fn restart_recovers_committed_skips_uncommitted_and_keeps_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config();
        let (a1, a2, b, c) = (pattern(10, 3000), pattern(11, 7000), pattern(12, 2500), pattern(13, 1));
        let mut store = open(dir.path(), config);
        put(&mut store, 1, &a1, 1);
        put(&mut store, 2, &b, 2);
        put(&mut store, 3, &c, 3);
        let unfinished = store.begin_put(4, 4000).unwrap();
        store.write_at(unfinished, 0, &pattern(14, 2000)).unwrap();
        let aborted = store.begin_put(5, 100).unwrap();
        store.write_at(aborted, 0, &pattern(15, 100)).unwrap();
        store.abort_put(aborted);
        store.delete(2, 4).unwrap();
        put(&mut store, 1, &a2, 5);
        assert_eq!(read_all(&mut store, 1).unwrap(), a2);
        assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
        drain_all(&mut store);
        drop(store);

        let mut store = open(dir.path(), config);
        let report = *store.recovery_report();
        assert_eq!(report.pending_reservations_skipped, 2, "{report:?}");
        assert_eq!(report.chunks_live, 2, "{report:?}");
        assert_eq!(report.torn_tail_bytes_truncated, 0);
        assert_eq!(read_all(&mut store, 1).unwrap(), a2);
        assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
        assert_eq!(read_all(&mut store, 3).unwrap(), c);
        assert_eq!(store.chunk_len(4), None);
        assert_eq!(store.chunk_len(5), None);
        assert_eq!(store.used_bytes(), (a2.len() + c.len()) as u64);

        // New records append after the recovered ones and survive another restart.
        let f = pattern(16, 4444);
        put(&mut store, 6, &f, 6);
        drain_all(&mut store);
        drop(store);
        let mut store = open(dir.path(), config);
        assert_eq!(read_all(&mut store, 6).unwrap(), f);
        assert_eq!(read_all(&mut store, 1).unwrap(), a2);
        assert_eq!(read_all(&mut store, 3).unwrap(), c);
        assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
    }

    fn torn_tail_case(tear: impl FnOnce(&Path)) {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config();
        let (a, b, c) = (pattern(1, 5000), pattern(2, 5000), pattern(3, 3000));
        let mut store = open(dir.path(), config);
        put(&mut store, 1, &a, 1);
        put(&mut store, 2, &b, 2);
        assert_eq!(store.index[&2].record_offset, record_bytes(5000));
        drain_all(&mut store);
        drop(store);
        tear(&segment_path(dir.path(), 1));

        let mut store = open(dir.path(), config);
        let report = *store.recovery_report();
        assert!(report.torn_tail_bytes_truncated > 0, "{report:?}");
        assert_eq!(report.corrupt_records_skipped, 0);
        assert_eq!(read_all(&mut store, 1).unwrap(), a);
        assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
        assert_eq!(store.disk_bytes(), record_bytes(5000));
        put(&mut store, 3, &c, 3);
        drain_all(&mut store);
        drop(store);

        let mut store = open(dir.path(), config);
        assert_eq!(store.recovery_report().torn_tail_bytes_truncated, 0);
        assert_eq!(read_all(&mut store, 1).unwrap(), a);
        assert_eq!(read_all(&mut store, 2), Err(StoreError::NotFound));
        assert_eq!(read_all(&mut store, 3).unwrap(), c);
    }

    #[test]
    fn torn_tail_in_the_middle_of_a_payload_is_truncated() {
        torn_tail_case(|path| {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(record_bytes(5000) + RECORD_HEADER_BYTES + 1000).unwrap();
        });
    }

    #[test]
    fn torn_tail_with_a_garbled_header_is_truncated() {
        torn_tail_case(|path| damage(path, record_bytes(5000) + 10, &[0xff, 0x00, 0x55]));
    }

    #[test]
    fn corrupt_payload_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config();
        let mut store = open(dir.path(), config);
        let (a, b, x1, x2) = (pattern(1, 3000), pattern(2, 3000), pattern(3, 2000), pattern(4, 2000));
        put(&mut store, 1, &a, 1);
        put(&mut store, 2, &b, 2);
        put(&mut store, 3, &x1, 3);
        put(&mut store, 3, &x2, 4);
        let a_payload = store.index[&1].record_offset + RECORD_HEADER_BYTES;
        let x2_payload = store.index[&3].record_offset + RECORD_HEADER_BYTES;
        drain_all(&mut store);
        drop(store);
        let path = segment_path(dir.path(), 1);
        damage(&path, a_payload + 100, &[a[100] ^ 1]);
        damage(&path, x2_payload + 1999, &[x2[1999] ^ 0x80]);

        for _ in 0..2 {
            let mut store = open(dir.path(), config);
            let report = *store.recovery_report();
            assert_eq!(report.checksum_mismatches_discarded, 2, "{report:?}");
            assert_eq!(store.chunk_len(1), None);
            assert_eq!(read_all(&mut store, 1), Err(StoreError::NotFound));
            assert_eq!(read_all(&mut store, 2).unwrap(), b);
            // The older, intact version of chunk 3 is not served instead of the newer one.
            assert_eq!(read_all(&mut store, 3), Err(StoreError::NotFound));
            assert_eq!(store.used_bytes(), 3000);
        }
        let mut store = open(dir.path(), config);
        put(&mut store, 3, &x1, 5);
        drain_all(&mut store);
        drop(store);
        let mut store = open(dir.path(), config);
        assert_eq!(read_all(&mut store, 3).unwrap(), x1);
    }

    #[test]
    fn corrupt_header_in_an_earlier_segment_skips_the_rest_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskStoreConfig { segment_bytes: 16 << 10, ..small_config() };
        let mut store = open(dir.path(), config);
        // 4032-byte payloads make 4096-byte records: four per segment.
        let chunks: Vec<Vec<u8>> = (0..10).map(|id| pattern(id, 4032)).collect();
        for (id, data) in chunks.iter().enumerate() {
            put(&mut store, id as ChunkId, data, id as u64);
        }
        drain_all(&mut store);
        assert_eq!(store.segment_count(), 3);
        drop(store);
        damage(&segment_path(dir.path(), 1), 4096 + 3, &[0xAA]);

        let mut store = open(dir.path(), config);
        let report = *store.recovery_report();
        assert_eq!(report.corrupt_records_skipped, 1, "{report:?}");
        assert_eq!(report.corrupt_bytes_skipped, 3 * 4096);
        assert_eq!(report.torn_tail_bytes_truncated, 0);
        for (id, data) in chunks.iter().enumerate() {
            let expected = if (1..=3).contains(&id) { Err(StoreError::NotFound) } else { Ok(data.clone()) };
            assert_eq!(read_all(&mut store, id as ChunkId), expected, "chunk {id}");
        }
        // The damaged segment is mostly dead: compaction keeps what it could read.
        let compaction = store.maybe_compact().unwrap();
        assert_eq!(compaction.segments_removed, 1, "{compaction:?}");
        drop(store);
        let mut store = open(dir.path(), config);
        assert_eq!(store.recovery_report().corrupt_records_skipped, 0);
        assert_eq!(store.segment_count(), 2);
        assert_eq!(read_all(&mut store, 0).unwrap(), chunks[0]);
        assert_eq!(read_all(&mut store, 4).unwrap(), chunks[4]);
        assert_eq!(read_all(&mut store, 1), Err(StoreError::NotFound));
    }

    #[test]
    fn chunk_larger_than_a_segment_gets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskStoreConfig { segment_bytes: 4096, ..small_config() };
        let mut store = open(dir.path(), config);
        let (small, big) = (pattern(1, 100), pattern(2, 20_000));
        put(&mut store, 1, &small, 1);
        put(&mut store, 2, &big, 2);
        put(&mut store, 3, &small, 3);
        assert_eq!(store.segment_count(), 3);
        drain_all(&mut store);
        drop(store);
        let mut store = open(dir.path(), config);
        assert_eq!(read_all(&mut store, 2).unwrap(), big);
        assert_eq!(read_all(&mut store, 3).unwrap(), small);
    }

    fn fill_and_delete(dir: &Path, config: DiskStoreConfig) -> (DiskStore, Vec<(ChunkId, Vec<u8>)>) {
        let mut store = open(dir, config);
        let mut kept = Vec::new();
        for id in 0..100u128 {
            let data = pattern(id, 4000);
            put(&mut store, id, &data, id as u64);
            if id % 10 == 3 {
                kept.push((id, data));
            }
        }
        drain_all(&mut store);
        for id in (0..100u128).filter(|id| id % 10 != 3) {
            store.delete(id, 1000 + id as u64).unwrap();
        }
        drain_all(&mut store);
        (store, kept)
    }

    fn check_kept(store: &mut DiskStore, kept: &[(ChunkId, Vec<u8>)]) {
        for id in 0..100u128 {
            let expected = kept.iter().find(|(kept_id, _)| *kept_id == id).map(|(_, data)| data.clone());
            assert_eq!(read_all(store, id).ok(), expected, "chunk {id}");
        }
        assert_eq!(store.used_bytes(), kept.len() as u64 * 4000);
    }

    #[test]
    fn compaction_reclaims_space_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config();
        let (mut store, kept) = fill_and_delete(dir.path(), config);
        let segments_before = store.segment_count();
        let disk_before = store.disk_bytes();
        assert!(segments_before >= 7, "{segments_before} segments");

        let report = store.compact().unwrap();
        assert!(report.segments_removed >= 6, "{report:?}");
        assert_eq!(report.records_copied, kept.len() as u64, "{report:?}");
        assert!(store.disk_bytes() < disk_before / 3, "{} of {disk_before}", store.disk_bytes());
        check_kept(&mut store, &kept);
        // Nothing left that is worth it.
        assert_eq!(store.maybe_compact().unwrap().segments_removed, 0);
        let disk_after = store.disk_bytes();
        drop(store);

        let mut store = open(dir.path(), config);
        assert_eq!(store.disk_bytes(), disk_after);
        assert_eq!(store.recovery_report().chunks_live, kept.len() as u64);
        check_kept(&mut store, &kept);

        // Keep compacting: tombstones whose targets are gone are dropped in the end.
        let kept_record_bytes = kept.len() as u64 * record_bytes(4000);
        for _ in 0..10 {
            // Seal the active segment so it can be compacted too.
            store.roll_requested = true;
            let data = pattern(500, 10);
            put(&mut store, 500, &data, 1);
            store.delete(500, 2).unwrap();
            drain_all(&mut store);
            store.compact().unwrap();
        }
        assert!(store.tombstones.len() <= 1, "{} tombstones", store.tombstones.len());
        assert!(store.disk_bytes() <= kept_record_bytes + 4 * RECORD_HEADER_BYTES + record_bytes(10));
        check_kept(&mut store, &kept);
        drop(store);
        let mut store = open(dir.path(), config);
        check_kept(&mut store, &kept);
        assert_eq!(store.chunk_len(500), None);
    }

    #[test]
    fn compaction_interrupted_before_the_old_segment_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let backup = tempfile::tempdir().unwrap();
        let config = small_config();
        let (mut store, kept) = fill_and_delete(dir.path(), config);
        for id in store.segments.keys() {
            fs::copy(segment_path(dir.path(), *id), segment_path(backup.path(), *id)).unwrap();
        }
        // One segment per call, until nothing is more than half dead.
        let mut segments_removed = 0;
        for _ in 0..store.segment_count() {
            let report = store.maybe_compact().unwrap();
            assert!(report.segments_removed <= 1, "{report:?}");
            if report.segments_removed == 0 {
                break;
            }
            segments_removed += report.segments_removed;
        }
        assert!(segments_removed >= 6, "{segments_removed} segments removed");
        // Damage the copy of one kept chunk: the intact original must win.
        let (victim_id, _) = kept[0];
        let copy = store.index[&victim_id];
        drop(store);
        damage(&segment_path(dir.path(), copy.segment), copy.record_offset + RECORD_HEADER_BYTES, &[0x5A, 0xA5]);
        // As if the crash came before the old segment files were deleted.
        for entry in fs::read_dir(backup.path()).unwrap() {
            let entry = entry.unwrap();
            let restored = dir.path().join(entry.file_name());
            if !restored.exists() {
                fs::copy(entry.path(), restored).unwrap();
            }
        }
        let mut store = open(dir.path(), config);
        assert_eq!(store.recovery_report().checksum_mismatches_discarded, 1);
        check_kept(&mut store, &kept);
        // And compaction sorts it all out again.
        store.compact().unwrap();
        check_kept(&mut store, &kept);
        drop(store);
        let mut store = open(dir.path(), config);
        check_kept(&mut store, &kept);
    }

    #[test]
    fn capacity_cap_gives_disk_full_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskStoreConfig { capacity_bytes: Some(64 << 10), ..small_config() };
        let mut store = open(dir.path(), config);
        let mut stored = Vec::new();
        let mut full = false;
        for id in 0..100u128 {
            let data = pattern(id, 4000);
            match store.begin_put(id, 4000) {
                Ok(reservation) => {
                    write_scrambled(&mut store, reservation, &data, 1000);
                    store.commit_put(reservation, id as u64).unwrap();
                    stored.push((id, data));
                }
                Err(error) => {
                    assert_eq!(error, StoreError::DiskFull);
                    full = true;
                    break;
                }
            }
        }
        assert!(full);
        assert_eq!(stored.len(), 16);
        assert!(store.disk_bytes() <= 64 << 10);
        // Deletes still work at the cap.
        store.delete(0, 500).unwrap();
        drain_all(&mut store);
        for (id, data) in &stored[1..] {
            assert_eq!(&read_all(&mut store, *id).unwrap(), data);
        }
        drop(store);
        let mut store = open(dir.path(), config);
        assert_eq!(store.begin_put(1000, 4000), Err(StoreError::DiskFull));
        assert_eq!(store.chunk_len(0), None);
        for (id, data) in &stored[1..] {
            assert_eq!(&read_all(&mut store, *id).unwrap(), data);
        }
    }

    /// Unmounts on drop, so a failing test leaves no mount behind.
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn real_enospc_on_a_small_tmpfs() {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping real_enospc_on_a_small_tmpfs: mounting a tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(dir.path()).status();
        if !mounted.is_ok_and(|status| status.success()) {
            eprintln!("skipping real_enospc_on_a_small_tmpfs: mount -t tmpfs failed (no CAP_SYS_ADMIN?)");
            return;
        }
        let mount = Mount(dir.path().to_path_buf());
        let config = DiskStoreConfig { segment_bytes: 256 << 10, ..small_config() };
        let mut store = open(&mount.0, config);
        let mut stored = Vec::new();
        let mut full = false;
        for id in 0..200u128 {
            let data = pattern(id, 16_000);
            match store.begin_put(id, 16_000) {
                Ok(reservation) => {
                    write_scrambled(&mut store, reservation, &data, 1400);
                    store.commit_put(reservation, id as u64).unwrap();
                    stored.push((id, data));
                }
                Err(error) => {
                    assert_eq!(error, StoreError::DiskFull);
                    full = true;
                    break;
                }
            }
        }
        assert!(full, "a 1 MiB tmpfs never filled up");
        assert!(stored.len() > 30, "only {} chunks fit", stored.len());
        drain_all(&mut store);
        for (id, data) in &stored {
            assert_eq!(&read_all(&mut store, *id).unwrap(), data);
        }
        drop(store);
        let mut store = open(&mount.0, config);
        assert_eq!(store.recovery_report().chunks_live, stored.len() as u64);
        for (id, data) in &stored {
            assert_eq!(&read_all(&mut store, *id).unwrap(), data);
        }
        drop(store);
        drop(mount);
    }

    #[test]
    fn group_commit_reports_every_ticket_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), small_config());
        let mut issued = Vec::new();
        for id in 0..400u128 {
            let ticket = 10_000 + id as u64;
            if id % 5 == 4 {
                // Deleting an absent chunk is a durability barrier.
                store.delete(1_000_000 + id, ticket).unwrap();
            } else {
                put(&mut store, id, &pattern(id, 200), ticket);
            }
            issued.push(ticket);
        }
        assert!(store.pending_durable() <= issued.len());
        let reports = drain_durable(&mut store, issued.len());
        let tickets: Vec<u64> = reports.iter().map(|report| report.ticket).collect();
        assert_eq!(tickets, issued, "reported in order, each once");
        assert_eq!(tickets.iter().collect::<HashSet<_>>().len(), issued.len());
        assert!(reports.iter().all(|report| report.result.is_ok()));
        store.poll_durable(&mut |durable| panic!("unexpected report {durable:?}"));
    }

    #[test]
    fn bounds_busy_and_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskStoreConfig { max_puts_in_flight: 2, max_pending_durable: 4, ..small_config() };
        let mut store = open(dir.path(), config);
        assert_eq!(store.begin_put(1, config.max_chunk_bytes + 1), Err(StoreError::TooLarge));
        let first = store.begin_put(1, 10).unwrap();
        let second = store.begin_put(2, 10).unwrap();
        assert_eq!(store.begin_put(3, 10), Err(StoreError::Busy));
        store.abort_put(first);
        let third = store.begin_put(3, 10).unwrap();
        assert_ne!(third, first, "a reused slot gets a new handle");
        for put in [second, third] {
            store.write_at(put, 0, &[7; 10]).unwrap();
            store.commit_put(put, 1).unwrap();
        }
        store.delete(2, 2).unwrap();
        store.delete(9, 3).unwrap();
        // Four changes await poll_durable: the bound is reached.
        assert_eq!(store.begin_put(4, 10), Err(StoreError::Busy));
        assert_eq!(store.delete(3, 4), Err(StoreError::Busy));
        drain_all(&mut store);
        let fourth = store.begin_put(4, 10).unwrap();
        store.abort_put(fourth);
        assert_eq!(store.used_bytes(), 10);
    }

    #[test]
    #[should_panic(expected = "past a 10-byte chunk")]
    fn write_past_the_reservation_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), small_config());
        let put = store.begin_put(1, 10).unwrap();
        let _ = store.write_at(put, 5, &[0; 6]);
    }

    #[test]
    #[should_panic(expected = "not in flight")]
    fn stale_reservation_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), small_config());
        let put = store.begin_put(1, 0).unwrap();
        store.commit_put(put, 1).unwrap();
        store.abort_put(put);
    }

    #[test]
    fn a_data_directory_is_opened_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), small_config());
        let error = DiskStore::open(dir.path(), small_config()).unwrap_err();
        assert!(matches!(error, DiskStoreError::Locked { .. }), "{error}");
        assert!(error.to_string().contains("--data-dir"), "{error}");
        drop(store);
        drop(open(dir.path(), small_config()));
    }

    #[test]
    fn invalid_config_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiskStoreConfig { max_chunk_bytes: MAX_CHUNK_LIMIT_BYTES + 1, ..small_config() };
        let error = DiskStore::open(dir.path(), config).unwrap_err();
        assert!(error.to_string().contains("max_chunk_bytes"), "{error}");
        let config = DiskStoreConfig { max_pending_durable: 0, ..small_config() };
        let error = DiskStore::open(dir.path(), config).unwrap_err();
        assert!(error.to_string().contains("max_pending_durable"), "{error}");
        let config = DiskStoreConfig { max_chunk_bytes: MAX_CHUNK_LIMIT_BYTES, ..DiskStoreConfig::default() };
        drop(open(dir.path(), config));
        // Room for every put slot's commit, whatever max_pending_durable says.
        let config = DiskStoreConfig { max_puts_in_flight: 8192, ..DiskStoreConfig::default() };
        let store = open(dir.path(), config);
        assert_eq!(store.config().max_pending_durable, 8192);
    }
}
