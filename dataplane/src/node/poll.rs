//! The run-to-completion poll loop: receive a batch, handle it, acknowledge what became
//! durable, send the replies. Generic over the backend, the store and the control plane.

use crate::arena::Arena;
use crate::io::{LOCAL_REQUESTS_PER_TURN, PacketIo, RxBatch, TxBatch};
use crate::node::{ControlHandler, Node, PENDING_WRITES_MAX, TxQueue};
use crate::store::ChunkStore;

/// What one turn of the loop did; the caller backs off when it did nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Turn {
    pub received: usize,
    pub sent: usize,
}

impl Turn {
    pub fn idle(&self) -> bool {
        self.received == 0 && self.sent == 0
    }
}

pub struct PollLoop<'m, 's, Io: PacketIo, S: ChunkStore, C: ControlHandler<S>> {
    pub io: Io,
    pub arena: Arena<'m>,
    pub node: Node<'s, S, C>,
    rx: RxBatch,
    tx_queue: TxQueue,
    tx_batch: TxBatch,
}

impl<'m, 's, Io: PacketIo, S: ChunkStore, C: ControlHandler<S>> PollLoop<'m, 's, Io, S, C> {
    pub fn new(io: Io, arena: Arena<'m>, node: Node<'s, S, C>) -> Self {
        Self { io, arena, node, rx: RxBatch::new(), tx_queue: TxQueue::new(), tx_batch: TxBatch::new() }
    }

    /// One turn: at most one receive batch and a full flush of the replies it caused.
    pub fn run_once(&mut self, now_ms: u64) -> Result<Turn, Io::Error> {
        let mut turn = Turn::default();
        let window = usize::from(self.node.config().window_fragments_max);
        turn.received = self.io.recv_batch(&mut self.arena, &mut self.rx)?;
        let mut rx = core::mem::take(&mut self.rx);
        // Keep room for the largest burst one request can cause (a GET window), or that
        // the held put fragments cause when they are written (an acknowledgement or an
        // error each).
        let room_needed = window.max(2 * PENDING_WRITES_MAX);
        for packet in rx.drain(..) {
            if self.tx_queue.capacity() - self.tx_queue.len() <= room_needed {
                turn.sent += self.flush()?;
            }
            self.node.receive(now_ms, &mut self.arena, packet, &mut self.tx_queue);
        }
        self.rx = rx;
        if self.tx_queue.capacity() - self.tx_queue.len() <= 2 * PENDING_WRITES_MAX {
            turn.sent += self.flush()?;
        }
        // The batch's put fragments, contiguous ones of a chunk in one write each.
        self.node.flush_writes(&mut self.arena, &mut self.tx_queue);
        // A local request queues at most one reply, and a backend hands over at most
        // `LOCAL_REQUESTS_PER_TURN`: with that much room free none is dropped.
        if self.tx_queue.capacity() - self.tx_queue.len() <= LOCAL_REQUESTS_PER_TURN {
            turn.sent += self.flush()?;
        }
        let (node, arena, tx_queue) = (&mut self.node, &mut self.arena, &mut self.tx_queue);
        let mut served_locally = 0usize;
        let reported = self.io.serve_local(&mut |request| {
            served_locally += 1;
            node.serve_local(now_ms, arena, tx_queue, request)
        });
        // The backend's side of the contract: it bounds a turn's local work as it bounds a
        // receive batch, so one client's queue cannot starve the network.
        assert!(
            served_locally <= LOCAL_REQUESTS_PER_TURN,
            "a backend served {served_locally} local requests in one turn"
        );
        assert_eq!(reported, served_locally, "a backend miscounted the local requests it served");
        turn.received += served_locally;
        self.node.expire(now_ms);
        self.node.poll_store(&mut self.arena, &mut self.tx_queue);
        turn.sent += self.flush()?;
        Ok(turn)
    }

    /// Sends acknowledgements for whatever became durable, without receiving anything:
    /// used while shutting down to finish in-flight acks.
    pub fn finish_acks(&mut self) -> Result<usize, Io::Error> {
        self.node.poll_store(&mut self.arena, &mut self.tx_queue);
        self.flush()
    }

    fn flush(&mut self) -> Result<usize, Io::Error> {
        let mut sent = 0;
        while !self.tx_queue.is_empty() {
            while !self.tx_batch.is_full() {
                let Some(packet) = self.tx_queue.pop_front() else { break };
                let pushed = self.tx_batch.push(packet);
                assert!(pushed.is_ok(), "checked is_full");
            }
            sent += self.tx_batch.len();
            self.io.send_batch(&mut self.arena, &mut self.tx_batch)?;
            assert!(self.tx_batch.is_empty(), "backends drain the batch");
        }
        Ok(sent)
    }
}

/// Idle back-off: how long to sleep in the backend after consecutive idle turns.
/// Starts at zero (spin a little), doubles to `max_us`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    idle_turns: u32,
    max_us: u32,
}

impl Backoff {
    pub const fn new(max_us: u32) -> Self {
        Self { idle_turns: 0, max_us }
    }

    pub fn reset(&mut self) {
        self.idle_turns = 0;
    }

    /// Microseconds to wait after one more idle turn; 0 means poll again at once.
    pub fn next_wait_us(&mut self) -> u32 {
        self.idle_turns = self.idle_turns.saturating_add(1);
        const SPIN_TURNS: u32 = 8;
        if self.idle_turns <= SPIN_TURNS {
            return 0;
        }
        let exponent = (self.idle_turns - SPIN_TURNS).min(16);
        (16u32 << exponent).min(self.max_us)
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    #[test]
    fn backoff_grows_to_cap_and_resets() {
        let mut backoff = Backoff::new(1000);
        let waits: std::vec::Vec<u32> = (0..30).map(|_| backoff.next_wait_us()).collect();
        assert_eq!(waits[0], 0);
        assert_eq!(*waits.last().unwrap(), 1000);
        assert!(waits.windows(2).all(|pair| pair[0] <= pair[1]));
        backoff.reset();
        assert_eq!(backoff.next_wait_us(), 0);
    }
}
