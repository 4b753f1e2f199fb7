//! Compiling databases into regions and prefixes, with databases written inside the tests:
//! IPv6, nested networks, unknown space, merging, and the LPM and region decisions checked
//! against brute force and against the mmdb itself.
mod common;

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use common::{asn_record, base_config, compile, db, ip, place, Scratch};
use geodns_maps::{
    mmdb::{Value, Writer},
    Cidr, CompileError, Compiled, Config, ProgressStage,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn prefix(c: &Compiled, addr: &str) -> String {
    c.lookup(ip(addr)).prefix.to_string()
}

/// Region of `addr` must be the one whose map `map` picked `key`.
fn key_of(config: &Config, c: &Compiled, addr: &str, map: usize) -> Option<String> {
    let m = c.lookup(ip(addr));
    c.choice(m.region, map)
        .map(|k| config.maps[map].rules[k].key.to_string())
}

fn nested_db(s: &Scratch) -> String {
    db(
        s,
        "country.mmdb",
        6,
        &[
            ("10.0.0.0/8", place("US", "NA")),
            ("10.1.0.0/16", place("DE", "EU")),
            ("192.0.2.0/25", place("DE", "EU")),
            ("192.0.2.128/25", place("FR", "EU")),
            ("2001:db8::/32", place("DE", "EU")),
            ("2001:db8:1::/48", place("US", "NA")),
            ("3fff::/20", place("JP", "AS")),
        ],
    );
    r#"
[geoip]
country = "country.mmdb"

[maps.main]
"US" = ["us1"]
"continent:EU" = ["eu1"]

[[records]]
name = "www"
map = "main"
"#
    .to_owned()
}

#[test]
fn nested_networks_ipv6_and_unknown_space() {
    let s = Scratch::new("nested");
    let config = s.config(&base_config(&nested_db(&s)));
    let c = compile(&config);
    // The /16 splits the /8: the rest of the /8 is cut into the largest blocks.
    assert_eq!(prefix(&c, "10.1.2.3"), "10.1.0.0/16");
    assert_eq!(prefix(&c, "10.0.0.1"), "10.0.0.0/16");
    assert_eq!(prefix(&c, "10.2.3.4"), "10.2.0.0/15");
    assert_eq!(prefix(&c, "10.200.0.1"), "10.128.0.0/9");
    assert_eq!(
        key_of(&config, &c, "10.1.2.3", 0).as_deref(),
        Some("continent:EU")
    );
    assert_eq!(key_of(&config, &c, "10.200.0.1", 0).as_deref(), Some("US"));
    // DE and FR halves pick the same key everywhere: one /24.
    assert_eq!(prefix(&c, "192.0.2.200"), "192.0.2.0/24");
    // Unknown space: region 0, with the exact gap block as its scope (never /0).
    assert_eq!(c.lookup(ip("11.0.0.1")).region, 0);
    assert_eq!(prefix(&c, "11.0.0.1"), "11.0.0.0/8");
    assert_eq!(prefix(&c, "9.1.2.3"), "8.0.0.0/7");
    assert_eq!(prefix(&c, "255.255.255.255"), "224.0.0.0/3");
    assert_eq!(prefix(&c, "128.0.0.1"), "128.0.0.0/2");
    // IPv6, nested.
    assert_eq!(prefix(&c, "2001:db8:1::5"), "2001:db8:1::/48");
    assert_eq!(
        key_of(&config, &c, "2001:db8:1::5", 0).as_deref(),
        Some("US")
    );
    assert_eq!(prefix(&c, "2001:db8:2::1"), "2001:db8:2::/47");
    assert_eq!(
        key_of(&config, &c, "2001:db8:ffff::1", 0).as_deref(),
        Some("continent:EU")
    );
    // JP has no key and the map no default: a region with no choice, not region 0.
    let jp = c.lookup(ip("3fff::1"));
    assert_ne!(jp.region, 0);
    assert_eq!(c.choice(jp.region, 0), None);
    // IPv4 lives in the IPv4 tree only; the database aliases `::ffff:0:0/96`,
    // `2001::/32` and `2002::/16` onto it, so clients there are looked up as the
    // embedded IPv4 address, the IPv4 prefix moved into the range. `::/96` is no alias.
    assert_eq!(c.aliases(), geodns_common::STATE_FLAG_ALIASES);
    let de = c.lookup(ip("10.1.0.1")).region;
    for (a, p) in [
        ("::ffff:10.1.0.1", "::ffff:10.1.0.0/112"),
        ("2002:a01:1::", "2002:a01::/32"),
        ("2001:0:a01:1::", "2001:0:a01::/48"),
    ] {
        assert_eq!(c.lookup(ip(a)).region, de, "{a}");
        assert_eq!(prefix(&c, a), p);
    }
    for a in ["::10.1.0.1", "::1", "2003::1", "2001:1::1"] {
        assert_eq!(c.lookup(ip(a)).region, 0, "{a}");
    }
    let st = c.stats();
    assert_eq!(
        st.v4.networks,
        9 + 2,
        "the /8 split in 9 (the /16 included), and two /25s"
    );
    assert_eq!(st.v6.networks, 3 + 15, "2001:db8::/32 split around the /48");
    assert_eq!(st.regions, 4, "0, US, EU, JP");
    assert!(st.v4.prefixes_after < st.v4.prefixes_before);
    assert_eq!(
        c.warnings().len(),
        1,
        "JP is covered by no record: {:?}",
        c.warnings()
    );
}

#[test]
fn no_database_means_one_gap_per_family() {
    let s = Scratch::new("nodb");
    let config = s.config(&base_config(
        "[maps.m]\ndefault = [\"eu1\"]\n[[records]]\nname = \"www\"\nmap = \"m\"\n",
    ));
    let c = compile(&config);
    assert_eq!(c.prefixes_v4().collect::<Vec<_>>(), [([0, 0, 0, 0], 0, 0)]);
    assert_eq!(c.prefixes_v6().len(), 1);
    assert_eq!(c.region_count(), 1);
    // A CIDR key alone makes a region; the rest of the space stays region 0.
    let config = s.config(&base_config(
        "[maps.m]\n\"192.0.2.0/24\" = [\"eu1\"]\n\"2001:db8::/32\" = [\"eu1\"]\n[[records]]\nname = \"www\"\nmap = \"m\"\n",
    ));
    let c = compile(&config);
    let r = c.lookup(ip("192.0.2.1"));
    assert_eq!(
        (r.prefix.to_string().as_str(), r.region),
        ("192.0.2.0/24", 1)
    );
    assert_eq!(
        c.lookup(ip("2001:db8::1")).region,
        2,
        "another key, another region"
    );
    assert_eq!(c.lookup(ip("192.0.3.1")).region, 0);
}

#[test]
fn cidr_keys_nest_per_map() {
    let s = Scratch::new("cidr");
    db(&s, "c.mmdb", 4, &[("10.0.0.0/8", place("US", "NA"))]);
    let config = s.config(&base_config(
        r#"
[geoip]
country = "c.mmdb"
[maps.a]
"10.0.0.0/8" = ["eu1"]
"10.1.2.0/24" = ["eu2"]
"US" = ["us1"]
[maps.b]
"10.1.0.0/16" = ["as1"]
default = ["us2"]
[[records]]
name = "a"
map = "a"
[[records]]
name = "b"
map = "b"
"#,
    ));
    let c = compile(&config);
    let keys = |addr: &str| (key_of(&config, &c, addr, 0), key_of(&config, &c, addr, 1));
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(keys("10.1.2.3"), (s("10.1.2.0/24"), s("10.1.0.0/16")));
    assert_eq!(keys("10.1.3.3"), (s("10.0.0.0/8"), s("10.1.0.0/16")));
    assert_eq!(keys("10.2.0.1"), (s("10.0.0.0/8"), s("default")));
    assert_eq!(keys("11.0.0.1"), (None, None));
    // IPv4-only database: IPv6 is all unknown.
    assert_eq!(c.prefixes_v6().len(), 1);
}

#[test]
fn flattened_schema_in_separate_ipv4_and_ipv6_files_with_a_combined_asn() {
    let s = Scratch::new("flat");
    let rec = |cc: &str, asn: u32| {
        Value::map([
            ("country_code", Value::str(cc)),
            ("autonomous_system_number", Value::U32(asn)),
        ])
    };
    db(&s, "v4.mmdb", 4, &[("192.0.2.0/24", rec("DE", 3320))]);
    db(&s, "v6.mmdb", 6, &[("2001:db8::/32", rec("US", 7922))]);
    let config = s.config(&base_config(
        r#"
[geoip]
country = ["v4.mmdb", "v6.mmdb"]
asn = ["v4.mmdb", "v6.mmdb"]
country_field = "country_code"
[maps.m]
"AS7922" = ["us1"]
"DE" = ["eu1"]
[[records]]
name = "www"
map = "m"
"#,
    ));
    let mut stages = Vec::new();
    let c = Compiled::build(&config, &mut |p| stages.push((p.stage, p.networks))).expect("compile");
    assert_eq!(
        c.stats().databases.len(),
        2,
        "the ASN fields come from the same files"
    );
    assert!(stages.contains(&(ProgressStage::Reading, 1)));
    assert!(stages.iter().any(|(st, _)| *st == ProgressStage::Combining));
    assert_eq!(key_of(&config, &c, "192.0.2.1", 0).as_deref(), Some("DE"));
    assert_eq!(
        key_of(&config, &c, "2001:db8::1", 0).as_deref(),
        Some("AS7922")
    );
}

#[test]
fn bad_databases_name_the_path() {
    let s = Scratch::new("bad");
    let good = {
        let mut w = Writer::new(6, "Test");
        for i in 0..200u32 {
            w.insert(
                IpAddr::V4(Ipv4Addr::from(i << 12)),
                20,
                &place(if i % 2 == 0 { "US" } else { "DE" }, "NA"),
            )
            .expect("insert");
        }
        w.to_bytes().expect("bytes")
    };
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("missing.mmdb", None),
        ("empty.mmdb", Some(Vec::new())),
        ("text.mmdb", Some(b"this is not a MaxMind DB\n".repeat(100))),
        ("truncated.mmdb", Some(good[..good.len() / 2].to_vec())),
        ("no-tree.mmdb", Some(good[good.len() - 300..].to_vec())),
    ];
    for (name, bytes) in cases {
        if let Some(b) = &bytes {
            s.write(name, b);
        }
        let config = s.config(&base_config(&format!("[geoip]\ncountry = \"{name}\"\n")));
        let err = Compiled::build(&config, &mut |_| {}).expect_err("a bad database is an error");
        let msg = err.to_string();
        assert!(
            msg.contains(&s.path(name).display().to_string()),
            "{name}: {msg}"
        );
        match (name, &err) {
            ("missing.mmdb", CompileError::Io { .. }) | (_, CompileError::Database { .. }) => {}
            _ => panic!("{name}: unexpected {err:?}"),
        }
    }
    // A wrong field path is caught rather than silently making every address "no country".
    s.write("good.mmdb", &good);
    let config = s.config(&base_config(
        "[geoip]\ncountry = \"good.mmdb\"\ncountry_field = \"country_code\"\n",
    ));
    let err = Compiled::build(&config, &mut |_| {}).expect_err("wrong field");
    assert!(matches!(err, CompileError::FieldNotFound { .. }), "{err}");
    assert!(err.to_string().contains("country_code"), "{err}");
}

#[test]
fn corrupted_databases_never_panic() {
    let scratch = Scratch::new("fuzz");
    let mut writer = Writer::new(6, "Test").alias_ipv4(true);
    for i in 0..64u32 {
        writer
            .insert(
                IpAddr::V4(Ipv4Addr::from(i << 24)),
                8,
                &place(if i % 3 == 0 { "US" } else { "FR" }, "EU"),
            )
            .expect("insert");
        writer
            .insert(
                IpAddr::V6(Ipv6Addr::from(u128::from(0x2400 + i) << 112)),
                16,
                &asn_record(i),
            )
            .expect("insert");
    }
    let good = writer.to_bytes().expect("bytes");
    let mut rng = StdRng::seed_from_u64(1);
    let config = scratch.config(&base_config(
        "[geoip]\ncountry = \"f.mmdb\"\n[maps.m]\n\"FR\" = [\"eu1\"]\n[[records]]\nname = \"www\"\nmap = \"m\"\n",
    ));
    let mut errors = 0;
    for _ in 0..300 {
        let mut bytes = good.clone();
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        scratch.write("f.mmdb", &bytes);
        let result = std::panic::catch_unwind(|| {
            Compiled::build(&config, &mut |_| {}).map(|c| c.region_count())
        })
        .expect("compiling a corrupted database must not panic");
        if let Err(e) = result {
            errors += 1;
            assert!(e.to_string().contains("f.mmdb"), "{e}");
        }
    }
    assert!(errors > 0, "some corruptions are detected");
}

/// Random nested databases and config CIDRs.
struct Random {
    scratch: Scratch,
    config: Config,
    compiled: Compiled,
    /// Every inserted network (boundaries to probe).
    nets: Vec<Cidr>,
}

const COUNTRIES: [(&str, &str); 7] = [
    ("US", "NA"),
    ("CA", "NA"),
    ("DE", "EU"),
    ("FR", "EU"),
    ("JP", "AS"),
    ("BR", "SA"),
    ("AU", "OC"),
];

fn random_net(rng: &mut StdRng, v6: bool) -> Cidr {
    if v6 {
        let len = rng.random_range(4..=64u8);
        // Mostly in 2000::/3, sometimes anywhere (including the IPv4 aliases).
        let bits: u128 = if rng.random_bool(0.8) {
            (0x2000u128 << 112) | (rng.random::<u128>() >> 3)
        } else {
            rng.random()
        };
        Cidr::new(IpAddr::V6(Ipv6Addr::from(bits)), len)
    } else {
        let len = rng.random_range(3..=32u8);
        Cidr::new(IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())), len)
    }
}

fn random_setup(seed: u64) -> Random {
    let mut rng = StdRng::seed_from_u64(seed);
    let scratch = Scratch::new("random");
    let mut nets = Vec::new();
    let mut country = Writer::new(6, "Country").alias_ipv4(rng.random_bool(0.5));
    for _ in 0..300 {
        let net = {
            let v6 = rng.random_bool(0.4);
            random_net(&mut rng, v6)
        };
        let (cc, cont) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
        country
            .insert(net.addr(), net.len(), &place(cc, cont))
            .expect("insert");
        nets.push(net);
    }
    let mut asn = Writer::new(6, "ASN").alias_ipv4(true);
    for _ in 0..100 {
        let net = {
            let v6 = rng.random_bool(0.4);
            random_net(&mut rng, v6)
        };
        asn.insert(net.addr(), net.len(), &asn_record(rng.random_range(1..6)))
            .expect("insert");
        nets.push(net);
    }
    scratch.write("country.mmdb", &country.to_bytes().expect("bytes"));
    scratch.write("asn.mmdb", &asn.to_bytes().expect("bytes"));
    // Random CIDR keys: nested or disjoint by construction.
    let mut cidrs: Vec<Cidr> = (0..6)
        .map(|_| {
            let v6 = rng.random_bool(0.4);
            random_net(&mut rng, v6)
        })
        .collect();
    cidrs.sort();
    cidrs.dedup();
    let (a, b) = cidrs.split_at(cidrs.len() / 2);
    let keys = |list: &[Cidr]| {
        list.iter().fold(String::new(), |mut out, c| {
            let _ = writeln!(out, "\"{c}\" = [\"as1\"]");
            out
        })
    };
    nets.extend(cidrs.iter().copied());
    let config = scratch.config(&base_config(&format!(
        r#"
[geoip]
country = "country.mmdb"
asn = "asn.mmdb"
[maps.a]
{}"AS3" = ["us2"]
"US" = ["us1"]
"CA" = ["us1"]
"DE" = {{ eu1 = 1 }}
"continent:EU" = ["eu2"]
default = ["core1"]
[maps.b]
{}"AS1" = ["eu1"]
"continent:NA" = ["us1"]
"JP" = ["as1"]
[[records]]
name = "a"
map = "a"
[[records]]
name = "b"
map = "b"
"#,
        keys(a),
        keys(b)
    )));
    let compiled = compile(&config);
    Random {
        scratch,
        config,
        compiled,
        nets,
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(v6: bool, b: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(b).expect("IPv4 bits")))
    }
}

/// `(start, end, len, region)` of every prefix of a family, in order.
fn family(c: &Compiled, v6: bool) -> Vec<(u128, u128, u8, u16)> {
    let width: u32 = if v6 { 128 } else { 32 };
    let span = |start: u128, len: u8| {
        let host = width - u32::from(len);
        if host == 128 {
            u128::MAX
        } else {
            start | ((1u128 << host) - 1)
        }
    };
    if v6 {
        c.prefixes_v6()
            .map(|(a, l, r)| {
                (
                    u128::from_be_bytes(a),
                    span(u128::from_be_bytes(a), l),
                    l,
                    r,
                )
            })
            .collect()
    } else {
        c.prefixes_v4()
            .map(|(a, l, r)| {
                let s = u128::from(u32::from_be_bytes(a));
                (s, span(s, l), l, r)
            })
            .collect()
    }
}

/// Fewest aligned blocks covering `[start, end]` (an implementation independent of the
/// crate's: halve the block until it fits).
fn reference_cover(mut start: u128, end: u128, width: u32) -> usize {
    let mut n = 0;
    loop {
        let mut host = width;
        loop {
            let size_minus_1 = if host == 128 {
                u128::MAX
            } else {
                (1u128 << host) - 1
            };
            let aligned = start & size_minus_1 == 0;
            if aligned && start.checked_add(size_minus_1).is_some_and(|e| e <= end) {
                break;
            }
            host -= 1;
        }
        n += 1;
        let last = start
            + if host == 128 {
                u128::MAX
            } else {
                (1u128 << host) - 1
            };
        if last >= end {
            return n;
        }
        start = last + 1;
    }
}

#[test]
fn prefixes_partition_the_space_minimally() {
    for seed in 0..6 {
        let r = random_setup(seed);
        for v6 in [false, true] {
            let width = if v6 { 128 } else { 32 };
            let max = if v6 { u128::MAX } else { u128::from(u32::MAX) };
            let list = family(&r.compiled, v6);
            assert_eq!(list[0].0, 0, "starts at the first address");
            assert_eq!(
                list.last().expect("non-empty").1,
                max,
                "ends at the last address"
            );
            for w in list.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "contiguous and non-overlapping: {w:?}");
            }
            // Minimal: each run of one region uses the fewest aligned blocks; a live
            // alias range is a run of its own (no prefix may claim a scope across it).
            let alias_edge = |b: u128| {
                v6 && geodns_common::IPV6_ALIASES
                    .iter()
                    .any(|&(flag, start, len)| {
                        let end = start | (u128::MAX >> len);
                        r.compiled.aliases() & flag != 0 && (b == start || b == end.wrapping_add(1))
                    })
            };
            let mut i = 0;
            while i < list.len() {
                let mut j = i;
                while j + 1 < list.len() && list[j + 1].3 == list[i].3 && !alias_edge(list[j + 1].0)
                {
                    j += 1;
                }
                assert_eq!(
                    j - i + 1,
                    reference_cover(list[i].0, list[j].1, width),
                    "seed {seed}: run {:?}",
                    &list[i..=j]
                );
                i = j + 1;
            }
            // The gap blocks are never /0 unless the whole space is one region.
            if list.len() > 1 {
                assert!(list.iter().all(|p| p.2 > 0));
            }
        }
    }
}

#[test]
fn lookup_agrees_with_brute_force() {
    for seed in 10..14 {
        let r = random_setup(seed);
        let mut rng = StdRng::seed_from_u64(seed);
        for v6 in [false, true] {
            let list = family(&r.compiled, v6);
            let mut probes: Vec<u128> = (0..400)
                .map(|_| bits(random_net(&mut rng, v6).addr()) | u128::from(rng.random::<u8>()))
                .collect();
            probes.extend(list.iter().flat_map(|p| [p.0, p.1]));
            for b in probes {
                let addr = from_bits(v6, b);
                if r.compiled.alias_of(addr).is_some() {
                    // Looked up as IPv4: tests/aliases.rs.
                    continue;
                }
                let brute = list
                    .iter()
                    .filter(|p| p.0 <= b && b <= p.1)
                    .max_by_key(|p| p.2)
                    .expect("every address is covered");
                let got = r.compiled.lookup(addr);
                assert_eq!(got.prefix.len(), brute.2, "{addr}");
                assert_eq!(bits(got.prefix.addr()), brute.0, "{addr}");
                assert_eq!(got.region, brute.3, "{addr}");
            }
        }
    }
}

#[test]
fn regions_agree_with_the_databases() {
    for seed in 20..26 {
        let r = random_setup(seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut probes: Vec<IpAddr> = Vec::new();
        // The first and last address of every network and their neighbours.
        for n in &r.nets {
            let v6 = !n.is_ipv4();
            let max = if v6 { u128::MAX } else { u128::from(u32::MAX) };
            let start = bits(n.addr());
            let host = if v6 { 128 } else { 32 } - u32::from(n.len());
            let end = start
                | if host == 128 {
                    u128::MAX
                } else {
                    (1u128 << host) - 1
                };
            for b in [
                start.checked_sub(1),
                Some(start),
                Some(end),
                end.checked_add(1).filter(|e| *e <= max),
            ]
            .into_iter()
            .flatten()
            {
                probes.push(from_bits(v6, b));
            }
        }
        for _ in 0..300 {
            let v6 = rng.random_bool(0.5);
            probes.push(random_net(&mut rng, v6).addr());
        }
        for addr in probes {
            let facts = r.compiled.facts(addr).expect("read the databases again");
            let want = r.compiled.region_of(&facts);
            let got = r.compiled.lookup(addr);
            assert_eq!(
                Some(got.region),
                want,
                "seed {seed}, {addr}: {facts:?}, matched {}",
                got.prefix
            );
            // The region's choice for map a follows the precedence rules.
            let key = r
                .compiled
                .choice(got.region, 0)
                .map(|k| r.config.maps[0].rules[k].key.to_string());
            if facts.in_database && facts.cidr.is_none() && facts.asn != Some(3) {
                let expected = match facts.country.as_deref() {
                    Some(c @ ("US" | "CA" | "DE")) => c.to_owned(),
                    _ if facts.continent.as_deref() == Some("EU") => "continent:EU".to_owned(),
                    _ => "default".to_owned(),
                };
                assert_eq!(
                    key.as_deref(),
                    Some(expected.as_str()),
                    "seed {seed}, {addr}: {facts:?}"
                );
            }
            if facts.asn == Some(3) && facts.cidr.is_none() {
                assert_eq!(key.as_deref(), Some("AS3"));
            }
        }
        drop(r.scratch);
    }
}

#[test]
fn committed_demo_databases_are_current() {
    let dir = common::repo_root().join("examples");
    for (name, bytes) in geodns_maps::mmdb::demo::databases().expect("demo databases") {
        let committed = std::fs::read(dir.join(name)).expect("examples/ holds the demo databases");
        assert!(
            committed == bytes,
            "examples/{name} is stale: run `cargo run -p geodns-maps --example make-demo-db`"
        );
    }
}

#[test]
fn synthetic_database_with_its_generated_config() {
    let s = Scratch::new("synthcfg");
    let (mut w, _) = geodns_maps::mmdb::synth::country_asn(5_000, 9).expect("synth");
    s.write("s.mmdb", &w.to_bytes().expect("bytes"));
    let text = geodns_maps::mmdb::synth::config_toml("s.mmdb");
    let config = s.config(&text);
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let c = compile(&config);
    assert!(c.region_count() > 20);
}

#[test]
fn synthetic_database_compiles() {
    let s = Scratch::new("synth");
    let (mut w, stats) = geodns_maps::mmdb::synth::country_asn(20_000, 3).expect("synth");
    let bytes = w.to_bytes().expect("bytes");
    // An AS number the database holds.
    let reader = maxminddb::Reader::from_source(bytes.clone()).expect("valid");
    let first = reader
        .networks(maxminddb::WithinOptions::default())
        .expect("walk")
        .next()
        .expect("a network");
    let asn: u32 = first
        .expect("network")
        .decode_path(&[maxminddb::PathElement::Key("autonomous_system_number")])
        .expect("decode")
        .expect("an ASN");
    s.write("synth.mmdb", &bytes);
    let config = s.config(&base_config(&format!(
        "[geoip]\ncountry = \"synth.mmdb\"\nasn = \"synth.mmdb\"\n[maps.m]\n\"AA\" = [\"us1\"]\n\"AB\" = [\"eu1\"]\n\"continent:EU\" = [\"eu2\"]\n\"AS{asn}\" = [\"as1\"]\ndefault = [\"core1\"]\n[[records]]\nname = \"www\"\nmap = \"m\"\n",
    )));
    let c = compile(&config);
    let st = c.stats();
    assert_eq!(st.v4.networks, stats.networks_v4 as u64);
    assert_eq!(st.v6.networks, stats.networks_v6 as u64);
    assert_eq!(st.databases.len(), 1);
    assert!(st.v4.prefixes_after < st.v4.prefixes_before);
    assert_eq!(st.regions, 6, "0 + AA, AB, EU, the AS, default");
}
