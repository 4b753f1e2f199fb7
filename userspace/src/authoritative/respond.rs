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
    defence::Verdict, engine::StaticRr, AnswerSource, Engine, Question as EngineQuestion, Quick,
    Resolution,
};

use super::parse::{self, Drop, Ecs, Edns, FormatError, Message, Question, CLASS_IN};

/// Response codes (RFC 1035, 6891).
pub mod rcode {
    pub use geodns_common::dns::rcode::{
        BADVERS, FORMERR, NOERROR, NOTIMP, NXDOMAIN, REFUSED, SERVFAIL,
    };

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

use geodns_common::dns::rtype::{A as TYPE_A, AAAA as TYPE_AAAA, NS as TYPE_NS, SOA as TYPE_SOA};
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
        Self::from_summary(Summary::dropped(why), None)
    }

    /// The outcome with `response` as its bytes.
    #[must_use]
    pub fn from_summary(s: Summary, response: Option<Vec<u8>>) -> Self {
        Self {
            response,
            dropped: s.dropped,
            rcode: s.rcode,
            qtype: s.qtype,
            truncated: s.truncated,
            slipped: s.slipped,
            source: s.source,
            error: s.error,
        }
    }

    /// Everything but the bytes.
    #[must_use]
    pub fn summary(&self) -> Summary {
        Summary {
            respond: self.response.is_some(),
            dropped: self.dropped,
            rcode: self.rcode,
            qtype: self.qtype,
            truncated: self.truncated,
            slipped: self.slipped,
            source: self.source,
            error: self.error,
        }
    }
}

/// What became of one message, without the bytes ([`Responder::response`] holds
/// them): an [`Outcome`] that allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// A response was written.
    pub respond: bool,
    pub dropped: Option<Drop>,
    pub rcode: Option<u16>,
    pub qtype: Option<u16>,
    pub truncated: bool,
    pub slipped: bool,
    pub source: Option<AnswerSource>,
    pub error: Option<FormatError>,
}

impl Summary {
    pub(crate) fn dropped(why: Drop) -> Self {
        Self {
            respond: false,
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
    let mut r = Responder::default();
    let s = r.answer(engine, msg, peer, transport, rate_limit);
    Outcome::from_summary(s, s.respond.then(|| std::mem::take(&mut r.w.buf)))
}

/// Answers messages into buffers it keeps: once they have grown to a response's
/// size, a query whose answer is not made of static records (geo addresses, SOA, NS,
/// glue, NODATA, NXDOMAIN, REFUSED, errors) is answered without allocating. One per
/// UDP worker.
#[derive(Default)]
pub struct Responder {
    w: Writer,
    /// The question's name in lowercase.
    lower: Vec<u8>,
    /// Every answer through [`Engine::resolve`] (tests compare the two ways).
    general_only: bool,
}

impl Responder {
    /// A responder that never takes [`Engine::resolve_quick`]: the reference the
    /// quick way is compared with.
    #[cfg(test)]
    pub(crate) fn general() -> Self {
        Self {
            general_only: true,
            ..Self::default()
        }
    }

    /// The response written by the last [`Responder::answer`] that gave one.
    #[must_use]
    pub fn response(&self) -> &[u8] {
        &self.w.buf
    }

    /// [`handle_limited`] into this responder's buffer.
    pub fn answer(
        &mut self,
        engine: &Engine,
        msg: &[u8],
        peer: IpAddr,
        transport: Transport,
        rate_limit: Option<RateLimit<'_>>,
    ) -> Summary {
        let m = match parse::parse(msg) {
            Ok(m) => m,
            Err(why) => return Summary::dropped(why),
        };
        let limit = match transport {
            Transport::Tcp => MAX_MESSAGE,
            // The client's size, at least 512 and at most what we advertise (1232, RFC
            // 9715): a bigger UDP answer is fragmented, and an amplifier's dream.
            Transport::Udp => m.edns.map_or(MIN_UDP, |e| {
                usize::from(e.payload).clamp(MIN_UDP, usize::from(EDNS_UDP_PAYLOAD))
            }),
        };
        let mut out = Summary {
            respond: true,
            dropped: None,
            rcode: None,
            qtype: m.question.map(|q| q.qtype),
            truncated: false,
            slipped: false,
            source: None,
            error: m.error,
        };
        let Self {
            w,
            lower,
            general_only,
        } = self;
        lower.clear();
        if let Some(q) = m.question {
            lower.extend_from_slice(q.name);
            lower.make_ascii_lowercase();
        }
        let mut r = reply(&m);
        let body = decide(engine, &m, peer, lower, !*general_only, &mut r, &mut out);
        if let Some(rate_limit) = rate_limit {
            let (class, name) = match r.rcode {
                rcode::NOERROR if body.has_answer(engine) => (
                    RRL_CLASS_ANSWER,
                    if m.question.is_some() {
                        engine.rrl_name_lowercase(lower)
                    } else {
                        0
                    },
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
                    w.encode(&r, &body, engine, lower, true);
                    return out;
                }
                Verdict::Drop => return Summary::dropped(Drop::RateLimited),
            }
        }
        w.encode(&r, &body, engine, lower, false);
        if w.buf.len() > limit {
            out.truncated = true;
            w.encode(&r, &body, engine, lower, true);
        }
        out.rcode = Some(r.rcode);
        out
    }
}

/// The records of a reply: none, an answer the engine made without static records, or
/// records built for static data.
enum Body<'e> {
    Empty,
    Quick(Quick<'e>),
    Records(Vec<Rr>),
}

impl Body<'_> {
    fn has_answer(&self, engine: &Engine) -> bool {
        match self {
            Self::Empty => false,
            Self::Quick(q) => match q {
                Quick::Refused | Quick::NxDomain | Quick::NoData => false,
                Quick::Soa => true,
                Quick::Ns => !engine.ns_names().is_empty(),
                Quick::Addresses { addrs, .. } => !addrs.as_slice().is_empty(),
            },
            Self::Records(records) => records.iter().any(|rr| rr.section == Section::Answer),
        }
    }
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
    }
}

/// Fills `r` in the order a query is checked and returns its records. `lower`: the
/// question's name in lowercase.
fn decide<'e>(
    engine: &'e Engine,
    m: &Message<'_>,
    peer: IpAddr,
    lower: &[u8],
    quick: bool,
    r: &mut Reply<'_>,
    out: &mut Summary,
) -> Body<'e> {
    // The opcode decides how the rest reads: an unknown one is NOTIMP whatever follows
    // (with the question and OPT echoed only when they parsed as a query's).
    if m.header.opcode() != 0 {
        r.rcode = rcode::NOTIMP;
        if m.error.is_some() {
            r.question = None;
            r.edns = None;
        }
        return Body::Empty;
    }
    if m.error.is_some() {
        r.rcode = rcode::FORMERR;
        return Body::Empty;
    }
    let Some(q) = m.question else {
        // Not reached: no error means exactly one question.
        r.rcode = rcode::FORMERR;
        return Body::Empty;
    };
    let edns = m.edns;
    if edns.is_some_and(|e| e.version > 0) {
        r.rcode = rcode::BADVERS;
        return Body::Empty;
    }
    let ecs = edns.and_then(|e: Edns| e.ecs);
    // ECS is echoed from here on, scope 0 unless the answer depends on the client.
    if let (Some(e), Some(re)) = (ecs, r.edns.as_mut()) {
        re.ecs = Some((e, 0));
    }
    if q.qclass != CLASS_IN {
        r.rcode = rcode::REFUSED;
        return Body::Empty;
    }
    if (128..=254).contains(&q.qtype) {
        r.rcode = rcode::NOTIMP;
        return Body::Empty;
    }
    // A socket peer `::ffff:a.b.c.d` (a dual-stack socket) is the IPv4 client; an ECS
    // address is taken as sent, as the kernel takes it (an IPv6 client, looked up as
    // IPv4 only where the databases alias that range).
    let client = ecs
        .and_then(|e| e.client())
        .unwrap_or_else(|| peer.to_canonical());
    if let Some(quick) = quick
        .then(|| engine.resolve_quick(lower, q.qtype, client))
        .flatten()
    {
        r.aa = true;
        match quick {
            Quick::Refused => {
                r.aa = false;
                r.rcode = rcode::REFUSED;
            }
            Quick::NxDomain => r.rcode = rcode::NXDOMAIN,
            Quick::NoData | Quick::Soa | Quick::Ns => {}
            Quick::Addresses { scope, source, .. } => {
                out.source = Some(source);
                if let (Some(e), Some(re)) = (ecs, r.edns.as_mut()) {
                    if e.source_prefix > 0 {
                        re.ecs = Some((e, scope));
                    }
                }
            }
        }
        return Body::Quick(quick);
    }
    let resolution = engine.resolve(&EngineQuestion::from_wire(q.name, q.qtype, client));
    let mut records = Vec::new();
    answer(engine, lower, ecs, resolution, r, &mut records, out);
    Body::Records(records)
}

/// Turns the engine's decision into records.
fn answer(
    engine: &Engine,
    qname: &[u8],
    ecs: Option<Ecs>,
    resolution: Resolution,
    r: &mut Reply<'_>,
    records: &mut Vec<Rr>,
    out: &mut Summary,
) {
    let config = engine.config();
    let zone = &config.zone;
    let origin = engine.origin_wire().to_vec();
    r.aa = true;
    match resolution {
        Resolution::Refused => {
            r.aa = false;
            r.rcode = rcode::REFUSED;
        }
        Resolution::NxDomain => {
            r.rcode = rcode::NXDOMAIN;
            records.push(soa(engine, Section::Authority));
        }
        Resolution::NoData => records.push(soa(engine, Section::Authority)),
        Resolution::Soa => records.push(soa(engine, Section::Answer)),
        Resolution::Ns => {
            let names = engine.ns_names();
            for n in names {
                records.push(Rr {
                    section: Section::Answer,
                    owner: origin.clone(),
                    rtype: TYPE_NS,
                    ttl: zone.ttl,
                    rdata: Rdata::Name(n.clone()),
                });
            }
            // Glue for the in-zone names, IPv4 first, in NS order.
            for v6 in [false, true] {
                for n in names {
                    let Some((g4, g6)) = engine.glue(n) else {
                        continue;
                    };
                    for a in if v6 { g6 } else { g4 } {
                        records.push(address(Section::Additional, n, zone.ttl, *a));
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
                records.push(address(Section::Answer, qname, ttl, a));
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
            records.extend(recs.answer.iter().map(|s| rr(Section::Answer, s)));
            if let Some(geo) = &recs.geo {
                out.source = Some(geo.source);
                for a in &geo.addrs {
                    records.push(address(Section::Answer, &geo.owner, geo.ttl, *a));
                }
                if let (Some(e), Some(re)) = (ecs, r.edns.as_mut()) {
                    if e.source_prefix > 0 {
                        re.ecs = Some((e, geo.scope));
                    }
                }
            }
            if recs.soa {
                records.push(soa(engine, Section::Authority));
            }
            records.extend(recs.authority.iter().map(|s| rr(Section::Authority, s)));
            records.extend(recs.additional.iter().map(|s| rr(Section::Additional, s)));
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

/// The TTL of the zone's SOA: in the authority section of a negative answer the
/// negative-caching TTL, min(TTL, MINIMUM) (RFC 2308 section 3).
fn soa_ttl(engine: &Engine, section: Section) -> u32 {
    let zone = &engine.config().zone;
    if section == Section::Authority {
        zone.ttl.min(zone.minimum)
    } else {
        zone.ttl
    }
}

/// The zone's SOA record data.
fn soa_rdata(engine: &Engine) -> RdataRef<'_> {
    let (mname, rname) = engine.soa_names();
    RdataRef::Soa {
        mname,
        rname,
        numbers: soa_numbers(engine),
    }
}

/// SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM.
fn soa_numbers(engine: &Engine) -> [u32; 5] {
    let zone = &engine.config().zone;
    [
        zone.serial,
        zone.refresh,
        zone.retry,
        zone.expire,
        zone.minimum,
    ]
}

/// The zone's SOA as a record to build.
fn soa(engine: &Engine, section: Section) -> Rr {
    let (mname, rname) = engine.soa_names();
    Rr {
        section,
        owner: engine.origin_wire().to_vec(),
        rtype: TYPE_SOA,
        ttl: soa_ttl(engine, section),
        rdata: Rdata::Soa {
            mname: mname.to_vec(),
            rname: rname.to_vec(),
            numbers: soa_numbers(engine),
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

/// Record data as written: borrowed.
#[derive(Clone, Copy, Debug)]
enum RdataRef<'a> {
    Bytes(&'a [u8]),
    /// A compressible name (NS).
    Name(&'a [u8]),
    Soa {
        mname: &'a [u8],
        rname: &'a [u8],
        numbers: [u32; 5],
    },
}

impl Rdata {
    fn as_ref(&self) -> RdataRef<'_> {
        match self {
            Self::Bytes(b) => RdataRef::Bytes(b),
            Self::Name(n) => RdataRef::Name(n),
            Self::Soa {
                mname,
                rname,
                numbers,
            } => RdataRef::Soa {
                mname,
                rname,
                numbers: *numbers,
            },
        }
    }
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

/// A response's header, question and OPT before encoding (its records: a [`Body`]).
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
}

/// Appends records to a message, compressing names against those already written.
/// Kept between messages: clearing keeps what its buffers have grown to.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
    /// (offset, start and end in `arena`) of every lowercase name suffix written so far.
    names: Vec<(u16, usize, usize)>,
    /// The lowercase names that `names` refers to.
    arena: Vec<u8>,
    /// Records per section.
    counts: [u16; 3],
}

impl Writer {
    /// The wire form of `r` with `body`; `truncated`: header, question and OPT only,
    /// with TC=1. `qname`: the question's name in lowercase.
    fn encode(
        &mut self,
        r: &Reply<'_>,
        body: &Body<'_>,
        engine: &Engine,
        qname: &[u8],
        truncated: bool,
    ) {
        self.buf.clear();
        self.names.clear();
        self.arena.clear();
        self.counts = [0; 3];
        let [id0, id1] = r.id.to_be_bytes();
        let flags_hi = 0x80
            | (r.opcode & 0xF) << 3
            | u8::from(r.aa) << 2
            | u8::from(truncated) << 1
            | u8::from(r.rd);
        let flags_lo = u8::from(r.cd) << 4 | u8::try_from(r.rcode & 0xF).unwrap_or(0);
        self.buf.extend_from_slice(&[id0, id1, flags_hi, flags_lo]);
        self.buf.extend_from_slice(&[0; 8]);
        let mut counts = [0u16; 4];
        if let Some(q) = &r.question {
            counts[0] = 1;
            self.question(q);
        }
        if !truncated {
            self.body(body, engine, qname);
        }
        counts[1..].copy_from_slice(&self.counts);
        if let Some(e) = &r.edns {
            counts[3] += 1;
            self.opt(e, u8::try_from(r.rcode >> 4).unwrap_or(0));
        }
        for (i, c) in counts.iter().enumerate() {
            let at = 4 + 2 * i;
            if let Some(slot) = self.buf.get_mut(at..at + 2) {
                slot.copy_from_slice(&c.to_be_bytes());
            }
        }
    }

    /// The records of `body`, in section order.
    fn body(&mut self, body: &Body<'_>, engine: &Engine, qname: &[u8]) {
        let origin = engine.origin_wire();
        match body {
            Body::Empty => {}
            Body::Records(records) => {
                for rr in records {
                    self.record(rr.section, &rr.owner, rr.rtype, rr.ttl, rr.rdata.as_ref());
                }
            }
            Body::Quick(q) => match q {
                Quick::Refused => {}
                Quick::NxDomain | Quick::NoData => {
                    let ttl = soa_ttl(engine, Section::Authority);
                    self.record(Section::Authority, origin, TYPE_SOA, ttl, soa_rdata(engine));
                }
                Quick::Soa => {
                    let ttl = soa_ttl(engine, Section::Answer);
                    self.record(Section::Answer, origin, TYPE_SOA, ttl, soa_rdata(engine));
                }
                Quick::Ns => {
                    let ttl = engine.config().zone.ttl;
                    let names = engine.ns_names();
                    for n in names {
                        self.record(Section::Answer, origin, TYPE_NS, ttl, RdataRef::Name(n));
                    }
                    // Glue for the in-zone names, IPv4 first, in NS order.
                    for v6 in [false, true] {
                        for n in names {
                            let Some((g4, g6)) = engine.glue(n) else {
                                continue;
                            };
                            for a in if v6 { g6 } else { g4 } {
                                self.address(Section::Additional, n, ttl, *a);
                            }
                        }
                    }
                }
                Quick::Addresses { addrs, ttl, .. } => {
                    for a in addrs.as_slice() {
                        self.address(Section::Answer, qname, *ttl, *a);
                    }
                }
            },
        }
    }

    fn address(&mut self, section: Section, owner: &[u8], ttl: u32, a: IpAddr) {
        match a {
            IpAddr::V4(a) => {
                self.record(section, owner, TYPE_A, ttl, RdataRef::Bytes(&a.octets()));
            }
            IpAddr::V6(a) => {
                self.record(section, owner, TYPE_AAAA, ttl, RdataRef::Bytes(&a.octets()));
            }
        }
    }

    fn question(&mut self, q: &Question<'_>) {
        let start = self.buf.len();
        self.buf.extend_from_slice(q.raw);
        let base = self.arena.len();
        self.arena.extend_from_slice(q.name);
        if let Some(lower) = self.arena.get_mut(base..) {
            lower.make_ascii_lowercase();
        }
        self.remember(base, start);
    }

    /// Records every suffix of the plain name in `arena[base..]` written at `at`.
    fn remember(&mut self, base: usize, at: usize) {
        let end = self.arena.len();
        let mut i = 0;
        while let Some(&len) = self.arena.get(base + i) {
            if len == 0 {
                break;
            }
            if let Ok(off) = u16::try_from(at + i) {
                if off <= 0x3FFF {
                    self.names.push((off, base + i, end));
                }
            }
            i += 1 + usize::from(len);
        }
    }

    /// Where a lowercase name suffix was written, if it was.
    fn find(&self, suffix: &[u8]) -> Option<u16> {
        self.names
            .iter()
            .find(|(_, s, e)| self.arena.get(*s..*e) == Some(suffix))
            .map(|(off, _, _)| *off)
    }

    /// Writes a lowercase plain name, ending in a pointer at the longest suffix
    /// already written.
    fn name(&mut self, wire: &[u8]) {
        let base = self.arena.len();
        self.arena.extend_from_slice(wire);
        let end = self.arena.len();
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
            if let Some(off) = self.find(suffix) {
                self.buf.extend_from_slice(&(0xC000 | off).to_be_bytes());
                return;
            }
            let here = self.buf.len();
            if let Ok(off) = u16::try_from(here) {
                if off <= 0x3FFF {
                    self.names.push((off, base + i, end));
                }
            }
            let len = usize::from(suffix[0]);
            self.buf
                .extend_from_slice(suffix.get(..=len).unwrap_or(suffix));
            i += 1 + len;
        }
    }

    fn record(
        &mut self,
        section: Section,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdata: RdataRef<'_>,
    ) {
        self.counts[section as usize] += 1;
        self.name(owner);
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match rdata {
            RdataRef::Bytes(b) => self.buf.extend_from_slice(b),
            RdataRef::Name(n) => self.name(n),
            RdataRef::Soa {
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
        let ecs = e
            .ecs
            .map(|(ecs, scope)| (ecs, scope, ecs.addr_bytes().len()));
        // Option code, length, family, prefixes: 8 bytes before the address.
        let rdlen = ecs.map_or(0, |(_, _, n)| 8 + n);
        let [r0, r1] = u16::try_from(rdlen).unwrap_or(0).to_be_bytes();
        self.buf
            .extend_from_slice(&[0, 0, 41, p0, p1, ext_rcode, 0, 0, 0, r0, r1]);
        if let Some((ecs, scope, n)) = ecs {
            let len = u16::try_from(4 + n).unwrap_or(4);
            self.buf.extend_from_slice(&parse::OPT_ECS.to_be_bytes());
            self.buf.extend_from_slice(&len.to_be_bytes());
            self.buf.extend_from_slice(&ecs.family.to_be_bytes());
            self.buf.extend_from_slice(&[ecs.source_prefix, scope]);
            self.buf.extend_from_slice(ecs.addr_bytes());
        }
    }
}
