//! The userspace authoritative server as a DNS operator sees it: `geodns run --no-xdp`
//! listening on loopback (IPv4 and IPv6), real packets over UDP and TCP, one table row
//! per behaviour of the authoritative server, each checking rcode, header flags,
//! sections and the OPT/ECS fields. Geo answers are compared with the `maps/` engine
//! compiled from the same config, so the server cannot answer anything of its own.
//! The RFC 8906 probes (dig's `+opcode=15`, `+zflag`, `+ednsflags`, `+ednsopt=100`,
//! `+edns=1 +noednsneg`, `+subnet=`) are rows of the table.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use geodns_maps::{Question, Resolution};
use geodns_tests::{
    client::{exchange, read_framed, write_framed, Transport},
    daemon::{metric, Daemon},
    files::{examples, TempDir},
    frame::{wire_name, Query},
};
use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};

const ZONE: &str = "cdn.example.net.";
const NS_IN_ZONE: usize = 10;
const TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a dropped query is waited for.
const NO_REPLY: Duration = Duration::from_millis(400);
const IDLE: Duration = Duration::from_secs(2);
const MAX_TCP: usize = 3;

const A: u16 = 1;
const NS: u16 = 2;
const SOA: u16 = 6;
const TXT: u16 = 16;
const AAAA: u16 = 28;

const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;
const BADVERS: u16 = 16;

/// The demo's databases, a zone with enough in-zone name servers that the apex NS
/// answer with glue does not fit 512 bytes, and no health checks (nothing may leave
/// the host).
fn write_config(dir: &Path) -> PathBuf {
    let examples = examples();
    let mut ns = String::new();
    for i in 1..=NS_IN_ZONE {
        writeln!(
            ns,
            "[[zone.ns]]\nname = \"ns{i}\"\nipv4 = \"198.18.0.{i}\"\nipv6 = \"2001:2::{i:x}\"\n"
        )
        .expect("write to a String");
    }
    let text = format!(
        r#"
[zone]
origin = "{ZONE}"
ttl = 30
serial = 2025010101
minimum = 60
file = "conformance.zone"

{ns}
[[zone.ns]]
name = "ns.example.org."

[nodes.fra1]
ipv4 = "198.18.1.10"
ipv6 = "2001:2:0:1::10"
weight = 10

[nodes.ams1]
ipv4 = "198.18.2.10"
ipv6 = "2001:2:0:2::10"
weight = 5

[nodes.nyc1]
ipv4 = ["198.18.3.10", "198.18.3.11"]
ipv6 = "2001:2:0:3::10"
weight = 10

[nodes.sin1]
ipv4 = "198.18.5.10"
ipv6 = "2001:2:0:5::10"

[nodes.core1]
ipv4 = "198.18.100.1"
ipv6 = "2001:2:0:100::1"

[nodes.core2]
ipv4 = "198.18.100.2"
ipv6 = "2001:2:0:100::2"

[geoip]
country = "{country}"
asn = "{asn}"
country_field = "country.iso_code"

[maps.main]
"US" = {{ nyc1 = 10 }}
"JP" = {{ sin1 = 10 }}
"continent:EU" = {{ fra1 = 10, ams1 = 5 }}

[maps.spread]
"continent:EU" = {{ fra1 = 2, ams1 = 1 }}

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

[fallback]
core1 = 2
core2 = 1
"#,
        country = examples.join("demo-country.mmdb").display(),
        asn = examples.join("demo-asn.mmdb").display(),
    );
    std::fs::write(dir.join("conformance.zone"), ZONE_FILE).expect("write the zone file");
    let path = dir.join("conformance.toml");
    std::fs::write(&path, text).expect("write the test config");
    path
}

/// Static records beside the geo ones: every type and rule of the zone file.
const ZONE_FILE: &str = r#"
$TTL 120
www        TXT   "v=spf1 -all"
www        CAA   0 issue "letsencrypt.org"
www        HTTPS 1 . alpn="h3,h2" port=8443 ipv4hint=198.18.1.10 ipv6hint=2001:2:0:1::10
@          MX    10 mail
mail       A     198.18.7.25
_https._tcp SRV  0 5 443 www
video      CNAME www
chain1     CNAME chain2
chain2     CNAME video
loop1      CNAME loop2
loop2      CNAME loop1
dangling   CNAME nothing
away       CNAME www.example.org.
static.img TXT   "exists"
e.ent.img  TXT   "below an empty non-terminal"
lab        NS    ns1.lab
           NS    ns.example.org.
ns1.lab    A     198.18.0.54
ns1.lab    AAAA  2001:2::54
"#;

/// The RDATA hickory-proto parses from one zone-file line of [`ZONE_FILE`]: what a
/// record must decode to after going through the server.
fn zone_rdata(line: &str) -> RData {
    let origin = hickory_proto::rr::Name::from_ascii(ZONE).expect("origin");
    let (_, sets) = hickory_proto::serialize::txt::Parser::new(
        format!("$TTL 60\n{line}\n"),
        None,
        Some(origin),
    )
    .parse()
    .expect("the line parses");
    let set = sets.values().next().expect("one RRset");
    set.records_without_rrsigs()
        .next()
        .expect("one record")
        .data
        .clone()
}

/// A port free on loopback for both UDP and TCP, IPv4 and IPv6, when asked.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok()
            && std::net::TcpListener::bind(("::1", port)).is_ok()
        {
            return port;
        }
    }
}

/// The header of a reply, bit by bit.
#[derive(Debug)]
#[expect(clippy::struct_excessive_bools, reason = "the header's flag bits")]
struct Header {
    id: u16,
    qr: bool,
    opcode: u8,
    aa: bool,
    tc: bool,
    rd: bool,
    ra: bool,
    z: bool,
    rcode: u8,
    qd: u16,
}

fn header(b: &[u8]) -> Header {
    assert!(b.len() >= 12, "a reply shorter than a header: {b:02x?}");
    let f = u16::from_be_bytes([b[2], b[3]]);
    Header {
        id: u16::from_be_bytes([b[0], b[1]]),
        qr: f & 0x8000 != 0,
        opcode: ((f >> 11) & 0xF) as u8,
        aa: f & 0x0400 != 0,
        tc: f & 0x0200 != 0,
        rd: f & 0x0100 != 0,
        ra: f & 0x0080 != 0,
        z: f & 0x0040 != 0,
        rcode: (f & 0xF) as u8,
        qd: u16::from_be_bytes([b[4], b[5]]),
    }
}

/// The OPT record of a message, read straight from the wire.
#[derive(Debug, PartialEq, Eq)]
struct Opt {
    payload: u16,
    ext_rcode: u8,
    version: u8,
    flags: u16,
    options: Vec<(u16, Vec<u8>)>,
}

/// Skips a (possibly compressed) name starting at `at`; the end of it.
fn skip_name(b: &[u8], mut at: usize) -> usize {
    loop {
        let len = b[at];
        if len & 0xC0 == 0xC0 {
            return at + 2;
        }
        at += 1 + usize::from(len);
        if len == 0 {
            return at;
        }
    }
}

fn opts(b: &[u8]) -> Vec<Opt> {
    let count = |i: usize| usize::from(u16::from_be_bytes([b[4 + 2 * i], b[5 + 2 * i]]));
    let mut at = 12;
    for _ in 0..count(0) {
        at = skip_name(b, at) + 4;
    }
    let mut found = Vec::new();
    for _ in 0..count(1) + count(2) + count(3) {
        let name_end = skip_name(b, at);
        let rtype = u16::from_be_bytes([b[name_end], b[name_end + 1]]);
        let rdlen = usize::from(u16::from_be_bytes([b[name_end + 8], b[name_end + 9]]));
        let rdata = &b[name_end + 10..name_end + 10 + rdlen];
        if rtype == 41 {
            let mut options = Vec::new();
            let mut o = 0;
            while o + 4 <= rdata.len() {
                let code = u16::from_be_bytes([rdata[o], rdata[o + 1]]);
                let len = usize::from(u16::from_be_bytes([rdata[o + 2], rdata[o + 3]]));
                options.push((code, rdata[o + 4..o + 4 + len].to_vec()));
                o += 4 + len;
            }
            found.push(Opt {
                payload: u16::from_be_bytes([b[name_end + 2], b[name_end + 3]]),
                ext_rcode: b[name_end + 4],
                version: b[name_end + 5],
                flags: u16::from_be_bytes([b[name_end + 6], b[name_end + 7]]),
                options,
            });
        }
        at = name_end + 10 + rdlen;
    }
    found
}

/// The question section of a message (name, type, class), as bytes.
fn question(b: &[u8]) -> &[u8] {
    &b[12..skip_name(b, 12) + 4]
}

/// What a row expects of the reply.
#[derive(Clone, Debug)]
enum Expect {
    /// No reply at all.
    Drop,
    Reply(Vec<Check>),
}

#[derive(Clone, Debug)]
enum Check {
    /// The whole (extended) rcode.
    Rcode(u16),
    Aa(bool),
    Tc(bool),
    /// Exactly these addresses in the answer section, in any order.
    Addrs(Vec<IpAddr>),
    /// `n` answer addresses, each one of these.
    AddrsFrom(usize, Vec<IpAddr>),
    /// The types of the answer section, in order.
    AnswerTypes(Vec<RecordType>),
    /// The types of the authority section, in order.
    AuthorityTypes(Vec<RecordType>),
    /// The RDATA of the answer section, in order.
    AnswerData(Vec<RData>),
    /// The authority section holds exactly the zone's SOA.
    AuthoritySoa,
    EmptyAuthority,
    /// These addresses (glue) in the additional section, in any order.
    Glue(Vec<IpAddr>),
    /// An OPT record with payload 1232, version 0, no flags (DO cleared), and exactly
    /// these options.
    Opt(Vec<(u16, Vec<u8>)>),
    NoOpt,
    /// The question is copied from the query, byte for byte.
    QuestionCopied,
}

struct Row {
    what: &'static str,
    query: Vec<u8>,
    expect: Expect,
}

fn row(what: &'static str, query: &Query, checks: Vec<Check>) -> Row {
    Row {
        what,
        query: query.build(),
        expect: Expect::Reply(checks),
    }
}

fn ecs_option(family: u16, source: u8, scope: u8, addr: &[u8]) -> (u16, Vec<u8>) {
    let mut d = family.to_be_bytes().to_vec();
    d.extend_from_slice(&[source, scope]);
    d.extend_from_slice(addr);
    (8, d)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// The engine's addresses and matched prefix length for a geo answer.
fn geo(engine: &geodns_maps::Engine, name: &str, qtype: u16, client: &str) -> (Vec<IpAddr>, u8) {
    match engine.resolve(&Question::new(name, qtype, ip(client))) {
        Resolution::Addresses {
            addrs,
            scope,
            source: geodns_maps::AnswerSource::Geo { .. },
            ..
        } => (addrs, scope),
        other => panic!("{name}/{qtype} for {client}: expected a geo answer, got {other:?}"),
    }
}

#[expect(clippy::too_many_lines, reason = "the table")]
fn table(engine: &geodns_maps::Engine) -> Vec<Row> {
    use Check::{
        Aa, AddrsFrom, AnswerData, AnswerTypes, AuthoritySoa, AuthorityTypes, EmptyAuthority, Glue,
        NoOpt, Opt, QuestionCopied, Rcode, Tc,
    };
    let www = "www.cdn.example.net.";
    let fallback_v4 = vec![ip("198.18.100.1"), ip("198.18.100.2")];
    let (de_v4, de_scope) = geo(engine, www, A, "192.0.2.1");
    let (de_v6, de_v6_scope) = geo(engine, www, AAAA, "2001:db8::1");
    let (img_v4, _) = geo(engine, "a.img.cdn.example.net.", A, "192.0.2.1");
    let nodata = |c: Vec<Check>| {
        let mut c = c;
        c.extend([
            Rcode(NOERROR),
            Aa(true),
            QuestionCopied,
            AnswerTypes(vec![]),
            AuthoritySoa,
        ]);
        c
    };
    let nxdomain = |c: Vec<Check>| {
        let mut c = c;
        c.extend([Rcode(NXDOMAIN), Aa(true), QuestionCopied, AuthoritySoa]);
        c
    };
    let glue_v4: Vec<IpAddr> = (1..=NS_IN_ZONE)
        .map(|i| ip(&format!("198.18.0.{i}")))
        .collect();
    let glue_all: Vec<IpAddr> = glue_v4
        .iter()
        .copied()
        .chain((1..=NS_IN_ZONE).map(|i| ip(&format!("2001:2::{i:x}"))))
        .collect();
    let ok = |mut c: Vec<Check>| {
        c.extend([Rcode(NOERROR), Aa(true), Tc(false), QuestionCopied]);
        c
    };
    let formerr = vec![Rcode(FORMERR)];
    let ecs_de = ecs_option(1, 24, de_scope, &[192, 0, 2]);
    let mut malformed_option = Query::new(www, A).option(100, b"abcd").build();
    let at = malformed_option.len() - 6;
    malformed_option[at..at + 2].copy_from_slice(&0x00FFu16.to_be_bytes());
    let mut header_only = Query::new(www, A).build();
    header_only.truncate(12);
    header_only[4..6].copy_from_slice(&[0, 0]);
    let mut too_long = Vec::new();
    for _ in 0..5 {
        too_long.push(63);
        too_long.extend_from_slice(&[b'a'; 63]);
    }
    too_long.push(0);
    let mut long_label = vec![64];
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.push(0);
    vec![
        // The zone apex.
        row(
            "SOA at the apex",
            &Query::new(ZONE, SOA),
            ok(vec![AnswerTypes(vec![RecordType::SOA]), NoOpt]),
        ),
        row(
            "NS at the apex, with glue for the in-zone names",
            &Query::new(ZONE, NS).edns(1232),
            ok(vec![
                AnswerTypes(vec![RecordType::NS; NS_IN_ZONE + 1]),
                Glue(glue_all.clone()),
                Opt(vec![]),
            ]),
        ),
        row(
            "glue name: A of an in-zone name server",
            &Query::new("ns3.cdn.example.net.", A),
            ok(vec![Check::Addrs(vec![ip("198.18.0.3")])]),
        ),
        // Geo answers: the maps/ decision for the ECS address, scope = matched prefix.
        row(
            "A by ECS (+subnet=192.0.2.0/24): the engine's answer, scope echoed",
            &Query::new(www, A).ecs("192.0.2.0", 24),
            ok(vec![
                Check::Addrs(de_v4.clone()),
                Opt(vec![ecs_de.clone()]),
                EmptyAuthority,
            ]),
        ),
        row(
            "AAAA by IPv6 ECS (+subnet=2001:db8::/48)",
            &Query::new(www, AAAA).ecs("2001:db8::", 48),
            ok(vec![
                Check::Addrs(de_v6),
                Opt(vec![ecs_option(
                    2,
                    48,
                    de_v6_scope,
                    &[0x20, 0x01, 0x0d, 0xb8, 0, 0],
                )]),
            ]),
        ),
        // The demo databases alias 6to4, Teredo and IPv4-mapped onto their IPv4 tree:
        // the embedded address decides, the scope is its prefix + the alias offset.
        row(
            "A by 6to4 ECS (+subnet=2002:c000:200::/40): as 192.0.2.0, scope + 16",
            &Query::new(www, A).ecs("2002:c000:200::", 40),
            ok(vec![
                Check::Addrs(de_v4.clone()),
                Opt(vec![ecs_option(
                    2,
                    40,
                    de_scope + 16,
                    &[0x20, 0x02, 0xc0, 0x00, 0x02],
                )]),
            ]),
        ),
        row(
            "A by Teredo ECS (+subnet=2001:0:c000:200::/56): as 192.0.2.0, scope + 32",
            &Query::new(www, A).ecs("2001:0:c000:200::", 56),
            ok(vec![
                Check::Addrs(de_v4.clone()),
                Opt(vec![ecs_option(
                    2,
                    56,
                    de_scope + 32,
                    &[0x20, 0x01, 0, 0, 0xc0, 0x00, 0x02],
                )]),
            ]),
        ),
        row(
            "A by IPv4-mapped ECS (+subnet=::ffff:192.0.2.0/120): scope + 96",
            &Query::new(www, A).ecs("::ffff:192.0.2.0", 120),
            ok(vec![
                Check::Addrs(de_v4.clone()),
                Opt(vec![ecs_option(
                    2,
                    120,
                    de_scope + 96,
                    &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2],
                )]),
            ]),
        ),
        row(
            "the name's case is kept (0x20) and matched without it",
            &Query::new("WwW.CDN.example.NET.", A).ecs("192.0.2.0", 24),
            ok(vec![Check::Addrs(de_v4.clone()), Opt(vec![ecs_de.clone()])]),
        ),
        row(
            "a wildcard record",
            &Query::new("a.img.cdn.example.net.", A).ecs("192.0.2.0", 24),
            ok(vec![Check::Addrs(img_v4.clone())]),
        ),
        row(
            "spread: two addresses from the region's candidates",
            &Query::new("dl.cdn.example.net.", A).ecs("192.0.2.0", 24),
            ok(vec![AddrsFrom(
                2,
                vec![ip("198.18.1.10"), ip("198.18.2.10")],
            )]),
        ),
        row(
            "no region (loopback, no ECS): the fallback nodes",
            &Query::new(www, A),
            ok(vec![AddrsFrom(1, fallback_v4.clone()), NoOpt]),
        ),
        row(
            "ECS source 0 (+subnet=0.0.0.0/0): the packet's source decides, scope 0",
            &Query::new(www, A).ecs("0.0.0.0", 0),
            ok(vec![
                AddrsFrom(1, fallback_v4.clone()),
                Opt(vec![ecs_option(1, 0, 0, &[])]),
            ]),
        ),
        // Static records from the zone file, beside a geo name and elsewhere.
        row(
            "static TXT at a geo name",
            &Query::new(www, TXT),
            ok(vec![
                AnswerData(vec![zone_rdata("www TXT \"v=spf1 -all\"")]),
                EmptyAuthority,
            ]),
        ),
        row(
            "static CAA at a geo name",
            &Query::new(www, 257),
            ok(vec![AnswerData(vec![zone_rdata(
                "www CAA 0 issue \"letsencrypt.org\"",
            )])]),
        ),
        row(
            "HTTPS with SvcParams (alpn, port, hints) round-trips through hickory",
            &Query::new(www, 65).edns(1232),
            ok(vec![AnswerData(vec![zone_rdata(
                "www HTTPS 1 . alpn=\"h3,h2\" port=8443 ipv4hint=198.18.1.10 ipv6hint=2001:2:0:1::10",
            )])]),
        ),
        row(
            "MX at the apex",
            &Query::new(ZONE, 15),
            ok(vec![AnswerData(vec![zone_rdata("@ MX 10 mail")])]),
        ),
        row(
            "SRV",
            &Query::new("_https._tcp.cdn.example.net.", 33),
            ok(vec![AnswerData(vec![zone_rdata("_https._tcp SRV 0 5 443 www")])]),
        ),
        row(
            "static A",
            &Query::new("mail.cdn.example.net.", A),
            ok(vec![Check::Addrs(vec![ip("198.18.7.25")])]),
        ),
        row(
            "NODATA: AAAA of a static name with only A",
            &Query::new("mail.cdn.example.net.", AAAA),
            nodata(vec![]),
        ),
        // CNAMEs (RFC 1034 4.3.2).
        row(
            "CNAME to a geo name: the client's geo answer and scope follow it",
            &Query::new("video.cdn.example.net.", A).ecs("192.0.2.0", 24),
            ok(vec![
                AnswerTypes(vec![RecordType::CNAME, RecordType::A]),
                Check::Addrs(de_v4.clone()),
                Opt(vec![ecs_de.clone()]),
                EmptyAuthority,
            ]),
        ),
        row(
            "CNAME asked for: not followed",
            &Query::new("video.cdn.example.net.", 5),
            ok(vec![AnswerData(vec![zone_rdata("video CNAME www")])]),
        ),
        row(
            "CNAME chain of three to a geo name",
            &Query::new("chain1.cdn.example.net.", A).ecs("192.0.2.0", 24),
            ok(vec![
                AnswerTypes(vec![
                    RecordType::CNAME,
                    RecordType::CNAME,
                    RecordType::CNAME,
                    RecordType::A,
                ]),
                Check::Addrs(de_v4.clone()),
            ]),
        ),
        row(
            "CNAME chain to static data",
            &Query::new("chain2.cdn.example.net.", TXT),
            ok(vec![AnswerTypes(vec![
                RecordType::CNAME,
                RecordType::CNAME,
                RecordType::TXT,
            ])]),
        ),
        row(
            "CNAME loop: the chain up to the repeat, NOERROR",
            &Query::new("loop1.cdn.example.net.", A),
            ok(vec![
                AnswerTypes(vec![RecordType::CNAME, RecordType::CNAME]),
                EmptyAuthority,
            ]),
        ),
        row(
            "CNAME to a name that does not exist: NXDOMAIN (RFC 6604) with the CNAME",
            &Query::new("dangling.cdn.example.net.", A),
            nxdomain(vec![AnswerTypes(vec![RecordType::CNAME])]),
        ),
        row(
            "CNAME out of the zone: only the CNAME",
            &Query::new("away.cdn.example.net.", A),
            ok(vec![AnswerTypes(vec![RecordType::CNAME]), EmptyAuthority]),
        ),
        // Wildcards (RFC 4592).
        row(
            "wildcard at depth 2",
            &Query::new("a.b.img.cdn.example.net.", A).ecs("192.0.2.0", 24),
            ok(vec![Check::Addrs(img_v4.clone())]),
        ),
        row(
            "wildcard at depth 3",
            &Query::new("a.b.c.img.cdn.example.net.", A).ecs("192.0.2.0", 24),
            ok(vec![Check::Addrs(img_v4.clone())]),
        ),
        row(
            "an existing sibling of the wildcard: its own data",
            &Query::new("static.img.cdn.example.net.", TXT),
            ok(vec![AnswerTypes(vec![RecordType::TXT])]),
        ),
        row(
            "an existing sibling of the wildcard: NODATA for A, not the wildcard",
            &Query::new("static.img.cdn.example.net.", A),
            nodata(vec![]),
        ),
        row(
            "below an existing sibling: NXDOMAIN (its closest encloser has no wildcard)",
            &Query::new("x.static.img.cdn.example.net.", A),
            nxdomain(vec![AnswerTypes(vec![])]),
        ),
        row(
            "an empty non-terminal: NODATA, not the wildcard",
            &Query::new("ent.img.cdn.example.net.", A),
            nodata(vec![]),
        ),
        row(
            "below an empty non-terminal: NXDOMAIN, the wildcard is blocked",
            &Query::new("q.ent.img.cdn.example.net.", A),
            nxdomain(vec![AnswerTypes(vec![])]),
        ),
        // Delegations.
        row(
            "referral: AA=0, NS in authority, glue in additional",
            &Query::new("www.lab.cdn.example.net.", A),
            vec![
                Rcode(NOERROR),
                Aa(false),
                QuestionCopied,
                AnswerTypes(vec![]),
                AuthorityTypes(vec![RecordType::NS, RecordType::NS]),
                Glue(vec![ip("198.18.0.54"), ip("2001:2::54")]),
            ],
        ),
        row(
            "referral for NS at the cut itself",
            &Query::new("lab.cdn.example.net.", NS),
            vec![
                Rcode(NOERROR),
                Aa(false),
                AnswerTypes(vec![]),
                AuthorityTypes(vec![RecordType::NS, RecordType::NS]),
            ],
        ),
        // Names and types that have no address answer.
        row(
            "NODATA: TXT of a served name without one, SOA in authority",
            &Query::new("dl.cdn.example.net.", TXT),
            ok(vec![AnswerTypes(vec![]), AuthoritySoa]),
        ),
        row(
            "NODATA: an unknown data type (65280)",
            &Query::new(www, 65280),
            ok(vec![AnswerTypes(vec![]), AuthoritySoa]),
        ),
        row(
            "NODATA: A at the apex",
            &Query::new(ZONE, A),
            ok(vec![AnswerTypes(vec![]), AuthoritySoa]),
        ),
        row(
            "NXDOMAIN: a name in the zone that does not exist",
            &Query::new("nope.cdn.example.net.", A),
            vec![
                Rcode(NXDOMAIN),
                Aa(true),
                QuestionCopied,
                AnswerTypes(vec![]),
                AuthoritySoa,
                NoOpt,
            ],
        ),
        row(
            "NXDOMAIN with EDNS: OPT in the reply, no ECS without ECS",
            &Query::new("nope.cdn.example.net.", A).edns(4096),
            vec![Rcode(NXDOMAIN), AuthoritySoa, Opt(vec![])],
        ),
        row(
            "REFUSED: a name outside the zone (no open resolver)",
            &Query::new("www.example.com.", A),
            vec![
                Rcode(REFUSED),
                Aa(false),
                QuestionCopied,
                AnswerTypes(vec![]),
            ],
        ),
        row(
            "REFUSED: the parent of the zone",
            &Query::new("example.net.", NS),
            vec![Rcode(REFUSED), AnswerTypes(vec![])],
        ),
        row(
            "REFUSED: class CH",
            &Query::new(www, A).class(3),
            vec![Rcode(REFUSED), AnswerTypes(vec![])],
        ),
        row(
            "NOTIMP: meta qtype AXFR (252)",
            &Query::new(ZONE, 252),
            vec![Rcode(NOTIMP), AnswerTypes(vec![])],
        ),
        row(
            "NOTIMP: meta qtype 128",
            &Query::new(www, 128),
            vec![Rcode(NOTIMP)],
        ),
        // EDNS.
        row(
            "EDNS: payload 4096 with DO -> OPT 1232, DO cleared",
            &Query::new(www, A).edns(4096).dnssec_ok(),
            ok(vec![AddrsFrom(1, fallback_v4.clone()), Opt(vec![])]),
        ),
        row(
            "RFC 8906 +edns=1 +noednsneg: BADVERS, OPT version 0, no answer",
            &Query::new(ZONE, SOA).edns_version(1),
            vec![Rcode(BADVERS), AnswerTypes(vec![]), Opt(vec![])],
        ),
        row(
            "RFC 8906 +ednsflags=0x40: unknown EDNS flags cleared in the reply",
            &Query::new(ZONE, SOA).edns_z(0x0040),
            ok(vec![AnswerTypes(vec![RecordType::SOA]), Opt(vec![])]),
        ),
        row(
            "RFC 8906 +ednsopt=100: an unknown option ignored, not echoed",
            &Query::new(ZONE, SOA).option(100, b""),
            ok(vec![AnswerTypes(vec![RecordType::SOA]), Opt(vec![])]),
        ),
        row(
            "RFC 8906 +ednsopt=100 with ECS: only ECS echoed",
            &Query::new(www, A).option(100, b"xy").ecs("192.0.2.0", 24),
            ok(vec![Check::Addrs(de_v4.clone()), Opt(vec![ecs_de])]),
        ),
        row(
            "RFC 8906 +zflag: the header's Z bit ignored and cleared",
            &Query::new(ZONE, SOA).flags(0x0140),
            ok(vec![AnswerTypes(vec![RecordType::SOA])]),
        ),
        row(
            "RFC 8906 +opcode=15: NOTIMP, opcode copied",
            &Query::new(ZONE, SOA).flags(0x7900),
            vec![Rcode(NOTIMP)],
        ),
        row(
            "RD clear is copied",
            &Query::new(ZONE, SOA).flags(0),
            ok(vec![AnswerTypes(vec![RecordType::SOA])]),
        ),
        row(
            "two OPT records: FORMERR",
            &Query::new(www, A).edns(1232).second_opt(),
            formerr.clone(),
        ),
        Row {
            what: "an EDNS option running past the OPT record: FORMERR",
            query: malformed_option,
            expect: Expect::Reply(formerr.clone()),
        },
        row(
            "ECS shorter than its fixed part: FORMERR",
            &Query::new(www, A).option(8, &[0, 1, 24]),
            formerr.clone(),
        ),
        row(
            "ECS family 3: FORMERR",
            &Query::new(www, A).ecs_raw(3, 24, 0, &[192, 0, 2]),
            formerr.clone(),
        ),
        row(
            "ECS IPv4 source prefix 33: FORMERR",
            &Query::new(www, A).ecs_raw(1, 33, 0, &[192, 0, 2, 1, 0]),
            formerr.clone(),
        ),
        row(
            "ECS IPv6 source prefix 129: FORMERR",
            &Query::new(www, A).ecs_raw(2, 129, 0, &[0x20; 17]),
            formerr.clone(),
        ),
        row(
            "ECS with more address bytes than the prefix needs: FORMERR",
            &Query::new(www, A).ecs_raw(1, 24, 0, &[192, 0, 2, 0]),
            formerr.clone(),
        ),
        row(
            "ECS with bits set past the prefix: FORMERR",
            &Query::new(www, A).ecs_raw(1, 20, 0, &[192, 0, 2]),
            formerr.clone(),
        ),
        row(
            "ECS with a non-zero scope in a query: FORMERR",
            &Query::new(www, A).ecs_raw(1, 24, 16, &[192, 0, 2]),
            formerr.clone(),
        ),
        // Malformed messages.
        Row {
            what: "shorter than a header: dropped",
            query: vec![0x12, 0x34, 0x01, 0x00, 0x00],
            expect: Expect::Drop,
        },
        Row {
            what: "QR=1: dropped",
            query: Query::new(www, A).flags(0x8100).build(),
            expect: Expect::Drop,
        },
        row(
            "a label of 64 bytes: FORMERR",
            &Query::new(www, A).raw_qname(&long_label),
            formerr.clone(),
        ),
        row(
            "a name of 321 bytes: FORMERR",
            &Query::new(www, A).raw_qname(&too_long),
            formerr.clone(),
        ),
        row(
            "a compression pointer to itself (a loop): FORMERR",
            &Query::new(www, A).raw_qname(&[0xC0, 12]),
            formerr.clone(),
        ),
        row(
            "a forward compression pointer: FORMERR",
            &Query::new(www, A)
                .raw_qname(&[0xC0, 18])
                .trailing(&wire_name("www.cdn.example.net.")),
            formerr.clone(),
        ),
        Row {
            what: "QDCOUNT 0: FORMERR",
            query: header_only,
            expect: Expect::Reply(formerr.clone()),
        },
        row(
            "QDCOUNT 2: FORMERR",
            &Query::new(www, A).counts(2, 0, 0),
            formerr,
        ),
    ]
}

fn check_reply(what: &str, query: &[u8], reply: &[u8], checks: &[Check]) {
    let h = header(reply);
    let q = header(query);
    assert_eq!(h.id, q.id, "{what}: id");
    assert!(h.qr, "{what}: QR");
    assert!(!h.ra, "{what}: RA must be 0 (no recursion)");
    assert!(!h.z, "{what}: Z must be 0");
    assert_eq!(h.rd, q.rd, "{what}: RD copied");
    assert_eq!(h.opcode, q.opcode, "{what}: opcode copied");
    let msg = Message::from_vec(reply).unwrap_or_else(|e| panic!("{what}: reply parses: {e}"));
    let opt = opts(reply);
    assert!(opt.len() <= 1, "{what}: at most one OPT: {opt:?}");
    let rcode = u16::from(h.rcode) | opt.first().map_or(0, |o| u16::from(o.ext_rcode) << 4);
    let addrs = |recs: &[hickory_proto::rr::Record]| -> Vec<IpAddr> {
        recs.iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    };
    let sorted = |mut v: Vec<IpAddr>| {
        v.sort();
        v
    };
    for c in checks {
        match c {
            Check::Rcode(r) => assert_eq!(rcode, *r, "{what}: rcode"),
            Check::Aa(aa) => assert_eq!(h.aa, *aa, "{what}: AA"),
            Check::Tc(tc) => assert_eq!(h.tc, *tc, "{what}: TC"),
            Check::Addrs(want) => assert_eq!(
                sorted(addrs(&msg.answers)),
                sorted(want.clone()),
                "{what}: answer addresses"
            ),
            Check::AddrsFrom(n, from) => {
                let got = addrs(&msg.answers);
                assert_eq!(got.len(), *n, "{what}: {got:?}");
                assert!(
                    got.iter().all(|a| from.contains(a)),
                    "{what}: {got:?} not all from {from:?}"
                );
                let distinct: BTreeSet<_> = got.iter().collect();
                assert_eq!(distinct.len(), got.len(), "{what}: duplicates in {got:?}");
            }
            Check::AnswerTypes(types) => assert_eq!(
                msg.answers
                    .iter()
                    .map(hickory_proto::rr::Record::record_type)
                    .collect::<Vec<_>>(),
                *types,
                "{what}: answer types"
            ),
            Check::AuthorityTypes(types) => assert_eq!(
                msg.authorities
                    .iter()
                    .map(hickory_proto::rr::Record::record_type)
                    .collect::<Vec<_>>(),
                *types,
                "{what}: authority types"
            ),
            Check::AnswerData(data) => assert_eq!(
                msg.answers
                    .iter()
                    .map(|r| r.data.clone())
                    .collect::<Vec<_>>(),
                *data,
                "{what}: answer RDATA"
            ),
            Check::AuthoritySoa => {
                assert_eq!(msg.authorities.len(), 1, "{what}: one authority record");
                let soa = &msg.authorities[0];
                assert_eq!(soa.record_type(), RecordType::SOA, "{what}");
                assert_eq!(soa.name.to_ascii(), ZONE, "{what}: SOA owner");
            }
            Check::EmptyAuthority => assert!(msg.authorities.is_empty(), "{what}: authority"),
            Check::Glue(want) => assert_eq!(
                sorted(addrs(&msg.additionals)),
                sorted(want.clone()),
                "{what}: glue"
            ),
            Check::Opt(options) => {
                let o = opt
                    .first()
                    .unwrap_or_else(|| panic!("{what}: an OPT record"));
                assert_eq!(o.payload, 1232, "{what}: OPT payload");
                assert_eq!(o.version, 0, "{what}: EDNS version");
                assert_eq!(o.flags, 0, "{what}: EDNS flags (DO cleared)");
                assert_eq!(&o.options, options, "{what}: EDNS options");
            }
            Check::NoOpt => assert!(opt.is_empty(), "{what}: no OPT without one in the query"),
            Check::QuestionCopied => {
                assert_eq!(h.qd, 1, "{what}: QDCOUNT");
                assert_eq!(question(reply), question(query), "{what}: question copied");
            }
        }
    }
}

fn run_table(rows: &[Row], server: SocketAddr, transport: Transport) {
    for r in rows {
        let what = format!("{transport:?} {server}: {}", r.what);
        let wait = match r.expect {
            Expect::Drop => NO_REPLY,
            Expect::Reply(_) => TIMEOUT,
        };
        let reply = exchange(transport, server, &r.query, wait)
            .unwrap_or_else(|e| panic!("{what}: sending: {e}"));
        match (&r.expect, reply) {
            (Expect::Drop, None) => {}
            (Expect::Drop, Some(b)) => panic!("{what}: expected no reply, got {b:02x?}"),
            (Expect::Reply(_), None) => panic!("{what}: no reply"),
            (Expect::Reply(checks), Some(b)) => check_reply(&what, &r.query, &b, checks),
        }
    }
}

#[test]
fn fallback_server_conformance() {
    let dir = TempDir::new("conformance");
    let config = write_config(dir.path());
    let engine = geodns::daemon::compile(&config, None).expect("the test config compiles");
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let (v4, v6): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], port).into(),
        (std::net::Ipv6Addr::LOCALHOST, port).into(),
    );
    let (l4, l6, idle, max) = (
        v4.to_string(),
        v6.to_string(),
        format!("{}s", IDLE.as_secs()),
        MAX_TCP.to_string(),
    );
    let daemon = Daemon::start_local(
        &config,
        &metrics,
        &[
            "--no-xdp",
            "--listen",
            &l4,
            "--listen",
            &l6,
            "--tcp-idle-timeout",
            &idle,
            "--tcp-max-connections",
            &max,
        ],
        Duration::from_secs(30),
    );

    // First, before anything else asks: the fallback rotation is the engine's, a
    // deterministic weighted round robin (core1 twice, core2 once, per round).
    let fresh = geodns::daemon::compile(&config, None).expect("compile");
    let q = Query::new("www.cdn.example.net.", A);
    let mut got = Vec::new();
    let mut want = Vec::new();
    for _ in 0..9 {
        let b = exchange(Transport::Udp, v4, &q.build(), TIMEOUT)
            .expect("send")
            .expect("a reply");
        got.push(geodns_tests::client::parse_reply(&b).expect("parse").addrs);
        if let Resolution::Addresses { addrs, .. } =
            fresh.resolve(&Question::new("www.cdn.example.net.", A, ip("127.0.0.1")))
        {
            want.push(addrs);
        }
    }
    assert_eq!(got, want, "the fallback rotation");
    let core1 = got.iter().filter(|a| a[0] == ip("198.18.100.1")).count();
    assert_eq!(core1, 6, "weights 2:1 over three rounds: {got:?}");

    let rows = table(&engine);
    for server in [v4, v6] {
        for transport in [Transport::Udp, Transport::Tcp] {
            run_table(&rows, server, transport);
        }
    }

    truncation(v4);
    tcp_pipelining(v4);
    tcp_connection_cap(v4);
    tcp_idle_timeout(v4);

    // Every row was asked four times (two transports, two families).
    let m = daemon.scrape_local().expect("metrics");
    for (counter, at_least) in [
        ("geodns_server_responses_total{rcode=\"FORMERR\"}", 4 * 15),
        ("geodns_server_responses_total{rcode=\"NOTIMP\"}", 4 * 3),
        ("geodns_server_responses_total{rcode=\"BADVERS\"}", 4),
        ("geodns_server_responses_total{rcode=\"NXDOMAIN\"}", 4 * 2),
        ("geodns_server_truncated_total", 2),
    ] {
        assert!(
            metric(&m, counter) >= at_least,
            "{counter} in /metrics:\n{m}"
        );
    }
    drop(daemon);
}

/// The apex NS answer with its glue is over 512 bytes: TC=1 over UDP without EDNS (and
/// with a payload size below 512), complete over TCP and with EDNS 1232.
fn truncation(server: SocketAddr) {
    let ns = Query::new(ZONE, NS);
    for (what, q) in [
        ("no EDNS", ns.clone()),
        ("EDNS payload 300 (taken as 512)", ns.clone().edns(300)),
    ] {
        let b = exchange(Transport::Udp, server, &q.build(), TIMEOUT)
            .expect("send")
            .expect("a reply");
        assert!(b.len() <= 512, "{what}: {} bytes over UDP", b.len());
        check_reply(
            what,
            &q.build(),
            &b,
            &[Check::Rcode(NOERROR), Check::Tc(true)],
        );
    }
    let full = [
        Check::Rcode(NOERROR),
        Check::Tc(false),
        Check::AnswerTypes(vec![RecordType::NS; NS_IN_ZONE + 1]),
    ];
    let b = exchange(Transport::Tcp, server, &ns.build(), TIMEOUT)
        .expect("send")
        .expect("a reply");
    assert!(b.len() > 512, "the TCP answer is the whole answer");
    check_reply("NS over TCP", &ns.build(), &b, &full);
    let q = ns.edns(1232);
    let b = exchange(Transport::Udp, server, &q.build(), TIMEOUT)
        .expect("send")
        .expect("a reply");
    check_reply("NS with EDNS 1232", &q.build(), &b, &full);
}

/// Three queries in one write on one connection: three replies, matched by id.
fn tcp_pipelining(server: SocketAddr) {
    let mut s = TcpStream::connect_timeout(&server, TIMEOUT).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut batch = Vec::new();
    let queries: Vec<Vec<u8>> = [
        (1u16, ZONE, SOA),
        (2, "www.cdn.example.net.", A),
        (3, "nope.cdn.example.net.", A),
    ]
    .iter()
    .map(|(id, name, t)| Query::new(name, *t).id(*id).build())
    .collect();
    for q in &queries {
        write_framed(&mut batch, q).expect("frame");
    }
    s.write_all(&batch).expect("write three queries at once");
    let mut ids = BTreeSet::new();
    for _ in 0..3 {
        let b = read_framed(&mut s)
            .expect("read")
            .expect("a pipelined reply");
        ids.insert(header(&b).id);
    }
    assert_eq!(ids, BTreeSet::from([1, 2, 3]));
}

/// With `--tcp-max-connections 3`, a fourth concurrent connection is not served until
/// one of the three closes.
fn tcp_connection_cap(server: SocketAddr) {
    let q = Query::new(ZONE, SOA).build();
    let mut held: Vec<TcpStream> = (0..MAX_TCP)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&server, TIMEOUT).expect("connect");
            s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            write_framed(&mut s, &q).expect("write");
            assert!(
                read_framed(&mut s).expect("read").is_some(),
                "served under the cap"
            );
            s
        })
        .collect();
    if let Ok(mut s) = TcpStream::connect_timeout(&server, TIMEOUT) {
        s.set_read_timeout(Some(NO_REPLY)).expect("timeout");
        // Refused at accept (closed) or left waiting: no answer either way.
        if write_framed(&mut s, &q).is_ok() {
            assert!(
                read_framed(&mut s).ok().flatten().is_none(),
                "a connection over the cap must not be served"
            );
        }
    }
    held.clear();
    // A slot is free again once the server sees the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answered = exchange(Transport::Tcp, server, &q, TIMEOUT)
            .ok()
            .flatten()
            .is_some();
        if answered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no TCP service after closing the connections"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An idle connection is closed after `--tcp-idle-timeout`.
fn tcp_idle_timeout(server: SocketAddr) {
    let mut s = TcpStream::connect_timeout(&server, TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IDLE * 3)).expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let r = std::io::Read::read(&mut s, &mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server closes an idle connection: {r:?} after {waited:?}"
    );
    assert!(waited >= IDLE / 2, "closed too early: {waited:?}");
}

/// `geodns run --no-xdp` on a loopback port with TCP limits for the hold tests: a 300 ms
/// idle (and write) timeout, 3 connections, and `extra`.
fn tcp_daemon(dir: &TempDir, extra: &[&str]) -> (Daemon, SocketAddr) {
    let config = write_config(dir.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    let server: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let listen = server.to_string();
    let mut args = vec![
        "--no-xdp",
        "--listen",
        &listen,
        "--tcp-idle-timeout",
        "300ms",
        "--tcp-max-connections",
        "3",
    ];
    args.extend_from_slice(extra);
    let daemon = Daemon::start_local(&config, &metrics, &args, Duration::from_secs(30));
    (daemon, server)
}

/// A TCP connection from `source` (a loopback address) to `server`.
fn tcp_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from((source, 0)).into())
        .expect("bind the source");
    s.connect_timeout(&server.into(), TIMEOUT).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s
}

/// Waits until the server has seen every earlier connection close.
fn until_no_connection(daemon: &Daemon) {
    geodns_tests::daemon::wait_for(
        "the server to see the closes",
        Duration::from_secs(5),
        || {
            let m = daemon.scrape_local().unwrap_or_default();
            m.contains("geodns_server_tcp_open_connections 0")
        },
    );
}

/// Whether `s` gets an answer to one query.
fn served(s: &mut TcpStream, q: &[u8]) -> bool {
    write_framed(s, q).is_ok() && read_framed(s).ok().flatten().is_some()
}

/// Every way a client could hold the server's TCP connections is bounded: a client that
/// pipelines queries and never reads its replies (it once kept the only slot seconds
/// past the idle timeout), too many connections from one address, one connection kept
/// busy forever. Each is closed and counted, and the next client is served.
#[test]
fn tcp_connections_cannot_be_held() {
    let dir = TempDir::new("tcp-limits");
    let (daemon, server) = tcp_daemon(
        &dir,
        &[
            "--tcp-max-per-source",
            "2",
            "--tcp-max-queries",
            "30",
            "--tcp-max-lifetime",
            "2s",
        ],
    );
    let query = Query::new(ZONE, SOA).build();

    // Two connections from 127.0.0.1 are served, a third is not; 127.0.0.2 still is.
    let mut first = tcp_from([127, 0, 0, 1], server);
    let mut second = tcp_from([127, 0, 0, 1], server);
    assert!(served(&mut first, &query) && served(&mut second, &query));
    let mut third = tcp_from([127, 0, 0, 1], server);
    third.set_read_timeout(Some(NO_REPLY)).expect("timeout");
    assert!(
        !served(&mut third, &query),
        "a third connection from one source"
    );
    let mut other = tcp_from([127, 0, 0, 2], server);
    assert!(
        served(&mut other, &query),
        "another source under the global cap"
    );
    drop((first, second, third, other));
    until_no_connection(&daemon);

    // At most 30 answers on one connection, then the server closes it.
    let mut s = tcp_from([127, 0, 0, 3], server);
    for _ in 0..31 {
        write_framed(&mut s, &query).expect("pipelined write");
    }
    let answers = (0..31)
        .take_while(|_| read_framed(&mut s).ok().flatten().is_some())
        .count();
    assert_eq!(answers, 30, "--tcp-max-queries");
    drop(s);
    until_no_connection(&daemon);

    // A connection kept busy (a query every 100 ms: never idle, and fewer than 30 in
    // its 2 s) ends at its lifetime.
    let mut s = tcp_from([127, 0, 0, 4], server);
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(4) && served(&mut s, &query) {
        answered += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let lived = started.elapsed();
    assert!(
        (Duration::from_millis(1800)..Duration::from_millis(3500)).contains(&lived),
        "a busy connection lived {lived:?} ({answered} answers) under --tcp-max-lifetime 2s"
    );
    drop(s);
    until_no_connection(&daemon);

    let m = daemon.scrape_local().expect("metrics");
    for reason in ["max_queries", "max_lifetime"] {
        let key = format!("geodns_server_tcp_closed_total{{reason=\"{reason}\"}}");
        assert!(metric(&m, &key) >= 1, "{key} in /metrics:\n{m}");
    }
    assert!(
        metric(
            &m,
            "geodns_server_tcp_connections_total{result=\"refused_per_source\"}"
        ) >= 1
    );
}

#[test]
fn a_client_that_does_not_read_cannot_hold_a_connection() {
    let dir = TempDir::new("tcp-unread");
    let query = Query::new(ZONE, SOA).build();
    // A client that pipelines and never reads: the server's writes stall, the write
    // timeout closes it, and the slots it held serve others while it still holds its
    // end open. No query limit this time, so only the write timeout can end it. Up to
    // 20 MB of queries, written until the server stops reading.
    let (daemon, server) = tcp_daemon(&dir, &["--tcp-max-queries", "100000000"]);
    let hog = tcp_from([127, 0, 0, 5], server);
    hog.set_write_timeout(Some(Duration::from_millis(500)))
        .expect("write timeout");
    let mut framed = u16::try_from(query.len())
        .expect("len")
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(&query);
    let burst: Vec<u8> = framed
        .iter()
        .copied()
        .cycle()
        .take(framed.len() * 4096)
        .collect();
    let mut writer = hog.try_clone().expect("clone");
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < 20 << 20 && started.elapsed() < Duration::from_secs(10) {
        match writer.write_all(&burst) {
            Ok(()) => sent += burst.len(),
            Err(_) => break,
        }
    }
    let key = "geodns_server_tcp_closed_total{reason=\"write_timeout\"}";
    geodns_tests::daemon::wait_for(
        "the unread connection to be closed by the write timeout",
        Duration::from_secs(3),
        || metric(&daemon.scrape_local().unwrap_or_default(), key) >= 1,
    );
    // Three other clients (the whole global cap) are served while the hog's end is open.
    let mut others: Vec<TcpStream> = (6..9).map(|i| tcp_from([127, 0, 0, i], server)).collect();
    for s in &mut others {
        assert!(
            served(s, &query),
            "served beside a client that does not read"
        );
    }
    drop(hog);
}

/// Sends `queries` (ids 0..n) back to back from one socket bound to `from` and returns
/// the reply to each id, if any came within `NO_REPLY` of the last.
fn burst(from: SocketAddr, server: SocketAddr, queries: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    let sock = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    for q in queries {
        sock.send_to(q, server).expect("send");
    }
    let mut out = vec![None; queries.len()];
    let until = Instant::now() + NO_REPLY;
    let mut buf = vec![0u8; 65_535];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            break;
        };
        let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
        if let Some(slot) = out.get_mut(id) {
            *slot = Some(buf[..n].to_vec());
        }
    }
    out
}

/// A UDP datagram from source port 0 to `server` (IPv4), through a raw socket (root).
fn send_from_port_zero(server: SocketAddr, payload: &[u8]) {
    let SocketAddr::V4(server) = server else {
        panic!("IPv4 only")
    };
    let mut udp = vec![0, 0];
    udp.extend_from_slice(&server.port().to_be_bytes());
    udp.extend_from_slice(
        &u16::try_from(8 + payload.len())
            .expect("short")
            .to_be_bytes(),
    );
    udp.extend_from_slice(&[0, 0]); // no checksum (IPv4 allows it)
    udp.extend_from_slice(payload);
    // SAFETY: plain socket calls with valid pointers and lengths; the fd is closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET"),
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(server.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let n = libc::sendto(
            fd,
            udp.as_ptr().cast(),
            udp.len(),
            0,
            (&raw const addr).cast(),
            u32::try_from(size_of::<libc::sockaddr_in>()).expect("small"),
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert!(n >= 0, "raw send: {err}");
    }
}

/// The kernel's defence rows against the authoritative server (`geodns run --no-xdp` with
/// `[rrl] rate = 1, burst = 2, slip = 2`): no answer to source port 0 or a reflector
/// port, to QR=1 or to a datagram that is no DNS message (a daytime string); over the
/// limit every 2nd query gets an empty TC=1 reply and the rest none, per source
/// prefix whatever the ECS says; TCP is exempt. Rows that need a privileged port or a
/// raw socket run as root (they are skipped otherwise, or fail with
/// `GEODNS_REQUIRE_BPF=1`).
#[test]
#[expect(clippy::too_many_lines, reason = "a table of rows and their counters")]
fn fallback_server_defences() {
    let dir = TempDir::new("conformance-defences");
    let config = write_config(dir.path());
    let mut text = std::fs::read_to_string(&config).expect("read the config");
    text.push_str("\n[rrl]\nrate = 1\nburst = 2\nslip = 2\n");
    std::fs::write(&config, text).expect("write the config");
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let (v4, v6): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], port).into(),
        (std::net::Ipv6Addr::LOCALHOST, port).into(),
    );
    let (l4, l6) = (v4.to_string(), v6.to_string());
    let daemon = Daemon::start_local(
        &config,
        &metrics,
        &["--no-xdp", "--listen", &l4, "--listen", &l6],
        Duration::from_secs(30),
    );
    let www = |id: u16| Query::new("www.cdn.example.net.", A).id(id);
    let privileged = geodns_tests::require_bpf();

    // Dropped before any answer is decided: none of these spends the rate limit.
    let mut reflector_rows = 0;
    for server in [v4, v6] {
        let any: SocketAddr = if server.is_ipv4() {
            ([127, 0, 0, 1], 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        for (what, q) in [
            ("QR=1", www(1).flags(0x8000).build()),
            ("a daytime string", b"Fri Dec  4 13:46:29 2026\r\n".to_vec()),
        ] {
            let got = burst(any, server, &[q]);
            assert!(got[0].is_none(), "{server} {what}: no reply");
        }
        for p in geodns_common::DEFAULT_REFLECTOR_PORTS {
            if p < 1024 && !privileged {
                continue;
            }
            let mut from = any;
            from.set_port(p);
            let got = burst(from, server, &[www(0).build()]);
            assert!(
                got[0].is_none(),
                "{server}: from reflector port {p}: no reply"
            );
            reflector_rows += 1;
        }
    }
    if privileged {
        send_from_port_zero(v4, &www(0).build());
    }

    // The limit: 2 answers, then drop, slip, drop, slip. Sent back to back: at 1
    // answer a second nothing refills meanwhile.
    for server in [v4, v6] {
        let any: SocketAddr = if server.is_ipv4() {
            ([127, 0, 0, 1], 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let queries: Vec<Vec<u8>> = (0..6)
            .map(|i| {
                // The ECS address changes from query to query: it does not pick the
                // bucket, the source does.
                let q = www(i);
                if i % 2 == 0 {
                    q.build()
                } else {
                    q.ecs(&format!("198.51.100.{i}"), 32).build()
                }
            })
            .collect();
        let got = burst(any, server, &queries);
        for (i, reply) in got.iter().enumerate() {
            let what = format!("{server}: query {i} of the burst");
            match (i, reply) {
                (0 | 1, Some(b)) => {
                    check_reply(
                        &what,
                        &queries[i],
                        b,
                        &[Check::Rcode(NOERROR), Check::Tc(false)],
                    );
                    let addrs = geodns_tests::client::parse_reply(b).expect("parse").addrs;
                    assert!(!addrs.is_empty(), "{what}: an answer");
                }
                (3 | 5, Some(b)) => check_reply(
                    &what,
                    &queries[i],
                    b,
                    &[
                        Check::Rcode(NOERROR),
                        Check::Aa(true),
                        Check::Tc(true),
                        Check::AnswerTypes(vec![]),
                        Check::EmptyAuthority,
                        Check::QuestionCopied,
                    ],
                ),
                (2 | 4, None) => {}
                (_, r) => panic!("{what}: unexpected {r:02x?}"),
            }
        }
        // TCP is exempt: the same name keeps being answered.
        for i in 0..3 {
            let b = exchange(Transport::Tcp, server, &www(i).build(), TIMEOUT)
                .expect("send")
                .expect("a TCP reply");
            check_reply(
                "over TCP",
                &www(i).build(),
                &b,
                &[
                    Check::Rcode(NOERROR),
                    Check::Tc(false),
                    Check::AnswerTypes(vec![RecordType::A]),
                ],
            );
        }
    }

    let m = daemon.scrape_local().expect("metrics");
    for (counter, want) in [
        ("geodns_server_dropped_total{reason=\"response\"}", 2),
        ("geodns_server_dropped_total{reason=\"not_dns\"}", 2),
        (
            "geodns_server_dropped_total{reason=\"reflector_port\"}",
            reflector_rows,
        ),
        (
            "geodns_server_dropped_total{reason=\"port_zero\"}",
            u64::from(privileged),
        ),
        ("geodns_server_dropped_total{reason=\"rate_limited\"}", 4),
        ("geodns_server_rrl_slipped_total", 4),
    ] {
        assert_eq!(metric(&m, counter), want, "{counter} in /metrics:\n{m}");
    }
    drop(daemon);
}
