//! Handler tests: a table of queries straight into [`handle`], each checked for RCODE,
//! flags, sections and OPT/ECS, and by [`check_response`]; exact bytes where the
//! kernel answers too; mutated packets; the real server on loopback. The table's
//! queries are also the fuzz target's seed corpus ([`write_fuzz_seeds`]).
use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use geodns_maps::{AnswerSource, Compiled, Config, Engine, NodeStates, SplitMix};
use hickory_proto::{
    op::Message as Decoded,
    rr::{
        rdata::opt::{EdnsCode, EdnsOption},
        RData, RecordType,
    },
};

use super::{
    check::check_response,
    parse::{Drop, EcsError, FormatError},
    respond::{handle, rcode, Outcome, Transport},
    server::{DnsServer, Listener, TcpOptions},
    stats::ServerStats,
};
use crate::control::EngineHandle;

const ZONE: &str = r#"
[zone]
origin = "cdn.example.net."
ttl = 30
minimum = 20
serial = 2025010101

[[zone.ns]]
name = "ns1"
ipv4 = "198.18.0.53"
ipv6 = "2001:2::53"

[[zone.ns]]
name = "ns2.example.org."
"#;

const REST: &str = r#"
[nodes.eu]
ipv4 = "198.18.1.10"
ipv6 = "2001:2:0:1::10"

[nodes.us]
ipv4 = ["198.18.3.10", "198.18.3.11"]
ipv6 = "2001:2:0:3::10"

[nodes.v4only]
ipv4 = "198.18.4.10"

[nodes.many]
ipv6 = ["2001:2:0:9::1", "2001:2:0:9::2", "2001:2:0:9::3", "2001:2:0:9::4",
        "2001:2:0:9::5", "2001:2:0:9::6", "2001:2:0:9::7", "2001:2:0:9::8"]

[nodes.core1]
ipv4 = "198.18.100.1"
ipv6 = "2001:2:0:100::1"

[nodes.core2]
ipv4 = "198.18.100.2"
ipv6 = "2001:2:0:100::2"

[maps.main]
"192.0.2.0/24" = { eu = 1 }
"198.51.100.0/24" = { us = 1 }
"203.0.113.0/24" = { v4only = 1 }
"2001:db8::/32" = { eu = 1 }

[maps.big]
"192.0.2.0/24" = { many = 1 }

[[records]]
name = "www"
map = "main"

[[records]]
name = "*.img"
map = "main"
ttl = 300

[[records]]
name = "a.deep"
map = "main"

[[records]]
name = "big"
map = "big"

[fallback]
core1 = 2
core2 = 1
"#;

fn engine_from(text: &str) -> Engine {
    let config = Config::from_str_named(text, "fallback-test.toml").expect("test config parses");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("test config compiles");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
        .with_picker(Box::new(SplitMix::seeded(7)))
}

fn engine() -> Engine {
    engine_from(&format!("{ZONE}{REST}"))
}

/// A zone with ten name servers, nine in the zone: the NS answer with glue exceeds
/// 512 bytes (about 620).
fn many_ns_engine() -> Engine {
    ns_engine(11)
}

/// The zone with NS 1 and 2 and in-zone name servers up to `end - 1`, each with glue.
fn ns_engine(end: u32) -> Engine {
    let mut text = ZONE.to_owned();
    for i in 3..end {
        let _ = write!(
            text,
            "[[zone.ns]]\nname = \"ns{i}\"\nipv4 = \"198.18.0.{i}\"\nipv6 = \"2001:2::{i}\"\n"
        );
    }
    engine_from(&format!("{text}{REST}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Wire form of a presentation name (plain labels).
fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(u8::try_from(label.len()).expect("short label"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A query built byte by byte, so malformed ones are easy.
#[derive(Clone)]
struct Q {
    id: u16,
    flags: u16,
    counts: Option<[u16; 4]>,
    qname: Vec<u8>,
    qtype: u16,
    qclass: u16,
    /// Whole OPT records (several for the two-OPT case).
    opts: Vec<Vec<u8>>,
    tail: Vec<u8>,
}

impl Q {
    fn new(name: &str, qtype: u16) -> Self {
        Self {
            id: 0xBEEF,
            flags: 0x0100,
            counts: None,
            qname: wire(name),
            qtype,
            qclass: 1,
            opts: Vec::new(),
            tail: Vec::new(),
        }
    }

    fn flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }

    fn counts(mut self, c: [u16; 4]) -> Self {
        self.counts = Some(c);
        self
    }

    fn class(mut self, c: u16) -> Self {
        self.qclass = c;
        self
    }

    fn raw_name(mut self, n: &[u8]) -> Self {
        self.qname = n.to_vec();
        self
    }

    fn tail(mut self, t: &[u8]) -> Self {
        self.tail = t.to_vec();
        self
    }

    /// An OPT record with the given payload, version, flags and options.
    fn opt_full(mut self, payload: u16, version: u8, flags: u16, options: &[(u16, &[u8])]) -> Self {
        let mut rdata = Vec::new();
        for (code, data) in options {
            rdata.extend_from_slice(&code.to_be_bytes());
            rdata.extend_from_slice(&u16::try_from(data.len()).expect("len").to_be_bytes());
            rdata.extend_from_slice(data);
        }
        let mut r = vec![0, 0, 41];
        r.extend_from_slice(&payload.to_be_bytes());
        r.extend_from_slice(&[0, version]);
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&u16::try_from(rdata.len()).expect("len").to_be_bytes());
        r.extend_from_slice(&rdata);
        self.opts.push(r);
        self
    }

    fn edns(self) -> Self {
        self.opt_full(1232, 0, 0, &[])
    }

    fn ecs(self, addr: &str, prefix: u8) -> Self {
        let (family, bytes) = match ip(addr) {
            IpAddr::V4(a) => (1u16, a.octets().to_vec()),
            IpAddr::V6(a) => (2u16, a.octets().to_vec()),
        };
        let n = usize::from(prefix).div_ceil(8);
        let mut data = family.to_be_bytes().to_vec();
        data.extend_from_slice(&[prefix, 0]);
        data.extend_from_slice(&bytes[..n]);
        self.opt_full(1232, 0, 0, &[(8, &data)])
    }

    fn ecs_raw(self, data: &[u8]) -> Self {
        self.opt_full(1232, 0, 0, &[(8, data)])
    }

    fn build(&self) -> Vec<u8> {
        let ar = u16::try_from(self.opts.len()).expect("few OPTs");
        let [qd, an, ns, ar] = self.counts.unwrap_or([1, 0, 0, ar]);
        let mut m = Vec::new();
        for v in [self.id, self.flags, qd, an, ns, ar] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m.extend_from_slice(&self.qname);
        m.extend_from_slice(&self.qtype.to_be_bytes());
        m.extend_from_slice(&self.qclass.to_be_bytes());
        for o in &self.opts {
            m.extend_from_slice(o);
        }
        m.extend_from_slice(&self.tail);
        m
    }
}

const A: u16 = 1;
const NS: u16 = 2;
const SOA: u16 = 6;
const TXT: u16 = 16;
const AAAA: u16 = 28;
const WWW: &str = "www.cdn.example.net.";
const EU: &str = "192.0.2.55";

/// Runs one query and the independent response check.
fn ask_with(e: &Engine, q: &[u8], peer: IpAddr, t: Transport) -> Outcome {
    let out = handle(e, q, peer, t);
    if let Some(r) = &out.response {
        if let Err(err) = check_response(q, r, t) {
            panic!("response check: {err}\nquery {q:02x?}\nresponse {r:02x?}");
        }
    }
    out
}

fn ask(e: &Engine, q: &Q, peer: &str) -> (Outcome, Decoded) {
    let out = ask_with(e, &q.build(), ip(peer), Transport::Udp);
    let d = Decoded::from_vec(out.response.as_deref().expect("a response")).expect("decodes");
    (out, d)
}

fn addrs(d: &Decoded) -> Vec<IpAddr> {
    d.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ecs_scope(d: &Decoded) -> Option<u8> {
    match d.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(s.scope_prefix()),
        _ => None,
    }
}

fn rc(d: &Decoded) -> u16 {
    u16::from(d.metadata.response_code)
}

fn types(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records
        .iter()
        .map(hickory_proto::rr::Record::record_type)
        .collect()
}

#[test]
fn geo_answer_is_the_kernels_reply_byte_for_byte() {
    let e = engine();
    let q = Q::new("WwW.Cdn.Example.NET.", A).ecs("192.0.2.0", 24);
    let query = q.build();
    let out = ask_with(&e, &query, ip("198.18.7.1"), Transport::Udp);
    // What xdp-dns writes: header (QR AA RD, CD 0), the question as sent, one answer
    // pointing at it, then OPT (1232, version 0, no flags) with ECS scope 24.
    let mut want = vec![0xBE, 0xEF, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 1];
    want.extend_from_slice(&query[12..12 + 21 + 4]);
    want.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 198, 18, 1, 10]);
    want.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 11]);
    want.extend_from_slice(&[0, 8, 0, 7, 0, 1, 24, 24, 192, 0, 2]);
    assert_eq!(out.response.as_deref(), Some(&want[..]));
    assert!(matches!(out.source, Some(AnswerSource::Geo { .. })));
}

#[test]
fn table() {
    let e = engine();
    for (what, q, peer, check) in cases() {
        let (out, d) = ask(&e, &q, peer);
        check(&out, &d);
        // Same answer over TCP (never truncated).
        let tcp = ask_with(&e, &q.build(), ip(peer), Transport::Tcp);
        assert_eq!(tcp.rcode, out.rcode, "{what}: TCP rcode");
        assert!(!tcp.truncated, "{what}: TCP truncated");
    }
}

type Check = Box<dyn Fn(&Outcome, &Decoded)>;

/// (what, query, peer, check of the UDP response).
#[expect(clippy::too_many_lines, reason = "one row per behaviour")]
fn cases() -> Vec<(&'static str, Q, &'static str, Check)> {
    let soa_authority = |what: &'static str, code: u16| -> Check {
        Box::new(move |_o, d| {
            assert_eq!(rc(d), code, "{what}");
            assert!(d.metadata.authoritative, "{what}: AA");
            assert!(d.answers.is_empty(), "{what}: no answers");
            assert_eq!(types(&d.authorities), vec![RecordType::SOA], "{what}");
            assert_eq!(d.authorities[0].ttl, 20, "{what}: min(TTL, MINIMUM)");
            assert_eq!(
                d.authorities[0].name.to_ascii(),
                "cdn.example.net.",
                "{what}"
            );
        })
    };
    let formerr = |what: &'static str, with_opt: bool| -> Check {
        Box::new(move |o, d| {
            assert_eq!(rc(d), rcode::FORMERR, "{what}: {:?}", o.error);
            assert!(!d.metadata.authoritative, "{what}: AA");
            assert!(d.answers.is_empty(), "{what}");
            assert_eq!(d.edns.is_some(), with_opt, "{what}: OPT");
            assert_eq!(ecs_scope(d), None, "{what}: no ECS echo");
        })
    };
    let ecs_err = |what: &'static str, want: EcsError| -> Check {
        Box::new(move |o, d| {
            assert_eq!(o.error, Some(FormatError::Ecs(want)), "{what}");
            assert_eq!(rc(d), rcode::FORMERR, "{what}");
            assert!(d.edns.is_some(), "{what}: OPT");
            assert_eq!(ecs_scope(d), None, "{what}: not echoed");
        })
    };
    vec![
        (
            "A by ECS, scope = matched prefix",
            Q::new(WWW, A).ecs("192.0.2.0", 24),
            "198.18.7.1",
            Box::new(|o, d| {
                assert_eq!(rc(d), rcode::NOERROR);
                assert!(d.metadata.authoritative && !d.metadata.recursion_available);
                assert!(d.metadata.recursion_desired);
                assert_eq!(addrs(d), vec![ip("198.18.1.10")]);
                assert_eq!(d.answers[0].ttl, 30);
                assert_eq!(ecs_scope(d), Some(24));
                assert!(matches!(o.source, Some(AnswerSource::Geo { .. })));
            }),
        ),
        (
            "AAAA by the packet's source, no EDNS -> no OPT",
            Q::new(WWW, AAAA),
            "2001:db8::1",
            Box::new(|_o, d| {
                assert_eq!(addrs(d), vec![ip("2001:2:0:1::10")]);
                assert!(d.edns.is_none());
            }),
        ),
        (
            "IPv4-mapped peer is IPv4",
            Q::new(WWW, A),
            "::ffff:198.51.100.7",
            Box::new(|_o, d| {
                assert_eq!(addrs(d), vec![ip("198.18.3.10"), ip("198.18.3.11")]);
            }),
        ),
        (
            "ECS source prefix 0: the packet's source decides, scope 0",
            Q::new(WWW, A).ecs("0.0.0.0", 0),
            EU,
            Box::new(|_o, d| {
                assert_eq!(addrs(d), vec![ip("198.18.1.10")]);
                assert_eq!(ecs_scope(d), Some(0));
            }),
        ),
        (
            "wildcard, case kept in the question",
            Q::new("X.IMG.cdn.example.net.", A),
            EU,
            Box::new(|_o, d| {
                assert_eq!(addrs(d), vec![ip("198.18.1.10")]);
                assert_eq!(d.answers[0].ttl, 300);
                assert_eq!(d.queries[0].name().to_ascii(), "X.IMG.cdn.example.net.");
            }),
        ),
        (
            "no candidate of the family: fallback round robin, scope echoed",
            Q::new(WWW, AAAA).ecs("203.0.113.0", 24),
            "198.18.7.1",
            Box::new(|o, d| {
                assert_eq!(rc(d), rcode::NOERROR);
                assert_eq!(addrs(d).len(), 1);
                assert_eq!(ecs_scope(d), Some(24));
                assert!(matches!(o.source, Some(AnswerSource::Fallback { .. })));
            }),
        ),
        (
            "SOA at the apex",
            Q::new("cdn.example.net.", SOA).edns(),
            EU,
            Box::new(|_o, d| {
                assert!(d.metadata.authoritative);
                assert_eq!(types(&d.answers), vec![RecordType::SOA]);
                assert_eq!(d.answers[0].ttl, 30);
                let RData::SOA(soa) = &d.answers[0].data else {
                    panic!("SOA data")
                };
                assert_eq!(soa.mname.to_ascii(), "ns1.cdn.example.net.");
                assert_eq!(soa.rname.to_ascii(), "hostmaster.cdn.example.net.");
                assert_eq!(soa.serial, 2_025_010_101);
                assert_eq!(soa.minimum, 20);
            }),
        ),
        (
            "NS at the apex with glue for the in-zone name",
            Q::new("cdn.example.net.", NS),
            EU,
            Box::new(|_o, d| {
                assert!(d.metadata.authoritative);
                let ns: Vec<String> = d
                    .answers
                    .iter()
                    .map(|r| match &r.data {
                        RData::NS(n) => n.0.to_ascii(),
                        _ => panic!("NS data"),
                    })
                    .collect();
                assert_eq!(ns, ["ns1.cdn.example.net.", "ns2.example.org."]);
                assert_eq!(types(&d.additionals), vec![RecordType::A, RecordType::AAAA]);
                assert!(d
                    .additionals
                    .iter()
                    .all(|r| r.name.to_ascii() == "ns1.cdn.example.net."));
            }),
        ),
        (
            "glue name A: the glue, scope 0",
            Q::new("ns1.cdn.example.net.", A).ecs("192.0.2.0", 24),
            EU,
            Box::new(|o, d| {
                assert_eq!(addrs(d), vec![ip("198.18.0.53")]);
                assert_eq!(ecs_scope(d), Some(0));
                assert_eq!(o.source, Some(AnswerSource::Glue));
            }),
        ),
        (
            "NODATA for another type of a served name",
            Q::new(WWW, TXT),
            EU,
            soa_authority("NODATA TXT", rcode::NOERROR),
        ),
        (
            "NODATA for an unknown data type",
            Q::new(WWW, 65280),
            EU,
            soa_authority("NODATA TYPE65280", rcode::NOERROR),
        ),
        (
            "NODATA for an empty non-terminal",
            Q::new("deep.cdn.example.net.", A),
            EU,
            soa_authority("NODATA deep", rcode::NOERROR),
        ),
        (
            "NODATA for A at the apex",
            Q::new("cdn.example.net.", A),
            EU,
            soa_authority("NODATA apex A", rcode::NOERROR),
        ),
        (
            "NXDOMAIN inside the zone",
            Q::new("nope.cdn.example.net.", A).ecs("192.0.2.0", 24),
            EU,
            Box::new(move |o, d| {
                soa_authority("NXDOMAIN", rcode::NXDOMAIN)(o, d);
                assert_eq!(ecs_scope(d), Some(0));
            }),
        ),
        (
            "REFUSED outside the zone, never recursion",
            Q::new("www.example.org.", A).edns(),
            EU,
            Box::new(|_o, d| {
                assert_eq!(rc(d), rcode::REFUSED);
                assert!(!d.metadata.authoritative && !d.metadata.recursion_available);
                assert!(d.answers.is_empty() && d.authorities.is_empty());
                assert!(d.edns.is_some());
            }),
        ),
        (
            "REFUSED for the root",
            Q::new(".", NS),
            EU,
            Box::new(|_o, d| assert_eq!(rc(d), rcode::REFUSED)),
        ),
        (
            "class CH: REFUSED",
            Q::new(WWW, A).class(3),
            EU,
            Box::new(|_o, d| assert_eq!(rc(d), rcode::REFUSED)),
        ),
        (
            "AXFR: NOTIMP",
            Q::new("cdn.example.net.", 252),
            EU,
            Box::new(|_o, d| {
                assert_eq!(rc(d), rcode::NOTIMP);
                assert_eq!(d.queries.len(), 1);
            }),
        ),
        (
            "ANY (255, not meta) of a served name: NODATA",
            Q::new(WWW, 255),
            EU,
            soa_authority("ANY", rcode::NOERROR),
        ),
        (
            "opcode 15: NOTIMP, opcode copied (dig +opcode=15)",
            Q::new(WWW, A).flags(0x7900).edns(),
            EU,
            Box::new(|_o, d| {
                assert_eq!(rc(d), rcode::NOTIMP);
                assert_eq!(u8::from(d.metadata.op_code), 15);
                assert!(d.answers.is_empty());
                assert!(d.edns.is_some());
            }),
        ),
        (
            "NOTIFY: NOTIMP",
            Q::new("cdn.example.net.", SOA).flags(0x2000),
            EU,
            Box::new(|_o, d| {
                assert_eq!(rc(d), rcode::NOTIMP);
                assert_eq!(u8::from(d.metadata.op_code), 4);
            }),
        ),
        (
            "Z bit set in the query: answered, Z clear (dig +zflag)",
            Q::new(WWW, A).flags(0x0140).edns(),
            EU,
            Box::new(|o, d| {
                assert_eq!(rc(d), rcode::NOERROR);
                assert_eq!(addrs(d), vec![ip("198.18.1.10")]);
                assert_eq!(o.response.as_ref().expect("response")[3] & 0x40, 0);
            }),
        ),
        (
            "TC, AD, CD, RCODE bits in a query: answered; CD copied, AD clear",
            Q::new(WWW, A).flags(0x0233),
            EU,
            Box::new(|_o, d| {
                assert_eq!(rc(d), rcode::NOERROR);
                assert!(d.metadata.checking_disabled && !d.metadata.authentic_data);
                assert!(!d.metadata.truncation);
                assert!(!d.metadata.recursion_desired);
            }),
        ),
        (
            "EDNS: payload 1232, DO and unknown flags cleared (dig +dnssec +ednsflags)",
            Q::new(WWW, A).opt_full(4096, 0, 0x8000 | 0x0100, &[]),
            EU,
            Box::new(|_o, d| {
                let e = d.edns.as_ref().expect("OPT");
                assert_eq!(e.max_payload(), 1232);
                assert!(!e.flags().dnssec_ok && e.flags().z == 0);
                assert_eq!(e.version(), 0);
            }),
        ),
        (
            "unknown option ignored, not echoed (dig +ednsopt=100)",
            Q::new(WWW, A).opt_full(1232, 0, 0, &[(100, b"xyz"), (10, b"01234567")]),
            EU,
            Box::new(|_o, d| {
                assert_eq!(rc(d), rcode::NOERROR);
                assert!(d.edns.as_ref().expect("OPT").options().as_ref().is_empty());
            }),
        ),
        (
            "EDNS version 1: BADVERS (dig +edns=1 +noednsneg)",
            Q::new(WWW, A).opt_full(1232, 1, 0, &[(100, b"")]),
            EU,
            Box::new(|o, d| {
                assert_eq!(rc(d), rcode::BADVERS);
                assert_eq!(o.response.as_ref().expect("response")[3] & 0xF, 0);
                let e = d.edns.as_ref().expect("OPT");
                assert_eq!((e.version(), e.rcode_high()), (0, 1));
                assert!(d.answers.is_empty());
                assert_eq!(d.queries.len(), 1);
            }),
        ),
        (
            "two OPT records: FORMERR",
            Q::new(WWW, A).edns().edns(),
            EU,
            formerr("two OPTs", true),
        ),
        (
            "option running past its OPT: FORMERR",
            Q::new(WWW, A).edns().tail(&[]).raw_opt_overrun(),
            EU,
            formerr("option overrun", true),
        ),
        (
            "ECS family 3",
            Q::new(WWW, A).ecs_raw(&[0, 3, 8, 0, 10]),
            EU,
            ecs_err("family", EcsError::Family(3)),
        ),
        (
            "ECS source /33 for IPv4",
            Q::new(WWW, A).ecs_raw(&[0, 1, 33, 0, 10, 0, 0, 0, 0]),
            EU,
            ecs_err(
                "prefix",
                EcsError::PrefixTooLong {
                    prefix: 33,
                    max: 32,
                },
            ),
        ),
        (
            "ECS address bytes not matching the prefix",
            Q::new(WWW, A).ecs_raw(&[0, 1, 24, 0, 192, 0, 2, 0]),
            EU,
            ecs_err(
                "length",
                EcsError::AddressLength {
                    prefix: 24,
                    got: 4,
                    want: 3,
                },
            ),
        ),
        (
            "ECS bits past the prefix",
            Q::new(WWW, A).ecs_raw(&[0, 1, 23, 0, 192, 0, 3]),
            EU,
            ecs_err("bits", EcsError::BitsPastPrefix(23)),
        ),
        (
            "ECS scope in a query",
            Q::new(WWW, A).ecs_raw(&[0, 1, 24, 16, 192, 0, 2]),
            EU,
            ecs_err("scope", EcsError::Scope(16)),
        ),
        (
            "ECS twice",
            Q::new(WWW, A).opt_full(
                1232,
                0,
                0,
                &[
                    (8, &[0, 1, 24, 0, 192, 0, 2]),
                    (8, &[0, 1, 24, 0, 192, 0, 2]),
                ],
            ),
            EU,
            ecs_err("twice", EcsError::Duplicate),
        ),
        (
            "ECS shorter than 4 bytes",
            Q::new(WWW, A).ecs_raw(&[0, 1, 0]),
            EU,
            ecs_err("short", EcsError::Short),
        ),
        (
            "label of 64: FORMERR",
            Q::new(WWW, A).raw_name(&[&[64u8][..], &[b'a'; 64], &[0]].concat()),
            EU,
            formerr("label 64", false),
        ),
        (
            "name of 256 bytes: FORMERR",
            Q::new(WWW, A).raw_name(&long_name(256)),
            EU,
            formerr("name 256", false),
        ),
        (
            "compression pointer in the question (a loop): FORMERR",
            Q::new(WWW, A).raw_name(&[1, b'a', 0xC0, 12]),
            EU,
            formerr("loop", false),
        ),
        (
            "forward pointer: FORMERR",
            Q::new(WWW, A).raw_name(&[1, b'a', 0xC0, 40]),
            EU,
            formerr("forward", false),
        ),
        (
            "QDCOUNT 0: FORMERR",
            Q::new(WWW, A)
                .counts([0, 0, 0, 0])
                .raw_name(&[])
                .no_question(),
            EU,
            formerr("qdcount 0", false),
        ),
        (
            "QDCOUNT 2: FORMERR",
            Q::new(WWW, A).counts([2, 0, 0, 0]).tail(&[0, 0, 1, 0, 1]),
            EU,
            formerr("qdcount 2", false),
        ),
        (
            "question type OPT: FORMERR",
            Q::new(WWW, 41),
            EU,
            formerr("qtype OPT", false),
        ),
        (
            "bytes after the last record: FORMERR",
            Q::new(WWW, A).tail(&[0]),
            EU,
            formerr("trailing", false),
        ),
        (
            "record count past the end: FORMERR",
            Q::new(WWW, A).counts([1, 0, 0, 1]),
            EU,
            formerr("arcount", false),
        ),
        (
            "OPT in the answer section: FORMERR",
            Q::new(WWW, A).edns().counts([1, 1, 0, 0]),
            EU,
            formerr("OPT in answers", false),
        ),
        (
            "a compressed record before the OPT is read and skipped",
            Q::new(WWW, A)
                .counts([1, 0, 0, 2])
                .edns()
                .tail(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]),
            EU,
            Box::new(|_o, d| {
                assert_eq!(rc(d), rcode::NOERROR);
                assert!(d.edns.is_some());
            }),
        ),
    ]
}

impl Q {
    /// An OPT whose one option claims more bytes than the record holds.
    fn raw_opt_overrun(mut self) -> Self {
        self.opts = vec![vec![0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 4, 0, 100, 0, 9]];
        self
    }

    /// No question at all (with QDCOUNT 0).
    fn no_question(mut self) -> Self {
        self.qname.clear();
        self.qtype = 0;
        self.qclass = 0;
        self.tail = Vec::new();
        self
    }
}

/// A name of exactly `len` wire bytes (63-byte labels, then one to fill).
fn long_name(len: usize) -> Vec<u8> {
    let mut n = Vec::new();
    while len - n.len() - 1 > 64 {
        n.push(63);
        n.extend_from_slice(&[b'a'; 63]);
    }
    let last = len - n.len() - 2;
    n.push(u8::try_from(last).expect("short"));
    n.extend(std::iter::repeat_n(b'b', last));
    n.push(0);
    assert_eq!(n.len(), len);
    n
}

#[test]
fn the_longest_name_is_answered() {
    let e = engine();
    let mut name = long_name(255 - 17 + 1);
    name.truncate(name.len() - 1);
    name.extend_from_slice(&wire("cdn.example.net."));
    assert_eq!(name.len(), 255);
    let (_o, d) = ask(&e, &Q::new(WWW, A).raw_name(&name), EU);
    assert_eq!(rc(&d), rcode::NXDOMAIN);
}

#[test]
fn drops() {
    let e = engine();
    for (what, bytes, why) in [
        ("empty", vec![], Drop::Short),
        ("11 bytes", vec![0; 11], Drop::Short),
        (
            "a response",
            Q::new(WWW, A).flags(0x8100).build(),
            Drop::Response,
        ),
    ] {
        let o = handle(&e, &bytes, ip(EU), Transport::Udp);
        assert_eq!((o.response, o.dropped), (None, Some(why)), "{what}");
    }
    // A bare header is a query with no question.
    let o = handle(&e, &[0; 12], ip(EU), Transport::Udp);
    assert_eq!(o.rcode, Some(rcode::FORMERR));
}

#[test]
fn fallback_rotates_by_weight() {
    let e = engine();
    // 10.0.0.1 is in no prefix of the config: region 0, the [fallback] nodes 2:1.
    let got: Vec<IpAddr> = (0..6)
        .flat_map(|_| addrs(&ask(&e, &Q::new(WWW, A), "10.0.0.1").1))
        .collect();
    let (c1, c2) = (ip("198.18.100.1"), ip("198.18.100.2"));
    assert_eq!(got, vec![c1, c2, c1, c1, c2, c1]);
}

#[test]
fn truncation_by_client_size() {
    let e = many_ns_engine();
    let apex = "cdn.example.net.";
    // Without EDNS the NS answer with glue (> 512 bytes) is truncated...
    let (o, d) = ask(&e, &Q::new(apex, NS), EU);
    assert!(o.truncated && d.metadata.truncation);
    assert!(d.answers.is_empty() && d.additionals.is_empty());
    assert_eq!(d.queries.len(), 1);
    assert!(d.metadata.authoritative);
    // ...with EDNS 1232 it fits; with EDNS 512 it does not, and keeps its OPT.
    let (o, d) = ask(&e, &Q::new(apex, NS).edns(), EU);
    assert!(!o.truncated);
    assert_eq!(d.answers.len(), 10);
    assert!(o.response.as_ref().expect("response").len() > 512);
    let (o, d) = ask(&e, &Q::new(apex, NS).opt_full(512, 0, 0, &[]), EU);
    assert!(o.truncated && d.edns.is_some());
    // Payloads below 512 count as 512.
    let (o, _) = ask(&e, &Q::new(apex, SOA).opt_full(100, 0, 0, &[]), EU);
    assert!(!o.truncated);
    // TCP is never truncated.
    let o = ask_with(&e, &Q::new(apex, NS).build(), ip(EU), Transport::Tcp);
    assert!(!o.truncated);
}

#[test]
fn eight_aaaa_fit_in_512_bytes() {
    // At most 8 addresses per answer (MAX_ANSWER_ADDRS): even with a 255-byte name
    // an address answer fits 512 bytes; only NS with glue can need TC.
    let e = engine();
    let (o, d) = ask(
        &e,
        &Q::new("big.cdn.example.net.", AAAA).ecs("192.0.2.0", 24),
        EU,
    );
    assert_eq!(addrs(&d).len(), 8);
    assert!(!o.truncated);
}

#[test]
fn reparsed_by_an_independent_decoder_under_mutation() {
    // Bounded: a fixed number of mutations of every table query; each response is
    // checked by hickory-proto and the invariants of check_response.
    let e = engine();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let seeds: Vec<Vec<u8>> = cases().iter().map(|(_, q, _, _)| q.build()).collect();
    let mut answered = 0;
    for i in 0..20_000u32 {
        let mut m = seeds[i as usize % seeds.len()].clone();
        for _ in 0..=(next() % 4) {
            let r = next();
            let at = usize::try_from(r >> 32).unwrap_or(0) % m.len().max(1);
            match r % 4 {
                0 if !m.is_empty() => m[at] = r.to_be_bytes()[6],
                1 if !m.is_empty() => {
                    m.remove(at);
                }
                2 => m.insert(at.min(m.len()), r.to_be_bytes()[5]),
                _ => m.truncate(at),
            }
        }
        let t = if i % 2 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let peer = if i % 3 == 0 {
            ip("2001:db8::1")
        } else {
            ip(EU)
        };
        let o = ask_with(&e, &m, peer, t);
        if o.response.is_some() {
            answered += 1;
        }
        if o.dropped == Some(Drop::NotDns) {
            // Only a header whose counts cannot fit is "not DNS".
            let count = |at: usize| usize::from(u16::from_be_bytes([m[at], m[at + 1]]));
            assert!(12 + 5 * count(4) + 11 * (count(6) + count(8) + count(10)) > m.len());
        }
    }
    // A mutated count byte usually makes the header claim more than the datagram
    // holds, which is dropped as not DNS; the rest still get a response.
    assert!(
        answered > 7_000,
        "many mutations still get a response: {answered}"
    );
}

/// The demo config (static records from its zone file: TXT, MX, CNAME, a delegation).
fn demo_engine() -> Engine {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml");
    let config = Config::from_path(&path).expect("demo config");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("demo compiles");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
        .with_picker(Box::new(SplitMix::seeded(7)))
}

#[test]
fn quick_answers_are_the_general_ones_byte_for_byte() {
    // Two engines from the same config and seed answer the same queries in the same
    // order (spread picks and fallback rotation stay in step): one through
    // `Engine::resolve_quick` where it answers, one always through `Engine::resolve`.
    let names = [
        WWW,
        "WwW.CdN.eXaMpLe.NeT.",
        "cdn.example.net.",
        "CDN.example.net.",
        "ns1.cdn.example.net.",
        "ns1.lab.cdn.example.net.",
        "x.lab.cdn.example.net.",
        "lab.cdn.example.net.",
        "mail.cdn.example.net.",
        "video.cdn.example.net.",
        "static.img.cdn.example.net.",
        "x.static.img.cdn.example.net.",
        "a.img.cdn.example.net.",
        "a.b.img.cdn.example.net.",
        "img.cdn.example.net.",
        "deep.cdn.example.net.",
        "a.deep.cdn.example.net.",
        "big.cdn.example.net.",
        "dl.cdn.example.net.",
        "cache.cdn.example.net.",
        "nope.cdn.example.net.",
        "a.b.nope.cdn.example.net.",
        "*.img.cdn.example.net.",
        "www.example.com.",
        "net.",
        ".",
    ];
    let qtypes = [A, AAAA, NS, SOA, TXT, 15, 5, 65, 257, 255, 99];
    let peers = [
        EU,
        "198.51.100.7",
        "203.0.113.9",
        "2001:db8::1",
        "10.1.2.3",
        "::ffff:192.0.2.1",
    ];
    let mut queries = Vec::new();
    for name in names {
        for qtype in qtypes {
            queries.push(Q::new(name, qtype).build());
            queries.push(Q::new(name, qtype).edns().build());
            queries.push(Q::new(name, qtype).opt_full(512, 0, 0x8000, &[]).build());
            queries.push(Q::new(name, qtype).ecs("198.51.100.0", 24).build());
            queries.push(Q::new(name, qtype).ecs("2001:db8::", 48).build());
            queries.push(Q::new(name, qtype).ecs("192.0.2.0", 0).build());
        }
    }
    queries.extend(cases().iter().map(|(_, q, _, _)| q.build()));
    let engines: [fn() -> Engine; 3] = [engine, many_ns_engine, demo_engine];
    let mut quick_answers = 0;
    for make in engines {
        // A third to count what the quick way answers (asking it moves a rotation).
        let (fast, slow, counter) = (make(), make(), make());
        let mut quick = super::respond::Responder::default();
        let mut general = super::respond::Responder::general();
        for (i, q) in queries.iter().enumerate() {
            let peer = ip(peers[i % peers.len()]);
            for t in [Transport::Udp, Transport::Tcp] {
                let got = quick.answer(&fast, q, peer, t, None);
                let want = general.answer(&slow, q, peer, t, None);
                assert_eq!(got, want, "query {q:02x?} from {peer}");
                if got.respond {
                    assert_eq!(
                        quick.response(),
                        general.response(),
                        "query {q:02x?} from {peer} over {t:?}"
                    );
                }
                if let Ok(m) = super::parse::parse(q) {
                    if let Some(question) = m.question.filter(|_| m.error.is_none()) {
                        let lower = question.name.to_ascii_lowercase();
                        quick_answers += usize::from(
                            counter
                                .resolve_quick(&lower, question.qtype, peer)
                                .is_some(),
                        );
                    }
                }
            }
        }
    }
    assert!(
        quick_answers > queries.len(),
        "the quick way answers most: {quick_answers}"
    );
}

/// Where the seed corpus goes: `target/fuzz-seeds/query` (or under `CARGO_TARGET_DIR`).
fn seed_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("fuzz-seeds/query")
}

/// Writes every table query (and the TC and drop cases) as a seed for `cargo xtask
/// fuzz query`, one file per query.
#[test]
fn write_fuzz_seeds() {
    let dir = seed_dir();
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let mut seeds: Vec<Vec<u8>> = cases().iter().map(|(_, q, _, _)| q.build()).collect();
    seeds.push(Q::new("cdn.example.net.", NS).build());
    seeds.push(Q::new(WWW, A).flags(0x8100).build());
    seeds.push(vec![0; 12]);
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("table-{i:03}")), s).expect("write a seed");
    }
}

// --- the real server on loopback ---

fn loopback_server(tcp: TcpOptions) -> (tokio::runtime::Runtime, DnsServer, EngineHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = EngineHandle::new(engine());
    let states: crate::control::StatesFn =
        Arc::new(|c: &geodns_maps::Config| geodns_maps::NodeStates::from_config(c));
    let control = crate::control::Control::start(handle.clone(), None, states).expect("control");
    let listener = Listener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 2).expect("bind");
    let server = rt
        .block_on(async {
            DnsServer::start(
                &control,
                vec![listener],
                tcp,
                Arc::new(ServerStats::default()),
            )
        })
        .expect("start");
    (rt, server, handle)
}

fn udp_query(addr: SocketAddr, q: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.send_to(q, addr).expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("a UDP response");
    buf[..n].to_vec()
}

fn read_framed(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("length");
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut m).expect("message");
    m
}

fn framed(q: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(q.len()).expect("len").to_be_bytes().to_vec();
    out.extend_from_slice(q);
    out
}

#[test]
fn server_answers_udp_and_pipelined_tcp_and_follows_the_engine() {
    let (_rt, server, handle) = loopback_server(TcpOptions::default());
    let addr = server.local_addrs()[0];
    let q = Q::new(WWW, A).build();
    // 127.0.0.1 is in no prefix: the fallback answers.
    let r = Decoded::from_vec(&udp_query(addr, &q)).expect("decodes");
    assert_eq!(addrs(&r).len(), 1);
    let www_eu = Q::new(WWW, A).ecs("192.0.2.0", 24).build();
    let r = udp_query(addr, &www_eu);
    check_response(&www_eu, &r, Transport::Udp).expect("valid");
    assert_eq!(
        addrs(&Decoded::from_vec(&r).expect("decodes")),
        vec![ip("198.18.1.10")]
    );

    // Three queries in one write, answered in order on one connection.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let queries = [
        Q::new(WWW, A).ecs("192.0.2.0", 24).build(),
        Q::new("nope.cdn.example.net.", A).build(),
        Q::new("cdn.example.net.", SOA).build(),
    ];
    let mut all = Vec::new();
    for q in &queries {
        all.extend_from_slice(&framed(q));
    }
    s.write_all(&all).expect("write");
    let codes: Vec<u16> = queries
        .iter()
        .map(|q| {
            let r = read_framed(&mut s);
            check_response(q, &r, Transport::Tcp).expect("valid");
            rc(&Decoded::from_vec(&r).expect("decodes"))
        })
        .collect();
    assert_eq!(codes, vec![rcode::NOERROR, rcode::NXDOMAIN, rcode::NOERROR]);

    // A new engine (a reload, a node going down) answers the next query.
    handle.store(engine_from(
        &format!("{ZONE}{REST}").replace("198.18.1.10", "198.18.1.99"),
    ));
    s.write_all(&framed(&www_eu)).expect("write");
    let r = Decoded::from_vec(&read_framed(&mut s)).expect("decodes");
    assert_eq!(addrs(&r), vec![ip("198.18.1.99")]);

    let stats = server.stats();
    assert_eq!(stats.rcode(rcode::NXDOMAIN), 1);
    let text = stats.metrics_text();
    assert!(
        text.contains("geodns_server_queries_total{qtype=\"A\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("geodns_server_responses_total{rcode=\"NOERROR\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("geodns_server_transport_queries_total{transport=\"tcp\"} 4"),
        "{text}"
    );
    // Every sample line is `name{labels} value` or `name value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').expect("a value");
        v.parse::<u64>()
            .unwrap_or_else(|_| panic!("bad sample {line}"));
    }
}

#[test]
fn server_caps_connections_and_closes_idle_ones() {
    let (_rt, server, _handle) = loopback_server(TcpOptions {
        idle_timeout: Duration::from_millis(300),
        max_connections: 1,
        ..TcpOptions::default()
    });
    let addr = server.local_addrs()[0];
    let mut first = TcpStream::connect(addr).expect("connect");
    first
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    first
        .write_all(&framed(&Q::new(WWW, A).build()))
        .expect("write");
    let _ = read_framed(&mut first);
    // The second is closed at once while the first is open.
    let mut second = TcpStream::connect(addr).expect("connect");
    second
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let _ = second.write_all(&framed(&Q::new(WWW, A).build()));
    let mut buf = [0u8; 2];
    assert!(
        matches!(second.read(&mut buf), Ok(0) | Err(_)),
        "the connection over the cap is closed"
    );
    assert_eq!(server.stats().tcp_refused_count(), 1);
    // The first goes idle and is closed by the server within the timeout.
    let started = std::time::Instant::now();
    assert!(matches!(first.read(&mut buf), Ok(0) | Err(_)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed for idleness"
    );
    // Then a new connection is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while server.stats().tcp_open_count() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut third = TcpStream::connect(addr).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    third
        .write_all(&framed(&Q::new(WWW, A).build()))
        .expect("write");
    assert!(!read_framed(&mut third).is_empty());
}

#[test]
fn server_binds_v4_and_v6_on_one_port() {
    let v4 = Listener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 2).expect("bind v4");
    let port = v4.local_addr().port();
    // [::1] with the same port: IPv6-only sockets do not collide with the IPv4 ones.
    if let Ok(v6) = Listener::bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), 2) {
        assert_eq!(v6.local_addr().port(), port);
    }
}

#[test]
fn udp_answers_are_capped_at_1232_bytes() {
    // 29 in-zone name servers with glue: about 1.9 KB. A client asking for 65535 bytes
    // over UDP still gets at most 1232 (RFC 9715): TC=1; TCP gets it all.
    let e = ns_engine(32);
    let apex = "cdn.example.net.";
    let (o, d) = ask(&e, &Q::new(apex, NS).opt_full(65535, 0, 0, &[]), EU);
    assert!(o.truncated && d.metadata.truncation && d.answers.is_empty());
    assert!(o.response.as_ref().expect("response").len() <= 1232);
    let o = ask_with(&e, &Q::new(apex, NS).build(), ip(EU), Transport::Tcp);
    assert!(!o.truncated);
    assert!(o.response.as_ref().expect("response").len() > 1232);
}

#[test]
fn garbage_is_never_answered() {
    let e = engine();
    // A daytime answer and a chargen line bounced off a spoofed source: QR=0, but the
    // counts claim thousands of records. No NOTIMP, no FORMERR.
    let chargen: Vec<u8> = (0..72u8).map(|i| b' ' + 1 + (i % 94)).collect();
    for (what, bytes) in [
        ("daytime", b"Fri Dec  4 13:46:29 2026\r\n".to_vec()),
        ("chargen", chargen),
    ] {
        let o = handle(&e, &bytes, ip(EU), Transport::Udp);
        assert_eq!(
            (o.response, o.dropped),
            (None, Some(Drop::NotDns)),
            "{what}"
        );
    }
}

/// An engine of the test zone with `[rrl]` settings.
fn engine_with_rrl(rrl: &str) -> Engine {
    engine_from(&format!("{ZONE}{REST}\n[rrl]\n{rrl}\n"))
}

#[test]
fn udp_guard_drops_reflector_ports_and_rate_limits() {
    use super::guard::UdpGuard;
    use std::net::SocketAddr;
    let e = engine_with_rrl("rate = 1\nburst = 2\nslip = 2");
    let guard = UdpGuard::new(e.config());
    let from = |addr: &str, port: u16| SocketAddr::new(ip(addr), port);
    let query = Q::new(WWW, A).build();
    for port in [0, 7, 13, 17, 19, 37, 111, 123, 161, 389, 1900, 11211] {
        let out = guard.handle(&e, &query, from(EU, port));
        let want = if port == 0 {
            Drop::PortZero
        } else {
            Drop::ReflectorPort
        };
        assert_eq!(
            (out.response.is_none(), out.dropped),
            (true, Some(want)),
            "port {port}"
        );
    }
    // Answers: 2 at once, then drop, slip (empty, TC=1, the question), drop, slip.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let out = guard.handle(&e, &query, from(EU, 40000));
        seen.push(match (&out.response, out.slipped, out.dropped) {
            (Some(r), true, None) => {
                check_response(&query, r, Transport::Udp).expect("a slip is a valid response");
                let d = Decoded::from_vec(r).expect("decodes");
                assert!(d.metadata.truncation && d.answers.is_empty() && d.queries.len() == 1);
                "slip"
            }
            (Some(_), false, None) => "answer",
            (None, false, Some(Drop::RateLimited)) => "drop",
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(seen, ["answer", "answer", "drop", "slip", "drop", "slip"]);
    // Source port 53 (a resolver's) is not a reflector; another /24 has its own bucket.
    let out = guard.handle(&e, &query, from("192.0.3.1", 53));
    assert!(out.response.is_some() && !out.slipped);
    // The ECS address does not pick the bucket: the source's is spent.
    let ecs = Q::new(WWW, A).ecs("198.51.100.0", 24).build();
    assert!(guard.handle(&e, &ecs, from(EU, 40000)).response.is_none());
    // NXDOMAIN has a bucket of its own (per zone: random names share it), and so do
    // errors (FORMERR, REFUSED, ...).
    for (name, class) in [
        ("nx1.cdn.example.net.", "negative"),
        ("nx2.cdn.example.net.", "negative"),
    ] {
        let out = guard.handle(&e, &Q::new(name, A).build(), from("192.0.4.1", 40000));
        assert!(out.response.is_some() && !out.slipped, "{class} {name}");
    }
    let out = guard.handle(
        &e,
        &Q::new("nx3.cdn.example.net.", A).build(),
        from("192.0.4.1", 40000),
    );
    assert_eq!(
        out.dropped,
        Some(Drop::RateLimited),
        "a third NXDOMAIN from the /24"
    );
    let refused = Q::new("www.example.org.", A).build();
    for _ in 0..2 {
        let out = guard.handle(&e, &refused, from("192.0.4.1", 40000));
        assert_eq!(out.rcode, Some(rcode::REFUSED), "errors: their own bucket");
    }
    assert!(guard
        .handle(&e, &refused, from("192.0.4.1", 40000))
        .response
        .is_none());
    // TCP never goes through the guard: the same query keeps being answered.
    for _ in 0..5 {
        let out = handle(&e, &query, ip(EU), Transport::Tcp);
        assert!(out.response.is_some());
    }
}

#[test]
fn udp_guard_with_rate_zero_never_limits() {
    use super::guard::UdpGuard;
    let e = engine_with_rrl("rate = 0");
    let guard = UdpGuard::new(e.config());
    let q = Q::new(WWW, A).build();
    for _ in 0..1000 {
        let o = guard.handle(&e, &q, std::net::SocketAddr::new(ip(EU), 40000));
        assert!(o.response.is_some() && !o.slipped);
    }
}
