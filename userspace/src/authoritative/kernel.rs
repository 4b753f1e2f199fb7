//! The zone's static answers compiled for the kernel (`geodns_common::statics`): every
//! reply that does not depend on the client (SOA, NS with glue, static records, the
//! name servers' addresses, NODATA, NXDOMAIN, a wildcard's static records, referrals,
//! REFUSED), written by this server's own [`handle`] so the kernel's copy is its reply
//! byte for byte.
//!
//! Per name that exists: its answer for each query type the zone knows (others take
//! the answer of a type nobody uses), and for a name below it that does not exist, the
//! answer to `*.name` (a wildcard's records with the name as asked, a referral, or
//! NXDOMAIN). A reply's pointers into the question move with the query name's length
//! (see the `statics` module); where that could differ from what [`handle`] would
//! write, for names that share a suffix with a name the reply holds (the SOA's `MNAME`
//! and `RNAME`, for instance `hostmaster.zone.`), the kernel passes instead.
//!
//! Names of the same shape (a geo record or an empty non-terminal, with or without a
//! geo wildcard below, and nothing else) share their answers: computed once, for the
//! first such name, and moved by length for the others. That keeps a zone of 500,000
//! geo names at a few distinct answers.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
};

use geodns_common::NAME_BLOCK as KERNEL_BLOCK;
use geodns_common::{
    dns::rtype, NameKey, NameValue, StaticAnswer, StaticNode, MAX_LABELS, MAX_NAME_WIRE_LEN,
    RRL_CLASS_ANSWER, RRL_CLASS_ERROR, RRL_CLASS_NEGATIVE, STATIC_ANSWERS, STATIC_FLAG_AA,
    STATIC_MAX_BLOB, STATIC_MAX_FIXUPS, STATIC_NODES, STATIC_NODE_TYPES, STATIC_REFUSED,
};
use geodns_maps::{name, AnswerSource, Engine, KernelMaps};

use super::respond::{handle, Transport};

/// A type no zone holds (private use, RFC 6895): it stands for every type not listed.
const OTHER_TYPE: u16 = 65280;

/// The kernel maps of `engine`, with its static answers.
#[must_use]
pub fn kernel_maps(engine: &Engine) -> KernelMaps {
    let mut maps = engine.kernel_maps();
    compile(engine, &mut maps);
    maps
}

/// Fills `maps.static_nodes` and `maps.static_answers` and the nodes of the wildcard
/// keys of `maps.names`; adds the keys of the names the kernel must pass at.
pub fn compile(engine: &Engine, maps: &mut KernelMaps) {
    let mut c = Compiler::new(engine);
    let origin = engine.origin_wire().to_vec();
    // REFUSED: any name outside the zone answers the same.
    let outside = name::to_wire(if origin == name::to_wire("invalid.") {
        "refused.example."
    } else {
        "invalid."
    });
    let refused = c.answer(&outside, rtype::A);
    c.answers[STATIC_REFUSED as usize] = refused.map_or(StaticAnswer::EMPTY, |i| {
        let a = c.answers[usize::from(i)];
        if a.rcode == 5 {
            a
        } else {
            StaticAnswer::EMPTY
        }
    });
    let exact_geo: HashSet<Vec<u8>> = maps
        .names
        .iter()
        .filter(|(k, _)| k.wildcard == 0)
        .map(|(k, _)| key_name(k))
        .collect();
    let existing: Vec<(usize, Vec<u8>, u16)> = maps
        .names
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k.wildcard == 1)
        .map(|(i, (k, v))| (i, key_name(k), v.record))
        .collect();
    let existing_set: HashSet<Vec<u8>> = existing.iter().map(|(_, n, _)| n.clone()).collect();
    let statics = &engine.config().statics;
    let mut shared: HashMap<(bool, bool), u32> = HashMap::new();
    for (i, e, wild_record) in &existing {
        // A wildcard below `e` is then one the kernel holds (its key fits), so the
        // wildcard key's record tells whether there is one.
        let fits = star(e).len() <= MAX_NAME_WIRE_LEN
            && name::labels(e).is_some_and(|l| l.len() < MAX_LABELS);
        let plain = e != &origin
            && fits
            && !e.starts_with(&[1, b'*'])
            && !statics.names.contains_key(e)
            && !statics.names.contains_key(&star(e))
            && engine.glue(e).is_none()
            && statics.cut_at_or_above(e, &origin).is_none()
            && !c.shares_suffix(e, &origin);
        let node = if plain {
            let kind = (exact_geo.contains(e), *wild_record != KERNEL_BLOCK);
            if let Some(node) = shared.get(&kind) {
                *node
            } else {
                let node = c.node(e);
                shared.insert(kind, node);
                node
            }
        } else {
            c.node(e)
        };
        maps.names[*i].1.node = node;
    }
    // Names that share a suffix with a name the replies hold, that do not exist: the
    // kernel must stop its walk there and pass (see the module).
    let mut danger: BTreeSet<Vec<u8>> = BTreeSet::new();
    for w in &c.written {
        let mut cur = Some(w.as_slice());
        while let Some(s) = cur {
            if s.len() <= origin.len() || !name::in_zone(s, &origin) {
                break;
            }
            if !existing_set.contains(s) {
                danger.insert(s.to_vec());
            }
            cur = name::parent(s);
        }
    }
    let records: HashMap<Vec<u8>, u16> = existing.iter().map(|(_, n, r)| (n.clone(), *r)).collect();
    for d in danger {
        let Some(key) = name::kernel_key(&d, true) else {
            continue;
        };
        // The geo lookup finds the record of the closest existing ancestor here, as it
        // would have one level up.
        let mut up = name::parent(&d);
        let mut record = KERNEL_BLOCK;
        while let Some(u) = up {
            if let Some(r) = records.get(u) {
                record = *r;
                break;
            }
            up = name::parent(u);
        }
        maps.names.push((
            key,
            NameValue {
                record,
                _pad: 0,
                node: 0,
            },
        ));
    }
    maps.static_nodes = c.nodes;
    maps.static_answers = c.answers;
}

/// The wire name of a `NAMES` key.
fn key_name(k: &NameKey) -> Vec<u8> {
    let mut i = 0;
    while let Some(&len) = k.name.get(i) {
        if len == 0 {
            return k.name[..=i].to_vec();
        }
        i += 1 + usize::from(len);
    }
    k.name.to_vec()
}

/// `*.` and `wire`.
fn star(wire: &[u8]) -> Vec<u8> {
    let mut s = vec![1, b'*'];
    s.extend_from_slice(wire);
    s
}

struct Compiler<'a> {
    engine: &'a Engine,
    /// Query types with answers of their own: every type the zone holds, and those
    /// the server answers itself.
    types: Vec<u16>,
    answers: Vec<StaticAnswer>,
    answer_index: HashMap<StaticAnswer, u16>,
    nodes: Vec<StaticNode>,
    node_index: HashMap<StaticNode, u32>,
    /// Every name the answers hold (owners and names in RDATA), lowercase.
    written: HashSet<Vec<u8>>,
    /// The in-zone suffixes, longer than the origin, of the names the SOA and NS
    /// answers hold: a name with one of them among its suffixes gets its own answers.
    special: HashSet<Vec<u8>>,
}

impl<'a> Compiler<'a> {
    fn new(engine: &'a Engine) -> Self {
        let config = engine.config();
        let mut types: BTreeSet<u16> = [rtype::A, rtype::NS, rtype::CNAME, rtype::SOA, rtype::AAAA]
            .into_iter()
            .collect();
        for sets in config.statics.names.values() {
            for s in sets {
                types.insert(s.rtype);
            }
        }
        types.retain(|t| *t != rtype::OPT && !(128..=254).contains(t) && *t != OTHER_TYPE);
        let origin = engine.origin_wire().to_vec();
        let zone = &config.zone;
        let mut special = HashSet::new();
        let mut names: Vec<Vec<u8>> = vec![name::to_wire(&zone.mname), name::to_wire(&zone.rname)];
        names.extend(zone.ns.iter().map(|n| name::to_wire(&n.name)));
        for n in names {
            let mut cur = Some(n.as_slice());
            while let Some(s) = cur {
                if s.len() <= origin.len() || !name::in_zone(s, &origin) {
                    break;
                }
                special.insert(s.to_vec());
                cur = name::parent(s);
            }
        }
        Self {
            engine,
            types: types.into_iter().collect(),
            answers: vec![StaticAnswer::EMPTY; 2],
            answer_index: HashMap::new(),
            nodes: vec![StaticNode::default()],
            node_index: HashMap::new(),
            written: HashSet::new(),
            special,
        }
    }

    /// Whether `wire` or a suffix of it below the origin is among `special`.
    fn shares_suffix(&self, wire: &[u8], origin: &[u8]) -> bool {
        let mut cur = Some(wire);
        while let Some(s) = cur {
            if s.len() <= origin.len() {
                return false;
            }
            if self.special.contains(s) {
                return true;
            }
            cur = name::parent(s);
        }
        false
    }

    /// The node of the existing name `e` (0: it passes everything).
    fn node(&mut self, e: &[u8]) -> u32 {
        let mut node = StaticNode::default();
        let exact = self.answers_at(e);
        let below = if e.len() + 2 <= MAX_NAME_WIRE_LEN {
            self.answers_at(&star(e))
        } else {
            None
        };
        if let Some((types, answers, other)) = exact {
            node.exact_types = types;
            node.exact = answers;
            node.exact_other = other;
        }
        if let Some((types, answers, other)) = below {
            node.below_types = types;
            node.below = answers;
            node.below_other = other;
        }
        if node == StaticNode::default() {
            return 0;
        }
        if let Some(i) = self.node_index.get(&node) {
            return *i;
        }
        let Ok(i) = u32::try_from(self.nodes.len()) else {
            return 0;
        };
        if i >= STATIC_NODES {
            return 0;
        }
        self.nodes.push(node);
        self.node_index.insert(node, i);
        i
    }

    /// The answers to `question` by type: the types whose answer differs from that of
    /// any other type, those answers, and the other types' answer. `None`: more types
    /// differ than a node holds.
    fn answers_at(
        &mut self,
        question: &[u8],
    ) -> Option<([u16; STATIC_NODE_TYPES], [u16; STATIC_NODE_TYPES], u16)> {
        let other = self.answer(question, OTHER_TYPE).unwrap_or(0);
        let mut types = [0u16; STATIC_NODE_TYPES];
        let mut answers = [0u16; STATIC_NODE_TYPES];
        let mut n = 0;
        for t in self.types.clone() {
            let a = self.answer(question, t).unwrap_or(0);
            if a == other {
                continue;
            }
            if n == STATIC_NODE_TYPES {
                return None;
            }
            types[n] = t;
            answers[n] = a;
            n += 1;
        }
        Some((types, answers, other))
    }

    /// The answer index of the server's reply to `question` (no EDNS), or `None` when
    /// the kernel must pass it (it depends on the client, or does not fit).
    fn answer(&mut self, question: &[u8], qtype: u16) -> Option<u16> {
        let mut msg = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(question);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&1u16.to_be_bytes());
        let peer = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let out = handle(self.engine, &msg, peer, Transport::Udp);
        if out.truncated
            || matches!(
                out.source,
                Some(AnswerSource::Geo { .. } | AnswerSource::Fallback { .. })
            )
        {
            return None;
        }
        let resp = out.response?;
        let start = 12 + question.len() + 4;
        let blob = resp.get(start..)?;
        if blob.len() > STATIC_MAX_BLOB || resp.len() < 12 {
            return None;
        }
        let count = |at: usize| u16::from_be_bytes([resp[at], resp[at + 1]]);
        let (an, ns, ar) = (count(6), count(8), count(10));
        let rcode = resp[3] & 0x0F;
        let mut fix = Vec::new();
        let mut names = Vec::new();
        walk_records(&resp, start, an + ns + ar, &mut fix, &mut names)?;
        if fix.len() > STATIC_MAX_FIXUPS {
            return None;
        }
        let mut a = StaticAnswer::EMPTY;
        a.valid = 1;
        a.flags = resp[2] & STATIC_FLAG_AA;
        a.rcode = rcode;
        a.rrl_class = match rcode {
            0 if an > 0 => RRL_CLASS_ANSWER,
            0 | 3 => RRL_CLASS_NEGATIVE,
            _ => RRL_CLASS_ERROR,
        };
        a.an = an;
        a.ns = ns;
        a.ar = ar;
        a.len = u16::try_from(blob.len()).ok()?;
        a.base = u16::try_from(question.len()).ok()?;
        a.n_fix = u16::try_from(fix.len()).ok()?;
        for (slot, f) in a.fix.iter_mut().zip(&fix) {
            *slot = u16::try_from(*f).ok()?;
        }
        a.blob[..blob.len()].copy_from_slice(blob);
        for n in names {
            self.written.insert(n);
        }
        if let Some(i) = self.answer_index.get(&a) {
            return Some(*i);
        }
        let i = u16::try_from(self.answers.len()).ok()?;
        if u32::from(i) >= STATIC_ANSWERS {
            return None;
        }
        self.answers.push(a);
        self.answer_index.insert(a, i);
        Some(i)
    }
}

/// Walks `count` records of `msg` from `at`: collects the offsets (from `start`) of
/// the compression pointers in them that do not point at the question name as a whole
/// (offset 12), and every name they hold (lowercase, uncompressed).
fn walk_records(
    msg: &[u8],
    start: usize,
    count: u16,
    fix: &mut Vec<usize>,
    names: &mut Vec<Vec<u8>>,
) -> Option<()> {
    let mut at = start;
    for _ in 0..count {
        at = walk_name(msg, at, start, fix, names)?;
        let rtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let rdlen = usize::from(u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]));
        let rdata = at + 10;
        match rtype {
            rtype::NS | rtype::CNAME | 12 => {
                walk_name(msg, rdata, start, fix, names)?;
            }
            rtype::SOA => {
                let next = walk_name(msg, rdata, start, fix, names)?;
                walk_name(msg, next, start, fix, names)?;
            }
            15 => {
                walk_name(msg, rdata + 2, start, fix, names)?;
            }
            _ => {}
        }
        at = rdata + rdlen;
    }
    (at == msg.len()).then_some(())
}

/// One name at `at`: where it ends; its pointer (if any) noted in `fix` unless it
/// points at offset 12; the whole name in `names`.
fn walk_name(
    msg: &[u8],
    at: usize,
    start: usize,
    fix: &mut Vec<usize>,
    names: &mut Vec<Vec<u8>>,
) -> Option<usize> {
    let mut p = at;
    let mut end = None;
    let mut full = Vec::new();
    for _ in 0..128 {
        let len = *msg.get(p)?;
        if len & 0xC0 == 0xC0 {
            let target = usize::from(u16::from_be_bytes([len, *msg.get(p + 1)?]) & 0x3FFF);
            if end.is_none() {
                end = Some(p + 2);
                if target != 12 {
                    fix.push(p.checked_sub(start)?);
                }
            }
            p = target;
            continue;
        }
        if len == 0 {
            full.push(0);
            names.push(name::lowercase(&full));
            return Some(end.unwrap_or(p + 1));
        }
        let label = msg.get(p..=p + usize::from(len))?;
        full.extend_from_slice(label);
        p += 1 + usize::from(len);
    }
    None
}
