//! One side of a diff: a compiled table as prefix partitions, records and interned
//! answers, and its consistency check.

use std::{collections::HashMap, path::PathBuf};

use crate::{engine::Engine, NodeState};

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
pub(super) struct Intern {
    ids: HashMap<String, u32>,
    list: Vec<String>,
}

impl Intern {
    pub(super) fn id(&mut self, s: String) -> (u32, bool) {
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
                let mut key = Vec::with_capacity(usize::from(regions));
                let mut fam = [Vec::new(), Vec::new()];
                for region in 0..regions {
                    let label = match compiled.choice(region, rec.map) {
                        Some(k) => compiled
                            .rule(cfg, rec.map, k)
                            .map_or_else(String::new, |r| {
                                if r.key == crate::config::RegionKey::Nearest {
                                    // A ranking: which nodes, in which order.
                                    let order: Vec<&str> =
                                        r.candidates.iter().map(|c| c.node.as_str()).collect();
                                    format!("nearest {}", order.join(">"))
                                } else {
                                    r.key.to_string()
                                }
                            }),
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
    pub(super) fn v4_wide(&self) -> impl Iterator<Item = (u128, u8, u16)> + '_ {
        self.v4.iter().map(|&(s, l, r)| (u128::from(s), l, r))
    }

    /// The IPv6 partition as clients see it: each live alias range replaced by the
    /// IPv4 partition moved into it.
    pub(super) fn v6_expanded(&self) -> impl Iterator<Item = (u128, u8, u16)> + '_ {
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
pub(super) enum Expand<'a> {
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
pub(super) fn check_partition(list: &[(u128, u8, u16)], width: u8) -> Result<(), usize> {
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
pub(super) fn end_of(start: u128, len: u8, width: u8) -> u128 {
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
