//! Installing a kernel image: the idle generation written, then one flip; answer-set
//! updates in place for node-state changes.

use std::{collections::HashMap as StdHashMap, hash::Hash};

use aya::{
    maps::{lpm_trie::Key, LpmTrie, Map, MapData, PerCpuHashMap},
    Pod,
};
use geodns_common::{
    AnswerKey, AnswerSet, PrefixValue, SHADOW_ALIAS_SHIFT, SHADOW_SAMPLE_MASK, SHADOW_SAMPLE_SHIFT,
    STATE_FLAG_ALIASES, STATE_FLAG_SHADOW,
};
use geodns_common::{StaticAnswer, StaticNode, STATIC_ANSWERS, STATIC_NODES};
use geodns_maps::{
    image::{ImageSizes, KernelImage},
    slots, KernelMaps,
};

use super::{
    gen_name,
    mmap::{fill_mmap, Mapping},
    InstallStats, KernelProgram, LoaderError, Mirror,
};

/// Every `STATE` bit of a shadow run: the flag, the sample exponent and the
/// candidate's aliases.
const SHADOW_BITS: u32 = STATE_FLAG_SHADOW
    | SHADOW_SAMPLE_MASK << SHADOW_SAMPLE_SHIFT
    | STATE_FLAG_ALIASES << SHADOW_ALIAS_SHIFT;

impl KernelProgram {
    /// Writes `contents` into the idle generation and switches the kernel to it with one
    /// update. On error the kernel keeps reading the old generation, untouched.
    pub fn install(&mut self, contents: &KernelMaps) -> Result<InstallStats, LoaderError> {
        self.check_sizes(contents)?;
        // Before the first install both generations are empty: fill generation 0 and
        // "switch" to it, so the kernel never reads an empty generation after an install.
        let target = if self.installed_once {
            1 - self.state.generation
        } else {
            self.state.generation
        };
        let stats = self.write_idle(target, contents)?;
        self.switch_to(target, contents.aliases)?;
        self.installed_once = true;
        Ok(stats)
    }

    /// A shadow run's first half: writes `contents` (the candidate) into the idle
    /// generation without switching to it, and sets the shadow flag with the sample
    /// (one answered query in `2^sample_exp`). The kernel keeps answering from the
    /// generation in use. [`KernelProgram::promote`] switches, [`KernelProgram::end_shadow`]
    /// drops the run.
    pub fn stage_shadow(
        &mut self,
        contents: &KernelMaps,
        sample_exp: u8,
    ) -> Result<InstallStats, LoaderError> {
        if !self.installed_once {
            return Err(LoaderError::Shadow("nothing is installed yet"));
        }
        self.check_sizes(contents)?;
        self.end_shadow()?;
        let target = 1 - self.state.generation;
        let stats = self.write_idle(target, contents)?;
        self.clear_shadow_counts()?;
        let mut next = self.state;
        next.flags = next.flags & !SHADOW_BITS
            | STATE_FLAG_SHADOW
            | (u32::from(sample_exp) & SHADOW_SAMPLE_MASK) << SHADOW_SAMPLE_SHIFT
            | (contents.aliases & STATE_FLAG_ALIASES) << SHADOW_ALIAS_SHIFT;
        self.write_state(next)?;
        self.shadow_aliases = Some(contents.aliases);
        Ok(stats)
    }

    /// Ends a shadow run without switching (the counts stay readable until the next
    /// run clears them).
    pub fn end_shadow(&mut self) -> Result<(), LoaderError> {
        if self.state.flags & STATE_FLAG_SHADOW == 0 {
            return Ok(());
        }
        let mut next = self.state;
        next.flags &= !SHADOW_BITS;
        self.write_state(next)?;
        self.shadow_aliases = None;
        Ok(())
    }

    /// Switches to the shadow run's candidate (one update of `STATE`, as an install's
    /// switch) and ends the run.
    pub fn promote(&mut self) -> Result<(), LoaderError> {
        let Some(aliases) = self.shadow_aliases else {
            return Err(LoaderError::Shadow("no shadow run to promote"));
        };
        let target = 1 - self.state.generation;
        let mut next = self.state;
        next.flags &= !SHADOW_BITS;
        next.generation = target;
        next.flags = next.flags & !STATE_FLAG_ALIASES | aliases & STATE_FLAG_ALIASES;
        // One update: the switch and the end of the run together.
        self.write_state(next)?;
        self.shadow_aliases = None;
        Ok(())
    }

    /// The shadow counts: per `shadow_key`, the queries over every CPU.
    pub fn shadow_counts(&self) -> Result<Vec<(u64, u64)>, LoaderError> {
        let map =
            PerCpuHashMap::<_, u64, u64>::try_from(self.map("SHADOW")?).map_err(|source| {
                LoaderError::Map {
                    map: "SHADOW",
                    op: "open",
                    source,
                }
            })?;
        let mut out = Vec::new();
        for entry in &map {
            let (key, values) = entry.map_err(|source| LoaderError::Map {
                map: "SHADOW",
                op: "read",
                source,
            })?;
            out.push((key, values.iter().sum()));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Empties `SHADOW`.
    fn clear_shadow_counts(&mut self) -> Result<(), LoaderError> {
        let mut map =
            PerCpuHashMap::<_, u64, u64>::try_from(self.map_mut("SHADOW")?).map_err(|source| {
                LoaderError::Map {
                    map: "SHADOW",
                    op: "open",
                    source,
                }
            })?;
        let keys: Vec<u64> = map.keys().filter_map(Result::ok).collect();
        for key in keys {
            // A key already gone is what we want.
            let _ = map.remove(&key);
        }
        Ok(())
    }

    /// Fills generation `target` (not in use) with `contents`.
    fn write_idle(
        &mut self,
        target: u32,
        contents: &KernelMaps,
    ) -> Result<InstallStats, LoaderError> {
        let mut stats = InstallStats {
            generation: target,
            ..InstallStats::default()
        };
        let mut mirror = std::mem::take(&mut self.mirrors[target as usize]);
        let result = self.write_generation(target, contents, &mut mirror, &mut stats);
        self.mirrors[target as usize] = mirror;
        result?;
        Ok(stats)
    }

    /// Switches the kernel to generation `target` with its table's aliases.
    fn switch_to(&mut self, target: u32, aliases: u32) -> Result<(), LoaderError> {
        let mut next = self.state;
        next.generation = target;
        // The aliases belong to the table: they switch with it, in the same update.
        next.flags = next.flags & !STATE_FLAG_ALIASES | aliases & STATE_FLAG_ALIASES;
        self.write_state(next)
    }

    fn check_sizes(&self, c: &KernelMaps) -> Result<(), LoaderError> {
        for (map, max, needed) in [
            ("PREFIX_V4", self.sizes.prefixes_v4, c.prefixes_v4.len()),
            ("PREFIX_V6", self.sizes.prefixes_v6, c.prefixes_v6.len()),
            ("NAMES", self.sizes.names, c.names.len()),
            ("ANSWERS", self.sizes.answers, c.answers.len()),
        ] {
            if needed > max as usize {
                return Err(LoaderError::TooBig { map, max, needed });
            }
        }
        Ok(())
    }

    fn write_generation(
        &mut self,
        generation: u32,
        c: &KernelMaps,
        mirror: &mut Mirror,
        stats: &mut InstallStats,
    ) -> Result<(), LoaderError> {
        let v4 = c.prefixes_v4.iter().map(|(a, l, v)| ((*a, *l), *v));
        sync_lpm(
            self.map_mut(gen_name("PREFIX_V4", generation))?,
            gen_name("PREFIX_V4", generation),
            &mut mirror.v4,
            v4,
            stats,
        )?;
        let v6 = c.prefixes_v6.iter().map(|(a, l, v)| ((*a, *l), *v));
        sync_lpm(
            self.map_mut(gen_name("PREFIX_V6", generation))?,
            gen_name("PREFIX_V6", generation),
            &mut mirror.v6,
            v6,
            stats,
        )?;
        // The arrays: computed whole by maps/ (the generation is idle), copied in.
        let image = KernelImage::build(
            c,
            ImageSizes {
                name_slots: table_slots(self.sizes.names) as usize,
                answer_slots: table_slots(self.sizes.answers) as usize,
                set_slots: self.sizes.answer_sets.max(1) as usize + 1,
                fast_words: self.sizes.fast_words as usize,
            },
        )?;
        let name = gen_name("NAMES", generation);
        fill_mmap(self.map(name)?, name, &image.names)?;
        let name = gen_name("ANSWERS", generation);
        fill_mmap(self.map(name)?, name, &image.answers.keys)?;
        let name = gen_name("ANSWER_SETS", generation);
        fill_mmap(self.map(name)?, name, &image.answers.sets)?;
        let started = std::time::Instant::now();
        let name = gen_name("FAST_TOP", generation);
        fill_mmap(self.map(name)?, name, &image.fast_top)?;
        let name = gen_name("FAST_BLOCKS", generation);
        fill_mmap(self.map(name)?, name, &image.fast_pages)?;
        stats.fast_blocks_v4 = image.fast.blocks_v4;
        stats.fast_blocks_v6 = image.fast.blocks_v6;
        stats.fast_words = image.fast.words;
        stats.fast_overflow = image.fast.overflow;
        if stats.fast_overflow > 0 {
            // Still answered right, by the trie, at several times the cost.
            tracing::warn!(
                blocks = stats.fast_overflow,
                words = self.sizes.fast_words,
                "fast path full: the slots of blocks that did not fit ask the LPM trie"
            );
        }
        stats.fast_seconds = image.fast.seconds + started.elapsed().as_secs_f64();
        // The static answers: whole arrays, so nothing of an older image stays behind.
        let mut nodes = c.static_nodes.clone();
        nodes.resize(STATIC_NODES as usize, StaticNode::default());
        let name = gen_name("STATIC_NODES", generation);
        fill_mmap(self.map(name)?, name, &nodes)?;
        let mut answers = c.static_answers.clone();
        answers.resize(STATIC_ANSWERS as usize, StaticAnswer::EMPTY);
        let name = gen_name("STATIC_ANSWERS", generation);
        fill_mmap(self.map(name)?, name, &answers)?;
        mirror.answers = Some(image.answers);
        Ok(())
    }

    /// Node-state changes: rewrites the answers of the generation in use, in place.
    /// Each new set goes into a free `ANSWER_SETS` slot first, then the key switches to
    /// it with one atomic store, so a running program reads the old set or the new one.
    /// `None` removes the answer (the kernel then passes that region's queries to
    /// userspace). A set that finds no free slot (see `geodns_maps::slots`) leaves its
    /// key with no answer, logged: the kernel passes, userspace answers right.
    pub fn update_answers(
        &mut self,
        changes: &[(AnswerKey, Option<AnswerSet>)],
    ) -> Result<usize, LoaderError> {
        let generation = self.state.generation;
        let Some(mut table) = self.mirrors[generation as usize].answers.take() else {
            // Nothing installed yet: the next install carries the answers.
            return Ok(0);
        };
        let result = (|| {
            let keys_name = gen_name("ANSWERS", generation);
            let sets_name = gen_name("ANSWER_SETS", generation);
            let keys = Mapping::new(self.map(keys_name)?, keys_name)?;
            let sets = Mapping::new(self.map(sets_name)?, sets_name)?;
            let now = std::time::Instant::now();
            for (key, value) in changes {
                let update = table.update(*key, *value, now)?;
                if update.left_to_userspace {
                    tracing::warn!(
                        record = key.record,
                        region = key.region,
                        "no free answer-set slot: this answer is left to userspace"
                    );
                }
                for w in update.writes {
                    match w {
                        slots::Write::Set { slot } => {
                            sets.write(slot as usize, table.sets[slot as usize])?;
                        }
                        slots::Write::Key { slot, value } => {
                            keys.store_u64(slot as usize, value)?;
                        }
                    }
                }
            }
            Ok(changes.len())
        })();
        self.mirrors[generation as usize].answers = Some(table);
        result
    }
}

/// Slots of an open-addressing table for at most `entries` entries (a power of two, at
/// most half full; see `geodns_maps::slots`).
pub(super) fn table_slots(entries: u32) -> u32 {
    u32::try_from(slots::slots_for(entries as usize)).unwrap_or(1 << 31)
}

pub(super) fn sync_lpm<K: Pod + Eq + Hash>(
    map: &mut Map,
    name: &'static str,
    mirror: &mut StdHashMap<(K, u8), PrefixValue>,
    entries: impl Iterator<Item = ((K, u8), PrefixValue)>,
    stats: &mut InstallStats,
) -> Result<(), LoaderError> {
    let mut trie: LpmTrie<&mut MapData, K, PrefixValue> =
        LpmTrie::try_from(map).map_err(|source| LoaderError::Map {
            map: name,
            op: "open",
            source,
        })?;
    let fresh: StdHashMap<(K, u8), PrefixValue> = entries.collect();
    for ((addr, len), value) in &fresh {
        if mirror.get(&(*addr, *len)) != Some(value) {
            trie.insert(&Key::new(u32::from(*len), *addr), *value, 0)
                .map_err(|source| LoaderError::Map {
                    map: name,
                    op: "insert",
                    source,
                })?;
            mirror.insert((*addr, *len), *value);
            stats.written += 1;
        }
    }
    let stale: Vec<(K, u8)> = mirror
        .keys()
        .filter(|k| !fresh.contains_key(k))
        .copied()
        .collect();
    for (addr, len) in stale {
        trie.remove(&Key::new(u32::from(len), addr))
            .map_err(|source| LoaderError::Map {
                map: name,
                op: "remove",
                source,
            })?;
        mirror.remove(&(addr, len));
        stats.removed += 1;
    }
    Ok(())
}
