//! Foundations of protocol v2's sessions (issue #10): the per-datagram AEAD and the
//! receive-side replay window. Both are `no_std`, allocation-free and without `unsafe`.
//!
//! - [`aead::SessionCipher`]: AES-128-GCM (over `ring`) for one direction of a session,
//!   sealing a datagram's payload in place in its arena frame with the header as AAD and
//!   a nonce built from the explicit packet number (`00000000 ‖ pn` big-endian).
//! - [`replay::ReplayWindow`]: an RFC 6479 sliding window over packet numbers (2048-bit
//!   ring, 1984 numbers of guaranteed history) refusing duplicates and numbers too old.
//!
//! - [`handshake`]: the four handshake messages as checked views and builders, the key
//!   schedule from the cluster key and both randoms, and the node's stateless cookie.
//!
//! - [`peer`]: an established session's sending and receiving halves (seal and open a
//!   `wire` datagram in place) and the client's side of the handshake.
//!
//! The node's session table, its stateless answers to handshakes and its anti-replay
//! memory live in `node::sessions`.

pub mod aead;
pub mod handshake;
pub mod peer;
pub mod replay;

pub use aead::{AeadError, SessionCipher};
pub use replay::{Replay, ReplayWindow};
