//! The node's I/O: the network backend plus, when enabled, the shared-memory clients on
//! this host. One `PacketIo` for the poll loop, so both feed the same node engine and
//! store, on the same thread, without locks.

use std::net::SocketAddr;

use beeline_dataplane::arena::Arena;
use beeline_dataplane::io::{PacketIo, Readiness, RxBatch, TxBatch, local_client};
use beeline_dataplane::node::allow::Allowlist;

use super::{Backend, BackendError};
use crate::shm::server::ShmServer;

pub struct NodeIo {
    pub backend: Backend,
    pub shm: Option<ShmServer>,
    network: TxBatch,
    /// Datagrams from the network that claimed a local client's address (never expected).
    spoofed: u64,
}

impl NodeIo {
    pub fn new(backend: Backend, shm: Option<ShmServer>) -> Self {
        Self { backend, shm, network: TxBatch::new(), spoofed: 0 }
    }

    pub fn node_allowlist(&self, configured: &Allowlist) -> Allowlist {
        self.backend.node_allowlist(configured)
    }

    pub fn fragment_bytes_cap(&self) -> u16 {
        self.backend.fragment_bytes_cap()
    }

    pub fn describe(&self) -> String {
        match &self.shm {
            Some(shm) => format!("{}; shared memory on {}", self.backend.describe(), shm.path().display()),
            None => self.backend.describe(),
        }
    }

    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut counters = self.backend.counters();
        if let Some(shm) = &self.shm {
            counters.extend(shm.counter_pairs());
        }
        if self.spoofed > 0 {
            counters.push(("network_local_peer_dropped".to_owned(), self.spoofed));
        }
        counters
    }

    /// Local clients gone since the last call.
    pub fn take_departed(&mut self) -> Vec<SocketAddr> {
        self.shm.as_mut().map(ShmServer::take_departed).unwrap_or_default()
    }
}

impl PacketIo for NodeIo {
    type Error = BackendError;

    fn recv_batch(&mut self, arena: &mut Arena<'_>, out: &mut RxBatch) -> Result<usize, BackendError> {
        let start = out.len();
        self.backend.recv_batch(arena, out)?;
        // Only the shared-memory server may name a local client: the node engine skips the
        // session for those.
        let mut index = start;
        while index < out.len() {
            if local_client(&out[index].peer).is_some() {
                let packet = out.remove(index);
                arena.free(packet.frame);
                self.spoofed += 1;
            } else {
                index += 1;
            }
        }
        if let Some(shm) = self.shm.as_mut() {
            shm.recv(arena, out);
        }
        Ok(out.len() - start)
    }

    fn serve_local(&mut self, serve: &mut dyn FnMut(beeline_dataplane::io::LocalRequest<'_>)) -> usize {
        self.shm.as_mut().map_or(0, |shm| shm.serve_local(serve))
    }

    fn send_batch(&mut self, arena: &mut Arena<'_>, batch: &mut TxBatch) -> Result<(), BackendError> {
        let Some(shm) = self.shm.as_mut() else {
            return self.backend.send_batch(arena, batch);
        };
        for packet in batch.drain(..) {
            if local_client(&packet.peer).is_some() {
                shm.send(arena, packet);
            } else {
                let pushed = self.network.push(packet);
                assert!(pushed.is_ok(), "a drained batch fits another batch");
            }
        }
        shm.flush_all(arena);
        if self.network.is_empty() { Ok(()) } else { self.backend.send_batch(arena, &mut self.network) }
    }

    fn wait(&mut self, timeout_us: u32) -> Readiness {
        let Some(shm) = self.shm.as_mut() else {
            return self.backend.wait(timeout_us);
        };
        match self.backend.wait_fd() {
            Some(fd) => {
                if shm.wait(Some(fd), timeout_us) {
                    Readiness::Ready
                } else {
                    Readiness::TimedOut
                }
            }
            // Backends without a pollable descriptor: share the time between the two.
            None => {
                let shm_ready = shm.wait(None, timeout_us.min(1000));
                match self.backend.wait(0) {
                    Readiness::Ready => Readiness::Ready,
                    Readiness::TimedOut if shm_ready => Readiness::Ready,
                    Readiness::TimedOut => Readiness::TimedOut,
                }
            }
        }
    }

    fn dropped(&self) -> u64 {
        self.backend.dropped()
    }
}
