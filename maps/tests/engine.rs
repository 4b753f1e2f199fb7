//! The DNS decision in userspace: names, policies, node states, fallback, and agreement
//! with what the kernel maps hold.
mod common;

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use common::{asn_record, base_config, db, engine, ip, place, Scratch};
use geodns_common::{AnswerKey, AnswerSet, NameKey, MAX_NAME_WIRE_LEN, POLICY_SPREAD};
use geodns_maps::{
    engine::{QTYPE_A, QTYPE_AAAA, QTYPE_NS, QTYPE_SOA},
    name, AnswerSource, Engine, KernelMaps, NodeState, NodeStates, Question, Resolution, SplitMix,
};

const TXT: u16 = 16;

fn setup() -> (Scratch, Engine) {
    let s = Scratch::new("engine");
    db(
        &s,
        "country.mmdb",
        6,
        &[
            ("192.0.2.0/24", place("DE", "EU")),
            ("198.51.100.0/24", place("US", "NA")),
            ("203.0.113.0/24", place("JP", "AS")),
            ("2001:db8::/32", place("US", "NA")),
            ("3fff::/20", place("BR", "SA")),
        ],
    );
    db(
        &s,
        "asn.mmdb",
        6,
        &[("198.51.100.128/25", asn_record(64_500))],
    );
    let config = s.config(&base_config(&format!(
        r#"
[geoip]
country = "country.mmdb"
asn = "asn.mmdb"

[maps.main]
"US" = {{ us2 = 10, us1 = 10 }}
"continent:EU" = {{ eu1 = 10, eu2 = 5 }}
"JP" = ["as1"]
"AS64500" = {{ eu2 = 1 }}

[maps.spread]
default = {{ eu1 = 3, us2 = 1 }}

[[records]]
name = "www"
map = "main"

[[records]]
name = "*.img"
map = "main"
ttl = 300

[[records]]
name = "dl"
map = "spread"
policy = "spread"
max_answers = 2

[[records]]
name = "a.deep"
map = "main"

[[records]]
name = "{}x"
map = "main"
"#,
        "l.".repeat(16)
    )));
    let e = engine(config);
    (s, e)
}

fn q(name: &str, qtype: u16, client: &str) -> Question {
    Question::new(name, qtype, ip(client))
}

fn addrs(r: &Resolution) -> Vec<String> {
    match r {
        Resolution::Addresses { addrs, .. } => addrs.iter().map(ToString::to_string).collect(),
        other => panic!("expected addresses, got {other:?}"),
    }
}

fn source(r: &Resolution) -> AnswerSource {
    match r {
        Resolution::Addresses { source, .. } => *source,
        other => panic!("expected addresses, got {other:?}"),
    }
}

#[test]
fn names_and_types() {
    let (_s, e) = setup();
    let eu = "192.0.2.1";
    assert_eq!(
        e.resolve(&q("www.example.org.", QTYPE_A, eu)),
        Resolution::Refused
    );
    assert_eq!(
        e.resolve(&q("example.net.", QTYPE_A, eu)),
        Resolution::Refused
    );
    assert_eq!(
        e.resolve(&q("nope.cdn.example.net.", QTYPE_A, eu)),
        Resolution::NxDomain
    );
    assert_eq!(
        e.resolve(&q("cdn.example.net.", QTYPE_SOA, eu)),
        Resolution::Soa
    );
    assert_eq!(
        e.resolve(&q("CDN.Example.NET", QTYPE_NS, eu)),
        Resolution::Ns
    );
    assert_eq!(
        e.resolve(&q("cdn.example.net.", QTYPE_A, eu)),
        Resolution::NoData
    );
    assert_eq!(
        e.resolve(&q("www.cdn.example.net.", TXT, eu)),
        Resolution::NoData
    );
    assert_eq!(
        e.resolve(&q("www.cdn.example.net.", QTYPE_SOA, eu)),
        Resolution::NoData
    );
    // An empty non-terminal exists.
    assert_eq!(
        e.resolve(&q("deep.cdn.example.net.", QTYPE_A, eu)),
        Resolution::NoData
    );
    assert_eq!(
        addrs(&e.resolve(&q("WWW.cdn.EXAMPLE.net", QTYPE_A, eu))),
        ["198.18.1.1"]
    );
    // Wildcards at any depth below the closest encloser (RFC 4592); the base name is an
    // empty non-terminal.
    assert_eq!(
        addrs(&e.resolve(&q("x1.img.cdn.example.net.", QTYPE_A, eu))),
        ["198.18.1.1"]
    );
    assert_eq!(
        addrs(&e.resolve(&q("*.img.cdn.example.net.", QTYPE_A, eu))),
        ["198.18.1.1"]
    );
    assert_eq!(
        addrs(&e.resolve(&q("a.b.img.cdn.example.net.", QTYPE_A, eu))),
        ["198.18.1.1"]
    );
    // `deep` is an empty non-terminal (of `a.deep`), and there is no `*.deep`.
    assert_eq!(
        e.resolve(&q("b.deep.cdn.example.net.", QTYPE_A, eu)),
        Resolution::NxDomain
    );
    assert_eq!(
        e.resolve(&q("img.cdn.example.net.", QTYPE_A, eu)),
        Resolution::NoData
    );
    // Glue of the in-zone NS.
    let r = e.resolve(&q("ns1.cdn.example.net.", QTYPE_A, eu));
    assert_eq!(addrs(&r), ["198.18.0.53"]);
    assert_eq!(source(&r), AnswerSource::Glue);
    assert_eq!(
        e.resolve(&q("ns1.cdn.example.net.", QTYPE_AAAA, eu)),
        Resolution::NoData
    );
    // Malformed wire names are not ours.
    let bad = Question::from_wire(b"\x03www\x03cdn", QTYPE_A, ip(eu));
    assert_eq!(e.resolve(&bad), Resolution::Refused);
    // Too long for the kernel, answered here all the same.
    let long = format!("{}x.cdn.example.net.", "l.".repeat(16));
    assert_eq!(addrs(&e.resolve(&q(&long, QTYPE_A, eu))), ["198.18.1.1"]);
    assert!(!e
        .kernel_names()
        .iter()
        .any(|(k, _)| k.wildcard == 0 && k.name[..MAX_NAME_WIRE_LEN].starts_with(b"\x01l\x01l")));
}

#[test]
fn best_policy() {
    let (_s, e) = setup();
    // Tie on weight: node name decides (us1 before us2); all of its addresses.
    let r = e.resolve(&q("www.cdn.example.net.", QTYPE_A, "198.51.100.1"));
    assert_eq!(addrs(&r), ["198.18.2.1", "198.18.2.2"]);
    let Resolution::Addresses {
        ttl,
        scope,
        source: from,
        ..
    } = r
    else {
        unreachable!()
    };
    assert_eq!(
        (ttl, scope),
        (30, 25),
        "198.51.100.0/25: the ASN /25 splits the /24"
    );
    assert!(matches!(from, AnswerSource::Geo { region, .. } if region != 0));
    assert_eq!(
        addrs(&e.resolve(&q("www.cdn.example.net.", QTYPE_AAAA, "2001:db8::1"))),
        ["2001:2:0:2::1"]
    );
    // ASN beats country.
    assert_eq!(
        addrs(&e.resolve(&q("www.cdn.example.net.", QTYPE_A, "198.51.100.200"))),
        ["198.18.1.2"]
    );
    // us1 down: us2, which has no IPv6; AAAA goes to the fallback.
    let mut st = e.states().clone();
    st.set("us1", NodeState::Down);
    let e2 = e.with_states(&st);
    assert_eq!(
        addrs(&e2.resolve(&q("www.cdn.example.net.", QTYPE_A, "198.51.100.1"))),
        ["198.18.2.3"]
    );
    let r = e2.resolve(&q("www.cdn.example.net.", QTYPE_AAAA, "198.51.100.1"));
    assert!(
        matches!(
            source(&r),
            AnswerSource::Fallback {
                fail_open: false,
                ..
            }
        ),
        "{r:?}"
    );
    // Draining counts as out.
    st.set("us2", NodeState::Drain);
    let e3 = e.with_states(&st);
    let r = e3.resolve(&q("www.cdn.example.net.", QTYPE_A, "198.51.100.1"));
    assert!(matches!(source(&r), AnswerSource::Fallback { .. }));
    // The IPv4-mapped form of a client is the IPv4 client.
    let r = e.resolve(&q("www.cdn.example.net.", QTYPE_A, "::ffff:198.51.100.1"));
    assert_eq!(addrs(&r), ["198.18.2.1", "198.18.2.2"]);
}

#[test]
fn fallback_round_robin_is_smooth_and_weighted() {
    let (_s, e) = setup();
    // Unknown address: region 0.
    let seq: Vec<String> = (0..8)
        .map(|_| addrs(&e.resolve(&q("www.cdn.example.net.", QTYPE_A, "8.8.8.8")))[0].clone())
        .collect();
    let (a, b) = ("198.18.100.1", "198.18.100.2");
    assert_eq!(
        seq,
        [a, a, b, a, a, a, b, a],
        "nginx smooth weighted round robin, 3:1"
    );
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        let r = e.resolve(&q("www.cdn.example.net.", QTYPE_AAAA, "8.8.8.8"));
        assert!(matches!(
            source(&r),
            AnswerSource::Fallback {
                region: 0,
                fail_open: false
            }
        ));
        *count.entry(addrs(&r)[0].clone()).or_default() += 1;
    }
    assert_eq!(count["2001:2:0:100::1"], 300);
    assert_eq!(count["2001:2:0:100::2"], 100);
    // JP picks as1, which has no IPv4: A falls back, AAAA is geo.
    let r = e.resolve(&q("www.cdn.example.net.", QTYPE_A, "203.0.113.1"));
    assert!(matches!(source(&r), AnswerSource::Fallback { region, .. } if region != 0));
    assert_eq!(
        addrs(&e.resolve(&q("www.cdn.example.net.", QTYPE_AAAA, "203.0.113.1"))),
        ["2001:2:0:3::1"]
    );
    // BR has no key and no default in `main`: fallback, scope of its /20.
    let r = e.resolve(&q("www.cdn.example.net.", QTYPE_A, "3fff::1"));
    assert!(
        matches!(
            r,
            Resolution::Addresses {
                scope: 20,
                source: AnswerSource::Fallback { .. },
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn fail_open_when_every_fallback_node_is_down_by_health() {
    let (_s, e) = setup();
    // Taken out by the operator: never answered, not even failing open.
    let mut admin = e.states().clone();
    admin.set("core1", NodeState::Down);
    admin.set("core2", NodeState::Drain);
    let out = e.with_states(&admin);
    assert_eq!(
        out.resolve(&q("www.cdn.example.net.", QTYPE_A, "8.8.8.8")),
        Resolution::NoData
    );
    assert_eq!(out.fail_open_count(), 0);
    let mut st = e.states().clone();
    st.set_unhealthy("core1");
    st.set_unhealthy("core2");
    let e = e.with_states(&st);
    assert_eq!(e.fail_open_count(), 0);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = e.resolve(&q("www.cdn.example.net.", QTYPE_A, "8.8.8.8"));
        assert!(
            matches!(
                source(&r),
                AnswerSource::Fallback {
                    fail_open: true,
                    ..
                }
            ),
            "{r:?}"
        );
        seen.push(addrs(&r)[0].clone());
    }
    assert_eq!(
        seen,
        [
            "198.18.100.1",
            "198.18.100.1",
            "198.18.100.2",
            "198.18.100.1"
        ]
    );
    assert_eq!(e.fail_open_count(), 4);
    // Geo answers do not count.
    let _ = e.resolve(&q("www.cdn.example.net.", QTYPE_A, "192.0.2.1"));
    assert_eq!(e.fail_open_count(), 4);
    // The counter survives a state change.
    assert_eq!(e.with_states(&st).fail_open_count(), 4);
}

#[test]
fn no_address_of_the_family_anywhere_is_nodata() {
    let s = Scratch::new("nodata");
    let text =
        base_config("[maps.m]\ndefault = [\"us2\"]\n[[records]]\nname = \"v4\"\nmap = \"m\"\n")
            .replace("core1 = 3\ncore2 = 1", "us2 = 1");
    let e = engine(s.config(&text));
    assert_eq!(
        e.resolve(&q("v4.cdn.example.net.", QTYPE_AAAA, "192.0.2.1")),
        Resolution::NoData
    );
    assert!(matches!(
        e.resolve(&q("v4.cdn.example.net.", QTYPE_A, "192.0.2.1")),
        Resolution::Addresses { .. }
    ));
}

#[test]
fn spread_policy_picks_by_weight() {
    let (_scratch, engine) = setup();
    let engine = engine.with_picker(Box::new(SplitMix::seeded(42)));
    let mut first: HashMap<String, u32> = HashMap::new();
    let draws = 4000u32;
    for _ in 0..draws {
        let got = addrs(&engine.resolve(&q("dl.cdn.example.net.", QTYPE_A, "192.0.2.1")));
        assert_eq!(got.len(), 2, "max_answers");
        assert_ne!(got[0], got[1]);
        *first.entry(got[0].clone()).or_default() += 1;
    }
    // Slots: eu1 (3), us2 (1).
    let share = f64::from(first["198.18.1.1"]) / f64::from(draws);
    assert!((share - 0.75).abs() < 0.03, "{first:?}");
    // The same seed gives the same answers.
    let seq = |e: &Engine| -> Vec<Vec<String>> {
        (0..20)
            .map(|_| addrs(&e.resolve(&q("dl.cdn.example.net.", QTYPE_A, "192.0.2.1"))))
            .collect()
    };
    let fresh = engine.with_states(&NodeStates::from_config(engine.config()));
    let one = seq(&fresh.with_picker(Box::new(SplitMix::seeded(7))));
    let two = seq(&engine
        .with_states(engine.states())
        .with_picker(Box::new(SplitMix::seeded(7))));
    assert_eq!(one, two);
}

/// What the kernel does with `KernelMaps`: exact name, then the one-level wildcard; the
/// longest prefix; the answer set; `None` when it passes to userspace.
fn kernel(
    maps: &KernelMaps,
    name_wire: &[u8],
    aaaa: bool,
    client: IpAddr,
) -> Option<(AnswerSet, u8)> {
    let names: HashMap<NameKey, u16> = maps.names.iter().map(|(k, v)| (*k, v.record)).collect();
    let record = geodns_maps::engine::kernel_lookup(&names, name_wire)?;
    let (region, len) = match client {
        IpAddr::V4(a) => maps
            .prefixes_v4
            .iter()
            .filter(|(p, l, _)| {
                let m = u32::MAX.checked_shl(32 - u32::from(*l)).unwrap_or(0);
                u32::from(a) & m == u32::from_be_bytes(*p)
            })
            .max_by_key(|(_, l, _)| *l)
            .map(|(_, l, v)| (v.region, *l))?,
        IpAddr::V6(a) => maps
            .prefixes_v6
            .iter()
            .filter(|(p, l, _)| {
                let m = u128::MAX.checked_shl(128 - u32::from(*l)).unwrap_or(0);
                u128::from(a) & m == u128::from_be_bytes(*p)
            })
            .max_by_key(|(_, l, _)| *l)
            .map(|(_, l, v)| (v.region, *l))?,
    };
    let answers: HashMap<AnswerKey, AnswerSet> = maps.answers.iter().copied().collect();
    let set = answers.get(&AnswerKey { record, region })?;
    let n = if aaaa { set.n_v6 } else { set.n_v4 };
    (n > 0).then_some((*set, len))
}

#[test]
fn userspace_agrees_with_the_kernel_maps() {
    let (_s, e) = setup();
    let mut st = e.states().clone();
    for states in [
        None,
        Some(("us1", NodeState::Down)),
        Some(("eu1", NodeState::Drain)),
    ] {
        if let Some((n, s)) = states {
            st.set(n, s);
        }
        let e = e.with_states(&st);
        let maps = e.kernel_maps();
        assert_eq!(maps.prefixes_v4.len(), e.compiled().prefixes_v4().len());
        for (_, l, v) in &maps.prefixes_v4 {
            assert_eq!(*l, v.prefix_len);
        }
        let clients = [
            "192.0.2.1",
            "198.51.100.1",
            "198.51.100.200",
            "203.0.113.9",
            "8.8.8.8",
            "2001:db8::1",
            "3fff::1",
            "::1",
            "198.18.0.1",
        ];
        let names = [
            "www.cdn.example.net.",
            "q.img.cdn.example.net.",
            "dl.cdn.example.net.",
            "a.deep.cdn.example.net.",
            "x.y.img.cdn.example.net.",
            "nope.cdn.example.net.",
        ];
        for c in clients {
            for n in names {
                for aaaa in [false, true] {
                    let wire = name::to_wire(n);
                    let k = kernel(&maps, &wire, aaaa, ip(c));
                    let r = e.resolve(&Question::from_wire(
                        &wire,
                        if aaaa { QTYPE_AAAA } else { QTYPE_A },
                        ip(c),
                    ));
                    match (k, &r) {
                        (
                            Some((set, len)),
                            Resolution::Addresses {
                                addrs,
                                ttl,
                                scope,
                                source,
                            },
                        ) => {
                            assert!(matches!(source, AnswerSource::Geo { .. }), "{c} {n}: {r:?}");
                            assert_eq!((*ttl, *scope), (set.ttl, len), "{c} {n}");
                            let slots: Vec<IpAddr> = if aaaa {
                                set.v6[..usize::from(set.n_v6)]
                                    .iter()
                                    .map(|a| IpAddr::from(*a))
                                    .collect()
                            } else {
                                set.v4[..usize::from(set.n_v4)]
                                    .iter()
                                    .map(|a| IpAddr::from(*a))
                                    .collect()
                            };
                            let want = usize::from(set.count).clamp(1, slots.len());
                            assert_eq!(addrs.len(), want, "{c} {n}");
                            if set.policy == POLICY_SPREAD {
                                assert!(addrs.iter().all(|a| slots.contains(a)), "{c} {n}");
                            } else {
                                assert_eq!(addrs[..], slots[..want], "{c} {n}");
                            }
                        }
                        (Some(_), other) => {
                            panic!("{c} {n}: kernel answers, userspace says {other:?}")
                        }
                        (None, Resolution::Addresses { source, .. }) => {
                            assert!(
                                !matches!(source, AnswerSource::Geo { .. }),
                                "{c} {n}: kernel passes but {r:?}"
                            );
                        }
                        (None, _) => {}
                    }
                }
            }
        }
    }
}

#[test]
fn kernel_maps_contents() {
    let (_s, e) = setup();
    let maps = e.kernel_maps();
    // Three exact names fit the kernel (the long one does not, the wildcard is keyed by
    // its parent); every existing name that fits has a wildcard key: the origin, `www`,
    // `*.img`, `img` (holding the wildcard's record), `dl`, `a.deep`, `deep`, `ns1`, and
    // the 13 empty non-terminals above the long name that fit.
    let exact = maps.names.iter().filter(|(k, _)| k.wildcard == 0).count();
    assert_eq!(exact, 3);
    assert_eq!(maps.names.len() - exact, 8 + 13);
    assert_eq!(
        maps.names
            .iter()
            .filter(|(k, v)| k.wildcard == 1 && v.record != geodns_maps::engine::KERNEL_BLOCK)
            .count(),
        1,
        "only `img` holds a record"
    );
    let img = name::kernel_key(&name::to_wire("img.cdn.example.net."), true).expect("fits");
    assert!(maps.names.iter().any(|(k, v)| *k == img && v.record == 1));
    let www = name::kernel_key(&name::to_wire("www.cdn.example.net."), true).expect("fits");
    assert!(maps
        .names
        .iter()
        .any(|(k, v)| *k == www && v.record == geodns_maps::engine::KERNEL_BLOCK));
    // No entry where nothing is up: region 0 never has one.
    assert!(maps.answers.iter().all(|(k, _)| k.region != 0));
    let mut keys: Vec<AnswerKey> = maps.answers.iter().map(|(k, _)| *k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), maps.answers.len());
    for (_, set) in &maps.answers {
        assert!(set.count >= 1);
        for (n, cum) in [(set.n_v4, &set.cum_v4), (set.n_v6, &set.cum_v6)] {
            let cum = &cum[..usize::from(n)];
            assert!(cum.windows(2).all(|w| w[0] < w[1]), "{cum:?}");
        }
    }
    // Everything down: no answer sets at all.
    let mut st = NodeStates::default();
    for n in &e.config().nodes {
        st.set(&n.name, NodeState::Down);
    }
    assert!(e.with_states(&st).kernel_answers().is_empty());
}

#[test]
fn explain() {
    let (_s, e) = setup();
    let x = e.explain(ip("10.0.0.1"), Some((ip("198.51.100.128"), 25)));
    assert_eq!(x.client, ip("198.51.100.128"));
    assert_eq!(x.prefix.to_string(), "198.51.100.128/25");
    let facts = x.facts.as_ref().expect("facts");
    assert_eq!(
        (facts.country.as_deref(), facts.asn),
        (Some("US"), Some(64_500))
    );
    assert_eq!(
        x.maps[0].key.map(|k| k.to_string()).as_deref(),
        Some("AS64500")
    );
    let www = &x.records[0];
    assert!(www.kernel);
    assert_eq!(www.a.source, "geo");
    assert_eq!(www.a.addresses, [ip("198.18.1.2")]);
    let json = serde_json::to_value(&x).expect("serializes");
    assert_eq!(json["prefix"], "198.51.100.128/25");
    assert_eq!(json["maps"][0]["key"], "AS64500");
    // ECS length 0 means "use the source address".
    let x = e.explain(ip("192.0.2.7"), Some((ip("0.0.0.0"), 0)));
    assert_eq!(x.client, ip("192.0.2.7"));
    assert!(x.ecs.is_none());
    let x = e.explain(ip("8.8.8.8"), None);
    assert_eq!(x.region, 0);
    assert!(!x.records[0].kernel);
    assert_eq!(x.records[0].a.source, "fallback");
    assert!(!x.facts.expect("facts").in_database);
    // The explanation of the shipped demo works from its own directory.
    let config = geodns_maps::Config::from_path(&common::repo_root().join("examples/demo.toml"))
        .expect("demo");
    let compiled = common::compile(&config);
    let st = NodeStates::from_config(&config);
    let demo = Engine::new(Arc::new(config), Arc::new(compiled), &st);
    let x = demo.explain(ip("203.0.113.5"), None);
    assert!(x.facts_error.is_none(), "{:?}", x.facts_error);
    let www = &x.records[0];
    assert_eq!(www.a.addresses, [ip("198.18.5.10")], "syd1 drains: sin1");
}

#[test]
fn node_for_the_redirector() {
    let (_s, e) = setup();
    let wire = |n: &str| name::to_wire(n);
    // Served names: records only, found like an A question (case, one-level wildcard).
    assert!(e.serves(&wire("www.cdn.example.net.")));
    assert!(e.serves(&wire("WWW.CDN.example.net.")));
    assert!(e.serves(&wire("x1.img.cdn.example.net.")));
    assert!(e.serves(&wire("a.b.img.cdn.example.net.")));
    assert!(!e.serves(&wire("b.deep.cdn.example.net.")));
    assert!(
        !e.serves(&wire("deep.cdn.example.net.")),
        "empty non-terminal"
    );
    assert!(!e.serves(&wire("ns1.cdn.example.net.")), "glue only");
    assert!(!e.serves(&wire("cdn.example.net.")));
    assert!(!e.serves(&wire("www.example.org.")));

    // The node and the addresses the DNS answer carries, and where they come from.
    let us = "198.51.100.1";
    let (node, addrs, source) = e
        .node_for(&q("www.cdn.example.net.", QTYPE_A, us))
        .expect("a node for a US client");
    assert_eq!(node.name, "us1");
    assert_eq!(addrs, [ip("198.18.2.1"), ip("198.18.2.2")]);
    assert!(matches!(source, AnswerSource::Geo { .. }));
    let r = e.resolve(&q("www.cdn.example.net.", QTYPE_A, us));
    assert_eq!(
        addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        self::addrs(&r)
    );
    // as1 has no IPv4: the A decision falls back, the AAAA decision is as1's.
    let jp = "203.0.113.1";
    let (node, _, source) = e
        .node_for(&q("www.cdn.example.net.", QTYPE_A, jp))
        .expect("fallback node");
    assert_eq!(node.name, "core1");
    assert!(matches!(source, AnswerSource::Fallback { .. }));
    let (node, addrs, _) = e
        .node_for(&q("www.cdn.example.net.", QTYPE_AAAA, jp))
        .expect("as1");
    assert_eq!(
        (node.name.as_str(), addrs),
        ("as1", vec![ip("2001:2:0:3::1")])
    );
    // Not an address question, not a record.
    assert!(e.node_for(&q("www.cdn.example.net.", TXT, us)).is_none());
    assert!(e
        .node_for(&q("nope.cdn.example.net.", QTYPE_A, us))
        .is_none());
}

/// Every candidate of a region down by health: the region still answers them all
/// (fail open), in userspace and in the kernel's set; one taken out by the operator is
/// never among them, and with all of them taken out the `[fallback]` answers.
#[test]
fn a_region_fails_open_when_every_candidate_is_down_by_health() {
    let (_s, e) = setup();
    let eu = || q("www.cdn.example.net.", QTYPE_A, "192.0.2.1");
    let healthy = e.resolve(&eu());
    assert!(matches!(
        source(&healthy),
        AnswerSource::Geo {
            fail_open: false,
            ..
        }
    ));
    assert_eq!(e.fail_open_sets(), 0);
    let sets_before = e.kernel_answers().len();

    let mut st = e.states().clone();
    st.set_unhealthy("eu1");
    st.set_unhealthy("eu2");
    let failed = e.with_states(&st);
    let r = failed.resolve(&eu());
    assert!(
        matches!(
            source(&r),
            AnswerSource::Geo {
                fail_open: true,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(
        addrs(&r),
        addrs(&healthy),
        "the same best candidate as when healthy"
    );
    assert!(failed.fail_open_sets() >= 1);
    assert_eq!(
        failed.kernel_answers().len(),
        sets_before,
        "the kernel keeps an answer for the region"
    );

    // eu1 drained by the operator, eu2 down by health: only eu2 fails open.
    let mut st = e.states().clone();
    st.set("eu1", NodeState::Drain);
    st.set_unhealthy("eu2");
    let r = e.with_states(&st).resolve(&eu());
    let eu2 = e.config().node("eu2").expect("eu2").ipv4[0].to_string();
    assert_eq!(addrs(&r), vec![eu2], "{r:?}");

    // Both taken out by the operator: the fallback, no fail open.
    let mut st = e.states().clone();
    st.set("eu1", NodeState::Drain);
    st.set("eu2", NodeState::Down);
    let r = e.with_states(&st).resolve(&eu());
    assert!(
        matches!(
            source(&r),
            AnswerSource::Fallback {
                fail_open: false,
                ..
            }
        ),
        "{r:?}"
    );
}
