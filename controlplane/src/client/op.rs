//! One request in flight, whichever kind: a put or get moved as fragments, a bulk put or
//! get through shared memory, or a single request/reply exchange. `Client::drive` runs a
//! slice of them together.

use beeline_dataplane::client::{Exchange, GetChunk, Progress, PutChunk, Transmit};
use beeline_dataplane::wire::Repr;

use super::ChunkBytes;
use super::bulk::{BulkGet, BulkPut, GetBytes};
use crate::shm::client::ShmLink;

pub(super) enum Op {
    Put(Box<PutChunk<ChunkBytes>>),
    Get(Box<GetChunk<Vec<u8>>>),
    BulkPut(Box<BulkPut>),
    BulkGet(Box<BulkGet>),
    Exchange(Box<Exchange>),
}

impl Op {
    pub(super) fn progress(&self) -> Progress {
        match self {
            Op::Put(put) => put.progress(),
            Op::Get(get) => get.progress(),
            Op::BulkPut(put) => put.progress(),
            Op::BulkGet(get) => get.progress(),
            Op::Exchange(exchange) => exchange.progress(),
        }
    }

    /// Hands a reply to the machine (each ignores replies to other requests). Bulk
    /// requests exist only over shared memory, so `link` is there whenever they are.
    pub(super) fn on_packet(
        &mut self,
        repr: &Repr,
        payload: &[u8],
        now_ms: u64,
        tx: &mut dyn Transmit,
        link: Option<&ShmLink>,
    ) {
        match self {
            Op::Put(put) => put.on_packet(repr, payload, now_ms, tx),
            Op::Get(get) => get.on_packet(repr, payload, now_ms, tx),
            Op::BulkPut(put) => put.on_packet(repr, now_ms),
            Op::BulkGet(get) => get.on_packet(repr, now_ms, link.expect("bulk requests go over shared memory")),
            Op::Exchange(exchange) => exchange.on_packet(repr, payload, now_ms),
        }
    }

    /// Runs the machine's timer if its deadline has come.
    pub(super) fn on_timer_if_due(&mut self, now_ms: u64, tx: &mut dyn Transmit, link: Option<&ShmLink>) {
        if now_ms < self.deadline_ms() {
            return;
        }
        match self {
            Op::Put(put) => put.on_timer(now_ms, tx),
            Op::Get(get) => get.on_timer(now_ms, tx),
            Op::BulkPut(put) => put.on_timer(now_ms, link.expect("bulk requests go over shared memory")),
            Op::BulkGet(get) => get.on_timer(now_ms, link.expect("bulk requests go over shared memory")),
            Op::Exchange(exchange) => exchange.on_timer(now_ms, tx),
        }
    }

    /// A put still moving fragments (not only waiting for the node's disk).
    pub(super) fn is_sending_put(&self) -> bool {
        matches!(self, Op::Put(put) if put.is_sending())
    }

    pub(super) fn deadline_ms(&self) -> u64 {
        match self {
            Op::Put(put) => put.deadline_ms(),
            Op::Get(get) => get.deadline_ms(),
            Op::BulkPut(put) => put.deadline_ms(),
            Op::BulkGet(get) => get.deadline_ms(),
            Op::Exchange(exchange) => exchange.deadline_ms(),
        }
    }

    /// A put's chunk bytes back (to reuse the buffer).
    pub(super) fn into_put_data(self) -> Option<ChunkBytes> {
        match self {
            Op::Put(put) => Some(put.into_data()),
            Op::BulkPut(put) => Some(put.into_data()),
            _ => None,
        }
    }

    /// A get's bytes, in a buffer of their own, wherever the op had them.
    pub(super) fn into_get_output(self) -> Option<Vec<u8>> {
        match self {
            Op::Get(get) => Some(get.into_output()),
            Op::BulkGet(get) => Some(get.into_output()),
            _ => None,
        }
    }

    /// A get's bytes where they are: a bulk get's may still be in its slot.
    pub(super) fn into_get_bytes(self) -> Option<GetBytes> {
        match self {
            Op::Get(get) => Some(GetBytes::Owned(get.into_output())),
            Op::BulkGet(get) => Some(get.into_bytes()),
            _ => None,
        }
    }
}
