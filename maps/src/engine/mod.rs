//! Answer sets from node states, and the whole DNS decision in userspace.
mod explain;
mod kernel;
mod resolve;
mod sets;

pub use explain::{
    AliasLookup, CandidateState, Explanation, FamilyAnswer, MapChoice, RecordExplanation,
    StickyPick,
};
pub use kernel::kernel_lookup;
pub use resolve::{Quick, QuickAddrs};
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use geodns_common::{
    AnswerKey, AnswerSet, NameKey, NameValue, PrefixValue, StaticAnswer, StaticNode,
    MAX_ANSWER_ADDRS, POLICY_SPREAD, POLICY_STICKY,
};

use crate::{
    cidr::Cidr,
    compile::{AddressFacts, Compiled},
    config::{Candidate, Config, NodeConfig, Policy, RegionKey},
    name, rng,
    zone::{self, Rrset, TYPE_CNAME},
};

use sets::{node_addrs, rule_set, FallbackNode, RuleSet, Swrr};

/// Longest CNAME chain followed inside the zone (loops end earlier, at the first name
/// seen twice).
pub const MAX_CNAME_CHAIN: usize = 8;

/// The kernel's record number for a name that exists without a geo record of its own
/// (static data, an empty non-terminal, a delegation): a wildcard must not answer
/// there, so the kernel passes it to userspace.
pub const KERNEL_BLOCK: u16 = geodns_common::NAME_BLOCK;

pub use crate::state::{NodeState, NodeStates};

/// One question as the engine needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Wire format (any case).
    pub name: Vec<u8>,
    pub qtype: u16,
    /// The ECS address when the query carried a valid ECS option with a non-zero
    /// source prefix, else the packet's source address (like the kernel).
    pub client: IpAddr,
}

impl Question {
    /// From a presentation name (`www.cdn.example.net.`; the final dot is optional).
    /// Only plain labels: use [`Question::from_wire`] for names from the wire.
    #[must_use]
    pub fn new(name: &str, qtype: u16, client: IpAddr) -> Self {
        let full = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        Self {
            name: name::to_wire(&full),
            qtype,
            client,
        }
    }

    #[must_use]
    pub fn from_wire(name: &[u8], qtype: u16, client: IpAddr) -> Self {
        Self {
            name: name.to_vec(),
            qtype,
            client,
        }
    }
}

/// Where an address answer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// The region's answer set (what the kernel answers too); `fail_open` when every
    /// candidate is down by health and all of them are answered.
    Geo { region: u16, fail_open: bool },
    /// Weighted round robin over `[fallback]`: the region has no up candidate of the
    /// family, or the address is in no database (region 0). `fail_open` when every
    /// fallback node of the family was down by health too and they were used anyway.
    Fallback { region: u16, fail_open: bool },
    /// Glue addresses of an in-zone NS name from `[zone]`.
    Glue,
}

/// The decision for one question; NXDOMAIN, NODATA and REFUSED are answers, not errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The name is not in our zone.
    Refused,
    NxDomain,
    /// The name exists but has no record of this type.
    NoData,
    /// SOA at the apex: build it from `engine.config().zone`.
    Soa,
    /// NS at the apex: build it from `engine.config().zone.ns`.
    Ns,
    Addresses {
        addrs: Vec<IpAddr>,
        ttl: u32,
        /// Length of the matched prefix: the ECS scope when the query had ECS.
        scope: u8,
        source: AnswerSource,
    },
    /// Static data, a CNAME chain (RFC 1034 section 4.3.2) or a referral.
    Records(Box<Records>),
}

/// One record of a [`Records`] answer; names in lowercase wire format, RDATA uncompressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRr {
    pub owner: Vec<u8>,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

/// A response made of static records, CNAMEs followed, and perhaps a geo answer at the
/// end of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Records {
    /// AA: false for a referral.
    pub authoritative: bool,
    /// The last name of the chain does not exist (RFC 6604).
    pub nxdomain: bool,
    /// The zone's SOA goes in the authority section (a negative end of the chain).
    pub soa: bool,
    pub answer: Vec<StaticRr>,
    /// The geo answer at the end of a chain: owner and addresses, after `answer`.
    pub geo: Option<GeoAnswer>,
    /// NS of a referral.
    pub authority: Vec<StaticRr>,
    /// Glue of a referral.
    pub additional: Vec<StaticRr>,
}

/// Addresses of a geo record reached through a CNAME.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoAnswer {
    pub owner: Vec<u8>,
    pub addrs: Vec<IpAddr>,
    pub ttl: u32,
    pub scope: u8,
    pub source: AnswerSource,
}

/// Exactly what the kernel maps of one generation hold.
#[derive(Clone, Debug, Default)]
pub struct KernelMaps {
    pub prefixes_v4: Vec<([u8; 4], u8, PrefixValue)>,
    pub prefixes_v6: Vec<([u8; 16], u8, PrefixValue)>,
    pub names: Vec<(NameKey, NameValue)>,
    pub answers: Vec<(AnswerKey, AnswerSet)>,
    /// `STATE_FLAG_ALIAS_*`: the IPv6 ranges the kernel looks up as IPv4 with this
    /// generation ([`Compiled::aliases`]).
    pub aliases: u32,
    /// The static answers' nodes and answers (`geodns_common::statics`), indexed as
    /// the `node` of the wildcard keys in `names` name them. Empty: every static
    /// answer passes. Written by the userspace server, whose bytes they are.
    pub static_nodes: Vec<StaticNode>,
    pub static_answers: Vec<StaticAnswer>,
}

/// How many entries each kernel map holds, without building them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSizes {
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub names: usize,
    pub answers: usize,
}

/// Draws the per-query random number of the `spread` policy.
pub trait Picker: Send + Sync + std::fmt::Debug {
    /// A number uniformly in `[0, total)`; `total > 0`.
    fn below(&self, total: u32) -> u32;
}

/// Lock-free `SplitMix64`; seed it for reproducible tests.
#[derive(Debug)]
pub struct SplitMix {
    state: AtomicU64,
}

impl SplitMix {
    #[must_use]
    pub fn seeded(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// Seeded from the process's random hasher keys.
    #[must_use]
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5EED);
        Self::seeded(h.finish())
    }
}

impl Picker for SplitMix {
    fn below(&self, total: u32) -> u32 {
        let state = self
            .state
            .fetch_add(rng::GAMMA, Ordering::Relaxed)
            .wrapping_add(rng::GAMMA);
        u32::try_from(rng::scale(rng::mix(state), u64::from(total))).unwrap_or(0)
    }
}

/// At most [`MAX_ANSWER_ADDRS`] addresses, held inline (an answer picked per query
/// allocates nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrList {
    addrs: [IpAddr; MAX_ANSWER_ADDRS],
    len: usize,
}

impl AddrList {
    const EMPTY: Self = Self {
        addrs: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); MAX_ANSWER_ADDRS],
        len: 0,
    };

    /// Appends `a`; beyond [`MAX_ANSWER_ADDRS`] it is left out.
    fn push(&mut self, a: IpAddr) {
        if let Some(slot) = self.addrs.get_mut(self.len) {
            *slot = a;
            self.len += 1;
        }
    }

    #[must_use]
    pub fn as_slice(&self) -> &[IpAddr] {
        self.addrs.get(..self.len).unwrap_or_default()
    }
}

/// Address answer for one family: the addresses, their node, and where they came from.
struct Picked {
    addrs: AddrList,
    node: usize,
    ttl: u32,
    scope: u8,
    source: AnswerSource,
}

/// Answer sets for every (record, region) under one set of node states, plus the
/// compiled prefixes they share with other engines.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    compiled: Arc<Compiled>,
    states: NodeStates,
    /// Per record, per rule of its map.
    sets: Vec<Vec<Option<RuleSet>>>,
    origin: Vec<u8>,
    exact: HashMap<Vec<u8>, usize>,
    /// Keyed by the name without its `*` label.
    wildcard: HashMap<Vec<u8>, usize>,
    /// Every name that exists: records (geo and static, `*.x` owners included), the
    /// names between them and the origin (empty non-terminals), glue names.
    existing: HashSet<Vec<u8>>,
    /// In-zone NS names with glue.
    glue: HashMap<Vec<u8>, (Vec<IpAddr>, Vec<IpAddr>)>,
    /// `[zone]` names in wire format (responses write them per query).
    zone_wire: ZoneWire,
    /// Per family (0: IPv4, 1: IPv6).
    fallback: [Vec<FallbackNode>; 2],
    rr: Mutex<[Swrr; 2]>,
    fail_open: Arc<AtomicU64>,
    picker: Arc<dyn Picker>,
}

impl Engine {
    #[must_use]
    pub fn new(config: Arc<Config>, compiled: Arc<Compiled>, states: &NodeStates) -> Self {
        Self::build(
            config,
            compiled,
            states,
            Arc::new(AtomicU64::new(0)),
            Arc::new(SplitMix::from_entropy()),
        )
    }

    fn build(
        config: Arc<Config>,
        compiled: Arc<Compiled>,
        states: &NodeStates,
        fail_open: Arc<AtomicU64>,
        picker: Arc<dyn Picker>,
    ) -> Self {
        let sets = config
            .records
            .iter()
            .map(|r| {
                compiled
                    .rules(&config, r.map)
                    .map(|rule| rule_set(&config, r, rule, states))
                    .collect()
            })
            .collect();
        let origin = name::to_wire(&config.zone.origin);
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut existing = HashSet::new();
        for (i, r) in config.records.iter().enumerate() {
            let wire = name::to_wire(&r.name);
            let own = if r.wildcard {
                let base = name::parent(&wire).unwrap_or(&wire).to_vec();
                wildcard.insert(base, i);
                wire
            } else {
                exact.insert(wire.clone(), i);
                wire
            };
            // Every name between the record and the origin exists.
            let mut cur = Some(&own[..]);
            while let Some(c) = cur {
                if c.len() <= origin.len() {
                    break;
                }
                existing.insert(c.to_vec());
                cur = name::parent(c);
            }
        }
        for owner in config.statics.names.keys() {
            let mut cur = Some(&owner[..]);
            while let Some(c) = cur {
                if c.len() <= origin.len() {
                    break;
                }
                existing.insert(c.to_vec());
                cur = name::parent(c);
            }
        }
        let mut glue = HashMap::new();
        for ns in &config.zone.ns {
            let wire = name::to_wire(&ns.name);
            if name::in_zone(&wire, &origin) {
                let v4 = ns.ipv4.iter().map(|a| IpAddr::V4(*a)).collect();
                let v6 = ns.ipv6.iter().map(|a| IpAddr::V6(*a)).collect();
                let mut cur = Some(&wire[..]);
                while let Some(c) = cur {
                    if c.len() <= origin.len() {
                        break;
                    }
                    existing.insert(c.to_vec());
                    cur = name::parent(c);
                }
                glue.insert(wire, (v4, v6));
            }
        }
        let fallback = [false, true].map(|v6| {
            config
                .fallback
                .iter()
                .filter_map(|c| Some((c, config.node_index(&c.node)?)))
                .filter(|(_, i)| !node_addrs(&config.nodes[*i], v6).is_empty())
                .map(|(c, i)| FallbackNode {
                    node: i,
                    weight: i64::from(c.weight),
                    up: states.get(&c.node) == NodeState::Up,
                    unhealthy: states.is_unhealthy(&c.node),
                })
                .collect()
        });
        Self {
            zone_wire: ZoneWire::of(&config.zone),
            config,
            compiled,
            states: states.clone(),
            sets,
            origin,
            exact,
            wildcard,
            existing,
            glue,
            fallback,
            rr: Mutex::new([Swrr::default(), Swrr::default()]),
            fail_open,
            picker,
        }
    }

    /// The same config and prefixes under new node states (the fail-open counter and
    /// the random source carry over; round robin starts afresh).
    #[must_use]
    pub fn with_states(&self, states: &NodeStates) -> Self {
        Self::build(
            self.config.clone(),
            self.compiled.clone(),
            states,
            self.fail_open.clone(),
            self.picker.clone(),
        )
    }

    /// The same engine with other static data and SOA serial (an applied RFC 2136
    /// update); prefixes, node states and the random source carry over.
    #[must_use]
    pub fn with_zone(&self, statics: zone::StaticZone, serial: u32) -> Self {
        let mut config = (*self.config).clone();
        config.statics = statics;
        config.zone.serial = serial;
        Self::build(
            Arc::new(config),
            self.compiled.clone(),
            &self.states,
            self.fail_open.clone(),
            self.picker.clone(),
        )
    }

    /// Whether the zone's content (everything but the SOA serial) differs from
    /// `other`'s: static data, geo record names and settings, SOA fields, NS set.
    #[must_use]
    pub fn zone_differs(&self, other: &Self) -> bool {
        let (a, b) = (&*self.config, &*other.config);
        let soa = |c: &Config| {
            let z = &c.zone;
            (
                z.origin.clone(),
                z.ttl,
                z.mname.clone(),
                z.rname.clone(),
                [z.refresh, z.retry, z.expire, z.minimum],
                z.ns.iter()
                    .map(|n| (n.name.clone(), n.ipv4.clone(), n.ipv6.clone()))
                    .collect::<Vec<_>>(),
            )
        };
        let records = |c: &Config| {
            c.records
                .iter()
                .map(|r| (r.name.clone(), r.ttl, r.policy, r.max_answers))
                .collect::<Vec<_>>()
        };
        // Where a record set was defined (file line, journal, update) is not content.
        let statics = |c: &Config| {
            c.statics
                .names
                .iter()
                .map(|(n, sets)| {
                    let sets: Vec<_> = sets
                        .iter()
                        .map(|s| (s.rtype, s.ttl, s.rdata.clone()))
                        .collect();
                    (n.clone(), sets)
                })
                .collect::<Vec<_>>()
        };
        statics(a) != statics(b) || soa(a) != soa(b) || records(a) != records(b)
    }

    /// Whether a geo record sits at exactly this lowercase wire name (its `*.x` owner
    /// for a wildcard).
    #[must_use]
    pub fn has_geo_record(&self, wire: &[u8]) -> bool {
        self.exact_geo(wire).is_some()
    }

    /// Replaces the random source of the `spread` policy (tests seed it).
    #[must_use]
    pub fn with_picker(mut self, picker: Box<dyn Picker>) -> Self {
        self.picker = Arc::from(picker);
        self
    }

    #[must_use]
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    #[must_use]
    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    #[must_use]
    pub fn states(&self) -> &NodeStates {
        &self.states
    }

    /// The zone origin in lowercase wire format.
    #[must_use]
    pub fn origin_wire(&self) -> &[u8] {
        &self.origin
    }

    /// The SOA's MNAME and RNAME in wire format.
    #[must_use]
    pub fn soa_names(&self) -> (&[u8], &[u8]) {
        (&self.zone_wire.mname, &self.zone_wire.rname)
    }

    /// The zone's NS names in wire format, in `[zone]` order.
    #[must_use]
    pub fn ns_names(&self) -> &[Vec<u8>] {
        &self.zone_wire.ns
    }

    /// Glue (IPv4, IPv6) of an in-zone NS name given in lowercase wire format, for the
    /// additional section of NS answers; `None` for a name outside the zone.
    #[must_use]
    pub fn glue(&self, wire: &[u8]) -> Option<(&[IpAddr], &[IpAddr])> {
        self.glue.get(wire).map(|(v4, v6)| (&v4[..], &v6[..]))
    }

    /// How many fallback answers used nodes that were all down (fail open), over this
    /// engine and the ones it was derived from.
    #[must_use]
    pub fn fail_open_count(&self) -> u64 {
        self.fail_open.load(Ordering::Relaxed)
    }

    /// The name part of a rate-limit bucket key for an answer to `name` (wire format,
    /// any case): the record's number when a record answers it (the kernel keys its
    /// buckets by the same number, and a wildcard's random names share one), else a
    /// hash of the name with the top bit set.
    #[must_use]
    pub fn rrl_name(&self, name: &[u8]) -> u64 {
        self.rrl_name_lowercase(&name::lowercase(name))
    }

    /// [`Engine::rrl_name`] of a name already in lowercase wire format.
    #[must_use]
    pub fn rrl_name_lowercase(&self, wire: &[u8]) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        if let Some(rec) = self.record_for(wire) {
            return rec as u64;
        }
        // Fixed keys: the same name maps to the same bucket in every run.
        let mut h = std::hash::DefaultHasher::new();
        wire.hash(&mut h);
        h.finish() | 1 << 63
    }

    /// Whether a record answers `name` (wire format, any case), found as for an `A`
    /// question: the exact name, else the wildcard one level up. The HTTP redirector
    /// asks it of a request's `Host`.
    #[must_use]
    pub fn serves(&self, name: &[u8]) -> bool {
        self.record_for(&name::lowercase(name)).is_some()
    }

    /// The node that answers an `A` (or `AAAA`) question, for the HTTP redirector, with
    /// the addresses the DNS answer would carry.
    #[must_use]
    pub fn node_for(
        &self,
        question: &Question,
    ) -> Option<(&NodeConfig, Vec<IpAddr>, AnswerSource)> {
        let v6 = match question.qtype {
            QTYPE_A => false,
            QTYPE_AAAA => true,
            _ => return None,
        };
        let wire = name::lowercase(&question.name);
        let rec = self.record_for(&wire)?;
        let p = self.pick(rec, v6, question.client)?;
        Some((
            self.config.nodes.get(p.node)?,
            p.addrs.as_slice().to_vec(),
            p.source,
        ))
    }

    /// Addresses of one family for a record and a client: the region's answer set like
    /// the kernel, else the fallback.
    fn pick(&self, record: usize, v6: bool, client: IpAddr) -> Option<Picked> {
        let rec = &self.config.records[record];
        let m = self.compiled.lookup(client);
        let mut scope = m.prefix.len();
        let rs = self
            .compiled
            .choice(m.region, rec.map)
            .and_then(|k| self.sets[record].get(k).copied().flatten());
        if let Some(rs) = rs {
            let set = &rs.set;
            let n = usize::from(if v6 { set.n_v6 } else { set.n_v4 });
            if n > 0 {
                let cum = if v6 { &set.cum_v6 } else { &set.cum_v4 };
                let first = if set.policy == POLICY_SPREAD {
                    let total = cum[n - 1];
                    let r = if total == 0 {
                        0
                    } else {
                        self.picker.below(total)
                    };
                    geodns_common::weighted_slot(cum, n, r)
                } else if set.policy == POLICY_STICKY {
                    scope = geodns_common::sticky_scope(scope, client.is_ipv6());
                    let tags = if v6 { &set.tag_v6 } else { &set.tag_v4 };
                    geodns_common::sticky_slot(sticky_key(client), cum, tags, n)
                } else {
                    0
                };
                let want = usize::from(set.count).max(1).min(n);
                let mut addrs = AddrList::EMPTY;
                for j in 0..want {
                    let i = (first + j) % n;
                    addrs.push(if v6 {
                        IpAddr::V6(Ipv6Addr::from(set.v6[i]))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(set.v4[i]))
                    });
                }
                let nodes = if v6 { &rs.nodes_v6 } else { &rs.nodes_v4 };
                return Some(Picked {
                    addrs,
                    node: usize::from(nodes[first]),
                    ttl: set.ttl,
                    scope,
                    source: AnswerSource::Geo {
                        region: m.region,
                        fail_open: rs.fail_open,
                    },
                });
            }
        }
        let fam = &self.fallback[usize::from(v6)];
        let (i, fail_open) = {
            let mut rr = self
                .rr
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let rr = &mut rr[usize::from(v6)];
            if let Some(i) = rr.pick(fam, |n| n.up) {
                (i, false)
            } else {
                // Fail open over the nodes only their checks call down; an operator's
                // down or drain always holds.
                (rr.pick(fam, |n| n.unhealthy)?, true)
            }
        };
        if fail_open {
            self.fail_open.fetch_add(1, Ordering::Relaxed);
        }
        let node = fam[i].node;
        let mut addrs = AddrList::EMPTY;
        let n = &self.config.nodes[node];
        if v6 {
            n.ipv6.iter().for_each(|a| addrs.push(IpAddr::V6(*a)));
        } else {
            n.ipv4.iter().for_each(|a| addrs.push(IpAddr::V4(*a)));
        }
        Some(Picked {
            addrs,
            node,
            ttl: rec.ttl,
            scope,
            source: AnswerSource::Fallback {
                region: m.region,
                fail_open,
            },
        })
    }
}

/// The `[zone]` names responses write, in wire format.
#[derive(Debug)]
struct ZoneWire {
    mname: Vec<u8>,
    rname: Vec<u8>,
    /// Every NS name, in order.
    ns: Vec<Vec<u8>>,
}

impl ZoneWire {
    fn of(zone: &crate::config::Zone) -> Self {
        Self {
            mname: name::to_wire(&zone.mname),
            rname: name::to_wire(&zone.rname),
            ns: zone.ns.iter().map(|n| name::to_wire(&n.name)).collect(),
        }
    }
}

/// The sticky key of a client address, as the kernel computes it from the ECS address
/// or the packet's source.
#[must_use]
pub fn sticky_key(client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(a) => geodns_common::sticky_key_v4(a.octets()),
        IpAddr::V6(a) => geodns_common::sticky_key_v6(&a.octets()),
    }
}

// The server shares one engine between tasks and threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Engine>();
    send_sync::<Compiled>();
};

pub use geodns_common::dns::rtype::{
    A as QTYPE_A, AAAA as QTYPE_AAAA, NS as QTYPE_NS, SOA as QTYPE_SOA,
};
