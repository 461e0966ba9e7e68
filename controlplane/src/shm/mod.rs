//! The shared-memory transport between a node and the clients on its host (issue #13,
//! part 1). A client connects to the node's Unix socket; the node answers with a hello
//! and three descriptors (`SCM_RIGHTS`): a memfd holding the client's own region (on
//! hugepages when there are free ones) and the two rings' eventfds. The rings carry the
//! storage protocol's messages (header + payload, no session: the socket's permission is
//! the access control) in frames of that region: [`server`] is the node's side, polled by
//! its data-plane thread next to the network backend, [`client`] the client library's.
//! The wire format is in `docs/protocol.md`.

pub mod client;
#[allow(unsafe_code)] // the mapping and its ring words: every block says why it is sound
pub mod ring;
pub mod server;
#[allow(unsafe_code)] // memfd, eventfd, SCM_RIGHTS, SO_PEERCRED, ppoll
mod sys;

use std::path::PathBuf;

/// Whole-chunk slots in each client's bulk area: as many chunks as a client moves at once
/// (`parallel_chunks`, 4 by default); a client with more in flight sends the rest as
/// messages.
pub const BULK_SLOTS: u32 = 4;

/// Where a node's socket is unless its config says otherwise: one per UDP port, so that a
/// client finds it from `--node` alone. `/run/beeline` is writable only by root, so no
/// other user can put a socket there that pretends to be the node.
pub fn default_socket_path(port: u16) -> PathBuf {
    PathBuf::from(format!("/run/beeline/shm-{port}.sock"))
}

/// The hello the node sends on a new connection (with the descriptors when accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub status: HelloStatus,
    pub client_id: u16,
    pub node_port: u16,
    pub slots: u32,
    pub frame_bytes: u32,
    pub bulk_slots: u16,
    pub bulk_slot_bytes: u32,
    pub huge: bool,
    pub region_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloStatus {
    Accepted,
    /// The node serves `shm_clients_max` clients already.
    Full,
    /// The node could not make a region (out of memory).
    NoMemory,
}

pub const HELLO_BYTES: usize = 40;

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[0..8].copy_from_slice(&ring::MAGIC.to_le_bytes());
        out[8..12].copy_from_slice(&ring::VERSION.to_le_bytes());
        out[12] = match self.status {
            HelloStatus::Accepted => 0,
            HelloStatus::Full => 1,
            HelloStatus::NoMemory => 2,
        };
        out[13] = u8::from(self.huge);
        out[14..16].copy_from_slice(&self.client_id.to_le_bytes());
        out[16..18].copy_from_slice(&self.node_port.to_le_bytes());
        out[18..20].copy_from_slice(&self.bulk_slots.to_le_bytes());
        out[20..24].copy_from_slice(&self.slots.to_le_bytes());
        out[24..28].copy_from_slice(&self.frame_bytes.to_le_bytes());
        out[28..32].copy_from_slice(&self.bulk_slot_bytes.to_le_bytes());
        out[32..40].copy_from_slice(&self.region_bytes.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Hello> {
        let bytes: &[u8; HELLO_BYTES] = bytes.try_into().ok()?;
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        if u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")) != ring::MAGIC || u32_at(8) != ring::VERSION {
            return None;
        }
        let status = match bytes[12] {
            0 => HelloStatus::Accepted,
            1 => HelloStatus::Full,
            2 => HelloStatus::NoMemory,
            _ => return None,
        };
        Some(Hello {
            status,
            huge: bytes[13] != 0,
            client_id: u16::from_le_bytes([bytes[14], bytes[15]]),
            node_port: u16::from_le_bytes([bytes[16], bytes[17]]),
            bulk_slots: u16::from_le_bytes([bytes[18], bytes[19]]),
            slots: u32_at(20),
            frame_bytes: u32_at(24),
            bulk_slot_bytes: u32_at(28),
            region_bytes: u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")),
        })
    }
}

#[cfg(test)]
mod tests;
