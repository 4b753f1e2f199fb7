//! The walk over both prefix partitions and the comparison of (old, new) region pairs.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
};

use super::{Table, NO_ANSWER};

/// Shared by both walks: the two tables, the records matched by name, and the
/// cross-table identity of answers and keys.
pub(super) struct Sides<'a> {
    pub(super) old: &'a Table,
    pub(super) new: &'a Table,
    /// (old record, new record)
    pub(super) pairs: Vec<(usize, usize)>,
    /// Old answer id -> the new side's id of the same answer.
    pub(super) answer_map: Vec<Option<u32>>,
    pub(super) key_map: Vec<Option<u32>>,
}

impl Sides<'_> {
    pub(super) fn same_answer(&self, old: u32, new: u32) -> bool {
        self.answer_map.get(old as usize).copied().flatten() == Some(new)
    }

    pub(super) fn same_key(&self, old: u32, new: u32) -> bool {
        self.key_map.get(old as usize).copied().flatten() == Some(new)
    }

    /// (old answer, new answer, old key, new key) of record pair `p` for a region
    /// pair; `None` if a region is out of range (checked tables never are).
    pub(super) fn ids(
        &self,
        p: (usize, usize),
        v6q: bool,
        ro: u16,
        rn: u16,
    ) -> Option<(u32, u32, u32, u32)> {
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
    pub(super) fn moves(&self, ro: u16, rn: u16) -> bool {
        self.pairs.iter().any(|&p| {
            [false, true].into_iter().any(|v6q| {
                self.ids(p, v6q, ro, rn)
                    .is_some_and(|(ao, an, _, _)| !self.same_answer(ao, an))
            })
        })
    }
}

pub(super) fn cross_map(old: &[String], new: &[String]) -> Vec<Option<u32>> {
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
pub(super) struct PairHasher(u64);

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

pub(super) type PairMap<V> = HashMap<(u16, u16), V, std::hash::BuildHasherDefault<PairHasher>>;

/// A moved prefix while the walk collects them: (size, start, length, old region, new
/// region).
pub(super) type TopEntry = (u128, u128, u8, u16, u16);

/// Amount per (old region, new region), and the largest moved prefixes.
pub(super) struct Walk {
    pub(super) amounts: PairMap<u128>,
    pub(super) top: Vec<(u128, u8, u16, u16)>,
}

/// Walks two partitions of one space together: `f(start, end, old region, new
/// region)` for each piece on which neither changes, in order.
pub(super) fn walk_pieces(
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

pub(super) fn walk(
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
pub(super) fn space(width: u8) -> f64 {
    2f64.powi(i32::from(width))
}

#[expect(clippy::cast_precision_loss, reason = "shares of the address space")]
pub(super) fn as_f64(x: u128) -> f64 {
    x as f64
}

/// How the clients of one answer move to another: each node's loss is spread over the
/// gaining nodes in proportion to their gains (exact for single-node answers; for
/// weighted answers, where the expected share of each node goes).
pub(super) fn transport(
    old: &[(String, f64)],
    new: &[(String, f64)],
    mut f: impl FnMut(&str, &str, f64),
) {
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

pub(super) fn named(t: &Table, answer: u32) -> Vec<(String, f64)> {
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
