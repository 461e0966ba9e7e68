//! The Beeline data datagram, protocol version 2: a fixed 80-byte header followed by the
//! payload, sealed with the session's AES-128-GCM key.
//!
//! Layout (all integers big-endian), specified in `docs/protocol.md`:
//!
//! ```text
//!  0  magic u16 = 0xBEE1     2  version u8 = 2      3  opcode u8 (high bit clear)
//!  4  flags u8               5  status u8           6  credits u16
//!  8  request_id u64
//! 16  chunk_id u128
//! 32  index u32              36  count u32
//! 40  total_len u32          44  frag_len u16       46  payload_len u16
//! 48  receiver_index u32     52  reserved u32 = 0
//! 56  packet_number u64
//! 64  tag [u8; 16]  AES-128-GCM over the payload, bytes 0..64 as associated data
//! 80  payload (encrypted)
//! ```
//!
//! As in smoltcp's `wire`, [`Packet`] is a view over untrusted bytes: `new_checked`
//! validates lengths, magic, version and opcode, after which no accessor can panic.
//! [`Repr`] is the parsed, owned form used to build packets. Sealing and opening, which
//! need a session's keys, live in the `session::peer` module; [`v1`] recognises the
//! previous version's datagrams so that a node can tell an old client to upgrade.
//! Handshake messages share the magic and version and set the opcode byte's high bit
//! ([`is_handshake`]).

/// Identifies a chunk cluster-wide. Beeline clients use `(file id << 64) | chunk index`.
pub type ChunkId = u128;

pub const MAGIC: u16 = 0xBEE1;
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 80;
pub const TAG_LEN: usize = 16;
/// Bytes of the header authenticated as the AEAD's associated data (all before the tag).
pub const AAD_LEN: usize = 64;
/// The opcode byte's bit that marks a handshake message instead of a data datagram.
pub const HANDSHAKE_BIT: u8 = 0x80;
/// Largest payload a datagram may declare. Real limits are lower (frame size, MTU).
pub const PAYLOAD_MAX: usize = u16::MAX as usize;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const OPCODE: usize = 3;
    pub const FLAGS: usize = 4;
    pub const STATUS: usize = 5;
    pub const CREDITS: Range<usize> = 6..8;
    pub const REQUEST_ID: Range<usize> = 8..16;
    pub const CHUNK_ID: Range<usize> = 16..32;
    pub const INDEX: Range<usize> = 32..36;
    pub const COUNT: Range<usize> = 36..40;
    pub const TOTAL_LEN: Range<usize> = 40..44;
    pub const FRAG_LEN: Range<usize> = 44..46;
    pub const PAYLOAD_LEN: Range<usize> = 46..48;
    pub const RECEIVER_INDEX: Range<usize> = 48..52;
    pub const RESERVED: Range<usize> = 52..56;
    pub const PACKET_NUMBER: Range<usize> = 56..64;
    pub const TAG: Range<usize> = 64..80;
}

// The layout's constants must agree: fields tile the header without gaps or overlap, the
// tag follows exactly the associated data and ends the header, which is a whole number of
// AES blocks.
const _: () = {
    assert!(field::MAGIC.end == field::VERSION && field::VERSION + 1 == field::OPCODE);
    assert!(field::OPCODE + 1 == field::FLAGS && field::FLAGS + 1 == field::STATUS);
    assert!(field::STATUS + 1 == field::CREDITS.start && field::CREDITS.end == field::REQUEST_ID.start);
    assert!(field::REQUEST_ID.end == field::CHUNK_ID.start && field::CHUNK_ID.end == field::INDEX.start);
    assert!(field::INDEX.end == field::COUNT.start && field::COUNT.end == field::TOTAL_LEN.start);
    assert!(field::TOTAL_LEN.end == field::FRAG_LEN.start && field::FRAG_LEN.end == field::PAYLOAD_LEN.start);
    assert!(field::PAYLOAD_LEN.end == field::RECEIVER_INDEX.start);
    assert!(field::RECEIVER_INDEX.end == field::RESERVED.start && field::RESERVED.end == field::PACKET_NUMBER.start);
    assert!(field::PACKET_NUMBER.end == field::TAG.start && field::TAG.start == AAD_LEN);
    assert!(field::TAG.end - field::TAG.start == TAG_LEN && field::TAG.end == HEADER_LEN);
    assert!(HEADER_LEN.is_multiple_of(16));
    assert!(PAYLOAD_MAX == u16::MAX as usize, "PAYLOAD_LEN is a u16");
};

/// Operation of a datagram. Requests go client → node, replies node → client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Ping = 1,
    Pong = 2,
    /// One fragment of a chunk: `index` of `count`, `frag_len` bytes each but the last.
    PutFrag = 3,
    /// "Which fragments of this put do you have?"
    PutQuery = 4,
    /// Fragments received: all below `index`, plus a bitmap of the ones after it.
    PutStatus = 5,
    /// The chunk is durable on the node's disk.
    PutDone = 6,
    /// Send fragments `index .. index + count` of a chunk, cut at `frag_len` bytes.
    Get = 7,
    /// One fragment of a chunk being read.
    GetData = 8,
    Delete = 9,
    DeleteDone = 10,
    Stat = 11,
    StatReply = 12,
    /// A control-plane request (postcard payload, handled outside the data plane).
    Control = 13,
    ControlReply = 14,
    /// The request failed; `status` says why.
    Error = 15,
}

impl Opcode {
    /// Whether a node sends this opcode (a reply) rather than receives it (a request).
    pub fn is_reply(self) -> bool {
        match self {
            Self::Pong
            | Self::PutStatus
            | Self::PutDone
            | Self::GetData
            | Self::DeleteDone
            | Self::StatReply
            | Self::ControlReply
            | Self::Error => true,
            Self::Ping | Self::PutFrag | Self::PutQuery | Self::Get | Self::Delete | Self::Stat | Self::Control => {
                false
            }
        }
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Ping,
            2 => Self::Pong,
            3 => Self::PutFrag,
            4 => Self::PutQuery,
            5 => Self::PutStatus,
            6 => Self::PutDone,
            7 => Self::Get,
            8 => Self::GetData,
            9 => Self::Delete,
            10 => Self::DeleteDone,
            11 => Self::Stat,
            12 => Self::StatReply,
            13 => Self::Control,
            14 => Self::ControlReply,
            15 => Self::Error,
            _ => return None,
        })
    }
}

/// Result code carried by replies (`Error` packets in particular).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    /// The node has no free slot or buffer for this request; retry after a back-off.
    Busy = 1,
    NotFound = 2,
    DiskFull = 3,
    /// The request's fields are inconsistent (lengths, indices, sizes).
    BadRequest = 4,
    /// The chunk or fragment is larger than the node accepts.
    TooLarge = 5,
    /// The node hit an I/O error; the request did not take effect.
    Internal = 6,
    /// A put for this chunk id is already under way with a different shape.
    Conflict = 7,
    /// The stored copy failed its checksum: no bytes of it are sent. Read another replica,
    /// or repair this one (`beeline cluster repair`; on a single node restore the file).
    Corrupt = 8,
}

impl Status {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Ok,
            1 => Self::Busy,
            2 => Self::NotFound,
            3 => Self::DiskFull,
            4 => Self::BadRequest,
            5 => Self::TooLarge,
            6 => Self::Internal,
            7 => Self::Conflict,
            8 => Self::Corrupt,
            _ => return None,
        })
    }
}

pub mod flags {
    /// PutFrag: the sender wants a PutStatus reply now (last fragment of a burst).
    pub const ACK_REQUEST: u8 = 1;
    /// PutStatus: every fragment is in; the chunk is being made durable.
    pub const COMPLETE: u8 = 2;
    /// PutFrag (and a shared-memory bulk put): the sender will not read the chunk back
    /// soon, so the node may drop its pages from the page cache once durable
    /// (`ChunkStore::drop_when_durable`). Get (and a bulk get): the sender keeps what it
    /// reads, so the node may drop the chunk's pages once a get has read its last byte
    /// (`ChunkStore::drop_after_read`). A hint; nodes before it refuse the packet.
    pub const NOT_READ_SOON: u8 = 4;
    pub const KNOWN: u8 = ACK_REQUEST | COMPLETE | NOT_READ_SOON;
}

/// Why bytes were rejected by [`Packet::new_checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header, or than header + declared payload.
    Truncated,
    BadMagic,
    UnsupportedVersion,
    UnknownOpcode,
    UnknownStatus,
    /// Flag bits this version does not define, or nonzero reserved fields.
    UnknownFlags,
}

/// Whether `datagram` is a protocol-v2 handshake message rather than a data datagram.
pub fn is_handshake(datagram: &[u8]) -> bool {
    datagram.len() >= 4
        && be_u16(&datagram[field::MAGIC]) == MAGIC
        && datagram[field::VERSION] == VERSION
        && datagram[field::OPCODE] & HANDSHAKE_BIT != 0
}

/// A read/write view of a Beeline datagram over any buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; only for buffers this process just built.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps untrusted bytes, checking everything the accessors rely on.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if be_u16(&data[field::MAGIC]) != MAGIC {
            return Err(WireError::BadMagic);
        }
        if data[field::VERSION] != VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        if Opcode::from_u8(data[field::OPCODE]).is_none() {
            return Err(WireError::UnknownOpcode);
        }
        if Status::from_u8(data[field::STATUS]).is_none() {
            return Err(WireError::UnknownStatus);
        }
        if data[field::FLAGS] & !flags::KNOWN != 0 || data[field::RESERVED] != [0; 4] {
            return Err(WireError::UnknownFlags);
        }
        if data.len() < HEADER_LEN + usize::from(be_u16(&data[field::PAYLOAD_LEN])) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn opcode(&self) -> Opcode {
        // new_checked proved the byte is a known opcode.
        Opcode::from_u8(self.buffer.as_ref()[field::OPCODE]).unwrap_or(Opcode::Error)
    }

    pub fn status(&self) -> Status {
        Status::from_u8(self.buffer.as_ref()[field::STATUS]).unwrap_or(Status::Internal)
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn credits(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::CREDITS])
    }

    pub fn request_id(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.buffer.as_ref()[field::REQUEST_ID]);
        u64::from_be_bytes(bytes)
    }

    pub fn chunk_id(&self) -> ChunkId {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&self.buffer.as_ref()[field::CHUNK_ID]);
        u128::from_be_bytes(bytes)
    }

    pub fn index(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::INDEX])
    }

    pub fn count(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::COUNT])
    }

    pub fn total_len(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::TOTAL_LEN])
    }

    pub fn frag_len(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::FRAG_LEN])
    }

    pub fn payload_len(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::PAYLOAD_LEN])
    }

    /// The index the receiver gave this session (its slot in the receiver's table).
    pub fn receiver_index(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::RECEIVER_INDEX])
    }

    pub fn packet_number(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.buffer.as_ref()[field::PACKET_NUMBER]);
        u64::from_be_bytes(bytes)
    }

    pub fn tag(&self) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&self.buffer.as_ref()[field::TAG]);
        tag
    }

    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }

    /// Header + payload, without trailing bytes beyond the declared payload.
    pub fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Writes the session fields, then splits the datagram into what the AEAD needs:
    /// the associated data, the tag's place and the payload (sealed or opened in place).
    pub fn seal_parts(&mut self, receiver_index: u32, packet_number: u64) -> (&[u8], &mut [u8; TAG_LEN], &mut [u8]) {
        let end = HEADER_LEN + usize::from(self.payload_len());
        let data = self.buffer.as_mut();
        data[field::RECEIVER_INDEX].copy_from_slice(&receiver_index.to_be_bytes());
        data[field::PACKET_NUMBER].copy_from_slice(&packet_number.to_be_bytes());
        let (header, rest) = data[..end].split_at_mut(HEADER_LEN);
        let (aad, tag) = header.split_at_mut(AAD_LEN);
        let tag: &mut [u8; TAG_LEN] = tag.try_into().expect("the header ends with the tag");
        (aad, tag, rest)
    }

    /// The associated data and the payload, for opening in place.
    pub fn open_parts(&mut self) -> (&[u8], &mut [u8]) {
        let end = HEADER_LEN + usize::from(self.payload_len());
        let (header, rest) = self.buffer.as_mut()[..end].split_at_mut(HEADER_LEN);
        (&header[..AAD_LEN], rest)
    }
}

/// The cluster key every node and client of a cluster shares. Protocol v2 never uses it
/// on a data datagram: the handshake derives per-session keys from it
/// (`session::handshake::ClusterKeys`).
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    pub const fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// The parsed header of a datagram (everything but the MAC and payload bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub opcode: Opcode,
    pub flags: u8,
    pub status: Status,
    pub credits: u16,
    pub request_id: u64,
    pub chunk_id: ChunkId,
    pub index: u32,
    pub count: u32,
    pub total_len: u32,
    pub frag_len: u16,
    pub payload_len: u16,
}

impl Repr {
    /// A header with every field zero but the opcode.
    pub const fn new(opcode: Opcode) -> Self {
        Self {
            opcode,
            flags: 0,
            status: Status::Ok,
            credits: 0,
            request_id: 0,
            chunk_id: 0,
            index: 0,
            count: 0,
            total_len: 0,
            frag_len: 0,
            payload_len: 0,
        }
    }

    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            opcode: packet.opcode(),
            flags: packet.flags(),
            status: packet.status(),
            credits: packet.credits(),
            request_id: packet.request_id(),
            chunk_id: packet.chunk_id(),
            index: packet.index(),
            count: packet.count(),
            total_len: packet.total_len(),
            frag_len: packet.frag_len(),
            payload_len: packet.payload_len(),
        }
    }

    /// Datagram length: header plus payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len)
    }

    /// Writes the header into `buffer`, zeroing the session fields and the tag. Panics if `buffer` is shorter
    /// than the header: callers size their buffers (a contract, not untrusted input).
    pub fn emit(&self, buffer: &mut [u8]) {
        assert!(buffer.len() >= HEADER_LEN, "header buffer too small");
        buffer[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        buffer[field::VERSION] = VERSION;
        buffer[field::OPCODE] = self.opcode as u8;
        buffer[field::FLAGS] = self.flags;
        buffer[field::STATUS] = self.status as u8;
        buffer[field::CREDITS].copy_from_slice(&self.credits.to_be_bytes());
        buffer[field::REQUEST_ID].copy_from_slice(&self.request_id.to_be_bytes());
        buffer[field::CHUNK_ID].copy_from_slice(&self.chunk_id.to_be_bytes());
        buffer[field::INDEX].copy_from_slice(&self.index.to_be_bytes());
        buffer[field::COUNT].copy_from_slice(&self.count.to_be_bytes());
        buffer[field::TOTAL_LEN].copy_from_slice(&self.total_len.to_be_bytes());
        buffer[field::FRAG_LEN].copy_from_slice(&self.frag_len.to_be_bytes());
        buffer[field::PAYLOAD_LEN].copy_from_slice(&self.payload_len.to_be_bytes());
        buffer[field::RECEIVER_INDEX.start..field::TAG.end].fill(0);
    }

    /// Builds an unsealed datagram in `buffer` with `payload` copied behind the header;
    /// returns its length. A session seals it before it leaves. For client-side and small
    /// control packets only: the node's bulk paths write payload in place instead.
    pub fn emit_with_payload(&self, buffer: &mut [u8], payload: &[u8]) -> usize {
        assert_eq!(usize::from(self.payload_len), payload.len());
        let len = self.buffer_len();
        assert!(buffer.len() >= len, "datagram buffer too small");
        self.emit(buffer);
        buffer[HEADER_LEN..len].copy_from_slice(payload);
        len
    }
}

/// Protocol version 1, kept only to recognise old clients and tell them to upgrade: a
/// 64-byte header with the same fields up to byte 48, then a keyed-BLAKE3 MAC under the
/// cluster key over bytes 0..48 and the payload. Nothing else of version 1 is served.
pub mod v1 {
    use super::{ClusterKey, MAGIC, Opcode, Status, be_u16, field};

    pub const VERSION: u8 = 1;
    pub const HEADER_LEN: usize = 64;
    const MAC_COVERED_LEN: usize = 48;
    const MAC_LEN: usize = 16;
    /// What an old client is sent back, as the payload of a `BadRequest` error: old clients
    /// report it as "a version mismatch between client and node".
    pub const UPGRADE_MESSAGE: &[u8] = b"upgrade: this node speaks Beeline protocol v2";
    /// Largest reply to a version-1 datagram: under 3x the smallest one (no amplifier).
    pub const REPLY_LEN: usize = HEADER_LEN + UPGRADE_MESSAGE.len();
    const _: () = assert!(REPLY_LEN <= 3 * HEADER_LEN);

    fn mac(key: &ClusterKey, header: &[u8], payload: &[u8]) -> [u8; MAC_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(key.bytes());
        hasher.update(header).update(payload);
        let mut out = [0u8; MAC_LEN];
        hasher.finalize_xof().fill(&mut out);
        out
    }

    /// Whether `datagram` is a version-1 datagram whose MAC verifies under `key`.
    pub fn authentic(datagram: &[u8], key: &ClusterKey) -> bool {
        if datagram.len() < HEADER_LEN
            || be_u16(&datagram[field::MAGIC]) != MAGIC
            || datagram[field::VERSION] != VERSION
        {
            return false;
        }
        let end = HEADER_LEN + usize::from(be_u16(&datagram[field::PAYLOAD_LEN]));
        let Some(payload) = datagram.get(HEADER_LEN..end) else { return false };
        let expected = mac(key, &datagram[..MAC_COVERED_LEN], payload);
        let carried = &datagram[MAC_COVERED_LEN..HEADER_LEN];
        expected.iter().zip(carried).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Writes into `out` the version-1 `Error` answering an [`authentic`] `request`, and
    /// returns its length ([`REPLY_LEN`]).
    pub fn write_upgrade_reply(request: &[u8], key: &ClusterKey, out: &mut [u8; REPLY_LEN]) -> usize {
        assert!(request.len() >= HEADER_LEN, "only authentic requests are answered");
        out.fill(0);
        out[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        out[field::VERSION] = VERSION;
        out[field::OPCODE] = Opcode::Error as u8;
        out[field::STATUS] = Status::BadRequest as u8;
        out[field::REQUEST_ID.start..field::CHUNK_ID.end]
            .copy_from_slice(&request[field::REQUEST_ID.start..field::CHUNK_ID.end]);
        out[field::PAYLOAD_LEN].copy_from_slice(&(UPGRADE_MESSAGE.len() as u16).to_be_bytes());
        out[HEADER_LEN..].copy_from_slice(UPGRADE_MESSAGE);
        let mac = mac(key, &out[..MAC_COVERED_LEN], UPGRADE_MESSAGE);
        out[MAC_COVERED_LEN..HEADER_LEN].copy_from_slice(&mac);
        REPLY_LEN
    }

    /// A version-1 request as an old client built it (for tests of the upgrade path).
    pub fn write_request(opcode: Opcode, request_id: u64, key: &ClusterKey, out: &mut [u8; HEADER_LEN]) {
        out.fill(0);
        out[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        out[field::VERSION] = VERSION;
        out[field::OPCODE] = opcode as u8;
        out[field::REQUEST_ID].copy_from_slice(&request_id.to_be_bytes());
        let mac = mac(key, &out[..MAC_COVERED_LEN], &[]);
        out[MAC_COVERED_LEN..].copy_from_slice(&mac);
    }
}

/// Number of fragments a chunk of `total_len` bytes is cut into at `frag_len` bytes each.
/// An empty chunk still travels as one empty fragment.
pub fn fragment_count(total_len: u32, frag_len: u16) -> u32 {
    assert!(frag_len > 0);
    total_len.div_ceil(u32::from(frag_len)).max(1)
}

/// Payload length of fragment `index` of a chunk.
pub fn fragment_len(total_len: u32, frag_len: u16, index: u32) -> u32 {
    let start = u64::from(index) * u64::from(frag_len);
    let end = (start + u64::from(frag_len)).min(u64::from(total_len));
    end.saturating_sub(start) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_opcode() -> impl Strategy<Value = Opcode> {
        (1u8..=15).prop_map(|v| Opcode::from_u8(v).unwrap())
    }

    fn arb_status() -> impl Strategy<Value = Status> {
        (0u8..=7).prop_map(|v| Status::from_u8(v).unwrap())
    }

    prop_compose! {
        fn arb_repr()(opcode in arb_opcode(), status in arb_status(), flags in 0u8..=7,
                      credits: u16, request_id: u64, chunk_id: u128, index: u32, count: u32,
                      total_len: u32, frag_len: u16, payload_len in 0u16..2048) -> Repr {
            Repr { opcode, flags, status, credits, request_id, chunk_id, index, count,
                   total_len, frag_len, payload_len }
        }
    }

    proptest! {
        #[test]
        fn repr_roundtrips(repr in arb_repr(), fill: u8, receiver: u32, pn: u64) {
            let payload = std::vec![fill; usize::from(repr.payload_len)];
            let mut buffer = std::vec![0u8; repr.buffer_len()];
            let len = repr.emit_with_payload(&mut buffer, &payload);
            let _ = Packet::new_unchecked(&mut buffer[..len]).seal_parts(receiver, pn);
            let packet = Packet::new_checked(&buffer[..len]).unwrap();
            prop_assert_eq!(Repr::parse(&packet), repr);
            prop_assert_eq!(packet.payload(), &payload[..]);
            prop_assert_eq!(packet.receiver_index(), receiver);
            prop_assert_eq!(packet.packet_number(), pn);
            prop_assert!(!is_handshake(&buffer));
        }

        #[test]
        fn any_bytes_parse_or_reject_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = bytes;
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let repr = Repr::parse(&packet);
                prop_assert!(packet.payload().len() == usize::from(repr.payload_len));
                let _ = (packet.receiver_index(), packet.packet_number(), packet.tag(), packet.datagram());
                let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
                let (aad, payload) = packet.open_parts();
                prop_assert_eq!(aad.len(), AAD_LEN);
                prop_assert_eq!(payload.len(), usize::from(repr.payload_len));
            }
            let _ = v1::authentic(&bytes, &ClusterKey::new([7; 32]));
            let _ = is_handshake(&bytes);
        }

        #[test]
        fn fragments_cover_chunk_exactly(total_len in 0u32..(8 << 20), frag_len in 1u16..=9000) {
            let count = fragment_count(total_len, frag_len);
            let sum: u64 = (0..count).map(|i| u64::from(fragment_len(total_len, frag_len, i))).sum();
            prop_assert_eq!(sum, u64::from(total_len));
        }
    }

    #[test]
    fn rejects_short_foreign_and_reserved_packets() {
        assert_eq!(Packet::new_checked(&[0u8; 10][..]).unwrap_err(), WireError::Truncated);
        assert_eq!(Packet::new_checked(&[0u8; HEADER_LEN][..]).unwrap_err(), WireError::BadMagic);
        let mut buffer = [0u8; HEADER_LEN];
        Repr::new(Opcode::Ping).emit(&mut buffer);
        assert!(Packet::new_checked(&buffer[..]).is_ok());
        buffer[2] = 1;
        assert_eq!(Packet::new_checked(&buffer[..]).unwrap_err(), WireError::UnsupportedVersion);
        Repr::new(Opcode::Ping).emit(&mut buffer);
        buffer[field::RESERVED.start] = 1;
        assert_eq!(Packet::new_checked(&buffer[..]).unwrap_err(), WireError::UnknownFlags);
        Repr { payload_len: 1, ..Repr::new(Opcode::Ping) }.emit(&mut buffer);
        assert_eq!(Packet::new_checked(&buffer[..]).unwrap_err(), WireError::Truncated);
        buffer[3] = HANDSHAKE_BIT | 1;
        assert!(is_handshake(&buffer));
        assert_eq!(Packet::new_checked(&buffer[..]).unwrap_err(), WireError::UnknownOpcode);
    }

    /// An old client's request is recognised under the right key only, and answered with
    /// a version-1 error it can parse, never larger than 3x the request.
    #[test]
    fn version_one_requests_get_an_upgrade_error() {
        let key = ClusterKey::new([7; 32]);
        let mut request = [0u8; v1::HEADER_LEN];
        v1::write_request(Opcode::Get, 42, &key, &mut request);
        assert!(v1::authentic(&request, &key));
        assert!(!v1::authentic(&request, &ClusterKey::new([8; 32])));
        assert!(Packet::new_checked(&request[..]).is_err(), "v1 is not a v2 datagram");
        for bit in 0..request.len() * 8 {
            let mut flipped = request;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(!v1::authentic(&flipped, &key), "bit {bit}");
        }
        let mut reply = [0u8; v1::REPLY_LEN];
        let len = v1::write_upgrade_reply(&request, &key, &mut reply);
        assert!(len <= 3 * request.len());
        assert!(v1::authentic(&reply[..len], &key));
        assert_eq!(reply[field::OPCODE], Opcode::Error as u8);
        assert_eq!(reply[field::STATUS], Status::BadRequest as u8);
        assert_eq!(&reply[field::REQUEST_ID], &42u64.to_be_bytes());
    }
}
