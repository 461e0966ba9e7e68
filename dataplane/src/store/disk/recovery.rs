//! Restart: scanning the segments back into the in-memory index.
//!
//! `open` scans the segments in order and validates every header. A header that fails
//! validation, or a record that runs past the end of its file, is a torn tail in the last
//! segment (the file is truncated there) and corruption in an earlier one (the rest of
//! that segment is skipped and counted). Pending reservations are skipped by length.
//! Committed puts have their payload checksum verified (this reads every committed
//! payload once at start-up); a mismatch discards the record, and a discarded record
//! still shadows older versions of its chunk, so a stale version is never served.
//! Tombstones and puts are ordered by sequence number.

use super::*;

pub(super) struct Recovered {
    pub(super) segments: BTreeMap<u32, Segment>,
    pub(super) index: HashMap<ChunkId, Location>,
    pub(super) tombstones: HashMap<ChunkId, TombstoneEntry>,
    pub(super) used_bytes: u64,
    pub(super) max_seq: u64,
    pub(super) report: RecoveryReport,
}

#[derive(Clone, Copy)]
pub(super) enum Winner {
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
pub(super) struct Best {
    pub(super) seq: u64,
    pub(super) segment: u32,
    pub(super) record_offset: u64,
    pub(super) record_bytes: u64,
    pub(super) winner: Winner,
}

pub(super) fn recover(dir: &Path, config: &DiskStoreConfig, scratch: &mut [u8]) -> Result<Recovered, DiskStoreError> {
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
                // Found on disk: first seen now, when the store opens.
                index.insert(
                    id,
                    Location { segment: segment_id, record_offset, len, seq, payload_crc, first_seen_ms: 0 },
                );
            }
            Winner::Tombstone | Winner::Corrupt => {
                segment.tombstones += 1;
                tombstones.insert(id, TombstoneEntry { segment: segment_id, record_offset, seq, record_bytes });
            }
        }
    }
    Ok(Recovered { segments, index, tombstones, used_bytes, max_seq, report })
}

pub(super) struct Scan<'a> {
    pub(super) segment: u32,
    pub(super) file: &'a File,
    pub(super) path: &'a Path,
    pub(super) file_len: u64,
    pub(super) best: &'a mut HashMap<ChunkId, Best>,
    pub(super) max_seq: &'a mut u64,
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
                CommitState::Pending if decoded.id == PADDING_ID => report.padding_records_skipped += 1,
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
