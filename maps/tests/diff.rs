//! `diff` against a brute-force count: two generated databases with known moved
//! networks, every IPv4 /24 and every IPv6 /48 of the covered block looked up in both
//! compiled tables, answers and keys compared per region as `explain` gives them.
mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use common::{base_config, engine, place, Scratch};
use geodns_maps::{
    diff::{diff, Table},
    mmdb::Writer,
    Engine,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};

const COUNTRIES: [(&str, &str); 8] = [
    ("AA", "EU"),
    ("AB", "EU"),
    ("AC", "NA"),
    ("AD", "NA"),
    ("AE", "EU"),
    ("AF", "NA"),
    ("AG", "AS"),
    ("AH", "OC"),
];

const MAPS: &str = r#"
[geoip]
country = "db.mmdb"

[maps.main]
"AA" = ["eu1"]
# The same answer as AA: moves between them change the region only.
"AB" = ["eu1"]
"AC" = ["us1"]
"AD" = { eu2 = 1, us1 = 3 }
"continent:EU" = ["eu2"]
# us2 has no IPv6 address: AAAA falls back.
"continent:NA" = ["us2"]
# as1 has no IPv4 address: A falls back.
"continent:AS" = ["as1"]
default = { eu1 = 1, us2 = 1 }

[[records]]
name = "www"
map = "main"

[[records]]
name = "dl"
map = "main"
policy = "spread"
max_answers = 2
"#;

/// The IPv6 networks all lie in this /32; the rest of the IPv6 space is in no database.
const V6_BLOCK: u128 = 0x2400_0000_u128 << 96;

/// `(network, length, country)`: IPv4 networks of /8 to /24 anywhere, IPv6 networks
/// of /34 to /48 inside `V6_BLOCK`.
type Nets = Vec<(IpAddr, u8, usize)>;

fn random_nets(rng: &mut StdRng) -> Nets {
    let mut nets = Vec::new();
    for _ in 0..400 {
        let len = rng.random_range(8..=24u8);
        let a = rng.random_range(1u32..224 << 24) & (u32::MAX << (32 - len));
        nets.push((
            IpAddr::V4(Ipv4Addr::from(a)),
            len,
            rng.random_range(0..COUNTRIES.len()),
        ));
    }
    for _ in 0..300 {
        let len = rng.random_range(34..=48u8);
        let a = (V6_BLOCK | u128::from(rng.random::<u16>()) << 80) & (u128::MAX << (128 - len));
        nets.push((
            IpAddr::V6(Ipv6Addr::from(a)),
            len,
            rng.random_range(0..COUNTRIES.len()),
        ));
    }
    nets
}

/// A new release: some networks change country, some go, some come.
fn changed(old: &Nets, rng: &mut StdRng) -> Nets {
    let mut new: Nets = Vec::new();
    for &(a, l, c) in old {
        if rng.random_range(0..10) == 0 {
            continue;
        }
        let c = if rng.random_range(0..5) == 0 {
            rng.random_range(0..COUNTRIES.len())
        } else {
            c
        };
        new.push((a, l, c));
    }
    new.extend(random_nets(rng).into_iter().step_by(10));
    new
}

fn write_db(scratch: &Scratch, name: &str, nets: &Nets, aliases: bool) {
    let mut w = Writer::new(6, "Test").alias_ipv4(aliases);
    for &(a, l, c) in nets {
        let (country, continent) = COUNTRIES[c];
        w.insert(a, l, &place(country, continent)).expect("insert");
    }
    scratch.write(name, &w.to_bytes().expect("serialize"));
}

/// What one region answers, as `explain` says: per record, the map key and the `A`
/// and `AAAA` answers (source, addresses, weights, count).
type RegionView = Vec<(String, [String; 2], [Vec<(String, f64)>; 2])>;

fn region_view(engine: &Engine, ip: IpAddr) -> RegionView {
    let explained = engine.explain(ip, None);
    let config = engine.config();
    let node_of = |a: &IpAddr| -> String {
        config
            .nodes
            .iter()
            .find(|n| match a {
                IpAddr::V4(v) => n.ipv4.contains(v),
                IpAddr::V6(v) => n.ipv6.contains(v),
            })
            .map(|n| n.name.clone())
            .expect("an answer address belongs to a node")
    };
    explained
        .records
        .iter()
        .map(|r| {
            let key = explained
                .maps
                .iter()
                .find(|m| m.map == r.map)
                .and_then(|m| m.key)
                .map_or_else(
                    || format!("none in region 0: {}", explained.region == 0),
                    |k| k.to_string(),
                );
            let fam = |f: &geodns_maps::engine::FamilyAnswer| -> (String, Vec<(String, f64)>) {
                // A fallback of one node answers as `best` would: the same answer.
                let one_node = f.source == "fallback"
                    && f.addresses
                        .iter()
                        .all(|a| node_of(a) == node_of(&f.addresses[0]));
                let label = if one_node {
                    format!("geo {:?} [] {}", f.addresses, f.addresses.len())
                } else {
                    format!("{} {:?} {:?} {}", f.source, f.addresses, f.weights, f.count)
                };
                // Expected node shares: geo best = the first address's node; spread
                // by slot weight; fallback by the fallback weights (config: core1 3,
                // core2 1).
                let shares = match f.source {
                    "geo" if f.weights.is_empty() => vec![(node_of(&f.addresses[0]), 1.0)],
                    "geo" => {
                        let total: u32 = f.weights.iter().sum();
                        let mut shares: Vec<(String, f64)> = Vec::new();
                        for (a, w) in f.addresses.iter().zip(&f.weights) {
                            let node = node_of(a);
                            let v = f64::from(*w) / f64::from(total);
                            match shares.iter_mut().find(|(k, _)| *k == node) {
                                Some(x) => x.1 += v,
                                None => shares.push((node, v)),
                            }
                        }
                        shares
                    }
                    "fallback" => vec![("core1".to_owned(), 0.75), ("core2".to_owned(), 0.25)],
                    _ => Vec::new(),
                };
                (label, shares)
            };
            let (la, sa) = fam(&r.a);
            let (l6, s6) = fam(&r.aaaa);
            (key, [la, l6], [sa, s6])
        })
        .collect()
}

/// Brute-force totals of one space: per (record, qtype) moved units, region-only
/// units, and per node the net change of its share in units.
#[derive(Default)]
struct Brute {
    moved: HashMap<(usize, usize), u64>,
    region_only: HashMap<(usize, usize), u64>,
    net: HashMap<(usize, usize, String), f64>,
}

fn count(old: &Engine, new: &Engine, addrs: impl Iterator<Item = IpAddr>) -> Brute {
    // Each address looked up in both tables; the answers of a (old region, new
    // region) pair are compared once, from the first address that had it.
    let mut pairs: HashMap<(u16, u16), (u64, IpAddr)> = HashMap::new();
    for ip in addrs {
        let r = (
            old.compiled().lookup(ip).region,
            new.compiled().lookup(ip).region,
        );
        pairs.entry(r).or_insert((0, ip)).0 += 1;
    }
    let mut b = Brute::default();
    for (n_addrs, ip) in pairs.into_values() {
        let (o, n) = (region_view(old, ip), region_view(new, ip));
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let k = n_addrs as f64;
        for rec in 0..o.len() {
            for q in 0..2 {
                let (o, n) = (&o[rec], &n[rec]);
                if o.1[q] != n.1[q] {
                    *b.moved.entry((rec, q)).or_default() += n_addrs;
                    for (node, s) in &o.2[q] {
                        *b.net.entry((rec, q, node.clone())).or_default() -= s * k;
                    }
                    for (node, s) in &n.2[q] {
                        *b.net.entry((rec, q, node.clone())).or_default() += s * k;
                    }
                } else if o.0 != n.0 {
                    *b.region_only.entry((rec, q)).or_default() += n_addrs;
                }
            }
        }
    }
    b
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn diff_equals_a_brute_force_count_over_every_24_and_48() {
    check(false);
}

/// The same databases with `MaxMind`'s three aliases: the IPv4 brute force, moved into
/// `::ffff:0:0/96`, `2001::/32` and `2002::/16`, adds to the IPv6 count (a /24 there is
/// 2^88, 2^72 and 2^8 addresses: exact, where a brute force over those /48s could not
/// run).
#[test]
fn diff_counts_aliased_ipv6_clients() {
    check(true);
}

/// Expected totals of one space: per (record, qtype) addresses moved and region-only,
/// per node the net change of its share in units (/24s or /48s).
#[derive(Default)]
struct Expected {
    moved: HashMap<(usize, usize), u128>,
    region_only: HashMap<(usize, usize), u128>,
    net: HashMap<(usize, usize, String), f64>,
}

/// `b`'s counts (in units of `2^unit_bits` addresses) as addresses, plus `alias`
/// times the IPv4 counts `v4` (in /24s) when aliases are live.
fn expected(b: &Brute, unit_bits: u32, v4: Option<&Brute>) -> Expected {
    let mut e = Expected::default();
    for (k, v) in &b.moved {
        *e.moved.entry(*k).or_default() += u128::from(*v) << unit_bits;
    }
    for (k, v) in &b.region_only {
        *e.region_only.entry(*k).or_default() += u128::from(*v) << unit_bits;
    }
    for (k, v) in &b.net {
        *e.net.entry(k.clone()).or_default() += v;
    }
    if let Some(v4) = v4 {
        // A /24 in each alias range: 2^(8 + 80), 2^(8 + 64), 2^8 addresses.
        let per24: u128 = (1 << 88) + (1 << 72) + (1 << 8);
        for (k, v) in &v4.moved {
            *e.moved.entry(*k).or_default() += u128::from(*v) * per24;
        }
        for (k, v) in &v4.region_only {
            *e.region_only.entry(*k).or_default() += u128::from(*v) * per24;
        }
        // The same in /48s.
        let per24_units = 2f64.powi(8) + 2f64.powi(-8) + 2f64.powi(-72);
        for (k, v) in &v4.net {
            *e.net.entry(k.clone()).or_default() += v * per24_units;
        }
    }
    e
}

#[expect(clippy::too_many_lines, reason = "one brute-force comparison")]
fn check(aliases: bool) {
    let scratch = Scratch::new("diff");
    let mut rng = StdRng::seed_from_u64(22);
    let old_nets = random_nets(&mut rng);
    let new_nets = changed(&old_nets, &mut rng);
    write_db(&scratch, "db.mmdb", &old_nets, aliases);
    let old = engine(scratch.config(&base_config(MAPS)));
    write_db(&scratch, "db.mmdb", &new_nets, aliases);
    let new = engine(scratch.config(&base_config(MAPS)));
    let (to, tn) = (
        Table::from_engine(&old, "old", None),
        Table::from_engine(&new, "new", None),
    );
    to.check().expect("old table is a partition");
    tn.check().expect("new table is a partition");
    let d = diff(&to, &tn, 10);
    assert!(d.moved, "the new release moves clients");

    // IPv4: every /24 (every network is /24 or shorter, so a /24 is all one region).
    let v4 = count(
        &old,
        &new,
        (0..1u32 << 24).map(|i| IpAddr::V4(Ipv4Addr::from(i << 8))),
    );
    // IPv6: every /48 of the block; outside it both tables are one region-0 answer.
    for e in [&old, &new] {
        for (a, l, r) in e.compiled().prefixes_v6() {
            let a = u128::from_be_bytes(a);
            let inside = l >= 32 && a >> 96 == V6_BLOCK >> 96;
            assert!(
                inside || r == 0,
                "{a:x}/{l} is outside the block but in region {r}"
            );
        }
    }
    let v6 = count(
        &old,
        &new,
        (0..1u128 << 16).map(|i| IpAddr::V6(Ipv6Addr::from(V6_BLOCK | i << 80))),
    );

    let spaces = [
        expected(&v4, 8, None),
        expected(&v6, 80, aliases.then_some(&v4)),
    ];
    assert_eq!(
        old.compiled().aliases() != 0,
        aliases,
        "the aliases follow the database"
    );
    let mut any_moved = [false; 2];
    let mut any_region_only = false;
    for (rec, r) in d.records.iter().enumerate() {
        for (q, fam) in [&r.a, &r.aaaa].into_iter().enumerate() {
            for (s, want) in spaces.iter().enumerate() {
                let got = &fam[s];
                let moved = want.moved.get(&(rec, q)).copied().unwrap_or(0);
                let region = want.region_only.get(&(rec, q)).copied().unwrap_or(0);
                let what = format!("{} q{q} space {s}", r.name);
                assert_eq!(got.answer_changed, moved, "{what}: moved");
                assert_eq!(got.region_only, region, "{what}: region only");
                let unit_bits = if s == 0 { 8 } else { 80 };
                #[expect(clippy::cast_precision_loss, reason = "shares")]
                {
                    let units = moved as f64 / 2f64.powi(unit_bits);
                    assert!(close(got.answer_units, units), "{what}: units");
                }
                any_moved[s] |= moved > 0;
                any_region_only |= region > 0;
                // Per node: gained - lost is the change of its share, in units.
                let unit = if s == 0 {
                    2f64.powi(-24)
                } else {
                    2f64.powi(-48)
                };
                for n in &got.nodes {
                    let want = want
                        .net
                        .get(&(rec, q, n.node.clone()))
                        .copied()
                        .unwrap_or(0.0);
                    assert!(
                        close((n.gained - n.lost) / unit, want),
                        "{what}: node {} net {} units, brute force {want}",
                        n.node,
                        (n.gained - n.lost) / unit
                    );
                }
                for ((br, bq, node), want) in &want.net {
                    if (*br, *bq) == (rec, q) && want.abs() > 1e-9 {
                        assert!(
                            got.nodes.iter().any(|n| &n.node == node),
                            "{what}: {node} missing"
                        );
                    }
                }
                // Flows add up to what moved (a moved /24 whose node shares stay put,
                // e.g. another address of the same node, moves no node).
                let flow: f64 = got.flows.iter().map(|f| f.share).sum();
                let lost: f64 = got.nodes.iter().map(|n| n.lost).sum();
                assert!(close(flow, lost), "{what}: flows {flow} vs losses {lost}");
                assert!(
                    flow <= got.answer_share * (1.0 + 1e-9),
                    "{what}: more flow than moves"
                );
            }
        }
    }
    assert!(
        any_moved[0] && any_moved[1],
        "the test data moves clients in both families"
    );
    assert!(any_region_only, "the test data has region-only changes");

    // The largest moved prefixes: largest first, and wholly moved by the brute force's
    // definition (some answer of some record differs on their first address).
    for (top, is_v4) in [(&d.top_v4, true), (&d.top_v6, false)] {
        assert_eq!(top.len(), 10);
        assert!(top
            .windows(2)
            .all(|w| w[0].prefix.len() <= w[1].prefix.len()));
        for m in top {
            assert!(!m.changes.is_empty());
            assert_eq!(m.prefix.is_ipv4(), is_v4);
            let o = region_view(&old, m.prefix.addr());
            let n = region_view(&new, m.prefix.addr());
            assert!(
                (0..o.len()).any(|r| o[r].1 != n[r].1),
                "{} does not move",
                m.prefix
            );
        }
    }
}

#[test]
fn identical_tables_do_not_move() {
    let scratch = Scratch::new("diff-same");
    let mut rng = StdRng::seed_from_u64(7);
    write_db(&scratch, "db.mmdb", &random_nets(&mut rng), true);
    let e = engine(scratch.config(&base_config(MAPS)));
    let t = Table::from_engine(&e, "x", None);
    let d = diff(&t, &t, 5);
    assert!(!d.moved);
    assert!(d.top_v4.is_empty() && d.top_v6.is_empty());
    assert!(d.records.iter().all(|r| r
        .a
        .iter()
        .chain(&r.aaaa)
        .all(|s| s.answer_changed == 0 && s.region_only == 0)));
}

/// A region that loses its key to a fallback of one up node, the node it had: the
/// same answer (clients get the same addresses), so only the region changes.
#[test]
fn a_one_node_fallback_is_the_same_answer_as_that_node() {
    let scratch = Scratch::new("diff-fallback");
    write_db(
        &scratch,
        "db.mmdb",
        &vec![(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8, 0)],
        false,
    );
    let maps = |keys: &str| {
        format!(
            "[geoip]\ncountry = \"db.mmdb\"\n[maps.main]\n{keys}\"AB\" = [\"eu1\"]\n\
             [[records]]\nname = \"www\"\nmap = \"main\"\n"
        )
    };
    let build = |keys: &str| {
        let config = std::sync::Arc::new(scratch.config(&base_config(&maps(keys))));
        let compiled = common::compile(&config);
        let mut states = geodns_maps::NodeStates::from_config(&config);
        // The fallback is core1 (3) and core2 (1): with core2 down, core1 alone.
        states.set("core2", geodns_maps::NodeState::Down);
        Engine::new(config, std::sync::Arc::new(compiled), &states)
    };
    let old = build("\"AA\" = [\"core1\"]\n");
    let new = build("");
    let d = diff(
        &Table::from_engine(&old, "old", None),
        &Table::from_engine(&new, "new", None),
        5,
    );
    assert!(!d.moved, "{d:?}");
    let www = &d.records[0];
    assert_eq!(www.a[0].answer_changed, 0);
    assert_eq!(www.a[0].region_only, 1 << 24, "10.0.0.0/8: AA -> no key");
    assert_eq!(www.aaaa[0].region_only, 1 << 24);
}
