//! Beeline's storage data plane.
//!
//! The core is `#![no_std]` and allocation-free: every table is sized at start-up from
//! memory the caller hands in. The `std` feature adds the pieces that need an operating
//! system: the kernel-socket (`udp`) backend, the durable on-disk chunk store, hugepage
//! arena memory and the blocking client driver.
//!
//! Data path (see `docs/architecture.md`): a backend receives a datagram straight into a
//! frame of the [`arena::Arena`]; [`node::Node`] parses it through the checked
//! [`wire::Packet`] view, verifies its MAC and hands the payload slice to the
//! [`store::ChunkStore`] without copying it; GET responses are read from the store into
//! a frame behind a freshly written header and sent from that frame.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
// The no_std core has no `unsafe`; the modules that talk to the operating system (sockets,
// mmap, AF_XDP rings, DPDK, file syscalls) opt in one by one where they are declared.
#![deny(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod arena;
pub mod bitmap;
pub mod client;
pub mod counters;
pub mod io;
pub mod node;
pub mod session;
pub mod store;
pub mod testkit;
pub mod wire;

pub use arena::{Arena, FrameId};
pub use wire::{ChunkId, Opcode, Status};
