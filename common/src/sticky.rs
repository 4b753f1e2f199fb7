//! The `sticky` policy: the node of a client network chosen by weighted rendezvous
//! hashing (highest random weight) of the client prefix, the same in the kernel and in
//! userspace.
//!
//! Every slot of an answer set draws `u = hash(client prefix, node tag)` and scores
//! `x = -ln(u) / weight`; the smallest `x` wins. `x` is exponentially distributed with
//! rate `weight`, so a slot wins with probability `weight / total` and, since a
//! slot's draw depends only on the client and its own node, removing a node moves
//! exactly the clients it had (each to its second-best slot), and adding one takes
//! only the clients it wins. `-ln(u)` is computed as `-log2(u)` (the same order) in
//! 16.16 fixed point with integer arithmetic only: BPF has no floating point, no
//! conditional moves and no count-leading-zeros, so the highest bit comes from a smear
//! and a popcount and the fraction from a 257-entry table (built at compile time by
//! exact squaring) with linear interpolation.

use crate::{popcount, MAX_ANSWER_ADDRS};

/// Answer-set policy: the node is chosen by the client prefix (see [`sticky_slot`]).
pub const POLICY_STICKY: u8 = 2;

/// Bits of an IPv4 client address that choose its sticky node: the ECS address (or the
/// packet's source) truncated to a /24, the usual resolver and ECS granularity.
pub const STICKY_PREFIX_V4: u8 = 24;
/// The same for IPv6: a /56, a customer site.
pub const STICKY_PREFIX_V6: u8 = 56;

/// Seeds that keep the two families' keys apart.
const SEED_V4: u64 = 0x5717_C4F0_0000_0004;
const SEED_V6: u64 = 0x5717_C4F0_0000_0006;

/// The `SplitMix64` finalizer: a bijective 64-bit mixer.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn sticky_mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sticky key of an IPv4 client: its /24 ([`STICKY_PREFIX_V4`]), mixed.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn sticky_key_v4(addr: [u8; 4]) -> u64 {
    let prefix = u32::from_be_bytes(addr) & (u32::MAX << (32 - STICKY_PREFIX_V4));
    sticky_mix(prefix as u64 ^ SEED_V4)
}

/// The sticky key of an IPv6 client: its /56 ([`STICKY_PREFIX_V6`]), mixed.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn sticky_key_v6(addr: &[u8; 16]) -> u64 {
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    sticky_mix((hi & (u64::MAX << (64 - STICKY_PREFIX_V6))) ^ SEED_V6)
}

/// The ECS scope of a sticky answer: the matched prefix, but never wider than the
/// hashed prefix (the node depends on every bit of it).
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn sticky_scope(matched: u8, v6: bool) -> u8 {
    let hashed = if v6 {
        STICKY_PREFIX_V6
    } else {
        STICKY_PREFIX_V4
    };
    if matched > hashed {
        matched
    } else {
        hashed
    }
}

/// A node's tag in a sticky answer set: a hash of its name, so a node keeps its
/// clients across reloads that add, remove or rename other nodes. Never 0.
#[must_use]
pub fn sticky_tag(node: &str) -> u32 {
    let h = node
        .bytes()
        .fold(0x6E6F_6465_u64, |h, b| sticky_mix(h ^ u64::from(b)));
    ((h >> 32) as u32) | 1
}

/// The fraction bits (16.16) of `log2(m / 2^31)` for a mantissa `m` in `[2^31, 2^32)`,
/// by repeated squaring: exact to the last bit, but 16 dependent multiplications, so
/// only [`LOG2_FRAC`] is built with it.
const fn log2_frac_q16(mut mant: u64) -> u32 {
    let mut frac = 0u32;
    let mut step = 0;
    // Bound: 16 fraction bits.
    while step < 16 {
        // mant < 2^32, so its square < 2^64; squared, 1.f lies in [1, 4).
        mant = (mant * mant) >> 31;
        let bit = mant >> 32;
        mant >>= bit;
        frac = (frac << 1) | bit as u32;
        step += 1;
    }
    frac
}

/// `log2(1 + i / 256)` in 16.16 fixed point for `i` in `0..=256` (the last is 1.0).
const fn log2_table() -> [u32; 257] {
    let mut t = [0u32; 257];
    let mut i = 0;
    while i < 256 {
        t[i] = log2_frac_q16(((256 + i) as u64) << 23);
        i += 1;
    }
    t[256] = 1 << 16;
    t
}

/// See [`log2_table`]; a `static`, so the kernel reads it from its read-only data (1 KiB,
/// too big for the BPF stack).
pub static LOG2_FRAC: [u32; 257] = log2_table();

/// `-log2(u)` for `u = (h | 1) / 2^32`, in 16.16 fixed point (at most `32 << 16`,
/// at least 1): the integer part from the position of the highest set bit, the
/// fraction from [`LOG2_FRAC`] at the mantissa's next 8 bits, interpolated linearly
/// over the 16 after them (log2's curvature over a 1/256 step adds below 2^-17).
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub fn neg_log2_q16(h: u32) -> u64 {
    let value = u64::from(h | 1);
    let mut smear = value | (value >> 1);
    smear |= smear >> 2;
    smear |= smear >> 4;
    smear |= smear >> 8;
    smear |= smear >> 16;
    // floor(log2 value), 0..=31.
    let whole = u64::from(popcount(smear)) - 1;
    // The mantissa in [2^31, 2^32): 1.f in Q31.
    let mant = value << (31 - whole);
    let idx = ((mant >> 23) & 0xFF) as usize;
    let low = (mant >> 7) & 0xFFFF;
    let lo = u64::from(LOG2_FRAC[idx & 0xFF]);
    let hi = u64::from(LOG2_FRAC[(idx & 0xFF) + 1]);
    let frac = lo + (((hi - lo) * low) >> 16);
    // log2(value) = whole + 0.frac, and -log2(value / 2^32) = 32 - whole - 0.frac.
    ((32 - whole) << 16) - frac
}

/// The draw of one slot: `u` (as 32 bits) for the client key and the slot's node tag.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn sticky_draw(key: u64, tag: u32) -> u32 {
    (sticky_mix(key ^ (tag as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 32) as u32
}

/// The slot of a sticky answer set that client `key` ([`sticky_key_v4`],
/// [`sticky_key_v6`]) gets among the first `n` slots: the smallest `-log2(u) / weight`,
/// weights from the cumulative weights `cum`, draws from the node tags `tags` (slots
/// of one node share its tag and draw, so the first of them wins and a node weighs
/// its own weight however many addresses it has). Ties go to the lower slot; a slot of
/// weight 0 never wins over one with weight. Bound: [`MAX_ANSWER_ADDRS`] slots.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub fn sticky_slot(
    key: u64,
    cum: &[u32; MAX_ANSWER_ADDRS],
    tags: &[u32; MAX_ANSWER_ADDRS],
    n: usize,
) -> usize {
    let mut best = 0usize;
    // Start above any score (l <= 32 << 16) with weight 0: the first slot of positive
    // weight replaces it.
    let mut best_l: u64 = 1 << 22;
    let mut best_w: u64 = 0;
    let mut prev = 0u32;
    for i in 0..MAX_ANSWER_ADDRS {
        if i >= n {
            break;
        }
        let w = u64::from(cum[i].wrapping_sub(prev));
        prev = cum[i];
        let l = neg_log2_q16(sticky_draw(key, tags[i]));
        // l / w < best_l / best_w, multiplied out: l <= 2^21, w < 2^32.
        if l * best_w < best_l * w {
            best = i;
            best_l = l;
            best_w = w;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn neg_log2_matches_floating_point() {
        let mut h = 1u32;
        for _ in 0..100_000 {
            h = h.wrapping_mul(0x9E37_79B1).wrapping_add(0x7F4A_7C15);
            let want = -((f64::from(h | 1)) / 4_294_967_296.0).log2();
            let got = f64::from(u32::try_from(neg_log2_q16(h)).expect("small")) / 65536.0;
            assert!((got - want).abs() < 3.0 / 65536.0, "h {h}: {got} vs {want}");
        }
        assert_eq!(neg_log2_q16(0), 32 << 16);
        assert!(neg_log2_q16(u32::MAX) >= 1);
    }

    #[test]
    fn scope_is_never_wider_than_the_hashed_prefix() {
        assert_eq!(sticky_scope(16, false), 24);
        assert_eq!(sticky_scope(25, false), 25);
        assert_eq!(sticky_scope(32, true), 56);
        assert_eq!(sticky_scope(120, true), 120);
    }

    #[test]
    fn keys_ignore_bits_past_the_prefix() {
        assert_eq!(
            sticky_key_v4([192, 0, 2, 1]),
            sticky_key_v4([192, 0, 2, 200])
        );
        assert_ne!(sticky_key_v4([192, 0, 2, 1]), sticky_key_v4([192, 0, 3, 1]));
        let mut a = [0x20, 1, 0xd, 0xb8, 0, 0, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let k = sticky_key_v6(&a);
        a[7] = 0xff;
        a[15] = 9;
        assert_eq!(k, sticky_key_v6(&a));
        a[6] = 0x13;
        assert_ne!(k, sticky_key_v6(&a));
    }
}
