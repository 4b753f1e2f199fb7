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

mod answers;
mod defence;
mod fast;
mod names;
mod statics;
mod sticky;

pub use answers::*;
pub use defence::*;
pub use fast::*;
pub use names::*;
pub use statics::*;
pub use sticky::*;

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
    "SHADOW",
    "DAEMON",
    "STATIC_NODES_0",
    "STATIC_NODES_1",
    "STATIC_ANSWERS_0",
    "STATIC_ANSWERS_1",
];
/// Names of the programs the loader expects in the object.
pub const PROGRAM_NAMES: &[&str] = &[
    "xdp_dns",
    "xdp_dns_lookup_0",
    "xdp_dns_lookup_1",
    "xdp_dns_reply_0",
    "xdp_dns_reply_1",
    "xdp_dns_grow",
    "xdp_dns_shadow_0",
    "xdp_dns_shadow_1",
    "xdp_dns_static_0",
    "xdp_dns_static_1",
];
/// Names of the programs in the benchmarks' and tests' baseline object (`xdp-bench`).
pub const BENCH_PROGRAM_NAMES: &[&str] = &["xdp_echo", "xdp_pass", "xdp_grow", "xdp_count"];

/// Slots of the baseline object's `REPLIES` map (`xdp_count`): one per DNS rcode value
/// of the header (four bits).
pub const REPLY_COUNT_SLOTS: u32 = 16;

/// Indexes in the `JUMP` program array: the lookup and reply stages exist once per
/// generation (`STAGE_LOOKUP_0 + generation`), so each reads its maps as constants.
pub const STAGE_LOOKUP_0: u32 = 0;
pub const STAGE_REPLY_0: u32 = 2;
/// The grow stage (`xdp_dns_grow`).
pub const STAGE_GROW: u32 = 4;
/// The shadow stage of generation 0 (`xdp_dns_shadow_0`); generation 1's is next.
pub const STAGE_SHADOW_0: u32 = 5;
/// The static-answer stage of generation 0 (`xdp_dns_static_0`); generation 1's is
/// next. The lookup stage enters it for what the geo tables do not answer.
pub const STAGE_STATIC_0: u32 = 7;
/// Entries of the `JUMP` program array.
pub const STAGE_COUNT: u32 = 9;
/// The stage table: each `JUMP` index and the program the loader puts there. The one
/// place that pairs them; the kernel tail-calls by index, the loader links by name.
pub const STAGES: [(u32, &str); STAGE_COUNT as usize] = [
    (STAGE_LOOKUP_0, "xdp_dns_lookup_0"),
    (STAGE_LOOKUP_0 + 1, "xdp_dns_lookup_1"),
    (STAGE_REPLY_0, "xdp_dns_reply_0"),
    (STAGE_REPLY_0 + 1, "xdp_dns_reply_1"),
    (STAGE_GROW, "xdp_dns_grow"),
    (STAGE_SHADOW_0, "xdp_dns_shadow_0"),
    (STAGE_SHADOW_0 + 1, "xdp_dns_shadow_1"),
    (STAGE_STATIC_0, "xdp_dns_static_0"),
    (STAGE_STATIC_0 + 1, "xdp_dns_static_1"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_keys_round_trip() {
        for (aaaa, live, candidate) in [
            (false, (0, 0), (0, 0)),
            (true, (0x7FFF, 0xFFFF), (SHADOW_NO_ANSWER, 0)),
            (false, (12, 40_000), (13, 1)),
        ] {
            let key = shadow_key(aaaa, live, candidate);
            assert_eq!(shadow_key_parts(key), (aaaa, live, candidate));
        }
    }
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
const CONTRACT_REVISION: usize = 2;

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
        size_of::<StaticNode>(),
        size_of::<StaticAnswer>(),
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
/// A shadow run: the idle generation holds a candidate table, and the lookup stage
/// sends a sample of the queries it answers through the shadow stage of the idle
/// generation, which looks the same query up there and counts the pair of decisions
/// in `SHADOW` (see [`shadow_key`]) before the reply goes out from the table in use.
pub const STATE_FLAG_SHADOW: u32 = 32;
/// The candidate's alias flags, shifted left by this (bits 6..9), so the shadow
/// lookup follows the candidate's aliases, not the live table's.
pub const SHADOW_ALIAS_SHIFT: u32 = 4;
/// Bits 12..16 of the flags: one answered query in `2^k` is shadowed (0: every one).
pub const SHADOW_SAMPLE_SHIFT: u32 = 12;
/// The mask of the sample exponent, after the shift.
pub const SHADOW_SAMPLE_MASK: u32 = 0xF;
/// The record of a [`shadow_key`] whose candidate has no answer for the query (a name
/// it does not serve, no region, or no address of the family).
pub const SHADOW_NO_ANSWER: u16 = u16::MAX;
/// Most distinct (live, candidate) decision pairs counted in `SHADOW`; a query whose
/// pair finds no room is counted in `counter::SHADOW_FULL` instead.
pub const SHADOW_MAX_PAIRS: u32 = 1 << 16;

/// A `SHADOW` key: the live decision (record, region) and the candidate's (record,
/// region, or [`SHADOW_NO_ANSWER`]) for an `A` (`aaaa` false) or `AAAA` query. The
/// records are indexes of each table's own config, the regions of its own compile;
/// userspace turns them into answers with each side's engine.
#[expect(clippy::inline_always, reason = "the BPF program needs it inlined")]
#[inline(always)]
#[must_use]
pub const fn shadow_key(aaaa: bool, live: (u16, u16), candidate: (u16, u16)) -> u64 {
    ((aaaa as u64) << 63)
        | ((live.0 as u64 & 0x7FFF) << 48)
        | ((live.1 as u64) << 32)
        | ((candidate.0 as u64) << 16)
        | candidate.1 as u64
}

/// The parts of a [`shadow_key`]: `(aaaa, live, candidate)`.
#[must_use]
#[expect(clippy::cast_possible_truncation, reason = "16-bit fields of the key")]
pub const fn shadow_key_parts(key: u64) -> (bool, (u16, u16), (u16, u16)) {
    (
        key >> 63 != 0,
        (((key >> 48) & 0x7FFF) as u16, (key >> 32) as u16),
        ((key >> 16) as u16, key as u16),
    )
}

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
    /// Answered queries also looked up in a shadow run's candidate (`SHADOW`).
    pub const SHADOW_LOOKUPS: u32 = 30;
    /// Shadowed queries whose pair found no room in `SHADOW` (not counted there).
    pub const SHADOW_FULL: u32 = 31;
    /// A query to the DNS port passed to userspace while the daemon's heartbeat was
    /// stale (`DaemonState`): nobody answered it.
    pub const PASS_NO_DAEMON: u32 = 32;
    /// Answered from the static tables (`geodns_common::statics`): records (SOA, NS,
    /// static data, glue, a wildcard's records), NODATA, NXDOMAIN, REFUSED.
    pub const ANSWERED_STATIC: u32 = 33;
    pub const ANSWERED_NODATA: u32 = 34;
    pub const ANSWERED_NXDOMAIN: u32 = 35;
    pub const ANSWERED_REFUSED: u32 = 36;
    /// Number of counters; the size of the `COUNTERS` array.
    pub const COUNT: u32 = 37;

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
        "shadow_lookups",
        "shadow_full",
        "pass_no_daemon",
        "answered_static",
        "answered_nodata",
        "answered_nxdomain",
        "answered_refused",
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
    unsafe impl aya::Pod for super::StaticNode {}
    unsafe impl aya::Pod for super::StaticAnswer {}
}
