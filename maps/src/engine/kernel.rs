//! The kernel image of an engine: what each BPF map of a generation holds.
use super::{
    name, AnswerKey, AnswerSet, Engine, HashMap, KernelMaps, KernelSizes, NameKey, NameValue,
    PrefixValue, KERNEL_BLOCK,
};

impl Engine {
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
            static_nodes: Vec::new(),
            static_answers: Vec::new(),
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
            node: 0,
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
            out.push((
                key,
                NameValue {
                    record,
                    _pad: 0,
                    node: 0,
                },
            ));
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
