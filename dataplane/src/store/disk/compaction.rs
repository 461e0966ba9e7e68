//! Space reclamation: rewriting sealed segments that hold dead bytes.
//!
//! Live and dead bytes are tracked per segment. [`DiskStore::compact`] rewrites sealed
//! segments that hold dead bytes, [`DiskStore::maybe_compact`] only those that are more
//! than half dead: live records are copied to the tail (keeping their sequence numbers),
//! the copies are synced, then the old segment file is deleted. A tombstone is carried
//! along unless no older segment exists that could still hold a record it kills.

use super::*;

impl DiskStore {
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

    /// Garbage collection's half of the work: makes dead bytes in the active segment
    /// reclaimable too, by starting a new active segment when the current one holds dead
    /// bytes (all of them when `everything`, else only when it is more than half dead),
    /// then compacts: every segment with dead bytes when `everything` (synchronous, it may
    /// copy much), else as [`maybe_compact`](Self::maybe_compact) does. Without this, the
    /// space of puts that failed into the active segment (a full disk, a killed client or
    /// node) stayed taken until that segment filled up, which on a full disk is never.
    pub fn reclaim(&mut self, everything: bool) -> Result<CompactionReport, DiskStoreError> {
        let active = &self.segments[&self.active];
        let dead = active.len_bytes - active.live_bytes;
        if dead > 0 && (everything || dead * 2 > active.len_bytes) {
            self.seal_active()?;
        }
        if everything { self.compact() } else { self.maybe_compact() }
    }

    /// Starts a new, empty active segment; the old one is sealed (puts still being written
    /// into it finish there).
    fn seal_active(&mut self) -> Result<(), DiskStoreError> {
        let Some(id) = self.active.checked_add(1) else {
            let source = io::Error::other("segment ids exhausted");
            return Err(DiskStoreError::io("starting a new segment in", &self.dir, source));
        };
        let segment = create_segment(&self.dir, id)?;
        self.segments.insert(id, segment);
        self.active = id;
        self.roll_requested = false;
        self.sync_dir()?;
        Ok(())
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
        if self.direct_file.as_ref().is_some_and(|(id, _)| *id == victim) {
            self.direct_file = None; // Its descriptor would keep the deleted file's space.
        }
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
            self.append_record(record_bytes, &encode_header(KIND_PUT, id, from.len, None), None)?;
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
}
