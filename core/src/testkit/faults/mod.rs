//! Fault-injecting layers over real engines, one per seam: [`FaultyIndex`] (fails, hangs
//! or half-applies index calls), [`FaultyStore`] (fails writes, before or after the
//! engine applied them) and [`FaultyQueue`] (unavailable for a while). Each passes
//! every call it does not fault to the engine underneath and never answers in the
//! engine's place; which calls fault is drawn from a seeded sequence ([`Dice`]), so a
//! failing run can be repeated from its seed.

mod index;
mod queue;
mod store;

pub use index::{FaultyIndex, IndexFaultCounts, IndexFaults};
pub use queue::FaultyQueue;
pub use store::{FaultyStore, StoreFaultCounts, StoreFaults, WriteFault};

use parking_lot::Mutex;

/// A seeded pseudo-random sequence of draws (splitmix64). Concurrent callers share one
/// sequence, so the same seed gives the same sequence of outcomes; which call gets
/// which outcome still depends on how the calls interleave.
#[derive(Debug)]
pub struct Dice {
    state: Mutex<u64>,
}

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice {
            state: Mutex::new(seed),
        }
    }

    /// Starts the sequence over from `seed`.
    pub fn reseed(&self, seed: u64) {
        *self.state.lock() = seed;
    }

    /// The next draw.
    pub fn next(&self) -> u64 {
        let mut s = self.state.lock();
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `percent` / 100 (never for 0, always for 100 or more).
    pub fn percent(&self, percent: u64) -> bool {
        percent > 0 && (percent >= 100 || self.next() % 100 < percent)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::Dice;

    #[test]
    fn a_seed_repeats_its_sequence_and_shares_come_out_near_their_percent() {
        let (a, b) = (Dice::new(7), Dice::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        let c = Dice::new(8);
        assert_ne!(xs, (0..100).map(|_| c.next()).collect::<Vec<_>>());
        let d = Dice::new(42);
        let hits = (0..10_000).filter(|_| d.percent(30)).count();
        assert!((2_700..3_300).contains(&hits), "{hits} of 10000 at 30%");
        assert!(!(0..100).any(|_| d.percent(0)));
        assert!((0..100).all(|_| d.percent(100)));
    }
}
