//! RFC 1071 checksums summed 8 bytes per load.

use crate::*;

/// The two 32-bit halves of a word, added (for a one's-complement sum in 64 bits).
#[inline(always)]
pub(crate) fn halves(w: u64) -> u64 {
    (w >> 32) + (w & 0xFFFF_FFFF)
}

/// Sum of `len` packet bytes at `offset` as little-endian words (see [`finish_reply`]),
/// 8 bytes per load, then 4, 2 and 1.
#[inline(always)]
pub(crate) fn sum_words(ctx: &XdpContext, offset: usize, len: usize) -> Result<u64, Pass> {
    let mut sum: u64 = 0;
    // Bound: MAX_CSUM_WORDS / 4 words of 8 bytes.
    for i in 0..MAX_CSUM_WORDS / 4 {
        let at = 8 * i;
        if at + 8 > len {
            break;
        }
        let p = ptr_at::<[u8; 8]>(ctx, offset + at)?;
        // SAFETY: ptr_at checked the 8 bytes.
        sum += halves(unsafe { pkt::ld64(p.cast()) });
    }
    // The last 0..=7 bytes; a last odd byte is the first (low, in memory order) of
    // its 16-bit word.
    let mut at = offset + (len & !7);
    if len & 4 != 0 {
        let p = ptr_at::<[u8; 4]>(ctx, at)?;
        // SAFETY: ptr_at checked the 4 bytes.
        sum += u64::from(unsafe { pkt::ld32(p.cast()) });
        at += 4;
    }
    if len & 2 != 0 {
        let p = ptr_at::<[u8; 2]>(ctx, at)?;
        // SAFETY: ptr_at checked the 2 bytes.
        sum += u64::from(unsafe { pkt::ld16(p.cast()) });
        at += 2;
    }
    if len & 1 != 0 {
        sum += u64::from(read_u8(ctx, at)?);
    }
    Ok(sum)
}

/// The sum of bytes that lie `offset` bytes after the start of the summed range,
/// from `sum`, their sum as little-endian words counted from their own first byte: at an
/// odd offset each byte sits in the other half of its 16-bit word, which is the sum
/// shifted by 8 bits (modulo 0xFFFF, 2^16 is 1). `sum` stays far below 2^56.
#[inline(always)]
pub(crate) fn at_parity(sum: u64, offset: usize) -> u64 {
    if offset & 1 == 0 {
        sum
    } else {
        sum << 8
    }
}

/// Folds a one's-complement sum to 16 bits.
#[inline(always)]
pub(crate) fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    u16::try_from(sum).unwrap_or(0xFFFF)
}
