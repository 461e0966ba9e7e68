//! Control messages between the CLI (or any client) and a node: namespace operations
//! and node status, carried as postcard in the payload of `Control`/`ControlReply`
//! datagrams. Every message fits one datagram: names are bounded and listings paginate.

use serde::{Deserialize, Serialize};

/// Longest file name accepted, in bytes (as in most file systems).
pub const NAME_BYTES_MAX: usize = 255;

/// A file in the namespace. Chunk `i` of the file has id `(file_id << 64) | i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub file_id: u64,
    pub size_bytes: u64,
    pub chunk_bytes: u32,
    /// BLAKE3 of the whole content, checked by `beeline get`.
    pub blake3: [u8; 32],
    pub created_unix_ms: u64,
}

impl FileRecord {
    pub fn chunk_count(&self) -> u64 {
        self.size_bytes.div_ceil(u64::from(self.chunk_bytes.max(1)))
    }

    pub fn chunk_id(&self, index: u64) -> u128 {
        chunk_id(self.file_id, index)
    }

    /// Length of chunk `index` in bytes.
    pub fn chunk_len(&self, index: u64) -> u32 {
        let start = index * u64::from(self.chunk_bytes);
        (self.size_bytes - start).min(u64::from(self.chunk_bytes)) as u32
    }
}

pub fn chunk_id(file_id: u64, index: u64) -> u128 {
    (u128::from(file_id) << 64) | u128::from(index)
}

/// Checks a user-given name: one clear reason when it is not acceptable.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("file name is empty: give a name with --as NAME".into());
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(format!("file name is {} bytes long: names are at most {NAME_BYTES_MAX} bytes", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err("file name contains control characters: pick a printable name".into());
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Records a file whose chunks are all durable; replaces a file of the same name.
    CommitFile(FileRecord),
    Lookup {
        name: String,
    },
    /// Names in order, starting after `after`.
    List {
        after: Option<String>,
        limit: u16,
    },
    Remove {
        name: String,
    },
    NodeStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_version: String,
    pub backend: String,
    pub listen: String,
    pub uptime_ms: u64,
    pub files: u64,
    pub chunks: u64,
    pub used_bytes: u64,
    pub arena_frames: u32,
    pub arena_frames_free: u32,
    pub puts_in_flight: u32,
    pub sessions_active: u32,
    pub page_backing: String,
    /// `(counter name, value)` for every data-path counter.
    pub counters: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    Committed {
        replaced: Option<FileRecord>,
    },
    File(FileRecord),
    NotFound,
    Listing {
        files: Vec<FileRecord>,
        more: bool,
    },
    Removed(FileRecord),
    Status(NodeStatus),
    /// The node could not do it; the text says why and what to do.
    Failed(String),
}
