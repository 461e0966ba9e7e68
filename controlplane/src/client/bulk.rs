//! Whole-chunk puts and gets over shared memory (issue #13): the chunk sits in one of the
//! client's bulk slots, and one request names it. The node's store writes the chunk to
//! disk straight from the slot, or reads it from disk straight into the slot; no
//! fragments, no copy by the node. Each is a plain request/reply [`Exchange`] whose
//! request goes out marked as a bulk request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use beeline_dataplane::client::{ClientError, Exchange, Progress, Timing, Transmit};
use beeline_dataplane::wire::{ChunkId, Opcode, Repr};

use super::ChunkBytes;
use crate::shm::client::ShmLink;
use crate::shm::ring::SlotBytes;

/// Which of the link's bulk slots are taken, one bit each. Kept by the client, not the
/// link, so that slots held by requests survive a reconnect to a restarted node.
#[derive(Debug, Clone, Default)]
pub struct BulkSlots(Arc<AtomicU32>);

impl BulkSlots {
    /// Takes a free slot among the first `count`, if there is one.
    pub fn take(&self, count: u32) -> Option<BulkSlot> {
        // Bounded: one pass over at most 32 slots per observed value, and a failed
        // compare-exchange means another slot changed hands (this client is used from one
        // thread at a time, so in practice it never retries).
        let mut taken = self.0.load(Ordering::Relaxed);
        loop {
            let free = (0..count.min(32)).find(|slot| taken & (1 << slot) == 0)?;
            // Ordering: Relaxed: the mask only says who owns a slot; the slot's bytes are
            // ordered by the ring's Release/Acquire, not by this word.
            match self.0.compare_exchange(taken, taken | (1 << free), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(BulkSlot { index: free, slots: self.clone() }),
                Err(now) => taken = now,
            }
        }
    }

    #[cfg(test)]
    fn in_use(&self) -> u32 {
        // Ordering: Relaxed: a count for tests.
        self.0.load(Ordering::Relaxed).count_ones()
    }
}

/// One taken bulk slot, given back when dropped (with the request that used it).
#[derive(Debug)]
pub struct BulkSlot {
    index: u32,
    slots: BulkSlots,
}

impl Drop for BulkSlot {
    fn drop(&mut self) {
        // Ordering: Relaxed, as in `take`.
        self.slots.0.fetch_and(!(1 << self.index), Ordering::Relaxed);
    }
}

/// Sends through the link as bulk requests.
struct BulkTransmit<'a> {
    link: &'a ShmLink,
}

impl Transmit for BulkTransmit<'_> {
    fn transmit(&mut self, header: &[u8], payload: &[u8]) {
        debug_assert!(payload.is_empty(), "a bulk request is a header alone");
        self.link.send_bulk(header);
    }
}

/// Retries of a bulk request start slower than a datagram's: nothing is lost between the
/// rings, so a missing answer means a busy disk (a put waits for its sync, a get reads a
/// whole chunk), and a get asked again is read again.
fn bulk_timing(timing: Timing) -> Timing {
    let rto_initial_ms = timing.rto_max_ms.min(500).max(timing.rto_initial_ms);
    Timing { rto_initial_ms, rto_max_ms: timing.rto_max_ms.max(rto_initial_ms), timeouts_max: timing.timeouts_max }
}

pub struct BulkPut {
    exchange: Exchange,
    data: ChunkBytes,
    slot: BulkSlot,
    /// The region (a reconnected node's) has no room for the chunk in this slot.
    no_slot: bool,
}

impl BulkPut {
    /// Copies `data` into `slot` (the client's one copy) and prepares the request, with
    /// `flags` (a hint such as `flags::NOT_READ_SOON`, or 0).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        link: &ShmLink,
        slot: BulkSlot,
        chunk_id: ChunkId,
        request_id: u64,
        data: ChunkBytes,
        flags: u8,
        timing: Timing,
        now_ms: u64,
    ) -> BulkPut {
        let no_slot = !link.write_bulk(slot.index, data.as_ref());
        let request = Repr {
            flags,
            request_id,
            chunk_id,
            index: slot.index,
            total_len: data.as_ref().len() as u32,
            ..Repr::new(Opcode::PutFrag)
        };
        let exchange = Exchange::new(request, &[], Opcode::PutDone, bulk_timing(timing), now_ms);
        BulkPut { exchange, data, slot, no_slot }
    }

    pub fn start(&mut self, link: &ShmLink) {
        if !self.no_slot {
            self.exchange.start(&mut BulkTransmit { link });
        }
    }

    pub fn progress(&self) -> Progress {
        if self.no_slot {
            return Progress::Failed(ClientError::Rejected(beeline_dataplane::wire::Status::TooLarge));
        }
        match (self.exchange.progress(), self.exchange.reply()) {
            (Progress::Done, Some((reply, _))) if reply.total_len as usize != self.data.as_ref().len() => {
                Progress::Failed(ClientError::Inconsistent)
            }
            (progress, _) => progress,
        }
    }

    pub fn on_packet(&mut self, repr: &Repr, now_ms: u64) {
        self.exchange.on_packet(repr, &[], now_ms);
    }

    /// Called when the deadline passed: the chunk is copied into the slot again before the
    /// request is, since `link` may be a new region (the node restarted and the client
    /// reconnected) whose slot never held it.
    pub fn on_timer(&mut self, now_ms: u64, link: &ShmLink) {
        if self.progress() == Progress::Pending && !link.write_bulk(self.slot.index, self.data.as_ref()) {
            self.no_slot = true;
            return;
        }
        self.exchange.on_timer(now_ms, &mut BulkTransmit { link });
    }

    pub fn deadline_ms(&self) -> u64 {
        self.exchange.deadline_ms()
    }

    pub fn into_data(self) -> ChunkBytes {
        self.data
    }
}

/// A get's bytes: in a buffer of the client's, or still in the bulk slot the node read
/// them into, which stays taken (named in no request) until this is dropped.
#[derive(Debug)]
pub enum GetBytes {
    Owned(Vec<u8>),
    /// `_slot` is held, not read: dropping it gives the slot back.
    InSlot {
        bytes: SlotBytes,
        _slot: BulkSlot,
    },
}

impl AsRef<[u8]> for GetBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            GetBytes::Owned(bytes) => bytes,
            GetBytes::InSlot { bytes, .. } => bytes.as_ref(),
        }
    }
}

impl GetBytes {
    /// The buffer to reuse, if these bytes had one (a slot is given back by dropping it).
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        match self {
            GetBytes::Owned(bytes) => Some(bytes),
            GetBytes::InSlot { .. } => None,
        }
    }
}

pub struct BulkGet {
    exchange: Exchange,
    /// Bytes wanted: `out` is only storage until the answer fills it.
    len: usize,
    out: Vec<u8>,
    slot: BulkSlot,
    /// Set when the answer's bytes did not match the request.
    inconsistent: bool,
    /// The request may have gone out more than once: a copy the node has yet to serve
    /// would write the slot again, so the answer is copied out of it at once.
    resent: bool,
    /// The answer's bytes, left in the slot (the answer to a request sent once).
    in_place: Option<SlotBytes>,
}

impl BulkGet {
    /// Reads bytes `range` of chunk `chunk_id` into `out`, whose allocation is reused and
    /// whose contents are replaced (never zeroed first), with `flags` (a hint such as
    /// `flags::NOT_READ_SOON`, or 0).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        slot: BulkSlot,
        chunk_id: ChunkId,
        request_id: u64,
        range: std::ops::Range<u32>,
        out: Vec<u8>,
        flags: u8,
        timing: Timing,
        now_ms: u64,
    ) -> BulkGet {
        assert!(range.start <= range.end, "a get of a backwards range");
        let len = range.end - range.start;
        let request = Repr {
            flags,
            request_id,
            chunk_id,
            index: slot.index,
            total_len: len,
            count: range.start,
            ..Repr::new(Opcode::Get)
        };
        let exchange = Exchange::new(request, &[], Opcode::GetData, bulk_timing(timing), now_ms);
        BulkGet { exchange, len: len as usize, out, slot, inconsistent: false, resent: false, in_place: None }
    }

    pub fn start(&mut self, link: &ShmLink) {
        self.exchange.start(&mut BulkTransmit { link });
    }

    pub fn progress(&self) -> Progress {
        if self.inconsistent { Progress::Failed(ClientError::Inconsistent) } else { self.exchange.progress() }
    }

    /// On the answer, takes the bytes where the node placed them before it published the
    /// answer: in place when the request went out once, else copied out of the slot.
    pub fn on_packet(&mut self, repr: &Repr, now_ms: u64, link: &ShmLink) {
        let was_pending = self.exchange.progress() == Progress::Pending;
        self.exchange.on_packet(repr, &[], now_ms);
        if !was_pending || self.exchange.progress() != Progress::Done {
            return;
        }
        if repr.count as usize != self.len {
            self.inconsistent = true;
        } else if self.resent {
            self.inconsistent = !link.read_bulk(self.slot.index, self.len, &mut self.out);
        } else {
            self.in_place = link.bulk_in_place(self.slot.index, self.len);
            self.inconsistent = self.in_place.is_none();
        }
    }

    pub fn on_timer(&mut self, now_ms: u64, link: &ShmLink) {
        // Conservative: a pending request whose deadline came is sent again, or given up
        // (and then its bytes do not matter).
        self.resent |= self.exchange.progress() == Progress::Pending;
        self.exchange.on_timer(now_ms, &mut BulkTransmit { link });
    }

    pub fn deadline_ms(&self) -> u64 {
        self.exchange.deadline_ms()
    }

    /// The bytes in a buffer of their own: copied out of the slot now if they were left
    /// in it.
    pub fn into_output(self) -> Vec<u8> {
        let BulkGet { mut out, in_place, .. } = self;
        if let Some(bytes) = in_place {
            out.clear();
            out.extend_from_slice(bytes.as_ref());
        }
        out
    }

    /// The bytes where they are: in the slot, kept taken, when they were left there.
    pub fn into_bytes(self) -> GetBytes {
        match self.in_place {
            Some(bytes) => GetBytes::InSlot { bytes, _slot: self.slot },
            None => GetBytes::Owned(self.out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BulkSlots;

    #[test]
    fn slots_are_taken_once_and_given_back_on_drop() {
        let slots = BulkSlots::default();
        let first = slots.take(2).expect("two free");
        let second = slots.take(2).expect("one free");
        assert_ne!(first.index, second.index);
        assert!(slots.take(2).is_none(), "both taken");
        assert_eq!(slots.in_use(), 2);
        drop(first);
        let again = slots.take(2).expect("one given back");
        assert_eq!(slots.in_use(), 2);
        drop((again, second));
        assert_eq!(slots.in_use(), 0);
        assert!(slots.take(0).is_none(), "a region without bulk slots has none to give");
    }
}
