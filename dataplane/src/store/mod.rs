//! The chunk store boundary. The node hands received payload slices (views into arena
//! frames) straight to the store and reads GET payload from the store straight into a
//! frame; the store is the only place bytes are persisted.
//!
//! Durability is asynchronous: `commit_put` and `delete` only queue the change, and the
//! store reports it through [`ChunkStore::poll_durable`] once it is on disk. The node
//! acknowledges to the client only then. Stores are expected to group-commit: one
//! `fdatasync` for every change queued since the last one.

#[cfg(feature = "std")]
pub mod disk;
#[cfg(feature = "std")]
pub mod mem;

use crate::wire::ChunkId;

/// Most completions one [`ChunkStore::poll_durable`] call may report: stores stop there
/// (asserted in each store) and the node sizes its completion buffer by it (asserted in
/// `Node::poll_store`), so neither side can overrun the other.
pub const POLL_DURABLE_BATCH_MAX: usize = 256;

/// Why a store operation failed. Each maps to a wire [`Status`](crate::wire::Status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No durable chunk with that id.
    NotFound,
    /// The disk (or the store's configured capacity) is full.
    DiskFull,
    /// The chunk is larger than the store accepts.
    TooLarge,
    /// Too many puts in flight in the store; try later.
    Busy,
    /// An I/O error other than a full disk.
    Io,
    /// The stored bytes no longer match their checksum; none of them are handed out.
    Corrupt,
}

/// A durable chunk, as [`ChunkStore::for_each_chunk`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    pub id: ChunkId,
    pub len: u32,
    /// Milliseconds since the store first held the chunk: since its put was committed, or,
    /// for a chunk found on disk when the store was opened, since it was opened (a restart
    /// makes every chunk young again, never older than it is).
    pub age_ms: u64,
}

/// A put in progress inside the store (space reserved, fragments being written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutReservation(pub u32);

/// A change that became durable (or failed to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    /// The ticket given to `commit_put` or `delete`.
    pub ticket: u64,
    pub result: Result<(), StoreError>,
}

pub trait ChunkStore {
    /// Length of a durable (committed) chunk, `None` when absent or deleted.
    fn chunk_len(&self, id: ChunkId) -> Option<u32>;

    /// Reserves space for a chunk of `len` bytes. Space errors surface here, so a client
    /// learns of a full disk before it sends the whole chunk.
    fn begin_put(&mut self, id: ChunkId, len: u32) -> Result<PutReservation, StoreError>;

    /// Writes `data` at byte `offset` of a reserved chunk. Each byte range is written once.
    fn write_at(&mut self, put: PutReservation, offset: u32, data: &[u8]) -> Result<(), StoreError>;

    /// Writes `bufs`, one after the other, from byte `offset` of a reserved chunk, as one
    /// write where the store can (consecutive fragments of a put, each in its own frame).
    /// As with `write_at`, each byte range is written once.
    fn write_vectored_at(&mut self, put: PutReservation, offset: u32, bufs: &[&[u8]]) -> Result<(), StoreError> {
        let mut at = offset;
        for buf in bufs {
            self.write_at(put, at, buf)?;
            at = at
                .checked_add(u32::try_from(buf.len()).map_err(|_| StoreError::TooLarge)?)
                .ok_or(StoreError::TooLarge)?;
        }
        Ok(())
    }

    /// Seals a fully written chunk. It becomes visible to `chunk_len`/`read_at` and is
    /// reported by `poll_durable` with `ticket` once it is on disk.
    fn commit_put(&mut self, put: PutReservation, ticket: u64) -> Result<(), StoreError>;

    /// Gives up a reservation (the client went away); its space is reclaimed later.
    fn abort_put(&mut self, put: PutReservation);

    /// A hint for a reserved chunk: its client will not read it back soon (a file copied
    /// in through the mount), so the store may drop its pages from the page cache once
    /// durable instead of keeping them at the cost of fresh memory. Stores without a page
    /// cache ignore it.
    fn drop_when_durable(&mut self, put: PutReservation) {
        let _ = put;
    }

    /// A hint after a get read committed chunk `id` through its last byte: its client keeps
    /// what it read (the mount's own cache), so the store may drop the chunk's pages from
    /// the page cache instead of holding a second copy in fresh memory. Advice only: an
    /// absent chunk or a failure changes nothing. Stores without a page cache ignore it.
    fn drop_after_read(&mut self, id: ChunkId) {
        let _ = id;
    }

    /// Deletes a chunk; reported by `poll_durable` with `ticket` once durable. Deleting an
    /// absent chunk succeeds (deletes are idempotent).
    fn delete(&mut self, id: ChunkId, ticket: u64) -> Result<(), StoreError>;

    /// Reads up to `buf.len()` bytes of a committed chunk from byte `offset`.
    fn read_at(&mut self, id: ChunkId, offset: u32, buf: &mut [u8]) -> Result<usize, StoreError>;

    /// Reads consecutive bytes of a committed chunk from byte `offset` into `bufs`, one
    /// after the other, as one read where the store can (a GET window's fragments, each in
    /// its own frame); returns the bytes read, fewer than asked only at the chunk's end.
    fn read_vectored_at(&mut self, id: ChunkId, offset: u32, bufs: &mut [&mut [u8]]) -> Result<usize, StoreError> {
        let mut total = 0usize;
        for buf in bufs.iter_mut() {
            let at = offset.checked_add(u32::try_from(total).map_err(|_| StoreError::TooLarge)?);
            let read = self.read_at(id, at.ok_or(StoreError::TooLarge)?, buf)?;
            total += read;
            if read < buf.len() {
                break;
            }
        }
        Ok(total)
    }

    /// Calls `done` for the changes that became durable since the last call, oldest first
    /// and at most [`POLL_DURABLE_BATCH_MAX`] of them; the rest wait for the next call.
    fn poll_durable(&mut self, done: &mut dyn FnMut(Durable));

    /// Changes queued but not yet reported durable.
    fn pending_durable(&self) -> usize;

    /// Bytes of live chunk data held.
    fn used_bytes(&self) -> u64;

    /// Calls `visit` once for every durable chunk, in no particular order (garbage
    /// collection: which chunks exist, and for how long). Not for the packet path. A store
    /// that cannot list its chunks reports none, so nothing of it is ever collected.
    fn for_each_chunk(&self, visit: &mut dyn FnMut(ChunkInfo)) {
        let _ = visit;
    }
}
