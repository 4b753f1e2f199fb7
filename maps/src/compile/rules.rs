//! The config's map keys indexed for choosing, region interning, and the compile of one
//! address family: overlay, label, merge, cut.

use std::{collections::HashMap, net::IpAddr};

use super::{
    nearest::{NearestRule, Ranks},
    FamilyStats, MapIndex, MAX_DATABASES, NO_RULE,
};
use crate::{
    cidr::Cidr,
    config::{Config, RegionKey},
    geo::{DbData, Facts},
    partition::{self, Seg, NONE},
};

/// The config's map keys, indexed for choosing: CIDR keys with their nesting, and per
/// map the rule of each key.
#[derive(Debug)]
pub(super) struct Rules {
    /// Every distinct CIDR key of the config, sorted; the index is its id.
    pub(super) cidrs: Vec<Cidr>,
    /// The innermost other CIDR key containing each one.
    pub(super) cidr_parent: Vec<Option<u32>>,
    pub(super) maps: Vec<MapIndex>,
    /// `[bgp] as_keys = "bgp-only"`: `AS` keys ignore the ASN database.
    pub(super) bgp_only: bool,
}

impl Rules {
    pub(super) fn new(config: &Config) -> Self {
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
            .enumerate()
            .map(|(map, m)| {
                let mut ix = MapIndex {
                    nearest: NearestRule::of(config, map),
                    ..MapIndex::default()
                };
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
                        // Chosen through its rankings (`ix.nearest`).
                        RegionKey::Nearest => {}
                    }
                }
                ix
            })
            .collect();
        Self {
            cidrs,
            cidr_parent,
            maps,
            bgp_only: config.bgp.as_ref().is_some_and(|b| b.only),
        }
    }

    /// The rule `m` (map number `map`) picks: CIDR > AS (the BGP origin's key, then
    /// the ASN database's unless `bgp_only`) > country > continent > nearest (a
    /// network with a location; `rank` gives its ranking's rule) > default.
    pub(super) fn choose(
        &self,
        map: usize,
        m: &MapIndex,
        facts: &Facts,
        cidr: Option<u32>,
        rank: &mut dyn FnMut(usize, Box<[u16]>) -> u16,
    ) -> u16 {
        let mut c = cidr;
        while let Some(id) = c {
            if let Some(r) = m.cidr.get(&id) {
                return *r;
            }
            c = self.cidr_parent[id as usize];
        }
        let database_asn = if self.bgp_only { None } else { facts.asn };
        if let Some(r) = facts
            .bgp_asn
            .and_then(|a| m.asn.get(&a))
            .or_else(|| database_asn.and_then(|a| m.asn.get(&a)))
            .or_else(|| facts.country.and_then(|c| m.country.get(&c)))
            .or_else(|| facts.continent.and_then(|c| m.continent.get(&c)))
        {
            return *r;
        }
        if let (Some(nearest), Some(loc)) = (&m.nearest, facts.loc) {
            return rank(map, nearest.rank(loc));
        }
        m.default.unwrap_or(NO_RULE)
    }

    /// The rule every map picks; `rank` interns (or finds) a `nearest` ranking.
    pub(super) fn tuple(
        &self,
        facts: &Facts,
        cidr: Option<u32>,
        rank: &mut dyn FnMut(usize, Box<[u16]>) -> u16,
    ) -> Box<[u16]> {
        self.maps
            .iter()
            .enumerate()
            .map(|(i, m)| self.choose(i, m, facts, cidr, rank))
            .collect()
    }

    /// `(start, len, id)` of the CIDR keys of one family.
    pub(super) fn family_cidrs(&self, width: u8) -> Vec<(u128, u8, u32)> {
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
pub(super) struct Interner {
    /// Per region: the rule each map picks. Region 0 ("in no database") is all none.
    pub(super) tuples: Vec<Box<[u16]>>,
    pub(super) ids: HashMap<Box<[u16]>, u16>,
    pub(super) examples: Vec<(Facts, Option<u32>)>,
    pub(super) too_many: bool,
    /// The `nearest` rankings met.
    pub(super) ranks: Ranks,
}

impl Interner {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            tuples: vec![vec![NO_RULE; config.maps.len()].into_boxed_slice()],
            ids: HashMap::new(),
            examples: vec![(Facts::default(), None)],
            too_many: false,
            ranks: Ranks::new(config),
        }
    }

    pub(super) fn region(
        &mut self,
        rules: &Rules,
        in_db: bool,
        facts: &Facts,
        cidr: Option<u32>,
    ) -> u16 {
        if !in_db && cidr.is_none() {
            return 0;
        }
        let ranks = &mut self.ranks;
        let t = rules.tuple(facts, cidr, &mut |map, ranking| ranks.intern(map, ranking));
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

/// The BGP table as a source of the overlay. Origins are interned, so the pieces of one
/// origin share a value; an origin that no map has an `AS` key for decides nothing but
/// "announced" (the region is the same whatever the number), so all such origins share
/// value 0 and the region cache stays small.
pub(super) struct BgpSource<'a> {
    pub(super) table: &'a crate::bgp::BgpTable,
    /// Per value: the origin AS number, `None` for value 0 (origins without a key).
    pub(super) origins: Vec<Option<u32>>,
    ids: HashMap<u32, u32>,
}

impl<'a> BgpSource<'a> {
    pub(super) fn new(table: &'a crate::bgp::BgpTable, rules: &Rules) -> Self {
        let mut origins = vec![None];
        let mut ids = HashMap::new();
        for r in table.v4.iter().chain(&table.v6) {
            if rules.maps.iter().any(|m| m.asn.contains_key(&r.origin)) {
                ids.entry(r.origin).or_insert_with(|| {
                    origins.push(Some(r.origin));
                    u32::try_from(origins.len() - 1).unwrap_or(0)
                });
            }
        }
        Self {
            table,
            origins,
            ids,
        }
    }

    /// Sorted disjoint segments, each labelled with the origin of the longest
    /// announced prefix that holds it (prefixes nest or are disjoint).
    fn segments(&self, width: u8) -> Vec<Seg> {
        let routes = self.table.family(width);
        let prefixes: Vec<(u128, u8, u32)> = routes
            .iter()
            .map(|r| {
                (
                    r.start,
                    r.len,
                    self.ids.get(&r.origin).copied().unwrap_or(0),
                )
            })
            .collect();
        partition::innermost(&prefixes, width)
    }
}

/// Overlays one family's databases and CIDR keys, labels the pieces with regions,
/// merges runs and cuts them into prefixes `(start, len, region)`.
pub(super) fn compile_family(
    width: u8,
    data: &[DbData],
    bgp: Option<&BgpSource>,
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
    let bgp_segs = bgp.map(|b| b.segments(width)).unwrap_or_default();
    let mut all: Vec<&[Seg]> = db_segs.iter().map(Vec::as_slice).collect();
    all.push(&bgp_segs);
    all.push(&cidr_segs);
    let ndb = data.len();
    // The same combination of database records recurs: label it once.
    let mut cache: HashMap<[u32; MAX_DATABASES + 2], u16> = HashMap::new();
    let mut run: Option<(u128, u128, u16)> = None;
    let mut out: Vec<(u128, u8, u16)> = Vec::new();
    let flush = |run: (u128, u128, u16), out: &mut Vec<(u128, u8, u16)>| {
        partition::cover(run.0, run.1, width, |s, l| out.push((s, l, run.2)));
    };
    partition::overlay(&all, partition::max_addr(width), |start, end, vals| {
        stats.prefixes_before += partition::cover_count(start, end, width);
        let mut key = [NONE; MAX_DATABASES + 2];
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
            if let (Some(b), v) = (bgp, vals[ndb]) {
                if v != NONE {
                    in_db = true;
                    facts.bgp_asn = b.origins[v as usize];
                }
            }
            let cidr = Some(vals[ndb + 1]).filter(|v| *v != NONE);
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
