//! A full-size synthetic BGP RIB dump for the bench: prefixes with a real table's
//! length mix (IPv4 mostly /24, then /22, /23, /20, /21, /16..; IPv6 mostly /48, then
//! /32, /44, /40, /36, /29..), aggregates with more-specifics inside, origins from a
//! skewed draw over 75,000 AS numbers, one to three peers per prefix that mostly
//! agree, a few disagreeing and a few `AS_SET` origins; written with `maps::mrt`.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Instant,
};

use geodns_maps::mrt::{self, Peer, Route, Segment};

use crate::synth::Rng;

/// IPv4 and IPv6 prefixes of the bench dump.
pub const PREFIXES_V4: usize = 1_000_000;
pub const PREFIXES_V6: usize = 200_000;

/// `(length, share in 1/1000)` of IPv4 prefixes in a public full table.
const MIX_V4: [(u8, u64); 11] = [
    (24, 600),
    (23, 90),
    (22, 110),
    (21, 50),
    (20, 45),
    (19, 30),
    (18, 20),
    (17, 15),
    (16, 25),
    (15, 8),
    (12, 7),
];

/// The same for IPv6.
const MIX_V6: [(u8, u64); 9] = [
    (48, 520),
    (44, 80),
    (40, 60),
    (36, 40),
    (32, 160),
    (29, 50),
    (46, 30),
    (47, 30),
    (28, 30),
];

fn pick(mix: &[(u8, u64)], rng: &mut Rng) -> u8 {
    let total: u64 = mix.iter().map(|m| m.1).sum();
    let mut r = rng.below(total);
    for (len, w) in mix {
        if r < *w {
            return *len;
        }
        r -= w;
    }
    mix[0].0
}

fn origin(rng: &mut Rng) -> u32 {
    // Skewed: a few networks announce many prefixes.
    let u = rng.below(1 << 20);
    let x = (u * u) >> 20; // 0..2^20, squared towards 0
    1 + u32::try_from((x * 75_000) >> 20).unwrap_or(0)
}

fn routes(rng: &mut Rng, origin: u32) -> Vec<Route> {
    let peers = 1 + rng.below(3);
    let as_set = rng.below(1000) == 0;
    (0..peers)
        .map(|p| {
            let peer = u16::try_from(p).unwrap_or(0);
            let mut path = vec![
                64_600 + u32::from(peer),
                3356 + u32::try_from(rng.below(4)).unwrap_or(0),
            ];
            // About 1 in 100 peers sees another origin.
            let o = if rng.below(100) == 0 {
                origin + 1
            } else {
                origin
            };
            path.push(o);
            if as_set {
                Route {
                    peer,
                    path: vec![Segment::Seq(path), Segment::Set(vec![o, o + 7])],
                }
            } else {
                Route::seq(peer, &path)
            }
        })
        .collect()
}

/// Writes `dir/rib.mrt.gz` unless it exists.
pub fn generate(dir: &Path) {
    let path = dir.join("rib.mrt.gz");
    if path.exists() {
        return;
    }
    std::fs::create_dir_all(dir).expect("create dir");
    let started = Instant::now();
    let mut rng = Rng(0xB6B6_0001);
    let mut v4: HashSet<(u32, u8)> = HashSet::with_capacity(PREFIXES_V4);
    while v4.len() < PREFIXES_V4 {
        let len = pick(&MIX_V4, &mut rng);
        // Unicast space 1.0.0.0 - 223.255.255.255.
        let a = u32::try_from(rng.below(223 << 24)).unwrap_or(0) + (1 << 24);
        v4.insert((a & (u32::MAX << (32 - len)), len));
    }
    let mut v6: HashSet<(u128, u8)> = HashSet::with_capacity(PREFIXES_V6);
    while v6.len() < PREFIXES_V6 {
        let len = pick(&MIX_V6, &mut rng);
        // 2000::/4, in ~600 allocations of a /20 each (RIR blocks), as tables are.
        let block = u128::from(rng.below(600));
        let inside = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
        let a = (0x2000u128 << 112) | (block << 100) | (inside >> 28);
        v6.insert((a & (u128::MAX << (128 - len)), len));
    }
    let mut v4: Vec<(u32, u8)> = v4.into_iter().collect();
    v4.sort_unstable();
    let mut v6: Vec<(u128, u8)> = v6.into_iter().collect();
    v6.sort_unstable();
    let peers = [
        Peer {
            asn: 64_600,
            ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)),
        },
        Peer {
            asn: 64_601,
            ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12)),
        },
        Peer {
            asn: 64_602,
            ip: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 13)),
        },
    ];
    let mut origin_rng = Rng(0xB6B6_0002);
    let all = v4
        .iter()
        .map(|&(a, l)| (IpAddr::V4(Ipv4Addr::from(a)), l))
        .chain(v6.iter().map(|&(a, l)| (IpAddr::V6(Ipv6Addr::from(a)), l)))
        .map(|(a, l)| {
            let o = origin(&mut origin_rng);
            (a, l, routes(&mut origin_rng, o))
        });
    let tmp = dir.join("rib.mrt.gz.part.gz");
    mrt::write_file(&tmp, &peers, all).expect("write the RIB dump");
    std::fs::rename(&tmp, &path).expect("rename the RIB dump");
    eprintln!(
        "generated a RIB dump of {} IPv4 + {} IPv6 prefixes in {:.1}s",
        v4.len(),
        v6.len(),
        started.elapsed().as_secs_f64()
    );
}
