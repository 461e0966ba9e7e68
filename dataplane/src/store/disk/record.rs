//! The on-disk record format.
//!
//! Every record starts at a multiple of [`RECORD_ALIGN_BYTES`] (64) and is a 64-byte
//! header followed by the payload, padded to the next multiple of 64. All integers are
//! little endian.
//!
//! ```text
//! frame, written once when the space is reserved:
//!   0..4    magic "BLR1"
//!   4       format version (1)
//!   5       kind: 1 = put, 2 = tombstone
//!   6..8    zero
//!   8..24   chunk id (u128)
//!   24..28  payload length in bytes (u32; 0 for tombstones)
//!   28..32  frame crc32c (over bytes 0..28)
//! commit block, all zero while the put is pending, written once at commit:
//!   32..36  state "CMT1" (committed)
//!   36..40  payload crc32c (standard crc32c of the whole payload)
//!   40..48  sequence number (u64)
//!   48..60  zero
//!   60..64  commit crc32c (over bytes 28..60: binds the block to its frame)
//! ```
//!
//! A put writes its frame (with a zero commit block) when `begin_put` reserves the space,
//! so a restart can always step over the reservation by its length even if the put never
//! completed. `commit_put` writes only the commit block, bytes that were zero until then,
//! so a torn commit can never damage the framing: a commit block that fails its crc reads
//! as "never committed". A header is 64 bytes at a 64-byte aligned offset, so it never
//! straddles a sector. Tombstones are a single header written in one `pwrite`.
//!
//! Sequence numbers are taken from one counter when a put is *committed* and when a
//! delete is issued, so the record with the highest sequence number for a chunk id is
//! the current state of that chunk, both in memory and after a restart (compaction keeps
//! a record's sequence number when it moves it).

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommitState {
    /// Never committed, or the commit block was torn.
    Pending,
    Committed {
        seq: u64,
        payload_crc: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DecodedHeader {
    pub(super) kind: u8,
    pub(super) id: ChunkId,
    pub(super) len: u32,
    pub(super) commit: CommitState,
}

/// Bytes a record with a `len`-byte payload takes on disk.
pub(super) fn record_bytes(len: u32) -> u64 {
    (RECORD_HEADER_BYTES + u64::from(len)).next_multiple_of(RECORD_ALIGN_BYTES)
}

pub(super) fn encode_frame(kind: u8, id: ChunkId, len: u32) -> [u8; 32] {
    let mut frame = [0u8; 32];
    frame[0..4].copy_from_slice(&MAGIC);
    frame[4] = FORMAT_VERSION;
    frame[5] = kind;
    frame[8..24].copy_from_slice(&id.to_le_bytes());
    frame[24..28].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&frame[0..28]);
    frame[28..32].copy_from_slice(&crc.to_le_bytes());
    frame
}

pub(super) fn frame_crc(kind: u8, id: ChunkId, len: u32) -> u32 {
    let frame = encode_frame(kind, id, len);
    u32::from_le_bytes([frame[28], frame[29], frame[30], frame[31]])
}

pub(super) fn commit_crc(frame_crc: u32, block: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame_crc.to_le_bytes()), &block[0..28])
}

pub(super) fn encode_commit(frame_crc: u32, seq: u64, payload_crc: u32) -> [u8; 32] {
    let mut block = [0u8; 32];
    block[0..4].copy_from_slice(&STATE_COMMITTED.to_le_bytes());
    block[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    block[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = commit_crc(frame_crc, &block);
    block[28..32].copy_from_slice(&crc.to_le_bytes());
    block
}

pub(super) fn encode_header(kind: u8, id: ChunkId, len: u32, commit: Option<[u8; 32]>) -> [u8; 64] {
    let mut header = [0u8; 64];
    header[0..32].copy_from_slice(&encode_frame(kind, id, len));
    if let Some(commit) = commit {
        header[32..64].copy_from_slice(&commit);
    }
    header
}

pub(super) fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

/// `None` when the frame is not a valid record frame (torn, garbage or zeros).
pub(super) fn decode_header(header: &[u8; 64]) -> Option<DecodedHeader> {
    let frame = &header[0..32];
    let frame_crc = le_u32(&frame[28..32]);
    if frame[0..4] != MAGIC
        || frame[4] != FORMAT_VERSION
        || frame[6..8] != [0, 0]
        || crc32c::crc32c(&frame[0..28]) != frame_crc
    {
        return None;
    }
    let kind = frame[5];
    let id = ChunkId::from_le_bytes(frame[8..24].try_into().expect("16 bytes"));
    let len = le_u32(&frame[24..28]);
    let valid_shape = match kind {
        KIND_PUT => len <= MAX_CHUNK_LIMIT_BYTES,
        KIND_TOMBSTONE => len == 0,
        _ => false,
    };
    if !valid_shape {
        return None;
    }
    let block = &header[32..64];
    let committed = le_u32(&block[0..4]) == STATE_COMMITTED
        && block[16..28].iter().all(|&byte| byte == 0)
        && commit_crc(frame_crc, block) == le_u32(&block[28..32]);
    let commit = if committed {
        let seq = u64::from_le_bytes(block[8..16].try_into().expect("8 bytes"));
        CommitState::Committed { seq, payload_crc: le_u32(&block[4..8]) }
    } else {
        CommitState::Pending
    };
    Some(DecodedHeader { kind, id, len, commit })
}
