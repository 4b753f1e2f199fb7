//! Config + `GeoIP` databases -> regions and merged prefix lists.
//!
//! 1. Read every network of every database (IPv4 from the IPv4 tree only), decoding only
//!    the configured fields, once per data record.
//! 2. Overlay the databases and the config's CIDR keys into pieces on which nothing
//!    changes; address space in no database is a piece too.
//! 3. Give each piece a region: the tuple of the rule every map picks for it (see the
//!    crate docs for the precedence), interned to a dense id. Region 0 is "in no
//!    database and no config CIDR". Region ids do not depend on records or node states.
//! 4. Merge runs of adjacent pieces with the same region and cut each run into the
//!    fewest prefixes that cover it exactly.
//!
//! The result is a *partition*: the prefixes never overlap, so the one that matches an
//! address is the largest aligned block around it with a single answer, and its length
//! is an exact ECS scope. (Nested prefixes could be fewer, but the outer one's length
//! would claim a scope that its inner exceptions contradict.) Runs and maximal aligned
//! blocks make it the smallest partition with the same region for every address.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use crate::report::{CompileError, Progress, ProgressStage};
use crate::{
    cidr::Cidr,
    config::{Config, RegionKey},
    geo::{code_text, letter_code, Db, DbData, Facts, Fields},
    partition::{self, Seg, NONE},
};

/// Counts of one address family.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct FamilyStats {
    /// Networks read from the databases (each database counted).
    pub networks: u64,
    /// Prefixes needed without merging: every piece of the overlaid databases and
    /// config CIDRs, gaps included, cut into prefixes.
    pub prefixes_before: u64,
    /// Prefixes after merging: what the kernel map holds.
    pub prefixes_after: u64,
}

/// What [`Compiled::build`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct CompileStats {
    pub v4: FamilyStats,
    pub v6: FamilyStats,
    /// Regions, region 0 included.
    pub regions: usize,
    /// Database files read.
    pub databases: Vec<PathBuf>,
    pub elapsed: Duration,
}

/// A table that lost too much against the one it would replace: what shrank, from
/// what to what.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} would drop from {old} to {new}")]
pub struct Shrink {
    pub what: &'static str,
    pub old: u64,
    pub new: u64,
}

impl CompileStats {
    /// `Some` when `self` has lost more than `max_drop` (a share, 0 to 1) of the
    /// database networks or of the regions of `old`: an empty or truncated database
    /// that still parses.
    #[must_use]
    pub fn shrink_from(&self, old: &Self, max_drop: f64) -> Option<Shrink> {
        let networks = |s: &Self| s.v4.networks + s.v6.networks;
        let regions = |s: &Self| s.regions as u64;
        [
            ("database networks", networks(old), networks(self)),
            ("regions", regions(old), regions(self)),
        ]
        .into_iter()
        .find(|&(_, o, n)| {
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let lost = o.saturating_sub(n) as f64 / o.max(1) as f64;
            lost > max_drop
        })
        .map(|(what, old, new)| Shrink { what, old, new })
    }
}

/// Something legal but probably unintended in the compiled result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileWarning {
    #[error(
        "{count} region(s) get no candidate from any record's map (their clients get the fallback), e.g. {examples}"
    )]
    UncoveredRegions { count: usize, examples: String },
    #[error("{range} is not looked up as IPv4 (clients there get the IPv6 table): {reason}")]
    AliasOff { range: Cidr, reason: String },
}

/// The prefix that matches an address, and its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixMatch {
    pub prefix: Cidr,
    pub region: u16,
}

/// What the databases and the config's CIDR keys say about one address.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct AddressFacts {
    /// Some database has a network with data for it.
    pub in_database: bool,
    pub country: Option<String>,
    pub continent: Option<String>,
    pub asn: Option<u32>,
    /// The innermost config CIDR key (of any map) containing it.
    pub cidr: Option<Cidr>,
    /// Each database that has it, with the network that matched.
    pub networks: Vec<(PathBuf, Cidr)>,
}

/// "No rule" in a region's choices.
pub(crate) const NO_RULE: u16 = u16::MAX;

const MAX_DATABASES: usize = 8;

/// Per map: rule index by key kind.
#[derive(Debug, Default)]
struct MapIndex {
    cidr: HashMap<u32, u16>,
    asn: HashMap<u32, u16>,
    country: HashMap<[u8; 2], u16>,
    continent: HashMap<[u8; 2], u16>,
    default: Option<u16>,
}

/// One database file and the fields read from it.
#[derive(Clone, Debug)]
struct Source {
    path: PathBuf,
    fields: Fields,
}

#[derive(Clone, Copy, Debug)]
struct P4 {
    start: u32,
    len: u8,
    region: u16,
}

#[derive(Clone, Copy, Debug)]
struct P6 {
    start: u128,
    len: u8,
    region: u16,
}

/// The compiled geo-map: dense regions and a partition of both address spaces into
/// prefixes, each labelled with a region.
pub struct Compiled {
    v4: Vec<P4>,
    v6: Vec<P6>,
    /// Per region: the rule each map picks (`NO_RULE`: none). Region 0: all none.
    regions: Vec<Box<[u16]>>,
    region_ids: HashMap<Box<[u16]>, u16>,
    /// Per region: the facts of the first piece that produced it (for warnings).
    examples: Vec<(Facts, Option<u32>)>,
    rules: Rules,
    sources: Vec<Source>,
    /// Databases opened again, lazily, to explain a decision.
    explain_dbs: Mutex<Option<Arc<Vec<Db>>>>,
    stats: CompileStats,
    warnings: Vec<CompileWarning>,
    /// `STATE_FLAG_ALIAS_*` of the IPv6 ranges looked up as their embedded IPv4
    /// address (see [`Compiled::lookup`]).
    aliases: u32,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("stats", &self.stats)
            .field("prefixes_v4", &self.v4.len())
            .field("prefixes_v6", &self.v6.len())
            .finish_non_exhaustive()
    }
}

fn sources(config: &Config) -> Vec<Source> {
    let Some(g) = &config.geoip else {
        return Vec::new();
    };
    let country = Fields {
        country: Some(Fields::split(&g.country_field)),
        continent: g.continent_field.as_deref().map(Fields::split),
        asn: None,
    };
    let mut out: Vec<Source> = g
        .country
        .iter()
        .map(|p| Source {
            path: p.clone(),
            fields: country.clone(),
        })
        .collect();
    for p in &g.asn {
        if let Some(s) = out.iter_mut().find(|s| same_file(&s.path, p)) {
            s.fields.asn = Some(Fields::split(&g.asn_field));
        } else {
            out.push(Source {
                path: p.clone(),
                fields: Fields {
                    asn: Some(Fields::split(&g.asn_field)),
                    ..Fields::default()
                },
            });
        }
    }
    for p in &g.city {
        if !out.iter().any(|s| same_file(&s.path, p)) {
            out.push(Source {
                path: p.clone(),
                fields: Fields {
                    asn: None,
                    ..country.clone()
                },
            });
        }
    }
    out
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The config's map keys, indexed for choosing: CIDR keys with their nesting, and per
/// map the rule of each key.
#[derive(Debug)]
struct Rules {
    /// Every distinct CIDR key of the config, sorted; the index is its id.
    cidrs: Vec<Cidr>,
    /// The innermost other CIDR key containing each one.
    cidr_parent: Vec<Option<u32>>,
    maps: Vec<MapIndex>,
}

impl Rules {
    fn new(config: &Config) -> Self {
        let mut cidrs: Vec<Cidr> = config
            .maps
            .iter()
            .flat_map(|m| m.rules.iter())
            .filter_map(|r| match r.key {
                RegionKey::Cidr(c) => Some(c),
                _ => None,
            })
            .collect();
        cidrs.sort();
        cidrs.dedup();
        // Config CIDR keys are few: quadratic is fine.
        let cidr_parent = cidrs
            .iter()
            .map(|c| {
                cidrs
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.len() < c.len() && o.contains(c.addr()))
                    .max_by_key(|(_, o)| o.len())
                    .and_then(|(i, _)| u32::try_from(i).ok())
            })
            .collect();
        let id = |c: &Cidr| {
            cidrs
                .binary_search(c)
                .ok()
                .and_then(|i| u32::try_from(i).ok())
        };
        let maps = config
            .maps
            .iter()
            .map(|m| {
                let mut ix = MapIndex::default();
                for (i, r) in m.rules.iter().enumerate() {
                    let i = u16::try_from(i).unwrap_or(NO_RULE);
                    match r.key {
                        RegionKey::Cidr(c) => {
                            if let Some(c) = id(&c) {
                                ix.cidr.insert(c, i);
                            }
                        }
                        RegionKey::Asn(a) => {
                            ix.asn.insert(a, i);
                        }
                        RegionKey::Country(c) => {
                            ix.country.insert(c, i);
                        }
                        RegionKey::Continent(c) => {
                            ix.continent.insert(c, i);
                        }
                        RegionKey::Default => ix.default = Some(i),
                    }
                }
                ix
            })
            .collect();
        Self {
            cidrs,
            cidr_parent,
            maps,
        }
    }

    /// The rule `m` picks: CIDR > ASN > country > continent > default.
    fn choose(&self, m: &MapIndex, facts: &Facts, cidr: Option<u32>) -> u16 {
        let mut c = cidr;
        while let Some(id) = c {
            if let Some(r) = m.cidr.get(&id) {
                return *r;
            }
            c = self.cidr_parent[id as usize];
        }
        facts
            .asn
            .and_then(|a| m.asn.get(&a))
            .or_else(|| facts.country.and_then(|c| m.country.get(&c)))
            .or_else(|| facts.continent.and_then(|c| m.continent.get(&c)))
            .copied()
            .or(m.default)
            .unwrap_or(NO_RULE)
    }

    /// The rule every map picks.
    fn tuple(&self, facts: &Facts, cidr: Option<u32>) -> Box<[u16]> {
        self.maps
            .iter()
            .map(|m| self.choose(m, facts, cidr))
            .collect()
    }

    /// `(start, len, id)` of the CIDR keys of one family.
    fn family_cidrs(&self, width: u8) -> Vec<(u128, u8, u32)> {
        self.cidrs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_ipv4() == (width == 32))
            .map(|(i, c)| {
                let bits = match c.addr() {
                    IpAddr::V4(a) => u128::from(u32::from(a)),
                    IpAddr::V6(a) => u128::from(a),
                };
                (bits, c.len(), u32::try_from(i).unwrap_or(u32::MAX))
            })
            .collect()
    }
}

/// Interns region tuples while pieces are labelled.
struct Interner {
    /// Per region: the rule each map picks. Region 0 ("in no database") is all none.
    tuples: Vec<Box<[u16]>>,
    ids: HashMap<Box<[u16]>, u16>,
    examples: Vec<(Facts, Option<u32>)>,
    too_many: bool,
}

impl Interner {
    fn new(maps: usize) -> Self {
        Self {
            tuples: vec![vec![NO_RULE; maps].into_boxed_slice()],
            ids: HashMap::new(),
            examples: vec![(Facts::default(), None)],
            too_many: false,
        }
    }

    fn region(&mut self, rules: &Rules, in_db: bool, facts: &Facts, cidr: Option<u32>) -> u16 {
        if !in_db && cidr.is_none() {
            return 0;
        }
        let t = rules.tuple(facts, cidr);
        if let Some(id) = self.ids.get(&t) {
            return *id;
        }
        match u16::try_from(self.tuples.len()) {
            Ok(id) if id < u16::MAX => {
                self.tuples.push(t.clone());
                self.examples.push((*facts, cidr));
                self.ids.insert(t, id);
                id
            }
            _ => {
                self.too_many = true;
                0
            }
        }
    }
}

/// Overlays one family's databases and CIDR keys, labels the pieces with regions,
/// merges runs and cuts them into prefixes `(start, len, region)`.
fn compile_family(
    width: u8,
    data: &[DbData],
    rules: &Rules,
    interner: &mut Interner,
) -> (Vec<(u128, u8, u16)>, FamilyStats) {
    fn nets(d: &DbData, width: u8) -> &[crate::geo::Net] {
        if width == 32 {
            &d.v4
        } else {
            &d.v6
        }
    }
    let mut stats = FamilyStats {
        networks: data.iter().map(|d| nets(d, width).len() as u64).sum(),
        ..FamilyStats::default()
    };
    let db_segs: Vec<Vec<Seg>> = data
        .iter()
        .map(|d| {
            nets(d, width)
                .iter()
                .map(|n| Seg {
                    start: n.start,
                    end: partition::prefix_end(n.start, n.len, width),
                    val: n.facts,
                })
                .collect()
        })
        .collect();
    let cidr_segs = partition::innermost(&rules.family_cidrs(width), width);
    let mut all: Vec<&[Seg]> = db_segs.iter().map(Vec::as_slice).collect();
    all.push(&cidr_segs);
    let ndb = data.len();
    // The same combination of database records recurs: label it once.
    let mut cache: HashMap<[u32; MAX_DATABASES + 1], u16> = HashMap::new();
    let mut run: Option<(u128, u128, u16)> = None;
    let mut out: Vec<(u128, u8, u16)> = Vec::new();
    let flush = |run: (u128, u128, u16), out: &mut Vec<(u128, u8, u16)>| {
        partition::cover(run.0, run.1, width, |s, l| out.push((s, l, run.2)));
    };
    partition::overlay(&all, partition::max_addr(width), |start, end, vals| {
        stats.prefixes_before += partition::cover_count(start, end, width);
        let mut key = [NONE; MAX_DATABASES + 1];
        key[..vals.len()].copy_from_slice(vals);
        let region = *cache.entry(key).or_insert_with(|| {
            let mut facts = Facts::default();
            let mut in_db = false;
            for (d, v) in data.iter().zip(&vals[..ndb]) {
                if *v != NONE {
                    in_db = true;
                    facts = facts.or(d.facts[*v as usize]);
                }
            }
            let cidr = Some(vals[ndb]).filter(|v| *v != NONE);
            interner.region(rules, in_db, &facts, cidr)
        });
        match &mut run {
            Some(r) if r.2 == region => r.1 = end,
            _ => {
                if let Some(r) = run.take() {
                    flush(r, &mut out);
                }
                run = Some((start, end, region));
            }
        }
    });
    if let Some(r) = run.take() {
        flush(r, &mut out);
    }
    stats.prefixes_after = out.len() as u64;
    (out, stats)
}

impl Compiled {
    /// Reads the databases named by `config` and builds the prefix lists.
    pub fn build(
        config: &Config,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Self, CompileError> {
        let started = Instant::now();
        let sources = sources(config);
        if sources.len() > MAX_DATABASES {
            return Err(CompileError::TooManyDatabases {
                count: sources.len(),
                max: MAX_DATABASES,
            });
        }
        let mut data: Vec<DbData> = Vec::with_capacity(sources.len());
        let mut db_aliases = Vec::with_capacity(sources.len());
        for s in &sources {
            let db = Db::open(&s.path)?;
            db_aliases.push(db.aliases);
            data.push(db.read(&s.fields, progress)?);
        }
        progress(Progress {
            stage: ProgressStage::Combining,
            path: None,
            networks: 0,
        });
        let rules = Rules::new(config);
        let (aliases, mut alias_warnings) = live_aliases(&sources, &db_aliases, &rules);
        let mut interner = Interner::new(config.maps.len());
        let (v4, v4_stats) = compile_family(32, &data, &rules, &mut interner);
        let (mut v6, mut v6_stats) = compile_family(128, &data, &rules, &mut interner);
        let unsplit = v6.len();
        split_at_aliases(&mut v6, aliases);
        // The cuts are pieces of their own before merging too.
        v6_stats.prefixes_before += (v6.len() - unsplit) as u64;
        v6_stats.prefixes_after = v6.len() as u64;
        drop(data);
        if interner.too_many {
            return Err(CompileError::TooManyRegions {
                regions: interner.tuples.len() + 1,
                max: usize::from(u16::MAX),
            });
        }
        let stats = CompileStats {
            v4: v4_stats,
            v6: v6_stats,
            regions: interner.tuples.len(),
            databases: sources.iter().map(|s| s.path.clone()).collect(),
            elapsed: started.elapsed(),
        };
        let mut this = Self {
            v4: v4
                .into_iter()
                .map(|(s, len, region)| P4 {
                    start: u32::try_from(s).unwrap_or(0),
                    len,
                    region,
                })
                .collect(),
            v6: v6
                .into_iter()
                .map(|(start, len, region)| P6 { start, len, region })
                .collect(),
            regions: interner.tuples,
            region_ids: interner.ids,
            examples: interner.examples,
            rules,
            sources,
            explain_dbs: Mutex::new(None),
            stats,
            warnings: Vec::new(),
            aliases,
        };
        this.warnings = this.find_warnings(config);
        this.warnings.append(&mut alias_warnings);
        Ok(this)
    }

    fn find_warnings(&self, config: &Config) -> Vec<CompileWarning> {
        let uncovered: Vec<usize> = (1..self.regions.len())
            .filter(|&r| {
                config
                    .records
                    .iter()
                    .all(|rec| self.regions[r][rec.map] == NO_RULE)
            })
            .collect();
        if uncovered.is_empty() || config.records.is_empty() {
            return Vec::new();
        }
        let examples: Vec<String> = uncovered
            .iter()
            .take(5)
            .map(|&r| {
                let (f, cidr) = &self.examples[r];
                describe(f, cidr.map(|c| self.rules.cidrs[c as usize]))
            })
            .collect();
        vec![CompileWarning::UncoveredRegions {
            count: uncovered.len(),
            examples: examples.join("; "),
        }]
    }

    #[must_use]
    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    #[must_use]
    pub fn warnings(&self) -> &[CompileWarning] {
        &self.warnings
    }

    /// Number of regions, region 0 included.
    #[must_use]
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// The IPv6 ranges looked up as their embedded IPv4 address
    /// (`geodns_common::STATE_FLAG_ALIAS_*`): those every database aliases onto its
    /// IPv4 tree, unless a config CIDR key overlaps them. The loader sets them in
    /// the kernel's run-time flags with the generation.
    #[must_use]
    pub fn aliases(&self) -> u32 {
        self.aliases
    }

    /// The alias range, the embedded IPv4 address and the alias offset of `ip`, when
    /// it lies in a live alias range.
    #[must_use]
    pub fn alias_of(&self, ip: IpAddr) -> Option<(Cidr, Ipv4Addr, u8)> {
        let IpAddr::V6(a) = ip else { return None };
        let (v4, offset) = geodns_common::ipv6_alias(&a.octets(), self.aliases)?;
        Some((Cidr::new(ip, offset), Ipv4Addr::from(v4), offset))
    }

    /// The longest (and only) prefix containing `ip`, and its region. An IPv6 address
    /// in a live alias range ([`Compiled::aliases`]) is looked up as its embedded IPv4
    /// address: the prefix is the IPv4 match moved into the alias range (length + the
    /// offset: 96, 32 or 16), as exact as the IPv4 one.
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> PrefixMatch {
        if let Some((_, v4, offset)) = self.alias_of(ip) {
            let m = self.lookup(IpAddr::V4(v4));
            return PrefixMatch {
                prefix: Cidr::new(ip, m.prefix.len() + offset),
                region: m.region,
            };
        }
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let i = self.v4.partition_point(|p| p.start <= a).saturating_sub(1);
                let p = self.v4.get(i).copied().unwrap_or(P4 {
                    start: 0,
                    len: 0,
                    region: 0,
                });
                PrefixMatch {
                    prefix: Cidr::new(IpAddr::V4(Ipv4Addr::from(p.start)), p.len),
                    region: p.region,
                }
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let i = self.v6.partition_point(|p| p.start <= a).saturating_sub(1);
                let p = self.v6.get(i).copied().unwrap_or(P6 {
                    start: 0,
                    len: 0,
                    region: 0,
                });
                PrefixMatch {
                    prefix: Cidr::new(IpAddr::V6(Ipv6Addr::from(p.start)), p.len),
                    region: p.region,
                }
            }
        }
    }

    /// The IPv4 prefixes in address order: `(network, length, region)`.
    pub fn prefixes_v4(&self) -> impl ExactSizeIterator<Item = ([u8; 4], u8, u16)> + '_ {
        self.v4
            .iter()
            .map(|p| (p.start.to_be_bytes(), p.len, p.region))
    }

    /// The IPv6 prefixes in address order: `(network, length, region)`.
    pub fn prefixes_v6(&self) -> impl ExactSizeIterator<Item = ([u8; 16], u8, u16)> + '_ {
        self.v6
            .iter()
            .map(|p| (p.start.to_be_bytes(), p.len, p.region))
    }

    /// The rule index (into `config.maps[map].rules`) that `map` chooses in `region`;
    /// `None` when the map has no rule for it (and always for region 0).
    #[must_use]
    pub fn choice(&self, region: u16, map: usize) -> Option<usize> {
        let r = *self.regions.get(usize::from(region))?.get(map)?;
        (r != NO_RULE).then_some(usize::from(r))
    }

    /// The region that `facts` lead to, computed the way [`Compiled::build`] does;
    /// `None` if no compiled piece had these facts (then the databases changed, or
    /// the compile is wrong: tests check this never happens).
    #[must_use]
    pub fn region_of(&self, facts: &AddressFacts) -> Option<u16> {
        if !facts.in_database && facts.cidr.is_none() {
            return Some(0);
        }
        let f = Facts {
            country: facts.country.as_deref().and_then(letter_code),
            continent: facts.continent.as_deref().and_then(letter_code),
            asn: facts.asn,
        };
        let cidr = facts
            .cidr
            .and_then(|c| self.rules.cidrs.binary_search(&c).ok())
            .and_then(|i| u32::try_from(i).ok());
        self.region_ids.get(&self.rules.tuple(&f, cidr)).copied()
    }

    /// What the databases (read again now) and the config's CIDRs say about `ip`. An
    /// address in a live alias range is the embedded IPv4 address here, as in
    /// [`Compiled::lookup`]; one that a database aliases without the alias being live
    /// is in no network of that database, as in the compiled prefixes (and so is
    /// `::/96`, the IPv4 subtree itself).
    pub fn facts(&self, ip: IpAddr) -> Result<AddressFacts, CompileError> {
        let dbs = {
            let mut guard = self
                .explain_dbs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(d) = &*guard {
                d.clone()
            } else {
                let opened = self
                    .sources
                    .iter()
                    .map(|s| Db::open(&s.path))
                    .collect::<Result<Vec<_>, _>>()?;
                let d = Arc::new(opened);
                *guard = Some(d.clone());
                d
            }
        };
        // A live alias: the facts of the embedded IPv4 address.
        let ip = self.alias_of(ip).map_or(ip, |(_, v4, _)| IpAddr::V4(v4));
        let mut out = AddressFacts {
            cidr: self
                .rules
                .cidrs
                .iter()
                .filter(|c| c.contains(ip))
                .max_by_key(|c| c.len())
                .copied(),
            ..AddressFacts::default()
        };
        let mut facts = Facts::default();
        for (db, s) in dbs.iter().zip(&self.sources) {
            if let IpAddr::V6(a) = ip {
                // Aliased by this database but not live (another lacks it): the
                // compiled table has nothing from this database there.
                if geodns_common::ipv6_alias(&a.octets(), db.aliases).is_some() {
                    continue;
                }
            }
            if let Some((f, net_ip, len)) = db.lookup(ip, &s.fields)? {
                // Inside the IPv4 subtree: an IPv4 network, not an IPv6 one.
                if let IpAddr::V6(n) = net_ip {
                    if len > 96 && u128::from(n) >> 32 == 0 {
                        continue;
                    }
                }
                out.in_database = true;
                out.networks.push((s.path.clone(), Cidr::new(net_ip, len)));
                facts = facts.or(f);
            }
        }
        out.country = facts.country.map(code_text);
        out.continent = facts.continent.map(code_text);
        out.asn = facts.asn;
        Ok(out)
    }
}

/// The aliases every database has (an IPv4-only database has none), minus those a
/// config CIDR key overlaps (the CIDR would have to win inside the range, which the
/// kernel's translation cannot express); a warning for each alias some database has
/// but that is not live.
fn live_aliases(
    sources: &[Source],
    db_aliases: &[u32],
    rules: &Rules,
) -> (u32, Vec<CompileWarning>) {
    let all = db_aliases
        .iter()
        .fold(if db_aliases.is_empty() { 0 } else { u32::MAX }, |a, b| {
            a & b
        });
    let any = db_aliases.iter().fold(0, |a, b| a | b);
    let mut live = 0;
    let mut warnings = Vec::new();
    for (flag, start, len) in geodns_common::IPV6_ALIASES {
        let range = Cidr::new(IpAddr::V6(Ipv6Addr::from(start)), len);
        if any & flag == 0 {
            continue;
        }
        if all & flag == 0 {
            let lacking: Vec<String> = sources
                .iter()
                .zip(db_aliases)
                .filter(|(_, a)| **a & flag == 0)
                .map(|(s, _)| s.path.display().to_string())
                .collect();
            warnings.push(CompileWarning::AliasOff {
                range,
                reason: format!("{} does not alias it to its IPv4 tree", lacking.join(", ")),
            });
            continue;
        }
        let overlap = rules
            .cidrs
            .iter()
            .find(|c| !c.is_ipv4() && (c.contains(range.addr()) || range.contains(c.addr())));
        if let Some(c) = overlap {
            warnings.push(CompileWarning::AliasOff {
                range,
                reason: format!("the config CIDR key {c} overlaps it"),
            });
            continue;
        }
        live |= flag;
    }
    (live, warnings)
}

/// Cuts the prefix that holds each live alias range so the range is a prefix of its
/// own: a prefix around it would claim an ECS scope over addresses that are looked up
/// as IPv4.
fn split_at_aliases(v6: &mut Vec<(u128, u8, u16)>, aliases: u32) {
    for (flag, start, len) in geodns_common::IPV6_ALIASES {
        if aliases & flag == 0 {
            continue;
        }
        let end = partition::prefix_end(start, len, 128);
        let i = v6.partition_point(|p| p.0 <= start).saturating_sub(1);
        let Some(&(s, l, region)) = v6.get(i) else {
            continue;
        };
        let e = partition::prefix_end(s, l, 128);
        if s == start && l == len || !(s <= start && end <= e) {
            continue;
        }
        let mut pieces = Vec::new();
        if s < start {
            partition::cover(s, start - 1, 128, |a, b| pieces.push((a, b, region)));
        }
        pieces.push((start, len, region));
        if end < e {
            partition::cover(end + 1, e, 128, |a, b| pieces.push((a, b, region)));
        }
        v6.splice(i..=i, pieces);
    }
}

fn describe(f: &Facts, cidr: Option<Cidr>) -> String {
    let s = code_text;
    let mut parts = Vec::new();
    if let Some(c) = cidr {
        parts.push(format!("cidr={c}"));
    }
    if let Some(a) = f.asn {
        parts.push(format!("AS{a}"));
    }
    if let Some(c) = f.country {
        parts.push(format!("country={}", s(c)));
    }
    if let Some(c) = f.continent {
        parts.push(format!("continent={}", s(c)));
    }
    if parts.is_empty() {
        "no country, continent or ASN".to_owned()
    } else {
        parts.join(" ")
    }
}
