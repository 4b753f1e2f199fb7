//! `SplitMix64` (Steele, Lea and Flood, 2014): the mixing step both of our random
//! sources use, the per-query [`crate::SplitMix`] and the synthetic-database generator.

/// The increment between states.
pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The output for a state.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `x` scaled into `[0, n)` (Lemire's multiply-shift; bias negligible for our `n`).
pub(crate) fn scale(x: u64, n: u64) -> u64 {
    u64::try_from((u128::from(x) * u128::from(n)) >> 64).unwrap_or(0)
}
