//! The flat first step in front of the kernel's LPM tries: a multibit trie of arrays.
//!
//! IPv4 is DIR-24-8: a top array indexed by the first 24 bits, and 256-slot blocks for
//! the /24s that longer prefixes split. IPv6 uses the same structure with a 16-bit top
//! array and 8-bit strides down to /64 (`V6_MAX_DEPTH`); prefixes longer than that, or
//! blocks beyond the pool, make the slot say "ask the trie". Why this shape for IPv6:
//! `GeoIP` tables hold most IPv6 networks at /32../48 with a long tail to /64, so a hash
//! on one fixed length resolves too few clients, while 8-bit strides resolve every
//! prefix up to /64 in at most 7 array reads without expanding a prefix into more than
//! 256 slots at any level.
//!
//! Slots are `u16`: 0 = ask the trie; `1..0x8000` = index into the leaves table (a
//! `PrefixValue`: region and the exact matched prefix length, so the ECS scope stays
//! exact); `0x8000 | b` = go to pool block `b`. Four slots pack into one `u64` of the
//! kernel arrays (little-endian: slot `i` is bits `16 * (i % 4)`).
//!
//! Userspace computes every slot; [`FastTable::lookup_v4`] walks them exactly as the
//! kernel does, and the tests check it against a brute-force longest-prefix match.
use std::collections::HashMap;

use geodns_common::PrefixValue;

/// A slot that sends the lookup to a pool block.
pub const SLOT_BLOCK: u16 = 0x8000;
/// Slots per pool block (an 8-bit stride).
pub const BLOCK_SLOTS: usize = 256;
/// Most leaves (distinct region + prefix length pairs) the slots can name.
pub const MAX_LEAVES: usize = 0x7FFF;
/// Top-array bits for IPv4 (DIR-24-8).
pub const V4_TOP_BITS: u32 = 24;
/// Top-array bits for IPv6.
pub const V6_TOP_BITS: u32 = 16;
/// Deepest prefix length the IPv6 arrays resolve; longer prefixes go to the trie.
pub const V6_MAX_DEPTH: u32 = 64;

/// Errors of building the arrays.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FastPathError {
    #[error("more than {MAX_LEAVES} distinct (region, prefix length) pairs")]
    TooManyLeaves,
}

/// One family's arrays: top slots, pool blocks and how many blocks did not fit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FastFamily {
    /// `2^top_bits` slots.
    pub top: Vec<u16>,
    /// `BLOCK_SLOTS` slots per block, blocks back to back.
    pub pool: Vec<u16>,
    /// Blocks that were needed but exceeded the pool: their slots ask the trie.
    pub overflow_blocks: usize,
    pub top_bits: u32,
    pub width: u32,
    pub max_depth: u32,
}

/// Both families and the shared leaves (index 0 is unused: slot 0 means "trie").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FastTable {
    pub v4: FastFamily,
    pub v6: FastFamily,
    pub leaves: Vec<PrefixValue>,
}

/// Pool capacities, in blocks (the loader sizes the kernel arrays from these).
#[derive(Clone, Copy, Debug)]
pub struct PoolSizes {
    pub v4_blocks: usize,
    pub v6_blocks: usize,
}

impl Default for PoolSizes {
    fn default() -> Self {
        // The real GeoLite2 table splits 19.4k /24s; IPv6 needs more, see the bench.
        Self {
            v4_blocks: 32_768,
            v6_blocks: 32_768,
        }
    }
}

struct Leaves {
    list: Vec<PrefixValue>,
    index: HashMap<PrefixValue, u16>,
}

impl Leaves {
    fn get(&mut self, v: PrefixValue) -> Result<u16, FastPathError> {
        if let Some(i) = self.index.get(&v) {
            return Ok(*i);
        }
        if self.list.len() > MAX_LEAVES {
            return Err(FastPathError::TooManyLeaves);
        }
        let i = u16::try_from(self.list.len()).map_err(|_| FastPathError::TooManyLeaves)?;
        self.list.push(v);
        self.index.insert(v, i);
        Ok(i)
    }
}

/// A prefix with its address left-aligned in a `u128` (IPv4 in the top 32 bits).
#[derive(Clone, Copy, Debug)]
struct P {
    addr: u128,
    len: u32,
    value: PrefixValue,
}

impl FastTable {
    /// Builds both families from the prefix lists the kernel tries hold.
    pub fn build(
        v4: &[([u8; 4], u8, PrefixValue)],
        v6: &[([u8; 16], u8, PrefixValue)],
        pools: PoolSizes,
    ) -> Result<Self, FastPathError> {
        let mut leaves = Leaves {
            list: vec![PrefixValue::default()],
            index: HashMap::new(),
        };
        let p4: Vec<P> = v4
            .iter()
            .map(|(a, l, v)| P {
                addr: u128::from(u32::from_be_bytes(*a)) << 96,
                len: u32::from(*l),
                value: *v,
            })
            .collect();
        let p6: Vec<P> = v6
            .iter()
            .map(|(a, l, v)| P {
                addr: u128::from_be_bytes(*a),
                len: u32::from(*l),
                value: *v,
            })
            .collect();
        let v4 = build_family(p4, 32, V4_TOP_BITS, 32, pools.v4_blocks, &mut leaves)?;
        let v6 = build_family(
            p6,
            128,
            V6_TOP_BITS,
            V6_MAX_DEPTH,
            pools.v6_blocks,
            &mut leaves,
        )?;
        Ok(Self {
            v4,
            v6,
            leaves: leaves.list,
        })
    }

    /// The kernel's walk for an IPv4 address: `None` means "ask the trie".
    #[must_use]
    pub fn lookup_v4(&self, addr: [u8; 4]) -> Option<PrefixValue> {
        self.v4
            .walk(u128::from(u32::from_be_bytes(addr)) << 96)
            .map(|leaf| self.leaves[usize::from(leaf)])
    }

    /// The kernel's walk for an IPv6 address: `None` means "ask the trie".
    #[must_use]
    pub fn lookup_v6(&self, addr: [u8; 16]) -> Option<PrefixValue> {
        self.v6
            .walk(u128::from_be_bytes(addr))
            .map(|leaf| self.leaves[usize::from(leaf)])
    }
}

impl FastFamily {
    /// Slots of one 256-slot stride starting at `bit` of the left-aligned address.
    fn walk(&self, addr: u128) -> Option<u16> {
        let top = usize::try_from(addr >> (128 - self.top_bits)).ok()?;
        let mut slot = *self.top.get(top)?;
        let mut bit = self.top_bits;
        while slot & SLOT_BLOCK != 0 {
            let block = usize::from(slot & !SLOT_BLOCK);
            let byte = usize::try_from((addr >> (128 - bit - 8)) & 0xFF).ok()?;
            slot = *self.pool.get(block * BLOCK_SLOTS + byte)?;
            bit += 8;
        }
        (slot != 0).then_some(slot)
    }

    /// The slots packed four per `u64` as the kernel arrays hold them.
    #[must_use]
    pub fn pack(slots: &[u16]) -> Vec<u64> {
        slots
            .chunks(4)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u64, |w, (i, s)| w | (u64::from(*s) << (16 * i)))
            })
            .collect()
    }
}

fn build_family(
    mut prefixes: Vec<P>,
    width: u32,
    top_bits: u32,
    max_depth: u32,
    max_blocks: usize,
    leaves: &mut Leaves,
) -> Result<FastFamily, FastPathError> {
    // Shortest first: a longer prefix painted later overrides the shorter ones it nests in.
    prefixes.sort_by_key(|p| (p.len, p.addr));
    let mut fam = FastFamily {
        top: vec![0; 1 << top_bits],
        pool: Vec::new(),
        overflow_blocks: 0,
        top_bits,
        width,
        max_depth,
    };
    // Paint every prefix into the level whose stride holds its last bit; a slot of a
    // shallower level is turned into a block when a longer prefix lands below it.
    for p in &prefixes {
        if p.len > width {
            continue;
        }
        let leaf = leaves.get(p.value)?;
        if p.len <= top_bits {
            let first = usize::try_from(p.addr >> (128 - top_bits)).unwrap_or(0);
            let count = 1usize << (top_bits - p.len);
            paint(&mut fam.top[first..first + count], leaf);
            continue;
        }
        if p.len > max_depth {
            // The arrays cannot tell this prefix apart: the slots it falls in ask the trie.
            mark_trie(&mut fam, p.addr, max_depth, max_blocks);
            continue;
        }
        let Some((block, bit)) = descend(&mut fam, p.addr, p.len, max_blocks) else {
            continue;
        };
        // `bit` is the start of the stride holding the prefix's last bit.
        let byte = usize::try_from((p.addr >> (128 - bit - 8)) & 0xFF).unwrap_or(0);
        let count = 1usize << (bit + 8 - p.len);
        let base = block * BLOCK_SLOTS + byte;
        paint(&mut fam.pool[base..base + count], leaf);
    }
    Ok(fam)
}

/// Sets the slots to `leaf`. Prefixes come shortest first and blocks are only made
/// for longer ones, so no slot here is a block yet; one that is (never, by that order)
/// is left alone rather than cut off from what lies below it.
fn paint(slots: &mut [u16], leaf: u16) {
    for s in slots {
        if *s & SLOT_BLOCK == 0 {
            *s = leaf;
        }
    }
}

/// Walks (creating blocks as needed) to the block whose stride holds bit `len - 1` of
/// `addr`; returns the block and the stride's first bit, or `None` when the pool is full
/// (then the slot on the way was set to "ask the trie").
fn descend(fam: &mut FastFamily, addr: u128, len: u32, max_blocks: usize) -> Option<(usize, u32)> {
    let top = usize::try_from(addr >> (128 - fam.top_bits)).unwrap_or(0);
    let mut bit = fam.top_bits;
    let mut slot_ref = SlotRef::Top(top);
    loop {
        let slot = fam.get(slot_ref);
        let block = if slot & SLOT_BLOCK != 0 {
            usize::from(slot & !SLOT_BLOCK)
        } else {
            let blocks = fam.pool.len() / BLOCK_SLOTS;
            if blocks >= max_blocks || blocks >= usize::from(!SLOT_BLOCK) {
                fam.overflow_blocks += 1;
                // The whole stride below this slot is unknown to the arrays now.
                fam.set(slot_ref, 0);
                return None;
            }
            // The new block starts as the slot's leaf everywhere (the shorter prefix
            // that covered the whole slot still covers what longer ones leave).
            fam.pool.extend(std::iter::repeat_n(slot, BLOCK_SLOTS));
            fam.set(slot_ref, SLOT_BLOCK | u16::try_from(blocks).unwrap_or(0));
            blocks
        };
        if len <= bit + 8 {
            return Some((block, bit));
        }
        let byte = usize::try_from((addr >> (128 - bit - 8)) & 0xFF).unwrap_or(0);
        slot_ref = SlotRef::Pool(block * BLOCK_SLOTS + byte);
        bit += 8;
    }
}

/// Sends the deepest slot that holds `addr` at `depth` bits to the trie.
fn mark_trie(fam: &mut FastFamily, addr: u128, depth: u32, max_blocks: usize) {
    // Reach the stride ending at `depth`, then clear the one slot for this address.
    if let Some((block, bit)) = descend(fam, addr, depth, max_blocks) {
        let byte = usize::try_from((addr >> (128 - bit - 8)) & 0xFF).unwrap_or(0);
        let count = 1usize << (bit + 8 - depth);
        let base = block * BLOCK_SLOTS + (byte & !(count - 1));
        for s in &mut fam.pool[base..base + count] {
            *s = 0;
        }
    }
}

#[derive(Clone, Copy)]
enum SlotRef {
    Top(usize),
    Pool(usize),
}

impl FastFamily {
    fn get(&self, r: SlotRef) -> u16 {
        match r {
            SlotRef::Top(i) => self.top[i],
            SlotRef::Pool(i) => self.pool[i],
        }
    }
    fn set(&mut self, r: SlotRef, v: u16) {
        match r {
            SlotRef::Top(i) => self.top[i] = v,
            SlotRef::Pool(i) => self.pool[i] = v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        while out.len() < n {
            let parent = out[usize::try_from(rng.next() % out.len() as u64).expect("idx")];
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
            out.push((addr, len, pv(region, len)));
        }
        out.sort_by_key(|p| (p.0, p.1));
        out.dedup_by_key(|p| (p.0, p.1));
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

    fn check(width: u32, max: u32, n: usize, seed: u64, pools: PoolSizes) -> FastTable {
        let mut rng = Rng(seed);
        let min = if width == 32 { 8 } else { 16 };
        let prefixes = table(&mut rng, n, max, min);
        let (v4, v6): (Vec<_>, Vec<_>) = if width == 32 {
            let v4 = prefixes
                .iter()
                .map(|(a, l, v)| {
                    (
                        (u32::try_from(a >> 96).expect("v4")).to_be_bytes(),
                        u8::try_from(*l).expect("l"),
                        *v,
                    )
                })
                .collect();
            (v4, Vec::new())
        } else {
            let v6 = prefixes
                .iter()
                .map(|(a, l, v)| (a.to_be_bytes(), u8::try_from(*l).expect("l"), *v))
                .collect();
            (Vec::new(), v6)
        };
        let t = FastTable::build(&v4, &v6, pools).expect("build");
        for addr in probes(&mut rng, &prefixes, width) {
            let want = lpm(&prefixes, addr);
            let got = if width == 32 {
                t.lookup_v4(u32::try_from(addr >> 96).expect("v4").to_be_bytes())
            } else {
                t.lookup_v6(addr.to_be_bytes())
            };
            // `None` (ask the trie) is allowed only where the arrays gave up.
            if let Some(v) = got {
                assert_eq!(Some(v), want, "address {addr:#x}");
            } else {
                let fam = if width == 32 { &t.v4 } else { &t.v6 };
                assert!(
                    fam.overflow_blocks > 0 || prefixes.iter().any(|p| p.1 > fam.max_depth),
                    "address {addr:#x} sent to the trie without cause"
                );
            }
        }
        t
    }

    #[test]
    fn v4_agrees_with_brute_force() {
        let t = check(32, 32, 3000, 7, PoolSizes::default());
        assert_eq!(t.v4.overflow_blocks, 0);
        assert_eq!(t.v4.top.len(), 1 << 24);
    }

    #[test]
    fn v6_agrees_with_brute_force() {
        // Up to /64: every address must be answered by the arrays.
        let t = check(128, 64, 3000, 11, PoolSizes::default());
        assert!(t.v6.pool.len() / BLOCK_SLOTS > 0);
        assert_eq!(t.v6.overflow_blocks, 0);
    }

    #[test]
    fn v6_longer_than_64_asks_the_trie_only_there() {
        check(128, 128, 3000, 17, PoolSizes::default());
    }

    #[test]
    fn full_pool_falls_back_to_the_trie_and_stays_right() {
        let t = check(
            128,
            64,
            2000,
            13,
            PoolSizes {
                v4_blocks: 4,
                v6_blocks: 16,
            },
        );
        assert!(
            t.v6.overflow_blocks > 0,
            "the small pool should have overflowed"
        );
    }

    #[test]
    fn pack_puts_slot_i_at_bits_16i() {
        assert_eq!(
            FastFamily::pack(&[1, 2, 3, 4, 5]),
            vec![0x0004_0003_0002_0001, 5]
        );
    }
}
