//! The contract between the XDP program (`xdp-dns`) and userspace (`maps`, `geodns`).
//!
//! Every map key and value is `#[repr(C)]`, `Copy`, with explicit padding and a
//! compile-time size check, so both sides agree on the bytes.
//! Padding fields are public and named `_pad` so userspace can build values with
//! struct literals. Userspace computes every
//! entry (see `geodns-maps`); the kernel only indexes.
//!
//! Generations: every map that describes *what to answer* exists twice (`_0` and `_1`
//! suffixes in the object). [`STATE`] says which generation the program reads. A reload
//! fills the idle generation completely, then flips [`RuntimeState::generation`] with one
//! array update, so a packet sees either the whole old table or the whole new one.
#![no_std]
#![allow(clippy::pub_underscore_fields, reason = "explicit padding, see above")]

use core::mem::size_of;

/// Longest query name (wire format, including the root label) the kernel answers: 64
/// bytes covers CDN host names (e.g. `img-eu-west-1.static.cdn.example-media.com.` is
/// 45) and halves the per-packet work of copying, hashing and comparing names.
/// Longer names are passed to userspace, which handles up to 255 bytes.
pub const MAX_NAME_WIRE_LEN: usize = 64;
/// Most labels (excluding the root) in a name the kernel answers.
pub const MAX_LABELS: usize = 16;
/// Most addresses of one family in an answer set.
pub const MAX_ANSWER_ADDRS: usize = 8;
/// UDP payload size we advertise in OPT records (RFC 9715 / DNS flag day 2020).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;
/// EDNS option code of Client Subnet (RFC 7871).
pub const EDNS_OPT_ECS: u16 = dns::OPT_ECS;
/// Default UDP port; the loader overrides it through the `DNS_PORT` global.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// Most EDNS options the kernel walks in one OPT record before it gives up and passes.
pub const MAX_EDNS_OPTIONS: usize = 8;

/// The DNS vocabulary every part uses: record types, classes, option codes and
/// response codes, defined once (RFC 1035, 2136, 3596, 6891, 7871, 8945).
pub mod dns {
    /// Record types (and meta types) by their mnemonic.
    pub mod rtype {
        pub const A: u16 = 1;
        pub const NS: u16 = 2;
        pub const CNAME: u16 = 5;
        pub const SOA: u16 = 6;
        pub const TXT: u16 = 16;
        pub const AAAA: u16 = 28;
        pub const OPT: u16 = 41;
        pub const TSIG: u16 = 250;
        pub const ANY: u16 = 255;
    }

    /// The Internet class.
    pub const CLASS_IN: u16 = 1;
    /// EDNS option code of Client Subnet (RFC 7871).
    pub const OPT_ECS: u16 = 8;
    /// Bytes of the DNS header.
    pub const HEADER_LEN: usize = 12;

    /// Response codes, with the extended ones of EDNS and TSIG.
    pub mod rcode {
        pub const NOERROR: u16 = 0;
        pub const FORMERR: u16 = 1;
        pub const SERVFAIL: u16 = 2;
        pub const NXDOMAIN: u16 = 3;
        pub const NOTIMP: u16 = 4;
        pub const REFUSED: u16 = 5;
        pub const YXDOMAIN: u16 = 6;
        pub const YXRRSET: u16 = 7;
        pub const NXRRSET: u16 = 8;
        pub const NOTAUTH: u16 = 9;
        pub const NOTZONE: u16 = 10;
        /// Extended: 1 in the OPT record's extended RCODE, 0 in the header.
        pub const BADVERS: u16 = 16;
        /// TSIG errors (RFC 8945), in the TSIG record.
        pub const BADSIG: u16 = 16;
        pub const BADKEY: u16 = 17;
        pub const BADTIME: u16 = 18;
    }
}

/// Answer-set policy: the single best up candidate (userspace already chose it).
pub const POLICY_BEST: u8 = 0;
/// Answer-set policy: choose per query by weight among the up candidates.
pub const POLICY_SPREAD: u8 = 1;

/// Names of the maps the loader expects in the object. `userspace/build.rs` checks the
/// built object against these lists and fails the build if one is missing.
pub const MAP_NAMES: &[&str] = &[
    "STATE",
    "COUNTERS",
    "JUMP",
    "QUERY",
    "SCRATCH",
    "PREFIX_V4_0",
    "PREFIX_V4_1",
    "PREFIX_V6_0",
    "PREFIX_V6_1",
    "FAST_TOP_0",
    "FAST_TOP_1",
    "FAST_BLOCKS_0",
    "FAST_BLOCKS_1",
    "NAMES_0",
    "NAMES_1",
    "ANSWERS_0",
    "ANSWERS_1",
    "ANSWER_SETS_0",
    "ANSWER_SETS_1",
    "RRL",
    "DAEMON",
];
/// Names of the programs the loader expects in the object.
pub const PROGRAM_NAMES: &[&str] = &[
    "xdp_dns",
    "xdp_dns_lookup_0",
    "xdp_dns_lookup_1",
    "xdp_dns_reply_0",
    "xdp_dns_reply_1",
    "xdp_dns_grow",
    "xdp_echo",
    "xdp_pass",
];

/// Indexes in the `JUMP` program array: the lookup and reply stages exist once per
/// generation (`STAGE_LOOKUP_0 + generation`), so each reads its maps as constants.
pub const STAGE_LOOKUP_0: u32 = 0;
pub const STAGE_REPLY_0: u32 = 2;
/// The grow stage (`xdp_dns_grow`).
pub const STAGE_GROW: u32 = 4;
/// Entries of the `JUMP` program array.
pub const STAGE_COUNT: u32 = 5;
/// The stage table: each `JUMP` index and the program the loader puts there. The one
/// place that pairs them; the kernel tail-calls by index, the loader links by name.
pub const STAGES: [(u32, &str); STAGE_COUNT as usize] = [
    (STAGE_LOOKUP_0, "xdp_dns_lookup_0"),
    (STAGE_LOOKUP_0 + 1, "xdp_dns_lookup_1"),
    (STAGE_REPLY_0, "xdp_dns_reply_0"),
    (STAGE_REPLY_0 + 1, "xdp_dns_reply_1"),
    (STAGE_GROW, "xdp_dns_grow"),
];

/// Fast path (the multibit trie in front of the LPM tries, computed by
/// `geodns_maps::fastpath`). A slot value is 0 (ask the trie), a leaf ([`FAST_LEAF`]
/// set: the answer itself, see [`fast_leaf`]), or a block of the next 8-bit stride
/// ([`FAST_BLOCK`] set): its word offset in `FAST_BLOCKS_*` is `value & FAST_OFFSET`,
/// and [`FAST_LIST`] says which of two encodings it has.
///
/// `FAST_TOP_*` holds the slots of the first 16 address bits, u32 values two per u64
/// word (the even slot in the low half): IPv4 at slots `0..2^16`, IPv6 at
/// [`FAST_V6_TOP`]`..`. A block of `FAST_BLOCKS_*` (u64 words, [`FAST_PAGE_WORDS`] per
/// element) is the 256 slots of one stride, run-length compressed: the values of its
/// runs of equal slots (run 0 first), and where the runs start. Values are u32 lanes of
/// the words (lane `2 w + 1` is the high half of word `w`). From word `w`:
/// - a bitmap block (more than [`FAST_LIST_STARTS`] runs after the first): words
///   `w..w + 4` are bitmaps, bit `j` of word `k` set where slot `64 k + j` starts a run
///   (bit 0 of word 0 always); byte `k` of word `w + 4` is the number of runs that
///   start before slot `64 k`; run `r` is lane `2 w + FAST_VALUES_LANE + r` (run 0 is
///   the high half of word `w + 4`). See [`fast_run`].
/// - a list block ([`FAST_LIST`]): byte `i` (0..7) of word `w` is the first slot of run
///   `i + 1` (ascending), byte 7 the number `n` of those; run `r` is lane
///   `2 w + FAST_LIST_VALUES_LANE + r`. See [`fast_list_run`]. Most deep IPv6 blocks
///   hold one or two prefixes: 2..4 words instead of 6..7.
pub const FAST_BLOCK: u32 = 0x8000_0000;
/// With [`FAST_BLOCK`]: the block is a list block.
pub const FAST_LIST: u32 = 0x4000_0000;
/// With [`FAST_BLOCK`]: the bits of the block's word offset.
pub const FAST_OFFSET: u32 = 0x3FFF_FFFF;
/// Words of one element of `FAST_BLOCKS_*` (4 KiB, a page of the memory-mapped array).
/// A block never crosses one: the kernel looks up the element of word offset `w` once
/// per stride (`w / FAST_PAGE_WORDS`) and reads the block's words inside it at
/// `w % FAST_PAGE_WORDS` and after, masked.
pub const FAST_PAGE_WORDS: u32 = 512;
/// Slot value flag of a leaf (without [`FAST_BLOCK`]): bits 0..16 are the region, bits
/// 16..24 the matched prefix length (the ECS scope), as [`PrefixValue`]'s first three
/// bytes read little-endian.
pub const FAST_LEAF: u32 = 0x4000_0000;
/// First slot of the IPv6 top in `FAST_TOP_*` (IPv4's is 0).
pub const FAST_V6_TOP: u32 = 1 << 16;
/// Words of `FAST_TOP_*`: 2^16 u32 slots per family, two per word.
pub const FAST_TOP_WORDS: u32 = 1 << 16;
/// Word of a bitmap block's run counts (after the four bitmap words).
pub const FAST_COUNTS_WORD: u32 = 4;
/// u32 lane (from the block's first) of the value of run 0 of a bitmap block.
pub const FAST_VALUES_LANE: u32 = 2 * FAST_COUNTS_WORD + 1;
/// Most run starts (after slot 0) a list block holds.
pub const FAST_LIST_STARTS: usize = 7;
/// u32 lane (from the block's first) of the value of run 0 of a list block.
pub const FAST_LIST_VALUES_LANE: u32 = 2;
/// Strides after the top: IPv4 `a[2]`, `a[3]`; IPv6 `a[2]` .. `a[7]` (down to /64).
pub const FAST_V4_STRIDES: usize = 2;
pub const FAST_V6_STRIDES: usize = 6;

/// The run (0-based, in the whole block) that slot `64 k + j` of a fast-path block lies
/// in, from bitmap word `k` and the counts word (see [`FAST_BLOCK`]).
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn fast_run(bits: u64, counts: u64, k: u32, j: u32) -> u32 {
    let before = (counts >> (8 * (k & 3))) & 0xFF;
    // `j = 63` keeps the whole word: the shift never reaches 64.
    let here = popcount(bits & (u64::MAX >> (63 - (j & 63))));
    (before as u32 + here).wrapping_sub(1)
}

/// The high bit of every byte, and the low bit (SWAR).
const HIGH: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;

/// The run (0-based) that slot `b` of a list block lies in, from its first word: how
/// many of its run starts are `<= b`, compared in all eight bytes at once (SWAR).
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn fast_list_run(head: u64, b: u32) -> u32 {
    let starts = head & 0x00FF_FFFF_FFFF_FFFF;
    let n = (head >> 56) as u32;
    let bb = (b & 0xFF) as u64 * ONES;
    // Per byte: the high bit of `low` says b's low 7 bits >= the start's (no borrow
    // crosses bytes); `ge` adds the high bits: b >= start.
    let low = (bb | HIGH) - (starts & !HIGH);
    let ge = ((bb & !starts) | (!(bb ^ starts) & low)) & HIGH;
    let count = ((ge >> 7).wrapping_mul(ONES) >> 56) as u32;
    // Bytes past the n starts hold 0, and byte 7 was cleared: all 8 - n of them count.
    (count + n).wrapping_sub(8)
}

/// Set bits of `x`, in plain arithmetic (SWAR): BPF has no population count
/// instruction, and userspace walks with the same code.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn popcount(x: u64) -> u32 {
    let x = x - ((x >> 1) & 0x5555_5555_5555_5555);
    let x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    let x = (x + (x >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    (x.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

/// The u32 lane (counted from the page's first word) that holds the slot value for
/// `byte` in the block starting at word `i` of its page; `list` is the block's encoding
/// (bit 30 of the slot value that pointed to it) and `word(x)` reads word `x` of the
/// page. The kernel and `geodns_maps::fastpath` both decode blocks with this.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub fn fast_block_lane(list: bool, i: u32, byte: u8, word: impl Fn(u32) -> u64) -> u32 {
    if list {
        let run = fast_list_run(word(i), u32::from(byte));
        (2 * i + FAST_LIST_VALUES_LANE).wrapping_add(run)
    } else {
        let k = u32::from(byte >> 6);
        let run = fast_run(
            word(i + k),
            word(i + FAST_COUNTS_WORD),
            k,
            u32::from(byte & 63),
        );
        (2 * i + FAST_VALUES_LANE).wrapping_add(run)
    }
}

/// The slot value of a leaf.
#[must_use]
pub const fn fast_leaf_value(v: PrefixValue) -> u32 {
    FAST_LEAF | (v.prefix_len as u32) << 16 | v.region as u32
}

/// What a final slot value answers: `None` (ask the trie) for 0 or a block.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the region and length are the low bytes"
)]
pub const fn fast_leaf(value: u32) -> Option<PrefixValue> {
    if value & (FAST_LEAF | FAST_BLOCK) != FAST_LEAF {
        return None;
    }
    Some(PrefixValue {
        region: value as u16,
        prefix_len: (value >> 16) as u8,
        _pad: 0,
    })
}

/// Which generation of the double-buffered maps the program reads, and run-time flags.
/// Stored at index 0 of the `STATE` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeState {
    /// 0 or 1: the suffix of the maps in use.
    pub generation: u32,
    /// `STATE_FLAG_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<RuntimeState>() == 8);

/// The daemon behind the program, at index 0 of the `DAEMON` array: the contract's
/// stamp (so a later daemon can tell a pin of its own layout from another build's) and
/// a heartbeat. The kernel reads `beat_ns` only for a query it passes: older than
/// [`DAEMON_DEAD_NS`], nobody answers it (`counter::PASS_NO_DAEMON`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DaemonState {
    /// [`CONTRACT_STAMP`] of the build that loaded the program.
    pub stamp: u64,
    /// `CLOCK_MONOTONIC` (the kernel's `bpf_ktime_get_coarse_ns` clock) of the last beat.
    pub beat_ns: u64,
    /// The daemon's process id.
    pub pid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<DaemonState>() == 24);

/// A heartbeat older than this: the daemon is gone (it beats every second).
pub const DAEMON_DEAD_NS: u64 = 3_000_000_000;

/// Raise when a map's meaning changes without its name or size changing.
const CONTRACT_REVISION: usize = 1;

/// The layout of the kernel contract in one number: the map and program names, the
/// sizes of every key and value, the counters. A pinned program whose `DAEMON` stamp
/// differs was built against another layout: its maps cannot be read as ours.
pub const CONTRACT_STAMP: u64 = {
    const fn mix(mut h: u64, bytes: &[u8]) -> u64 {
        let mut i = 0;
        while i < bytes.len() {
            h ^= bytes[i] as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        h ^ 0xff
    }
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < MAP_NAMES.len() {
        h = mix(h, MAP_NAMES[i].as_bytes());
        i += 1;
    }
    i = 0;
    while i < PROGRAM_NAMES.len() {
        h = mix(h, PROGRAM_NAMES[i].as_bytes());
        i += 1;
    }
    let sizes = [
        size_of::<RuntimeState>(),
        size_of::<DaemonState>(),
        size_of::<PrefixValue>(),
        size_of::<NameEntry>(),
        size_of::<AnswerKey>(),
        size_of::<AnswerSet>(),
        size_of::<Defence>(),
        size_of::<RrlSlot>(),
        size_of::<Scratch>(),
        counter::COUNT as usize,
        CONTRACT_REVISION,
    ];
    i = 0;
    while i < sizes.len() {
        h = mix(h, &(sizes[i] as u64).to_le_bytes());
        i += 1;
    }
    h
};

/// When set, the kernel skips its flat first step and asks the LPM trie directly
/// (bench and debugging).
pub const STATE_FLAG_TRIE_ONLY: u32 = 1;
/// When set, the kernel answers nothing itself and passes every packet (maintenance).
pub const STATE_FLAG_PASS_ALL: u32 = 2;
/// The table's databases alias `::ffff:0:0/96` (IPv4-mapped) onto their IPv4 tree: a
/// client there is looked up as its bits 96-127, scope + 96. Set with the generation
/// whose table it describes (the loader's install).
pub const STATE_FLAG_ALIAS_MAPPED: u32 = 4;
/// The same for `2001::/32` (Teredo): bits 32-63, scope + 32.
pub const STATE_FLAG_ALIAS_TEREDO: u32 = 8;
/// The same for `2002::/16` (6to4): bits 16-47, scope + 16.
pub const STATE_FLAG_ALIAS_6TO4: u32 = 16;
/// Every alias flag.
pub const STATE_FLAG_ALIASES: u32 =
    STATE_FLAG_ALIAS_MAPPED | STATE_FLAG_ALIAS_TEREDO | STATE_FLAG_ALIAS_6TO4;

/// The IPv6 ranges a `MaxMind` DB aliases onto its IPv4 tree: (flag, first address,
/// prefix length = offset of the embedded IPv4 address).
pub const IPV6_ALIASES: [(u32, u128, u8); 3] = [
    (STATE_FLAG_ALIAS_MAPPED, 0xffff_u128 << 32, 96),
    (STATE_FLAG_ALIAS_TEREDO, 0x2001_u128 << 112, 32),
    (STATE_FLAG_ALIAS_6TO4, 0x2002_u128 << 112, 16),
];

/// The IPv4 address embedded in `addr` and the alias offset, when `addr` lies in an
/// alias range whose flag is in `flags`. The kernel and userspace both translate with
/// this.
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
#[must_use]
pub fn ipv6_alias(addr: &[u8; 16], flags: u32) -> Option<([u8; 4], u8)> {
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    if flags & STATE_FLAG_ALIAS_6TO4 != 0 && hi >> 48 == 0x2002 {
        return Some(([addr[2], addr[3], addr[4], addr[5]], 16));
    }
    if flags & STATE_FLAG_ALIAS_TEREDO != 0 && hi >> 32 == 0x2001_0000 {
        return Some(([addr[4], addr[5], addr[6], addr[7]], 32));
    }
    if flags & STATE_FLAG_ALIAS_MAPPED != 0
        && hi == 0
        && u32::from_be_bytes([addr[8], addr[9], addr[10], addr[11]]) == 0xffff
    {
        return Some(([addr[12], addr[13], addr[14], addr[15]], 96));
    }
    None
}

/// Value of the prefix maps: the region a client prefix belongs to and the length of
/// the matched prefix (it becomes the ECS SCOPE PREFIX-LENGTH).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixValue {
    pub region: u16,
    pub prefix_len: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<PrefixValue>() == 4);

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
            _pad: [0; 5],
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
    pub _pad: [u8; 5],
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
        _pad: [0; 5],
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
}
const _: () = assert!(size_of::<NameValue>() == 4);

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
/// returns `count` addresses starting there (wrapping). An entry with no address of the
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
}
const _: () = assert!(size_of::<AnswerSet>() == 8 + 32 + 32 + 128 + 32);

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
    };
}

/// Per-CPU scratch space, so the program does not need 2 x 136 bytes of BPF stack.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Scratch {
    pub exact: NameKey,
    /// Always zero. The wildcard key is `exact.name` shifted left by the first label
    /// (at most 64 bytes), copied 8 bytes at a time with a masked index and no branch;
    /// reads past the name land here and must see zeros.
    pub zeros: [u8; SCRATCH_ZEROS],
    pub wildcard: NameKey,
}
/// Size of [`Scratch::zeros`]: a masked index reaches `name[255 + 8]`.
pub const SCRATCH_ZEROS: usize = 256 + 8 - MAX_NAME_WIRE_LEN;
const _: () = assert!(size_of::<Scratch>() == 2 * size_of::<NameKey>() + SCRATCH_ZEROS);

/// Most served addresses of each family in [`Defence`].
pub const MAX_SERVED: usize = 16;
/// Words of [`Defence::deny_ports`]: one bit per UDP port.
pub const DENY_PORT_WORDS: usize = 65536 / 64;
/// Source ports of services that answer anything (echo, daytime, chargen, time, NTP,
/// portmap, SNMP, LDAP, SSDP, memcached): a query "from" one is a spoofed reflection
/// attempt, and answering it would start a loop or hit the service's victim.
pub const DEFAULT_REFLECTOR_PORTS: [u16; 11] = [7, 13, 17, 19, 37, 123, 111, 161, 389, 1900, 11211];

/// Settings of the defences the loader sets as the kernel's `DEFENCE` global; userspace
/// makes the same decisions from the same struct (`geodns_maps::config::Defence`
/// builds it).
///
/// Response rate limiting (RRL) is a token bucket per (client prefix, class, name) in
/// GCRA form: a bucket holds the time its next answer is due ([`RrlBucket::tat`]);
/// see [`rrl_step`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defence {
    /// Nanoseconds one answer costs a bucket (1e9 / rate); 0: RRL off.
    pub rrl_interval_ns: u64,
    /// How far ahead of now a bucket may run (burst x interval).
    pub rrl_burst_ns: u64,
    /// Every `slip`-th query over the limit gets an empty TC=1 reply, the rest are
    /// dropped; 0 drops all.
    pub rrl_slip: u32,
    /// Non-zero: answer only queries to the served addresses below (a family with
    /// none: nothing of it).
    pub served_check: u32,
    /// The client prefix masks: IPv4 as its 4 bytes read little-endian, IPv6 as two
    /// little-endian words of its 16 bytes.
    pub rrl_v4_mask: u32,
    pub served_v4_count: u32,
    pub rrl_v6_mask: [u64; 2],
    pub served_v6_count: u32,
    /// Slots of the kernel's `RRL` array minus one (a power of two); set by the loader.
    pub rrl_slot_mask: u32,
    /// Seed of [`rrl_tag`], random per load: which clients share a slot cannot be
    /// computed from outside.
    pub rrl_seed: u64,
    /// Addresses as their bytes read little-endian (like the masks).
    pub served_v4: [u32; MAX_SERVED],
    pub served_v6: [[u64; 2]; MAX_SERVED],
    /// Bit `p % 64` of word `p / 64` set: queries from UDP source port `p` are dropped
    /// (bit 0, port 0, always).
    pub deny_ports: [u64; DENY_PORT_WORDS],
}
const _: () = assert!(
    size_of::<Defence>() == 32 + 16 + 16 + 4 * MAX_SERVED + 16 * MAX_SERVED + 8 * DENY_PORT_WORDS
);

impl Defence {
    /// What an object holds before the loader sets it: RRL off, every destination
    /// served, port 0 and [`DEFAULT_REFLECTOR_PORTS`] dropped.
    pub const DEFAULT: Self = Self {
        rrl_interval_ns: 0,
        rrl_burst_ns: 0,
        rrl_slip: 2,
        served_check: 0,
        rrl_v4_mask: 0x00FF_FFFF,
        served_v4_count: 0,
        rrl_v6_mask: [u64::MAX, 0x0000_0000_00FF_FFFF],
        served_v6_count: 0,
        rrl_slot_mask: 0,
        rrl_seed: 0,
        served_v4: [0; MAX_SERVED],
        served_v6: [[0; 2]; MAX_SERVED],
        deny_ports: deny_bitmap(&DEFAULT_REFLECTOR_PORTS),
    };

    /// Whether queries from `port` are dropped.
    #[must_use]
    pub const fn denies_port(&self, port: u16) -> bool {
        self.deny_ports[(port >> 6) as usize] >> (port & 63) & 1 != 0
    }
}

impl Default for Defence {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The deny bitmap of `ports`, with port 0.
#[must_use]
pub const fn deny_bitmap(ports: &[u16]) -> [u64; DENY_PORT_WORDS] {
    let mut bits = [0u64; DENY_PORT_WORDS];
    bits[0] = 1;
    let mut i = 0;
    while i < ports.len() {
        let p = ports[i];
        bits[(p >> 6) as usize] |= 1 << (p & 63);
        i += 1;
    }
    bits
}

/// RRL classes (BIND, Knot and NSD keep them apart so that one flood does not starve
/// the others): answers are limited per name, negative answers (NXDOMAIN, NODATA) per
/// zone, errors per client prefix only.
pub const RRL_CLASS_ANSWER: u8 = 1;
pub const RRL_CLASS_NEGATIVE: u8 = 2;
pub const RRL_CLASS_ERROR: u8 = 3;

/// An RRL bucket's key: the fallback server's table is keyed by it, and the kernel's
/// slots by its [`rrl_tag`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RrlKey {
    /// The client's address masked to its prefix (IPv4 in the first 4 bytes), as
    /// [`Defence`]'s masks read it.
    pub prefix: [u64; 2],
    /// For answers: the record's number (userspace: `Engine::rrl_name`, the same
    /// number, or a hash for names without a record); else 0.
    pub name: u64,
    /// `RRL_CLASS_*`.
    pub class: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<RrlKey>() == 32);

/// Value of the `RRL` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrlBucket {
    /// Theoretical arrival time: when the bucket's next answer is due (ns).
    pub tat: u64,
    /// Queries over the limit so far (picks every `slip`-th for the slip).
    pub over: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<RrlBucket>() == 16);

/// A slot of the kernel's `RRL` array: the bucket of the key whose [`rrl_tag`] it holds
/// (0: empty). A two-way set-associative table rather than a hash map: the verifier
/// inlines an array lookup, where a hash map lookup is a helper call that hashes the
/// key (an LRU hash made the 500k answer 1.4x slower, see docs/ARCHITECTURE.md). A key
/// looks at the two slots of its pair (one cache line); when neither holds its tag it
/// takes over the one due earlier with a fresh bucket, as an LRU evicts: a bucket due
/// in the past is as good as a fresh one, so only buckets still in debt are lost, and
/// only when three keys in debt meet in one pair.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrlSlot {
    pub tag: u64,
    pub bucket: RrlBucket,
    pub _pad: u64,
}
const _: () = assert!(size_of::<RrlSlot>() == 32);

/// The tag of an RRL key given as its four words ([`RrlKey`]'s layout), seeded; never
/// 0. Its high half picks the slot.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub const fn rrl_tag(seed: u64, words: [u64; 4]) -> u64 {
    let h = fingerprint_step(seed, words[0]);
    let h = fingerprint_step(h, words[1]);
    let h = fingerprint_step(h, words[2]);
    let h = fingerprint_step(h, words[3]);
    // The last step's high bits are mixed again: the slot index comes from them.
    fingerprint_step(h, h >> 29) | 1
}

/// [`rrl_step`]'s verdicts.
pub const RRL_ALLOW: u32 = 0;
pub const RRL_SLIP: u32 = 1;
pub const RRL_DROP: u32 = 2;

/// One query against a bucket at time `now` (ns), with [`Defence`]'s settings; GCRA: an answer is allowed when the
/// bucket's next due time, one interval on, stays within `burst_ns` of now; then
/// `burst / interval` answers pass at once and `1e9 / interval` per second after, so
/// a client gets at most `burst + rate x seconds` answers. Over the limit, every
/// `slip`-th query slips. The kernel and the fallback server both decide with this.
#[must_use]
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
pub fn rrl_step(b: &mut RrlBucket, now: u64, interval_ns: u64, burst_ns: u64, slip: u32) -> u32 {
    let tat = if b.tat > now { b.tat } else { now };
    let next = tat.wrapping_add(interval_ns);
    if next.wrapping_sub(now) <= burst_ns {
        b.tat = next;
        return RRL_ALLOW;
    }
    b.over = b.over.wrapping_add(1);
    if slip != 0 && b.over.is_multiple_of(slip) {
        RRL_SLIP
    } else {
        RRL_DROP
    }
}

/// Indexes of the per-CPU `COUNTERS` array: one per outcome.
pub mod counter {
    pub const RX: u32 = 0;
    pub const ANSWERED_V4: u32 = 1;
    pub const ANSWERED_V6: u32 = 2;
    pub const ANSWERED_ECS: u32 = 3;
    pub const ANSWERED_NO_ECS: u32 = 4;
    pub const PASS_NOT_IP: u32 = 5;
    pub const PASS_IP_OPTIONS_OR_FRAGMENT: u32 = 6;
    pub const PASS_IPV6_EXT_HEADER: u32 = 7;
    pub const PASS_NOT_UDP: u32 = 8;
    pub const PASS_NOT_OUR_PORT: u32 = 9;
    pub const PASS_TRUNCATED: u32 = 10;
    pub const PASS_HEADER: u32 = 11;
    pub const PASS_NAME: u32 = 12;
    pub const PASS_QTYPE: u32 = 13;
    pub const PASS_QCLASS: u32 = 14;
    pub const PASS_EDNS: u32 = 15;
    pub const PASS_ECS: u32 = 16;
    pub const PASS_NOT_SERVED: u32 = 17;
    pub const PASS_NO_REGION: u32 = 18;
    pub const PASS_NO_ANSWER: u32 = 19;
    pub const PASS_TOO_BIG: u32 = 20;
    pub const PASS_DISABLED: u32 = 21;
    /// A stage could not continue (a tail call failed): a loader bug, never input.
    pub const PASS_INTERNAL: u32 = 22;
    /// A datagram to the DNS port from source port 0: no reply can be meant for it.
    pub const DROPPED_PORT_ZERO: u32 = 23;
    /// From a reflector service port (`Defence::deny_ports`: chargen, NTP, ...).
    pub const DROPPED_REFLECTOR_PORT: u32 = 24;
    /// QR=1 to the DNS port: a response flood, never a query.
    pub const DROPPED_RESPONSE: u32 = 25;
    /// A broadcast or multicast destination MAC.
    pub const DROPPED_NOT_UNICAST: u32 = 26;
    /// Addressed to an IP address the server does not serve (`Defence::served_*`).
    pub const PASS_NOT_OUR_ADDRESS: u32 = 27;
    /// Over the response rate limit, dropped.
    pub const RRL_DROPPED: u32 = 28;
    /// Over the response rate limit, answered with an empty TC=1 reply (the slip).
    pub const RRL_SLIPPED: u32 = 29;
    /// A query to the DNS port passed to userspace while the daemon's heartbeat was
    /// stale (`DaemonState`): nobody answered it.
    pub const PASS_NO_DAEMON: u32 = 30;
    /// Number of counters; the size of the `COUNTERS` array.
    pub const COUNT: u32 = 31;

    /// Metric label of each counter, indexed by its value.
    pub const NAMES: [&str; COUNT as usize] = [
        "rx",
        "answered_v4",
        "answered_v6",
        "answered_ecs",
        "answered_no_ecs",
        "pass_not_ip",
        "pass_ip_options_or_fragment",
        "pass_ipv6_ext_header",
        "pass_not_udp",
        "pass_not_our_port",
        "pass_truncated",
        "pass_header",
        "pass_name",
        "pass_qtype",
        "pass_qclass",
        "pass_edns",
        "pass_ecs",
        "pass_not_served",
        "pass_no_region",
        "pass_no_answer",
        "pass_too_big",
        "pass_disabled",
        "pass_internal",
        "dropped_port_zero",
        "dropped_reflector_port",
        "dropped_response",
        "dropped_not_unicast",
        "pass_not_our_address",
        "rrl_dropped",
        "rrl_slipped",
        "pass_no_daemon",
    ];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, with explicit padding and no pointers:
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for super::RuntimeState {}
    unsafe impl aya::Pod for super::DaemonState {}
    unsafe impl aya::Pod for super::PrefixValue {}
    unsafe impl aya::Pod for super::NameKey {}
    unsafe impl aya::Pod for super::NameValue {}
    unsafe impl aya::Pod for super::NameEntry {}
    unsafe impl aya::Pod for super::AnswerKey {}
    unsafe impl aya::Pod for super::AnswerSet {}
    unsafe impl aya::Pod for super::Defence {}
    unsafe impl aya::Pod for super::RrlKey {}
    unsafe impl aya::Pod for super::RrlBucket {}
    unsafe impl aya::Pod for super::RrlSlot {}
}
