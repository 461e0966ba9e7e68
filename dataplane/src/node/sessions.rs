//! The node's side of protocol v2's sessions: stateless answers to `Initiate`, sessions
//! created only by a `Confirm` that proves the cluster key and liveness at its address,
//! a fixed table of them, and the memory of accepted client randoms that makes a replayed
//! `Confirm` worthless.
//!
//! Secrets: one 32-byte seed per process, random at start and never sent; each epoch of
//! [`EPOCH_MS`] derives its secret from it, and the node's random for a client is derived
//! from that secret, the client's random and its address. So the node keeps no state
//! before `Confirm` and needs no random numbers on the packet path, and a restart (a new
//! seed) invalidates every cookie in flight.

use core::net::{IpAddr, SocketAddr};

use crate::counters::{Counters, DropReason};
use crate::session::handshake::{
    self, ACCEPT_LEN, CHALLENGE_LEN, COOKIE_LEN, ClusterKeys, INITIATE_LEN, Kind, Message, RANDOM_LEN,
};
use crate::session::peer::{OpenError, SessionRx, SessionTx};
use crate::session::replay::Replay;
use crate::wire::{ClusterKey, Repr};

/// Length of a cookie epoch; a cookie is good in its epoch and the next.
pub const EPOCH_MS: u64 = 120_000;
/// Most sessions one table may hold: the slot is the low 16 bits of a node index, and
/// slots 0xfffe and 0xffff are never used so that [`SessionRef::LOCAL`] and
/// [`SessionRef::NONE`] name no table session.
pub const SESSIONS_MAX: usize = (1 << 16) - 2;
/// Accepted client randoms remembered per session slot: with the default 1024 sessions,
/// 16384 handshakes per two epochs (about 68 a second) before new ones wait.
pub const SEEN_PER_SESSION: usize = 16;

// QUIC's rule for an address that has not completed a handshake: at most 3x the bytes
// received. The node answers such an address only with a Challenge (to an Initiate) or an
// Accept (to a Confirm, which proved the key), each far smaller than what it answers.
const _: () = assert!(3 * CHALLENGE_LEN <= INITIATE_LEN && ACCEPT_LEN <= handshake::CONFIRM_LEN);

/// Names one session of the table: slot and generation, as the node index carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef(u32);

impl SessionRef {
    /// No session: replies for it are never sent.
    pub const NONE: SessionRef = SessionRef(u32::MAX);
    /// A local shared-memory client: its messages are plaintext, access is the Unix
    /// socket's permission. Slot 0xfffe, which no table has (see [`SESSIONS_MAX`]), so a
    /// network session can never be mistaken for it and get unsealed replies.
    pub const LOCAL: SessionRef = SessionRef(u32::MAX - 1);

    fn new(slot: usize, generation: u16) -> Self {
        Self((u32::from(generation) << 16) | slot as u32)
    }

    fn slot(self) -> usize {
        (self.0 & 0xffff) as usize
    }

    fn generation(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The node index the client puts in every datagram of this session.
    pub fn node_index(self) -> u32 {
        self.0
    }
}

/// One slot of the session table.
#[derive(Debug, Default)]
pub struct SessionSlot {
    generation: u16,
    state: Option<Established>,
}

#[derive(Debug)]
struct Established {
    peer: SocketAddr,
    tx: SessionTx,
    rx: SessionRx,
    established_ms: u64,
    last_rx_ms: u64,
}

/// One remembered client random (its first 8 bytes suffice against replays: a forger
/// without the key cannot make a Confirm for a chosen random).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeenRandom {
    tag: u64,
    epoch: u64,
    used: bool,
}

/// The memory of a session table, allocated once at start-up, and the process's secret.
pub struct SessionMemory<'s> {
    pub slots: &'s mut [SessionSlot],
    /// At least one per slot; [`SEEN_PER_SESSION`] per slot lets every client rekey a few
    /// times per epoch.
    pub seen: &'s mut [SeenRandom],
    /// Fresh randomness for every process (never a constant outside tests).
    pub seed: [u8; 32],
}

pub struct Sessions<'s> {
    slots: &'s mut [SessionSlot],
    seen: &'s mut [SeenRandom],
    seen_next: usize,
    keys: ClusterKeys,
    seed: [u8; 32],
    lifetime_ms: u64,
}

/// What a handshake message asks the node to send back.
pub enum HandshakeReply {
    Challenge([u8; CHALLENGE_LEN]),
    Accept([u8; ACCEPT_LEN]),
}

impl<'s> Sessions<'s> {
    /// `lifetime_ms` bounds a session's age (clients rekey before it).
    pub fn new(key: &ClusterKey, lifetime_ms: u64, memory: SessionMemory<'s>) -> Self {
        let SessionMemory { slots, seen, seed } = memory;
        assert!(!slots.is_empty() && slots.len() <= SESSIONS_MAX);
        assert!(seen.len() >= slots.len(), "remember at least one client random per session");
        assert!(lifetime_ms > 0);
        for slot in slots.iter_mut() {
            *slot = SessionSlot::default();
        }
        seen.fill(SeenRandom::default());
        Self { slots, seen, seen_next: 0, keys: ClusterKeys::new(*key.bytes()), seed, lifetime_ms }
    }

    pub fn active(&self) -> usize {
        self.slots.iter().filter(|slot| slot.state.is_some()).count()
    }

    fn epoch_secret(&self, epoch: u64) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.seed);
        hasher.update(b"beeline v2 epoch").update(&epoch.to_be_bytes());
        *hasher.finalize().as_bytes()
    }

    fn node_random(&self, epoch: u64, client_random: &[u8; RANDOM_LEN], client: SocketAddr) -> [u8; RANDOM_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.epoch_secret(epoch));
        hasher.update(b"node random").update(client_random);
        match client.ip() {
            IpAddr::V4(ip) => hasher.update(&ip.octets()),
            IpAddr::V6(ip) => hasher.update(&ip.octets()),
        };
        hasher.update(&client.port().to_be_bytes());
        *hasher.finalize().as_bytes()
    }

    fn cookie(&self, epoch: u64, client_random: &[u8; 32], node_random: &[u8; 32], peer: SocketAddr) -> [u8; 16] {
        handshake::cookie(&self.epoch_secret(epoch), epoch, client_random, node_random, peer)
    }

    /// Answers one handshake message from `peer`. An Initiate costs a MAC and a
    /// Challenge, no state; a Confirm creates a session only if its cookie is this
    /// address's from this or the last epoch, its seal proves the key, and its client
    /// random was never accepted in those epochs.
    pub fn on_handshake(
        &mut self,
        now_ms: u64,
        message: &[u8],
        peer: SocketAddr,
        counters: &mut Counters,
    ) -> Result<HandshakeReply, DropReason> {
        let message = Message::new_checked(message).map_err(|_| DropReason::Malformed)?;
        let epoch = now_ms / EPOCH_MS;
        match message.kind() {
            Kind::Initiate => {
                if !message.verify_mac1(&self.keys) {
                    return Err(DropReason::BadMac);
                }
                let client_random = message.client_random().ok_or(DropReason::Malformed)?;
                let node_random = self.node_random(epoch, &client_random, peer);
                let cookie = self.cookie(epoch, &client_random, &node_random, peer);
                let mut out = [0u8; CHALLENGE_LEN];
                handshake::write_challenge(&mut out, &self.keys, message.client_index(), &node_random, &cookie);
                counters.handshake_challenges += 1;
                Ok(HandshakeReply::Challenge(out))
            }
            Kind::Confirm => self.on_confirm(now_ms, &message, peer, counters),
            Kind::Challenge | Kind::Accept => Err(DropReason::Unexpected),
        }
    }

    fn on_confirm(
        &mut self,
        now_ms: u64,
        message: &Message<&[u8]>,
        peer: SocketAddr,
        counters: &mut Counters,
    ) -> Result<HandshakeReply, DropReason> {
        let epoch = now_ms / EPOCH_MS;
        let (Some(client_random), Some(node_random), Some(cookie)) =
            (message.client_random(), message.node_random(), message.cookie())
        else {
            return Err(DropReason::Malformed);
        };
        let fresh_cookie = [Some(epoch), epoch.checked_sub(1)]
            .into_iter()
            .flatten()
            .any(|e| constant_time_eq(&self.cookie(e, &client_random, &node_random, peer), &cookie));
        if !fresh_cookie {
            return Err(DropReason::BadCookie);
        }
        let keys = self.keys.session(&client_random, &node_random);
        if message.open(&keys.client_to_node).is_err() {
            return Err(DropReason::BadMac);
        }
        let tag = u64::from_be_bytes(client_random[..8].try_into().expect("8 bytes"));
        let live = |seen: &SeenRandom| seen.used && seen.epoch + 1 >= epoch;
        if self.seen.iter().any(|seen| live(seen) && seen.tag == tag) {
            return Err(DropReason::Replayed);
        }
        // Forgetting a random whose cookie could still be good would let its Confirm be
        // replayed: refuse new sessions instead until it ages out (the client retries).
        if live(&self.seen[self.seen_next]) {
            return Err(DropReason::HandshakeBusy);
        }
        self.seen[self.seen_next] = SeenRandom { tag, epoch, used: true };
        self.seen_next = (self.seen_next + 1) % self.seen.len();
        let slot = self.free_or_least_recent_slot();
        let generation = self.slots[slot].generation.wrapping_add(1);
        let session = SessionRef::new(slot, generation);
        let client_index = message.client_index();
        let mut out = [0u8; ACCEPT_LEN];
        handshake::write_accept(&mut out, &keys, client_index, session.node_index());
        self.slots[slot] = SessionSlot {
            generation,
            state: Some(Established {
                peer,
                tx: SessionTx::new(client_index, keys.node_to_client),
                rx: SessionRx::new(session.node_index(), keys.client_to_node),
                established_ms: now_ms,
                last_rx_ms: now_ms,
            }),
        };
        counters.sessions_established += 1;
        Ok(HandshakeReply::Accept(out))
    }

    fn free_or_least_recent_slot(&self) -> usize {
        if let Some(free) = self.slots.iter().position(|slot| slot.state.is_none()) {
            return free;
        }
        let last_rx = |slot: &SessionSlot| slot.state.as_ref().map_or(0, |state| state.last_rx_ms);
        (0..self.slots.len()).min_by_key(|index| last_rx(&self.slots[*index])).expect("the table is not empty")
    }

    fn established(&mut self, session: SessionRef) -> Option<&mut Established> {
        let slot = self.slots.get_mut(session.slot())?;
        if slot.generation != session.generation() {
            return None;
        }
        slot.state.as_mut()
    }

    /// Opens a data datagram in place: its session must exist, be young enough, belong to
    /// the datagram's source address, and not have seen its packet number.
    pub fn open(
        &mut self,
        now_ms: u64,
        datagram: &mut [u8],
        peer: SocketAddr,
    ) -> Result<(Repr, SessionRef), DropReason> {
        let packet = crate::wire::Packet::new_checked(&*datagram).map_err(|_| DropReason::Malformed)?;
        let session = SessionRef(packet.receiver_index());
        let lifetime_ms = self.lifetime_ms;
        let state = self.established(session).ok_or(DropReason::NoSession)?;
        if now_ms.saturating_sub(state.established_ms) > lifetime_ms {
            self.slots[session.slot()].state = None;
            return Err(DropReason::NoSession);
        }
        if state.peer != peer {
            return Err(DropReason::WrongAddress);
        }
        let repr = state.rx.open(datagram).map_err(|error| match error {
            OpenError::Malformed => DropReason::Malformed,
            OpenError::WrongSession => DropReason::NoSession,
            OpenError::Replayed(Replay::Duplicate | Replay::TooOld) => DropReason::Replayed,
            OpenError::Unauthenticated => DropReason::BadMac,
        })?;
        state.last_rx_ms = now_ms;
        Ok((repr, session))
    }

    /// Seals a reply in place for `session`; fails if the session ended since.
    pub fn seal(&mut self, session: SessionRef, datagram: &mut [u8]) -> Result<SocketAddr, DropReason> {
        let state = self.established(session).ok_or(DropReason::NoSession)?;
        state.tx.seal(datagram).map_err(|_| DropReason::NoSession)?;
        Ok(state.peer)
    }

    /// Ends sessions past their lifetime.
    pub fn expire(&mut self, now_ms: u64) {
        for slot in self.slots.iter_mut() {
            if slot.state.as_ref().is_some_and(|state| now_ms.saturating_sub(state.established_ms) > self.lifetime_ms) {
                slot.state = None;
            }
        }
    }
}

fn constant_time_eq(a: &[u8; COOKIE_LEN], b: &[u8; COOKIE_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
