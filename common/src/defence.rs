//! The kernel's defences: served addresses, denied source ports and response rate
//! limiting (RRL) buckets.

use core::mem::size_of;

use crate::fingerprint_step;

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
