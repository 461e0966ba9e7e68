//! One established session as either end holds it: the sending half seals datagrams in
//! place with the next packet number, the receiving half opens them in place and refuses
//! every packet number its replay window has seen or forgotten. And the client's side of
//! the handshake that establishes a session, as a sans-I/O state machine.
//!
//! Packet number 0 of each direction belongs to the handshake (`Confirm` and `Accept` are
//! sealed with it), so data starts at 1 and a receiving half marks 0 as seen from the
//! start: no nonce is ever used twice under one key.

use crate::session::aead::SessionCipher;
use crate::session::handshake::{
    self, ACCEPT_LEN, CONFIRM_LEN, ClusterKeys, HandshakeError, INITIATE_LEN, Kind, Message, RANDOM_LEN,
};
use crate::session::replay::{Replay, ReplayWindow};
use crate::wire::{Packet, Repr};

/// A sending half refuses to seal past this many packets: the peer must rekey long before
/// (clients do after [`REKEY_AFTER_PACKETS`]), so a packet number never wraps or repeats.
pub const PACKETS_MAX: u64 = 1 << 48;
/// Clients start a new handshake once a session has sent this many packets.
pub const REKEY_AFTER_PACKETS: u64 = 1 << 32;

/// Why a datagram was not opened. Nothing about the session changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Not a well-formed version-2 data datagram.
    Malformed,
    /// Addressed to another session (another receiver index).
    WrongSession,
    /// A packet number the window has accepted before, or one older than it remembers.
    Replayed(Replay),
    /// The tag did not verify: another key, or altered bytes.
    Unauthenticated,
}

/// Why a datagram was not sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// The sending half of a session.
#[derive(Debug)]
pub struct SessionTx {
    /// The index the peer gave this session; carried so the peer finds its half.
    receiver_index: u32,
    cipher: SessionCipher,
    next_pn: u64,
}

impl SessionTx {
    pub fn new(receiver_index: u32, cipher: SessionCipher) -> Self {
        Self { receiver_index, cipher, next_pn: 1 }
    }

    pub fn packets_sent(&self) -> u64 {
        self.next_pn - 1
    }

    /// Seals `datagram` in place: an unsealed datagram built by [`Repr::emit`] whose
    /// length is exactly its header and declared payload. Uses up one packet number.
    pub fn seal(&mut self, datagram: &mut [u8]) -> Result<(), Exhausted> {
        if self.next_pn >= PACKETS_MAX {
            return Err(Exhausted);
        }
        let pn = self.next_pn;
        self.next_pn += 1;
        let declared = Packet::new_unchecked(&*datagram).datagram().len();
        assert!(declared == datagram.len(), "seal takes exactly one datagram");
        let mut packet = Packet::new_unchecked(datagram);
        let (aad, tag, payload) = packet.seal_parts(self.receiver_index, pn);
        *tag = self.cipher.seal_in_place(pn, aad, payload);
        Ok(())
    }
}

/// The receiving half of a session.
#[derive(Debug)]
pub struct SessionRx {
    /// The index this end gave the session; datagrams for any other are not ours.
    local_index: u32,
    cipher: SessionCipher,
    window: ReplayWindow,
}

impl SessionRx {
    pub fn new(local_index: u32, cipher: SessionCipher) -> Self {
        let mut window = ReplayWindow::new();
        // Packet number 0 sealed the handshake message under this key.
        let fresh = window.check_and_update(0);
        assert!(fresh.is_ok());
        Self { local_index, cipher, window }
    }

    pub fn local_index(&self) -> u32 {
        self.local_index
    }

    /// Highest packet number accepted so far.
    pub fn highest_packet_number(&self) -> u64 {
        self.window.highest()
    }

    /// Checks and decrypts `datagram` in place; on success its payload (bytes
    /// `HEADER_LEN..`) is plaintext and its packet number is recorded as seen. The window
    /// is updated only after the tag verified, so forged numbers cannot move it.
    pub fn open(&mut self, datagram: &mut [u8]) -> Result<Repr, OpenError> {
        let packet = Packet::new_checked(&*datagram).map_err(|_| OpenError::Malformed)?;
        if packet.receiver_index() != self.local_index {
            return Err(OpenError::WrongSession);
        }
        let pn = packet.packet_number();
        self.window.check(pn).map_err(OpenError::Replayed)?;
        let (repr, tag) = (Repr::parse(&packet), packet.tag());
        let mut packet = Packet::new_unchecked(&mut *datagram);
        let (aad, payload) = packet.open_parts();
        self.cipher.open_in_place(pn, aad, payload, &tag).map_err(|_| OpenError::Unauthenticated)?;
        self.window.check_and_update(pn).map_err(OpenError::Replayed)?;
        Ok(repr)
    }
}

/// Both halves of a session, as the client holds it.
#[derive(Debug)]
pub struct Session {
    pub tx: SessionTx,
    pub rx: SessionRx,
}

/// The client's side of one handshake attempt. A retry is a new attempt with a new
/// random: a node refuses a client random it has already accepted.
pub struct ClientHandshake {
    keys: ClusterKeys,
    client_index: u32,
    client_random: [u8; RANDOM_LEN],
    confirmed: Option<handshake::SessionKeys>,
}

impl ClientHandshake {
    /// `client_index` names the session in the node's replies; `client_random` must be
    /// fresh randomness for every attempt.
    pub fn new(keys: &ClusterKeys, client_index: u32, client_random: [u8; RANDOM_LEN]) -> Self {
        Self { keys: keys.clone(), client_index, client_random, confirmed: None }
    }

    pub fn client_index(&self) -> u32 {
        self.client_index
    }

    /// The first message: send it, and again (the same bytes) until a Challenge comes.
    pub fn initiate(&self, out: &mut [u8; INITIATE_LEN]) {
        handshake::write_initiate(out, &self.keys, self.client_index, &self.client_random);
    }

    /// Answers the node's Challenge with a Confirm in `out`; a message that is not a
    /// Challenge for this attempt, or does not authenticate, is refused.
    pub fn on_challenge(&mut self, message: &[u8], out: &mut [u8; CONFIRM_LEN]) -> Result<(), HandshakeError> {
        let challenge = Message::new_checked(message)?;
        if challenge.kind() != Kind::Challenge || challenge.client_index() != self.client_index {
            return Err(HandshakeError::Malformed);
        }
        if !challenge.verify_mac1(&self.keys) {
            return Err(HandshakeError::Unauthenticated);
        }
        let (Some(node_random), Some(cookie)) = (challenge.node_random(), challenge.cookie()) else {
            return Err(HandshakeError::Malformed);
        };
        let session = self.keys.session(&self.client_random, &node_random);
        handshake::write_confirm(out, &session, self.client_index, &self.client_random, &node_random, &cookie);
        self.confirmed = Some(session);
        Ok(())
    }

    /// The node's Accept ends the handshake with the session it sealed.
    pub fn on_accept(&mut self, message: &[u8]) -> Result<Session, HandshakeError> {
        let accept = Message::new_checked(message)?;
        if accept.kind() != Kind::Accept || accept.client_index() != self.client_index || message.len() != ACCEPT_LEN {
            return Err(HandshakeError::Malformed);
        }
        let keys = self.confirmed.take().ok_or(HandshakeError::Malformed)?;
        if accept.open(&keys.node_to_client).is_err() {
            self.confirmed = Some(keys);
            return Err(HandshakeError::Unauthenticated);
        }
        let node_index = accept.node_index().ok_or(HandshakeError::Malformed)?;
        Ok(Session {
            tx: SessionTx::new(node_index, keys.client_to_node),
            rx: SessionRx::new(self.client_index, keys.node_to_client),
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::wire::{HEADER_LEN, Opcode};
    use std::vec;

    fn pair() -> (Session, Session) {
        let keys = ClusterKeys::new([7; 32]).session(&[1; 32], &[2; 32]);
        let more = ClusterKeys::new([7; 32]).session(&[1; 32], &[2; 32]);
        let client =
            Session { tx: SessionTx::new(20, keys.client_to_node), rx: SessionRx::new(10, keys.node_to_client) };
        let node = Session { tx: SessionTx::new(10, more.node_to_client), rx: SessionRx::new(20, more.client_to_node) };
        (client, node)
    }

    fn datagram(payload: &[u8]) -> std::vec::Vec<u8> {
        let repr = Repr { payload_len: payload.len() as u16, request_id: 5, ..Repr::new(Opcode::PutFrag) };
        let mut buffer = vec![0u8; repr.buffer_len()];
        repr.emit_with_payload(&mut buffer, payload);
        buffer
    }

    #[test]
    fn sealed_datagrams_open_once_and_hide_their_payload() {
        let (mut client, mut node) = pair();
        let mut sealed = datagram(b"secret chunk bytes");
        client.tx.seal(&mut sealed).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"), "the payload is encrypted");
        let mut copy = sealed.clone();
        let repr = node.rx.open(&mut sealed).unwrap();
        assert_eq!(repr.request_id, 5);
        assert_eq!(&sealed[HEADER_LEN..], b"secret chunk bytes");
        assert_eq!(node.rx.open(&mut copy), Err(OpenError::Replayed(Replay::Duplicate)));
    }

    #[test]
    fn wrong_direction_wrong_session_and_flipped_bits_fail_without_moving_the_window() {
        let (mut client, mut node) = pair();
        let mut sealed = datagram(b"abc");
        client.tx.seal(&mut sealed).unwrap();
        assert_eq!(client.rx.open(&mut sealed.clone()), Err(OpenError::WrongSession));
        for bit in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(node.rx.open(&mut flipped).is_err(), "bit {bit}");
        }
        assert_eq!(node.rx.highest_packet_number(), 0, "nothing forged was recorded");
        assert!(node.rx.open(&mut sealed).is_ok());
    }

    #[test]
    fn packet_numbers_count_up_from_one_and_stop_before_wrapping() {
        let (mut client, _) = pair();
        let mut first = datagram(b"");
        client.tx.seal(&mut first).unwrap();
        assert_eq!(Packet::new_checked(&first[..]).unwrap().packet_number(), 1);
        client.tx.next_pn = PACKETS_MAX;
        assert_eq!(client.tx.seal(&mut datagram(b"")), Err(Exhausted));
    }

    #[test]
    fn a_client_handshake_against_the_node_side_messages() {
        let keys = ClusterKeys::new([9; 32]);
        let mut client = ClientHandshake::new(&keys, 77, [3; 32]);
        let mut initiate = [0u8; INITIATE_LEN];
        client.initiate(&mut initiate);
        let mut challenge = [0u8; handshake::CHALLENGE_LEN];
        handshake::write_challenge(&mut challenge, &keys, 77, &[4; 32], &[5; 16]);
        let mut confirm = [0u8; CONFIRM_LEN];
        assert!(client.on_accept(&[0; ACCEPT_LEN]).is_err(), "no Accept before a Challenge");
        let mut wrong = challenge;
        wrong[5] ^= 1;
        assert!(client.on_challenge(&wrong, &mut confirm).is_err(), "another attempt's Challenge");
        client.on_challenge(&challenge, &mut confirm).unwrap();
        let node_keys = keys.session(&[3; 32], &[4; 32]);
        assert!(Message::new_checked(&confirm[..]).unwrap().open(&node_keys.client_to_node).is_ok());
        let mut accept = [0u8; ACCEPT_LEN];
        handshake::write_accept(&mut accept, &node_keys, 77, 0x0001_0002);
        let mut session = client.on_accept(&accept).unwrap();
        let mut node_rx = SessionRx::new(0x0001_0002, node_keys.client_to_node);
        let mut sealed = datagram(b"x");
        session.tx.seal(&mut sealed).unwrap();
        assert!(node_rx.open(&mut sealed).is_ok());
    }
}
