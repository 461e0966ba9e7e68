//! Sans-I/O client state machines: putting and getting one chunk, and single
//! request/reply exchanges (ping, stat, delete, control). They are driven by a clock
//! (`now_ms`) and by received datagrams, and emit datagrams through [`Transmit`]; the
//! `sim` tests and the std UDP driver run the very same code.

use crate::bitmap::{FRAGMENTS_MAX, FragmentBitmap, exported_bit};
use crate::wire::{self, ChunkId, HEADER_LEN, Opcode, Repr, Status, flags};

/// Largest datagram a client builds: header plus a 9000-byte jumbo fragment.
pub const DATAGRAM_BYTES_MAX: usize = HEADER_LEN + 9000;

/// Where a state machine sends datagrams. They are handed over unsealed, as a header
/// ([`HEADER_LEN`] bytes, its `payload_len` set) and the payload, which for a put is a
/// slice of the caller's chunk: the driver lays both out once where it sends from and
/// seals them there with its session, so no state machine holds a key and no payload is
/// copied twice.
pub trait Transmit {
    fn transmit(&mut self, header: &[u8], payload: &[u8]);
}

/// Retransmission timing, bounded everywhere.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub rto_initial_ms: u64,
    pub rto_max_ms: u64,
    /// Consecutive timeouts without progress before giving up.
    pub timeouts_max: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self { rto_initial_ms: 50, rto_max_ms: 1000, timeouts_max: 8 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// No answer after `timeouts_max` retransmissions.
    Unreachable,
    /// The node refused the request.
    Rejected(Status),
    /// The node's replies contradict the request (a different chunk length, say).
    Inconsistent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Pending,
    Done,
    Failed(ClientError),
}

/// Retransmission timer with exponential back-off.
#[derive(Debug, Clone, Copy)]
struct Timer {
    timing: Timing,
    rto_ms: u64,
    deadline_ms: u64,
    timeouts: u32,
}

impl Timer {
    fn new(timing: Timing, now_ms: u64) -> Self {
        assert!(timing.rto_initial_ms > 0 && timing.rto_initial_ms <= timing.rto_max_ms);
        Self { timing, rto_ms: timing.rto_initial_ms, deadline_ms: now_ms + timing.rto_initial_ms, timeouts: 0 }
    }

    fn progress(&mut self, now_ms: u64) {
        self.timeouts = 0;
        self.rto_ms = self.timing.rto_initial_ms;
        self.deadline_ms = now_ms + self.rto_ms;
    }

    /// `Some(true)` if expired and another try is allowed, `Some(false)` if out of tries.
    fn expired(&mut self, now_ms: u64) -> Option<bool> {
        if now_ms < self.deadline_ms {
            return None;
        }
        self.timeouts += 1;
        self.rto_ms = (self.rto_ms * 2).min(self.timing.rto_max_ms);
        self.deadline_ms = now_ms + self.rto_ms;
        Some(self.timeouts <= self.timing.timeouts_max)
    }

    fn backoff(&mut self, now_ms: u64) {
        self.rto_ms = (self.rto_ms * 2).min(self.timing.rto_max_ms);
        self.deadline_ms = now_ms + self.rto_ms;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutPhase {
    Sending,
    /// Every fragment is on the node; waiting for it to be durable.
    Committing,
    Done,
    Failed(ClientError),
}

/// Puts one chunk: sends fragments within the node's credit window, resends what the
/// node reports missing, and finishes when the node says the chunk is durable.
pub struct PutChunk<D: AsRef<[u8]>> {
    chunk_id: ChunkId,
    request_id: u64,
    data: D,
    frag_len: u16,
    count: u32,
    acked: FragmentBitmap,
    first_missing: u32,
    sent_frontier: u32,
    credits: u32,
    sent_at_ms: [u32; FRAGMENTS_MAX as usize],
    /// A timeout's probe (a `PutQuery`, or the oldest unacknowledged fragment asking
    /// for a status) went out; its answer starts loss recovery.
    query_outstanding: bool,
    phase: PutPhase,
    timer: Timer,
    start_ms: u64,
    scratch: [u8; HEADER_LEN],
    /// Hints every fragment carries (`flags::NOT_READ_SOON`), or 0.
    hint_flags: u8,
    pub fragments_sent: u64,
    pub fragments_resent: u64,
}

/// Ask for a status at least this often within a burst, so acks keep the pipe full.
const ACK_EVERY_FRAGMENTS: u32 = 64;

impl<D: AsRef<[u8]>> PutChunk<D> {
    /// `frag_len` must fit the node (see its Pong) and cut `data` into at most
    /// `FRAGMENTS_MAX` fragments.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chunk_id: ChunkId,
        request_id: u64,
        data: D,
        frag_len: u16,
        credits: u16,
        timing: Timing,
        now_ms: u64,
    ) -> Self {
        assert!(frag_len > 0 && usize::from(frag_len) + HEADER_LEN <= DATAGRAM_BYTES_MAX);
        let total_len = u32::try_from(data.as_ref().len()).expect("chunk larger than 4 GiB");
        let count = wire::fragment_count(total_len, frag_len);
        assert!(count <= FRAGMENTS_MAX, "chunk needs more than FRAGMENTS_MAX fragments");
        Self {
            chunk_id,
            request_id,
            data,
            frag_len,
            count,
            acked: FragmentBitmap::new(),
            first_missing: 0,
            sent_frontier: 0,
            credits: u32::from(credits.max(1)),
            sent_at_ms: [0; FRAGMENTS_MAX as usize],
            query_outstanding: false,
            phase: PutPhase::Sending,
            timer: Timer::new(timing, now_ms),
            start_ms: now_ms,
            scratch: [0; HEADER_LEN],
            hint_flags: 0,
            fragments_sent: 0,
            fragments_resent: 0,
        }
    }

    /// Every fragment carries `hint_flags` (only hints: `flags::NOT_READ_SOON`, or 0).
    pub fn with_flags(mut self, hint_flags: u8) -> Self {
        assert_eq!(hint_flags & !flags::NOT_READ_SOON, 0, "only hints are the caller's to set");
        self.hint_flags = hint_flags;
        self
    }

    pub fn chunk_id(&self) -> ChunkId {
        self.chunk_id
    }

    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// Gives the chunk buffer back (for reuse by the next chunk).
    pub fn into_data(self) -> D {
        self.data
    }

    pub fn progress(&self) -> Progress {
        match self.phase {
            PutPhase::Done => Progress::Done,
            PutPhase::Failed(error) => Progress::Failed(error),
            PutPhase::Sending | PutPhase::Committing => Progress::Pending,
        }
    }

    /// Still sending fragments (not yet every fragment on the node). A put past this point
    /// only waits for the node's disk, so a client may start another chunk beside it.
    pub fn is_sending(&self) -> bool {
        matches!(self.phase, PutPhase::Sending)
    }

    /// Bytes of the chunk the node has confirmed receiving.
    pub fn acked_bytes(&self) -> u64 {
        u64::from(self.acked.count().min(self.count)) * u64::from(self.frag_len)
    }

    pub fn deadline_ms(&self) -> u64 {
        self.timer.deadline_ms
    }

    pub fn start(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        self.send_new(now_ms, tx);
    }

    fn elapsed(&self, now_ms: u64) -> u32 {
        (now_ms - self.start_ms).min(u64::from(u32::MAX)) as u32
    }

    fn send_fragment(&mut self, index: u32, ack_request: bool, now_ms: u64, tx: &mut dyn Transmit) {
        let data = self.data.as_ref();
        let start = index as usize * usize::from(self.frag_len);
        let len = wire::fragment_len(data.len() as u32, self.frag_len, index) as usize;
        let repr = Repr {
            flags: self.hint_flags | if ack_request { flags::ACK_REQUEST } else { 0 },
            request_id: self.request_id,
            chunk_id: self.chunk_id,
            index,
            count: self.count,
            total_len: data.len() as u32,
            frag_len: self.frag_len,
            payload_len: len as u16,
            ..Repr::new(Opcode::PutFrag)
        };
        repr.emit(&mut self.scratch);
        tx.transmit(&self.scratch, &data[start..start + len]);
        self.sent_at_ms[index as usize] = self.elapsed(now_ms);
        self.fragments_sent += 1;
    }

    fn send_control(&mut self, opcode: Opcode, tx: &mut dyn Transmit) {
        let repr = Repr { request_id: self.request_id, chunk_id: self.chunk_id, ..Repr::new(opcode) };
        repr.emit(&mut self.scratch);
        tx.transmit(&self.scratch, &[]);
    }

    /// Sends fragments never sent before, up to the credit window.
    fn send_new(&mut self, now_ms: u64, tx: &mut dyn Transmit) -> u32 {
        let limit = self.first_missing.saturating_add(self.credits).min(self.count);
        let mut sent = 0;
        while self.sent_frontier < limit {
            let index = self.sent_frontier;
            self.sent_frontier += 1;
            let last = self.sent_frontier == limit;
            let ack = last || (index + 1).is_multiple_of(ACK_EVERY_FRAGMENTS);
            self.send_fragment(index, ack, now_ms, tx);
            sent += 1;
        }
        sent
    }

    pub fn on_packet(&mut self, repr: &Repr, payload: &[u8], now_ms: u64, tx: &mut dyn Transmit) {
        if repr.chunk_id != self.chunk_id || repr.request_id != self.request_id {
            return;
        }
        if matches!(self.phase, PutPhase::Done | PutPhase::Failed(_)) {
            return;
        }
        match repr.opcode {
            Opcode::PutDone => {
                self.phase = if repr.total_len as usize == self.data.as_ref().len() {
                    PutPhase::Done
                } else {
                    PutPhase::Failed(ClientError::Inconsistent)
                };
            }
            Opcode::Error => match repr.status {
                Status::Busy => {
                    // The node has no slot for us yet: back off, then start over.
                    self.timer.backoff(now_ms);
                }
                status => self.phase = PutPhase::Failed(ClientError::Rejected(status)),
            },
            Opcode::PutStatus => self.on_status(repr, payload, now_ms, tx),
            _ => {}
        }
    }

    fn on_status(&mut self, repr: &Repr, bitmap: &[u8], now_ms: u64, tx: &mut dyn Transmit) {
        if repr.credits > 0 {
            self.credits = u32::from(repr.credits);
        }
        if repr.flags & flags::COMPLETE != 0 {
            for index in 0..self.count {
                self.acked.set(index);
            }
            self.first_missing = self.count;
            self.phase = PutPhase::Committing;
            self.timer.progress(now_ms);
            return;
        }
        let first_missing = repr.index.min(self.count);
        if self.query_outstanding && first_missing < self.first_missing {
            // The node lost fragments it had acknowledged (it restarted before the chunk
            // was durable, or abandoned the put): start over from what it reports now.
            self.acked.clear();
            for index in 0..first_missing {
                self.acked.set(index);
            }
            self.first_missing = first_missing;
            self.sent_frontier = first_missing;
            self.phase = PutPhase::Sending;
        }
        let mut advanced = first_missing > self.first_missing;
        for index in self.first_missing..first_missing {
            self.acked.set(index);
        }
        let window_end = self.count.min(first_missing.saturating_add(bitmap.len() as u32 * 8));
        for index in first_missing..window_end {
            if exported_bit(bitmap, index - first_missing) && self.acked.set(index) {
                advanced = true;
            }
        }
        self.first_missing = first_missing.max(self.first_missing);
        if advanced {
            self.timer.progress(now_ms);
        }
        // Which holes are lost? Those below the highest fragment the node reports having
        // (sent before it, yet missing: lost or overtaken) that had a moment to arrive.
        // Holes above it may still be in flight; they are resent only when this status
        // answers a query sent after a timeout, when everything unacknowledged is lost.
        let seen_frontier = (0..bitmap.len() as u32 * 8)
            .rev()
            .find(|offset| exported_bit(bitmap, *offset))
            .map_or(first_missing, |offset| first_missing + offset + 1);
        let recovering = core::mem::take(&mut self.query_outstanding);
        let now_rel = self.elapsed(now_ms);
        let overtaken_ms = (self.timer.timing.rto_initial_ms / 4).max(1) as u32;
        let mut resent = 0u32;
        let mut last_resent = None;
        for index in self.first_missing..self.sent_frontier.min(self.first_missing.saturating_add(self.credits)) {
            let age_ms = now_rel.saturating_sub(self.sent_at_ms[index as usize]);
            let lost = recovering || (index < seen_frontier && age_ms >= overtaken_ms);
            if !self.acked.get(index) && lost {
                if let Some(previous) = last_resent {
                    self.send_fragment(previous, false, now_ms, tx);
                }
                last_resent = Some(index);
                resent += 1;
            }
        }
        let new = self.send_new(now_ms, tx);
        if let Some(index) = last_resent {
            // Ask for a status with the last resend unless new fragments already do.
            self.send_fragment(index, new == 0, now_ms, tx);
        }
        self.fragments_resent += u64::from(resent);
    }

    /// Drives timeouts; call whenever `now_ms >= deadline_ms()`.
    pub fn on_timer(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        if matches!(self.phase, PutPhase::Done | PutPhase::Failed(_)) {
            return;
        }
        match self.timer.expired(now_ms) {
            None => {}
            Some(false) => self.phase = PutPhase::Failed(ClientError::Unreachable),
            Some(true) => {
                if self.sent_frontier == 0 {
                    self.send_new(now_ms, tx);
                } else if self.phase == PutPhase::Sending && self.first_missing < self.count {
                    // As TCP on a retransmission timeout: the oldest unacknowledged
                    // fragment again, asking for a status. That status answers as a
                    // PutQuery's would and starts recovery, and the fragment may already
                    // be the one missing: under heavy loss a query first and the
                    // fragment after it need two round trips where one does.
                    self.query_outstanding = true;
                    self.send_fragment(self.first_missing, true, now_ms, tx);
                    self.fragments_resent += 1;
                } else {
                    self.query_outstanding = true;
                    self.send_control(Opcode::PutQuery, tx);
                }
            }
        }
    }
}

/// Gets a byte range of one chunk into `out`, keeping about a window of fragments
/// requested and asking again for the ones that do not arrive.
pub struct GetChunk<B: AsMut<[u8]>> {
    chunk_id: ChunkId,
    request_id: u64,
    total_len: u32,
    frag_len: u16,
    range_start: u32,
    first_fragment: u32,
    end_fragment: u32,
    requested_frontier: u32,
    received: FragmentBitmap,
    window: u32,
    out: B,
    out_len: usize,
    progress: Progress,
    timer: Timer,
    scratch: [u8; HEADER_LEN],
    /// Hints every request carries (`flags::NOT_READ_SOON`), or 0.
    hint_flags: u8,
    pub requests_sent: u64,
}

impl<B: AsMut<[u8]>> GetChunk<B> {
    /// Reads `out.len()` bytes from byte `range_start` of a chunk of `total_len` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chunk_id: ChunkId,
        request_id: u64,
        total_len: u32,
        range_start: u32,
        mut out: B,
        frag_len: u16,
        window: u16,
        timing: Timing,
        now_ms: u64,
    ) -> Self {
        assert!(frag_len > 0);
        let out_len = out.as_mut().len();
        let range_end = u64::from(range_start) + out_len as u64;
        assert!(range_end <= u64::from(total_len), "range beyond the chunk");
        let first_fragment = range_start / u32::from(frag_len);
        let end_fragment = if out_len == 0 { first_fragment } else { (range_end as u32).div_ceil(u32::from(frag_len)) };
        let count = wire::fragment_count(total_len, frag_len);
        assert!(count <= FRAGMENTS_MAX);
        let progress = if out_len == 0 { Progress::Done } else { Progress::Pending };
        Self {
            chunk_id,
            request_id,
            total_len,
            frag_len,
            range_start,
            first_fragment,
            end_fragment,
            requested_frontier: first_fragment,
            received: FragmentBitmap::new(),
            window: u32::from(window.max(2)),
            out,
            out_len,
            progress,
            timer: Timer::new(timing, now_ms),
            scratch: [0; HEADER_LEN],
            hint_flags: 0,
            requests_sent: 0,
        }
    }

    /// Every request carries `hint_flags` (only hints: `flags::NOT_READ_SOON`, or 0).
    pub fn with_flags(mut self, hint_flags: u8) -> Self {
        assert_eq!(hint_flags & !flags::NOT_READ_SOON, 0, "only hints are the caller's to set");
        self.hint_flags = hint_flags;
        self
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    pub fn chunk_id(&self) -> ChunkId {
        self.chunk_id
    }

    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    pub fn deadline_ms(&self) -> u64 {
        self.timer.deadline_ms
    }

    /// Gives the output buffer back.
    pub fn into_output(self) -> B {
        self.out
    }

    pub fn received_fragments(&self) -> u32 {
        self.received.count()
    }

    pub fn start(&mut self, tx: &mut dyn Transmit) {
        if self.progress == Progress::Pending {
            self.request_more(tx);
        }
    }

    fn request(&mut self, index: u32, count: u32, tx: &mut dyn Transmit) {
        let repr = Repr {
            flags: self.hint_flags,
            request_id: self.request_id,
            chunk_id: self.chunk_id,
            index,
            count,
            frag_len: self.frag_len,
            ..Repr::new(Opcode::Get)
        };
        repr.emit(&mut self.scratch);
        tx.transmit(&self.scratch, &[]);
        self.requests_sent += 1;
    }

    /// Keeps about one window of fragments outstanding.
    fn request_more(&mut self, tx: &mut dyn Transmit) {
        let requested = self.requested_frontier - self.first_fragment;
        let outstanding = requested.saturating_sub(self.received.count());
        if self.requested_frontier >= self.end_fragment || outstanding > self.window / 2 {
            return;
        }
        let count = (self.window - outstanding).min(self.end_fragment - self.requested_frontier);
        let index = self.requested_frontier;
        self.requested_frontier += count;
        self.request(index, count, tx);
    }

    pub fn on_packet(&mut self, repr: &Repr, payload: &[u8], now_ms: u64, tx: &mut dyn Transmit) {
        if repr.chunk_id != self.chunk_id || repr.request_id != self.request_id || self.progress != Progress::Pending {
            return;
        }
        match repr.opcode {
            Opcode::Error => {
                if repr.status == Status::Busy {
                    self.timer.backoff(now_ms);
                } else {
                    self.progress = Progress::Failed(ClientError::Rejected(repr.status));
                }
            }
            Opcode::GetData => {
                if repr.total_len != self.total_len || repr.frag_len != self.frag_len {
                    self.progress = Progress::Failed(ClientError::Inconsistent);
                    return;
                }
                let index = repr.index;
                if index < self.first_fragment
                    || index >= self.end_fragment
                    || payload.len() != wire::fragment_len(self.total_len, self.frag_len, index) as usize
                {
                    return;
                }
                if !self.received.set(index - self.first_fragment) {
                    return;
                }
                self.timer.progress(now_ms);
                // Copy the part of the fragment that overlaps the requested range.
                let fragment_start = u64::from(index) * u64::from(self.frag_len);
                let range_start = u64::from(self.range_start);
                let range_end = range_start + self.out_len as u64;
                let copy_start = fragment_start.max(range_start);
                let copy_end = (fragment_start + payload.len() as u64).min(range_end);
                if copy_start < copy_end {
                    let source = &payload[(copy_start - fragment_start) as usize..(copy_end - fragment_start) as usize];
                    self.out.as_mut()[(copy_start - range_start) as usize..(copy_end - range_start) as usize]
                        .copy_from_slice(source);
                }
                if self.received.count() == self.end_fragment - self.first_fragment {
                    self.progress = Progress::Done;
                } else {
                    self.request_more(tx);
                }
            }
            _ => {}
        }
    }

    pub fn on_timer(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        if self.progress != Progress::Pending {
            return;
        }
        match self.timer.expired(now_ms) {
            None => {}
            Some(false) => self.progress = Progress::Failed(ClientError::Unreachable),
            Some(true) => {
                // Ask again for every missing run among the fragments requested so far,
                // at most one window's worth.
                let mut budget = self.window;
                let mut index = self.first_fragment;
                while index < self.requested_frontier && budget > 0 {
                    if self.received.get(index - self.first_fragment) {
                        index += 1;
                        continue;
                    }
                    let run_start = index;
                    while index < self.requested_frontier
                        && !self.received.get(index - self.first_fragment)
                        && index - run_start < budget
                    {
                        index += 1;
                    }
                    let run = index - run_start;
                    budget -= run;
                    self.request(run_start, run, tx);
                }
                if self.requested_frontier == self.first_fragment {
                    self.request_more(tx);
                }
            }
        }
    }
}

/// A single request answered by a single reply: ping, stat, delete, control.
pub struct Exchange {
    request: Repr,
    expect: Opcode,
    payload_len: usize,
    datagram: [u8; DATAGRAM_BYTES_MAX],
    progress: Progress,
    timer: Timer,
    reply: Option<Repr>,
    reply_payload: heapless::Vec<u8, DATAGRAM_BYTES_MAX>,
}

impl Exchange {
    pub fn new(request: Repr, payload: &[u8], expect: Opcode, timing: Timing, now_ms: u64) -> Self {
        let mut datagram = [0u8; DATAGRAM_BYTES_MAX];
        let request = Repr { payload_len: payload.len() as u16, ..request };
        let payload_len = request.emit_with_payload(&mut datagram, payload);
        Self {
            request,
            expect,
            payload_len,
            datagram,
            progress: Progress::Pending,
            timer: Timer::new(timing, now_ms),
            reply: None,
            reply_payload: heapless::Vec::new(),
        }
    }

    pub fn request_id(&self) -> u64 {
        self.request.request_id
    }

    pub fn chunk_id(&self) -> ChunkId {
        self.request.chunk_id
    }

    pub fn deadline_ms(&self) -> u64 {
        self.timer.deadline_ms
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    pub fn reply(&self) -> Option<(&Repr, &[u8])> {
        self.reply.as_ref().map(|repr| (repr, &self.reply_payload[..]))
    }

    pub fn start(&mut self, tx: &mut dyn Transmit) {
        tx.transmit(&self.datagram[..HEADER_LEN], &self.datagram[HEADER_LEN..self.payload_len]);
    }

    pub fn on_packet(&mut self, repr: &Repr, payload: &[u8], now_ms: u64) {
        if repr.request_id != self.request.request_id
            || repr.chunk_id != self.request.chunk_id
            || self.progress != Progress::Pending
        {
            return;
        }
        if repr.opcode == Opcode::Error {
            if repr.status == Status::Busy {
                self.timer.backoff(now_ms);
            } else {
                self.progress = Progress::Failed(ClientError::Rejected(repr.status));
            }
        } else if repr.opcode == self.expect {
            self.reply = Some(*repr);
            self.reply_payload.clear();
            // Fits: DATAGRAM_BYTES_MAX bounds every payload this client accepts.
            if self.reply_payload.extend_from_slice(payload).is_err() {
                self.progress = Progress::Failed(ClientError::Inconsistent);
                return;
            }
            self.progress = Progress::Done;
        }
    }

    pub fn on_timer(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        if self.progress != Progress::Pending {
            return;
        }
        match self.timer.expired(now_ms) {
            None => {}
            Some(false) => self.progress = Progress::Failed(ClientError::Unreachable),
            Some(true) => tx.transmit(&self.datagram[..HEADER_LEN], &self.datagram[HEADER_LEN..self.payload_len]),
        }
    }
}
