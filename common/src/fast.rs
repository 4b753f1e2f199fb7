//! The fast path: the multibit trie in front of the LPM tries, its slot encodings and
//! the decoders shared by the kernel and `geodns_maps::fastpath`.

use crate::PrefixValue;

/// Fast path (the multibit trie in front of the LPM tries, computed by
/// `geodns_maps::fastpath`). A slot value is 0 (ask the trie), a leaf ([`FAST_LEAF`]
/// set: the answer itself, see [`fast_leaf`]), or a block of the next 8-bit stride
/// ([`FAST_BLOCK`] set): its word offset in `FAST_BLOCKS_*` is `value & FAST_OFFSET`,
/// and [`FAST_LIST`] says which of two encodings it has.
///
/// `FAST_TOP_*` holds the slots of the first 16 address bits, u32 values two per u64
/// word (the even slot in the low half): IPv4 at slots `0..2^16`, IPv6 at
/// [`FAST_V6_TOP`]`..`. A block of `FAST_BLOCKS_*` (u64 words, [`FAST_PAGE_WORDS`] per
/// element) is the 256 slots of one stride, run-length compressed: the values of its
/// runs of equal slots (run 0 first), and where the runs start. Values are u32 lanes of
/// the words (lane `2 w + 1` is the high half of word `w`). From word `w`:
/// - a bitmap block (more than [`FAST_LIST_STARTS`] runs after the first): words
///   `w..w + 4` are bitmaps, bit `j` of word `k` set where slot `64 k + j` starts a run
///   (bit 0 of word 0 always); byte `k` of word `w + 4` is the number of runs that
///   start before slot `64 k`; run `r` is lane `2 w + FAST_VALUES_LANE + r` (run 0 is
///   the high half of word `w + 4`). See [`fast_run`].
/// - a list block ([`FAST_LIST`]): byte `i` (0..7) of word `w` is the first slot of run
///   `i + 1` (ascending), byte 7 the number `n` of those; run `r` is lane
///   `2 w + FAST_LIST_VALUES_LANE + r`. See [`fast_list_run`]. Most deep IPv6 blocks
///   hold one or two prefixes: 2..4 words instead of 6..7.
pub const FAST_BLOCK: u32 = 0x8000_0000;
/// With [`FAST_BLOCK`]: the block is a list block.
pub const FAST_LIST: u32 = 0x4000_0000;
/// With [`FAST_BLOCK`]: the bits of the block's word offset.
pub const FAST_OFFSET: u32 = 0x3FFF_FFFF;
/// Words of one element of `FAST_BLOCKS_*` (4 KiB, a page of the memory-mapped array).
/// A block never crosses one: the kernel looks up the element of word offset `w` once
/// per stride (`w / FAST_PAGE_WORDS`) and reads the block's words inside it at
/// `w % FAST_PAGE_WORDS` and after, masked.
pub const FAST_PAGE_WORDS: u32 = 512;
/// Slot value flag of a leaf (without [`FAST_BLOCK`]): bits 0..16 are the region, bits
/// 16..24 the matched prefix length (the ECS scope), as [`PrefixValue`]'s first three
/// bytes read little-endian.
pub const FAST_LEAF: u32 = 0x4000_0000;
/// First slot of the IPv6 top in `FAST_TOP_*` (IPv4's is 0).
pub const FAST_V6_TOP: u32 = 1 << 16;
/// Words of `FAST_TOP_*`: 2^16 u32 slots per family, two per word.
pub const FAST_TOP_WORDS: u32 = 1 << 16;
/// Word of a bitmap block's run counts (after the four bitmap words).
pub const FAST_COUNTS_WORD: u32 = 4;
/// u32 lane (from the block's first) of the value of run 0 of a bitmap block.
pub const FAST_VALUES_LANE: u32 = 2 * FAST_COUNTS_WORD + 1;
/// Most run starts (after slot 0) a list block holds.
pub const FAST_LIST_STARTS: usize = 7;
/// u32 lane (from the block's first) of the value of run 0 of a list block.
pub const FAST_LIST_VALUES_LANE: u32 = 2;
/// Strides after the top: IPv4 `a[2]`, `a[3]`; IPv6 `a[2]` .. `a[7]` (down to /64).
pub const FAST_V4_STRIDES: usize = 2;
pub const FAST_V6_STRIDES: usize = 6;

/// The run (0-based, in the whole block) that slot `64 k + j` of a fast-path block lies
/// in, from bitmap word `k` and the counts word (see [`FAST_BLOCK`]).
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn fast_run(bits: u64, counts: u64, k: u32, j: u32) -> u32 {
    let before = (counts >> (8 * (k & 3))) & 0xFF;
    // `j = 63` keeps the whole word: the shift never reaches 64.
    let here = popcount(bits & (u64::MAX >> (63 - (j & 63))));
    (before as u32 + here).wrapping_sub(1)
}

/// The high bit of every byte, and the low bit (SWAR).
const HIGH: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;

/// The run (0-based) that slot `b` of a list block lies in, from its first word: how
/// many of its run starts are `<= b`, compared in all eight bytes at once (SWAR).
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn fast_list_run(head: u64, b: u32) -> u32 {
    let starts = head & 0x00FF_FFFF_FFFF_FFFF;
    let n = (head >> 56) as u32;
    let bb = (b & 0xFF) as u64 * ONES;
    // Per byte: the high bit of `low` says b's low 7 bits >= the start's (no borrow
    // crosses bytes); `ge` adds the high bits: b >= start.
    let low = (bb | HIGH) - (starts & !HIGH);
    let ge = ((bb & !starts) | (!(bb ^ starts) & low)) & HIGH;
    let count = ((ge >> 7).wrapping_mul(ONES) >> 56) as u32;
    // Bytes past the n starts hold 0, and byte 7 was cleared: all 8 - n of them count.
    (count + n).wrapping_sub(8)
}

/// Set bits of `x`, in plain arithmetic (SWAR): BPF has no population count
/// instruction, and userspace walks with the same code.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn popcount(x: u64) -> u32 {
    let x = x - ((x >> 1) & 0x5555_5555_5555_5555);
    let x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    let x = (x + (x >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    (x.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

/// The u32 lane (counted from the page's first word) that holds the slot value for
/// `byte` in the block starting at word `i` of its page; `list` is the block's encoding
/// (bit 30 of the slot value that pointed to it) and `word(x)` reads word `x` of the
/// page. The kernel and `geodns_maps::fastpath` both decode blocks with this.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub fn fast_block_lane(list: bool, i: u32, byte: u8, word: impl Fn(u32) -> u64) -> u32 {
    if list {
        let run = fast_list_run(word(i), u32::from(byte));
        (2 * i + FAST_LIST_VALUES_LANE).wrapping_add(run)
    } else {
        let k = u32::from(byte >> 6);
        let run = fast_run(
            word(i + k),
            word(i + FAST_COUNTS_WORD),
            k,
            u32::from(byte & 63),
        );
        (2 * i + FAST_VALUES_LANE).wrapping_add(run)
    }
}

/// The slot value of a leaf.
#[must_use]
pub const fn fast_leaf_value(v: PrefixValue) -> u32 {
    FAST_LEAF | (v.prefix_len as u32) << 16 | v.region as u32
}

/// What a final slot value answers: `None` (ask the trie) for 0 or a block.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the region and length are the low bytes"
)]
pub const fn fast_leaf(value: u32) -> Option<PrefixValue> {
    if value & (FAST_LEAF | FAST_BLOCK) != FAST_LEAF {
        return None;
    }
    Some(PrefixValue {
        region: value as u16,
        prefix_len: (value >> 16) as u8,
        _pad: 0,
    })
}
