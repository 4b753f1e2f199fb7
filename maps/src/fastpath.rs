//! The fast path in front of the kernel's LPM tries: a multibit trie of compressed
//! 256-slot blocks (the layout is described at `geodns_common::FAST_BLOCK`).
//!
//! Both families use one structure: a direct top array of the first 16 address bits,
//! then one block per 8-bit stride: IPv4 `a[2]` (the /24 slots of DIR-24-8) and `a[3]`,
//! IPv6 `a[2]` .. `a[7]`, down to /64. A slot holds a 32-bit value: "ask the trie", a
//! leaf (region and the exact matched prefix length, so the ECS scope stays exact), or
//! the next block. Prefixes longer than /64, and blocks beyond the array, make a slot
//! ask the trie.
//!
//! Why strides for IPv6: `GeoIP` tables hold most IPv6 networks at /32../48 with a long
//! tail to /64, so a hash on one fixed length resolves too few clients, while strides
//! resolve every prefix up to /64 without expanding a prefix into more than 256 slots
//! at any level. Why compressed: 256 u32 slots per block would need ~400 MiB for the
//! 500k-prefix IPv6 bench table, and neighbouring slots mostly repeat. A block keeps
//! where its runs of equal values start and the run values, back to back: a list of up
//! to 7 start bytes in one word for small blocks (most deep IPv6 ones: 2..5 words), or
//! four 64-bit bitmaps and per-quarter run counts (5 words + 1 per two runs); a lookup
//! reads the header and one value, usually in one cache line, never across a page. The
//! same compression shrinks the IPv4 /24 slots from 32 MiB of u16 to ~6 MiB.
//!
//! Userspace computes every slot; [`FastTable::lookup_v4`]/[`FastTable::lookup_v6`]
//! walk them exactly as the kernel does (the same [`fast_block_lane`] and masks), and the tests check them against a brute-force longest-prefix match.
use geodns_common::{
    fast_block_lane, fast_leaf, fast_leaf_value, PrefixValue, FAST_BLOCK, FAST_COUNTS_WORD,
    FAST_LIST, FAST_LIST_STARTS, FAST_OFFSET, FAST_PAGE_WORDS, FAST_TOP_WORDS, FAST_V4_STRIDES,
    FAST_V6_STRIDES, FAST_V6_TOP,
};

/// Slots per block (an 8-bit stride).
pub const BLOCK_SLOTS: usize = 256;
/// Address bits the top array resolves.
pub const TOP_BITS: u32 = 16;
/// Deepest prefix length the IPv6 blocks resolve; longer prefixes go to the trie.
pub const V6_MAX_DEPTH: u32 = 64;

/// What one family's prefixes took, and what did not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyStats {
    /// Blocks in use, and the words they take (with the padding that keeps each in
    /// one page).
    pub blocks: usize,
    pub words: usize,
    /// Blocks that were needed but found the array full: the slot that would point to
    /// one asks the trie.
    pub overflow: usize,
}

/// The kernel arrays of both families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FastTable {
    /// `FAST_TOP_*` slots: IPv4 then IPv6, 2^16 each (the kernel array packs them two
    /// per u64, see [`Self::top_words`]).
    pub top: Vec<u32>,
    /// `FAST_BLOCKS_*`: the blocks, back to back but never across a
    /// [`FAST_PAGE_WORDS`] boundary, padded to whole pages (see [`Self::pages`]).
    pub blocks: Vec<u64>,
    pub v4: FamilyStats,
    pub v6: FamilyStats,
}

/// A prefix with its address left-aligned in a `u128` (IPv4 in the top 32 bits) and
/// its leaf value.
#[derive(Clone, Copy, Debug)]
struct P {
    addr: u128,
    len: u32,
    value: u32,
}

impl FastTable {
    /// Builds both families from the prefix lists the kernel tries hold, in at most
    /// `max_words` block words. Never fails: a block that does not fit leaves its slot
    /// asking the trie (counted in the stats).
    #[must_use]
    pub fn build(
        v4: &[([u8; 4], u8, PrefixValue)],
        v6: &[([u8; 16], u8, PrefixValue)],
        max_words: usize,
    ) -> Self {
        let p4: Vec<P> = v4
            .iter()
            .filter(|(_, l, _)| *l <= 32)
            .map(|(a, l, v)| P {
                addr: u128::from(u32::from_be_bytes(*a)) << 96,
                len: u32::from(*l),
                value: fast_leaf_value(*v),
            })
            .collect();
        let p6: Vec<P> = v6
            .iter()
            .filter(|(_, l, _)| *l <= 128)
            .map(|(a, l, v)| P {
                addr: u128::from_be_bytes(*a),
                len: u32::from(*l),
                value: fast_leaf_value(*v),
            })
            .collect();
        let mut b = Builder {
            blocks: Vec::new(),
            max_words: max_words.min(FAST_OFFSET as usize + 1),
            max_depth: 32,
            stats: FamilyStats::default(),
        };
        let mut top = b.family(p4);
        let v4 = std::mem::take(&mut b.stats);
        b.max_depth = V6_MAX_DEPTH;
        top.extend(b.family(p6));
        b.blocks
            .resize(b.blocks.len().next_multiple_of(FAST_PAGE_WORDS as usize), 0);
        Self {
            top,
            blocks: b.blocks,
            v4,
            v6: b.stats,
        }
    }

    /// The kernel's walk for an IPv4 address: `None` means "ask the trie".
    #[must_use]
    pub fn lookup_v4(&self, a: [u8; 4]) -> Option<PrefixValue> {
        self.walk_v4(a).0
    }

    /// The kernel's walk for an IPv6 address: `None` means "ask the trie".
    #[must_use]
    pub fn lookup_v6(&self, a: [u8; 16]) -> Option<PrefixValue> {
        self.walk_v6(a).0
    }

    /// How many blocks the kernel reads for an IPv4 address after its top slot: the
    /// reads that miss the cache when clients come from everywhere (the top array is
    /// 256 KiB per family and mostly cached; the blocks are megabytes).
    #[must_use]
    pub fn block_reads_v4(&self, a: [u8; 4]) -> usize {
        self.walk_v4(a).1
    }

    /// [`Self::block_reads_v4`] for an IPv6 address.
    #[must_use]
    pub fn block_reads_v6(&self, a: [u8; 16]) -> usize {
        self.walk_v6(a).1
    }

    fn walk_v4(&self, a: [u8; 4]) -> (Option<PrefixValue>, usize) {
        let top = u32::from(u16::from_be_bytes([a[0], a[1]]));
        self.walk(top, &a[2..2 + FAST_V4_STRIDES])
    }

    fn walk_v6(&self, a: [u8; 16]) -> (Option<PrefixValue>, usize) {
        let top = FAST_V6_TOP + u32::from(u16::from_be_bytes([a[0], a[1]]));
        self.walk(top, &a[2..2 + FAST_V6_STRIDES])
    }

    /// `fast_walk` of xdp-dns, step for step, on the words the kernel holds; with the
    /// number of blocks it read.
    fn walk(&self, top: u32, bytes: &[u8]) -> (Option<PrefixValue>, usize) {
        // The kernel reads half of a packed word: the same slot.
        let Some(&first) = usize::try_from(top).ok().and_then(|t| self.top.get(t)) else {
            return (None, 0);
        };
        let mut value = first;
        let mut reads = 0;
        for &byte in bytes {
            if value & FAST_BLOCK == 0 {
                break;
            }
            let w = value & FAST_OFFSET;
            let Some(page) = usize::try_from(w / FAST_PAGE_WORDS)
                .ok()
                .and_then(|p| self.pages().nth(p))
            else {
                return (None, reads);
            };
            reads += 1;
            // Word `x` of the page, masked as the kernel masks it.
            let word = |x: u32| page[(x % FAST_PAGE_WORDS) as usize];
            let i = w % FAST_PAGE_WORDS;
            let lane = fast_block_lane(value & FAST_LIST != 0, i, byte, word);
            value = half(word(lane >> 1), lane);
        }
        (fast_leaf(value), reads)
    }

    /// The elements of `FAST_BLOCKS_*`: [`FAST_PAGE_WORDS`] words each (`blocks` ends
    /// on a whole one).
    pub fn pages(&self) -> impl Iterator<Item = &[u64]> {
        self.blocks.chunks_exact(FAST_PAGE_WORDS as usize)
    }

    /// The top slots as the kernel array holds them: two per u64, the even slot in the
    /// low half.
    #[must_use]
    pub fn top_words(&self) -> Vec<u64> {
        self.top
            .chunks(2)
            .map(|c| u64::from(c[0]) | c.get(1).map_or(0, |hi| u64::from(*hi) << 32))
            .collect()
    }
}

/// Lane `lane & 1` of `word` (the kernel's `(word >> 32 * (lane & 1)) as u32`).
fn half(word: u64, lane: u32) -> u32 {
    u32::try_from((word >> (32 * (lane & 1))) & 0xFFFF_FFFF).unwrap_or(0)
}

/// Words of `FAST_TOP_*` both families take.
pub const TOP_WORDS: usize = FAST_TOP_WORDS as usize;

struct Builder {
    blocks: Vec<u64>,
    max_words: usize,
    /// Deepest prefix length the family's blocks resolve.
    max_depth: u32,
    /// The family being built.
    stats: FamilyStats,
}

/// The stride of `addr` that starts at `bit`.
fn byte_at(addr: u128, bit: u32) -> usize {
    usize::from(addr.to_be_bytes()[(bit / 8) as usize])
}

impl Builder {
    /// The family's 2^16 top slots (its blocks go to `self.blocks`).
    fn family(&mut self, mut prefixes: Vec<P>) -> Vec<u32> {
        // Address order, shorter first at the same address: a prefix comes after every
        // prefix that contains it, so painting in this order lets the longest win.
        prefixes.sort_by_key(|p| (p.addr, p.len));
        let mut top = vec![0u32; 1 << TOP_BITS];
        for p in prefixes.iter().filter(|p| p.len <= TOP_BITS) {
            let first = usize::try_from(p.addr >> (128 - TOP_BITS)).unwrap_or(0);
            top[first..first + (1 << (TOP_BITS - p.len))].fill(p.value);
        }
        let mut rest = &prefixes[..];
        while let Some(p) = rest.first() {
            // The prefixes inside this top slot are the next ones in address order.
            let t = p.addr >> (128 - TOP_BITS);
            let n = rest
                .iter()
                .take_while(|q| q.addr >> (128 - TOP_BITS) == t)
                .count();
            let (inside, after) = rest.split_at(n);
            rest = after;
            if inside.iter().any(|q| q.len > TOP_BITS) {
                let t = usize::try_from(t).unwrap_or(0);
                top[t] = self.block(inside, TOP_BITS, top[t]);
            }
        }
        top
    }

    /// The value of a slot (at `bit` bits) that longer prefixes split: a new block for
    /// the stride at `bit`, or one value when the block would hold nothing else.
    fn block(&mut self, prefixes: &[P], bit: u32, value: u32) -> u32 {
        let mut slots = [value; BLOCK_SLOTS];
        let end = bit + 8;
        for p in prefixes.iter().filter(|p| p.len > bit && p.len <= end) {
            let first = byte_at(p.addr, bit);
            slots[first..first + (1 << (end - p.len))].fill(p.value);
        }
        // Longer prefixes: a block of the next stride for each slot they fall in.
        let mut rest = prefixes;
        while let Some(p) = rest.first() {
            let byte = byte_at(p.addr, bit);
            let n = rest
                .iter()
                .take_while(|q| byte_at(q.addr, bit) == byte)
                .count();
            let (inside, after) = rest.split_at(n);
            rest = after;
            if inside.iter().all(|q| q.len <= end) {
                continue;
            }
            slots[byte] = if end >= self.max_depth {
                // The blocks cannot tell these apart: this slot asks the trie.
                0
            } else {
                self.block(inside, end, slots[byte])
            };
        }
        if slots.iter().all(|s| *s == slots[0] && s & FAST_BLOCK == 0) {
            return slots[0];
        }
        let (words, list) = encode(&slots);
        // A block never crosses a page (see `geodns_common::FAST_PAGE_WORDS`).
        let page = FAST_PAGE_WORDS as usize;
        let mut at = self.blocks.len();
        if at % page + words.len() > page {
            at = at.next_multiple_of(page);
        }
        if at + words.len() > self.max_words {
            self.stats.overflow += 1;
            return 0;
        }
        self.stats.words += at + words.len() - self.blocks.len();
        self.blocks.resize(at, 0);
        self.blocks.extend_from_slice(&words);
        self.stats.blocks += 1;
        let kind = if list {
            FAST_BLOCK | FAST_LIST
        } else {
            FAST_BLOCK
        };
        kind | u32::try_from(at).unwrap_or(0)
    }
}

/// A block's words (see `geodns_common::FAST_BLOCK`), and whether it is a list block.
fn encode(slots: &[u32; BLOCK_SLOTS]) -> (Vec<u64>, bool) {
    let starts: Vec<usize> = (1..BLOCK_SLOTS)
        .filter(|&i| slots[i] != slots[i - 1])
        .collect();
    let values = std::iter::once(slots[0]).chain(starts.iter().map(|&i| slots[i]));
    let (mut words, list) = if starts.len() <= FAST_LIST_STARTS {
        let mut head = (starts.len() as u64) << 56;
        for (i, s) in starts.iter().enumerate() {
            head |= (*s as u64) << (8 * i);
        }
        (vec![head], true)
    } else {
        let mut words = vec![0u64; FAST_COUNTS_WORD as usize + 1];
        words[0] = 1;
        for s in &starts {
            words[s / 64] |= 1 << (s % 64);
            // Byte k of the counts: runs that start before slot 64 k (run 0 included).
            for k in (s / 64 + 1)..4 {
                words[FAST_COUNTS_WORD as usize] += 1 << (8 * k);
            }
        }
        for k in 1..4 {
            words[FAST_COUNTS_WORD as usize] += 1 << (8 * k);
        }
        (words, false)
    };
    // Values from the lane after the header: a bitmap block's header ends in the low
    // half of its counts word, a list block's fills its word.
    let mut lanes: Vec<u32> = Vec::new();
    if !list {
        let counts = words.pop().unwrap_or(0);
        lanes.push(u32::try_from(counts & 0xFFFF_FFFF).unwrap_or(0));
    }
    lanes.extend(values);
    for pair in lanes.chunks(2) {
        words.push(u64::from(pair[0]) | pair.get(1).map_or(0, |hi| u64::from(*hi) << 32));
    }
    (words, list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geodns_common::{popcount, FAST_LEAF};

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn pv(region: u16, len: u32) -> PrefixValue {
        PrefixValue {
            region,
            prefix_len: u8::try_from(len).expect("len"),
            _pad: 0,
        }
    }

    /// Big enough for every test table.
    const ROOMY: usize = 1 << 26;

    fn lpm(prefixes: &[(u128, u32, PrefixValue)], addr: u128) -> Option<PrefixValue> {
        prefixes
            .iter()
            .filter(|(a, l, _)| *l == 0 || (addr ^ a) >> (128 - l) == 0)
            .max_by_key(|(_, l, _)| *l)
            .map(|(_, _, v)| *v)
    }

    /// Random nested prefixes: children are carved out of earlier ones, so the table
    /// has real nesting at every depth.
    fn table(rng: &mut Rng, n: usize, max: u32, min: u32) -> Vec<(u128, u32, PrefixValue)> {
        let mut out: Vec<(u128, u32, PrefixValue)> = vec![(0, 0, pv(0, 0))];
        let mut seen = std::collections::HashSet::from([(0, 0)]);
        while out.len() < n {
            let parent = out[usize::try_from(rng.next() % out.len() as u64).expect("idx")];
            if parent.1 >= max {
                continue;
            }
            let extra = 1 + u32::try_from(rng.next() % 24).expect("bits");
            let len = (parent.1 + extra).clamp(min, max);
            let bits = u128::from(rng.next()) << 64 | u128::from(rng.next());
            let keep = if parent.1 == 0 {
                0
            } else {
                u128::MAX << (128 - parent.1)
            };
            let m = u128::MAX << (128 - len);
            let addr = (parent.0 & keep) | (bits & !keep & m);
            let region = u16::try_from(rng.next() % 50).expect("region");
            if seen.insert((addr, len)) {
                out.push((addr, len, pv(region, len)));
            }
        }
        out.sort_by_key(|p| (p.0, p.1));
        out
    }

    /// Probe addresses: random, plus the first and last address of every prefix and
    /// their neighbours.
    fn probes(rng: &mut Rng, prefixes: &[(u128, u32, PrefixValue)], width: u32) -> Vec<u128> {
        let top = if width == 32 {
            u128::from(u32::MAX) << 96
        } else {
            u128::MAX
        };
        let step = 1u128 << (128 - width);
        let mut out = Vec::new();
        for (a, l, _) in prefixes {
            let last = a | (!(if *l == 0 { 0 } else { u128::MAX << (128 - l) }) & top);
            out.extend([
                *a,
                last,
                a.wrapping_sub(step) & top,
                last.wrapping_add(step) & top,
            ]);
        }
        for _ in 0..20_000 {
            out.push((u128::from(rng.next()) << 64 | u128::from(rng.next())) & top);
        }
        out
    }

    fn lookup(t: &FastTable, width: u32, addr: u128) -> Option<PrefixValue> {
        if width == 32 {
            t.lookup_v4(u32::try_from(addr >> 96).expect("v4").to_be_bytes())
        } else {
            t.lookup_v6(addr.to_be_bytes())
        }
    }

    fn build(width: u32, prefixes: &[(u128, u32, PrefixValue)], cap: usize) -> FastTable {
        if width == 32 {
            let v4: Vec<_> = prefixes
                .iter()
                .map(|(a, l, v)| {
                    (
                        (u32::try_from(a >> 96).expect("v4")).to_be_bytes(),
                        u8::try_from(*l).expect("l"),
                        *v,
                    )
                })
                .collect();
            FastTable::build(&v4, &[], cap)
        } else {
            let v6: Vec<_> = prefixes
                .iter()
                .map(|(a, l, v)| (a.to_be_bytes(), u8::try_from(*l).expect("l"), *v))
                .collect();
            FastTable::build(&[], &v6, cap)
        }
    }

    /// Builds a random table and checks every probe against brute force; returns the
    /// table and how many probes asked the trie.
    fn check(width: u32, max: u32, n: usize, seed: u64, cap: usize) -> (FastTable, usize) {
        let mut rng = Rng(seed);
        let min = if width == 32 { 8 } else { 16 };
        let prefixes = table(&mut rng, n, max, min);
        let t = build(width, &prefixes, cap);
        let stats = if width == 32 { t.v4 } else { t.v6 };
        let deepest = if width == 32 { 32 } else { V6_MAX_DEPTH };
        let mut to_trie = 0;
        for addr in probes(&mut rng, &prefixes, width) {
            let want = lpm(&prefixes, addr);
            if let Some(v) = lookup(&t, width, addr) {
                assert_eq!(Some(v), want, "address {addr:#x}");
            } else {
                // "Ask the trie" only where the blocks gave up: something did not fit,
                // or a prefix longer than they resolve covers the address.
                to_trie += 1;
                let too_long = prefixes
                    .iter()
                    .any(|(a, l, _)| *l > deepest && (addr ^ a) >> (128 - deepest) == 0);
                assert!(
                    stats.overflow > 0 || too_long,
                    "address {addr:#x} sent to the trie without cause"
                );
            }
        }
        (t, to_trie)
    }

    #[test]
    fn v4_agrees_with_brute_force() {
        let (t, to_trie) = check(32, 32, 3000, 7, ROOMY);
        assert_eq!(t.v4.overflow, 0);
        assert_eq!(to_trie, 0);
        assert!(t.v4.blocks > 0, "longer-than-/24 prefixes need blocks");
        assert_eq!(t.v6.blocks, 0);
    }

    #[test]
    fn v6_agrees_with_brute_force() {
        // Up to /64: every address must be answered by the blocks.
        let (t, to_trie) = check(128, 64, 3000, 11, ROOMY);
        assert!(t.v6.blocks > 0);
        assert_eq!(t.v6.overflow, 0);
        assert_eq!(to_trie, 0);
    }

    #[test]
    fn v6_longer_than_64_asks_the_trie_only_there() {
        let (t, to_trie) = check(128, 128, 3000, 17, ROOMY);
        assert_eq!(t.v6.overflow, 0);
        assert!(to_trie > 0, "the table has prefixes longer than /64");
    }

    #[test]
    fn full_array_falls_back_to_the_trie_and_stays_right() {
        for (width, max, seed) in [(32, 32, 19), (128, 64, 13)] {
            let full = check(width, max, 2000, seed, ROOMY).0;
            let needed = full.v4.words + full.v6.words;
            for cap in [0, 40, needed / 2, needed - 1] {
                let (t, to_trie) = check(width, max, 2000, seed, cap);
                let stats = if width == 32 { t.v4 } else { t.v6 };
                assert!(
                    stats.overflow > 0,
                    "{cap} of {needed} words should overflow"
                );
                assert!(t.v4.words + t.v6.words <= cap);
                assert!(to_trie > 0);
            }
        }
    }

    #[test]
    fn both_families_share_the_arrays() {
        let mut rng = Rng(31);
        let p4 = table(&mut rng, 1500, 32, 8);
        let p6 = table(&mut rng, 1500, 64, 16);
        let v4: Vec<_> = p4
            .iter()
            .map(|(a, l, v)| {
                let a = u32::try_from(a >> 96).expect("v4").to_be_bytes();
                (a, u8::try_from(*l).expect("l"), *v)
            })
            .collect();
        let v6: Vec<_> = p6
            .iter()
            .map(|(a, l, v)| (a.to_be_bytes(), u8::try_from(*l).expect("l"), *v))
            .collect();
        let t = FastTable::build(&v4, &v6, ROOMY);
        let page = FAST_PAGE_WORDS as usize;
        assert_eq!(
            t.blocks.len(),
            (t.v4.words + t.v6.words).next_multiple_of(page)
        );

        assert_eq!(t.top_words().len(), TOP_WORDS);
        for addr in probes(&mut rng, &p4, 32) {
            assert_eq!(lookup(&t, 32, addr), lpm(&p4, addr), "v4 {addr:#x}");
        }
        for addr in probes(&mut rng, &p6, 128) {
            assert_eq!(lookup(&t, 128, addr), lpm(&p6, addr), "v6 {addr:#x}");
        }
    }

    /// Slot `b` of an encoded block, read as the kernel does.
    fn read(words: &[u64], list: bool, b: usize) -> u32 {
        let byte = u8::try_from(b).expect("b");
        let lane = fast_block_lane(list, 0, byte, |x| words[x as usize]);
        half(words[usize::try_from(lane / 2).expect("lane")], lane)
    }

    #[test]
    fn a_block_is_read_as_its_runs() {
        let mut rng = Rng(37);
        // Runs at quarter edges, on slot 63 (the last shift of the mask), one run per
        // slot; list blocks with starts at 1 and 255, at 128 (the byte compare's high
        // bit), the most starts a list holds, and one more.
        let mut cases: Vec<([u32; BLOCK_SLOTS], bool)> = Vec::new();
        let mut edges = [1; BLOCK_SLOTS];
        edges[63] = 2;
        edges[64..128].fill(3);
        edges[255] = 4;
        cases.push((edges, true));
        let mut quarters = [0; BLOCK_SLOTS];
        for (n, start) in [1, 62, 63, 64, 65, 127, 128, 191, 192, 255]
            .iter()
            .enumerate()
        {
            quarters[*start..].fill(u32::try_from(n).expect("n") + 1);
        }
        cases.push((quarters, false));
        cases.push((
            std::array::from_fn(|i| u32::try_from(i).expect("i") + 1),
            false,
        ));
        let mut ends = [5; BLOCK_SLOTS];
        ends[1..255].fill(6);
        cases.push((ends, true));
        let mut half_way = [5; BLOCK_SLOTS];
        half_way[127..129].fill(6);
        cases.push((half_way, true));
        for (starts, list) in [(FAST_LIST_STARTS, true), (FAST_LIST_STARTS + 1, false)] {
            cases.push((
                std::array::from_fn(|i| u32::try_from(i * (starts + 1) / BLOCK_SLOTS).expect("v")),
                list,
            ));
        }
        for odds in [4, 40, 200] {
            for _ in 0..200 {
                let mut s = [0u32; BLOCK_SLOTS];
                let mut v = 0;
                for slot in &mut s {
                    if rng.next().is_multiple_of(odds) {
                        v = u32::try_from(rng.next() % 5).expect("v");
                    }
                    *slot = v;
                }
                let starts = (1..BLOCK_SLOTS).filter(|&i| s[i] != s[i - 1]).count();
                cases.push((s, starts <= FAST_LIST_STARTS));
            }
        }
        let lists = cases.iter().filter(|c| c.1).count();
        assert!(lists > 100 && lists < cases.len() - 100, "{lists} lists");
        for (slots, want_list) in &cases {
            let (words, list) = encode(slots);
            assert_eq!(list, *want_list, "{slots:?}");
            for (b, want) in slots.iter().enumerate() {
                assert_eq!(read(&words, list, b), *want, "slot {b} of {slots:?}");
            }
        }
        for _ in 0..10_000 {
            let x = rng.next();
            assert_eq!(popcount(x), x.count_ones());
        }
        assert_eq!(popcount(u64::MAX), 64);
        assert_eq!(popcount(0), 0);
    }

    #[test]
    fn leaves_carry_region_and_length() {
        let v = pv(0xBEEF, 57);
        let value = fast_leaf_value(v);
        assert_eq!(value & FAST_BLOCK, 0);
        assert_ne!(value & FAST_LEAF, 0);
        assert_eq!(fast_leaf(value), Some(v));
        assert_eq!(fast_leaf(fast_leaf_value(pv(0, 0))), Some(pv(0, 0)));
        assert_eq!(fast_leaf(0), None);
        assert_eq!(fast_leaf(FAST_BLOCK | 5), None);
    }

    #[test]
    fn block_reads_count_the_strides_walked() {
        let v4 = [
            ([10, 0, 0, 0], 16, pv(1, 16)),
            ([10, 1, 0, 0], 16, pv(2, 16)),
            ([10, 1, 7, 0], 24, pv(3, 24)),
            ([10, 1, 7, 16], 28, pv(4, 28)),
        ];
        let v6 = [(
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            40,
            pv(5, 40),
        )];
        let t = FastTable::build(&v4, &v6, ROOMY);
        // A /16 is its top slot; a /24 under it one block; a /28 two.
        assert_eq!(t.block_reads_v4([10, 0, 9, 9]), 0);
        assert_eq!(t.block_reads_v4([10, 1, 8, 1]), 1);
        assert_eq!(t.block_reads_v4([10, 1, 7, 1]), 2);
        assert_eq!(t.block_reads_v4([10, 1, 7, 17]), 2);
        assert_eq!(t.lookup_v4([10, 1, 7, 17]), Some(pv(4, 28)));
        // A /40: the strides at /16, /24 and /32.
        let mut a = v6[0].0;
        assert_eq!(t.block_reads_v6(a), 3);
        a[0] = 0x30;
        assert_eq!(t.block_reads_v6(a), 0);
    }

    #[test]
    fn top_words_put_slot_i_at_bits_32i() {
        let t = FastTable {
            top: vec![1, 2, 3],
            ..FastTable::default()
        };
        assert_eq!(t.top_words(), vec![0x0000_0002_0000_0001, 3]);
    }
}
