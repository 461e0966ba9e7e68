//! Garbage collection on a node: reclaiming the space of chunks that no file references.
//!
//! A put stores its chunks first and records the file last, so a put that never finishes
//! (a killed client or node, a full disk, a metadata outage) leaves chunks behind that no
//! file references. They are grouped by file id (the high 64 bits of a chunk id), and a
//! group is garbage when
//!
//! - no file in the metadata has that file id (the node's embedded metadata on a single
//!   node; Redis in a cluster, where [`ClusterClient::gc`](crate::client::cluster::ClusterClient::gc)
//!   decides and this node only lists and deletes), and
//! - its youngest chunk is at least the grace period old. A put in progress keeps writing
//!   chunks of its file id, so it is never collected unless it stalls for the whole grace
//!   period; a single-node `CommitFile` then fails with "chunk N is not stored" (it checks
//!   every chunk), and a cluster put cannot commit at all once its pending entry was
//!   claimed (see `RedisMetadata::claim_stale_puts`).
//!
//! Ages are the store's: time since the chunk was committed, or since the node started for
//! chunks it found on disk (a restart never makes a chunk look older than it is).
//! Deleted chunks and abandoned reservations are then given back by compaction
//! ([`DiskStore::reclaim`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use beeline_dataplane::node::BACKGROUND_TICKET;
use beeline_dataplane::store::disk::DiskStore;
use beeline_dataplane::store::{ChunkInfo, ChunkStore, StoreError};
use tracing::{info, warn};

use crate::control::{ChunkFile, GcReport};

/// What garbage collection has done on this node, and whether it may run: shared by the
/// data-plane thread (which collects), the heartbeat (which finds metadata loss) and the
/// metrics exporter.
#[derive(Debug, Default)]
pub struct GcState {
    pub chunks_collected: AtomicU64,
    pub bytes_collected: AtomicU64,
    /// Segment bytes given back to the file system by the compactions garbage collection ran.
    pub disk_bytes_freed: AtomicU64,
    pub passes: AtomicU64,
    /// The metadata store no longer knows this node's cluster (Redis restarted empty, or
    /// another one): its old chunks are not collected until an operator says so.
    pub metadata_lost: AtomicBool,
    /// Says why, for `node status` and the log.
    pub metadata_note: Mutex<String>,
}

impl GcState {
    pub fn note(&self) -> String {
        self.metadata_note.lock().map(|note| note.clone()).unwrap_or_default()
    }

    pub fn set_note(&self, note: String) {
        if let Ok(mut current) = self.metadata_note.lock() {
            *current = note;
        }
    }

    fn count(&self, report: &GcReport) {
        if report.dry_run {
            return;
        }
        self.chunks_collected.fetch_add(report.chunks_collected, Ordering::Relaxed);
        self.bytes_collected.fetch_add(report.bytes_collected, Ordering::Relaxed);
        self.disk_bytes_freed.fetch_add(report.disk_bytes_freed, Ordering::Relaxed);
        self.passes.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn file_id_of(chunk: u128) -> u64 {
    (chunk >> 64) as u64
}

/// The node's chunks grouped by file id, in file id order.
pub fn chunk_files(store: &impl ChunkStore) -> BTreeMap<u64, ChunkFile> {
    let mut files: BTreeMap<u64, ChunkFile> = BTreeMap::new();
    store.for_each_chunk(&mut |chunk: ChunkInfo| {
        let file_id = file_id_of(chunk.id);
        let entry =
            files.entry(file_id).or_insert(ChunkFile { file_id, chunks: 0, bytes: 0, youngest_age_ms: u64::MAX });
        entry.chunks += 1;
        entry.bytes += u64::from(chunk.len);
        entry.youngest_age_ms = entry.youngest_age_ms.min(chunk.age_ms);
    });
    files
}

/// Which of `files` are garbage: not `referenced`, and old enough.
pub fn garbage<'a>(
    files: impl IntoIterator<Item = &'a ChunkFile>,
    referenced: &dyn Fn(u64) -> bool,
    grace_ms: u64,
) -> (Vec<u64>, GcReport) {
    let mut report = GcReport::default();
    let mut collect = Vec::new();
    for file in files {
        if referenced(file.file_id) {
            continue;
        }
        if file.youngest_age_ms < grace_ms {
            report.chunks_kept_young += u64::from(file.chunks);
            report.bytes_kept_young += file.bytes;
        } else {
            collect.push(file.file_id);
        }
    }
    (collect, report)
}

/// Deletes every chunk of `file_ids` at least `min_age_ms` old (a chunk written since the
/// decision stays), adding to `report`; stops early (`report.more`) when the store's
/// change queue is full. With `dry_run` it only counts.
pub fn collect(store: &mut DiskStore, file_ids: &[u64], min_age_ms: u64, dry_run: bool, report: &mut GcReport) {
    let wanted: HashSet<u64> = file_ids.iter().copied().collect();
    let mut doomed: Vec<ChunkInfo> = Vec::new();
    store.for_each_chunk(&mut |chunk| {
        if wanted.contains(&file_id_of(chunk.id)) {
            if chunk.age_ms >= min_age_ms {
                doomed.push(chunk);
            } else {
                report.chunks_kept_young += 1;
                report.bytes_kept_young += u64::from(chunk.len);
            }
        }
    });
    report.dry_run = dry_run;
    report.files_collected += doomed.iter().map(|chunk| file_id_of(chunk.id)).collect::<HashSet<_>>().len() as u64;
    for chunk in doomed {
        if !dry_run {
            match store.delete(chunk.id, BACKGROUND_TICKET) {
                Ok(()) => {}
                Err(StoreError::Busy) => {
                    report.more = true;
                    break;
                }
                Err(error) => {
                    warn!(chunk = format!("{:032x}", chunk.id), ?error, "garbage collection could not delete a chunk");
                    report.more = true;
                    break;
                }
            }
        }
        report.chunks_collected += 1;
        report.bytes_collected += u64::from(chunk.len);
    }
}

/// Gives dead segment space back (everything when an operator asked, else what is cheap)
/// and records the pass.
pub fn finish(store: &mut DiskStore, everything: bool, report: &mut GcReport, state: &GcState) {
    if !report.dry_run {
        match store.reclaim(everything) {
            Ok(compaction) => report.disk_bytes_freed += compaction.bytes_freed,
            Err(error) => warn!(%error, "garbage collection could not compact the chunk store; it will be retried"),
        }
    }
    state.count(report);
    if report.chunks_collected > 0 || report.disk_bytes_freed > 0 {
        info!(
            dry_run = report.dry_run,
            chunks = report.chunks_collected,
            bytes = report.bytes_collected,
            files = report.files_collected,
            disk_bytes_freed = report.disk_bytes_freed,
            kept_young = report.chunks_kept_young,
            "garbage collection pass"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(file_id: u64, youngest_age_ms: u64) -> ChunkFile {
        ChunkFile { file_id, chunks: 2, bytes: 10, youngest_age_ms }
    }

    #[test]
    fn only_unreferenced_files_older_than_the_grace_period_are_garbage() {
        let files = [file(1, 5_000), file(2, 5_000), file(3, 999), file(4, 1_000)];
        let (collect, report) = garbage(&files, &|file_id| file_id == 1, 1_000);
        assert_eq!(collect, [2, 4]);
        assert_eq!((report.chunks_kept_young, report.bytes_kept_young), (2, 10));
    }

    #[test]
    fn a_file_is_as_young_as_its_youngest_chunk() {
        let mut store = beeline_dataplane::store::mem::MemStore::new();
        for (id, len) in [(7u128 << 64, 4u32), ((7 << 64) | 1, 6), (9 << 64, 1)] {
            let put = store.begin_put(id, len).unwrap();
            store.write_at(put, 0, &vec![1; len as usize]).unwrap();
            store.commit_put(put, 0).unwrap();
        }
        let files = chunk_files(&store);
        assert_eq!(files.keys().copied().collect::<Vec<_>>(), [7, 9]);
        assert_eq!((files[&7].chunks, files[&7].bytes), (2, 10));
        assert!(files[&7].youngest_age_ms < 60_000);
    }
}
