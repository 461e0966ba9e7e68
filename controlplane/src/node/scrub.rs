//! Pacing of the background scrub: how many bytes the chunk store may re-read and verify
//! now (`DiskStore::scrub_step`), so that the scrub averages `scrub_bytes_per_s` and
//! every step is a bounded slice run between poll-loop turns.

/// Largest slice one step reads (the store's scratch buffer): about 0.1 ms from the page
/// cache, a few ms from a disk, never a stall of the poll loop.
pub const SCRUB_STEP_BYTES_MAX: u64 = 1 << 20;
/// Smallest slice worth a step: a slow rate reads one block this often rather than a few
/// bytes at every turn.
const SCRUB_STEP_BYTES_MIN: u64 = 64 << 10;

/// A token bucket of bytes the scrub may read, earned at its rate, holding at most one
/// step's worth (an idle store does not save up a burst).
#[derive(Debug)]
pub struct ScrubPacer {
    rate_bytes_per_s: u64,
    earned_bytes: u64,
    last_ms: u64,
}

impl ScrubPacer {
    /// `rate_bytes_per_s` 0 turns the scrub off.
    pub fn new(rate_bytes_per_s: u64, now_ms: u64) -> Self {
        Self { rate_bytes_per_s, earned_bytes: 0, last_ms: now_ms }
    }

    /// Bytes the next step may read, when one is due.
    pub fn due(&mut self, now_ms: u64) -> Option<u64> {
        if self.rate_bytes_per_s == 0 || now_ms <= self.last_ms {
            return None;
        }
        let earned = self.rate_bytes_per_s.saturating_mul(now_ms - self.last_ms) / 1000;
        self.earned_bytes = self.earned_bytes.saturating_add(earned).min(SCRUB_STEP_BYTES_MAX);
        self.last_ms = now_ms;
        let step_min = SCRUB_STEP_BYTES_MIN.min(self.rate_bytes_per_s);
        (self.earned_bytes >= step_min).then_some(self.earned_bytes)
    }

    /// The step read `bytes`; a step that read nothing (no chunk, a pass boundary) keeps
    /// its allowance for the next one.
    pub fn spent(&mut self, bytes: u64) {
        self.earned_bytes = self.earned_bytes.saturating_sub(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_rate_in_bounded_steps() {
        let rate = 1 << 20;
        let mut pacer = ScrubPacer::new(rate, 0);
        let mut read = 0u64;
        for now_ms in (1..=10_000).step_by(7) {
            if let Some(budget) = pacer.due(now_ms) {
                assert!(budget <= SCRUB_STEP_BYTES_MAX);
                pacer.spent(budget);
                read += budget;
            }
        }
        // Ten seconds at 1 MiB/s, within one step of it.
        assert!(read.abs_diff(10 * rate) <= SCRUB_STEP_BYTES_MAX, "{read}");
        assert_eq!(ScrubPacer::new(0, 0).due(1000), None, "0 is off");
    }
}
