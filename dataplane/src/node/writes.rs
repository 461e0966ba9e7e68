//! Put fragments held in their receive frames until the end of a receive batch, then
//! written to the store together: consecutive fragments of a chunk with one vectored
//! write, then the commits and acknowledgements they allow (see [`Node::receive`]).

use crate::arena::{Arena, FrameId};
use crate::node::{ChunkStore, ControlHandler, Node, PENDING_WRITES_MAX, ReplyTo, SlotState, TxQueue, store_status};
use crate::wire::Status;

/// A put fragment waiting in its receive frame for [`Node::flush_writes`].
pub(super) struct PendingWrite {
    pub(super) slot: usize,
    pub(super) generation: u32,
    /// Where in the chunk its bytes go.
    pub(super) offset: u32,
    /// Its receive frame, handed over by `receive` right after the fragment was handled.
    pub(super) frame: Option<FrameId>,
    /// The payload's bytes within the frame.
    pub(super) payload: core::ops::Range<usize>,
}

impl<S: ChunkStore, C: ControlHandler<S>> Node<'_, S, C> {
    /// Writes the fragments `receive` held, contiguous ones of a chunk with one call,
    /// commits the chunks that are now whole, sends the acknowledgements that waited and
    /// frees the frames. A write that fails aborts its put and tells the client why.
    pub fn flush_writes(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue) {
        let mut pending = core::mem::take(&mut self.pending_writes);
        // Several puts' fragments arrive interleaved: by put and offset, each put's
        // consecutive fragments form one run whatever the arrival order.
        pending.sort_unstable_by_key(|write| (write.slot, write.generation, write.offset));
        let mut start = 0;
        // Bounded: every pass consumes at least one pending write.
        while start < pending.len() {
            let first = &pending[start];
            let mut end = start + 1;
            let mut next_offset = first.offset + first.payload.len() as u32;
            while end < pending.len()
                && pending[end].slot == first.slot
                && pending[end].generation == first.generation
                && pending[end].offset == next_offset
            {
                next_offset += pending[end].payload.len() as u32;
                end += 1;
            }
            self.write_run(arena, tx, &pending[start..end]);
            start = end;
        }
        for write in &pending {
            self.commit_if_whole(arena, tx, write.slot, write.generation);
        }
        let acks = core::mem::take(&mut self.acks_due);
        for (index, generation) in acks {
            let slot = &mut self.slots[index];
            if slot.generation != generation || !slot.ack_due {
                continue;
            }
            slot.ack_due = false;
            if slot.state != SlotState::Free {
                if let Err(reason) = self.send_status(arena, tx, index) {
                    self.counters.count_drop(reason);
                }
            }
        }
        for write in pending {
            arena.free(write.frame.expect("receive hands every pending write its frame"));
        }
        assert!(!self.keep_frame && self.pending_writes.is_empty(), "flush_writes left writes pending");
    }

    /// One vectored write of consecutive fragments of one put, unless the put ended since.
    fn write_run(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, run: &[PendingWrite]) {
        let first = &run[0];
        let slot = &self.slots[first.slot];
        if slot.state != SlotState::Receiving || slot.generation != first.generation {
            return;
        }
        let reservation = slot.reservation;
        let mut bufs: heapless::Vec<&[u8], PENDING_WRITES_MAX> = heapless::Vec::new();
        for write in run {
            let frame = write.frame.as_ref().expect("receive hands every pending write its frame");
            let pushed = bufs.push(&arena.frame(frame)[write.payload.clone()]);
            assert!(pushed.is_ok(), "a run is at most PENDING_WRITES_MAX fragments");
        }
        let written = self.store.write_vectored_at(reservation, first.offset, &bufs);
        drop(bufs);
        match written {
            Ok(()) => self.counters.fragments_stored += run.len() as u64,
            Err(error) => self.fail_put(arena, tx, first.slot, store_status(error)),
        }
    }

    /// Commits a put whose every fragment is now written.
    fn commit_if_whole(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, index: usize, generation: u32) {
        let slot = &self.slots[index];
        if slot.state != SlotState::Receiving
            || slot.generation != generation
            || slot.received.count() != slot.frag_count
        {
            return;
        }
        let ticket = self.put_ticket(index);
        match self.store.commit_put(slot.reservation, ticket) {
            Ok(()) => self.slots[index].state = SlotState::Committing,
            Err(error) => self.fail_put(arena, tx, index, store_status(error)),
        }
    }

    /// Aborts a put the store failed, and tells its client with `status`.
    fn fail_put(&mut self, arena: &mut Arena<'_>, tx: &mut TxQueue, index: usize, status: Status) {
        let slot = &self.slots[index];
        let to =
            ReplyTo { peer: slot.peer, session: slot.session, request_id: slot.request_id, chunk_id: slot.chunk_id };
        self.release_slot(index, true);
        if let Err(reason) = self.reply_error(arena, tx, to, status) {
            self.counters.count_drop(reason);
        }
    }

    /// The put in slot `index` owes its client an acknowledgement after the pending writes.
    pub(super) fn ack_later(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if slot.ack_due {
            return;
        }
        slot.ack_due = true;
        let pushed = self.acks_due.push((index, slot.generation));
        assert!(pushed.is_ok(), "receive flushes before acks_due is full");
    }
}
