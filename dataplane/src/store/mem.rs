//! An in-memory chunk store: the store for `sim` tests and for benchmarks of the poll
//! loop without disk I/O. Changes become "durable" on the next `poll_durable`.

use std::collections::{HashMap, HashSet};
use std::vec::Vec;

use std::time::Instant;

use crate::store::{ChunkInfo, ChunkStore, Durable, POLL_DURABLE_BATCH_MAX, PutReservation, StoreError};
use crate::wire::ChunkId;

#[derive(Default)]
pub struct MemStore {
    chunks: HashMap<ChunkId, Vec<u8>>,
    /// When each chunk was committed.
    committed_at: HashMap<ChunkId, Instant>,
    reservations: HashMap<u32, (ChunkId, Vec<u8>)>,
    next_reservation: u32,
    pending: Vec<Durable>,
    capacity_bytes: Option<u64>,
    used_bytes: u64,
    puts_in_flight_max: usize,
    /// Fault injection: every write fails with `StoreError::Io` while set.
    failing_writes: bool,
    /// Chunks whose puts carried the not-read-soon hint (there is no page cache to drop
    /// them from: kept so that tests see the hint arrive).
    hinted_not_read_soon: HashSet<ChunkId>,
    /// Per chunk, the gets that read it through with the not-read-soon hint.
    hinted_dropped_after_read: HashMap<ChunkId, u32>,
}

impl MemStore {
    pub fn new() -> Self {
        Self { puts_in_flight_max: 1024, ..Self::default() }
    }

    /// A store that reports `DiskFull` once `capacity_bytes` of data (committed plus
    /// reserved) would be exceeded.
    pub fn with_capacity_bytes(capacity_bytes: u64) -> Self {
        Self { capacity_bytes: Some(capacity_bytes), ..Self::new() }
    }

    pub fn chunk(&self, id: ChunkId) -> Option<&[u8]> {
        self.chunks.get(&id).map(Vec::as_slice)
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Whether a put of `id` was hinted not to be read soon ([`ChunkStore::drop_when_durable`]).
    pub fn hinted_not_read_soon(&self, id: ChunkId) -> bool {
        self.hinted_not_read_soon.contains(&id)
    }

    /// How many gets of `id` hinted that their client keeps what it read
    /// ([`ChunkStore::drop_after_read`]).
    pub fn hinted_dropped_after_read(&self, id: ChunkId) -> u32 {
        self.hinted_dropped_after_read.get(&id).copied().unwrap_or(0)
    }

    /// Makes every write fail with `StoreError::Io` (a disk that returns EIO) until
    /// called again with `false`.
    pub fn set_failing_writes(&mut self, failing: bool) {
        self.failing_writes = failing;
    }
}

impl ChunkStore for MemStore {
    fn chunk_len(&self, id: ChunkId) -> Option<u32> {
        self.chunks.get(&id).map(|data| data.len() as u32)
    }

    fn begin_put(&mut self, id: ChunkId, len: u32) -> Result<PutReservation, StoreError> {
        if self.reservations.len() >= self.puts_in_flight_max {
            return Err(StoreError::Busy);
        }
        let reserved: u64 = self.reservations.values().map(|(_, data)| data.len() as u64).sum();
        if let Some(capacity) = self.capacity_bytes {
            if self.used_bytes + reserved + u64::from(len) > capacity {
                return Err(StoreError::DiskFull);
            }
        }
        self.next_reservation = self.next_reservation.wrapping_add(1);
        self.reservations.insert(self.next_reservation, (id, vec![0; len as usize]));
        Ok(PutReservation(self.next_reservation))
    }

    fn drop_when_durable(&mut self, put: PutReservation) {
        let (id, _) = self.reservations.get(&put.0).expect("a hint for an unknown reservation");
        self.hinted_not_read_soon.insert(*id);
    }

    fn drop_after_read(&mut self, id: ChunkId) {
        if self.chunks.contains_key(&id) {
            *self.hinted_dropped_after_read.entry(id).or_default() += 1;
        }
    }

    fn write_at(&mut self, put: PutReservation, offset: u32, data: &[u8]) -> Result<(), StoreError> {
        if self.failing_writes {
            return Err(StoreError::Io);
        }
        let (_, buffer) = self.reservations.get_mut(&put.0).expect("write to an unknown reservation");
        let start = offset as usize;
        assert!(start + data.len() <= buffer.len(), "write beyond the reservation");
        buffer[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn commit_put(&mut self, put: PutReservation, ticket: u64) -> Result<(), StoreError> {
        let (id, data) = self.reservations.remove(&put.0).expect("commit of an unknown reservation");
        self.used_bytes += data.len() as u64;
        if let Some(old) = self.chunks.insert(id, data) {
            self.used_bytes -= old.len() as u64;
        }
        self.committed_at.insert(id, Instant::now());
        self.pending.push(Durable { ticket, result: Ok(()) });
        Ok(())
    }

    fn abort_put(&mut self, put: PutReservation) {
        self.reservations.remove(&put.0);
    }

    fn delete(&mut self, id: ChunkId, ticket: u64) -> Result<(), StoreError> {
        if let Some(old) = self.chunks.remove(&id) {
            self.used_bytes -= old.len() as u64;
        }
        self.committed_at.remove(&id);
        self.pending.push(Durable { ticket, result: Ok(()) });
        Ok(())
    }

    fn read_at(&mut self, id: ChunkId, offset: u32, buf: &mut [u8]) -> Result<usize, StoreError> {
        let data = self.chunks.get(&id).ok_or(StoreError::NotFound)?;
        let start = (offset as usize).min(data.len());
        let len = buf.len().min(data.len() - start);
        buf[..len].copy_from_slice(&data[start..start + len]);
        Ok(len)
    }

    fn poll_durable(&mut self, done: &mut dyn FnMut(Durable)) {
        let batch = self.pending.len().min(POLL_DURABLE_BATCH_MAX);
        for durable in self.pending.drain(..batch) {
            done(durable);
        }
    }

    fn pending_durable(&self) -> usize {
        self.pending.len()
    }

    fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    fn for_each_chunk(&self, visit: &mut dyn FnMut(ChunkInfo)) {
        for (&id, data) in &self.chunks {
            let age_ms = self.committed_at.get(&id).map_or(0, |at| at.elapsed().as_millis() as u64);
            visit(ChunkInfo { id, len: data.len() as u32, age_ms });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store trait's batch bound holds for the in-memory store too: 300 changes come
    /// back as 256, then 44, oldest first.
    #[test]
    fn poll_durable_reports_at_most_the_batch_bound_oldest_first() {
        let mut store = MemStore::new();
        for ticket in 0..300u64 {
            store.delete(u128::from(ticket), ticket).unwrap();
        }
        let mut first = Vec::new();
        store.poll_durable(&mut |durable| first.push(durable.ticket));
        assert_eq!(first, (0..POLL_DURABLE_BATCH_MAX as u64).collect::<Vec<_>>());
        let mut second = Vec::new();
        store.poll_durable(&mut |durable| second.push(durable.ticket));
        assert_eq!(second, (POLL_DURABLE_BATCH_MAX as u64..300).collect::<Vec<_>>());
        assert_eq!(store.pending_durable(), 0);
    }
}
