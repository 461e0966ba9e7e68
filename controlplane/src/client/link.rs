//! The client's session with its node (protocol v2): the handshake, done before the first
//! request and again whenever the node falls silent (it may have restarted and forgotten
//! the session) or the session has lived its time or its packets (rekey). Requests already
//! in flight carry on: their retransmissions are sealed with whichever session is current,
//! and replies sealed for the previous session are still opened until the next one.

use std::net::UdpSocket;

use beeline_dataplane::client::Timing;
use beeline_dataplane::session::handshake::{CONFIRM_LEN, ClusterKeys, INITIATE_LEN, Kind, Message};
use beeline_dataplane::session::peer::{ClientHandshake, REKEY_AFTER_PACKETS, Session, SessionRx, SessionTx};
use beeline_dataplane::wire::{ClusterKey, Repr};

/// Everything about the session but its sending half, which the transmit path borrows
/// on its own (see [`Link::tx`]).
pub(super) struct LinkState {
    keys: ClusterKeys,
    rx: Option<SessionRx>,
    previous_rx: Option<SessionRx>,
    attempt: Option<ClientHandshake>,
    attempt_deadline_ms: u64,
    attempt_rto_ms: u64,
    /// A session accepted while the sending half was borrowed; installed by `settle`.
    accepted: Option<Session>,
    established_ms: u64,
    last_rx_ms: u64,
    rekey_after_ms: u64,
    timing: Timing,
    pub(super) handshakes: u64,
}

pub(super) struct Link {
    /// The current session's sending half; `None` before the first handshake.
    pub(super) tx: Option<SessionTx>,
    pub(super) state: LinkState,
}

impl Link {
    pub(super) fn new(key: &ClusterKey, timing: Timing, rekey_after_ms: u64) -> Self {
        assert!(rekey_after_ms > 0);
        Self {
            tx: None,
            state: LinkState {
                keys: ClusterKeys::new(*key.bytes()),
                rx: None,
                previous_rx: None,
                attempt: None,
                attempt_deadline_ms: 0,
                attempt_rto_ms: timing.rto_initial_ms,
                accepted: None,
                established_ms: 0,
                last_rx_ms: 0,
                rekey_after_ms,
                timing,
                handshakes: 0,
            },
        }
    }

    pub(super) fn has_session(&self) -> bool {
        self.tx.is_some()
    }

    /// Installs a session the state accepted.
    pub(super) fn settle(&mut self) {
        if let Some(session) = self.state.accepted.take() {
            let replaced = self.tx.replace(session.tx).map(|old| old.packets_sent());
            self.state.previous_rx = self.state.rx.replace(session.rx);
            tracing::debug!(handshakes = self.state.handshakes, ?replaced, "session with the node established");
        }
    }

    /// Starts a handshake when one is due: none yet, the node silent while requests wait
    /// (`waiting`), the session old or far through its packets, or an attempt timed out.
    pub(super) fn poll(&mut self, now_ms: u64, waiting: bool, socket: &UdpSocket) {
        let state = &mut self.state;
        if state.attempt.is_some() {
            if now_ms >= state.attempt_deadline_ms {
                state.attempt_rto_ms = (state.attempt_rto_ms * 2).min(state.timing.rto_max_ms);
                state.start_attempt(now_ms, socket);
            }
            return;
        }
        let silent_ms = now_ms.saturating_sub(state.last_rx_ms);
        let due = match &self.tx {
            None => true,
            Some(tx) => {
                now_ms.saturating_sub(state.established_ms) >= state.rekey_after_ms
                    || tx.packets_sent() >= REKEY_AFTER_PACKETS
                    || (waiting && silent_ms >= state.silence_ms())
            }
        };
        if due {
            state.attempt_rto_ms = state.timing.rto_initial_ms;
            state.start_attempt(now_ms, socket);
        }
    }

    /// When the next attempt (or the check for silence) is due.
    pub(super) fn deadline_ms(&self) -> Option<u64> {
        self.state.attempt.as_ref().map(|_| self.state.attempt_deadline_ms)
    }
}

impl LinkState {
    /// The node has said nothing for this long while requests waited: it may have lost
    /// the session (a restart), so a new handshake starts.
    fn silence_ms(&self) -> u64 {
        (self.timing.rto_initial_ms * 8).max(200)
    }

    fn start_attempt(&mut self, now_ms: u64, socket: &UdpSocket) {
        // A fresh random per attempt: a node refuses a client random it has accepted.
        let attempt = ClientHandshake::new(&self.keys, rand::random(), rand::random());
        let mut initiate = [0u8; INITIATE_LEN];
        attempt.initiate(&mut initiate);
        // A lost Initiate is retried at the deadline.
        let _ = socket.send(&initiate);
        self.attempt = Some(attempt);
        self.attempt_deadline_ms = now_ms + self.attempt_rto_ms;
    }

    /// Feeds a handshake message from the node: a Challenge is answered with a Confirm, an
    /// Accept ends the attempt with a new session.
    pub(super) fn on_handshake(&mut self, now_ms: u64, message: &[u8], socket: &UdpSocket) {
        let Some(attempt) = self.attempt.as_mut() else { return };
        let Ok(parsed) = Message::new_checked(message) else { return };
        match parsed.kind() {
            Kind::Challenge => {
                let mut confirm = [0u8; CONFIRM_LEN];
                if attempt.on_challenge(message, &mut confirm).is_ok() {
                    let _ = socket.send(&confirm);
                }
            }
            Kind::Accept => {
                if let Ok(session) = attempt.on_accept(message) {
                    self.attempt = None;
                    self.accepted = Some(session);
                    self.established_ms = now_ms;
                    self.last_rx_ms = now_ms;
                    self.handshakes += 1;
                }
            }
            Kind::Initiate | Kind::Confirm => {}
        }
    }

    /// Opens a data datagram from the node with the session it names; `None` for anything
    /// that does not authenticate or was seen before.
    pub(super) fn open(&mut self, now_ms: u64, datagram: &mut [u8]) -> Option<Repr> {
        let opened = match self.rx.as_mut().map(|rx| rx.open(datagram)) {
            Some(Ok(repr)) => Some(repr),
            _ => self.previous_rx.as_mut().and_then(|rx| rx.open(datagram).ok()),
        };
        if opened.is_some() {
            self.last_rx_ms = now_ms;
        }
        opened
    }
}
