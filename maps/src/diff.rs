//! What a change of table does to answers (`geodns diff`): two compiled tables compared
//! by walking both prefix partitions together, not by sampling addresses.
//!
//! A [`Table`] is one side: the partition of each address space into prefixes with a
//! region, and per record and region the key its map picks and what it answers for `A`
//! and `AAAA` (interned). [`diff`] walks the two IPv4 partitions (then the IPv6 ones)
//! in address order: every piece on which neither side changes region is one step, so
//! the walk is linear in the two prefix counts, and each distinct (old region, new
//! region) pair is compared once, however many pieces have it.
//!
//! Space is counted in addresses and shown per /24 (IPv4) and per /48 (IPv6): a piece
//! smaller than that counts for its fraction. An answer is its policy, answer count,
//! addresses and weights (the TTL is not: it moves nobody); the region is the key the
//! record's map picks (`DE`, `continent:EU`, `AS64500`, a CIDR, `default`), compared as
//! text, so two configs with different region ids still compare.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use crate::{cidr::Cidr, engine::Engine, NodeState};

/// The pseudo-node of a NODATA answer, so that gains and losses balance.
pub const NO_ANSWER: &str = "(no answer)";

/// One side of a diff.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Table {
    /// Where it comes from (a config path, or the running daemon).
    pub source: String,
    /// The config file it was compiled from.
    pub config: Option<PathBuf>,
    /// `(first address, length, region)` in address order: a partition of the IPv4
    /// space.
    pub v4: Vec<(u32, u8, u16)>,
    /// The same for IPv6. A live alias range is one entry here; the walk reads the
    /// IPv4 list moved into it instead.
    pub v6: Vec<(u128, u8, u16)>,
    /// `STATE_FLAG_ALIAS_*`: the IPv6 ranges looked up as IPv4.
    #[serde(default)]
    pub aliases: u32,
    /// Node names (indexes of [`TableAnswer::nodes`]).
    pub nodes: Vec<String>,
    /// The node states the answers were computed with.
    pub states: Vec<(String, NodeState)>,
    /// Distinct answers.
    pub answers: Vec<TableAnswer>,
    /// Distinct region keys.
    pub keys: Vec<String>,
    pub records: Vec<TableRecord>,
}

/// An answer of one family.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct TableAnswer {
    /// Identifies the answer: `best 198.18.1.10`, `spread 2 of ...`, `fallback round
    /// robin: ...`, `NODATA`.
    pub label: String,
    /// The nodes it sends clients to (indexes into [`Table::nodes`]) and their shares.
    pub nodes: Vec<(u32, f64)>,
}

/// Per region, what one record does.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct TableRecord {
    /// Presentation name (`www.cdn.example.net.`, `*.img.cdn.example.net.`).
    pub name: String,
    /// Per region: the key its map picks (index into [`Table::keys`]).
    pub key: Vec<u32>,
    /// Per region: the `A` answer (index into [`Table::answers`]).
    pub a: Vec<u32>,
    /// Per region: the `AAAA` answer.
    pub aaaa: Vec<u32>,
}

/// Why a table cannot be compared (a table read from a daemon is checked first).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error(
        "{table}: the {family} prefixes do not partition the address space (at entry {index})"
    )]
    NotPartition {
        table: String,
        family: &'static str,
        index: usize,
    },
    #[error("{table}: record {record} names a region, key, answer or node that the table lacks")]
    Dangling { table: String, record: String },
}

/// Interns strings to dense ids.
#[derive(Default)]
struct Intern {
    ids: HashMap<String, u32>,
    list: Vec<String>,
}

impl Intern {
    fn id(&mut self, s: String) -> (u32, bool) {
        if let Some(i) = self.ids.get(&s) {
            return (*i, false);
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(s.clone());
        self.ids.insert(s, i);
        (i, true)
    }
}

impl Table {
    /// The table `engine` answers with, under its node states.
    #[must_use]
    pub fn from_engine(engine: &Engine, source: &str, config: Option<PathBuf>) -> Self {
        let cfg = engine.config();
        let compiled = engine.compiled();
        let regions = u16::try_from(compiled.region_count()).unwrap_or(u16::MAX);
        let mut keys = Intern::default();
        let mut answer_ids = Intern::default();
        let mut answers = Vec::new();
        let records = cfg
            .records
            .iter()
            .enumerate()
            .map(|(i, rec)| {
                let map = &cfg.maps[rec.map];
                let mut key = Vec::with_capacity(usize::from(regions));
                let mut fam = [Vec::new(), Vec::new()];
                for region in 0..regions {
                    let label = match compiled.choice(region, rec.map) {
                        Some(k) => map.rules[k].key.to_string(),
                        None if region == 0 => "(in no database)".to_owned(),
                        None => "(no key)".to_owned(),
                    };
                    key.push(keys.id(label).0);
                    for (v6, out) in fam.iter_mut().enumerate() {
                        let (label, nodes) = engine.answer_of(i, region, v6 == 1);
                        let (id, new) = answer_ids.id(label.clone());
                        if new {
                            answers.push(TableAnswer {
                                label,
                                nodes: nodes
                                    .into_iter()
                                    .map(|(n, s)| (u32::try_from(n).unwrap_or(u32::MAX), s))
                                    .collect(),
                            });
                        }
                        out.push(id);
                    }
                }
                let [a, aaaa] = fam;
                TableRecord {
                    name: rec.name.clone(),
                    key,
                    a,
                    aaaa,
                }
            })
            .collect();
        Self {
            source: source.to_owned(),
            config,
            v4: compiled
                .prefixes_v4()
                .map(|(a, l, r)| (u32::from_be_bytes(a), l, r))
                .collect(),
            v6: compiled
                .prefixes_v6()
                .map(|(a, l, r)| (u128::from_be_bytes(a), l, r))
                .collect(),
            aliases: compiled.aliases(),
            nodes: cfg.nodes.iter().map(|n| n.name.clone()).collect(),
            states: engine
                .states()
                .iter()
                .map(|(n, s)| (n.to_owned(), s))
                .collect(),
            answers,
            keys: keys.list,
            records,
        }
    }

    /// Checks what [`diff`] relies on: both prefix lists partition their space, and
    /// every index points into the table.
    pub fn check(&self) -> Result<(), TableError> {
        let v4: Vec<(u128, u8, u16)> = self
            .v4
            .iter()
            .map(|&(s, l, r)| (u128::from(s), l, r))
            .collect();
        for (list, width, family) in [(&v4, 32u8, "IPv4"), (&self.v6, 128, "IPv6")] {
            if let Err(index) = check_partition(list, width) {
                return Err(TableError::NotPartition {
                    table: self.source.clone(),
                    family,
                    index,
                });
            }
        }
        for (flag, start, len) in geodns_common::IPV6_ALIASES {
            let whole = self
                .v6
                .binary_search_by(|p| p.0.cmp(&start))
                .is_ok_and(|i| self.v6[i].1 == len);
            if self.aliases & flag != 0 && !whole {
                return Err(TableError::NotPartition {
                    table: self.source.clone(),
                    family: "IPv6 alias",
                    index: self.v6.len(),
                });
            }
        }
        let max_region = self
            .v4
            .iter()
            .map(|p| p.2)
            .chain(self.v6.iter().map(|p| p.2))
            .max()
            .unwrap_or(0);
        let ok_answer = |a: &u32| {
            self.answers.get(*a as usize).is_some_and(|ans| {
                ans.nodes
                    .iter()
                    .all(|(n, s)| (*n as usize) < self.nodes.len() && s.is_finite())
            })
        };
        for r in &self.records {
            let n = usize::from(max_region) + 1;
            if r.key.len() < n
                || r.a.len() < n
                || r.aaaa.len() < n
                || !r.key.iter().all(|k| (*k as usize) < self.keys.len())
                || !r.a.iter().all(ok_answer)
                || !r.aaaa.iter().all(ok_answer)
            {
                return Err(TableError::Dangling {
                    table: self.source.clone(),
                    record: r.name.clone(),
                });
            }
        }
        Ok(())
    }
}

impl Table {
    fn v4_wide(&self) -> impl Iterator<Item = (u128, u8, u16)> + '_ {
        self.v4.iter().map(|&(s, l, r)| (u128::from(s), l, r))
    }

    /// The IPv6 partition as clients see it: each live alias range replaced by the
    /// IPv4 partition moved into it.
    fn v6_expanded(&self) -> impl Iterator<Item = (u128, u8, u16)> + '_ {
        self.v6.iter().flat_map(move |&(s, l, r)| {
            let alias = geodns_common::IPV6_ALIASES
                .iter()
                .find(|(flag, start, len)| self.aliases & flag != 0 && *start == s && *len == l);
            match alias {
                Some(&(_, start, offset)) => Expand::V4(self.v4.iter(), start, offset),
                None => Expand::One(Some((s, l, r))),
            }
        })
    }
}

/// One IPv6 entry, or the IPv4 list moved into an alias range.
enum Expand<'a> {
    One(Option<(u128, u8, u16)>),
    V4(std::slice::Iter<'a, (u32, u8, u16)>, u128, u8),
}

impl Iterator for Expand<'_> {
    type Item = (u128, u8, u16);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::One(o) => o.take(),
            Self::V4(it, start, offset) => it
                .next()
                .map(|&(s, l, r)| (*start | u128::from(s) << (96 - *offset), *offset + l, r)),
        }
    }
}

/// `Err(index)` of the first entry that does not start where the previous one ended,
/// or is not a prefix; also when the list does not reach the end of the space.
fn check_partition(list: &[(u128, u8, u16)], width: u8) -> Result<(), usize> {
    let mut next = Some(0u128);
    for (i, &(start, len, _)) in list.iter().enumerate() {
        if len > width || Some(start) != next || end_of(start, len, width) < start {
            return Err(i);
        }
        next = end_of(start, len, width).checked_add(1);
        if width == 32 && next == Some(1 << 32) {
            next = None;
        }
    }
    if next.is_some() {
        return Err(list.len());
    }
    Ok(())
}

/// Last address of `start/len`; for a prefix with host bits set, something smaller
/// than `start` or unequal to the prefix end (caught by [`check_partition`]).
fn end_of(start: u128, len: u8, width: u8) -> u128 {
    let host = u32::from(width.saturating_sub(len));
    let mask = if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    if start & mask != 0 {
        return start.wrapping_sub(1);
    }
    start | mask
}

/// What a change does to one record, for one query type, in one client address space.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct SpaceDiff {
    /// Addresses whose answer changes (in JSON a decimal string: IPv6 counts exceed
    /// 2^64).
    #[serde(serialize_with = "decimal")]
    pub answer_changed: u128,
    /// Addresses whose region (the key the record's map picks) changes, answer
    /// unchanged.
    #[serde(serialize_with = "decimal")]
    pub region_only: u128,
    /// `answer_changed` as a share of the space (0..1).
    pub answer_share: f64,
    /// `region_only` as a share of the space.
    pub region_share: f64,
    /// `answer_changed` in /24s (IPv4) or /48s (IPv6).
    pub answer_units: f64,
    /// `region_only` in /24s or /48s.
    pub region_units: f64,
    /// Per node: the share of the space it gains and loses; nodes without change
    /// are left out. Sorted by name.
    pub nodes: Vec<NodeDelta>,
    /// From one node to another: the share of the space that moves. Largest first.
    pub flows: Vec<Flow>,
}

#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct NodeDelta {
    pub node: String,
    pub gained: f64,
    pub lost: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct Flow {
    pub from: String,
    pub to: String,
    pub share: f64,
}

fn decimal<S: serde::Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One record's changes.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct RecordDiff {
    pub name: String,
    /// `A` answers, for IPv4 clients and IPv6 clients.
    pub a: [SpaceDiff; 2],
    /// `AAAA` answers.
    pub aaaa: [SpaceDiff; 2],
}

/// A moved prefix: the same pair of regions on both sides, and some answer changes.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct Moved {
    pub prefix: Cidr,
    /// Share of its address space.
    pub share: f64,
    pub changes: Vec<MovedAnswer>,
}

#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct MovedAnswer {
    pub record: String,
    pub qtype: &'static str,
    pub old_region: String,
    pub new_region: String,
    pub old_answer: String,
    pub new_answer: String,
}

/// The result of [`diff`].
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct Diff {
    pub old: String,
    pub new: String,
    /// Records on both sides (by name), in the new side's order.
    pub records: Vec<RecordDiff>,
    /// Records only the old side has (all their answers go away).
    pub only_old: Vec<String>,
    /// Records only the new side has.
    pub only_new: Vec<String>,
    /// The largest moved IPv4 prefixes, largest first.
    pub top_v4: Vec<Moved>,
    /// The largest moved IPv6 prefixes.
    pub top_v6: Vec<Moved>,
    /// Whether any answer changes (or a record comes or goes).
    pub moved: bool,
    /// How long building and comparing the tables took (set by the caller).
    pub seconds: f64,
    /// How long [`diff`] took (the walk and the comparison, without building).
    pub walk_seconds: f64,
}

/// Shared by both walks: the two tables, the records matched by name, and the
/// cross-table identity of answers and keys.
struct Sides<'a> {
    old: &'a Table,
    new: &'a Table,
    /// (old record, new record)
    pairs: Vec<(usize, usize)>,
    /// Old answer id -> the new side's id of the same answer.
    answer_map: Vec<Option<u32>>,
    key_map: Vec<Option<u32>>,
}

impl Sides<'_> {
    fn same_answer(&self, old: u32, new: u32) -> bool {
        self.answer_map.get(old as usize).copied().flatten() == Some(new)
    }

    fn same_key(&self, old: u32, new: u32) -> bool {
        self.key_map.get(old as usize).copied().flatten() == Some(new)
    }

    /// (old answer, new answer, old key, new key) of record pair `p` for a region
    /// pair; `None` if a region is out of range (checked tables never are).
    fn ids(&self, p: (usize, usize), v6q: bool, ro: u16, rn: u16) -> Option<(u32, u32, u32, u32)> {
        let (o, n) = (&self.old.records[p.0], &self.new.records[p.1]);
        let (ao, an) = if v6q {
            (&o.aaaa, &n.aaaa)
        } else {
            (&o.a, &n.a)
        };
        Some((
            *ao.get(usize::from(ro))?,
            *an.get(usize::from(rn))?,
            *o.key.get(usize::from(ro))?,
            *n.key.get(usize::from(rn))?,
        ))
    }

    /// Whether any record's answer differs between region `ro` (old) and `rn` (new).
    fn moves(&self, ro: u16, rn: u16) -> bool {
        self.pairs.iter().any(|&p| {
            [false, true].into_iter().any(|v6q| {
                self.ids(p, v6q, ro, rn)
                    .is_some_and(|(ao, an, _, _)| !self.same_answer(ao, an))
            })
        })
    }
}

fn cross_map(old: &[String], new: &[String]) -> Vec<Option<u32>> {
    let ids: HashMap<&str, u32> = new
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((s.as_str(), u32::try_from(i).ok()?)))
        .collect();
    old.iter().map(|s| ids.get(s.as_str()).copied()).collect()
}

/// One multiply per lookup: the walk looks a region pair up for every piece, and the
/// keys are two small ids, not attacker-chosen.
#[derive(Default)]
struct PairHasher(u64);

impl std::hash::Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, v: u16) {
        self.0 = (self.0.rotate_left(16) ^ u64::from(v)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PairMap<V> = HashMap<(u16, u16), V, std::hash::BuildHasherDefault<PairHasher>>;

/// A moved prefix while the walk collects them: (size, start, length, old region, new
/// region).
type TopEntry = (u128, u128, u8, u16, u16);

/// Amount per (old region, new region), and the largest moved prefixes.
struct Walk {
    amounts: PairMap<u128>,
    top: Vec<(u128, u8, u16, u16)>,
}

/// Walks two partitions of one space together: `f(start, end, old region, new
/// region)` for each piece on which neither changes, in order.
fn walk_pieces(
    mut old: impl Iterator<Item = (u128, u8, u16)>,
    mut new: impl Iterator<Item = (u128, u8, u16)>,
    width: u8,
    mut on_piece: impl FnMut(u128, u128, u16, u16),
) {
    let max = crate::partition::max_addr(width);
    let (mut at_old, mut at_new) = (old.next(), new.next());
    let mut pos = 0u128;
    while let (Some((so, lo, ro)), Some((sn, ln, rn))) = (at_old, at_new) {
        let end_old = crate::partition::prefix_end(so, lo, width);
        let end_new = crate::partition::prefix_end(sn, ln, width);
        let end = end_old.min(end_new);
        on_piece(pos, end, ro, rn);
        if end >= max {
            return;
        }
        pos = end + 1;
        if end_old == end {
            at_old = old.next();
        }
        if end_new == end {
            at_new = new.next();
        }
    }
}

fn walk(
    sides: &Sides<'_>,
    a: impl Iterator<Item = (u128, u8, u16)>,
    b: impl Iterator<Item = (u128, u8, u16)>,
    width: u8,
    top: usize,
) -> Walk {
    let mut amounts: PairMap<u128> = PairMap::default();
    let mut moves: PairMap<bool> = PairMap::default();
    // Min-heap of the `top` largest moved prefixes.
    let mut heap: BinaryHeap<Reverse<TopEntry>> = BinaryHeap::new();
    walk_pieces(a, b, width, |start, end, ro, rn| {
        // The whole IPv6 space in one piece is 2^128 addresses: one short, as a u128.
        let size = (end - start).saturating_add(1);
        let e = amounts.entry((ro, rn)).or_insert(0);
        *e = e.saturating_add(size);
        if top == 0 {
            return;
        }
        if heap.len() == top && heap.peek().is_some_and(|m| m.0 .0 >= size) {
            return;
        }
        if !*moves.entry((ro, rn)).or_insert_with(|| sides.moves(ro, rn)) {
            return;
        }
        crate::partition::cover(start, end, width, |s, l| {
            let size = crate::partition::prefix_end(s, l, width) - s;
            let size = size.saturating_add(1);
            if heap.len() < top {
                heap.push(Reverse((size, s, l, ro, rn)));
            } else if heap.peek().is_some_and(|m| m.0 .0 < size) {
                heap.pop();
                heap.push(Reverse((size, s, l, ro, rn)));
            }
        });
    });
    let mut top: Vec<TopEntry> = heap.into_iter().map(|r| r.0).collect();
    // Largest first; equal sizes in address order.
    top.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    Walk {
        amounts,
        top: top
            .into_iter()
            .map(|(_, s, l, ro, rn)| (s, l, ro, rn))
            .collect(),
    }
}

/// A space's size as f64: 2^32 or 2^128.
fn space(width: u8) -> f64 {
    2f64.powi(i32::from(width))
}

#[expect(clippy::cast_precision_loss, reason = "shares of the address space")]
fn as_f64(x: u128) -> f64 {
    x as f64
}

/// How the clients of one answer move to another: each node's loss is spread over the
/// gaining nodes in proportion to their gains (exact for single-node answers; for
/// weighted answers, where the expected share of each node goes).
fn transport(old: &[(String, f64)], new: &[(String, f64)], mut f: impl FnMut(&str, &str, f64)) {
    let none = [(NO_ANSWER.to_owned(), 1.0)];
    let old = if old.is_empty() { &none[..] } else { old };
    let new = if new.is_empty() { &none[..] } else { new };
    let mut delta: Vec<(&str, f64)> = Vec::new();
    for (n, s) in old {
        delta.push((n, -s));
    }
    for (n, s) in new {
        match delta.iter_mut().find(|(k, _)| k == n) {
            Some(d) => d.1 += s,
            None => delta.push((n, *s)),
        }
    }
    let gain: f64 = delta.iter().filter(|d| d.1 > 0.0).map(|d| d.1).sum();
    if gain <= 1e-12 {
        return;
    }
    for (from, l) in delta.iter().filter(|d| d.1 < 0.0) {
        for (to, g) in delta.iter().filter(|d| d.1 > 0.0) {
            f(from, to, -l * g / gain);
        }
    }
}

fn named(t: &Table, answer: u32) -> Vec<(String, f64)> {
    t.answers
        .get(answer as usize)
        .map(|a| {
            a.nodes
                .iter()
                .map(|(n, s)| (t.nodes.get(*n as usize).cloned().unwrap_or_default(), *s))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares `old` and `new`; `top` is how many of the largest moved prefixes to list
/// per family. Both tables must pass [`Table::check`].
#[must_use]
pub fn diff(old: &Table, new: &Table, top: usize) -> Diff {
    let started = std::time::Instant::now();
    let mut pairs = Vec::new();
    let mut only_new = Vec::new();
    for (j, r) in new.records.iter().enumerate() {
        match old.records.iter().position(|o| o.name == r.name) {
            Some(i) => pairs.push((i, j)),
            None => only_new.push(r.name.clone()),
        }
    }
    let only_old: Vec<String> = old
        .records
        .iter()
        .filter(|o| !new.records.iter().any(|r| r.name == o.name))
        .map(|o| o.name.clone())
        .collect();
    let labels = |t: &Table| {
        t.answers
            .iter()
            .map(|a| a.label.clone())
            .collect::<Vec<_>>()
    };
    let sides = Sides {
        old,
        new,
        pairs,
        answer_map: cross_map(&labels(old), &labels(new)),
        key_map: cross_map(&old.keys, &new.keys),
    };
    let walks = [
        walk(&sides, old.v4_wide(), new.v4_wide(), 32, top),
        walk(&sides, old.v6_expanded(), new.v6_expanded(), 128, top),
    ];
    let mut records = Vec::new();
    let mut moved = !only_old.is_empty() || !only_new.is_empty();
    for &p in &sides.pairs {
        let mut fams: [[SpaceDiff; 2]; 2] = Default::default();
        for (q, fam) in fams.iter_mut().enumerate() {
            for (s, w) in walks.iter().enumerate() {
                let width = if s == 0 { 32 } else { 128 };
                let d = space_diff(&sides, p, q == 1, w, width);
                moved |= d.answer_changed > 0;
                fam[s] = d;
            }
        }
        let [a, aaaa] = fams;
        records.push(RecordDiff {
            name: new.records[p.1].name.clone(),
            a,
            aaaa,
        });
    }
    let [top_v4, top_v6] = [0, 1].map(|s| {
        let width = if s == 0 { 32 } else { 128 };
        walks[s]
            .top
            .iter()
            .map(|&(start, len, ro, rn)| moved_prefix(&sides, start, len, width, ro, rn))
            .collect()
    });
    Diff {
        old: old.source.clone(),
        new: new.source.clone(),
        records,
        only_old,
        only_new,
        top_v4,
        top_v6,
        moved,
        seconds: 0.0,
        walk_seconds: started.elapsed().as_secs_f64(),
    }
}

fn space_diff(sides: &Sides<'_>, p: (usize, usize), v6q: bool, w: &Walk, width: u8) -> SpaceDiff {
    let mut d = SpaceDiff::default();
    let mut flows: HashMap<(String, String), f64> = HashMap::new();
    for (&(ro, rn), &amount) in &w.amounts {
        let Some((ao, an, ko, kn)) = sides.ids(p, v6q, ro, rn) else {
            continue;
        };
        if !sides.same_answer(ao, an) {
            d.answer_changed = d.answer_changed.saturating_add(amount);
            let size = as_f64(amount);
            transport(
                &named(sides.old, ao),
                &named(sides.new, an),
                |from, to, share| {
                    *flows.entry((from.to_owned(), to.to_owned())).or_insert(0.0) += share * size;
                },
            );
        } else if !sides.same_key(ko, kn) {
            d.region_only = d.region_only.saturating_add(amount);
        }
    }
    let total = space(width);
    let unit = space(width - if width == 32 { 24 } else { 48 });
    d.answer_share = as_f64(d.answer_changed) / total;
    d.region_share = as_f64(d.region_only) / total;
    d.answer_units = as_f64(d.answer_changed) / unit;
    d.region_units = as_f64(d.region_only) / unit;
    let mut nodes: HashMap<String, (f64, f64)> = HashMap::new();
    for ((from, to), amount) in &flows {
        nodes.entry(from.clone()).or_default().1 += amount / total;
        nodes.entry(to.clone()).or_default().0 += amount / total;
    }
    let mut nodes: Vec<NodeDelta> = nodes
        .into_iter()
        .map(|(node, (gained, lost))| NodeDelta { node, gained, lost })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let mut flows: Vec<Flow> = flows
        .into_iter()
        .map(|((from, to), amount)| Flow {
            from,
            to,
            share: amount / total,
        })
        .collect();
    flows.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then_with(|| a.from.cmp(&b.from))
            .then_with(|| a.to.cmp(&b.to))
    });
    d.nodes = nodes;
    d.flows = flows;
    d
}

fn moved_prefix(sides: &Sides<'_>, start: u128, len: u8, width: u8, ro: u16, rn: u16) -> Moved {
    let addr = if width == 32 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(start).unwrap_or(0)))
    } else {
        IpAddr::V6(Ipv6Addr::from(start))
    };
    let mut changes = Vec::new();
    for &p in &sides.pairs {
        for (v6q, qtype) in [(false, "A"), (true, "AAAA")] {
            let Some((ao, an, ko, kn)) = sides.ids(p, v6q, ro, rn) else {
                continue;
            };
            if sides.same_answer(ao, an) {
                continue;
            }
            let label = |t: &Table, a: u32| {
                t.answers
                    .get(a as usize)
                    .map(|a| a.label.clone())
                    .unwrap_or_default()
            };
            let key = |t: &Table, k: u32| t.keys.get(k as usize).cloned().unwrap_or_default();
            changes.push(MovedAnswer {
                record: sides.new.records[p.1].name.clone(),
                qtype,
                old_region: key(sides.old, ko),
                new_region: key(sides.new, kn),
                old_answer: label(sides.old, ao),
                new_answer: label(sides.new, an),
            });
        }
    }
    Moved {
        prefix: Cidr::new(addr, len),
        share: 2f64.powi(-i32::from(len)),
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_check_finds_gaps_overlaps_and_host_bits() {
        let full4 = [(0u128, 1u8, 0u16), (1 << 31, 1, 1)];
        assert_eq!(check_partition(&full4, 32), Ok(()));
        assert_eq!(check_partition(&full4[..1], 32), Err(1));
        assert_eq!(check_partition(&[(0, 1, 0), (1 << 30, 2, 0)], 32), Err(1));
        assert_eq!(check_partition(&[(1, 0, 0)], 32), Err(0));
        assert_eq!(check_partition(&[(0, 0, 0)], 128), Ok(()));
        assert_eq!(check_partition(&[(0, 33, 0)], 32), Err(0));
        assert_eq!(check_partition(&[], 128), Err(0));
    }

    #[test]
    fn walk_visits_every_piece_once() {
        let a = [(0u128, 1u8, 1u16), (128, 1, 2)];
        let b = [(0u128, 2u8, 3u16), (64, 2, 4), (128, 2, 5), (192, 2, 6)];
        let mut got = Vec::new();
        walk_pieces(a.into_iter(), b.into_iter(), 8, |s, e, x, y| {
            got.push((s, e, x, y));
        });
        assert_eq!(
            got,
            vec![
                (0, 63, 1, 3),
                (64, 127, 1, 4),
                (128, 191, 2, 5),
                (192, 255, 2, 6)
            ]
        );
    }

    #[test]
    fn transport_spreads_losses_over_gains() {
        let n = |v: &[(&str, f64)]| {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), *b))
                .collect::<Vec<_>>()
        };
        let mut got = Vec::new();
        transport(
            &n(&[("a", 1.0)]),
            &n(&[("b", 0.5), ("c", 0.5)]),
            |f, t, s| {
                got.push((f.to_owned(), t.to_owned(), s));
            },
        );
        assert_eq!(
            got,
            vec![("a".into(), "b".into(), 0.5), ("a".into(), "c".into(), 0.5)]
        );
        got.clear();
        transport(&n(&[("a", 1.0)]), &[], |f, t, s| {
            got.push((f.to_owned(), t.to_owned(), s));
        });
        assert_eq!(got, vec![("a".into(), NO_ANSWER.into(), 1.0)]);
        got.clear();
        transport(&n(&[("a", 1.0)]), &n(&[("a", 1.0)]), |f, t, s| {
            got.push((f.to_owned(), t.to_owned(), s));
        });
        assert!(got.is_empty());
    }
}
