//! BGP origin AS from RIB dumps: MRT `TABLE_DUMP_V2` files written by `maps::mrt`
//! (plain, gzip, bzip2) parsed, each prefix's origin chosen by its peers, `AS_SET`
//! origins skipped; the table merged with the databases and CIDR keys at its place in
//! the precedence; truncated and corrupt dumps refused.
mod common;

use std::{net::IpAddr, path::PathBuf};

use common::{asn_record, base_config, compile, db, ip, place, Scratch};
use geodns_maps::{
    bgp::{BgpError, BgpTable},
    mrt::{self, Peer, Route, Segment},
    Compiled, Config, RegionKey,
};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};

fn peers() -> Vec<Peer> {
    vec![
        Peer {
            asn: 65001,
            ip: ip("198.18.0.11"),
        },
        Peer {
            asn: 65002,
            ip: ip("198.18.0.12"),
        },
        Peer {
            asn: 65003,
            ip: ip("2001:2::13"),
        },
    ]
}

/// The routes of the test table: `(prefix, routes)`.
fn routes() -> Vec<(IpAddr, u8, Vec<Route>)> {
    vec![
        // Three peers, two see AS64500: it wins, 2 of 3.
        (
            ip("198.51.100.0"),
            24,
            vec![
                Route::seq(0, &[65001, 3356, 64500]),
                Route::seq(1, &[65002, 64501]),
                Route::seq(2, &[65003, 174, 64500]),
            ],
        ),
        // An AS_SET origin (an aggregate): that route is skipped; the other decides.
        (
            ip("203.0.113.0"),
            24,
            vec![
                Route {
                    peer: 0,
                    path: vec![Segment::Seq(vec![65001]), Segment::Set(vec![64510, 64511])],
                },
                Route::seq(1, &[65002, 64502]),
            ],
        ),
        // Only an AS_SET origin: no origin at all.
        (
            ip("192.0.2.0"),
            24,
            vec![Route {
                peer: 0,
                path: vec![Segment::Seq(vec![65001, 2914]), Segment::Set(vec![64520])],
            }],
        ),
        // A tie: the lowest AS number wins.
        (
            ip("100.64.0.0"),
            10,
            vec![
                Route::seq(0, &[65001, 64530]),
                Route::seq(1, &[65002, 64529]),
            ],
        ),
        // A covering prefix and a more specific one with another origin.
        (ip("10.0.0.0"), 8, vec![Route::seq(0, &[65001, 64540])]),
        (ip("10.1.2.0"), 24, vec![Route::seq(0, &[65001, 64541])]),
        // IPv6, with a path long enough for the extended-length attribute.
        (
            ip("2001:db8::"),
            32,
            vec![Route::seq(
                2,
                &(0..70)
                    .map(|i| 65100 + i)
                    .chain([64550])
                    .collect::<Vec<_>>(),
            )],
        ),
        (ip("2001:db8:1::"), 48, vec![Route::seq(2, &[65003, 64551])]),
    ]
}

fn write(scratch: &Scratch, name: &str) -> PathBuf {
    let p = scratch.path(name);
    mrt::write_file(&p, &peers(), routes()).expect("write RIB dump");
    p
}

fn origin(t: &BgpTable, a: &str) -> Option<(u32, u32, u32, String)> {
    t.lookup(ip(a))
        .map(|m| (m.origin, m.agree, m.peers, m.prefix.to_string()))
}

#[test]
fn parses_plain_gzip_and_bzip2_and_picks_the_origin_most_peers_see() {
    let scratch = Scratch::new("bgp-parse");
    for name in ["rib.mrt", "rib.mrt.gz", "rib.mrt.bz2", "rib"] {
        let t = BgpTable::read(&[write(&scratch, name)]).expect("read");
        let s = &t.stats;
        assert_eq!(s.records, 8, "{name}");
        assert_eq!(s.routes, 12, "{name}");
        assert_eq!((s.prefixes_v4, s.prefixes_v6), (5, 2), "{name}");
        assert_eq!(s.as_set_routes, 2, "{name}");
        assert_eq!(s.prefixes_without_origin, 1, "{name}");
        assert_eq!(s.disagreeing_prefixes, 2, "{name}");
        assert_eq!(s.tied_prefixes, 1, "{name}");
        assert_eq!(
            origin(&t, "198.51.100.7"),
            Some((64500, 2, 3, "198.51.100.0/24".into()))
        );
        assert_eq!(
            origin(&t, "203.0.113.1"),
            Some((64502, 1, 1, "203.0.113.0/24".into()))
        );
        assert_eq!(origin(&t, "192.0.2.1"), None);
        assert_eq!(
            origin(&t, "100.100.0.1"),
            Some((64529, 1, 2, "100.64.0.0/10".into()))
        );
        assert_eq!(origin(&t, "10.1.2.3").map(|o| o.0), Some(64541));
        assert_eq!(origin(&t, "10.1.3.3").map(|o| o.0), Some(64540));
        assert_eq!(origin(&t, "2001:db8:1::5").map(|o| o.0), Some(64551));
        assert_eq!(
            origin(&t, "2001:db8:2::5"),
            Some((64550, 1, 1, "2001:db8::/32".into()))
        );
        assert_eq!(origin(&t, "2001:db9::1"), None);
    }
    // Two dumps (two collectors): the peers of both count.
    let a = write(&scratch, "a.mrt");
    let b = scratch.path("b.mrt");
    mrt::write_file(
        &b,
        &peers(),
        [(
            ip("198.51.100.0"),
            24,
            vec![
                Route::seq(0, &[65001, 64501]),
                Route::seq(1, &[65002, 64501]),
            ],
        )],
    )
    .expect("write");
    let t = BgpTable::read(&[a, b]).expect("read both");
    assert_eq!(
        origin(&t, "198.51.100.7"),
        Some((64501, 3, 5, "198.51.100.0/24".into()))
    );
}

#[test]
fn truncated_and_corrupt_dumps_are_errors_and_never_panic() {
    let scratch = Scratch::new("bgp-corrupt");
    for name in ["rib.mrt", "rib.mrt.gz", "rib.mrt.bz2"] {
        let good = std::fs::read(write(&scratch, name)).expect("read back");
        // Cut anywhere but at the very end: an error naming the file.
        for cut in [good.len() - 1, good.len() / 2, good.len() / 3 + 7, 20, 5] {
            let p = scratch.write(&format!("cut-{cut}-{name}"), &good[..cut]);
            match BgpTable::read(std::slice::from_ref(&p)) {
                Err(
                    e @ (BgpError::Corrupt { .. } | BgpError::Empty { .. } | BgpError::Io { .. }),
                ) => {
                    assert!(e.to_string().contains(&p.display().to_string()), "{e}");
                }
                Ok(t) => panic!(
                    "{name} cut at {cut} of {} read as {:?}",
                    good.len(),
                    t.stats
                ),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    // A dump cut after a whole record of a plain file cannot be told from a shorter
    // dump; the reload's shrink guard is what catches a much shorter one.
    assert!(matches!(
        BgpTable::read(&[scratch.write("empty.mrt", b"")]),
        Err(BgpError::Empty { .. })
    ));
    assert!(matches!(
        BgpTable::read(&[scratch.write("text.mrt", b"this is not an MRT file at all, no")]),
        Err(BgpError::Corrupt { .. })
    ));
    assert!(matches!(
        BgpTable::read(&[scratch.path("missing.mrt")]),
        Err(BgpError::Io { .. })
    ));
    // Random damage to a valid dump: a result or an error, never a panic or a hang.
    let good = std::fs::read(write(&scratch, "rib-good.mrt")).expect("read back");
    let mut rng = StdRng::seed_from_u64(20);
    for i in 0..400 {
        let mut bad = good.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bad.len());
            bad[at] = rng.random();
        }
        let p = scratch.write(&format!("fuzz-{i}.mrt"), &bad);
        let _ = BgpTable::read(&[p]);
    }
}

const ASN_MAP: &str = r#"
[geoip]
country = "country.mmdb"
asn = "asn.mmdb"

[bgp]
rib = "rib.mrt"
{as_keys}

[maps.main]
"198.51.100.128/25" = ["eu2"]
"AS64500" = ["us1"]
"AS64777" = ["as1"]
"AS64541" = ["core2"]
"DE" = ["eu1"]
default = ["core1"]

[[records]]
name = "www"
map = "main"
"#;

/// The key `map` 0 picks for `a`, and the prefix (scope) it matched.
fn key(c: &Compiled, config: &Config, a: &str) -> (Option<RegionKey>, String) {
    let m = c.lookup(ip(a));
    let key = c
        .choice(m.region, 0)
        .and_then(|k| c.rule(config, 0, k))
        .map(|r| r.key);
    // The facts read again lead to the same region.
    let facts = c.facts(ip(a)).expect("facts");
    assert_eq!(c.region_of(&facts), Some(m.region), "{a}: {facts:?}");
    (key, m.prefix.to_string())
}

fn precedence_setup(scratch: &Scratch, as_keys: &str) -> (Config, Compiled) {
    write(scratch, "rib.mrt");
    db(
        scratch,
        "country.mmdb",
        6,
        &[
            ("198.51.100.0/24", place("DE", "EU")),
            ("10.0.0.0/8", place("DE", "EU")),
            ("192.0.2.0/24", place("DE", "EU")),
            ("2001:db8::/32", place("DE", "EU")),
        ],
    );
    db(
        scratch,
        "asn.mmdb",
        6,
        &[
            // The ASN database says 64777 where BGP says 64500 / 64541.
            ("198.51.100.0/24", asn_record(64777)),
            ("10.1.2.0/24", asn_record(64777)),
            ("192.0.2.0/24", asn_record(64777)),
        ],
    );
    let config = scratch.config(&base_config(&ASN_MAP.replace("{as_keys}", as_keys)));
    let compiled = compile(&config);
    (config, compiled)
}

#[test]
fn bgp_origin_comes_after_cidr_keys_and_before_the_asn_database() {
    let scratch = Scratch::new("bgp-precedence");
    let (config, c) = precedence_setup(&scratch, "");
    let stats = c.stats().bgp.as_ref().expect("BGP stats");
    assert_eq!(stats.prefixes(), 7);
    // A config CIDR beats the BGP origin.
    assert_eq!(
        key(&c, &config, "198.51.100.200").0,
        Some(RegionKey::Cidr("198.51.100.128/25".parse().expect("cidr")))
    );
    // The BGP origin's key beats the ASN database's.
    assert_eq!(
        key(&c, &config, "198.51.100.7"),
        (Some(RegionKey::Asn(64500)), "198.51.100.0/25".into())
    );
    assert_eq!(key(&c, &config, "10.1.2.9").0, Some(RegionKey::Asn(64541)));
    // No key for the BGP origin: the ASN database's AS number is tried next.
    assert_eq!(key(&c, &config, "192.0.2.9").0, Some(RegionKey::Asn(64777)));
    // No AS key at all: the country.
    assert_eq!(
        key(&c, &config, "10.1.3.9"),
        (Some(RegionKey::Country(*b"DE")), "10.1.3.0/24".into())
    );
    assert_eq!(
        key(&c, &config, "2001:db8:1::1").0,
        Some(RegionKey::Country(*b"DE"))
    );
    // In BGP only (no database, no CIDR): the map's default, not the fallback.
    assert_eq!(
        key(&c, &config, "100.64.0.1"),
        (Some(RegionKey::Default), "100.64.0.0/10".into())
    );
    // Nowhere: region 0.
    assert_eq!(c.lookup(ip("100.128.0.1")).region, 0);
    // The prefixes still partition the space exactly (each a maximal block of one
    // region), the scope of 10.1.2.0/24 being its own.
    assert_eq!(key(&c, &config, "10.1.2.9").1, "10.1.2.0/24");
    assert_eq!(key(&c, &config, "10.0.0.1").1, "10.0.0.0/16");

    // bgp-only: the ASN database no longer matches AS keys.
    let scratch = Scratch::new("bgp-only");
    let (config, c) = precedence_setup(&scratch, "as_keys = \"bgp-only\"");
    assert_eq!(
        key(&c, &config, "198.51.100.7").0,
        Some(RegionKey::Asn(64500))
    );
    assert_eq!(
        key(&c, &config, "192.0.2.9").0,
        Some(RegionKey::Country(*b"DE"))
    );
}

#[test]
fn config_errors_name_the_bgp_section() {
    let scratch = Scratch::new("bgp-config");
    let bad = base_config("[bgp]\nrib = []\n");
    let e = Config::from_str_named(&bad, &scratch.path("c.toml").display().to_string())
        .expect_err("empty rib list");
    assert!(e.to_string().contains("bgp.rib"), "{e}");
    let bad = base_config("[bgp]\nrib = \"x.mrt\"\nas_keys = \"asn-first\"\n");
    let e = Config::from_str_named(&bad, "c.toml").expect_err("bad as_keys");
    assert!(
        e.to_string().contains("bgp.as_keys") && e.to_string().contains("bgp-only"),
        "{e}"
    );
    // AS keys need an ASN database or BGP.
    let bad = base_config("[maps.m]\n\"AS1\" = [\"eu1\"]\n");
    let e = Config::from_str_named(&bad, "c.toml").expect_err("AS key without a source");
    assert!(e.to_string().contains("[bgp] rib"), "{e}");
    // BGP alone is enough for AS keys; a bad dump fails the compile, naming the file.
    let ok = base_config("[bgp]\nrib = \"rib.mrt\"\n[maps.m]\n\"AS64500\" = [\"eu1\"]\n[[records]]\nname = \"www\"\nmap = \"m\"\n");
    let config = scratch.config(&ok);
    scratch.write("rib.mrt", b"\0\0\0\0\0\x0d\0\x02\0\0\0\x40trunc");
    let e = Compiled::build(&config, &mut |_| {}).expect_err("truncated dump");
    assert!(
        e.to_string().contains("rib.mrt") && e.to_string().contains("truncated"),
        "{e}"
    );
    write(&scratch, "rib.mrt");
    let c = compile(&config);
    assert_eq!(
        key(&c, &config, "198.51.100.1").0,
        Some(RegionKey::Asn(64500))
    );
}

/// `examples/route.toml` (BGP + nearest) compiles with its committed RIB dump (the
/// committed bytes are checked against their generator in `compile.rs`), and the
/// explanation of a decision names the BGP prefix, its origin and the peers.
#[test]
fn the_example_compiles_and_explains_its_bgp_decisions() {
    let path = common::repo_root().join("examples/route.toml");
    let config = Config::from_path(&path).expect("the example parses");
    let e = common::engine(config);
    let b = e.compiled().stats().bgp.clone().expect("BGP stats");
    assert_eq!((b.records, b.prefixes_v4, b.prefixes_v6), (10, 7, 2));
    assert_eq!(
        (
            b.disagreeing_prefixes,
            b.as_set_routes,
            b.prefixes_without_origin
        ),
        (1, 1, 1)
    );
    let x = e.explain(ip("192.0.2.200"), None);
    let m = x.facts.as_ref().and_then(|f| f.bgp).expect("a BGP match");
    assert_eq!(
        (m.prefix.to_string(), m.origin, m.agree, m.peers),
        ("192.0.2.128/25".to_owned(), 64520, 3, 3)
    );
    let edge = x.maps.iter().find(|m| m.map == "edge").expect("map edge");
    assert_eq!(edge.key, Some(RegionKey::Asn(64520)));
    assert!(
        edge.why
            .contains("BGP origin of 192.0.2.128/25 (3 of 3 peers)"),
        "{}",
        edge.why
    );
    // The peers disagree on 203.0.113.0/24: 2 of 3 see AS64510.
    let x = e.explain(ip("203.0.113.5"), None);
    let m = x.facts.as_ref().and_then(|f| f.bgp).expect("a BGP match");
    assert_eq!((m.origin, m.agree, m.peers), (64510, 2, 3));
    // 100.100.0.0/16: no coordinates, the BGP origin's key decides.
    let x = e.explain(ip("100.100.7.7"), None);
    let edge = x.maps.iter().find(|m| m.map == "edge").expect("map edge");
    assert_eq!(edge.key, Some(RegionKey::Asn(64531)));
}
