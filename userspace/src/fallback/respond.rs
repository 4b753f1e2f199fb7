//! One query in, one response (or nothing) out: validation order, the engine's
//! decision, and the response bytes.
//!
//! Responses are written by hand so they match the kernel's byte for byte where both
//! answer: the question copied as sent, answer records pointing at the question name
//! (`0xC00C`), AA=1, RD and CD copied, RA=AD=Z=0, and with EDNS an OPT record with
//! payload 1232, version 0, no flags, and the ECS option echoed (family, source prefix,
//! address as sent) with SCOPE = the matched prefix length when the source prefix was
//! not 0 (0 otherwise, and for answers that do not depend on the client). Other names
//! (SOA, NS, glue) are compressed against the names already written.
use std::net::IpAddr;

use geodns_common::{EDNS_UDP_PAYLOAD, RRL_CLASS_ANSWER, RRL_CLASS_ERROR, RRL_CLASS_NEGATIVE};
use geodns_maps::{
    defence::Verdict, engine::StaticRr, AnswerSource, Engine, Question as EngineQuestion,
    Resolution,
};

use super::parse::{self, Drop, Ecs, Edns, FormatError, Message, Question, CLASS_IN};

/// Response codes (RFC 1035, 6891).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    /// Extended: 1 in the OPT record's extended RCODE, 0 in the header.
    pub const BADVERS: u16 = 16;

    /// The mnemonic, as `dig` prints it.
    #[must_use]
    pub fn name(rcode: u16) -> &'static str {
        match rcode {
            NOERROR => "NOERROR",
            FORMERR => "FORMERR",
            SERVFAIL => "SERVFAIL",
            NXDOMAIN => "NXDOMAIN",
            NOTIMP => "NOTIMP",
            REFUSED => "REFUSED",
            BADVERS => "BADVERS",
            _ => "other",
        }
    }
}

const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
/// The largest DNS message (TCP's two-byte length).
const MAX_MESSAGE: usize = 65535;
/// UDP responses never need to be smaller than this (RFC 1035).
const MIN_UDP: usize = 512;

/// How the query arrived: UDP responses are truncated to the client's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The bytes to send back; `None`: drop.
    pub response: Option<Vec<u8>>,
    pub dropped: Option<Drop>,
    /// The full RCODE sent (BADVERS is 16).
    pub rcode: Option<u16>,
    /// QTYPE of the question, when one parsed.
    pub qtype: Option<u16>,
    /// Sent with TC=1 (the answer did not fit the client's UDP size).
    pub truncated: bool,
    /// Sent empty with TC=1 by the rate limit (a slip).
    pub slipped: bool,
    /// Where an address answer came from.
    pub source: Option<AnswerSource>,
    /// Why the query was FORMERR.
    pub error: Option<FormatError>,
}

impl Outcome {
    pub(crate) fn dropped(why: Drop) -> Self {
        Self {
            response: None,
            dropped: Some(why),
            rcode: None,
            qtype: None,
            truncated: false,
            slipped: false,
            source: None,
            error: None,
        }
    }
}

/// The rate limit's question for a response: its class (`RRL_CLASS_*`) and, for
/// answers, the name's number ([`Engine::rrl_name`]); the verdict decides.
pub type RateLimit<'a> = &'a mut dyn FnMut(u8, u64) -> Verdict;

/// Answers one DNS message from `peer`, deciding with `engine`. Never panics; what it
/// allocates is bounded by the response, never by a count read from the wire.
#[must_use]
pub fn handle(engine: &Engine, msg: &[u8], peer: IpAddr, transport: Transport) -> Outcome {
    handle_limited(engine, msg, peer, transport, None)
}

/// As [`handle`], asking `limit` (response rate limiting) before a response is sent.
#[must_use]
pub fn handle_limited(
    engine: &Engine,
    msg: &[u8],
    peer: IpAddr,
    transport: Transport,
    rate_limit: Option<RateLimit<'_>>,
) -> Outcome {
    let m = match parse::parse(msg) {
        Ok(m) => m,
        Err(why) => return Outcome::dropped(why),
    };
    let limit = match transport {
        Transport::Tcp => MAX_MESSAGE,
        // The client's size, at least 512 and at most what we advertise (1232, RFC
        // 9715): a bigger UDP answer is fragmented, and an amplifier's dream.
        Transport::Udp => m.edns.map_or(MIN_UDP, |e| {
            usize::from(e.payload).clamp(MIN_UDP, usize::from(EDNS_UDP_PAYLOAD))
        }),
    };
    let mut out = Outcome {
        response: None,
        dropped: None,
        rcode: None,
        qtype: m.question.map(|q| q.qtype),
        truncated: false,
        slipped: false,
        source: None,
        error: m.error,
    };
    let mut r = reply(&m);
    decide(engine, &m, peer, &mut r, &mut out);
    if let Some(rate_limit) = rate_limit {
        let has_answer = r.records.iter().any(|rr| rr.section == Section::Answer);
        let (class, name) = match r.rcode {
            rcode::NOERROR if has_answer => (
                RRL_CLASS_ANSWER,
                m.question.map_or(0, |q| engine.rrl_name(q.name)),
            ),
            // NODATA with NXDOMAIN: both per zone, so random names share one bucket.
            rcode::NOERROR | rcode::NXDOMAIN => (RRL_CLASS_NEGATIVE, 0),
            _ => (RRL_CLASS_ERROR, 0),
        };
        match rate_limit(class, name) {
            Verdict::Send => {}
            Verdict::Slip => {
                out.slipped = true;
                out.rcode = Some(r.rcode);
                out.response = Some(r.encode(true));
                return out;
            }
            Verdict::Drop => return Outcome::dropped(Drop::RateLimited),
        }
    }
    let bytes = r.encode(false);
    let bytes = if bytes.len() > limit {
        out.truncated = true;
        r.encode(true)
    } else {
        bytes
    };
    out.rcode = Some(r.rcode);
    out.response = Some(bytes);
    out
}

/// The reply's frame before a decision: errors for what cannot be answered.
fn reply<'a>(m: &Message<'a>) -> Reply<'a> {
    Reply {
        id: m.header.id,
        opcode: m.header.opcode(),
        rd: m.header.rd(),
        cd: m.header.cd(),
        aa: false,
        rcode: rcode::NOERROR,
        question: m.question,
        edns: m.edns.map(|_| ReplyEdns { ecs: None }),
        records: Vec::new(),
    }
}

/// Fills `r` in the order a query is checked.
fn decide<'a>(
    engine: &Engine,
    m: &Message<'a>,
    peer: IpAddr,
    r: &mut Reply<'a>,
    out: &mut Outcome,
) {
    // The opcode decides how the rest reads: an unknown one is NOTIMP whatever follows
    // (with the question and OPT echoed only when they parsed as a query's).
    if m.header.opcode() != 0 {
        r.rcode = rcode::NOTIMP;
        if m.error.is_some() {
            r.question = None;
            r.edns = None;
        }
        return;
    }
    if m.error.is_some() {
        r.rcode = rcode::FORMERR;
        return;
    }
    let Some(q) = m.question else {
        // Not reached: no error means exactly one question.
        r.rcode = rcode::FORMERR;
        return;
    };
    let edns = m.edns;
    if edns.is_some_and(|e| e.version > 0) {
        r.rcode = rcode::BADVERS;
        return;
    }
    let ecs = edns.and_then(|e: Edns| e.ecs);
    // ECS is echoed from here on, scope 0 unless the answer depends on the client.
    if let (Some(e), Some(re)) = (ecs, r.edns.as_mut()) {
        re.ecs = Some((e, 0));
    }
    if q.qclass != CLASS_IN {
        r.rcode = rcode::REFUSED;
        return;
    }
    if (128..=254).contains(&q.qtype) {
        r.rcode = rcode::NOTIMP;
        return;
    }
    // A socket peer `::ffff:a.b.c.d` (a dual-stack socket) is the IPv4 client; an ECS
    // address is taken as sent, as the kernel takes it (an IPv6 client, looked up as
    // IPv4 only where the databases alias that range).
    let client = ecs
        .and_then(|e| e.client())
        .unwrap_or_else(|| peer.to_canonical());
    let resolution = engine.resolve(&EngineQuestion::from_wire(q.name, q.qtype, client));
    answer(engine, &q, ecs, resolution, r, out);
}

/// Turns the engine's decision into records.
fn answer(
    engine: &Engine,
    q: &Question<'_>,
    ecs: Option<Ecs>,
    resolution: Resolution,
    r: &mut Reply<'_>,
    out: &mut Outcome,
) {
    let config = engine.config();
    let zone = &config.zone;
    let origin = engine.origin_wire().to_vec();
    let qname = geodns_maps::name::lowercase(q.name);
    r.aa = true;
    match resolution {
        Resolution::Refused => {
            r.aa = false;
            r.rcode = rcode::REFUSED;
        }
        Resolution::NxDomain => {
            r.rcode = rcode::NXDOMAIN;
            r.records.push(soa(engine, Section::Authority));
        }
        Resolution::NoData => r.records.push(soa(engine, Section::Authority)),
        Resolution::Soa => r.records.push(soa(engine, Section::Answer)),
        Resolution::Ns => {
            let names: Vec<Vec<u8>> = zone
                .ns
                .iter()
                .map(|n| geodns_maps::name::to_wire(&n.name))
                .collect();
            for n in &names {
                r.records.push(Rr {
                    section: Section::Answer,
                    owner: origin.clone(),
                    rtype: TYPE_NS,
                    ttl: zone.ttl,
                    rdata: Rdata::Name(n.clone()),
                });
            }
            // Glue for the in-zone names, IPv4 first, in NS order.
            for v6 in [false, true] {
                for n in &names {
                    let Some((g4, g6)) = engine.glue(n) else {
                        continue;
                    };
                    for a in if v6 { g6 } else { g4 } {
                        r.records
                            .push(address(Section::Additional, n, zone.ttl, *a));
                    }
                }
            }
        }
        Resolution::Addresses {
            addrs,
            ttl,
            scope,
            source,
        } => {
            out.source = Some(source);
            for a in addrs {
                r.records.push(address(Section::Answer, &qname, ttl, a));
            }
            if let (Some(e), Some(re)) = (ecs, r.edns.as_mut()) {
                if e.source_prefix > 0 {
                    re.ecs = Some((e, scope));
                }
            }
        }
        Resolution::Records(recs) => {
            r.aa = recs.authoritative;
            if recs.nxdomain {
                r.rcode = rcode::NXDOMAIN;
            }
            let rr = |section: Section, s: &StaticRr| Rr {
                section,
                owner: s.owner.clone(),
                rtype: s.rtype,
                ttl: s.ttl,
                rdata: Rdata::Bytes(s.rdata.clone()),
            };
            r.records
                .extend(recs.answer.iter().map(|s| rr(Section::Answer, s)));
            if let Some(geo) = &recs.geo {
                out.source = Some(geo.source);
                for a in &geo.addrs {
                    r.records
                        .push(address(Section::Answer, &geo.owner, geo.ttl, *a));
                }
                if let (Some(e), Some(re)) = (ecs, r.edns.as_mut()) {
                    if e.source_prefix > 0 {
                        re.ecs = Some((e, geo.scope));
                    }
                }
            }
            if recs.soa {
                r.records.push(soa(engine, Section::Authority));
            }
            r.records
                .extend(recs.authority.iter().map(|s| rr(Section::Authority, s)));
            r.records
                .extend(recs.additional.iter().map(|s| rr(Section::Additional, s)));
        }
    }
}

fn address(section: Section, owner: &[u8], ttl: u32, a: IpAddr) -> Rr {
    let (rtype, rdata) = match a {
        IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
        IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
    };
    Rr {
        section,
        owner: owner.to_vec(),
        rtype,
        ttl,
        rdata: Rdata::Bytes(rdata),
    }
}

/// The zone's SOA; in the authority section of a negative answer its TTL is the
/// negative-caching TTL, min(TTL, MINIMUM) (RFC 2308 section 3).
fn soa(engine: &Engine, section: Section) -> Rr {
    let zone = &engine.config().zone;
    let ttl = if section == Section::Authority {
        zone.ttl.min(zone.minimum)
    } else {
        zone.ttl
    };
    Rr {
        section,
        owner: engine.origin_wire().to_vec(),
        rtype: TYPE_SOA,
        ttl,
        rdata: Rdata::Soa {
            mname: geodns_maps::name::to_wire(&zone.mname),
            rname: geodns_maps::name::to_wire(&zone.rname),
            numbers: [
                zone.serial,
                zone.refresh,
                zone.retry,
                zone.expire,
                zone.minimum,
            ],
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Answer,
    Authority,
    Additional,
}

#[derive(Clone, Debug)]
enum Rdata {
    Bytes(Vec<u8>),
    /// A compressible name (NS).
    Name(Vec<u8>),
    Soa {
        mname: Vec<u8>,
        rname: Vec<u8>,
        numbers: [u32; 5],
    },
}

/// One record; names are lowercase wire format.
#[derive(Clone, Debug)]
struct Rr {
    section: Section,
    owner: Vec<u8>,
    rtype: u16,
    ttl: u32,
    rdata: Rdata,
}

#[derive(Clone, Copy, Debug)]
struct ReplyEdns {
    /// The query's ECS option and the SCOPE to echo it with.
    ecs: Option<(Ecs, u8)>,
}

/// A response before encoding.
#[derive(Clone, Debug)]
struct Reply<'a> {
    id: u16,
    opcode: u8,
    rd: bool,
    cd: bool,
    aa: bool,
    rcode: u16,
    question: Option<Question<'a>>,
    edns: Option<ReplyEdns>,
    /// In section order.
    records: Vec<Rr>,
}

impl Reply<'_> {
    /// The wire form; `truncated`: header, question and OPT only, with TC=1.
    fn encode(&self, truncated: bool) -> Vec<u8> {
        let mut w = Writer::default();
        let [id0, id1] = self.id.to_be_bytes();
        let flags_hi = 0x80
            | (self.opcode & 0xF) << 3
            | u8::from(self.aa) << 2
            | u8::from(truncated) << 1
            | u8::from(self.rd);
        let flags_lo = u8::from(self.cd) << 4 | u8::try_from(self.rcode & 0xF).unwrap_or(0);
        w.buf.extend_from_slice(&[id0, id1, flags_hi, flags_lo]);
        w.buf.extend_from_slice(&[0; 8]);
        let mut counts = [0u16; 4];
        if let Some(q) = &self.question {
            counts[0] = 1;
            w.question(q);
        }
        if !truncated {
            for rr in &self.records {
                counts[1 + rr.section as usize] += 1;
                w.record(rr);
            }
        }
        if let Some(e) = &self.edns {
            counts[3] += 1;
            w.opt(e, u8::try_from(self.rcode >> 4).unwrap_or(0));
        }
        for (i, c) in counts.iter().enumerate() {
            let at = 4 + 2 * i;
            if let Some(slot) = w.buf.get_mut(at..at + 2) {
                slot.copy_from_slice(&c.to_be_bytes());
            }
        }
        w.buf
    }
}

/// Appends records to a message, compressing names against those already written.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
    /// (offset, lowercase wire suffix) of every name suffix written so far.
    names: Vec<(u16, Vec<u8>)>,
}

impl Writer {
    fn question(&mut self, q: &Question<'_>) {
        let start = self.buf.len();
        self.buf.extend_from_slice(q.raw);
        let lower = geodns_maps::name::lowercase(q.name);
        self.remember(&lower, start);
    }

    /// Records every suffix of the plain name `wire` written at `at`.
    fn remember(&mut self, wire: &[u8], at: usize) {
        let mut i = 0;
        while let Some(&len) = wire.get(i) {
            if len == 0 {
                break;
            }
            if let (Ok(off), Some(suffix)) = (u16::try_from(at + i), wire.get(i..)) {
                if off <= 0x3FFF {
                    self.names.push((off, suffix.to_vec()));
                }
            }
            i += 1 + usize::from(len);
        }
    }

    /// Writes a lowercase plain name, ending in a pointer at the longest suffix
    /// already written.
    fn name(&mut self, wire: &[u8]) {
        let mut i = 0;
        loop {
            let Some(suffix) = wire.get(i..) else {
                self.buf.push(0);
                return;
            };
            if suffix.first().is_none_or(|l| *l == 0) {
                self.buf.push(0);
                return;
            }
            if let Some((off, _)) = self.names.iter().find(|(_, s)| s[..] == *suffix) {
                self.buf.extend_from_slice(&(0xC000 | off).to_be_bytes());
                return;
            }
            let here = self.buf.len();
            if let Ok(off) = u16::try_from(here) {
                if off <= 0x3FFF {
                    self.names.push((off, suffix.to_vec()));
                }
            }
            let len = usize::from(suffix[0]);
            self.buf
                .extend_from_slice(suffix.get(..=len).unwrap_or(suffix));
            i += 1 + len;
        }
    }

    fn record(&mut self, rr: &Rr) {
        self.name(&rr.owner);
        self.buf.extend_from_slice(&rr.rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&rr.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &rr.rdata {
            Rdata::Bytes(b) => self.buf.extend_from_slice(b),
            Rdata::Name(n) => self.name(n),
            Rdata::Soa {
                mname,
                rname,
                numbers,
            } => {
                self.name(mname);
                self.name(rname);
                for n in numbers {
                    self.buf.extend_from_slice(&n.to_be_bytes());
                }
            }
        }
        let len = u16::try_from(self.buf.len() - len_at - 2).unwrap_or(0);
        if let Some(slot) = self.buf.get_mut(len_at..len_at + 2) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
    }

    /// The OPT record: payload 1232, version 0, no flags (DO cleared), the ECS echo.
    fn opt(&mut self, e: &ReplyEdns, ext_rcode: u8) {
        let [p0, p1] = EDNS_UDP_PAYLOAD.to_be_bytes();
        let mut rdata = Vec::new();
        if let Some((ecs, scope)) = e.ecs {
            let addr = ecs.addr_bytes();
            let len = u16::try_from(4 + addr.len()).unwrap_or(4);
            rdata.extend_from_slice(&parse::OPT_ECS.to_be_bytes());
            rdata.extend_from_slice(&len.to_be_bytes());
            rdata.extend_from_slice(&ecs.family.to_be_bytes());
            rdata.extend_from_slice(&[ecs.source_prefix, scope]);
            rdata.extend_from_slice(addr);
        }
        let [r0, r1] = u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes();
        self.buf
            .extend_from_slice(&[0, 0, 41, p0, p1, ext_rcode, 0, 0, 0, r0, r1]);
        self.buf.extend_from_slice(&rdata);
    }
}
