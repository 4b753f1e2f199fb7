//! Static records from a zone file: parsing and its errors, CNAMEs, wildcards at any
//! depth, delegations, and the kernel's name table that mirrors the same rules.
mod common;

use std::collections::HashMap;

use common::{base_config, db, engine, ip, place, Scratch};
use geodns_common::NameKey;
use geodns_maps::{
    engine::{kernel_lookup, Records, QTYPE_A, QTYPE_AAAA, QTYPE_NS, QTYPE_SOA},
    name, AnswerSource, Config, Engine, Question, Resolution,
};

const CNAME: u16 = 5;
const MX: u16 = 15;
const TXT: u16 = 16;
const CAA: u16 = 257;
const HTTPS: u16 = 65;

const ZONE_FILE: &str = r#"
$TTL 120
; static data beside the geo records
www             TXT   "v=spf1 -all"
                CAA   0 issue "letsencrypt.org"
                HTTPS 1 . alpn="h3,h2" ipv4hint=198.18.1.1
@               MX    10 mail
mail            A     198.18.7.1
alias           CNAME www
chain1          CNAME chain2
chain2          CNAME alias
loop1           CNAME loop2
loop2           CNAME loop1
away            CNAME www.example.org.
dangling        CNAME nothing
_acme-challenge.www TXT "token"
sub             NS    ns.sub
                NS    ns.other.example.
ns.sub          A     198.18.9.1
*.static        TXT   "wild"
x.y.static      TXT   "deep"
$ORIGIN img.cdn.example.net.
sibling         TXT   "exists"
e.ent           TXT   "makes ent an empty non-terminal"
"#;

fn config_text() -> String {
    base_config(
        r#"
[geoip]
country = "country.mmdb"

[maps.main]
"continent:EU" = { eu1 = 10 }

[[records]]
name = "www"
map = "main"

[[records]]
name = "*.img"
map = "main"
ttl = 300
"#,
    )
    .replace("ttl = 30\n", "ttl = 30\nfile = \"cdn.zone\"\n")
}

/// The config of [`setup`] read again (a reload).
fn reload(s: &Scratch) -> Result<Config, String> {
    Config::from_str_named(&config_text(), &s.path("config.toml").display().to_string())
        .map_err(|e| e.to_string())
}

fn setup(zone: &str) -> (Scratch, Result<Config, String>) {
    let s = Scratch::new("zone");
    db(
        &s,
        "country.mmdb",
        6,
        &[("192.0.2.0/24", place("DE", "EU"))],
    );
    s.write("cdn.zone", zone.as_bytes());
    let config = reload(&s);
    (s, config)
}

fn zone_engine() -> (Scratch, Engine) {
    let (s, c) = setup(ZONE_FILE);
    let e = engine(c.unwrap_or_else(|e| panic!("the zone loads: {e}")));
    (s, e)
}

const EU: &str = "192.0.2.1";

fn ask(e: &Engine, n: &str, qtype: u16) -> Resolution {
    e.resolve(&Question::new(n, qtype, ip(EU)))
}

fn records(r: Resolution) -> Records {
    match r {
        Resolution::Records(r) => *r,
        other => panic!("expected records, got {other:?}"),
    }
}

fn types(r: &Records) -> Vec<u16> {
    r.answer.iter().map(|a| a.rtype).collect()
}

fn full(n: &str) -> String {
    format!("{n}.cdn.example.net.")
}

#[test]
fn static_types_beside_a_geo_name() {
    let (_s, e) = zone_engine();
    for (t, n) in [(TXT, 1), (CAA, 1), (HTTPS, 1)] {
        let r = records(ask(&e, &full("www"), t));
        assert_eq!(types(&r), vec![t; n], "type {t}");
        assert!(r.authoritative);
        assert_eq!(r.answer[0].ttl, 120, "$TTL applies");
        assert_eq!(r.answer[0].owner, name::to_wire(&full("www")));
    }
    // The geo answer itself is unchanged.
    assert!(matches!(
        ask(&e, &full("www"), QTYPE_A),
        Resolution::Addresses {
            source: AnswerSource::Geo { .. },
            ..
        }
    ));
    let mx = records(ask(&e, "cdn.example.net.", MX));
    assert_eq!(types(&mx), vec![MX]);
    // Apex SOA and NS still come from [zone].
    assert_eq!(ask(&e, "cdn.example.net.", QTYPE_SOA), Resolution::Soa);
    assert_eq!(ask(&e, "cdn.example.net.", QTYPE_NS), Resolution::Ns);
    let acme = records(ask(&e, &full("_acme-challenge.www"), TXT));
    assert_eq!(acme.answer[0].rdata, b"\x05token");
    // `_acme-challenge.www` is below `www`: A there is NODATA... no, NXDOMAIN? It exists.
    assert_eq!(
        ask(&e, &full("_acme-challenge.www"), QTYPE_A),
        Resolution::NoData
    );
}

#[test]
fn cname_chains_to_a_geo_answer_loops_and_dangling_targets() {
    let (_s, e) = zone_engine();
    let r = records(ask(&e, &full("chain1"), QTYPE_A));
    assert_eq!(types(&r), vec![CNAME, CNAME, CNAME]);
    let geo = r.geo.expect("the chain ends at the geo name www");
    assert_eq!(geo.owner, name::to_wire(&full("www")));
    assert_eq!(geo.addrs, vec![ip("198.18.1.1")]);
    assert_eq!(geo.scope, 24, "the client's scope");
    assert!(!r.nxdomain && !r.soa);

    let r = records(ask(&e, &full("alias"), TXT));
    assert_eq!(types(&r), vec![CNAME, TXT], "static data at the target");

    let r = records(ask(&e, &full("alias"), CNAME));
    assert_eq!(types(&r), vec![CNAME], "CNAME asked: not followed");

    let r = records(ask(&e, &full("loop1"), QTYPE_A));
    assert_eq!(
        types(&r),
        vec![CNAME, CNAME],
        "a loop stops at the first repeat"
    );
    assert!(r.geo.is_none());

    let r = records(ask(&e, &full("away"), QTYPE_A));
    assert_eq!(
        types(&r),
        vec![CNAME],
        "out of zone: the resolver follows it"
    );

    let r = records(ask(&e, &full("dangling"), QTYPE_A));
    assert_eq!(types(&r), vec![CNAME]);
    assert!(r.nxdomain && r.soa, "RFC 6604: the rcode of the last name");
}

#[test]
fn delegations_give_referrals_with_glue() {
    let (_s, e) = zone_engine();
    for n in ["sub", "a.sub", "b.a.sub"] {
        let r = records(ask(&e, &full(n), QTYPE_A));
        assert!(!r.authoritative, "{n}: AA=0");
        assert!(r.answer.is_empty(), "{n}");
        assert_eq!(
            r.authority.iter().map(|a| a.rtype).collect::<Vec<_>>(),
            vec![QTYPE_NS, QTYPE_NS],
            "{n}"
        );
        assert_eq!(r.authority[0].owner, name::to_wire(&full("sub")));
        assert_eq!(r.additional.len(), 1, "{n}: glue of the in-zone NS only");
        assert_eq!(r.additional[0].rdata, vec![198, 18, 9, 1]);
    }
}

#[test]
fn wildcards_at_any_depth_but_not_past_existing_names() {
    let (_s, e) = zone_engine();
    for n in ["a.img", "b.a.img", "c.b.a.img"] {
        assert!(
            matches!(
                ask(&e, &full(n), QTYPE_A),
                Resolution::Addresses { ttl: 300, .. }
            ),
            "{n}: the geo wildcard answers at depth {}",
            n.matches('.').count()
        );
    }
    // An existing sibling is not covered by the wildcard.
    assert_eq!(ask(&e, &full("sibling.img"), QTYPE_A), Resolution::NoData);
    // Below it, the closest encloser is the sibling, which has no wildcard.
    assert_eq!(
        ask(&e, &full("x.sibling.img"), QTYPE_A),
        Resolution::NxDomain
    );
    // An empty non-terminal exists: NODATA, and it blocks the wildcard below it.
    assert_eq!(ask(&e, &full("ent.img"), QTYPE_A), Resolution::NoData);
    assert_eq!(ask(&e, &full("q.ent.img"), QTYPE_A), Resolution::NxDomain);
    // Static wildcards, synthesized with the name asked.
    let r = records(ask(&e, &full("p.q.static"), TXT));
    assert_eq!(r.answer[0].owner, name::to_wire(&full("p.q.static")));
    assert_eq!(r.answer[0].rdata, b"\x04wild");
    assert_eq!(ask(&e, &full("p.q.static"), QTYPE_A), Resolution::NoData);
    // `y.static` is an empty non-terminal (of `x.y.static`).
    assert_eq!(ask(&e, &full("y.static"), TXT), Resolution::NoData);
    assert_eq!(ask(&e, &full("z.y.static"), TXT), Resolution::NxDomain);
    assert!(e.serves(&name::to_wire(&full("c.b.a.img"))));
    assert!(!e.serves(&name::to_wire(&full("q.ent.img"))));
}

#[test]
fn the_kernel_table_finds_what_the_engine_answers() {
    let (_s, e) = zone_engine();
    let table: HashMap<NameKey, u16> = e
        .kernel_names()
        .into_iter()
        .map(|(k, v)| (k, v.record))
        .collect();
    let names = [
        "www",
        "a.img",
        "b.a.img",
        "c.b.a.img",
        "sibling.img",
        "x.sibling.img",
        "ent.img",
        "q.ent.img",
        "e.ent.img",
        "img",
        "*.img",
        "alias",
        "chain1",
        "sub",
        "a.sub",
        "nope",
        "x.nope",
        "_acme-challenge.www",
        "p.q.static",
        "mail",
        "ns.sub",
        "ns1",
    ];
    for n in names {
        let wire = name::to_wire(&full(n));
        let kernel = kernel_lookup(&table, &wire);
        let engine = matches!(
            ask(&e, &full(n), QTYPE_A),
            Resolution::Addresses {
                source: AnswerSource::Geo { .. },
                ..
            }
        );
        // The kernel answers a subset: never where the engine has no geo answer, and
        // everywhere the engine has one except at a literal `*` name.
        assert_eq!(
            kernel.is_some(),
            engine && n != "*.img",
            "{n}: kernel {kernel:?}"
        );
    }
    let r = records(ask(&e, &full("chain1"), QTYPE_AAAA));
    assert!(r.geo.is_some(), "AAAA through the chain too");
}

fn load_error(zone: &str) -> String {
    let (_s, c) = setup(zone);
    match c {
        Ok(_) => panic!("expected an error for:\n{zone}"),
        Err(e) => e,
    }
}

#[test]
fn errors_name_file_line_and_reason() {
    let e = load_error("ok TXT \"a\"\n\nbad TXT \"a\"\nworse  BOGUS 1 2 3\n");
    assert!(e.contains("cdn.zone:4:"), "{e}");
    let e = load_error("www A 198.18.0.1\n");
    assert!(
        e.contains("cdn.zone:1:") && e.contains("config.toml") && e.contains("geo record"),
        "a static A at a geo name names both places: {e}"
    );
    let e = load_error("x TXT a\nx CNAME y\n");
    assert!(
        e.contains("CNAME") && e.contains("beside other data"),
        "{e}"
    );
    let e = load_error("$INCLUDE ../../etc/passwd\n");
    assert!(e.contains("cdn.zone:1:"), "{e}");
    let e = load_error("@ NS ns.cdn.example.net.\n");
    assert!(e.contains("[[zone.ns]]"), "NS from both sources: {e}");
    let e = load_error("www.example.org. TXT a\n");
    assert!(e.contains("not inside the zone"), "{e}");
    let e = load_error("sub NS ns.example.org.\nimg NS ns.example.org.\n");
    assert!(
        e.contains("delegates"),
        "a geo wildcard under a delegation: {e}"
    );
}

#[test]
fn includes_soa_and_ns_from_the_file() {
    let s = Scratch::new("zone-soa");
    s.write(
        "cdn.zone",
        b"$TTL 60\n@ SOA ns1 hostmaster ( 2026120401 7200 3600 1209600 30 )\n@ NS ns1\nns1 A 198.18.0.53\n$INCLUDE part.zone\n",
    );
    s.write("part.zone", b"static TXT \"included\"\n");
    let text = "[zone]\norigin = \"cdn.example.net.\"\nfile = \"cdn.zone\"\n\n[nodes.a]\nipv4 = \"198.18.1.1\"\n[fallback]\na = 1\n";
    let c = Config::from_str_named(text, &s.path("config.toml").display().to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.zone.serial, 2_026_120_401);
    assert_eq!(c.zone.minimum, 30);
    assert_eq!(c.zone.mname, "ns1.cdn.example.net.");
    assert_eq!(c.zone.ns.len(), 1);
    assert_eq!(
        c.zone.ns[0].ipv4,
        vec!["198.18.0.53".parse::<std::net::Ipv4Addr>().expect("ip")]
    );
    let names: Vec<String> = c
        .statics
        .files
        .iter()
        .map(|f| {
            f.file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        ["cdn.zone", "part.zone", "cdn.zone.jnl"],
        "the include and the journal are watched too"
    );
    let e = engine(c);
    let r = records(ask(&e, &full("static"), TXT));
    assert_eq!(r.answer[0].rdata, b"\x08included");
    // SOA in the file and in the TOML: one source only.
    let text = text.replace("file =", "serial = 5\nfile =");
    let err = Config::from_str_named(&text, &s.path("config.toml").display().to_string())
        .expect_err("SOA twice");
    assert!(err.to_string().contains("cdn.zone:2:"), "{err}");
}

#[test]
fn the_journal_replays_over_the_file_and_names_a_bad_line() {
    use geodns_maps::zone::{journal_append, journal_entry, Change};
    let (s, c) = setup(ZONE_FILE);
    let journal = c.expect("loads").zone.journal;
    assert_eq!(journal, s.path("cdn.zone.jnl"));
    let owner = name::to_wire(&full("_acme-challenge.www"));
    let entry = journal_entry(
        &[
            Change::DeleteRr {
                owner: owner.clone(),
                rtype: TXT,
                rdata: b"\x05token".to_vec(),
            },
            Change::Add {
                owner: owner.clone(),
                rtype: TXT,
                ttl: 60,
                rdata: b"\x03new".to_vec(),
            },
        ],
        9,
    );
    journal_append(&journal, &entry).expect("append");
    let again = reload(&s).expect("loads with the journal");
    assert_eq!(
        again.zone.serial, 9,
        "the journal's serial is newer than [zone]'s 1"
    );
    let set = again.statics.rrset(&owner, TXT).expect("the TXT set");
    assert_eq!(set.rdata, vec![b"\x03new".to_vec()]);
    journal_append(&journal, "add zz\n").expect("append");
    let err = reload(&s).expect_err("a bad journal line");
    assert!(
        err.contains("cdn.zone.jnl:4: unreadable journal line"),
        "{err}"
    );
}
