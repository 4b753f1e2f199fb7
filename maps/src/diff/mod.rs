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
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::cidr::Cidr;

mod pieces;
mod table;
#[cfg(test)]
mod tests;

use pieces::{as_f64, cross_map, named, space, transport, walk, Sides, Walk};
pub use table::{Table, TableAnswer, TableError, TableRecord};

/// The pseudo-node of a NODATA answer, so that gains and losses balance.
pub const NO_ANSWER: &str = "(no answer)";

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
