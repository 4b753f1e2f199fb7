//! Interval arithmetic over one address family: overlaying sorted disjoint sources,
//! merging runs and cutting them back into prefixes.
//!
//! Addresses are `u128` (IPv4 in the low 32 bits) with a family `width` of 32 or 128;
//! interval ends are inclusive so the last address of the space needs no overflow.

/// A closed interval `[start, end]` with a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seg {
    pub start: u128,
    pub end: u128,
    pub val: u32,
}

/// "No value" in a source.
pub(crate) const NONE: u32 = u32::MAX;

/// Last address of a family.
pub(crate) fn max_addr(width: u8) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

/// Last address of the prefix `start/len` in a family of `width` bits.
pub(crate) fn prefix_end(start: u128, len: u8, width: u8) -> u128 {
    let host = u32::from(width - len.min(width));
    if host >= 128 {
        u128::MAX
    } else {
        start | ((1u128 << host) - 1)
    }
}

/// Segments labelled with the innermost of possibly nested prefixes.
/// `prefixes` are `(start, len, id)`; prefixes either nest or are disjoint. Duplicates
/// must have been removed.
pub(crate) fn innermost(prefixes: &[(u128, u8, u32)], width: u8) -> Vec<Seg> {
    let mut sorted: Vec<(u128, u128, u32)> = prefixes
        .iter()
        .map(|&(s, l, id)| (s, prefix_end(s, l, width), id))
        .collect();
    // Outer before inner at the same start.
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = Vec::new();
    let mut stack: Vec<(u128, u32)> = Vec::new();
    // Next address not yet emitted; None once past the end of the space.
    let mut pos: Option<u128> = Some(0);
    let emit = |out: &mut Vec<Seg>, from: Option<u128>, to: u128, id: u32| {
        if let Some(from) = from {
            if from <= to {
                out.push(Seg {
                    start: from,
                    end: to,
                    val: id,
                });
            }
        }
    };
    for (start, end, id) in sorted {
        while let Some(&(top_end, top_id)) = stack.last() {
            if top_end >= start {
                break;
            }
            emit(&mut out, pos, top_end, top_id);
            pos = top_end.checked_add(1);
            stack.pop();
        }
        if let Some(&(_, top_id)) = stack.last() {
            if start > 0 {
                emit(&mut out, pos, start - 1, top_id);
            }
        }
        pos = Some(start);
        stack.push((end, id));
    }
    while let Some((top_end, top_id)) = stack.pop() {
        emit(&mut out, pos, top_end, top_id);
        pos = top_end.checked_add(1);
    }
    out
}

/// Overlays `sources` (each sorted and disjoint) over the whole space `[0, max]`: calls
/// `f(start, end, values)` for every maximal piece on which no source changes, in
/// order, gaps included (`values[i] == NONE` where source `i` has nothing).
pub(crate) fn overlay(sources: &[&[Seg]], max: u128, mut f: impl FnMut(u128, u128, &[u32])) {
    let k = sources.len();
    let mut idx = vec![0usize; k];
    let mut vals = vec![NONE; k];
    let mut pos = 0u128;
    loop {
        // The piece starting at `pos` ends before the next change of any source.
        let mut end = max;
        for (i, s) in sources.iter().enumerate() {
            let mut j = idx[i];
            while j < s.len() && s[j].end < pos {
                j += 1;
            }
            idx[i] = j;
            match s.get(j) {
                Some(seg) if seg.start <= pos => {
                    vals[i] = seg.val;
                    end = end.min(seg.end);
                }
                Some(seg) => {
                    vals[i] = NONE;
                    end = end.min(seg.start - 1);
                }
                None => vals[i] = NONE,
            }
        }
        f(pos, end, &vals);
        if end >= max {
            return;
        }
        pos = end + 1;
    }
}

/// Calls `f(start, len)` for the fewest prefixes that exactly cover `[start, end]`, in
/// order: each is the largest aligned block that fits.
pub(crate) fn cover(mut start: u128, end: u128, width: u8, mut f: impl FnMut(u128, u8)) {
    loop {
        let span = end - start; // size - 1
        let size_bits = if span == u128::MAX {
            128
        } else {
            128 - (span + 1).leading_zeros() - 1
        };
        let align_bits = if start == 0 {
            128
        } else {
            start.trailing_zeros()
        };
        let k = size_bits.min(align_bits).min(u32::from(width));
        let len = width - u8::try_from(k).unwrap_or(width);
        f(start, len);
        let last = prefix_end(start, len, width);
        if last >= end {
            return;
        }
        start = last + 1;
    }
}

/// How many prefixes [`cover`] would emit.
pub(crate) fn cover_count(start: u128, end: u128, width: u8) -> u64 {
    let mut n = 0;
    cover(start, end, width, |_, _| n += 1);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: u128, end: u128, val: u32) -> Seg {
        Seg { start, end, val }
    }

    #[test]
    fn cover_is_minimal_and_exact() {
        let mut v = Vec::new();
        cover(0, max_addr(32), 32, |s, l| v.push((s, l)));
        assert_eq!(v, vec![(0, 0)]);
        v.clear();
        cover(1, 6, 32, |s, l| v.push((s, l)));
        assert_eq!(v, vec![(1, 32), (2, 31), (4, 31), (6, 32)]);
        v.clear();
        cover(0, u128::MAX, 128, |s, l| v.push((s, l)));
        assert_eq!(v, vec![(0, 0)]);
        v.clear();
        cover(u128::MAX, u128::MAX, 128, |s, l| v.push((s, l)));
        assert_eq!(v, vec![(u128::MAX, 128)]);
        v.clear();
        cover(1 << 127, u128::MAX, 128, |s, l| v.push((s, l)));
        assert_eq!(v, vec![(1 << 127, 1)]);
        assert_eq!(cover_count(0, 255, 32), 1);
        assert_eq!(cover_count(1, 254, 32), 14);
    }

    #[test]
    fn innermost_nested() {
        // 10/8 containing 10.1/16, and 11/8.
        let p = [
            (10u128 << 24, 8, 1),
            (10u128 << 24 | 1 << 16, 16, 2),
            (11u128 << 24, 8, 3),
        ];
        let segs = innermost(&p, 32);
        assert_eq!(
            segs,
            vec![
                seg(10 << 24, (10 << 24 | 1 << 16) - 1, 1),
                seg(10 << 24 | 1 << 16, (10 << 24 | 2 << 16) - 1, 2),
                seg(10 << 24 | 2 << 16, (11 << 24) - 1, 1),
                seg(11 << 24, (12 << 24) - 1, 3),
            ]
        );
        let all = innermost(&[(0, 0, 7), (5, 32, 8)], 32);
        assert_eq!(
            all,
            vec![seg(0, 4, 7), seg(5, 5, 8), seg(6, max_addr(32), 7)]
        );
        let v6 = innermost(&[(0, 0, 1), (u128::MAX, 128, 2)], 128);
        assert_eq!(
            v6,
            vec![seg(0, u128::MAX - 1, 1), seg(u128::MAX, u128::MAX, 2)]
        );
    }

    #[test]
    fn overlay_fills_gaps() {
        let a = [seg(10, 19, 1), seg(30, 39, 2)];
        let b = [seg(15, 34, 5)];
        let mut out = Vec::new();
        overlay(&[&a, &b], 99, |s, e, v| out.push((s, e, v.to_vec())));
        assert_eq!(
            out,
            vec![
                (0, 9, vec![NONE, NONE]),
                (10, 14, vec![1, NONE]),
                (15, 19, vec![1, 5]),
                (20, 29, vec![NONE, 5]),
                (30, 34, vec![2, 5]),
                (35, 39, vec![2, NONE]),
                (40, 99, vec![NONE, NONE]),
            ]
        );
        let mut n = 0;
        overlay(&[], u128::MAX, |s, e, _| {
            assert_eq!((s, e), (0, u128::MAX));
            n += 1;
        });
        assert_eq!(n, 1);
    }
}
