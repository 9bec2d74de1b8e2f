//! Everything for host tests in one place (feature `sim`; always in this crate's own tests): the
//! simulated xenstored ([`Sim`], [`Store`]), the simulated platform ([`SimHal`], [`SimState`])
//! and the deterministic random numbers the tests share ([`Rng`]).
#![forbid(unsafe_code)]

extern crate alloc;

pub use crate::hal::{SimHal, SimState};
pub use crate::xenstore::sim::{Sim, Store};

use alloc::vec::Vec;

/// xorshift64 (13, 7, 17): deterministic test data and workloads, the same sequence for the same
/// seed on every run and host. Not for anything that needs unpredictability.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift never leaves 0).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next value.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn rng_is_xorshift64_and_stays_in_range() {
        let mut r = Rng(1);
        // x = 1: 1 ^ 1<<13 = 0x2001; ^ >>7 = 0x2001 ^ 0x40 = 0x2041; ^ <<17 = 0x4082_2041.
        assert_eq!(r.next(), 0x4082_2041);
        let mut r = Rng::new(0);
        assert_ne!(r.0, 0);
        for n in [1u64, 2, 7, 1000] {
            assert!((0..100).all(|_| r.below(n) < n));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(Rng::new(5).bytes(16), Rng::new(5).bytes(16));
        assert_ne!(Rng::new(5).bytes(16), Rng::new(6).bytes(16));
    }
}
