//! The store's space: compaction, the capacity cap, a real ENOSPC, `reclaim` of the active
//! segment and chunk ages (what garbage collection relies on). Split from `tests.rs`, whose
//! helpers these use.

use super::tests::*;
use super::*;
use std::process::Command;

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
        crate::testkit::skip("real_enospc_on_a_small_tmpfs", "mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(dir.path()).status();
    if !mounted.is_ok_and(|status| status.success()) {
        crate::testkit::skip("real_enospc_on_a_small_tmpfs", "mount -t tmpfs failed (no CAP_SYS_ADMIN?)");
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

fn record_bytes_of(lens: &[usize]) -> u64 {
    lens.iter().map(|len| record_bytes(*len as u32)).sum()
}

/// Issue #11, the leaks behind "disk is full" for ever: a store whose only (active)
/// segment filled up with abandoned reservations, reservations a crash left pending and
/// deleted chunks refuses every put, also after a restart, since compaction never touches
/// the active segment. `reclaim(true)` gives all of it back, and a put fits again.
#[test]
fn reclaim_frees_dead_bytes_of_the_active_segment_and_a_put_fits_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiskStoreConfig { capacity_bytes: Some(76 << 10), segment_bytes: 1 << 20, ..small_config() };
    let mut store = open(dir.path(), config);
    let kept = [(1u128, pattern(1, 3000)), (2, pattern(2, 5000))];
    for (id, data) in &kept {
        put(&mut store, *id, data, *id as u64);
    }
    // Chunks of a put that never became a file (deleted by garbage collection) ...
    for id in 10..14u128 {
        put(&mut store, id, &pattern(id, 8000), id as u64);
    }
    drain_all(&mut store);
    // ... and reservations of a client that went away, aborted by the node.
    for id in 20..22u128 {
        let reservation = store.begin_put(id, 8000).unwrap();
        store.write_at(reservation, 0, &pattern(id, 1000)).unwrap();
        store.abort_put(reservation);
    }
    // A crash in the middle of two more puts: their reservations stay pending on disk.
    for id in 30..32u128 {
        let reservation = store.begin_put(id, 8000).unwrap();
        store.write_at(reservation, 0, &pattern(id, 8000)).unwrap();
        // Never committed nor aborted: the store is dropped as a crash would leave it.
        let _ = reservation;
    }
    drop(store);
    let mut store = open(dir.path(), config);
    assert_eq!(store.recovery_report().pending_reservations_skipped, 4);
    for id in 10..14u128 {
        store.delete(id, 100 + id as u64).unwrap();
    }
    drain_all(&mut store);
    assert_eq!(store.begin_put(40, 8000), Err(StoreError::DiskFull), "the store is not full: nothing to show");
    // What compaction alone did before: nothing, the one segment is the active one.
    assert_eq!(store.compact().unwrap(), CompactionReport::default());
    assert_eq!(store.begin_put(40, 8000), Err(StoreError::DiskFull));
    let live = record_bytes_of(&[3000, 5000]);
    assert!(store.dead_bytes() >= store.disk_bytes() - live - RECORD_HEADER_BYTES * 4);
    let report = store.reclaim(true).unwrap();
    assert!(report.bytes_freed > 0, "{report:?}");
    assert_eq!(store.dead_bytes(), 0);
    assert_eq!(store.disk_bytes(), live, "only the kept chunks' records remain");
    put(&mut store, 40, &pattern(40, 8000), 40);
    drain_all(&mut store);
    for (id, data) in &kept {
        assert_eq!(&read_all(&mut store, *id).unwrap(), data);
    }
    drop(store);
    let mut store = open(dir.path(), config);
    for (id, data) in &kept {
        assert_eq!(&read_all(&mut store, *id).unwrap(), data);
    }
    assert_eq!(read_all(&mut store, 40).unwrap(), pattern(40, 8000));
    for id in (10..14u128).chain(20..22).chain(30..32) {
        assert_eq!(store.chunk_len(id), None, "chunk {id} came back");
    }
}

/// Without `everything`, only an active segment that is more than half dead is sealed,
/// so an ordinary store with a few deletes is not rewritten on every pass.
#[test]
fn reclaim_seals_the_active_segment_only_when_more_than_half_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let config = DiskStoreConfig { segment_bytes: 1 << 20, ..small_config() };
    let mut store = open(dir.path(), config);
    for id in 0..4u128 {
        put(&mut store, id, &pattern(id, 8000), id as u64);
    }
    store.delete(0, 10).unwrap();
    drain_all(&mut store);
    assert_eq!(store.reclaim(false).unwrap(), CompactionReport::default());
    assert_eq!(store.segment_count(), 1);
    for id in 1..3u128 {
        store.delete(id, 10 + id as u64).unwrap();
    }
    drain_all(&mut store);
    let report = store.reclaim(false).unwrap();
    assert_eq!((report.segments_removed, report.records_copied), (1, 1), "{report:?}");
    assert_eq!(store.dead_bytes(), 0);
    assert_eq!(read_all(&mut store, 3).unwrap(), pattern(3, 8000));
}

/// Ages count from the commit, survive compaction, and start again from zero when the
/// store is reopened (never older than they are).
#[test]
fn chunk_ages_count_from_the_commit_and_restart_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), small_config());
    put(&mut store, 1, &pattern(1, 100), 1);
    drain_all(&mut store);
    let ages = |store: &DiskStore| {
        let mut seen = Vec::new();
        store.for_each_chunk(&mut |chunk| seen.push((chunk.id, chunk.len, chunk.age_ms)));
        seen.sort_unstable();
        seen
    };
    // Time itself is what this waits for.
    std::thread::sleep(Duration::from_millis(60));
    put(&mut store, 2, &pattern(2, 200), 2);
    drain_all(&mut store);
    let seen = ages(&store);
    assert_eq!(seen.iter().map(|(id, len, _)| (*id, *len)).collect::<Vec<_>>(), [(1, 100), (2, 200)]);
    assert!(seen[0].2 >= 60 && seen[1].2 < seen[0].2, "{seen:?}");
    store.delete(2, 3).unwrap();
    drain_all(&mut store);
    store.reclaim(true).unwrap();
    let after = ages(&store);
    assert_eq!(after.len(), 1);
    assert!(after[0].2 >= seen[0].2, "compaction made chunk 1 younger: {after:?}");
    drop(store);
    let store = open(dir.path(), small_config());
    let reopened = ages(&store);
    assert_eq!(reopened.len(), 1);
    assert!(reopened[0].2 < 60, "a reopened store does not know how old its chunks are: {reopened:?}");
}
