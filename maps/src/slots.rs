//! The kernel's name and answer tables as open-addressing arrays.
//!
//! The XDP program looks a name up in `NAMES_*` and a (record, region) in `ANSWERS_*`
//! for every query it answers. As BPF hash maps each lookup is a helper call that hashes
//! the key (tens of ns with this machine's return-thunk mitigations); as arrays the
//! verifier inlines every slot read. So userspace places every entry here, with linear
//! probing from a hash the kernel computes the same way, and the kernel walks at most
//! [`NAME_PROBES`] / [`ANSWER_PROBES`] slots and stops at an empty one.
//!
//! Answer sets live apart from the keys (`ANSWER_SETS_*`), deduplicated, so a node-state
//! change is: write each new set into a free set slot, then switch each key's slot to it
//! with one atomic 8-byte store ([`AnswerTable::update`] says which writes, in order). A
//! set slot that no key uses any more is reused only after [`REUSE_AFTER`], long after
//! any program run that read it has ended.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use geodns_common::{
    answer_hash, AnswerKey, AnswerSet, NameEntry, NameKey, NameValue, ANSWER_PROBES, NAME_PROBES,
};

/// A set slot freed by an update is not written again for this long.
pub const REUSE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotsError {
    #[error("{table}: {entries} entries do not fit in {slots} slots (at most half full)")]
    Full {
        table: &'static str,
        slots: usize,
        entries: usize,
    },
    #[error("{table}: no free slot within {probes} probes of an entry's hash")]
    Probes { table: &'static str, probes: u32 },
    #[error("ANSWER_SETS: more than {0} distinct answer sets")]
    Sets(usize),
    #[error("NAMES: a name has fingerprint 0, which marks an empty slot")]
    ZeroFingerprint,
}

/// Slot count for at most `entries` entries: a power of two, at most half full.
#[must_use]
pub fn slots_for(entries: usize) -> usize {
    (entries.max(1) * 2).next_power_of_two()
}

/// Places `hash`'s entry in the first free slot of its probe sequence.
fn place(
    free: impl Fn(usize) -> bool,
    hash: u32,
    slots: usize,
    probes: u32,
    table: &'static str,
) -> Result<usize, SlotsError> {
    (0..probes)
        .map(|i| (hash.wrapping_add(i) as usize) & (slots - 1))
        .find(|&i| free(i))
        .ok_or(SlotsError::Probes { table, probes })
}

/// The `NAMES_*` array (`slots` entries, a power of two).
pub fn build_names(
    names: &[(NameKey, NameValue)],
    slots: usize,
) -> Result<Vec<NameEntry>, SlotsError> {
    if names.len() * 2 > slots {
        return Err(SlotsError::Full {
            table: "NAMES",
            slots,
            entries: names.len(),
        });
    }
    let mut out = vec![NameEntry::EMPTY; slots];
    for (key, value) in names {
        let entry = key.entry(*value);
        if entry.fingerprint == 0 {
            return Err(SlotsError::ZeroFingerprint);
        }
        #[expect(clippy::cast_possible_truncation, reason = "the low bits index")]
        let hash = entry.fingerprint as u32;
        let i = place(
            |i| out[i].fingerprint == 0,
            hash,
            slots,
            NAME_PROBES,
            "NAMES",
        )?;
        out[i] = entry;
    }
    Ok(out)
}

/// The kernel's walk of `NAMES_*`: the record of `key`, if the table holds it.
#[must_use]
pub fn find_name(table: &[NameEntry], key: &NameKey) -> Option<u16> {
    let fp = key.fingerprint();
    #[expect(clippy::cast_possible_truncation, reason = "the low bits index")]
    let hash = fp as u32;
    for i in 0..NAME_PROBES {
        let e = &table[(hash.wrapping_add(i) as usize) & (table.len() - 1)];
        if e.fingerprint == 0 {
            return None;
        }
        if e.fingerprint == fp && e.wildcard == key.wildcard && e.name == key.name {
            return Some(e.record);
        }
    }
    None
}

/// An `ANSWERS_*` slot's packed key and set index (the kernel's reading).
fn unpack(slot: u64) -> (u32, u32) {
    geodns_common::answer_slot_parts(slot)
}

/// One write to the kernel arrays, in the order given: sets before the keys that
/// point to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Store [`AnswerTable::sets`]`[slot]` at `ANSWER_SETS_*[slot]` (no running program
    /// reads that slot).
    Set { slot: u32 },
    /// Atomically store `value` at `ANSWERS_*[slot]`.
    Key { slot: u32, value: u64 },
}

/// What [`AnswerTable::update`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Updated {
    /// Writes to the kernel arrays, in this order.
    pub writes: Vec<Write>,
    /// No set slot was free: the key now has no answer (the kernel passes).
    pub left_to_userspace: bool,
}

/// `ANSWERS_*` and `ANSWER_SETS_*` of one generation, and what userspace needs to change
/// them in place.
#[derive(Clone, Debug)]
pub struct AnswerTable {
    /// `ANSWERS_*`, as the kernel holds it.
    pub keys: Vec<u64>,
    /// `ANSWER_SETS_*`, as the kernel holds it (slot 0 is the empty set).
    pub sets: Vec<AnswerSet>,
    /// Where each key sits in `keys` (keys stay put: a removed answer keeps its slot
    /// with set 0, so no probe sequence is ever cut).
    slot_of: HashMap<AnswerKey, u32>,
    /// The set slot holding each distinct set in use.
    set_slot: HashMap<AnswerSet, u32>,
    /// Keys using each set slot.
    refs: Vec<u32>,
    /// When each unused set slot was freed (`None`: never used, or in use).
    freed: Vec<Option<Instant>>,
    /// Where the search for a free set slot starts (round robin: a freed slot is
    /// reused as late as possible).
    next: usize,
}

impl AnswerTable {
    /// A table of `key_slots` keys and `set_slots` sets (powers of two and at least 2)
    /// holding `answers`.
    pub fn build(
        answers: &[(AnswerKey, AnswerSet)],
        key_slots: usize,
        set_slots: usize,
    ) -> Result<Self, SlotsError> {
        if answers.len() * 2 > key_slots {
            return Err(SlotsError::Full {
                table: "ANSWERS",
                slots: key_slots,
                entries: answers.len(),
            });
        }
        let mut t = Self {
            keys: vec![0; key_slots],
            sets: vec![AnswerSet::EMPTY; set_slots],
            slot_of: HashMap::with_capacity(answers.len()),
            set_slot: HashMap::new(),
            refs: vec![0; set_slots],
            freed: vec![None; set_slots],
            next: 1,
        };
        let now = Instant::now();
        for (key, set) in answers {
            if t.update(*key, Some(*set), now)?.left_to_userspace {
                return Err(SlotsError::Sets(set_slots - 1));
            }
        }
        Ok(t)
    }

    /// Gives `key` the answer `set` (`None`: no answer, the kernel passes). Returns the
    /// writes that bring the kernel arrays to the new state, in order; the table itself
    /// is updated already. A set that has no free slot (all in use, or freed less than
    /// [`REUSE_AFTER`] ago) leaves the key with no answer, so the kernel passes its
    /// queries to userspace, which answers right: [`Updated::left_to_userspace`] says
    /// so, and the writes then switch the key to no answer. An error means nothing
    /// changed.
    pub fn update(
        &mut self,
        key: AnswerKey,
        set: Option<AnswerSet>,
        now: Instant,
    ) -> Result<Updated, SlotsError> {
        let set = set.filter(|s| *s != AnswerSet::EMPTY);
        let packed = key.packed();
        let slot = match self.slot_of.get(&key) {
            Some(&slot) => slot,
            // Nothing to answer and no slot yet: the kernel already passes.
            None if set.is_none() => return Ok(Updated::default()),
            None => {
                let keys = &self.keys;
                let slot = place(
                    |i| keys[i] == 0,
                    answer_hash(packed),
                    keys.len(),
                    ANSWER_PROBES,
                    "ANSWERS",
                )?;
                let slot = u32::try_from(slot).unwrap_or(u32::MAX);
                self.slot_of.insert(key, slot);
                slot
            }
        };
        let mut writes = Vec::new();
        let mut left_to_userspace = false;
        let new_set = match set {
            None => 0,
            Some(s) => match self.set_slot.get(&s) {
                Some(&i) => i,
                None => {
                    if let Some(i) = self.free_set_slot(now) {
                        self.sets[i as usize] = s;
                        self.set_slot.insert(s, i);
                        writes.push(Write::Set { slot: i });
                        i
                    } else {
                        left_to_userspace = true;
                        0
                    }
                }
            },
        };
        let old_set = self.set_of_slot(slot);
        if old_set != new_set || self.keys[slot as usize] == 0 {
            let value = geodns_common::answer_slot(packed, new_set);
            self.keys[slot as usize] = value;
            writes.push(Write::Key { slot, value });
            if new_set != 0 {
                self.refs[new_set as usize] += 1;
            }
            if old_set != 0 {
                self.release(old_set, now);
            }
        }
        Ok(Updated {
            writes,
            left_to_userspace,
        })
    }

    /// The kernel's walk of `ANSWERS_*`: the set `key` has, if any (the empty set is
    /// "no answer").
    #[must_use]
    pub fn find(&self, key: AnswerKey) -> Option<&AnswerSet> {
        let packed = key.packed();
        let h = answer_hash(packed);
        for i in 0..ANSWER_PROBES {
            let v = self.keys[(h.wrapping_add(i) as usize) & (self.keys.len() - 1)];
            if v == 0 {
                return None;
            }
            let (key, set) = unpack(v);
            if key == packed {
                return self.sets.get(set as usize).filter(|_| set != 0);
            }
        }
        None
    }

    /// Distinct answer sets in use.
    #[must_use]
    pub fn sets_in_use(&self) -> usize {
        self.set_slot.len()
    }

    fn set_of_slot(&self, slot: u32) -> u32 {
        unpack(self.keys[slot as usize]).1
    }

    fn release(&mut self, set: u32, now: Instant) {
        let i = set as usize;
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            self.set_slot.remove(&self.sets[i]);
            self.freed[i] = Some(now);
        }
    }

    fn free_set_slot(&mut self, now: Instant) -> Option<u32> {
        let n = self.sets.len();
        for k in 0..n - 1 {
            let i = 1 + (self.next - 1 + k) % (n - 1);
            // A slot gets its first key in the same update that fills it.
            let unused = self.refs[i] == 0;
            let cooled = self.freed[i].is_none_or(|t| now.duration_since(t) >= REUSE_AFTER);
            if unused && cooled {
                self.next = 1 + i % (n - 1);
                self.freed[i] = None;
                return u32::try_from(i).ok();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geodns_common::MAX_NAME_WIRE_LEN;

    fn key(name: &str, wildcard: bool) -> NameKey {
        let mut k = NameKey::ZERO;
        let mut at = 0;
        for label in name.split('.').filter(|l| !l.is_empty()) {
            k.name[at] = u8::try_from(label.len()).expect("label");
            k.name[at + 1..at + 1 + label.len()].copy_from_slice(label.as_bytes());
            at += 1 + label.len();
        }
        assert!(at < MAX_NAME_WIRE_LEN);
        k.wildcard = u8::from(wildcard);
        k
    }

    fn set(last: u8) -> AnswerSet {
        let mut s = AnswerSet::EMPTY;
        s.ttl = 60;
        s.count = 1;
        s.n_v4 = 1;
        s.v4[0] = [198, 18, 0, last];
        s
    }

    #[test]
    fn every_name_is_found_and_nothing_else() {
        let names: Vec<(NameKey, NameValue)> = (0..2048u16)
            .map(|i| {
                let k = key(&format!("n{i}.cdn.example.net."), i % 3 == 0);
                (
                    k,
                    NameValue {
                        record: i,
                        _pad: 0,
                        node: 0,
                    },
                )
            })
            .collect();
        let table = build_names(&names, slots_for(names.len())).expect("build");
        assert_eq!(table.len(), 4096);
        for (k, v) in &names {
            assert_eq!(find_name(&table, k), Some(v.record));
            // The same name with the other wildcard flag is another key.
            let mut other = *k;
            other.wildcard ^= 1;
            assert_eq!(find_name(&table, &other), None);
        }
        assert_eq!(find_name(&table, &key("nope.example.", false)), None);
        assert_eq!(find_name(&table, &NameKey::ZERO), None);
    }

    #[test]
    fn a_full_name_table_is_refused() {
        let names: Vec<(NameKey, NameValue)> = (0..9u16)
            .map(|i| (key(&format!("n{i}."), false), NameValue::default()))
            .collect();
        assert!(matches!(
            build_names(&names, 16),
            Err(SlotsError::Full { .. })
        ));
    }

    #[test]
    fn answers_are_found_deduplicated_and_switched() {
        let keys: Vec<AnswerKey> = (0..20u16)
            .flat_map(|record| (0..500u16).map(move |region| AnswerKey { record, region }))
            .collect();
        let answers: Vec<(AnswerKey, AnswerSet)> = keys
            .iter()
            .map(|k| (*k, set(u8::try_from(k.region % 7).expect("small"))))
            .collect();
        let mut t = AnswerTable::build(&answers, slots_for(answers.len()), 64).expect("build");
        assert_eq!(t.sets_in_use(), 7);
        for (k, s) in &answers {
            assert_eq!(t.find(*k), Some(s));
        }
        assert_eq!(
            t.find(AnswerKey {
                record: 99,
                region: 1
            }),
            None
        );

        // Switch one key to a new set: the set is written before the key.
        let now = Instant::now();
        let k = keys[5];
        let writes = t.update(k, Some(set(200)), now).expect("update").writes;
        assert!(matches!(writes[..], [Write::Set { .. }, Write::Key { .. }]));
        assert_eq!(t.find(k), Some(&set(200)));
        // Remove it: the key stays (set 0) so probe sequences behind it still work.
        let writes = t.update(k, None, now).expect("update").writes;
        assert!(matches!(writes[..], [Write::Key { .. }]));
        assert_eq!(t.find(k), None);
        for (other, s) in &answers {
            if *other != k {
                assert_eq!(t.find(*other), Some(s));
            }
        }
        assert_eq!(t.sets_in_use(), 7);
        // Back again, with a set already in use: no set write.
        let writes = t.update(k, Some(set(1)), now).expect("update").writes;
        assert!(matches!(writes[..], [Write::Key { .. }]));
    }

    #[test]
    fn freed_set_slots_wait_before_reuse() {
        let k = AnswerKey {
            record: 0,
            region: 1,
        };
        // Sets 1..=3 usable: slot 0 is the empty set.
        let mut t = AnswerTable::build(&[(k, set(1))], 4, 4).expect("build");
        let t0 = Instant::now();
        t.update(k, Some(set(2)), t0).expect("2");
        t.update(k, Some(set(3)), t0).expect("3");
        // Slot of set(1) and set(2) were freed just now: no slot for a fourth set yet,
        // and the key then has no answer (the kernel passes).
        let u = t.update(k, Some(set(4)), t0).expect("update");
        assert!(u.left_to_userspace);
        // ... and the kernel is told: the key's slot switches to the empty set (0).
        let no_answer = geodns_common::answer_slot(k.packed(), 0);
        assert!(matches!(u.writes[..], [Write::Key { value, .. }] if value == no_answer));
        assert_eq!(t.find(k), None);
        // Later, a freed slot is used again.
        let later = t0 + REUSE_AFTER;
        t.update(k, Some(set(4)), later).expect("4");
        assert_eq!(t.find(k), Some(&set(4)));
    }
}
