//! XDP program: answers geo A/AAAA queries in place (`XDP_TX`) and passes everything it
//! cannot answer, untouched, to the userspace fallback server (`XDP_PASS`).
//!
//! Only packet work lives here: parse, look up what userspace precomputed, write,
//! return an action. Every early exit names its reason in `COUNTERS`.
#![no_std]
#![no_main]
// Inline BPF assembly for whole-word packet accesses (see `pkt`).
#![feature(asm_experimental_arch)]
// Everything is inlined into the two entry points: the verifier then sees one function
// and bounds every offset in context.
#![expect(clippy::inline_always, reason = "see above")]
// The modules are one program split by job: they share the root's maps, globals and
// macros, and the root calls their functions, as one namespace.
#![allow(clippy::wildcard_imports, reason = "see above")]

// This crate only builds for the BPF target (`cargo xtask lint` runs clippy on it
// there); host builds of the workspace exclude it.
extern crate ebpf_panic;

use core::mem::size_of;

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_MMAPABLE},
    helpers::{
        bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray, PerCpuHashMap, ProgramArray},
    programs::XdpContext,
};
use geodns_common::{
    answer_hash, counter, fingerprint_step, rrl_step, rrl_tag, AnswerKey, AnswerSet, DaemonState,
    Defence, NameEntry, NameKey, PrefixValue, RrlBucket, RrlSlot, RuntimeState, Scratch,
    ANSWER_PROBES, DAEMON_DEAD_NS, DEFAULT_DNS_PORT, EDNS_OPT_ECS, EDNS_UDP_PAYLOAD,
    FINGERPRINT_EXACT, FINGERPRINT_WILDCARD, MAX_ANSWER_ADDRS, MAX_EDNS_OPTIONS, MAX_LABELS,
    MAX_NAME_WIRE_LEN, MAX_SERVED, NAME_PROBES, POLICY_SPREAD, RRL_ALLOW, RRL_CLASS_ANSWER,
    RRL_SLIP, STAGE_COUNT, STAGE_GROW, STAGE_LOOKUP_0, STAGE_REPLY_0, STATE_FLAG_ALIASES,
    STATE_FLAG_PASS_ALL, STATE_FLAG_TRIE_ONLY,
};
use geodns_common::{
    fast_block_lane, fast_leaf, ipv6_alias, sticky_key_v4, sticky_key_v6, sticky_scope,
    sticky_slot, FAST_BLOCK, FAST_LIST, FAST_OFFSET, FAST_PAGE_WORDS, FAST_TOP_WORDS,
    FAST_V4_STRIDES, FAST_V6_STRIDES, FAST_V6_TOP, POLICY_STICKY,
};
use geodns_common::{
    shadow_key, SHADOW_ALIAS_SHIFT, SHADOW_MAX_PAIRS, SHADOW_NO_ANSWER, SHADOW_SAMPLE_MASK,
    SHADOW_SAMPLE_SHIFT, STAGE_SHADOW_0, STATE_FLAG_SHADOW,
};
use geodns_common::{
    StaticAnswer, StaticNode, STAGE_STATIC_0, STATIC_ANSWERS, STATIC_MAX_BLOB, STATIC_MAX_FIXUPS,
    STATIC_NODES, STATIC_NODE_TYPES, STATIC_REFUSED,
};

/// UDP port of DNS queries; set by the loader (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static DNS_PORT: u16 = DEFAULT_DNS_PORT;
/// Slots of `NAMES_*` minus one (a power of two); set by the loader.
#[unsafe(no_mangle)]
static NAME_SLOT_MASK: u32 = 0;
/// Slots of `ANSWERS_*` minus one (a power of two); set by the loader.
#[unsafe(no_mangle)]
static ANSWER_SLOT_MASK: u32 = 0;
/// Rate limiting and reflection defences; set by the loader (see `Defence`). Read
/// only through `defence!`: a plain read of a static is folded into its initializer.
#[unsafe(no_mangle)]
static DEFENCE: Defence = Defence::DEFAULT;

/// Field `$f` of the loader-set `DEFENCE` global.
macro_rules! defence {
    ($($f:tt)+) => {
        // SAFETY: reading a loader-set constant.
        unsafe { core::ptr::read_volatile(&raw const DEFENCE.$($f)+) }
    };
}

/// RRL buckets by client prefix and record, direct-mapped on a seeded tag (see
/// `RrlSlot`); sized by the loader.
#[map]
static RRL: Array<RrlSlot> = Array::with_max_entries(1, 0);

#[map]
static STATE: Array<RuntimeState> = Array::with_max_entries(1, 0);
/// The daemon's contract stamp and heartbeat (see `DaemonState`); written by userspace.
#[map]
static DAEMON: Array<DaemonState> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// The stages after parsing, entered by tail call: each is verified on its own from
/// one clean state, which keeps every stage far below the verifier's 1M budget.
#[map]
static JUMP: ProgramArray = ProgramArray::with_max_entries(STAGE_COUNT, 0);
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
/// A shadow run's counts: per `shadow_key` (live decision, candidate decision), the
/// queries seen on each CPU. Userspace sums and clears it.
#[map]
static SHADOW: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(SHADOW_MAX_PAIRS, 0);
// Sizes below are placeholders: the loader sets every max_entries before load.
#[map]
static PREFIX_V4_0: LpmTrie<[u8; 4], PrefixValue> = LpmTrie::with_max_entries(1, 0);
#[map]
static PREFIX_V4_1: LpmTrie<[u8; 4], PrefixValue> = LpmTrie::with_max_entries(1, 0);
#[map]
static PREFIX_V6_0: LpmTrie<[u8; 16], PrefixValue> = LpmTrie::with_max_entries(1, 0);
#[map]
static PREFIX_V6_1: LpmTrie<[u8; 16], PrefixValue> = LpmTrie::with_max_entries(1, 0);
// The fast path (see `geodns_common::FAST_BLOCK` and maps/src/fastpath.rs): the slots
// of the first 16 bits, then run-length compressed 256-slot blocks of u64 words, a
// page of them per element; memory-mappable so the loader fills them with one copy
// instead of a syscall per entry.
#[map]
static FAST_TOP_0: Array<u64> = Array::with_max_entries(FAST_TOP_WORDS, BPF_F_MMAPABLE);
#[map]
static FAST_TOP_1: Array<u64> = Array::with_max_entries(FAST_TOP_WORDS, BPF_F_MMAPABLE);
#[map]
static FAST_BLOCKS_0: Array<Page> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static FAST_BLOCKS_1: Array<Page> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// One element of `FAST_BLOCKS_*`.
type Page = [u64; FAST_PAGE_WORDS as usize];
// Open-addressing tables built by userspace (`geodns_maps::slots`): array lookups are
// inlined by the verifier, hash map lookups are helper calls. Sized by the loader.
#[map]
static NAMES_0: Array<NameEntry> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static NAMES_1: Array<NameEntry> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static ANSWERS_0: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static ANSWERS_1: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static ANSWER_SETS_0: Array<AnswerSet> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
static ANSWER_SETS_1: Array<AnswerSet> = Array::with_max_entries(1, BPF_F_MMAPABLE);
// The zone's static answers (see `geodns_common::statics`): fixed sizes, few entries.
#[map]
static STATIC_NODES_0: Array<StaticNode> = Array::with_max_entries(STATIC_NODES, BPF_F_MMAPABLE);
#[map]
static STATIC_NODES_1: Array<StaticNode> = Array::with_max_entries(STATIC_NODES, BPF_F_MMAPABLE);
#[map]
static STATIC_ANSWERS_0: Array<StaticAnswer> =
    Array::with_max_entries(STATIC_ANSWERS, BPF_F_MMAPABLE);
#[map]
static STATIC_ANSWERS_1: Array<StaticAnswer> =
    Array::with_max_entries(STATIC_ANSWERS, BPF_F_MMAPABLE);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_UDP: u8 = 17;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const DNS_HLEN: usize = 12;
use geodns_common::dns::{
    rtype::{A as TYPE_A, AAAA as TYPE_AAAA, OPT as TYPE_OPT},
    CLASS_IN,
};
/// Offset past which the program reads nothing: bounds every variable offset for the
/// verifier, and no query the kernel answers is longer.
const MAX_PACKET: usize = 1024;
/// Words summed by the UDP checksum loop: covers every reply the kernel builds
/// (header + 128-byte name + 8 AAAA records + OPT with ECS < 512 bytes).
const MAX_CSUM_WORDS: usize = 256;
const REPLY_TTL: u8 = 64;

/// A reason to pass the packet to userspace; the value is its `COUNTERS` index, with
/// [`DROP`] set for the reasons that drop it instead.
type Pass = u32;
/// Set in a [`Pass`]: `XDP_DROP` instead of `XDP_PASS` (reflection and flood
/// defences: nothing userspace should see either).
const DROP: u32 = 0x100;

// The largest reply the kernel writes fits 512 bytes, the UDP size of a client without
// EDNS (RFC 1035), and so every client's: no kernel reply ever needs TC=1 for size.
const _: () =
    assert!(DNS_HLEN + MAX_NAME_WIRE_LEN + 4 + MAX_ANSWER_ADDRS * (12 + 16) + 11 + 8 + 16 <= 512);

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Tail call into `JUMP[$index]`, a constant: returns only if the call failed.
///
/// The verifier makes a tail call whose index is the same constant on every path a
/// direct jump (patched when `JUMP` changes); any other goes through a retpoline on
/// this CPU. Written as assembly because LLVM merges `tail_call(ctx, 2)` and
/// `tail_call(ctx, 3)` on two branches into one call with a selected index; two
/// different assembly strings stay two calls.
///
/// # Safety
/// `$ctx` must be the program's context.
macro_rules! tail_call_const {
    ($ctx:expr, $index:expr) => {
        core::arch::asm!(
            "r3 = {index}",
            "call 12", // bpf_tail_call(ctx, prog_array, index)
            index = const $index,
            inout("r1") ($ctx).ctx => _,
            inout("r2") (&raw const JUMP) => _,
            out("r0") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
        )
    };
}

/// Tail call into stage `$base + $generation` (generation 0 or 1): one constant-index
/// call site per generation (see [`tail_call_const`]). Returns only if the call failed.
///
/// # Safety
/// As [`tail_call_const`].
macro_rules! tail_call_generation {
    ($ctx:expr, $base:expr, $generation:expr) => {
        if $generation == 0 {
            tail_call_const!($ctx, $base);
        } else {
            tail_call_const!($ctx, $base + 1);
        }
    };
}

/// Turns the outcome of a lookup or reply stage into an action: `Ok(None)` means
/// "continue in the grow stage" (a tail call; if that fails the packet passes,
/// untouched).
#[inline(always)]
fn run_stage(ctx: &XdpContext, stage: Result<Option<u32>, Pass>) -> u32 {
    match stage {
        Ok(Some(action)) => action,
        Ok(None) => {
            // SAFETY: `ctx` is this program's context.
            unsafe { tail_call_const!(ctx, STAGE_GROW) };
            count(counter::PASS_INTERNAL);
            xdp_action::XDP_PASS
        }
        Err(reason) => {
            count(reason & !DROP);
            if reason & DROP == 0 {
                count_if_no_daemon(reason);
                xdp_action::XDP_PASS
            } else {
                xdp_action::XDP_DROP
            }
        }
    }
}

/// A query for us passed while the daemon's heartbeat is stale: nobody will answer
/// it (the daemon died; the kernel keeps answering what it can). Read only on the
/// pass path, so an answered query pays nothing.
#[inline(always)]
fn count_if_no_daemon(reason: u32) {
    if matches!(
        reason,
        counter::PASS_NOT_IP
            | counter::PASS_IP_OPTIONS_OR_FRAGMENT
            | counter::PASS_IPV6_EXT_HEADER
            | counter::PASS_NOT_UDP
            | counter::PASS_NOT_OUR_PORT
            | counter::PASS_NOT_OUR_ADDRESS
    ) {
        return;
    }
    let Some(daemon) = DAEMON.get_ptr(0) else {
        return;
    };
    // SAFETY: the array's only element; a torn read of a beat only delays the count.
    let beat = unsafe { core::ptr::read_volatile(&raw const (*daemon).beat_ns) };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.saturating_sub(beat) > DAEMON_DEAD_NS {
        count(counter::PASS_NO_DAEMON);
    }
}

/// Stage 1: parse and validate the query (the packet is not modified); continues in
/// the lookup stage of the generation in use.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] entry point signature"
)]
pub fn xdp_dns(ctx: XdpContext) -> u32 {
    count(counter::RX);
    match try_parse(&ctx) {
        Ok(parsed) => {
            let generation = parsed & 1;
            if parsed & PARSED_STATIC == 0 {
                // SAFETY: `ctx` is this program's context.
                unsafe { tail_call_generation!(&ctx, STAGE_LOOKUP_0, generation) };
            } else {
                to_static(counter::PASS_QTYPE);
                // SAFETY: `ctx` is this program's context.
                unsafe { tail_call_generation!(&ctx, STAGE_STATIC_0, generation) };
            }
            count(counter::PASS_INTERNAL);
            xdp_action::XDP_PASS
        }
        Err(reason) => run_stage(&ctx, Err(reason)),
    }
}

/// The maps of one generation. The stages that read them exist once per generation
/// (`_0`, `_1`), so in each program every map is a constant: the verifier inlines
/// array lookups only for a map it knows at the call site, and a map picked at run
/// time would also make LLVM merge the two lookups into one call.
struct Gen {
    names: &'static Array<NameEntry>,
    answers: &'static Array<u64>,
    sets: &'static Array<AnswerSet>,
    prefix_v4: &'static LpmTrie<[u8; 4], PrefixValue>,
    prefix_v6: &'static LpmTrie<[u8; 16], PrefixValue>,
    fast_top: &'static Array<u64>,
    fast_blocks: &'static Array<Page>,
    static_nodes: &'static Array<StaticNode>,
    static_answers: &'static Array<StaticAnswer>,
}

#[inline(always)]
fn gen0() -> Gen {
    Gen {
        names: &NAMES_0,
        answers: &ANSWERS_0,
        sets: &ANSWER_SETS_0,
        prefix_v4: &PREFIX_V4_0,
        prefix_v6: &PREFIX_V6_0,
        fast_top: &FAST_TOP_0,
        fast_blocks: &FAST_BLOCKS_0,
        static_nodes: &STATIC_NODES_0,
        static_answers: &STATIC_ANSWERS_0,
    }
}

#[inline(always)]
fn gen1() -> Gen {
    Gen {
        names: &NAMES_1,
        answers: &ANSWERS_1,
        sets: &ANSWER_SETS_1,
        prefix_v4: &PREFIX_V4_1,
        prefix_v6: &PREFIX_V6_1,
        fast_top: &FAST_TOP_1,
        fast_blocks: &FAST_BLOCKS_1,
        static_nodes: &STATIC_NODES_1,
        static_answers: &STATIC_ANSWERS_1,
    }
}

/// Whether this answered query goes through the shadow stage: a shadow run is on and
/// the sample (one in `2^k`) picks it. Without a shadow run, one predictable branch.
#[inline(always)]
fn shadow_sampled(q: *const Query) -> bool {
    // SAFETY: `q` is the per-CPU QUERY value.
    let flags = unsafe { core::ptr::read_volatile(&raw const (*q).flags) };
    if flags & STATE_FLAG_SHADOW == 0 {
        return false;
    }
    let k = (flags >> SHADOW_SAMPLE_SHIFT) & SHADOW_SAMPLE_MASK;
    // SAFETY: helper call without arguments.
    k == 0 || unsafe { bpf_get_prandom_u32() } & ((1 << k) - 1) == 0
}

/// Defines the lookup, reply and shadow stages of one generation (see [`Gen`]).
/// `$to_shadow` is the shadow stage of the other generation (where a shadow run's
/// candidate is), `$to_reply` the reply stage of the other generation (where the
/// shadow stage's query came from).
macro_rules! generation_stages {
    (
        $lookup:ident, $reply:ident, $shadow:ident, $statics:ident, $gen:expr,
        $to_shadow:expr, $to_reply:expr, $to_static:expr
    ) => {
        /// Stage 2: name, client prefix and answer set, then the reply in the same
        /// program (one tail call fewer, and the answer set is looked up once). A name
        /// without a geo record continues in the static stage (stage 1 sends other
        /// types there directly).
        #[xdp]
        pub fn $lookup(ctx: XdpContext) -> u32 {
            let g = $gen;
            let stage = try_lookup(&ctx, &g);
            if let Err(counter::PASS_NOT_SERVED) = stage {
                to_static(counter::PASS_NOT_SERVED);
                // Returns only if the call failed.
                // SAFETY: `ctx` is this program's context.
                unsafe { tail_call_const!(&ctx, $to_static) };
                return run_stage(&ctx, Err(counter::PASS_INTERNAL));
            }
            let stage = stage.and_then(|(set, mut v)| {
                let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
                v.tc = rate_limit(q)?;
                if shadow_sampled(q) {
                    // Returns only if the call failed: then reply without the shadow.
                    // SAFETY: `ctx` is this program's context.
                    unsafe { tail_call_const!(&ctx, $to_shadow) };
                }
                reply_with(&ctx, q, set, &v)
            });
            run_stage(&ctx, stage)
        }

        /// The shadow stage: this generation holds a shadow run's candidate. Counts
        /// the candidate's decision for the query, then the reply stage of the live
        /// generation answers it as if nothing happened.
        #[xdp]
        pub fn $shadow(ctx: XdpContext) -> u32 {
            if let Err(reason) = shadow_count(&ctx, &$gen) {
                count(reason & !DROP);
            }
            // SAFETY: `ctx` is this program's context.
            unsafe { tail_call_const!(&ctx, $to_reply) };
            // The lookup stage changed nothing in the packet: userspace can answer it.
            count(counter::PASS_INTERNAL);
            xdp_action::XDP_PASS
        }

        /// Stage 3: rewrite the query into the reply and send it back. Entered only
        /// from the grow stage: stage 2 writes the reply itself when the frame has
        /// tailroom.
        #[xdp]
        pub fn $reply(ctx: XdpContext) -> u32 {
            let stage = try_reply(&ctx, &$gen);
            run_stage(&ctx, stage)
        }

        /// Stage 2b: the zone's static answers (SOA, NS, static records, NODATA,
        /// NXDOMAIN, REFUSED), from the lookup stage, or from the grow stage with the
        /// answer already chosen.
        #[xdp]
        pub fn $statics(ctx: XdpContext) -> u32 {
            let stage = try_static(&ctx, &$gen);
            run_stage(&ctx, stage)
        }
    };
}

generation_stages!(
    xdp_dns_lookup_0,
    xdp_dns_reply_0,
    xdp_dns_shadow_0,
    xdp_dns_static_0,
    gen0(),
    STAGE_SHADOW_0 + 1,
    STAGE_REPLY_0 + 1,
    STAGE_STATIC_0
);
generation_stages!(
    xdp_dns_lookup_1,
    xdp_dns_reply_1,
    xdp_dns_shadow_1,
    xdp_dns_static_1,
    gen1(),
    STAGE_SHADOW_0,
    STAGE_REPLY_0,
    STAGE_STATIC_0 + 1
);

/// Stage 3b, only when the frame has no tailroom for the reply (veth hands XDP the
/// skb's own buffer): make room at the front instead, move the headers and question
/// there, and go back to the reply stage.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] entry point signature"
)]
pub fn xdp_dns_grow(ctx: XdpContext) -> u32 {
    match try_grow(&ctx) {
        Ok(grown) => {
            let generation = grown & 1;
            if grown & GROW_STATIC != 0 {
                // SAFETY: `ctx` is this program's context.
                unsafe { tail_call_generation!(&ctx, STAGE_STATIC_0, generation) };
            } else {
                // SAFETY: `ctx` is this program's context.
                unsafe { tail_call_generation!(&ctx, STAGE_REPLY_0, generation) };
            }
            // The frame was already moved: it is no query any more.
            count(counter::PASS_INTERNAL);
            xdp_action::XDP_DROP
        }
        Err(reason) => {
            count(reason);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_grow(ctx: &XdpContext) -> Result<u32, Pass> {
    let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (grow, keep) = unsafe {
        (
            reload(&raw const (*q).grow, GROW_STATIC as usize | 256)?,
            reload(&raw const (*q).question_end, MAX_KEEP)?,
        )
    };
    // The static stage marks its frames (see `GROW_STATIC`).
    let to_static = grow & GROW_STATIC as usize != 0;
    let grow = grow & 0x1FF;
    if grow == 0 || grow > 256 {
        return Err(counter::PASS_TOO_BIG);
    }
    grow_at_head(ctx, q, grow, keep)?;
    // SAFETY: as above.
    unsafe { store(&raw mut (*q).grown, 1) };
    // SAFETY: as above.
    let generation = unsafe { reload(&raw const (*q).generation, 1)? };
    Ok(u32::from(generation != 0) | if to_static { GROW_STATIC } else { 0 })
}

mod checksum;
mod defence;
mod lookup;
mod packet;
mod parse;
mod query;
mod reply;
mod statics;

use checksum::*;
use defence::*;
use lookup::*;
use packet::*;
use parse::*;
use query::*;
use reply::*;
use statics::*;

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
