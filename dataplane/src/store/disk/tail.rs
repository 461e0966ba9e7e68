//! Appending at the tail of the active segment: space is reserved (rolling to a new
//! segment when the record would not fit), a padding record goes first when the payload
//! must start on a page (direct writes), then the record's header; a reservation whose
//! header could not be written is given back.

use super::*;

impl DiskStore {
    /// Appends a committed tombstone and accounts it as a needed tombstone of its segment.
    pub(super) fn append_tombstone(&mut self, id: ChunkId, seq: u64) -> Result<(u32, u64), DiskStoreError> {
        let frame_crc = frame_crc(KIND_TOMBSTONE, id, 0);
        let header = encode_header(KIND_TOMBSTONE, id, 0, Some(encode_commit(frame_crc, seq, 0)));
        let (segment, record_offset) = self.append_record(RECORD_HEADER_BYTES, &header, None)?;
        let target = self.segment_mut(segment);
        target.live_bytes += RECORD_HEADER_BYTES;
        target.tombstones += 1;
        Ok((segment, record_offset))
    }

    /// Reserves `record_bytes` at the tail and writes `header` there; with `payload_align`,
    /// a padding record first, so that the payload starts at a multiple of it. On success
    /// the bytes belong to the file but are not yet counted live (padding never is).
    pub(super) fn append_record(
        &mut self,
        record_bytes: u64,
        header: &[u8; 64],
        payload_align: Option<u64>,
    ) -> Result<(u32, u64), DiskStoreError> {
        let (segment, start, padding_bytes) = self.reserve_tail(record_bytes, payload_align)?;
        let record_offset = start + padding_bytes;
        let file = Arc::clone(&self.segments[&segment].file);
        let padding = (padding_bytes > 0).then(|| {
            let len = u32::try_from(padding_bytes - RECORD_HEADER_BYTES).expect("padding is under a page or so");
            assert_eq!(record::record_bytes(len), padding_bytes, "the padding record fills the gap exactly");
            encode_header(KIND_PUT, PADDING_ID, len, None)
        });
        let written = match padding {
            Some(padding) => file.file.write_all_at(&padding, start),
            None => Ok(()),
        }
        .and_then(|()| file.file.write_all_at(header, record_offset));
        if let Err(source) = written {
            self.give_back_tail(segment, start, padding_bytes + record_bytes);
            return Err(DiskStoreError::io("writing a record header to", &segment_path(&self.dir, segment), source));
        }
        self.write_stats.padding_bytes += padding_bytes;
        Ok((segment, record_offset))
    }

    /// Extends the active segment (starting a new one first if needed) by `record_bytes`
    /// of allocated space, after the padding `payload_align` asks for: (segment, offset of
    /// the padding or else the record, padding bytes).
    fn reserve_tail(
        &mut self,
        record_bytes: u64,
        payload_align: Option<u64>,
    ) -> Result<(u32, u64, u64), DiskStoreError> {
        let padding_at = |offset: u64| {
            payload_align.map_or(0, |align| {
                assert!(align.is_power_of_two() && align >= RECORD_ALIGN_BYTES, "payload alignment {align}");
                (align - (offset + RECORD_HEADER_BYTES) % align) % align
            })
        };
        let active = &self.segments[&self.active];
        let roll = active.len_bytes > 0
            && (self.roll_requested
                || active.len_bytes + padding_at(active.len_bytes) + record_bytes > self.config.segment_bytes
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
        let start = segment.len_bytes;
        let padding_bytes = padding_at(start);
        let reserved_bytes = padding_bytes + record_bytes;
        if let Err(source) = allocate(&segment.file.file, start, reserved_bytes) {
            // Undo any partial extension; if even that fails, leave the tail alone.
            if segment.file.file.set_len(start).is_err() {
                self.roll_requested = true;
            }
            return Err(DiskStoreError::io("allocating space in", &segment_path(&self.dir, self.active), source));
        }
        segment.len_bytes += reserved_bytes;
        self.disk_bytes += reserved_bytes;
        Ok((self.active, start, padding_bytes))
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
}
