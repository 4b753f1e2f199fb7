//! A small hand-made geo table (regions, names, answer sets) used by the XDP fixtures,
//! the netns tests and the demo, independent of the maps/ compiler.
use std::net::{Ipv4Addr, Ipv6Addr};

use geodns_common::{
    AnswerKey, AnswerSet, NameKey, NameValue, PrefixValue, MAX_ANSWER_ADDRS, MAX_NAME_WIRE_LEN,
    NAME_BLOCK, POLICY_BEST, POLICY_SPREAD, POLICY_STICKY, STATE_FLAG_ALIASES,
};
use geodns_maps::KernelMaps;

use crate::frame::wire_name;

#[must_use]
pub fn name_key(name: &str, wildcard: bool) -> NameKey {
    let wire = wire_name(&name.to_ascii_lowercase());
    let mut key = NameKey::ZERO;
    key.wildcard = u8::from(wildcard);
    key.name[..wire.len()].copy_from_slice(&wire);
    assert!(wire.len() <= MAX_NAME_WIRE_LEN);
    key
}

#[must_use]
pub fn pv(region: u16, prefix_len: u8) -> PrefixValue {
    PrefixValue {
        region,
        prefix_len,
        _pad: 0,
    }
}

#[must_use]
pub fn answer_set(
    policy: u8,
    count: u8,
    v4: &[(Ipv4Addr, u32)],
    v6: &[(Ipv6Addr, u32)],
) -> AnswerSet {
    let mut s = AnswerSet::EMPTY;
    s.ttl = 60;
    s.policy = policy;
    s.count = count;
    let mut cum = 0;
    for (i, (a, w)) in v4.iter().enumerate() {
        cum += w;
        s.v4[i] = a.octets();
        s.cum_v4[i] = cum;
    }
    s.n_v4 = u8::try_from(v4.len()).expect("count");
    cum = 0;
    for (i, (a, w)) in v6.iter().enumerate() {
        cum += w;
        s.v6[i] = a.octets();
        s.cum_v6[i] = cum;
    }
    s.n_v6 = u8::try_from(v6.len()).expect("count");
    assert!(v4.len() <= MAX_ANSWER_ADDRS && v6.len() <= MAX_ANSWER_ADDRS);
    s
}

// Regions of the fixture table.
pub const EU: u16 = 1; // 192.0.2.0/24, 2001:db8::/32
pub const LAB: u16 = 2; // 198.18.0.0/15, 2001:2::/48 (the test hosts themselves)
pub const SPREAD: u16 = 3; // 203.0.113.128/25, 2001:db8:abcd:1200::/56
pub const STICKY: u16 = 4; // 100.64.0.0/16, 2001:db8:5700::/40
pub const WWW: u16 = 0;
pub const IMG: u16 = 1;

#[must_use]
pub fn eu_v4() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10)
}
#[must_use]
pub fn eu_v6() -> Ipv6Addr {
    "2001:db8::10".parse().expect("addr")
}
#[must_use]
pub fn lab_v4() -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 53)
}
#[must_use]
pub fn spread_v4() -> [Ipv4Addr; 3] {
    [
        Ipv4Addr::new(203, 0, 113, 1),
        Ipv4Addr::new(203, 0, 113, 2),
        Ipv4Addr::new(203, 0, 113, 3),
    ]
}

/// A node of the sticky set: name, IPv4 addresses, IPv6 address, weight.
pub type StickyNode = (&'static str, &'static [[u8; 4]], Option<[u8; 16]>, u32);

/// The sticky set's nodes. `b` has two IPv4 addresses (its slots share its tag), `c`
/// no IPv6.
pub const STICKY_NODES: [StickyNode; 3] = [
    (
        "a",
        &[[203, 0, 113, 11]],
        Some([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]),
        1,
    ),
    (
        "b",
        &[[203, 0, 113, 12], [203, 0, 113, 13]],
        Some([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12]),
        2,
    ),
    ("c", &[[203, 0, 113, 14]], None, 3),
];

/// The `sticky` answer set of region [`STICKY`] (as maps/ builds it: every address of
/// a node with the node's weight and its tag).
#[must_use]
pub fn sticky_set() -> AnswerSet {
    let mut s = AnswerSet::EMPTY;
    s.ttl = 60;
    s.policy = POLICY_STICKY;
    s.count = 1;
    let (mut n4, mut n6, mut cum4, mut cum6) = (0usize, 0usize, 0u32, 0u32);
    for (name, v4, v6, w) in STICKY_NODES {
        let tag = geodns_common::sticky_tag(name);
        for a in v4 {
            cum4 += w;
            s.v4[n4] = *a;
            s.cum_v4[n4] = cum4;
            s.tag_v4[n4] = tag;
            n4 += 1;
        }
        if let Some(a) = v6 {
            cum6 += w;
            s.v6[n6] = a;
            s.cum_v6[n6] = cum6;
            s.tag_v6[n6] = tag;
            n6 += 1;
        }
    }
    s.n_v4 = u8::try_from(n4).expect("count");
    s.n_v6 = u8::try_from(n6).expect("count");
    s
}

#[must_use]
#[expect(clippy::too_many_lines, reason = "one table, written out")]
pub fn contents() -> KernelMaps {
    let v4 = |s: &str| s.parse::<Ipv4Addr>().expect("v4").octets();
    let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("v6").octets();
    let s = spread_v4();
    KernelMaps {
        prefixes_v4: vec![
            (v4("0.0.0.0"), 1, pv(0, 1)),
            (v4("128.0.0.0"), 1, pv(0, 1)),
            (v4("192.0.2.0"), 24, pv(EU, 24)),
            (v4("198.18.0.0"), 15, pv(LAB, 15)),
            (v4("203.0.113.128"), 25, pv(SPREAD, 25)),
            (v4("100.64.0.0"), 16, pv(STICKY, 16)),
        ],
        prefixes_v6: vec![
            (v6("::"), 1, pv(0, 1)),
            (v6("8000::"), 1, pv(0, 1)),
            (v6("2001:db8::"), 32, pv(EU, 32)),
            (v6("2001:2::"), 48, pv(LAB, 48)),
            (v6("2001:db8:abcd:1200::"), 56, pv(SPREAD, 56)),
            (v6("2001:db8:5700::"), 40, pv(STICKY, 40)),
        ],
        names: vec![
            (
                name_key("www.cdn.example.net", false),
                NameValue {
                    record: WWW,
                    _pad: 0,
                    node: 0,
                },
            ),
            (
                name_key("img.cdn.example.net", true),
                NameValue {
                    record: IMG,
                    _pad: 0,
                    node: 0,
                },
            ),
        ]
        .into_iter()
        // Names that exist without a geo wildcard below them (as maps/ writes them for
        // every existing name): the origin, a sibling of the wildcard with static data,
        // an empty non-terminal and the name below it.
        .chain(
            [
                "cdn.example.net",
                "www.cdn.example.net",
                "*.img.cdn.example.net",
                "sibling.img.cdn.example.net",
                "ent.img.cdn.example.net",
                "e.ent.img.cdn.example.net",
            ]
            .map(|n| {
                (
                    name_key(n, true),
                    NameValue {
                        record: NAME_BLOCK,
                        _pad: 0,
                        node: 0,
                    },
                )
            }),
        )
        .collect(),
        answers: vec![
            (
                AnswerKey {
                    record: WWW,
                    region: EU,
                },
                answer_set(POLICY_BEST, 1, &[(eu_v4(), 10)], &[(eu_v6(), 10)]),
            ),
            (
                AnswerKey {
                    record: WWW,
                    region: LAB,
                },
                answer_set(POLICY_BEST, 1, &[(lab_v4(), 10)], &[]),
            ),
            (
                AnswerKey {
                    record: WWW,
                    region: SPREAD,
                },
                answer_set(
                    POLICY_SPREAD,
                    2,
                    &[(s[0], 1), (s[1], 2), (s[2], 3)],
                    &[(eu_v6(), 1)],
                ),
            ),
            (
                AnswerKey {
                    record: WWW,
                    region: STICKY,
                },
                sticky_set(),
            ),
            (
                AnswerKey {
                    record: IMG,
                    region: EU,
                },
                answer_set(POLICY_BEST, 1, &[(eu_v4(), 10)], &[]),
            ),
            (
                AnswerKey {
                    record: IMG,
                    region: LAB,
                },
                answer_set(POLICY_BEST, 1, &[(lab_v4(), 10)], &[]),
            ),
        ],
        // Every alias, as in a MaxMind database: IPv4-mapped, Teredo and 6to4
        // clients are looked up as their embedded IPv4 address.
        aliases: STATE_FLAG_ALIASES,
        static_nodes: Vec::new(),
        static_answers: Vec::new(),
    }
}
