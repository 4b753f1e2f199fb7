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
    time::Instant,
};

pub use crate::report::{CompileError, Progress, ProgressStage};
use crate::{
    cidr::Cidr,
    config::{Config, RegionKey, Rule},
    geo::{code_text, letter_code, Db, DbData, Facts, Fields},
};

mod aliases;
pub mod nearest;
mod rules;
mod stats;

use aliases::{live_aliases, split_at_aliases};
use rules::{compile_family, BgpSource, Interner, Rules};
pub use stats::{AddressFacts, CompileStats, CompileWarning, FamilyStats, PrefixMatch, Shrink};

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
    nearest: Option<nearest::NearestRule>,
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
    /// The `nearest` rankings met (their ids, to find a region again).
    ranks: nearest::Ranks,
    /// Per map: the rules of its rankings, after its config rules (see
    /// [`Compiled::rule`]).
    ranked: Vec<Vec<Rule>>,
    sources: Vec<Source>,
    /// The BGP origin table (`[bgp]`), kept to explain a decision.
    bgp: Option<Arc<crate::bgp::BgpTable>>,
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
        ..Fields::default()
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
    // Coordinates only when a map ranks by them: each location is a distinct fact,
    // which costs memory and time for nothing otherwise.
    let nearest = config
        .maps
        .iter()
        .any(|m| m.rules.iter().any(|r| r.key == RegionKey::Nearest));
    for p in &g.city {
        let (latitude, longitude) = if nearest {
            (
                Some(Fields::split(&g.latitude_field)),
                Some(Fields::split(&g.longitude_field)),
            )
        } else {
            (None, None)
        };
        if let Some(s) = out.iter_mut().find(|s| same_file(&s.path, p)) {
            s.fields.latitude = latitude;
            s.fields.longitude = longitude;
        } else {
            out.push(Source {
                path: p.clone(),
                fields: Fields {
                    asn: None,
                    latitude,
                    longitude,
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
        let bgp = match &config.bgp {
            Some(b) => {
                progress(Progress {
                    stage: ProgressStage::Reading,
                    path: b.rib.first().cloned(),
                    networks: 0,
                });
                let table = crate::bgp::BgpTable::read(&b.rib)?;
                progress(Progress {
                    stage: ProgressStage::Reading,
                    path: b.rib.last().cloned(),
                    networks: table.stats.prefixes(),
                });
                Some(Arc::new(table))
            }
            None => None,
        };
        progress(Progress {
            stage: ProgressStage::Combining,
            path: None,
            networks: 0,
        });
        let rules = Rules::new(config);
        let (aliases, mut alias_warnings) = live_aliases(&sources, &db_aliases, &rules);
        let mut interner = Interner::new(config);
        let bgp_source = bgp.as_deref().map(|t| BgpSource::new(t, &rules));
        let (v4, v4_stats) = compile_family(32, &data, bgp_source.as_ref(), &rules, &mut interner);
        let (mut v6, mut v6_stats) =
            compile_family(128, &data, bgp_source.as_ref(), &rules, &mut interner);
        drop(bgp_source);
        let unsplit = v6.len();
        split_at_aliases(&mut v6, aliases);
        // The cuts are pieces of their own before merging too.
        v6_stats.prefixes_before += (v6.len() - unsplit) as u64;
        v6_stats.prefixes_after = v6.len() as u64;
        drop(data);
        if interner.too_many || interner.ranks.too_many {
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
            bgp: bgp.as_ref().map(|b| b.stats.clone()),
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
            ranked: interner.ranks.rules(config),
            ranks: interner.ranks,
            sources,
            bgp,
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

    /// The rule of `map` with index `k` (a [`Compiled::choice`]): a config rule, or
    /// past them a ranking of the map's `nearest` key (its candidates nearest first).
    #[must_use]
    pub fn rule<'a>(&'a self, config: &'a Config, map: usize, k: usize) -> Option<&'a Rule> {
        let own = &config.maps.get(map)?.rules;
        own.get(k)
            .or_else(|| self.ranked.get(map)?.get(k.checked_sub(own.len())?))
    }

    /// Every rule of `map`: its config rules, then its rankings (indexes as in
    /// [`Compiled::choice`]).
    pub fn rules<'a>(&'a self, config: &'a Config, map: usize) -> impl Iterator<Item = &'a Rule> {
        config.maps[map]
            .rules
            .iter()
            .chain(self.ranked.get(map).into_iter().flatten())
    }

    /// The `nearest` rankings per map (regions with one of them in a map).
    #[must_use]
    pub fn ranking_count(&self) -> usize {
        self.ranked.iter().map(Vec::len).sum()
    }

    /// The rule index that `map` chooses in `region` (see [`Compiled::rule`]);
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
        if !facts.in_database && facts.bgp.is_none() && facts.cidr.is_none() {
            return Some(0);
        }
        let f = Facts {
            country: facts.country.as_deref().and_then(letter_code),
            continent: facts.continent.as_deref().and_then(letter_code),
            asn: facts.asn,
            loc: facts
                .location
                .and_then(|(lat, lon)| crate::geo::Loc::from_degrees(lat, lon)),
            bgp_asn: facts.bgp.map(|b| b.origin),
        };
        let cidr = facts
            .cidr
            .and_then(|c| self.rules.cidrs.binary_search(&c).ok())
            .and_then(|i| u32::try_from(i).ok());
        let t = self
            .rules
            .tuple(&f, cidr, &mut |map, ranking| self.ranks.find(map, &ranking));
        self.region_ids.get(&t).copied()
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
        out.bgp = self.bgp.as_ref().and_then(|b| b.lookup(ip));
        out.country = facts.country.map(code_text);
        out.continent = facts.continent.map(code_text);
        out.asn = facts.asn;
        out.location = facts.loc.map(crate::geo::Loc::degrees);
        Ok(out)
    }
}

fn describe(f: &Facts, cidr: Option<Cidr>) -> String {
    let s = code_text;
    let mut parts = Vec::new();
    if let Some(c) = cidr {
        parts.push(format!("cidr={c}"));
    }
    if let Some(a) = f.bgp_asn {
        parts.push(format!("BGP origin AS{a}"));
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
