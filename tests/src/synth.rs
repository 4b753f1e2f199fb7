//! Synthetic prefix tables with a GeoIP-like length mix, answer sets per region, and
//! client addresses drawn from a table: shared by the kernel benchmark and the
//! fast-path tests.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use geodns_common::{AnswerKey, AnswerSet, NameKey, NameValue, PrefixValue, POLICY_BEST};
use geodns_maps::KernelMaps;

use crate::frame::wire_name;

/// Regions of the synthetic tables (1..=REGIONS; 0 is the whole-space default).
pub const REGIONS: u16 = 250;

/// Small deterministic generator (xorshift64*), so runs compare.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn pv(region: u16, len: u8) -> PrefixValue {
    PrefixValue {
        region,
        prefix_len: len,
        _pad: 0,
    }
}

/// `n` distinct IPv4 prefixes with a GeoIP-like length mix (most /16../24, a third
/// longer than /24).
#[must_use]
pub fn table_v4(n: usize, rng: &mut Rng) -> Vec<([u8; 4], u8, PrefixValue)> {
    let mut seen = BTreeMap::new();
    while seen.len() < n {
        let len = match rng.below(100) {
            0..=9 => 16 + u8::try_from(rng.below(4)).unwrap_or(0),
            10..=61 => 20 + u8::try_from(rng.below(5)).unwrap_or(0),
            _ => 25 + u8::try_from(rng.below(6)).unwrap_or(0),
        };
        // Longer-than-/24 prefixes cluster, as in GeoLite2 (223k of them fall into
        // 19.4k distinct /24s): they land in one of 19,410 /24s.
        let addr = if len > 24 {
            let slash24 = u32::try_from(rng.below(19_410))
                .unwrap_or(0)
                .wrapping_mul(0x9E37_79B1)
                & 0xFFFF_FF00;
            slash24 | u32::try_from(rng.below(256)).unwrap_or(0)
        } else {
            u32::try_from(rng.below(1 << 32)).unwrap_or(0)
        };
        let masked = addr & (u32::MAX << (32 - u32::from(len)));
        let region = 1 + u16::try_from(rng.below(u64::from(REGIONS))).unwrap_or(0);
        seen.insert((masked, len), region);
    }
    // Whole-space default, as the compiled maps have (gaps get region 0).
    seen.insert((0, 0), 0);
    seen.into_iter()
        .map(|((a, l), r)| (a.to_be_bytes(), l, pv(r, l)))
        .collect()
}

#[must_use]
pub fn table_v6(n: usize, rng: &mut Rng) -> Vec<([u8; 16], u8, PrefixValue)> {
    let mut seen = BTreeMap::new();
    while seen.len() < n {
        let len = match rng.below(100) {
            0..=8 => 20 + u8::try_from(rng.below(13)).unwrap_or(0),
            9..=36 => 33 + u8::try_from(rng.below(16)).unwrap_or(0),
            _ => 49 + u8::try_from(rng.below(16)).unwrap_or(0),
        };
        // Networks cluster: 4,000 provider /32s under 2001::/16..2003::/16, their
        // /33../48 networks in 16 /40s each, and longer ones in 4 /48s of those.
        let provider = 0x2001_0000u128 + u128::from(rng.below(4_000)) * 0x31;
        let slash40 = u128::from(rng.below(16)) * 0x11;
        let slash48 = u128::from(rng.below(4)) * 0x3D;
        let low = u128::from(rng.next_u64());
        let addr = if len > 48 {
            (provider << 96) | (slash40 << 88) | (slash48 << 80) | ((low & 0xFFFF) << 64)
        } else {
            (provider << 96) | (slash40 << 88) | ((low & 0xFF) << 80)
        };
        let masked = addr & (u128::MAX << (128 - u32::from(len)));
        let region = 1 + u16::try_from(rng.below(u64::from(REGIONS))).unwrap_or(0);
        seen.insert((masked, len), region);
    }
    seen.insert((0, 0), 0);
    seen.into_iter()
        .map(|((a, l), r)| (a.to_be_bytes(), l, pv(r, l)))
        .collect()
}

#[must_use]
pub fn contents(
    v4: Vec<([u8; 4], u8, PrefixValue)>,
    v6: Vec<([u8; 16], u8, PrefixValue)>,
) -> KernelMaps {
    let mut key = NameKey::ZERO;
    let wire = wire_name("www.cdn.example.net.");
    key.name[..wire.len()].copy_from_slice(&wire);
    let mut answers = Vec::new();
    for region in 0..=REGIONS {
        let mut s = AnswerSet::EMPTY;
        s.ttl = 60;
        s.policy = POLICY_BEST;
        s.count = 1;
        s.n_v4 = 1;
        s.n_v6 = 1;
        s.v4[0] = [198, 18, 0, u8::try_from(region % 250).unwrap_or(0)];
        s.v6[0] = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, region).octets();
        answers.push((AnswerKey { record: 0, region }, s));
    }
    KernelMaps {
        prefixes_v4: v4,
        prefixes_v6: v6,
        names: vec![(
            key,
            NameValue {
                record: 0,
                _pad: 0,
                node: 0,
            },
        )],
        answers,
        aliases: 0,
        static_nodes: Vec::new(),
        static_answers: Vec::new(),
    }
}

/// A client address inside a random prefix of the table.
#[must_use]
pub fn pick_v4(table: &[([u8; 4], u8, PrefixValue)], rng: &mut Rng) -> Ipv4Addr {
    let idx = usize::try_from(rng.below(table.len() as u64)).unwrap_or(0);
    let (a, len, _) = table[idx];
    let host = u32::try_from(rng.below(1 << (32 - u32::from(len)))).unwrap_or(0);
    Ipv4Addr::from(u32::from_be_bytes(a) | host)
}

#[must_use]
pub fn pick_v6(table: &[([u8; 16], u8, PrefixValue)], rng: &mut Rng) -> Ipv6Addr {
    let idx = usize::try_from(rng.below(table.len() as u64)).unwrap_or(0);
    let (a, len, _) = table[idx];
    let host = u128::from(rng.next_u64()) & (u128::MAX >> u32::from(len).min(127));
    Ipv6Addr::from(u128::from_be_bytes(a) | host)
}

/// The mean of per-lookup counts (the blocks each lookup reads), 0 for none.
#[must_use]
pub fn mean_count(counts: impl Iterator<Item = usize>) -> f64 {
    let (sum, n) = counts.fold((0usize, 0usize), |(s, n), c| (s + c, n + 1));
    #[expect(clippy::cast_precision_loss, reason = "counts")]
    {
        sum as f64 / n.max(1) as f64
    }
}

/// The shares of IPv6 prefixes of length up to /32, /33 to /48 and /49 to /64 (the
/// lengths the fast path resolves in 2, 3-4 and 5-6 strides), with their figure names
/// after `prefix`.
#[must_use]
pub fn v6_length_mix(prefix: &str, lens: impl Iterator<Item = u8>) -> Vec<(String, f64)> {
    let mut n = [0u64; 3];
    let mut total = 0u64;
    for len in lens {
        total += 1;
        match len {
            0..=32 => n[0] += 1,
            33..=48 => n[1] += 1,
            49..=64 => n[2] += 1,
            _ => {}
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "shares")]
    let share = |k: u64| k as f64 / total.max(1) as f64;
    vec![
        (format!("{prefix}_share_len_upto_32"), share(n[0])),
        (format!("{prefix}_share_len_33_48"), share(n[1])),
        (format!("{prefix}_share_len_49_64"), share(n[2])),
    ]
}
