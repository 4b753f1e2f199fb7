//! Query names as the kernel keys them: `NAMES_*` entries and their fingerprints.

use core::mem::size_of;

use crate::{NameValue, MAX_NAME_WIRE_LEN};

/// A name as the kernel looks it up in `NAMES_*`: a query name in lowercase wire format, zero padded.
/// For a wildcard record `*.example.` the key holds `example.` (without the `*` label)
/// and `wildcard = 1`; the kernel tries the exact name first, then the wildcard key of
/// the name minus its first label.
///
/// The name sits at an 8-aligned offset (and the struct is 8-aligned) so the kernel
/// reads and writes it as whole `u64` words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub wildcard: u8,
    pub _pad: [u8; 7],
    pub name: [u8; MAX_NAME_WIRE_LEN],
}
const _: () = assert!(size_of::<NameKey>() == 8 + MAX_NAME_WIRE_LEN);
const _: () = assert!(core::mem::offset_of!(NameKey, name) == 8);

impl NameKey {
    pub const ZERO: Self = Self {
        wildcard: 0,
        _pad: [0; 7],
        name: [0; MAX_NAME_WIRE_LEN],
    };
}

impl NameKey {
    /// The fingerprint that places this name in `NAMES_*` (see [`name_fingerprint`]).
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        name_fingerprint(&self.name, self.wildcard != 0)
    }

    /// The kernel's slot value for this name: its fingerprint, the record, and the
    /// whole name (which the kernel compares).
    #[must_use]
    pub fn entry(&self, value: NameValue) -> NameEntry {
        NameEntry {
            fingerprint: self.fingerprint(),
            record: value.record,
            wildcard: self.wildcard,
            _pad: 0,
            node: value.node,
            name: self.name,
        }
    }
}

/// Seed of [`name_fingerprint`] for exact names.
pub const FINGERPRINT_EXACT: u64 = 0x9E37_79B9_7F4A_7C15;
/// Seed of [`name_fingerprint`] for wildcard keys.
pub const FINGERPRINT_WILDCARD: u64 = 0x2A2A_2A2A_5EED_0001;

/// One step of [`name_fingerprint`]: mixes in the next 8-byte word of the name.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn fingerprint_step(h: u64, word: u64) -> u64 {
    let h = (h ^ word).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^ (h >> 32)
}

/// 64-bit fingerprint of a zero-padded lowercase wire name, read as little-endian
/// 8-byte words (all `MAX_NAME_WIRE_LEN / 8` of them), from the seed
/// [`FINGERPRINT_EXACT`] or [`FINGERPRINT_WILDCARD`]. It places the name in the
/// kernel's `NAMES_*` table (see [`NameEntry`]); the entry holds the whole name and the
/// kernel compares it, so a collision is a miss, never a wrong answer. The kernel
/// computes it word by word with [`fingerprint_step`] as it copies the name.
#[must_use]
pub fn name_fingerprint(name: &[u8; MAX_NAME_WIRE_LEN], wildcard: bool) -> u64 {
    let seed = if wildcard {
        FINGERPRINT_WILDCARD
    } else {
        FINGERPRINT_EXACT
    };
    name.chunks_exact(8).fold(seed, |h, c| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        fingerprint_step(h, u64::from_le_bytes(w))
    })
}

/// A slot of the kernel's `NAMES_*` array: an open-addressing table built by userspace
/// (`geodns_maps::slots`). A name lives in the first free slot at or after
/// `fingerprint & mask` (linear probing, at most [`NAME_PROBES`] slots); the kernel
/// walks the same slots, stops at an empty one (`fingerprint == 0`, which no name has),
/// and answers only when fingerprint, wildcard flag and the whole name are equal. An
/// array lookup is inlined by the verifier, where a hash map lookup is a helper call
/// and a hash of the key: this costs a few ns instead of tens.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameEntry {
    /// [`name_fingerprint`]; 0 marks an empty slot.
    pub fingerprint: u64,
    pub record: u16,
    /// 1 for a wildcard key (the name is the wildcard's parent), else 0.
    pub wildcard: u8,
    pub _pad: u8,
    /// In a wildcard key: the name's node in `STATIC_NODES_*` (its static answers,
    /// see `geodns_common::statics`); 0 passes. 0 in exact keys.
    pub node: u32,
    /// The whole name key, compared by the kernel after the fingerprint matched.
    pub name: [u8; MAX_NAME_WIRE_LEN],
}
const _: () = assert!(size_of::<NameEntry>() == 16 + MAX_NAME_WIRE_LEN);
const _: () = assert!(core::mem::offset_of!(NameEntry, name) == 16);

impl NameEntry {
    pub const EMPTY: Self = Self {
        fingerprint: 0,
        record: 0,
        wildcard: 0,
        _pad: 0,
        node: 0,
        name: [0; MAX_NAME_WIRE_LEN],
    };
}

/// Most slots the kernel (and the builder) walks for one name or answer key. Tables are
/// at most half full, where linear probing needs about 1.5 probes on average and more
/// than 32 essentially never; a table that would need more is refused by the builder.
pub const NAME_PROBES: u32 = 32;
/// The record number of a wildcard key whose name exists but has no geo wildcard
/// below it (static data, an empty non-terminal, a delegation): the name is the closest
/// encloser of what the kernel looked up, so no wildcard answers and the kernel passes.
pub const NAME_BLOCK: u16 = u16::MAX;
