//! Whole-chunk requests of local clients whose bytes stay where the client put them: in
//! memory the backend shares with that client (the shared-memory transport's bulk area).
//! The store writes a put's chunk straight from there and reads a get's bytes straight
//! into it; no arena frame, no fragmenting, no copy by the node. Replies are ordinary
//! header-only replies to the client's local peer address.

use crate::arena::Arena;
use crate::io::{LocalRequest, local_client};
use crate::node::sessions::SessionRef;
use crate::node::{ControlHandler, Node, ReplyTo, SlotState, TxQueue, store_status};
use crate::store::ChunkStore;
use crate::wire::{ChunkId, Opcode, Repr, Status};

impl<S: ChunkStore, C: ControlHandler<S>> Node<'_, S, C> {
    /// Serves one local whole-chunk request; replies go to `tx` like any other.
    pub fn serve_local(&mut self, now_ms: u64, arena: &mut Arena<'_>, tx: &mut TxQueue, request: LocalRequest<'_>) {
        self.now_ms = self.now_ms.max(now_ms);
        self.counters.local_requests += 1;
        let outcome = match request {
            LocalRequest::Put { peer, request_id, chunk_id, data, not_read_soon } => {
                assert!(local_client(&peer).is_some(), "only a local client's memory can be shared");
                let to = ReplyTo { peer, session: SessionRef::LOCAL, request_id, chunk_id };
                match self.local_put(now_ms, to, data, not_read_soon) {
                    Ok(None) => Ok(()),
                    Ok(Some(total_len)) => {
                        let done = Repr { total_len, ..Self::reply_header(Opcode::PutDone, to) };
                        self.reply(arena, tx, to, done, &[])
                    }
                    Err(status) => self.reply_error(arena, tx, to, status),
                }
            }
            LocalRequest::Get { peer, request_id, chunk_id, offset, out, not_read_soon } => {
                assert!(local_client(&peer).is_some(), "only a local client's memory can be shared");
                let to = ReplyTo { peer, session: SessionRef::LOCAL, request_id, chunk_id };
                self.counters.gets += 1;
                match self.local_get(chunk_id, offset, out) {
                    Ok((total_len, placed)) => {
                        if not_read_soon && u64::from(offset) + u64::from(placed) == u64::from(total_len) {
                            self.store.drop_after_read(chunk_id);
                        }
                        self.counters.bytes_served += u64::from(placed);
                        let data =
                            Repr { total_len, index: offset, count: placed, ..Self::reply_header(Opcode::GetData, to) };
                        self.reply(arena, tx, to, data, &[])
                    }
                    Err(status) => self.reply_error(arena, tx, to, status),
                }
            }
        };
        if let Err(reason) = outcome {
            self.counters.count_drop(reason);
        }
    }

    /// Writes and commits a whole chunk; `Ok(Some(len))` when it was durable already (a
    /// retried put), `Ok(None)` when `PutDone` follows from the durable path.
    fn local_put(&mut self, now_ms: u64, to: ReplyTo, data: &[u8], not_read_soon: bool) -> Result<Option<u32>, Status> {
        let total_len = u32::try_from(data.len()).map_err(|_| Status::TooLarge)?;
        if total_len > self.config.chunk_bytes_max {
            return Err(Status::TooLarge);
        }
        if let Some(index) = self.find_slot(to.chunk_id) {
            let slot = &mut self.slots[index];
            if slot.total_len != total_len {
                return Err(Status::Conflict);
            }
            if slot.state != SlotState::Committing {
                // The same chunk arriving fragment by fragment: let that put finish first.
                return Err(Status::Busy);
            }
            // A retry while the first copy is being made durable: answer this one.
            slot.peer = to.peer;
            slot.session = to.session;
            slot.request_id = to.request_id;
            return Ok(None);
        }
        if let Some(len) = self.store.chunk_len(to.chunk_id) {
            return if len == total_len { Ok(Some(len)) } else { Err(Status::Conflict) };
        }
        let index = self.slots.iter().position(|slot| slot.state == SlotState::Free).ok_or(Status::Busy)?;
        let reservation = self.store.begin_put(to.chunk_id, total_len).map_err(store_status)?;
        if not_read_soon {
            self.store.drop_when_durable(reservation);
        }
        if let Err(error) = self.store.write_at(reservation, 0, data) {
            self.store.abort_put(reservation);
            return Err(store_status(error));
        }
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.chunk_id = to.chunk_id;
        slot.request_id = to.request_id;
        slot.peer = to.peer;
        slot.session = to.session;
        slot.total_len = total_len;
        slot.frag_len = 0;
        slot.frag_count = 0;
        slot.received.clear();
        slot.reservation = reservation;
        slot.started_ms = now_ms;
        slot.last_activity_ms = now_ms;
        let ticket = self.put_ticket(index);
        if let Err(error) = self.store.commit_put(reservation, ticket) {
            self.store.abort_put(reservation);
            return Err(store_status(error));
        }
        self.slots[index].state = SlotState::Committing;
        Ok(None)
    }

    /// Reads from `offset` into `out`; returns the chunk's length and the bytes placed.
    fn local_get(&mut self, chunk_id: ChunkId, offset: u32, out: &mut [u8]) -> Result<(u32, u32), Status> {
        let total_len = self.store.chunk_len(chunk_id).ok_or(Status::NotFound)?;
        if offset > total_len {
            return Err(Status::BadRequest);
        }
        let wanted = out.len().min((total_len - offset) as usize);
        let placed = self.store.read_at(chunk_id, offset, &mut out[..wanted]).map_err(store_status)?;
        assert!(placed <= wanted, "the store read more than asked");
        Ok((total_len, placed as u32))
    }
}
