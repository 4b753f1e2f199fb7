//! Answer sets from node states, and the whole DNS decision in userspace.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use geodns_common::{
    AnswerKey, AnswerSet, NameKey, NameValue, PrefixValue, MAX_ANSWER_ADDRS, POLICY_BEST,
    POLICY_SPREAD,
};

use crate::{
    cidr::Cidr,
    compile::{AddressFacts, Compiled},
    config::{Candidate, Config, NodeConfig, Policy, Record, RegionKey, Rule},
    name, rng,
    zone::{self, Rrset, TYPE_CNAME},
};

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

/// What one name of a chain gives.
enum Step {
    /// Ends the lookup as it is (no chain so far).
    Plain(Resolution),
    Rrset(Vec<StaticRr>),
    Cname(StaticRr, Vec<u8>),
    Referral(Vec<u8>),
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

/// Why one decision was made; `geodns lookup` prints it.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct Explanation {
    /// The address looked up (the ECS prefix's address when one was given).
    pub client: IpAddr,
    /// The ECS prefix, when one was given with a non-zero length.
    pub ecs: Option<Cidr>,
    /// The matched prefix; its length is the ECS scope of the answer.
    pub prefix: Cidr,
    pub region: u16,
    /// When the client lies in an IPv6 range the databases alias onto their IPv4 tree:
    /// the range, the embedded IPv4 address it was looked up as, and the IPv4 prefix
    /// that matched (`prefix` is that prefix moved into the range).
    pub alias: Option<AliasLookup>,
    /// What the databases and config CIDRs say about the address.
    pub facts: Option<AddressFacts>,
    /// Why `facts` is missing (a database could not be read again).
    pub facts_error: Option<String>,
    /// The key each map picked for the region, and why.
    pub maps: Vec<MapChoice>,
    pub records: Vec<RecordExplanation>,
    /// The `[fallback]` nodes with their state.
    pub fallback: Vec<CandidateState>,
}

/// An aliased IPv6 client, looked up as IPv4.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct AliasLookup {
    pub range: Cidr,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix: Cidr,
}

/// The key one map picked.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct MapChoice {
    pub map: String,
    /// `None`: no rule applies (no default either), or region 0.
    pub key: Option<RegionKey>,
    pub why: String,
}

/// A candidate with its current state.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct CandidateState {
    pub node: String,
    pub weight: u32,
    pub state: NodeState,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

/// One record's decision for the explained address.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct RecordExplanation {
    pub name: String,
    pub map: String,
    pub policy: Policy,
    pub ttl: u32,
    /// The rule's candidates (empty when the map picked nothing).
    pub candidates: Vec<CandidateState>,
    /// Whether the kernel holds an answer set for this record and region.
    pub kernel: bool,
    pub a: FamilyAnswer,
    pub aaaa: FamilyAnswer,
}

/// What one family gets.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct FamilyAnswer {
    /// `geo`, `fallback` or `none`.
    pub source: &'static str,
    /// `geo`: the answer set's addresses (for `spread`, every slot); `fallback`: the
    /// nodes' addresses that round robin would cycle through.
    pub addresses: Vec<IpAddr>,
    /// `spread`: each slot's weight.
    pub weights: Vec<u32>,
    /// Addresses per answer.
    pub count: u8,
}

/// A record's answer set for one rule of its map, with the node of every slot.
#[derive(Clone, Copy, Debug)]
struct RuleSet {
    set: AnswerSet,
    nodes_v4: [u16; MAX_ANSWER_ADDRS],
    nodes_v6: [u16; MAX_ANSWER_ADDRS],
    /// Every candidate is down by health: the set holds them all (fail open).
    fail_open: bool,
}

/// One fallback node of one family.
#[derive(Clone, Debug)]
struct FallbackNode {
    node: usize,
    weight: i64,
    up: bool,
    /// Down by health alone: used when no fallback node is up (fail open).
    unhealthy: bool,
}

/// Smooth weighted round robin (nginx): every pick adds each weight to its current
/// value, takes the largest, and subtracts the total from it.
#[derive(Debug, Default)]
struct Swrr {
    current: Vec<i64>,
}

impl Swrr {
    fn pick(
        &mut self,
        nodes: &[FallbackNode],
        eligible: impl Fn(&FallbackNode) -> bool,
    ) -> Option<usize> {
        self.current.resize(nodes.len(), 0);
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, n) in nodes.iter().enumerate() {
            if !eligible(n) {
                continue;
            }
            self.current[i] += n.weight;
            total += n.weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

/// Address answer for one family: the addresses, their node, and where they came from.
struct Picked {
    addrs: Vec<IpAddr>,
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
    /// Per family (0: IPv4, 1: IPv6).
    fallback: [Vec<FallbackNode>; 2],
    rr: Mutex<[Swrr; 2]>,
    fail_open: Arc<AtomicU64>,
    picker: Arc<dyn Picker>,
}

fn node_addrs(n: &NodeConfig, v6: bool) -> Vec<IpAddr> {
    if v6 {
        n.ipv6.iter().map(|a| IpAddr::V6(*a)).collect()
    } else {
        n.ipv4.iter().map(|a| IpAddr::V4(*a)).collect()
    }
}

/// The answer set of one rule for one record under `states`: its up candidates; when
/// none is up with an address, every candidate that is down by health alone (fail
/// open within the region: a checker cut off from the nodes must not move every
/// client away, as gdnsd and Route 53 do); `None` when neither gives an address (the
/// operator took them all out: the `[fallback]` answers).
fn rule_set(config: &Config, record: &Record, rule: &Rule, states: &NodeStates) -> Option<RuleSet> {
    rule_set_of(config, record, rule, |c| {
        states.get(&c.node) == NodeState::Up
    })
    .or_else(|| {
        rule_set_of(config, record, rule, |c| states.is_unhealthy(&c.node)).map(|mut rs| {
            rs.fail_open = true;
            rs
        })
    })
}

fn rule_set_of(
    config: &Config,
    record: &Record,
    rule: &Rule,
    eligible: impl Fn(&Candidate) -> bool,
) -> Option<RuleSet> {
    let mut rs = RuleSet {
        set: AnswerSet::EMPTY,
        nodes_v4: [u16::MAX; MAX_ANSWER_ADDRS],
        nodes_v6: [u16::MAX; MAX_ANSWER_ADDRS],
        fail_open: false,
    };
    rs.set.ttl = record.ttl;
    let up: Vec<(&Candidate, usize)> = rule
        .candidates
        .iter()
        .filter(|c| eligible(c))
        .filter_map(|c| Some((c, config.node_index(&c.node)?)))
        .collect();
    for v6 in [false, true] {
        let mut n = 0usize;
        let mut cum = 0u32;
        // Candidates are sorted by weight, highest first, then name.
        for (c, i) in &up {
            let addrs = node_addrs(&config.nodes[*i], v6);
            if addrs.is_empty() {
                continue;
            }
            for a in addrs {
                if n == MAX_ANSWER_ADDRS {
                    break;
                }
                cum = cum.saturating_add(c.weight);
                let node = u16::try_from(*i).unwrap_or(u16::MAX);
                match a {
                    IpAddr::V4(a) => {
                        rs.set.v4[n] = a.octets();
                        rs.set.cum_v4[n] = cum;
                        rs.nodes_v4[n] = node;
                    }
                    IpAddr::V6(a) => {
                        rs.set.v6[n] = a.octets();
                        rs.set.cum_v6[n] = cum;
                        rs.nodes_v6[n] = node;
                    }
                }
                n += 1;
            }
            if record.policy == Policy::Best {
                // The best candidate that has this family: all its addresses, nothing else.
                break;
            }
        }
        let n = u8::try_from(n).unwrap_or(u8::MAX);
        if v6 {
            rs.set.n_v6 = n;
        } else {
            rs.set.n_v4 = n;
        }
    }
    let most = rs.set.n_v4.max(rs.set.n_v6);
    if most == 0 {
        return None;
    }
    (rs.set.policy, rs.set.count) = match record.policy {
        Policy::Best => (POLICY_BEST, most),
        Policy::Spread => (POLICY_SPREAD, record.max_answers.clamp(1, most)),
    };
    Some(rs)
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
                config.maps[r.map]
                    .rules
                    .iter()
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

    /// The geo record at exactly this name (a `*.x` name is the wildcard record itself).
    fn exact_geo(&self, wire: &[u8]) -> Option<usize> {
        if let Some(r) = self.exact.get(wire) {
            return Some(*r);
        }
        if wire.get(..2) == Some(&[1, b'*'][..]) {
            return name::parent(wire)
                .and_then(|p| self.wildcard.get(p))
                .copied();
        }
        None
    }

    /// The closest encloser of a name that does not exist (RFC 4592 section 3.3.1):
    /// its nearest existing ancestor (the origin at the latest).
    fn closest_encloser<'a>(&self, wire: &'a [u8]) -> &'a [u8] {
        let mut cur = name::parent(wire);
        while let Some(c) = cur {
            if c == self.origin || c.len() <= self.origin.len() || self.existing.contains(c) {
                return c;
            }
            cur = name::parent(c);
        }
        wire
    }

    /// The geo record that answers a lowercase wire name: the exact name, else, when the
    /// name does not exist, the wildcard at its closest encloser (RFC 4592, any depth).
    /// The kernel finds the same (see [`Engine::kernel_names`]).
    fn record_for(&self, wire: &[u8]) -> Option<usize> {
        if let Some(r) = self.exact_geo(wire) {
            return Some(r);
        }
        if self.existing.contains(wire) || wire == self.origin {
            return None;
        }
        if self
            .config
            .statics
            .cut_at_or_above(wire, &self.origin)
            .is_some()
        {
            return None;
        }
        self.wildcard.get(self.closest_encloser(wire)).copied()
    }

    /// The name part of a rate-limit bucket key for an answer to `name` (wire format,
    /// any case): the record's number when a record answers it (the kernel keys its
    /// buckets by the same number, and a wildcard's random names share one), else a
    /// hash of the name with the top bit set.
    #[must_use]
    pub fn rrl_name(&self, name: &[u8]) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let wire = name::lowercase(name);
        if let Some(rec) = self.record_for(&wire) {
            return rec as u64;
        }
        // Fixed keys: the same name maps to the same bucket in every run.
        let mut h = std::hash::DefaultHasher::new();
        wire.hash(&mut h);
        h.finish() | 1 << 63
    }

    /// The whole decision for one question. The client is taken as the kernel takes
    /// it: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is an IPv6 client, looked
    /// up as `a.b.c.d` (scope + 96) only where the databases alias that range; a
    /// caller with a dual-stack socket converts its peers first. CNAMEs inside the zone
    /// are followed (RFC 1034 section 4.3.2), also to geo names; wildcards match at any
    /// depth below their closest encloser (RFC 4592); names at or below a delegation
    /// get a referral.
    #[must_use]
    pub fn resolve(&self, question: &Question) -> Resolution {
        let wire = name::lowercase(&question.name);
        if name::labels(&wire).is_none() || !name::in_zone(&wire, &self.origin) {
            return Resolution::Refused;
        }
        let qtype = question.qtype;
        let client = question.client;
        let mut chain: Vec<StaticRr> = Vec::new();
        let mut cur = wire;
        for _ in 0..MAX_CNAME_CHAIN {
            let step = self.step(&cur, qtype, client);
            let mut out = Records {
                authoritative: true,
                ..Records::default()
            };
            match step {
                Step::Plain(r) if chain.is_empty() => return r,
                Step::Plain(r) => match r {
                    Resolution::NxDomain => {
                        out.nxdomain = true;
                        out.soa = true;
                    }
                    Resolution::NoData => out.soa = true,
                    Resolution::Addresses {
                        addrs,
                        ttl,
                        scope,
                        source,
                    } => {
                        out.geo = Some(GeoAnswer {
                            owner: cur.clone(),
                            addrs,
                            ttl,
                            scope,
                            source,
                        });
                    }
                    Resolution::Soa => out.answer.push(self.soa_rr()),
                    Resolution::Ns => out.answer.extend(self.ns_rrs()),
                    Resolution::Refused | Resolution::Records(_) => {}
                },
                Step::Rrset(rrs) => out.answer = rrs,
                Step::Cname(rr, target) => {
                    let seen = chain.iter().any(|c| c.owner == target) || rr.owner == target;
                    chain.push(rr);
                    if !seen && name::in_zone(&target, &self.origin) {
                        cur = target;
                        continue;
                    }
                }
                Step::Referral(cut) => {
                    self.referral(&cut, &mut out);
                    // A referral reached through a CNAME: the CNAME is ours (AA=1).
                    out.authoritative = !chain.is_empty();
                }
            }
            chain.append(&mut out.answer);
            out.answer = chain;
            return Resolution::Records(Box::new(out));
        }
        Resolution::Records(Box::new(Records {
            authoritative: true,
            answer: chain,
            ..Records::default()
        }))
    }

    /// One name of a lookup: the data there, a CNAME to follow, or a referral.
    fn step(&self, wire: &[u8], qtype: u16, client: IpAddr) -> Step {
        let apex = wire == self.origin.as_slice();
        if apex && qtype == QTYPE_SOA {
            return Step::Plain(Resolution::Soa);
        }
        if apex && qtype == QTYPE_NS {
            return Step::Plain(Resolution::Ns);
        }
        let statics = &self.config.statics;
        if let Some(cut) = statics.cut_at_or_above(wire, &self.origin) {
            return Step::Referral(cut);
        }
        if let Some(rec) = self.exact_geo(wire) {
            return self.geo_step(rec, wire, wire, qtype, client);
        }
        if let Some(sets) = statics.names.get(wire) {
            return Self::static_step(sets, wire, qtype);
        }
        if let Some((g4, g6)) = self.glue.get(wire) {
            let addrs = match qtype {
                QTYPE_A => g4,
                QTYPE_AAAA => g6,
                _ => return Step::Plain(Resolution::NoData),
            };
            if addrs.is_empty() {
                return Step::Plain(Resolution::NoData);
            }
            return Step::Plain(Resolution::Addresses {
                addrs: addrs.clone(),
                ttl: self.config.zone.ttl,
                scope: 0,
                source: AnswerSource::Glue,
            });
        }
        if apex || self.existing.contains(wire) {
            return Step::Plain(Resolution::NoData);
        }
        // RFC 4592: the wildcard at the closest encloser, if there is one.
        let ce = self.closest_encloser(wire);
        let mut star = vec![1, b'*'];
        star.extend_from_slice(ce);
        if let Some(&rec) = self.wildcard.get(ce) {
            return self.geo_step(rec, &star, wire, qtype, client);
        }
        if let Some(sets) = statics.names.get(&star) {
            return Self::static_step(sets, wire, qtype);
        }
        Step::Plain(Resolution::NxDomain)
    }

    /// A geo name (`node`: where its static data sits; `owner`: the name asked).
    fn geo_step(&self, rec: usize, node: &[u8], owner: &[u8], qtype: u16, client: IpAddr) -> Step {
        let v6 = match qtype {
            QTYPE_A => false,
            QTYPE_AAAA => true,
            _ => {
                return match self.config.statics.names.get(node) {
                    Some(sets) => Self::static_step(sets, owner, qtype),
                    None => Step::Plain(Resolution::NoData),
                }
            }
        };
        Step::Plain(self.pick(rec, v6, client).map_or(Resolution::NoData, |p| {
            Resolution::Addresses {
                addrs: p.addrs,
                ttl: p.ttl,
                scope: p.scope,
                source: p.source,
            }
        }))
    }

    /// Static record sets at a name, answered with `owner` (the name asked, for wildcards).
    fn static_step(sets: &[Rrset], owner: &[u8], qtype: u16) -> Step {
        let rrs = |set: &Rrset| -> Vec<StaticRr> {
            set.rdata
                .iter()
                .map(|rd| StaticRr {
                    owner: owner.to_vec(),
                    rtype: set.rtype,
                    ttl: set.ttl,
                    rdata: rd.clone(),
                })
                .collect()
        };
        if let Some(set) = sets.iter().find(|s| s.rtype == qtype) {
            return Step::Rrset(rrs(set));
        }
        if let Some(set) = sets.iter().find(|s| s.rtype == TYPE_CNAME) {
            if let Some(rr) = rrs(set).into_iter().next() {
                if let Some(target) = zone::rdata_name(&rr.rdata) {
                    return Step::Cname(rr, target);
                }
            }
        }
        Step::Plain(Resolution::NoData)
    }

    /// NS of the delegation `cut` in authority, their in-zone addresses as glue.
    fn referral(&self, cut: &[u8], out: &mut Records) {
        let statics = &self.config.statics;
        let Some(ns) = statics.rrset(cut, zone::TYPE_NS) else {
            return;
        };
        for rd in &ns.rdata {
            out.authority.push(StaticRr {
                owner: cut.to_vec(),
                rtype: zone::TYPE_NS,
                ttl: ns.ttl,
                rdata: rd.clone(),
            });
        }
        for t in [zone::TYPE_A, zone::TYPE_AAAA] {
            for rd in &ns.rdata {
                let Some(target) = zone::rdata_name(rd) else {
                    continue;
                };
                if !name::in_zone(&target, &self.origin) {
                    continue;
                }
                if let Some(set) = statics.rrset(&target, t) {
                    for a in &set.rdata {
                        out.additional.push(StaticRr {
                            owner: target.clone(),
                            rtype: t,
                            ttl: set.ttl,
                            rdata: a.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The zone's SOA as a record (the answer to SOA at the end of a chain).
    fn soa_rr(&self) -> StaticRr {
        let z = &self.config.zone;
        let mut rdata = name::to_wire(&z.mname);
        rdata.extend_from_slice(&name::to_wire(&z.rname));
        for n in [z.serial, z.refresh, z.retry, z.expire, z.minimum] {
            rdata.extend_from_slice(&n.to_be_bytes());
        }
        StaticRr {
            owner: self.origin.clone(),
            rtype: QTYPE_SOA,
            ttl: z.ttl,
            rdata,
        }
    }

    fn ns_rrs(&self) -> Vec<StaticRr> {
        let z = &self.config.zone;
        z.ns.iter()
            .map(|n| StaticRr {
                owner: self.origin.clone(),
                rtype: QTYPE_NS,
                ttl: z.ttl,
                rdata: name::to_wire(&n.name),
            })
            .collect()
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
        Some((self.config.nodes.get(p.node)?, p.addrs, p.source))
    }

    /// Addresses of one family for a record and a client: the region's answer set like
    /// the kernel, else the fallback.
    fn pick(&self, record: usize, v6: bool, client: IpAddr) -> Option<Picked> {
        let rec = &self.config.records[record];
        let m = self.compiled.lookup(client);
        let scope = m.prefix.len();
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
                    cum[..n].iter().position(|c| *c > r).unwrap_or(0)
                } else {
                    0
                };
                let want = usize::from(set.count).max(1).min(n);
                let addrs = (0..want)
                    .map(|j| {
                        let i = (first + j) % n;
                        if v6 {
                            IpAddr::V6(Ipv6Addr::from(set.v6[i]))
                        } else {
                            IpAddr::V4(Ipv4Addr::from(set.v4[i]))
                        }
                    })
                    .collect();
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
        Some(Picked {
            addrs: node_addrs(&self.config.nodes[node], v6)
                .into_iter()
                .take(MAX_ANSWER_ADDRS)
                .collect(),
            node,
            ttl: rec.ttl,
            scope,
            source: AnswerSource::Fallback {
                region: m.region,
                fail_open,
            },
        })
    }

    fn candidate_states<'a>(
        &self,
        list: impl Iterator<Item = &'a Candidate>,
    ) -> Vec<CandidateState> {
        list.map(|c| {
            let n = self.config.node(&c.node);
            CandidateState {
                node: c.node.clone(),
                weight: c.weight,
                state: self.states.get(&c.node),
                ipv4: n.map(|n| n.ipv4.clone()).unwrap_or_default(),
                ipv6: n.map(|n| n.ipv6.clone()).unwrap_or_default(),
            }
        })
        .collect()
    }

    /// Why `client` (or the ECS prefix `ecs`, when its length is not 0) gets what it
    /// gets, for every map and record.
    #[must_use]
    pub fn explain(&self, client: IpAddr, ecs: Option<(IpAddr, u8)>) -> Explanation {
        let ecs = ecs
            .filter(|(_, len)| *len > 0)
            .map(|(a, len)| Cidr::new(a, len));
        let client = ecs.map_or(client, |c| c.addr());
        let m = self.compiled.lookup(client);
        let alias = self
            .compiled
            .alias_of(client)
            .map(|(range, ipv4, offset)| AliasLookup {
                range,
                ipv4,
                ipv4_prefix: Cidr::new(IpAddr::V4(ipv4), m.prefix.len() - offset),
            });
        let (facts, facts_error) = match self.compiled.facts(client) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let maps = self
            .config
            .maps
            .iter()
            .enumerate()
            .map(|(i, map)| {
                let key = self.compiled.choice(m.region, i).map(|k| map.rules[k].key);
                let why = match (key, m.region) {
                    (_, 0) => {
                        "the address is in no database and no config CIDR: the fallback answers"
                            .to_owned()
                    }
                    (Some(RegionKey::Cidr(c)), _) => {
                        format!("config CIDR {c} contains the address")
                    }
                    (Some(RegionKey::Asn(a)), _) => format!("AS{a} from the ASN database"),
                    (Some(k @ RegionKey::Country(_)), _) => {
                        format!("country {k} from the country database")
                    }
                    (Some(k @ RegionKey::Continent(_)), _) => {
                        format!("{k} from the country database's continent field")
                    }
                    (Some(RegionKey::Default), _) => {
                        "no CIDR, ASN, country or continent key of this map applies".to_owned()
                    }
                    (None, _) => {
                        "no key applies and the map has no default: the fallback answers".to_owned()
                    }
                };
                MapChoice {
                    map: map.name.clone(),
                    key,
                    why,
                }
            })
            .collect();
        let records = self
            .config
            .records
            .iter()
            .enumerate()
            .map(|(i, rec)| {
                let rule = self.compiled.choice(m.region, rec.map);
                let rs = rule.and_then(|k| self.sets[i].get(k).copied().flatten());
                let candidates = rule
                    .map(|k| {
                        self.candidate_states(self.config.maps[rec.map].rules[k].candidates.iter())
                    })
                    .unwrap_or_default();
                RecordExplanation {
                    name: rec.name.clone(),
                    map: self.config.maps[rec.map].name.clone(),
                    policy: rec.policy,
                    ttl: rec.ttl,
                    candidates,
                    kernel: rs.is_some(),
                    a: self.family_answer(rs.as_ref(), false),
                    aaaa: self.family_answer(rs.as_ref(), true),
                }
            })
            .collect();
        Explanation {
            client,
            ecs,
            prefix: m.prefix,
            region: m.region,
            alias,
            facts,
            facts_error,
            maps,
            records,
            fallback: self.candidate_states(self.config.fallback.iter()),
        }
    }

    fn family_answer(&self, rs: Option<&RuleSet>, v6: bool) -> FamilyAnswer {
        if let Some(rs) = rs {
            let set = &rs.set;
            let n = usize::from(if v6 { set.n_v6 } else { set.n_v4 });
            if n > 0 {
                let cum = if v6 {
                    &set.cum_v6[..n]
                } else {
                    &set.cum_v4[..n]
                };
                return FamilyAnswer {
                    source: if rs.fail_open {
                        "geo (fail open: every candidate down by health)"
                    } else {
                        "geo"
                    },
                    addresses: (0..n)
                        .map(|i| {
                            if v6 {
                                IpAddr::V6(Ipv6Addr::from(set.v6[i]))
                            } else {
                                IpAddr::V4(Ipv4Addr::from(set.v4[i]))
                            }
                        })
                        .collect(),
                    weights: if set.policy == POLICY_SPREAD {
                        cum.iter()
                            .scan(0, |prev, c| {
                                let w = c - *prev;
                                *prev = *c;
                                Some(w)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    count: set.count.min(u8::try_from(n).unwrap_or(u8::MAX)),
                };
            }
        }
        let fam = &self.fallback[usize::from(v6)];
        let any_up = fam.iter().any(|f| f.up);
        let addresses: Vec<IpAddr> = fam
            .iter()
            .filter(|f| f.up || (!any_up && f.unhealthy))
            .flat_map(|f| node_addrs(&self.config.nodes[f.node], v6))
            .collect();
        FamilyAnswer {
            source: if addresses.is_empty() {
                "none"
            } else {
                "fallback"
            },
            addresses,
            weights: Vec::new(),
            count: 1,
        }
    }

    /// What `record` answers in `region` for one family, as `geodns diff` compares it: a
    /// label that identifies the answer (policy, answer count, addresses and weights;
    /// not the TTL), and the nodes it sends clients to with their shares (by weight;
    /// empty for NODATA).
    pub(crate) fn answer_of(
        &self,
        record: usize,
        region: u16,
        v6: bool,
    ) -> (String, Vec<(usize, f64)>) {
        use std::fmt::Write as _;
        let rec = &self.config.records[record];
        let rs = self
            .compiled
            .choice(region, rec.map)
            .and_then(|k| self.sets[record].get(k).copied().flatten());
        if let Some(rs) = rs {
            let set = &rs.set;
            let n = usize::from(if v6 { set.n_v6 } else { set.n_v4 });
            if n > 0 {
                let cum = if v6 { &set.cum_v6 } else { &set.cum_v4 };
                let nodes = if v6 { &rs.nodes_v6 } else { &rs.nodes_v4 };
                let addr = |i: usize| {
                    if v6 {
                        IpAddr::V6(Ipv6Addr::from(set.v6[i]))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(set.v4[i]))
                    }
                };
                let mut label = String::new();
                let mut shares: Vec<(usize, f64)> = Vec::new();
                if set.policy == POLICY_SPREAD {
                    let total = f64::from(cum[n - 1].max(1));
                    let _ = write!(
                        label,
                        "spread {} of",
                        set.count.min(u8::try_from(n).unwrap_or(u8::MAX))
                    );
                    let mut prev = 0;
                    for i in 0..n {
                        let w = cum[i] - prev;
                        prev = cum[i];
                        let _ = write!(label, " {} w{w}", addr(i));
                        let node = usize::from(nodes[i]);
                        match shares.iter_mut().find(|(k, _)| *k == node) {
                            Some(s) => s.1 += f64::from(w) / total,
                            None => shares.push((node, f64::from(w) / total)),
                        }
                    }
                } else {
                    label.push_str("best");
                    for i in 0..n {
                        let _ = write!(label, " {}", addr(i));
                    }
                    shares.push((usize::from(nodes[0]), 1.0));
                }
                return (label, shares);
            }
        }
        let fam = &self.fallback[usize::from(v6)];
        let any_up = fam.iter().any(|f| f.up);
        let used: Vec<&FallbackNode> = fam.iter().filter(|f| f.up || !any_up).collect();
        #[expect(clippy::cast_precision_loss, reason = "weights are u32")]
        let total = used.iter().map(|f| f.weight).sum::<i64>().max(1) as f64;
        if used.is_empty() {
            return ("NODATA".to_owned(), Vec::new());
        }
        if let [only] = used[..] {
            // One node: clients get its addresses every time, as from `best`.
            let node = &self.config.nodes[only.node];
            let mut label = "best".to_owned();
            for a in node_addrs(node, v6).iter().take(MAX_ANSWER_ADDRS) {
                let _ = write!(label, " {a}");
            }
            return (label, vec![(only.node, 1.0)]);
        }
        let mut label = "fallback round robin:".to_owned();
        let mut shares = Vec::new();
        for f in used {
            let node = &self.config.nodes[f.node];
            let _ = write!(label, " {} w{}", node.name, f.weight);
            for a in node_addrs(node, v6).iter().take(MAX_ANSWER_ADDRS) {
                let _ = write!(label, " {a}");
            }
            label.push(';');
            #[expect(clippy::cast_precision_loss, reason = "weights are u32")]
            shares.push((f.node, f.weight as f64 / total));
        }
        (label, shares)
    }

    /// Everything the kernel maps hold.
    #[must_use]
    pub fn kernel_maps(&self) -> KernelMaps {
        let pv = |region: u16, len: u8| PrefixValue {
            region,
            prefix_len: len,
            _pad: 0,
        };
        KernelMaps {
            prefixes_v4: self
                .compiled
                .prefixes_v4()
                .map(|(a, l, r)| (a, l, pv(r, l)))
                .collect(),
            prefixes_v6: self
                .compiled
                .prefixes_v6()
                .map(|(a, l, r)| (a, l, pv(r, l)))
                .collect(),
            names: self.kernel_names(),
            answers: self.kernel_answers(),
            aliases: self.compiled.aliases(),
        }
    }

    /// Entry counts of [`Self::kernel_maps`].
    #[must_use]
    pub fn kernel_sizes(&self) -> KernelSizes {
        KernelSizes {
            prefixes_v4: self.compiled.prefixes_v4().len(),
            prefixes_v6: self.compiled.prefixes_v6().len(),
            names: self.kernel_names().len(),
            answers: self.kernel_answers().len(),
        }
    }

    /// The `NAMES` entries. Exact keys: the geo records whose names fit the kernel's
    /// limits. Wildcard keys: every name that exists (the origin, records, empty
    /// non-terminals, static and glue names), holding the record of the geo wildcard
    /// `*.name` or [`KERNEL_BLOCK`]. The kernel tries the exact name, then the wildcard
    /// key of the name and of each ancestor in turn: the first one found is the closest
    /// encloser (RFC 4592) when it is an ancestor, and answers with its wildcard record
    /// unless it is `KERNEL_BLOCK`; found at the name itself, the name exists without a
    /// geo record and the kernel passes.
    #[must_use]
    pub fn kernel_names(&self) -> Vec<(NameKey, NameValue)> {
        let value = |i: usize| NameValue {
            record: u16::try_from(i).unwrap_or(KERNEL_BLOCK),
            _pad: 0,
        };
        let mut out: Vec<(NameKey, NameValue)> = self
            .config
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.wildcard)
            .filter_map(|(i, r)| Some((self.config.kernel_name(r)?, value(i))))
            .collect();
        let mut existing: Vec<&Vec<u8>> = self.existing.iter().collect();
        existing.push(&self.origin);
        existing.sort();
        existing.dedup();
        for e in existing {
            let Some(key) = name::kernel_key(e, true) else {
                continue;
            };
            let under_cut = self
                .config
                .statics
                .cut_at_or_above(e, &self.origin)
                .is_some();
            let record = self
                .wildcard
                .get(e.as_slice())
                .filter(|&&i| {
                    !under_cut && self.config.kernel_name(&self.config.records[i]).is_some()
                })
                .map_or(KERNEL_BLOCK, |&i| value(i).record);
            out.push((key, NameValue { record, _pad: 0 }));
        }
        out
    }

    /// (record, region) answer sets that fail open: every candidate down by health.
    #[must_use]
    pub fn fail_open_sets(&self) -> usize {
        self.sets
            .iter()
            .flatten()
            .flatten()
            .filter(|rs| rs.fail_open)
            .count()
    }

    /// Only the answer sets, sorted by key: what changes when node states change. A
    /// (record, region) whose map offers no up candidate has no entry (the kernel
    /// passes; userspace answers from the fallback).
    #[must_use]
    pub fn kernel_answers(&self) -> Vec<(AnswerKey, AnswerSet)> {
        let regions = u16::try_from(self.compiled.region_count()).unwrap_or(u16::MAX);
        let mut out = Vec::new();
        for (i, rec) in self.config.records.iter().enumerate() {
            let Ok(record) = u16::try_from(i) else { break };
            for region in 0..regions {
                let Some(k) = self.compiled.choice(region, rec.map) else {
                    continue;
                };
                if let Some(rs) = self.sets[i].get(k).copied().flatten() {
                    out.push((AnswerKey { record, region }, rs.set));
                }
            }
        }
        out
    }
}

/// The kernel's name lookup over a `NAMES` table, written out (tests compare it with
/// the engine): the exact key; then the wildcard key of the name and of each ancestor
/// in turn, at most [`geodns_common::MAX_LABELS`] + 1 of them; the first found decides:
/// at the name itself (it exists without a geo record) or holding [`KERNEL_BLOCK`],
/// nothing; else its record. Names over the kernel's limits find nothing.
#[must_use]
pub fn kernel_lookup<S: std::hash::BuildHasher>(
    names: &HashMap<NameKey, u16, S>,
    wire: &[u8],
) -> Option<u16> {
    if let Some(r) = names.get(&name::kernel_key(wire, false)?) {
        return Some(*r);
    }
    let mut cur = Some(wire);
    let mut level = 0;
    while let Some(c) = cur {
        if let Some(&r) = names.get(&name::kernel_key(c, true)?) {
            return (level > 0 && r != KERNEL_BLOCK).then_some(r);
        }
        cur = name::parent(c);
        level += 1;
    }
    None
}

// The server shares one engine between tasks and threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Engine>();
    send_sync::<Compiled>();
};

/// `A`
pub const QTYPE_A: u16 = 1;
/// `NS`
pub const QTYPE_NS: u16 = 2;
/// `SOA`
pub const QTYPE_SOA: u16 = 6;
/// `AAAA`
pub const QTYPE_AAAA: u16 = 28;
