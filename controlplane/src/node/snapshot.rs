//! What the data-plane thread publishes for `node status`, `/metrics` and the lease
//! record: written by the poll loop once per interval, read by everyone else.

use std::sync::{Arc, Mutex};

use beeline_dataplane::counters::Counters;

/// Counters and occupancy published by the poll thread for status and metrics.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: Counters,
    pub arena_frames: u32,
    pub arena_frames_free: u32,
    pub puts_in_flight: u32,
    /// Client sessions in the node's table.
    pub sessions_active: u32,
    pub used_bytes: u64,
    pub chunks: u64,
    /// Reads refused as corrupt and the background scrub's progress.
    pub integrity: beeline_dataplane::store::disk::IntegrityStats,
    /// How puts' bytes reached the disk: with O_DIRECT or through the page cache.
    pub writes: beeline_dataplane::store::disk::WriteStats,
    pub page_backing: String,
    /// The backend and how it runs (for afxdp: interface, queue, zero-copy or copy mode).
    pub backend: String,
    /// The backend's own counters (for afxdp also the XDP classifier's).
    pub backend_counters: Vec<(String, u64)>,
}

pub type SharedSnapshot = Arc<Mutex<Snapshot>>;
