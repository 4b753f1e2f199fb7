//! Answer slots and answer sets (`ANSWERS_*`, `ANSWER_SETS_*`) and the weighted pick
//! over a set, shared by the kernel and `geodns_maps`.

use core::mem::size_of;

use crate::{MAX_ANSWER_ADDRS, POLICY_BEST};

/// See [`NAME_PROBES`].
pub const ANSWER_PROBES: u32 = 32;

/// A slot of the kernel's `ANSWERS_*` array (open addressing on [`answer_hash`], like
/// `NAMES_*`): 0 is an empty slot; else bits 0..32 are the [`AnswerKey`]
/// ([`AnswerKey::packed`]), bits 32..63 the index of its [`AnswerSet`] in
/// `ANSWER_SETS_*`, and bit 63 is set. Set index 0 is the empty set (`n_v4 = n_v6 = 0`):
/// "no answer here, pass". One slot is one aligned u64, so userspace changes a key's
/// set for running readers with one atomic store, after writing the new set into a
/// free `ANSWER_SETS_*` entry.
pub const ANSWER_SLOT_USED: u64 = 1 << 63;

/// An `ANSWERS_*` slot for `packed` key and set index `set` (see [`ANSWER_SLOT_USED`]).
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
#[must_use]
pub const fn answer_slot(packed: u32, set: u32) -> u64 {
    ANSWER_SLOT_USED | ((set as u64) << 32) | packed as u64
}

/// An `ANSWERS_*` slot's packed key and set index: what [`answer_slot`] packed. The
/// kernel and userspace read slots with this one function.
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
#[must_use]
#[expect(clippy::cast_possible_truncation, reason = "the low 32 bits, then 31")]
pub const fn answer_slot_parts(slot: u64) -> (u32, u32) {
    (slot as u32, ((slot >> 32) as u32) & 0x7FFF_FFFF)
}

/// The slot a weighted pick lands on: the first of the first `n` cumulative weights
/// `cum` above `r` (`r` below the total), 0 when none. The kernel draws `r` from
/// `bpf_get_prandom_u32`, userspace from its picker; both select with this function.
/// Bound: [`MAX_ANSWER_ADDRS`] slots.
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
#[must_use]
pub fn weighted_slot(cum: &[u32; MAX_ANSWER_ADDRS], n: usize, r: u32) -> usize {
    for (i, c) in cum.iter().enumerate() {
        if i >= n {
            break;
        }
        if *c > r {
            return i;
        }
    }
    0
}

/// Slot hash of a packed answer key (a 32-bit mixer; the table size is a power of two
/// and the low bits are used).
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn answer_hash(key: u32) -> u32 {
    let mut h = key.wrapping_mul(0x9E37_79B1);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^ (h >> 12)
}

/// What a served name maps to (userspace side; the kernel holds it in a [`NameEntry`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameValue {
    /// Index of the record; with the region it forms the [`AnswerKey`].
    pub record: u16,
    pub _pad: u16,
    /// The node of a wildcard key in `STATIC_NODES_*` (see [`crate::NameEntry::node`]).
    pub node: u32,
}
const _: () = assert!(size_of::<NameValue>() == 8);

/// Key of the `ANSWERS_*` table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AnswerKey {
    pub record: u16,
    pub region: u16,
}
const _: () = assert!(size_of::<AnswerKey>() == 4);

impl AnswerKey {
    /// The key as the low 32 bits of an `ANSWERS_*` slot.
    #[must_use]
    #[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
    #[inline(always)]
    pub const fn packed(self) -> u32 {
        ((self.record as u32) << 16) | self.region as u32
    }
}

/// What to answer for one record in one region, given current node states.
///
/// For `POLICY_BEST` userspace stores exactly the chosen address(es) and `count` equal
/// to the number stored. For `POLICY_SPREAD` the kernel draws `r` uniformly in
/// `[0, total weight)`, picks the first slot whose cumulative weight exceeds `r`, and
/// returns `count` addresses starting there (wrapping). For `POLICY_STICKY` the first
/// slot is [`crate::sticky_slot`] of the client's prefix instead. An entry with no address of the
/// asked family means "no answer here": the kernel passes the query to userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnswerSet {
    pub ttl: u32,
    pub policy: u8,
    /// Number of valid entries in `v4`.
    pub n_v4: u8,
    /// Number of valid entries in `v6`.
    pub n_v6: u8,
    /// How many addresses to put in one answer (at least 1, at most `n_*`).
    pub count: u8,
    /// IPv4 addresses in network byte order.
    pub v4: [[u8; 4]; MAX_ANSWER_ADDRS],
    /// Cumulative weights of `v4` (strictly increasing over the valid entries).
    pub cum_v4: [u32; MAX_ANSWER_ADDRS],
    pub v6: [[u8; 16]; MAX_ANSWER_ADDRS],
    pub cum_v6: [u32; MAX_ANSWER_ADDRS],
    /// For `POLICY_STICKY`: the node tag of each slot of `v4` and `v6`
    /// ([`crate::sticky_tag`]), so a client network draws the same node for `A` and
    /// `AAAA`; 0 in sets of the other policies.
    pub tag_v4: [u32; MAX_ANSWER_ADDRS],
    pub tag_v6: [u32; MAX_ANSWER_ADDRS],
}
const _: () = assert!(size_of::<AnswerSet>() == 8 + 32 + 32 + 128 + 32 + 64);

impl AnswerSet {
    pub const EMPTY: Self = Self {
        ttl: 0,
        policy: POLICY_BEST,
        n_v4: 0,
        n_v6: 0,
        count: 0,
        v4: [[0; 4]; MAX_ANSWER_ADDRS],
        cum_v4: [0; MAX_ANSWER_ADDRS],
        v6: [[0; 16]; MAX_ANSWER_ADDRS],
        cum_v6: [0; MAX_ANSWER_ADDRS],
        tag_v4: [0; MAX_ANSWER_ADDRS],
        tag_v6: [0; MAX_ANSWER_ADDRS],
    };
}
