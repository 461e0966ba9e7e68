//! Sliding replay window over packet numbers, after RFC 6479 ("IPsec Anti-Replay
//! Algorithm without Bit Shifting"): a ring of [`BITMAP_BLOCKS`] 64-bit blocks plus the
//! highest packet number accepted so far. Moving the window forward clears whole blocks
//! instead of shifting the bitmap, so an update costs O(1) amortised and at most
//! [`BITMAP_BLOCKS`] block writes on a jump.
//!
//! Packet numbers:
//!
//! - start at **0**: a fresh window accepts 0 (and any other number) once;
//! - are `u64` and never wrap: the sender counts up from 0 and must rekey (a new session,
//!   issue #10) long before 2^64 packets; every value up to and including `u64::MAX` is
//!   an ordinary packet number here, none is reserved;
//! - are accepted iff not seen before and within [`WINDOW`] of the highest accepted one:
//!   `pn > highest` or `highest - pn < WINDOW`, so the oldest acceptable number is
//!   `highest - WINDOW + 1`. Numbers older than that are [`Replay::TooOld`], even if they
//!   were never seen (they may have been, the window no longer knows).
//!
//! [`WINDOW`] is [`BITMAP_BITS`] minus one block: the block holding `highest` is only
//! partly used, so a ring of N bits guarantees N - 64 numbers of history (RFC 6479 §2).
//!
//! Only update the window for a packet whose AEAD tag verified: otherwise a forged packet
//! number near `u64::MAX` would push the window past every real packet. [`ReplayWindow::check`]
//! (no update) is the cheap pre-filter to run before decrypting.

/// Bits in the ring.
pub const BITMAP_BITS: u64 = 2048;
const BLOCK_BITS: u64 = u64::BITS as u64;
/// 64-bit blocks in the ring.
pub const BITMAP_BLOCKS: usize = (BITMAP_BITS / BLOCK_BITS) as usize;
/// Packet numbers of history the window guarantees: `highest - WINDOW + 1 ..= highest`.
pub const WINDOW: u64 = BITMAP_BITS - BLOCK_BITS;

/// Why a packet number was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Within the window and already accepted once.
    Duplicate,
    /// At least [`WINDOW`] below the highest accepted packet number.
    TooOld,
}

/// The receive side's record of which packet numbers it has accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    blocks: [u64; BITMAP_BLOCKS],
    /// Highest accepted packet number; 0 before any (0 itself is then still acceptable,
    /// its bit is clear).
    highest: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// A window that has accepted nothing.
    pub const fn new() -> Self {
        Self { blocks: [0; BITMAP_BLOCKS], highest: 0 }
    }

    /// The highest packet number accepted so far, or 0 if none was.
    pub const fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `pn` would be accepted, without recording it.
    pub fn check(&self, pn: u64) -> Result<(), Replay> {
        if pn > self.highest {
            return Ok(());
        }
        if self.highest - pn >= WINDOW {
            return Err(Replay::TooOld);
        }
        let (block, bit) = locate(pn);
        if self.blocks[block] & bit != 0 { Err(Replay::Duplicate) } else { Ok(()) }
    }

    /// Accepts `pn` if it is new and within the window, and records it; call only once
    /// the packet's tag has verified.
    pub fn check_and_update(&mut self, pn: u64) -> Result<(), Replay> {
        if pn > self.highest {
            // Clear the blocks the window moves onto: those after the highest's block up
            // to and including the new one, at most the whole ring.
            let current = self.highest / BLOCK_BITS;
            let target = pn / BLOCK_BITS;
            let fresh = (target - current).min(BITMAP_BLOCKS as u64);
            for step in 1..=fresh {
                self.blocks[ring_index(current + step)] = 0;
            }
            self.highest = pn;
        } else if self.highest - pn >= WINDOW {
            return Err(Replay::TooOld);
        }
        let (block, bit) = locate(pn);
        if self.blocks[block] & bit != 0 {
            return Err(Replay::Duplicate);
        }
        self.blocks[block] |= bit;
        Ok(())
    }
}

/// Ring slot of the block numbered `block` (= pn / 64).
fn ring_index(block: u64) -> usize {
    // The remainder is below BITMAP_BLOCKS, so it fits any usize.
    (block % BITMAP_BLOCKS as u64) as usize
}

/// Ring slot and bit mask of `pn`.
fn locate(pn: u64) -> (usize, u64) {
    (ring_index(pn / BLOCK_BITS), 1 << (pn % BLOCK_BITS))
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    /// The obviously correct window: every accepted number, and the highest.
    #[derive(Default)]
    struct Model {
        accepted: BTreeSet<u64>,
        highest: u64,
    }

    impl Model {
        fn check_and_update(&mut self, pn: u64) -> Result<(), Replay> {
            if pn <= self.highest && self.highest - pn >= WINDOW {
                return Err(Replay::TooOld);
            }
            if !self.accepted.insert(pn) {
                return Err(Replay::Duplicate);
            }
            self.highest = self.highest.max(pn);
            Ok(())
        }
    }

    /// Accepts every number of `range`, asserting each is new.
    fn fill(window: &mut ReplayWindow, range: impl Iterator<Item = u64>) {
        for pn in range {
            assert_eq!(window.check_and_update(pn), Ok(()), "pn {pn}");
        }
    }

    #[test]
    fn first_packet_zero_then_duplicate() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0), Ok(()));
        assert_eq!(w.check_and_update(0), Ok(()));
        assert_eq!(w.check(0), Err(Replay::Duplicate));
        assert_eq!(w.check_and_update(0), Err(Replay::Duplicate));
        assert_eq!(w.check_and_update(1), Ok(()));
        assert_eq!(w.highest(), 1);
    }

    #[test]
    fn first_packet_not_zero_keeps_the_older_ones_open() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check_and_update(5), Ok(()));
        fill(&mut w, 0..5);
        assert_eq!(w.check_and_update(3), Err(Replay::Duplicate));
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::new();
        fill(&mut w, (0..WINDOW).rev().step_by(3).map(|pn| pn + 10_000));
        for pn in (10_000..10_000 + WINDOW).rev().step_by(3) {
            assert_eq!(w.check_and_update(pn), Err(Replay::Duplicate));
        }
    }

    #[test]
    fn exact_window_edge() {
        let mut w = ReplayWindow::new();
        let h = 10_000;
        w.check_and_update(h).unwrap();
        assert_eq!(w.check(h - WINDOW), Err(Replay::TooOld));
        assert_eq!(w.check_and_update(h - WINDOW), Err(Replay::TooOld));
        assert_eq!(w.check_and_update(h - WINDOW + 1), Ok(()));
        assert_eq!(w.check_and_update(h - WINDOW + 1), Err(Replay::Duplicate));
    }

    #[test]
    fn window_edge_on_every_bit_position() {
        // The highest on each position within its block: the whole guaranteed window is
        // usable, the number just below it is not.
        for offset in 0..BLOCK_BITS {
            let h = 64 * 100 + offset;
            let mut w = ReplayWindow::new();
            fill(&mut w, (h - WINDOW + 1..=h).rev());
            assert_eq!(w.check_and_update(h - WINDOW), Err(Replay::TooOld));
            for pn in h - WINDOW + 1..=h {
                assert_eq!(w.check(pn), Err(Replay::Duplicate), "h {h} pn {pn}");
            }
        }
    }

    #[test]
    fn jumps_clear_exactly_the_blocks_left_behind() {
        let jumps =
            [1, 63, 64, 65, WINDOW - 1, WINDOW, WINDOW + 1, BITMAP_BITS - 1, BITMAP_BITS, BITMAP_BITS + 1, 1_000_000];
        for start in [WINDOW + 17, 64 * 50, 64 * 50 + 63] {
            for jump in jumps {
                let mut w = ReplayWindow::new();
                let mut model = Model::default();
                for pn in 0..=start {
                    assert_eq!(w.check_and_update(pn), model.check_and_update(pn));
                }
                let top = start + jump;
                assert_eq!(w.check_and_update(top), Ok(()));
                model.check_and_update(top).unwrap();
                // Everything in the new window: old ones still duplicates, the gap open.
                for pn in top.saturating_sub(WINDOW + 70)..=top {
                    assert_eq!(w.check(pn), model.clone_check(pn), "start {start} jump {jump} pn {pn}");
                    assert_eq!(w.check_and_update(pn), model.check_and_update(pn));
                }
            }
        }
    }

    impl Model {
        fn clone_check(&self, pn: u64) -> Result<(), Replay> {
            if pn <= self.highest && self.highest - pn >= WINDOW {
                Err(Replay::TooOld)
            } else if self.accepted.contains(&pn) {
                Err(Replay::Duplicate)
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn jump_of_exactly_the_window() {
        let mut w = ReplayWindow::new();
        w.check_and_update(100).unwrap();
        w.check_and_update(100 + WINDOW - 1).unwrap();
        assert_eq!(w.check(100), Err(Replay::Duplicate));
        w.check_and_update(100 + WINDOW).unwrap();
        assert_eq!(w.check(100), Err(Replay::TooOld));
        assert_eq!(w.check_and_update(101), Ok(()));
        w.check_and_update(100 + 2 * WINDOW + 1).unwrap();
        assert_eq!(w.check(101), Err(Replay::TooOld));
        assert_eq!(w.check(100 + WINDOW + 2), Ok(()));
        assert_eq!(w.check(100 + WINDOW + 1), Err(Replay::TooOld));
    }

    #[test]
    fn near_u64_max() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check_and_update(u64::MAX - 1), Ok(()));
        assert_eq!(w.check_and_update(u64::MAX), Ok(()));
        assert_eq!(w.check_and_update(u64::MAX), Err(Replay::Duplicate));
        assert_eq!(w.check_and_update(u64::MAX - 1), Err(Replay::Duplicate));
        assert_eq!(w.check_and_update(u64::MAX - WINDOW + 1), Ok(()));
        assert_eq!(w.check_and_update(u64::MAX - WINDOW), Err(Replay::TooOld));
        assert_eq!(w.check_and_update(0), Err(Replay::TooOld));
        assert_eq!(w.highest(), u64::MAX);
    }

    #[test]
    fn straight_from_zero_to_u64_max() {
        let mut w = ReplayWindow::new();
        fill(&mut w, 0..10);
        assert_eq!(w.check_and_update(u64::MAX), Ok(()));
        assert_eq!(w.check_and_update(9), Err(Replay::TooOld));
        // The ring was cleared: numbers just below the top that share slots with 0..10.
        fill(&mut w, (u64::MAX - 63..u64::MAX).rev());
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// `highest + n`.
        Ahead(u64),
        /// `highest - n`.
        Behind(u64),
        /// A packet number by itself.
        At(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u64..70).prop_map(Step::Ahead),
            2 => (WINDOW - 70..BITMAP_BITS + 70).prop_map(Step::Ahead),
            6 => (0u64..BITMAP_BITS + 70).prop_map(Step::Behind),
            1 => any::<u64>().prop_map(Step::At),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The window agrees with the model on every step, so every number is accepted at
        /// most once, numbers at least `WINDOW` below the highest are refused, and a jump
        /// forgets exactly what fell out of the window.
        #[test]
        fn agrees_with_the_model(
            base in prop_oneof![Just(0u64), Just(u64::MAX - 3 * BITMAP_BITS), any::<u64>()],
            steps in proptest::collection::vec(step(), 1..600),
        ) {
            let mut w = ReplayWindow::new();
            let mut model = Model::default();
            let mut accepted = Vec::new();
            // The first packet at `base`, so the walk starts anywhere in u64.
            prop_assert_eq!(w.check_and_update(base), model.check_and_update(base));
            for step in steps {
                let pn = match step {
                    Step::Ahead(n) => w.highest().saturating_add(n),
                    Step::Behind(n) => w.highest().saturating_sub(n),
                    Step::At(pn) => pn,
                };
                let expected = model.clone_check(pn);
                prop_assert_eq!(w.check(pn), expected, "check {}", pn);
                let got = w.check_and_update(pn);
                prop_assert_eq!(got, model.check_and_update(pn), "update {}", pn);
                prop_assert_eq!(w.highest(), model.highest);
                if got.is_ok() {
                    accepted.push(pn);
                }
            }
            let mut unique = accepted.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), accepted.len());
        }
    }
}
