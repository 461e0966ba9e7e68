//! Protocol v2's handshake messages, their key schedule and the node's stateless cookie,
//! as `docs/protocol.md` specifies them. Every message is parsed through a checked view
//! (no accessor can panic after `new_checked`) and built into a caller's buffer; nothing
//! allocates.
//!
//! ```text
//! every message      0..2 magic 0xBEE1   2 version 2   3 kind   4..8 client index (u32, BE)
//! Initiate  (0x81)   8..40 client random   40..1184 zero padding   1184..1200 mac1
//! Challenge (0x82)   8..40 node random   40..56 cookie   56..72 mac1
//! Confirm   (0x83)   8..40 client random   40..72 node random   72..88 cookie   88..104 tag (k_c2n, pn 0)
//! Accept    (0x84)   8..12 node index (u32, BE)   12..28 tag (k_n2c, pn 0)
//!
//! The kind sits where a data datagram has its opcode, with the high bit set
//! (`wire::HANDSHAKE_BIT`), so one byte tells the two apart.
//! ```
//!
//! `mac1` is keyed BLAKE3 under `derive_key("beeline v2 mac1", K)` over the bytes before
//! it: it lets a node drop garbage cheaply, it does not stop replays. The `Initiate` is
//! padded so that the `Challenge` a node sends back is under a third of it: a replayed or
//! forged-source `Initiate` can never make the node an amplifier.

use core::net::{IpAddr, SocketAddr};

use crate::session::aead::{AeadError, SessionCipher, TAG_LEN};

pub const MAGIC: u16 = 0xBEE1;
pub const VERSION: u8 = 2;
pub const RANDOM_LEN: usize = 32;
pub const COOKIE_LEN: usize = 16;
pub const MAC1_LEN: usize = 16;
pub const INITIATE_LEN: usize = 1200;
pub const CHALLENGE_LEN: usize = 72;
pub const CONFIRM_LEN: usize = 104;
pub const ACCEPT_LEN: usize = 28;

// QUIC's rule: before a handshake completes, never more than 3x the bytes received.
const _: () = assert!(3 * CHALLENGE_LEN <= INITIATE_LEN);
const _: () = assert!(8 + RANDOM_LEN + COOKIE_LEN + MAC1_LEN == CHALLENGE_LEN);
const _: () = assert!(8 + 2 * RANDOM_LEN + COOKIE_LEN + TAG_LEN == CONFIRM_LEN);
const _: () = assert!(12 + TAG_LEN == ACCEPT_LEN);

/// The four handshake messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Initiate = 0x81,
    Challenge = 0x82,
    Confirm = 0x83,
    Accept = 0x84,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            0x81 => Kind::Initiate,
            0x82 => Kind::Challenge,
            0x83 => Kind::Confirm,
            0x84 => Kind::Accept,
            _ => return None,
        })
    }

    pub fn message_len(self) -> usize {
        match self {
            Kind::Initiate => INITIATE_LEN,
            Kind::Challenge => CHALLENGE_LEN,
            Kind::Confirm => CONFIRM_LEN,
            Kind::Accept => ACCEPT_LEN,
        }
    }
}

/// Why bytes are not a handshake message, or do not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Wrong magic, version, kind or length.
    Malformed,
    /// `mac1`, the seal or the cookie does not verify.
    Unauthenticated,
}

/// A checked view of a handshake message: after `new_checked`, its length is exactly that
/// of its kind, so every accessor below is in bounds.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
    kind: Kind,
}

impl<T: AsRef<[u8]>> Message<T> {
    pub fn new_checked(buffer: T) -> Result<Self, HandshakeError> {
        let bytes = buffer.as_ref();
        let head = bytes.get(..4).ok_or(HandshakeError::Malformed)?;
        if u16::from_be_bytes([head[0], head[1]]) != MAGIC || head[2] != VERSION {
            return Err(HandshakeError::Malformed);
        }
        let kind = Kind::from_u8(head[3]).ok_or(HandshakeError::Malformed)?;
        if bytes.len() != kind.message_len() {
            return Err(HandshakeError::Malformed);
        }
        Ok(Self { buffer, kind })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn array<const N: usize>(&self, start: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes()[start..start + N]);
        out
    }

    pub fn client_index(&self) -> u32 {
        u32::from_be_bytes(self.array(4))
    }

    /// Initiate and Confirm: the client's random.
    pub fn client_random(&self) -> Option<[u8; RANDOM_LEN]> {
        matches!(self.kind, Kind::Initiate | Kind::Confirm).then(|| self.array(8))
    }

    /// Challenge and Confirm: the node's random.
    pub fn node_random(&self) -> Option<[u8; RANDOM_LEN]> {
        match self.kind {
            Kind::Challenge => Some(self.array(8)),
            Kind::Confirm => Some(self.array(40)),
            _ => None,
        }
    }

    /// Challenge and Confirm: the node's cookie.
    pub fn cookie(&self) -> Option<[u8; COOKIE_LEN]> {
        match self.kind {
            Kind::Challenge => Some(self.array(40)),
            Kind::Confirm => Some(self.array(72)),
            _ => None,
        }
    }

    /// Accept: the node's index for the session.
    pub fn node_index(&self) -> Option<u32> {
        (self.kind == Kind::Accept).then(|| u32::from_be_bytes(self.array(8)))
    }

    /// Initiate and Challenge: whether `mac1` verifies under the cluster key.
    pub fn verify_mac1(&self, keys: &ClusterKeys) -> bool {
        let len = self.bytes().len();
        if !matches!(self.kind, Kind::Initiate | Kind::Challenge) {
            return false;
        }
        let expected = keys.mac1(&self.bytes()[..len - MAC1_LEN]);
        constant_time_eq(&expected, &self.bytes()[len - MAC1_LEN..])
    }

    /// Confirm (with `k_c2n`) and Accept (with `k_n2c`): whether the seal verifies.
    pub fn open(&self, cipher: &SessionCipher) -> Result<(), AeadError> {
        if !matches!(self.kind, Kind::Confirm | Kind::Accept) {
            return Err(AeadError);
        }
        let len = self.bytes().len();
        let tag: [u8; TAG_LEN] = self.array(len - TAG_LEN);
        cipher.open_in_place(0, &self.bytes()[..len - TAG_LEN], &mut [], &tag)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What every party derives from the cluster key `K` once.
#[derive(Clone)]
pub struct ClusterKeys {
    cluster: [u8; 32],
    mac1: [u8; 32],
}

/// The two direction keys of one session.
pub struct SessionKeys {
    pub client_to_node: SessionCipher,
    pub node_to_client: SessionCipher,
}

impl ClusterKeys {
    pub fn new(cluster_key: [u8; 32]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("beeline v2 mac1");
        hasher.update(&cluster_key);
        Self { cluster: cluster_key, mac1: *hasher.finalize().as_bytes() }
    }

    fn mac1(&self, bytes: &[u8]) -> [u8; MAC1_LEN] {
        let mut out = [0u8; MAC1_LEN];
        blake3::Hasher::new_keyed(&self.mac1).update(bytes).finalize_xof().fill(&mut out);
        out
    }

    /// `derive_key("beeline v2 session", K ‖ client random ‖ node random)`: 16 bytes for
    /// each direction (the next 32 are reserved for the rekey).
    pub fn session(&self, client_random: &[u8; RANDOM_LEN], node_random: &[u8; RANDOM_LEN]) -> SessionKeys {
        let mut hasher = blake3::Hasher::new_derive_key("beeline v2 session");
        hasher.update(&self.cluster).update(client_random).update(node_random);
        let mut okm = [0u8; 32];
        hasher.finalize_xof().fill(&mut okm);
        let (c2n, n2c) = okm.split_at(16);
        SessionKeys {
            client_to_node: SessionCipher::new(c2n.try_into().expect("16 bytes")),
            node_to_client: SessionCipher::new(n2c.try_into().expect("16 bytes")),
        }
    }
}

/// The node's cookie: keyed BLAKE3 under a per-epoch secret that never leaves the node,
/// over both randoms, the client's address and the epoch. Bound to the address it was
/// sent to, useless after two epochs, and needing no state to check.
pub fn cookie(
    node_secret: &[u8; 32],
    epoch: u64,
    client_random: &[u8; RANDOM_LEN],
    node_random: &[u8; RANDOM_LEN],
    client: SocketAddr,
) -> [u8; COOKIE_LEN] {
    let mut hasher = blake3::Hasher::new_keyed(node_secret);
    hasher.update(client_random).update(node_random).update(&epoch.to_be_bytes());
    match client.ip() {
        IpAddr::V4(ip) => hasher.update(&[4]).update(&ip.octets()),
        IpAddr::V6(ip) => hasher.update(&[6]).update(&ip.octets()),
    };
    hasher.update(&client.port().to_be_bytes());
    let mut out = [0u8; COOKIE_LEN];
    hasher.finalize_xof().fill(&mut out);
    out
}

fn put_head(out: &mut [u8], kind: Kind, client_index: u32) {
    out[..2].copy_from_slice(&MAGIC.to_be_bytes());
    out[2] = VERSION;
    out[3] = kind as u8;
    out[4..8].copy_from_slice(&client_index.to_be_bytes());
}

/// Writes an Initiate into `out` (exactly [`INITIATE_LEN`] bytes).
pub fn write_initiate(out: &mut [u8; INITIATE_LEN], keys: &ClusterKeys, client_index: u32, client_random: &[u8; 32]) {
    out.fill(0);
    put_head(out, Kind::Initiate, client_index);
    out[8..40].copy_from_slice(client_random);
    let mac = keys.mac1(&out[..INITIATE_LEN - MAC1_LEN]);
    out[INITIATE_LEN - MAC1_LEN..].copy_from_slice(&mac);
}

/// Writes a Challenge into `out`.
pub fn write_challenge(
    out: &mut [u8; CHALLENGE_LEN],
    keys: &ClusterKeys,
    client_index: u32,
    node_random: &[u8; RANDOM_LEN],
    cookie: &[u8; COOKIE_LEN],
) {
    put_head(out, Kind::Challenge, client_index);
    out[8..40].copy_from_slice(node_random);
    out[40..56].copy_from_slice(cookie);
    let mac = keys.mac1(&out[..CHALLENGE_LEN - MAC1_LEN]);
    out[CHALLENGE_LEN - MAC1_LEN..].copy_from_slice(&mac);
}

/// Writes a Confirm into `out`, sealed with the session's client-to-node key.
pub fn write_confirm(
    out: &mut [u8; CONFIRM_LEN],
    session: &SessionKeys,
    client_index: u32,
    client_random: &[u8; RANDOM_LEN],
    node_random: &[u8; RANDOM_LEN],
    cookie: &[u8; COOKIE_LEN],
) {
    put_head(out, Kind::Confirm, client_index);
    out[8..40].copy_from_slice(client_random);
    out[40..72].copy_from_slice(node_random);
    out[72..88].copy_from_slice(cookie);
    let tag = session.client_to_node.seal_in_place(0, &out[..CONFIRM_LEN - TAG_LEN], &mut []);
    out[CONFIRM_LEN - TAG_LEN..].copy_from_slice(&tag);
}

/// Writes an Accept into `out`, sealed with the session's node-to-client key.
pub fn write_accept(out: &mut [u8; ACCEPT_LEN], session: &SessionKeys, client_index: u32, node_index: u32) {
    put_head(out, Kind::Accept, client_index);
    out[8..12].copy_from_slice(&node_index.to_be_bytes());
    let tag = session.node_to_client.seal_in_place(0, &out[..ACCEPT_LEN - TAG_LEN], &mut []);
    out[ACCEPT_LEN - TAG_LEN..].copy_from_slice(&tag);
}

/// Parses untrusted bytes as every handshake message would be, for the fuzzer: nothing
/// may panic, and a message that parses reports only fields of its kind.
pub fn fuzz_parse(data: &[u8], keys: &ClusterKeys, cipher: &SessionCipher) {
    let Ok(message) = Message::new_checked(data) else { return };
    assert_eq!(data.len(), message.kind().message_len());
    let _ = (message.client_index(), message.verify_mac1(keys), message.open(cipher));
    assert_eq!(message.node_index().is_some(), message.kind() == Kind::Accept);
    assert_eq!(message.client_random().is_some(), matches!(message.kind(), Kind::Initiate | Kind::Confirm));
    assert_eq!(message.cookie().is_some(), message.node_random().is_some());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLIENT: SocketAddr =
        SocketAddr::V4(core::net::SocketAddrV4::new(core::net::Ipv4Addr::new(10, 0, 0, 2), 40000));

    /// The whole exchange, client and node sides, as the design runs it.
    #[test]
    fn a_full_handshake_derives_the_same_keys_on_both_sides() {
        let keys = ClusterKeys::new([7; 32]);
        let (c_random, n_random, secret) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let mut initiate = [0u8; INITIATE_LEN];
        write_initiate(&mut initiate, &keys, 9, &c_random);
        let seen = Message::new_checked(&initiate[..]).unwrap();
        assert!(seen.verify_mac1(&keys));
        let cookie = cookie(&secret, 5, &seen.client_random().unwrap(), &n_random, CLIENT);
        let mut challenge = [0u8; CHALLENGE_LEN];
        write_challenge(&mut challenge, &keys, seen.client_index(), &n_random, &cookie);
        let reply = Message::new_checked(&challenge[..]).unwrap();
        assert!(reply.verify_mac1(&keys));
        let client_session = keys.session(&c_random, &reply.node_random().unwrap());
        let mut confirm = [0u8; CONFIRM_LEN];
        write_confirm(&mut confirm, &client_session, 9, &c_random, &n_random, &reply.cookie().unwrap());
        let confirmed = Message::new_checked(&confirm[..]).unwrap();
        // The node: the cookie is its own for this address and epoch; then the seal.
        let recomputed =
            super::cookie(&secret, 5, &confirmed.client_random().unwrap(), &confirmed.node_random().unwrap(), CLIENT);
        assert_eq!(Some(recomputed), confirmed.cookie());
        let node_session = keys.session(&confirmed.client_random().unwrap(), &confirmed.node_random().unwrap());
        assert!(confirmed.open(&node_session.client_to_node).is_ok());
        let mut accept = [0u8; ACCEPT_LEN];
        write_accept(&mut accept, &node_session, 9, 77);
        let accepted = Message::new_checked(&accept[..]).unwrap();
        assert!(accepted.open(&client_session.node_to_client).is_ok());
        assert_eq!(accepted.node_index(), Some(77));
        // And data sealed by one side opens on the other.
        let mut payload = *b"chunk bytes";
        let tag = client_session.client_to_node.seal_in_place(1, b"hdr", &mut payload);
        assert!(node_session.client_to_node.open_in_place(1, b"hdr", &mut payload, &tag).is_ok());
        assert_eq!(&payload, b"chunk bytes");
    }

    #[test]
    fn another_cluster_key_another_address_or_another_epoch_fails() {
        let keys = ClusterKeys::new([7; 32]);
        let mut initiate = [0u8; INITIATE_LEN];
        write_initiate(&mut initiate, &keys, 1, &[1; 32]);
        let message = Message::new_checked(&initiate[..]).unwrap();
        assert!(!message.verify_mac1(&ClusterKeys::new([8; 32])));
        let base = cookie(&[3; 32], 5, &[1; 32], &[2; 32], CLIENT);
        let moved: SocketAddr = "10.0.0.3:40000".parse().unwrap();
        assert_ne!(base, cookie(&[3; 32], 5, &[1; 32], &[2; 32], moved));
        assert_ne!(base, cookie(&[3; 32], 6, &[1; 32], &[2; 32], CLIENT));
        assert_ne!(base, cookie(&[4; 32], 5, &[1; 32], &[2; 32], CLIENT));
        let session = keys.session(&[1; 32], &[2; 32]);
        let other = ClusterKeys::new([8; 32]).session(&[1; 32], &[2; 32]);
        let mut confirm = [0u8; CONFIRM_LEN];
        write_confirm(&mut confirm, &session, 1, &[1; 32], &[2; 32], &base);
        let message = Message::new_checked(&confirm[..]).unwrap();
        assert!(message.open(&session.client_to_node).is_ok());
        assert!(message.open(&other.client_to_node).is_err());
        assert!(message.open(&session.node_to_client).is_err(), "directions have different keys");
    }

    proptest! {
        /// Any flipped bit of any message makes it fail to parse or to authenticate.
        #[test]
        fn any_flipped_bit_is_caught(kind in 0x81u8..=0x84, bit in 0usize..(INITIATE_LEN * 8)) {
            let keys = ClusterKeys::new([7; 32]);
            let session = keys.session(&[1; 32], &[2; 32]);
            let mut buffer = [0u8; INITIATE_LEN];
            let len = match kind {
                0x81 => { write_initiate(&mut buffer, &keys, 1, &[1; 32]); INITIATE_LEN }
                0x82 => { let mut m = [0u8; CHALLENGE_LEN]; write_challenge(&mut m, &keys, 1, &[2; 32], &[5; 16]); buffer[..CHALLENGE_LEN].copy_from_slice(&m); CHALLENGE_LEN }
                0x83 => { let mut m = [0u8; CONFIRM_LEN]; write_confirm(&mut m, &session, 1, &[1; 32], &[2; 32], &[5; 16]); buffer[..CONFIRM_LEN].copy_from_slice(&m); CONFIRM_LEN }
                _ => { let mut m = [0u8; ACCEPT_LEN]; write_accept(&mut m, &session, 1, 2); buffer[..ACCEPT_LEN].copy_from_slice(&m); ACCEPT_LEN }
            };
            let bit = bit % (len * 8);
            buffer[bit / 8] ^= 1 << (bit % 8);
            let verdict = Message::new_checked(&buffer[..len]).map(|message| match message.kind() {
                Kind::Initiate | Kind::Challenge => message.verify_mac1(&keys),
                Kind::Confirm => message.open(&session.client_to_node).is_ok(),
                Kind::Accept => message.open(&session.node_to_client).is_ok(),
            });
            prop_assert!(!matches!(verdict, Ok(true)), "kind {kind} bit {bit} still authenticates");
        }

        /// Arbitrary bytes never panic the parser or its accessors.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1300), kind in 0x81u8..=0x84) {
            let mut data = data;
            if data.len() >= 4 {
                data[..4].copy_from_slice(&[0xBE, 0xE1, 2, kind]);
            }
            fuzz_parse(&data, &ClusterKeys::new([7; 32]), &SessionCipher::new([1; 16]));
            let len = Kind::from_u8(kind).unwrap().message_len();
            let mut sized = std::vec![0u8; len];
            sized[..4].copy_from_slice(&[0xBE, 0xE1, 2, kind]);
            fuzz_parse(&sized, &ClusterKeys::new([7; 32]), &SessionCipher::new([1; 16]));
        }
    }
}
