//! Counters for every outcome of the data path. Plain integers: the poll loop owns them
//! and the control plane reads a copy.

/// Why a received datagram was dropped without effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Failed `Packet::new_checked`: too short, wrong magic/version, unknown opcode.
    Malformed,
    /// Did not authenticate: a datagram's AEAD tag, a handshake message's mac1 or seal, or
    /// a version-1 datagram's MAC.
    BadMac,
    /// A data datagram for a session the node does not have (never made, expired, or
    /// from before a restart): the client runs a new handshake.
    NoSession,
    /// A packet number the session has already accepted, or one older than its replay
    /// window; or a `Confirm` whose client random was already accepted.
    Replayed,
    /// A `Confirm` whose cookie is not this address's from this or the last epoch.
    BadCookie,
    /// A session's datagram from an address other than the one that made the session.
    WrongAddress,
    /// No room to remember another client random this epoch: the client retries.
    HandshakeBusy,
    /// The source address is outside the allowlist.
    NotAllowed,
    /// A reply opcode sent to the node, or a request the node does not serve.
    Unexpected,
    /// No free frame or TX queue space to answer with.
    NoBuffer,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::Malformed,
        DropReason::BadMac,
        DropReason::NoSession,
        DropReason::Replayed,
        DropReason::BadCookie,
        DropReason::WrongAddress,
        DropReason::HandshakeBusy,
        DropReason::NotAllowed,
        DropReason::Unexpected,
        DropReason::NoBuffer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadMac => "bad_mac",
            DropReason::NoSession => "no_session",
            DropReason::Replayed => "replayed",
            DropReason::BadCookie => "bad_cookie",
            DropReason::WrongAddress => "wrong_address",
            DropReason::HandshakeBusy => "handshake_busy",
            DropReason::NotAllowed => "not_allowed",
            DropReason::Unexpected => "unexpected",
            DropReason::NoBuffer => "no_buffer",
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds (the last bucket is +Inf).
pub const LATENCY_BOUNDS_US: [u64; 14] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000];

/// A fixed-bucket latency histogram (Prometheus-style, kept non-cumulative here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// `buckets[i]` counts observations at most `LATENCY_BOUNDS_US[i]` and above the
    /// previous bound; the last one counts everything beyond the last bound.
    pub buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn observe_us(&mut self, latency_us: u64) {
        let bucket = LATENCY_BOUNDS_US.iter().position(|bound| latency_us <= *bound).unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(latency_us);
        self.count += 1;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub dropped_malformed: u64,
    pub dropped_bad_mac: u64,
    pub dropped_no_session: u64,
    pub dropped_replayed: u64,
    pub dropped_bad_cookie: u64,
    pub dropped_wrong_address: u64,
    pub dropped_handshake_busy: u64,
    pub dropped_not_allowed: u64,
    pub dropped_unexpected: u64,
    pub dropped_no_buffer: u64,
    /// Requests answered with an `Error` packet, by cause.
    pub rejected_busy: u64,
    pub rejected_bad_request: u64,
    pub rejected_not_found: u64,
    pub rejected_disk_full: u64,
    pub rejected_internal: u64,
    /// Reads refused because the stored copy failed its checksum (`Status::Corrupt`).
    pub rejected_corrupt: u64,
    pub fragments_stored: u64,
    pub fragments_duplicate: u64,
    pub chunks_stored: u64,
    pub bytes_stored: u64,
    pub puts_abandoned: u64,
    pub fragments_served: u64,
    pub bytes_served: u64,
    pub gets: u64,
    pub chunks_deleted: u64,
    pub stats: u64,
    pub pings: u64,
    pub control_requests: u64,
    /// Challenges sent in answer to an `Initiate` (stateless).
    pub handshake_challenges: u64,
    /// Sessions made by a `Confirm` that authenticated.
    pub sessions_established: u64,
    /// Version-1 requests told to upgrade.
    pub upgrade_replies: u64,
    /// Requests that came from local shared-memory clients (plaintext, no session).
    pub local_requests: u64,
    /// Payload bytes of chunk data copied by Beeline's own code (not the kernel's or the
    /// NIC's). The data path is built to keep this at zero.
    pub data_bytes_copied: u64,
    /// From a put's first fragment to its durable acknowledgement (millisecond clock).
    pub put_latency: LatencyHistogram,
}

impl Counters {
    pub fn count_drop(&mut self, reason: DropReason) {
        *self.drop_counter(reason) += 1;
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Malformed => self.dropped_malformed,
            DropReason::BadMac => self.dropped_bad_mac,
            DropReason::NoSession => self.dropped_no_session,
            DropReason::Replayed => self.dropped_replayed,
            DropReason::BadCookie => self.dropped_bad_cookie,
            DropReason::WrongAddress => self.dropped_wrong_address,
            DropReason::HandshakeBusy => self.dropped_handshake_busy,
            DropReason::NotAllowed => self.dropped_not_allowed,
            DropReason::Unexpected => self.dropped_unexpected,
            DropReason::NoBuffer => self.dropped_no_buffer,
        }
    }

    fn drop_counter(&mut self, reason: DropReason) -> &mut u64 {
        match reason {
            DropReason::Malformed => &mut self.dropped_malformed,
            DropReason::BadMac => &mut self.dropped_bad_mac,
            DropReason::NoSession => &mut self.dropped_no_session,
            DropReason::Replayed => &mut self.dropped_replayed,
            DropReason::BadCookie => &mut self.dropped_bad_cookie,
            DropReason::WrongAddress => &mut self.dropped_wrong_address,
            DropReason::HandshakeBusy => &mut self.dropped_handshake_busy,
            DropReason::NotAllowed => &mut self.dropped_not_allowed,
            DropReason::Unexpected => &mut self.dropped_unexpected,
            DropReason::NoBuffer => &mut self.dropped_no_buffer,
        }
    }

    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL.iter().map(|reason| self.dropped(*reason)).sum()
    }
}
