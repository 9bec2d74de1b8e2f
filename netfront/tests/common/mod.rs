//! Helpers shared by the integration tests.

/// `len` pseudo-random bytes from `seed` (xorshift), the same for the same seed.
pub fn data(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
