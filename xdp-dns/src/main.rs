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
    maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use geodns_common::{
    answer_hash, counter, fingerprint_step, rrl_step, rrl_tag, AnswerKey, AnswerSet, Defence,
    NameEntry, NameKey, PrefixValue, RrlBucket, RrlSlot, RuntimeState, Scratch, ANSWER_PROBES,
    DEFAULT_DNS_PORT, EDNS_OPT_ECS, EDNS_UDP_PAYLOAD, FINGERPRINT_EXACT, FINGERPRINT_WILDCARD,
    MAX_ANSWER_ADDRS, MAX_EDNS_OPTIONS, MAX_LABELS, MAX_NAME_WIRE_LEN, MAX_SERVED, NAME_PROBES,
    POLICY_SPREAD, RRL_ALLOW, RRL_CLASS_ANSWER, RRL_SLIP, STAGE_COUNT, STAGE_GROW, STAGE_LOOKUP_0,
    STAGE_REPLY_0, STATE_FLAG_ALIASES, STATE_FLAG_PASS_ALL, STATE_FLAG_TRIE_ONLY,
};
use geodns_common::{
    fast_block_lane, fast_leaf, ipv6_alias, FAST_BLOCK, FAST_LIST, FAST_OFFSET, FAST_PAGE_WORDS,
    FAST_TOP_WORDS, FAST_V4_STRIDES, FAST_V6_STRIDES, FAST_V6_TOP,
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
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// The stages after parsing, entered by tail call: each is verified on its own from
/// one clean state, which keeps every stage far below the verifier's 1M budget.
#[map]
static JUMP: ProgramArray = ProgramArray::with_max_entries(STAGE_COUNT, 0);
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
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
                xdp_action::XDP_PASS
            } else {
                xdp_action::XDP_DROP
            }
        }
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
        Ok(generation) => {
            // SAFETY: `ctx` is this program's context.
            unsafe { tail_call_generation!(&ctx, STAGE_LOOKUP_0, generation) };
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
    }
}

/// Defines the lookup and reply stages of one generation (see [`Gen`]).
macro_rules! generation_stages {
    ($lookup:ident, $reply:ident, $gen:expr) => {
        /// Stage 2: name, client prefix and answer set, then the reply in the same
        /// program (one tail call fewer, and the answer set is looked up once).
        #[xdp]
        pub fn $lookup(ctx: XdpContext) -> u32 {
            let g = $gen;
            let stage = try_lookup(&ctx, &g).and_then(|set| {
                let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
                rate_limit(q)?;
                reply_with(&ctx, q, set)
            });
            run_stage(&ctx, stage)
        }

        /// Stage 3: rewrite the query into the reply and send it back. Entered only
        /// from the grow stage: stage 2 writes the reply itself when the frame has
        /// tailroom.
        #[xdp]
        pub fn $reply(ctx: XdpContext) -> u32 {
            let stage = try_reply(&ctx, &$gen);
            run_stage(&ctx, stage)
        }
    };
}

generation_stages!(xdp_dns_lookup_0, xdp_dns_reply_0, gen0());
generation_stages!(xdp_dns_lookup_1, xdp_dns_reply_1, gen1());

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
        Ok(generation) => {
            // SAFETY: `ctx` is this program's context.
            unsafe { tail_call_generation!(&ctx, STAGE_REPLY_0, generation) };
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
            reload(&raw const (*q).grow, 256)?,
            reload(&raw const (*q).question_end, MAX_KEEP)?,
        )
    };
    if grow == 0 {
        return Err(counter::PASS_TOO_BIG);
    }
    grow_at_head(ctx, q, grow, keep)?;
    // SAFETY: as above.
    unsafe { store(&raw mut (*q).grown, 1) };
    // SAFETY: as above.
    let generation = unsafe { reload(&raw const (*q).generation, 1)? };
    Ok(u32::from(generation != 0))
}

/// A trivial responder for the end-to-end benchmark's ceiling: any IPv4/UDP frame to
/// the DNS port goes straight back (addresses and ports swapped, QR set, UDP checksum
/// cleared, which IPv4 allows). No lookup, no reply building.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] entry point signature"
)]
pub fn xdp_echo(ctx: XdpContext) -> u32 {
    try_echo(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn try_echo(ctx: &XdpContext) -> Result<u32, Pass> {
    if read_u16(ctx, 12)? != ETH_P_IP || read_u8(ctx, ETH_HLEN)? != 0x45 {
        return Err(counter::PASS_NOT_IP);
    }
    let l4 = ETH_HLEN + IPV4_HLEN;
    if read_u8(ctx, ETH_HLEN + 9)? != IPPROTO_UDP {
        return Err(counter::PASS_NOT_UDP);
    }
    // SAFETY: reading a loader-set constant.
    let port = unsafe { core::ptr::read_volatile(&raw const DNS_PORT) };
    if read_u16(ctx, l4 + 2)? != port {
        return Err(counter::PASS_NOT_OUR_PORT);
    }
    let flags = read_u8(ctx, l4 + UDP_HLEN + 2)?;
    write_bytes(ctx, l4 + UDP_HLEN + 2, [flags | 0x80])?;
    let macs = ptr_at::<[u8; 12]>(ctx, 0)?;
    // SAFETY: ptr_at checked 12 bytes.
    unsafe {
        let m = macs.read_unaligned();
        macs.write_unaligned([
            m[6], m[7], m[8], m[9], m[10], m[11], m[0], m[1], m[2], m[3], m[4], m[5],
        ]);
    }
    swap_addrs::<4>(ctx, ETH_HLEN + 12)?;
    let ports = ptr_at::<[u8; 4]>(ctx, l4)?;
    // SAFETY: ptr_at checked 4 bytes.
    unsafe {
        let p = ports.read_unaligned();
        ports.write_unaligned([p[2], p[3], p[0], p[1]]);
    }
    write_bytes(ctx, l4 + 6, [0, 0])?;
    Ok(xdp_action::XDP_TX)
}

/// Attached to the client side of a veth pair: `XDP_TX` replies over veth are only
/// received when the peer has an XDP program too.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// `x`, opaque to LLVM (it can no longer derive it from, or fold it into, anything
/// else), pinned in a register. Like `core::hint::black_box`, which on BPF costs a
/// stack store and load for every use.
#[inline(always)]
fn opaque(mut x: usize) -> usize {
    // SAFETY: a register move onto itself (a `mov` of a register to itself, which the
    // x86-64 JIT does not even emit); it only claims it may change `x`. Not an empty
    // template: an instruction without code would repeat its line-info offset, which
    // the kernel rejects.
    unsafe {
        core::arch::asm!("{0} = {0}", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
    };
    x
}

/// A checked pointer to a `T` at `offset` in the packet.
///
/// `opaque` pins the pointer in one register: without it LLVM may fold this check
/// into a neighbour's and recompute the pointer for the access, and the verifier only
/// trusts the exact register it saw compared with `data_end`.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Pass> {
    if offset > MAX_PACKET {
        return Err(counter::PASS_TRUNCATED);
    }
    let p = opaque(ctx.data() + offset);
    if p + size_of::<T>() > ctx.data_end() {
        return Err(counter::PASS_TRUNCATED);
    }
    Ok(p as *mut T)
}

/// `index & mask`, with the mask kept in the code: LLVM drops a mask it can prove
/// redundant from earlier checks, but the verifier may not have followed those.
#[inline(always)]
fn masked(index: usize, mask: usize) -> usize {
    opaque(index) & mask
}

#[inline(always)]
fn read_u8(ctx: &XdpContext, offset: usize) -> Result<u8, Pass> {
    // SAFETY: ptr_at checked the byte lies inside the packet.
    Ok(unsafe { *ptr_at::<u8>(ctx, offset)? })
}

#[inline(always)]
fn read_u16(ctx: &XdpContext, offset: usize) -> Result<u16, Pass> {
    let p = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: ptr_at checked both bytes lie inside the packet.
    Ok(u16::from_be(unsafe { pkt::ld16(p.cast()) }))
}

#[inline(always)]
fn write_bytes<const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    bytes: [u8; N],
) -> Result<(), Pass> {
    // SAFETY: ptr_at checked all N bytes lie inside the packet.
    unsafe { ptr_at::<[u8; N]>(ctx, offset)?.write_unaligned(bytes) };
    Ok(())
}

/// Whole-word packet accesses in memory byte order: one BPF instruction each.
///
/// `read_unaligned`/`write_unaligned` of a `[u8; N]` in the packet compile to N byte
/// accesses (plus shifts and ors to assemble a word), because the BPF backend assumes
/// strict alignment. The kernel does not require aligned packet access on the
/// architectures geodns runs on (x86-64, arm64: the verifier checks packet alignment
/// only with `BPF_F_STRICT_ALIGNMENT` or without efficient unaligned access), so these
/// write the one load or store out in assembly; a Rust `read()` of a misaligned `*const
/// u64` would be undefined behaviour instead.
///
/// # Safety
/// `p .. p + size` must lie in the packet: `p` is a pointer `ptr_at` returned (or one at
/// a constant offset inside the range it checked).
mod pkt {
    use core::arch::asm;

    // Callers build words with `from_le_bytes` and sum checksums in memory byte order
    // as little-endian words: only bpfel is built.
    #[cfg(target_endian = "big")]
    compile_error!("the pkt accesses and their callers assume little-endian BPF (bpfel)");

    macro_rules! load {
        ($name:ident, $t:ty, $insn:literal) => {
            #[inline(always)]
            pub unsafe fn $name(p: *const u8) -> $t {
                let v: u64;
                // SAFETY: see the module's contract.
                unsafe {
                    asm!($insn, v = lateout(reg) v, p = in(reg) p,
                        options(nostack, readonly, preserves_flags));
                }
                #[allow(clippy::cast_possible_truncation, reason = "zero-extended load")]
                {
                    v as $t
                }
            }
        };
    }
    macro_rules! store {
        ($name:ident, $t:ty, $insn:literal) => {
            #[inline(always)]
            pub unsafe fn $name(p: *mut u8, v: $t) {
                // SAFETY: see the module's contract.
                unsafe {
                    asm!($insn, p = in(reg) p, v = in(reg) u64::from(v),
                        options(nostack, preserves_flags));
                }
            }
        };
    }
    load!(ld16, u16, "{v} = *(u16 *)({p} + 0)");
    load!(ld32, u32, "{v} = *(u32 *)({p} + 0)");
    load!(ld64, u64, "{v} = *(u64 *)({p} + 0)");
    store!(st16, u16, "*(u16 *)({p} + 0) = {v}");
    store!(st32, u32, "*(u32 *)({p} + 0) = {v}");
    store!(st64, u64, "*(u64 *)({p} + 0) = {v}");
}

/// Where the layers of a query sit, and what the reply needs from it. Kept in a
/// per-CPU map rather than on the stack: see [`reload`].
#[repr(C)]
#[derive(Clone, Copy)]
struct Query {
    l3: u32,
    l4: u32,
    dns: u32,
    /// Offset just past QTYPE/QCLASS: the reply keeps everything before it.
    question_end: u32,
    /// Offset of the end of the DNS message (UDP length, not the frame end).
    end: u32,
    v6: u32,
    aaaa: u32,
    /// RD (bit 0 of flags byte 2), copied to the reply.
    rd: u32,
    /// CD (bit 4 of flags byte 3), copied to the reply.
    cd: u32,
    edns: u32,
    /// A valid EDNS Client Subnet option (RFC 7871) was received.
    ecs_present: u32,
    ecs_family: u32,
    ecs_source: u32,
    /// Round-trip slot for [`launder`].
    tmp: u32,
    /// Generation and flags read at parse time: every stage uses the same ones.
    generation: u32,
    flags: u32,
    /// Fingerprint of the exact name key, computed while copying it.
    fingerprint: u64,
    /// Found by the lookup stage, for the reply stage.
    record: u32,
    region: u32,
    scope: u32,
    first: u32,
    /// Bytes the grow stage must add at the front (the tail had no room), and whether
    /// it did.
    grow: u32,
    grown: u32,
    /// 0x02 (the TC bit of flags byte 2) when RRL slips this reply: no answers.
    tc: u32,
    /// The RRL bucket's pair of slots and its tag (`rrl_prepare`), and where the
    /// early read of the pair lands.
    rrl_pair: u32,
    rrl_tag: u64,
    rrl_sink: u64,
    /// ECS address bytes as received (`ceil(source / 8)` of them), zero padded.
    ecs_addr: [u8; 16],
}

#[map]
static QUERY: PerCpuArray<Query> = PerCpuArray::with_max_entries(1, 0);
const _: () = assert!(core::mem::offset_of!(Query, ecs_addr) % 8 == 0);
const _: () = assert!(core::mem::align_of::<Query>() == 8);

/// Reads back a value the program stored in its per-CPU `QUERY` map, bounded by `max`.
///
/// The verifier knows nothing of map contents, so every path that reaches a reload
/// continues in one state. Without it the verifier explores each combination of VLAN
/// depth x label count x EDNS option count separately and gives up at 1M instructions.
#[inline(always)]
fn reload(field: *const u32, max: usize) -> Result<usize, Pass> {
    // SAFETY: `field` points into the per-CPU QUERY value, valid for the program run.
    let v = unsafe { core::ptr::read_volatile(field) } as usize;
    if v > max {
        return Err(counter::PASS_HEADER);
    }
    Ok(v)
}

/// Passes `value` through the per-CPU map so every path continues in one state (see
/// [`reload`]); used between the phases of writing the reply.
#[inline(always)]
fn launder(q: *mut Query, value: usize, max: usize) -> Result<usize, Pass> {
    // SAFETY: `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).tmp, value);
        reload(&raw const (*q).tmp, max)
    }
}

#[inline(always)]
fn store(field: *mut u32, value: usize) {
    // SAFETY: `field` points into the per-CPU QUERY value, valid for the program run.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "offsets are below MAX_PACKET"
    )]
    unsafe {
        core::ptr::write_volatile(field, value as u32);
    };
}

#[inline(always)]
fn try_parse(ctx: &XdpContext) -> Result<u32, Pass> {
    let state = match STATE.get(0) {
        Some(s) => *s,
        None => RuntimeState::default(),
    };
    let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    parse(ctx, q)?;
    if state.flags & STATE_FLAG_PASS_ALL != 0 {
        return Err(counter::PASS_DISABLED);
    }
    // SAFETY: `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).generation, (state.generation & 1) as usize);
        store(&raw mut (*q).flags, state.flags as usize);
        store(&raw mut (*q).grown, 0);
    }
    Ok(state.generation & 1)
}

/// Parses and validates the query, recording what the reply needs in `*q`.
#[inline(always)]
#[expect(
    clippy::too_many_lines,
    reason = "one pass over the headers, in wire order"
)]
fn parse(ctx: &XdpContext, q: *mut Query) -> Result<(), Pass> {
    // Ethernet, with up to two VLAN tags.
    let mut proto = read_u16(ctx, 12).map_err(|_| counter::PASS_NOT_IP)?;
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = read_u16(ctx, l3 + 2)?;
        l3 += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = read_u16(ctx, l3 + 2)?;
            l3 += 4;
        }
    }
    let (v6, l4, udp_len, dst_lo, dst_hi) = match proto {
        ETH_P_IP => {
            // Read the whole fixed header first: a short frame is "truncated".
            let h = ptr_at::<[u8; IPV4_HLEN]>(ctx, l3)?.cast::<u8>();
            // SAFETY (all reads from `h`): ptr_at checked the 20 bytes.
            if unsafe { *h } != 0x45 {
                return Err(counter::PASS_IP_OPTIONS_OR_FRAGMENT);
            }
            let frag = u16::from_be(unsafe { pkt::ld16(h.add(6)) });
            if frag & 0x3FFF != 0 {
                return Err(counter::PASS_IP_OPTIONS_OR_FRAGMENT);
            }
            if unsafe { *h.add(9) } != IPPROTO_UDP {
                return Err(counter::PASS_NOT_UDP);
            }
            let total = usize::from(u16::from_be(unsafe { pkt::ld16(h.add(2)) }));
            let l4 = l3 + IPV4_HLEN;
            let udp_len = usize::from(read_u16(ctx, l4 + 4)?);
            if total != IPV4_HLEN + udp_len {
                return Err(counter::PASS_HEADER);
            }
            (
                false,
                l4,
                udp_len,
                u64::from(unsafe { pkt::ld32(h.add(16)) }),
                0,
            )
        }
        ETH_P_IPV6 => {
            let h = ptr_at::<[u8; IPV6_HLEN]>(ctx, l3)?.cast::<u8>();
            // SAFETY (all reads from `h`): ptr_at checked the 40 bytes.
            if unsafe { *h } >> 4 != 6 {
                return Err(counter::PASS_HEADER);
            }
            let next = unsafe { *h.add(6) };
            if next != IPPROTO_UDP {
                // Hop-by-hop, routing, fragment, ESP, AH, destination options.
                return Err(if matches!(next, 0 | 43 | 44 | 50 | 51 | 60) {
                    counter::PASS_IPV6_EXT_HEADER
                } else {
                    counter::PASS_NOT_UDP
                });
            }
            let payload = usize::from(u16::from_be(unsafe { pkt::ld16(h.add(4)) }));
            let l4 = l3 + IPV6_HLEN;
            let udp_len = usize::from(read_u16(ctx, l4 + 4)?);
            if payload != udp_len {
                return Err(counter::PASS_HEADER);
            }
            let dst = unsafe { (pkt::ld64(h.add(24)), pkt::ld64(h.add(32))) };
            (true, l4, udp_len, dst.0, dst.1)
        }
        _ => return Err(counter::PASS_NOT_IP),
    };
    let udp = ptr_at::<[u8; UDP_HLEN]>(ctx, l4)?.cast::<u8>();
    // SAFETY: reading a loader-set constant.
    let port = unsafe { core::ptr::read_volatile(&raw const DNS_PORT) };
    // SAFETY: ptr_at checked the 8 bytes.
    if u16::from_be(unsafe { pkt::ld16(udp.add(2)) }) != port {
        return Err(counter::PASS_NOT_OUR_PORT);
    }
    // SAFETY: ptr_at checked the 8 bytes.
    let sport = u16::from_be(unsafe { pkt::ld16(udp) });
    if sport == 0 {
        return Err(DROP | counter::DROPPED_PORT_ZERO);
    }
    if defence!(deny_ports[usize::from(sport >> 6)]) >> (sport & 63) & 1 != 0 {
        return Err(DROP | counter::DROPPED_REFLECTOR_PORT);
    }
    // The group bit of the destination MAC: broadcast or multicast.
    if read_u8(ctx, 0)? & 1 != 0 {
        return Err(DROP | counter::DROPPED_NOT_UNICAST);
    }
    if defence!(served_check) != 0 && !served(v6, dst_lo, dst_hi) {
        return Err(counter::PASS_NOT_OUR_ADDRESS);
    }
    let dns = l4 + UDP_HLEN;
    let end = l4 + udp_len;
    if udp_len < UDP_HLEN + DNS_HLEN || end > MAX_PACKET {
        return Err(counter::PASS_TRUNCATED);
    }
    // The frame must hold the whole datagram its IP header claims. Every byte used
    // below is read through ptr_at too; no comparison with the frame end itself (LLVM
    // would use it to drop later checks, in a way the verifier cannot follow).
    read_u8(ctx, end - 1)?;

    // DNS header: a plain query with one question and at most an OPT record.
    let h = ptr_at::<[u8; DNS_HLEN]>(ctx, dns)?.cast::<u8>();
    // SAFETY (all reads from `h`): ptr_at checked the 12 bytes.
    let (flags_hi, flags_lo) = unsafe { (*h.add(2), *h.add(3)) };
    let count = |at: usize| u16::from_be(unsafe { pkt::ld16(h.add(at)) });
    if flags_hi & 0x80 != 0 {
        return Err(DROP | counter::DROPPED_RESPONSE);
    }
    // QR=0, OPCODE=0, TC=0 (AA, RA and AD are ignored in queries); Z=0 and RCODE=0.
    if flags_hi & 0xFA != 0 || flags_lo & 0x4F != 0 {
        return Err(counter::PASS_HEADER);
    }
    if count(4) != 1 || count(6) != 0 || count(8) != 0 {
        return Err(counter::PASS_HEADER);
    }
    let arcount = count(10);
    if arcount > 1 {
        return Err(counter::PASS_EDNS);
    }
    let name_len = parse_name(ctx, q, dns + DNS_HLEN)?;

    // SAFETY (all field pointers below): `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).l3, l3);
        store(&raw mut (*q).l4, l4);
        store(&raw mut (*q).end, end);
        store(&raw mut (*q).v6, usize::from(v6));
        // QTYPE offset for now; the end of the question once QTYPE/QCLASS are read.
        store(&raw mut (*q).question_end, dns + DNS_HLEN + name_len);
        store(&raw mut (*q).rd, usize::from(flags_hi & 0x01));
        store(&raw mut (*q).cd, usize::from(flags_lo & 0x10));
        store(&raw mut (*q).edns, usize::from(arcount));
        store(&raw mut (*q).ecs_present, 0);
        store(&raw mut (*q).ecs_family, 0);
        store(&raw mut (*q).ecs_source, 0);
    }
    // One state from here on, whatever the VLAN depth and name length were.
    let qtype_off = reload(unsafe { &raw const (*q).question_end }, MAX_PACKET)?;
    let end = reload(unsafe { &raw const (*q).end }, MAX_PACKET)?;
    // SAFETY: ptr_at checked the 4 bytes are in the packet.
    let [t0, t1, c0, c1] = unsafe { ptr_at::<[u8; 4]>(ctx, qtype_off)?.read_unaligned() };
    let qtype = u16::from_be_bytes([t0, t1]);
    let qclass = u16::from_be_bytes([c0, c1]);
    if qtype != TYPE_A && qtype != TYPE_AAAA {
        return Err(counter::PASS_QTYPE);
    }
    if qclass != CLASS_IN {
        return Err(counter::PASS_QCLASS);
    }
    let question_end = qtype_off + 4;
    // SAFETY: `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).aaaa, usize::from(qtype == TYPE_AAAA));
        store(&raw mut (*q).question_end, question_end);
    }
    if arcount == 1 {
        parse_opt(ctx, question_end, end, q)
    } else if question_end == end {
        Ok(())
    } else {
        Err(counter::PASS_HEADER)
    }
}

/// Whether the destination address (IPv4 in the low half of `lo`) is one the loader
/// listed. Bound: `MAX_SERVED` addresses.
#[inline(always)]
fn served(v6: bool, lo: u64, hi: u64) -> bool {
    if v6 {
        let n = defence!(served_v6_count) as usize;
        for i in 0..MAX_SERVED {
            if i >= n {
                break;
            }
            if defence!(served_v6[i][0]) == lo && defence!(served_v6[i][1]) == hi {
                return true;
            }
        }
    } else {
        let n = defence!(served_v4_count) as usize;
        for i in 0..MAX_SERVED {
            if i >= n {
                break;
            }
            if u64::from(defence!(served_v4[i])) == lo {
                return true;
            }
        }
    }
    false
}

/// The RRL bucket of (source prefix, `record`): its tag and pair of slots, kept in
/// `QUERY` for [`rate_limit`], and one read of the pair now. The bucket is a cache miss
/// for most clients; read here, right after the name lookup, it overlaps the misses of
/// the prefix lookup that follows instead of adding its own at the end (1.39x the 500k
/// answer read at the end, measured).
#[inline(always)]
fn rrl_prepare(ctx: &XdpContext, q: *mut Query, record: u16) -> Result<(), Pass> {
    if defence!(rrl_interval_ns) == 0 {
        return Ok(());
    }
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (l3, v6) = unsafe {
        (
            reload(&raw const (*q).l3, ETH_HLEN + 8)?,
            reload(&raw const (*q).v6, 1)? != 0,
        )
    };
    let prefix = if v6 {
        let p = ptr_at::<[u8; 16]>(ctx, l3 + 8)?.cast::<u8>();
        // SAFETY: ptr_at checked the 16 bytes are in the packet.
        let (a, b) = unsafe { (pkt::ld64(p), pkt::ld64(p.add(8))) };
        [a & defence!(rrl_v6_mask[0]), b & defence!(rrl_v6_mask[1])]
    } else {
        let p = ptr_at::<[u8; 4]>(ctx, l3 + 12)?;
        // SAFETY: ptr_at checked the 4 bytes are in the packet.
        let a = unsafe { pkt::ld32(p.cast()) };
        [u64::from(a & defence!(rrl_v4_mask)), 0]
    };
    // The words of `RrlKey`: prefix, record, class and family.
    let tail = u64::from(RRL_CLASS_ANSWER) | if v6 { 6 << 8 } else { 4 << 8 };
    let tag = rrl_tag(
        defence!(rrl_seed),
        [prefix[0], prefix[1], u64::from(record), tail],
    );
    let pair = (tag >> 32) as u32 & defence!(rrl_slot_mask) & !1;
    let s0 = RRL.get_ptr(pair).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY (field pointers): `q` is the per-CPU QUERY value; `s0` an array value.
    unsafe {
        core::ptr::write_volatile(&raw mut (*q).rrl_tag, tag);
        store(&raw mut (*q).rrl_pair, pair as usize);
        // Nothing waits for this value: the load is issued now and completes while
        // the prefix lookup runs.
        let early = core::ptr::read_volatile(&raw const (*s0).tag);
        core::ptr::write_volatile(&raw mut (*q).rrl_sink, early);
    }
    Ok(())
}

/// Response rate limiting: one token bucket per (source prefix, record), never the
/// ECS address (anyone can write that). Over the limit the query is dropped, or every
/// `slip`-th gets an empty TC=1 reply (`Query::tc`) so a real resolver retries over
/// TCP, which is exempt.
#[inline(always)]
fn rate_limit(q: *mut Query) -> Result<(), Pass> {
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    unsafe { store(&raw mut (*q).tc, 0) };
    let interval = defence!(rrl_interval_ns);
    if interval == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let (tag, pair) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*q).rrl_tag),
            reload(&raw const (*q).rrl_pair, 1 << 24)?,
        )
    };
    #[expect(clippy::cast_possible_truncation, reason = "bounded by reload")]
    let pair = pair as u32 & defence!(rrl_slot_mask) & !1;
    let s0 = RRL.get_ptr_mut(pair).ok_or(counter::PASS_INTERNAL)?;
    let s1 = RRL.get_ptr_mut(pair | 1).ok_or(counter::PASS_INTERNAL)?;
    let (burst, slip) = (defence!(rrl_burst_ns), defence!(rrl_slip));
    // The jiffy clock: a tick can let one more answer through at the highest rates,
    // and it costs 20-30 ns less per query than `bpf_ktime_get_ns`.
    // SAFETY: helper call without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: array values; concurrent CPUs may race on them, which at worst lets one
    // more answer through or resets a bucket.
    let (s0, s1) = unsafe { (&mut *s0, &mut *s1) };
    let slot = if s0.tag == tag {
        s0
    } else if s1.tag == tag {
        s1
    } else {
        // Neither: take over the one due earlier (see `RrlSlot`) with a fresh bucket.
        let slot = if s0.bucket.tat <= s1.bucket.tat {
            s0
        } else {
            s1
        };
        slot.tag = tag;
        slot.bucket = RrlBucket {
            tat: 0,
            over: 0,
            _pad: 0,
        };
        slot
    };
    let verdict = rrl_step(&mut slot.bucket, now, interval, burst, slip);
    match verdict {
        RRL_ALLOW => Ok(()),
        RRL_SLIP => {
            // SAFETY: as above.
            unsafe { store(&raw mut (*q).tc, 2) };
            Ok(())
        }
        _ => Err(DROP | counter::RRL_DROPPED),
    }
}

/// Copies QNAME, lowercased, into the per-CPU exact-name key and returns its wire length.
/// Only plain labels: a compression pointer or extended label type passes.
///
/// Two passes keep the verifier's work linear: first hop from length byte to length
/// byte (one path per label), then copy bytes with a branch-free lowercase. Length
/// bytes (1..=63) are never in `A..=Z`, so lowercasing every byte is safe.
#[inline(always)]
fn parse_name(ctx: &XdpContext, q: *mut Query, qname: usize) -> Result<usize, Pass> {
    let mut off = 0usize;
    let mut name_len = 0usize;
    // Bound: MAX_LABELS labels plus the root label.
    for _ in 0..=MAX_LABELS {
        let len = read_u8(ctx, qname + off)?;
        if len == 0 {
            name_len = off + 1;
            break;
        }
        if len & 0xC0 != 0 {
            return Err(counter::PASS_NAME);
        }
        off += usize::from(len) + 1;
        if off >= MAX_NAME_WIRE_LEN {
            return Err(counter::PASS_NAME);
        }
    }
    if name_len == 0 {
        // More labels than the kernel's bound: userspace handles it.
        return Err(counter::PASS_NAME);
    }
    // One state from here, whatever the label count.
    let name_len = launder(q, name_len, MAX_NAME_WIRE_LEN)?;
    let qname = launder(q, qname, MAX_PACKET)?;
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(counter::PASS_NAME)?;
    // SAFETY: per-CPU scratch value, valid for the whole program run.
    let key = unsafe { &mut (*scratch).exact };
    let dst = key.name.as_mut_ptr();
    let mut fp = FINGERPRINT_EXACT;
    // Bound: MAX_NAME_WIRE_LEN / 8 words, always all of them (no exit that depends on
    // the name, so the verifier keeps one state); bytes past the name are zero.
    for w in 0..MAX_NAME_WIRE_LEN / 8 {
        let at = 8 * w;
        let left = launder(q, name_len, MAX_NAME_WIRE_LEN)?.saturating_sub(at);
        let mut word = 0u64;
        if left > 0 {
            word = match ptr_at::<[u8; 8]>(ctx, qname + at) {
                // SAFETY: ptr_at checked the 8 bytes are in the packet.
                Ok(p) => unsafe { pkt::ld64(p.cast()) },
                // Fewer than 8 bytes left in the frame (a name ends at most 4 bytes
                // before it): read this word byte by byte.
                Err(_) => read_tail(ctx, q, qname + at, left)?,
            };
        }
        // Keep the name's bytes only (little-endian: the low bytes come first).
        let mask = if left >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * left)) - 1
        };
        let word = to_lower(word & mask);
        fp = fingerprint_step(fp, word);
        // SAFETY: `at + 8 <= MAX_NAME_WIRE_LEN`: inside `key.name`, 8-aligned.
        unsafe { store_word(dst, w, word) };
    }
    // SAFETY: `q` is the per-CPU QUERY value.
    unsafe { core::ptr::write_volatile(&raw mut (*q).fingerprint, fp) };
    Ok(name_len)
}

/// Up to 8 bytes at `offset`, little-endian, zero past `left`.
#[inline(always)]
fn read_tail(ctx: &XdpContext, q: *mut Query, offset: usize, left: usize) -> Result<u64, Pass> {
    let left = launder(q, left, MAX_NAME_WIRE_LEN)?;
    let mut word = 0u64;
    // Bound: 8 bytes.
    for j in 0..8 {
        if j < left {
            word |= u64::from(read_u8(ctx, offset + j)?) << (8 * j);
        }
    }
    Ok(word)
}

/// ASCII lowercase of 8 bytes at once; bytes outside `A..=Z` are unchanged. Label
/// length bytes (1..=63) are never letters, so a whole wire name can go through it.
#[inline(always)]
fn to_lower(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let heptets = x & (0x7F * ONES);
    // High bit of each byte: its low 7 bits are above 'Z' / at least 'A'.
    let above_z = heptets + (0x7F - u64::from(b'Z')) * ONES;
    let from_a = heptets + (0x80 - u64::from(b'A')) * ONES;
    let ascii = !x & (0x80 * ONES);
    let upper = ascii & (from_a ^ above_z) & (0x80 * ONES);
    x | (upper >> 2)
}

/// Parses the single OPT record that ends the query at `end`, keeping a valid ECS option.
#[inline(always)]
fn parse_opt(ctx: &XdpContext, opt: usize, end: usize, q: *mut Query) -> Result<(), Pass> {
    let _ = ptr_at::<[u8; 11]>(ctx, opt)?;
    if read_u8(ctx, opt)? != 0 || read_u16(ctx, opt + 1)? != TYPE_OPT {
        return Err(counter::PASS_EDNS);
    }
    // TTL field: extended RCODE, VERSION, flags. Only version 0 is ours to answer.
    if read_u8(ctx, opt + 6)? != 0 {
        return Err(counter::PASS_EDNS);
    }
    let rdlen = usize::from(read_u16(ctx, opt + 9)?);
    let mut cur = opt + 11;
    if cur + rdlen != end {
        return Err(counter::PASS_EDNS);
    }
    let mut seen_ecs = false;
    // Bound: at most MAX_EDNS_OPTIONS options are walked; more passes.
    for _ in 0..MAX_EDNS_OPTIONS {
        if cur >= end {
            break;
        }
        if cur > MAX_PACKET {
            return Err(counter::PASS_EDNS);
        }
        let code = read_u16(ctx, cur)?;
        let len = usize::from(read_u16(ctx, cur + 2)?);
        let data = cur + 4;
        if data + len > end {
            return Err(counter::PASS_EDNS);
        }
        if code == EDNS_OPT_ECS {
            if seen_ecs {
                return Err(counter::PASS_ECS);
            }
            seen_ecs = true;
            parse_ecs(ctx, data, len, q)?;
        }
        cur = data + len;
    }
    if cur == end {
        Ok(())
    } else {
        Err(counter::PASS_EDNS)
    }
}

/// RFC 7871 section 6: family 1 or 2, source within the family, exactly
/// `ceil(source / 8)` address bytes with no bits set past the prefix, scope 0.
#[inline(always)]
fn parse_ecs(ctx: &XdpContext, data: usize, len: usize, q: *mut Query) -> Result<(), Pass> {
    if len < 4 {
        return Err(counter::PASS_ECS);
    }
    let family = read_u16(ctx, data)?;
    let source = read_u8(ctx, data + 2)?;
    let scope = read_u8(ctx, data + 3)?;
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return Err(counter::PASS_ECS),
    };
    if source > max || scope != 0 {
        return Err(counter::PASS_ECS);
    }
    let alen = usize::from(source).div_ceil(8);
    if len != 4 + alen {
        return Err(counter::PASS_ECS);
    }
    // SAFETY: `q` is the per-CPU QUERY value.
    let addr = unsafe { &mut (*q).ecs_addr };
    // Two word stores, volatile: LLVM turns `[0; 16]`, and two plain stores, into a
    // call of a memset subprogram (a call and a return per ECS query).
    #[expect(clippy::cast_ptr_alignment, reason = "ecs_addr is 8-aligned in Query")]
    let words = addr.as_mut_ptr().cast::<u64>();
    // SAFETY: the 16 bytes of `ecs_addr`, at an 8-aligned offset of the 8-aligned
    // `Query` (checked at compile time next to `QUERY`).
    unsafe {
        words.write_volatile(0);
        words.add(1).write_volatile(0);
    }
    let mut last = 0u8;
    // Bound: 16 address bytes at most.
    for (j, slot) in addr.iter_mut().enumerate() {
        if j >= alen {
            break;
        }
        last = read_u8(ctx, data + 4 + j)?;
        *slot = last;
    }
    let rem = source % 8;
    if rem != 0 && last & (0xFFu8 >> rem) != 0 {
        return Err(counter::PASS_ECS);
    }
    // SAFETY: as above.
    unsafe {
        store(&raw mut (*q).ecs_present, 1);
        store(&raw mut (*q).ecs_family, usize::from(family));
        store(&raw mut (*q).ecs_source, usize::from(source));
    }
    Ok(())
}

/// The parsed query as the reply needs it, read back from `QUERY` (see [`reload`]).
#[expect(clippy::struct_excessive_bools, reason = "flags of one query")]
struct View {
    l3: usize,
    l4: usize,
    question_end: usize,
    v6: bool,
    aaaa: bool,
    rd: u8,
    cd: u8,
    edns: bool,
    ecs: bool,
    ecs_family: u16,
    ecs_source: u8,
    /// TC bit (0x02) of a slipped reply.
    tc: u8,
}

#[inline(always)]
fn view(q: *const Query) -> Result<View, Pass> {
    // SAFETY (all field pointers): `q` is the per-CPU QUERY value.
    unsafe {
        Ok(View {
            l3: reload(&raw const (*q).l3, ETH_HLEN + 8)?,
            l4: reload(&raw const (*q).l4, ETH_HLEN + 8 + IPV6_HLEN)?,
            question_end: reload(&raw const (*q).question_end, MAX_PACKET)?,
            v6: reload(&raw const (*q).v6, 1)? != 0,
            aaaa: reload(&raw const (*q).aaaa, 1)? != 0,
            rd: u8::try_from(reload(&raw const (*q).rd, 1)?).unwrap_or(0),
            cd: u8::try_from(reload(&raw const (*q).cd, 0x10)?).unwrap_or(0),
            edns: reload(&raw const (*q).edns, 1)? != 0,
            ecs: reload(&raw const (*q).ecs_present, 1)? != 0,
            ecs_family: u16::try_from(reload(&raw const (*q).ecs_family, 2)?).unwrap_or(0),
            ecs_source: u8::try_from(reload(&raw const (*q).ecs_source, 128)?).unwrap_or(0),
            tc: u8::try_from(reload(&raw const (*q).tc, 2)?).unwrap_or(0) & 2,
        })
    }
}

/// Looks up the record, the client's region and the answer set; records what the
/// reply stage needs in `QUERY` (it comes back to it after the grow stage), and returns
/// the answer set so the reply in the same program need not look it up again.
#[inline(always)]
fn try_lookup(ctx: &XdpContext, g: &Gen) -> Result<&'static AnswerSet, Pass> {
    let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    let v = view(q)?;
    // SAFETY (field pointer): `q` is the per-CPU QUERY value.
    let flags = unsafe { core::ptr::read_volatile(&raw const (*q).flags) };
    let fast = flags & STATE_FLAG_TRIE_ONLY == 0;
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY: per-CPU scratch value, valid for the whole program run.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: `q` is the per-CPU QUERY value.
    let fp = unsafe { core::ptr::read_volatile(&raw const (*q).fingerprint) };
    let record = lookup_name(scratch, g, fp)?;
    rrl_prepare(ctx, q, record)?;

    // SAFETY: `q` is the per-CPU QUERY value.
    let ecs_addr = unsafe { &(*q).ecs_addr };
    // Client address: the ECS address when a non-zero source prefix was sent, else the
    // packet's source address.
    let use_ecs = v.ecs && v.ecs_source > 0;
    let lookup_v6 = if use_ecs { v.ecs_family == 2 } else { v.v6 };
    let prefix = if lookup_v6 {
        let addr = if use_ecs {
            *ecs_addr
        } else {
            let p = ptr_at::<[u8; 16]>(ctx, v.l3 + 8)?.cast::<u8>();
            // SAFETY: ptr_at checked the 16 bytes are in the packet.
            let (hi, lo) = unsafe { (pkt::ld64(p), pkt::ld64(p.add(8))) };
            (u128::from(hi) | (u128::from(lo) << 64)).to_le_bytes()
        };
        lookup_v6_prefix(&addr, g, fast, flags)
    } else {
        let addr = if use_ecs {
            [ecs_addr[0], ecs_addr[1], ecs_addr[2], ecs_addr[3]]
        } else {
            let p = ptr_at::<[u8; 4]>(ctx, v.l3 + 12)?;
            // SAFETY: ptr_at checked the 4 bytes are in the packet.
            unsafe { pkt::ld32(p.cast()) }.to_le_bytes()
        };
        lookup_v4_prefix(&addr, g, fast)
    }
    .ok_or(counter::PASS_NO_REGION)?;

    let set = answer_set(g, record, prefix.region)?;
    let n = usize::from(if v.aaaa { set.n_v6 } else { set.n_v4 });
    if n == 0 || n > MAX_ANSWER_ADDRS {
        return Err(counter::PASS_NO_ANSWER);
    }
    let first = if set.policy == POLICY_SPREAD {
        let cum = if v.aaaa { &set.cum_v6 } else { &set.cum_v4 };
        pick_weighted(cum, n)
    } else {
        0
    };
    let scope = if use_ecs { prefix.prefix_len } else { 0 };
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).record, usize::from(record));
        store(&raw mut (*q).region, usize::from(prefix.region));
        store(&raw mut (*q).scope, usize::from(scope));
        store(&raw mut (*q).first, first);
    }
    Ok(set)
}

#[inline(always)]
fn answer_set(g: &Gen, record: u16, region: u16) -> Result<&'static AnswerSet, Pass> {
    // Walk the slots of the key's probe sequence (see `ANSWER_SLOT_USED`): an empty
    // slot ends it; set 0 is the empty set, which has no address to answer with.
    let packed = AnswerKey { record, region }.packed();
    // SAFETY: reading a loader-set constant.
    let mask = unsafe { core::ptr::read_volatile(&raw const ANSWER_SLOT_MASK) };
    let mut at = answer_hash(packed);
    // Bound: ANSWER_PROBES slots.
    for _ in 0..ANSWER_PROBES {
        // One 8-byte load: userspace switches a key's set with one atomic store.
        let slot = *g.answers.get(at & mask).ok_or(counter::PASS_NO_ANSWER)?;
        if slot == 0 {
            break;
        }
        #[expect(clippy::cast_possible_truncation, reason = "the low 32 bits")]
        if slot as u32 == packed {
            let set = ((slot >> 32) as u32) & 0x7FFF_FFFF;
            return g.sets.get(set).ok_or(counter::PASS_NO_ANSWER);
        }
        at = at.wrapping_add(1);
    }
    Err(counter::PASS_NO_ANSWER)
}

/// Rewrites the query into the reply, from what the lookup stage recorded (the reply
/// stage, entered again after the grow stage).
#[inline(always)]
fn try_reply(ctx: &XdpContext, g: &Gen) -> Result<Option<u32>, Pass> {
    let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (record, region) = unsafe {
        (
            reload(&raw const (*q).record, 0xFFFF)?,
            reload(&raw const (*q).region, 0xFFFF)?,
        )
    };
    #[expect(clippy::cast_possible_truncation, reason = "bounded by reload")]
    let set = answer_set(g, record as u16, region as u16)?;
    reply_with(ctx, q, set)
}

/// Rewrites the query into the reply from answer set `set` and what the lookup recorded
/// in `QUERY` (read back here, so the verifier checks this part in one state however
/// the lookup went).
#[inline(always)]
fn reply_with(ctx: &XdpContext, q: *mut Query, set: &AnswerSet) -> Result<Option<u32>, Pass> {
    let v = view(q)?;
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (scope, first) = unsafe {
        (
            reload(&raw const (*q).scope, 128)?,
            reload(&raw const (*q).first, MAX_ANSWER_ADDRS - 1)?,
        )
    };
    // The set may have changed since the lookup (a node went down): check again.
    let n = usize::from(if v.aaaa { set.n_v6 } else { set.n_v4 });
    if n == 0 || n > MAX_ANSWER_ADDRS {
        return Err(counter::PASS_NO_ANSWER);
    }
    let first = if first < n { first } else { 0 };
    // A slipped reply (RRL) carries no answer.
    let want = if v.tc == 0 {
        usize::from(set.count).max(1).min(n)
    } else {
        0
    };
    // SAFETY: `q` is the per-CPU QUERY value.
    let ecs_addr = unsafe { &(*q).ecs_addr };
    #[expect(clippy::cast_possible_truncation, reason = "bounded by reload")]
    if !write_reply(ctx, q, &v, ecs_addr, set, first, want, n, scope as u8)? {
        return Ok(None);
    }
    if v.tc != 0 {
        count(counter::RRL_SLIPPED);
        return Ok(Some(xdp_action::XDP_TX));
    }
    count(if v.v6 {
        counter::ANSWERED_V6
    } else {
        counter::ANSWERED_V4
    });
    count(if v.ecs {
        counter::ANSWERED_ECS
    } else {
        counter::ANSWERED_NO_ECS
    });
    Ok(Some(xdp_action::XDP_TX))
}

/// Word `w` of a name (8 bytes at `name + 8 * w`).
///
/// # Safety
/// `name` must be 8-aligned with `8 * w + 8` bytes readable: the names in `NameKey`
/// and `NameEntry` are (offsets 8 and 16 of 8-aligned map values), which lets the kernel use
/// one 8-byte access instead of eight byte accesses.
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "8-aligned, see above")]
unsafe fn load_word(name: *const u8, w: usize) -> u64 {
    // SAFETY: see the function's contract.
    unsafe { name.add(8 * w).cast::<u64>().read() }
}

/// Stores word `w` of a name; the same contract as [`load_word`], writable.
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "8-aligned, see load_word")]
unsafe fn store_word(name: *mut u8, w: usize, value: u64) {
    // SAFETY: see load_word.
    unsafe { name.add(8 * w).cast::<u64>().write(value) };
}

/// Looks `key` up by its fingerprint `fp` (the slots of its probe sequence, see
/// `NameEntry`) and checks the whole name.
#[inline(always)]
fn find_name(names: &Array<NameEntry>, key: &NameKey, fp: u64) -> Option<u16> {
    // SAFETY: reading a loader-set constant.
    let mask = unsafe { core::ptr::read_volatile(&raw const NAME_SLOT_MASK) };
    #[expect(clippy::cast_possible_truncation, reason = "the low bits index")]
    let mut at = fp as u32;
    // Bound: NAME_PROBES slots.
    for _ in 0..NAME_PROBES {
        let entry = names.get(at & mask)?;
        if entry.fingerprint == 0 {
            return None;
        }
        if entry.fingerprint == fp && entry.wildcard == key.wildcard {
            let a = key.name.as_ptr();
            let b = entry.name.as_ptr();
            let mut diff = 0u64;
            // Bound: MAX_NAME_WIRE_LEN / 8 words; no early exit (one verifier state).
            for w in 0..MAX_NAME_WIRE_LEN / 8 {
                // SAFETY: both names are 8-aligned with MAX_NAME_WIRE_LEN bytes.
                unsafe {
                    diff |= load_word(a, w) ^ load_word(b, w);
                }
            }
            if diff == 0 {
                return Some(entry.record);
            }
        }
        at = at.wrapping_add(1);
    }
    None
}

/// The record of the query name: the exact key, else the wildcard at the closest
/// encloser (RFC 4592). Userspace puts a wildcard key in `NAMES` for every name that
/// exists, holding the record of its geo wildcard or `NAME_BLOCK`, so the first
/// wildcard key found walking up from the name itself is the closest encloser: found at
/// the name, the name exists without a geo record (pass); `NAME_BLOCK`: no wildcard
/// there (pass, userspace answers NXDOMAIN, NODATA or a referral).
#[inline(always)]
fn lookup_name(scratch: &mut Scratch, g: &Gen, fp: u64) -> Result<u16, Pass> {
    use geodns_common::NAME_BLOCK;
    let names = g.names;
    if let Some(record) = find_name(names, &scratch.exact, fp) {
        return Ok(record);
    }
    scratch.wildcard.wildcard = 1;
    let src = scratch.exact.name.as_ptr();
    let dst = scratch.wildcard.name.as_mut_ptr();
    // Offset of the name tried in `exact.name`: the query name, then each ancestor.
    let mut skip = 0usize;
    // Bound: MAX_LABELS + 1 names (a name of MAX_LABELS labels and its ancestors up to
    // the root, which no zone holds).
    for level in 0..=MAX_LABELS {
        let mut wfp = FINGERPRINT_WILDCARD;
        // Bound: MAX_NAME_WIRE_LEN / 8 words, always all of them and without a branch on
        // `skip` (a branch would split its range and the verifier's states with it).
        for w in 0..MAX_NAME_WIRE_LEN / 8 {
            let at = masked(skip + 8 * w, 255);
            // SAFETY: `at + 8 <= 263` stays inside `exact.name` + `zeros`, which hold the
            // name then zeros; `8 * w + 8 <= MAX_NAME_WIRE_LEN` stays inside `wildcard.name` (8-aligned).
            unsafe {
                let word = src.add(at).cast::<u64>().read_unaligned();
                wfp = fingerprint_step(wfp, word);
                store_word(dst, w, word);
            }
        }
        if let Some(record) = find_name(names, &scratch.wildcard, wfp) {
            if level == 0 || record == NAME_BLOCK {
                return Err(counter::PASS_NOT_SERVED);
            }
            return Ok(record);
        }
        // The next ancestor: past this name's first label (the root ends the walk).
        let len = usize::from(scratch.exact.name[masked(skip, MAX_NAME_WIRE_LEN - 1)]);
        if len == 0 {
            break;
        }
        skip = masked(skip + len + 1, MAX_NAME_WIRE_LEN - 1);
    }
    Err(counter::PASS_NOT_SERVED)
}

/// Lane `lane & 1` of a word: u32 values sit two per u64, the even lane low.
#[inline(always)]
#[expect(clippy::cast_possible_truncation, reason = "the low half is the lane")]
fn lane_of(word: u64, lane: u32) -> u32 {
    (word >> ((lane & 1) * 32)) as u32
}

/// The fast path's answer for an address: top slot `top`, then one stride per byte
/// of `bytes` while the slot names a block. `None` asks the trie. Bound: `bytes.len()`
/// strides (`FAST_V4_STRIDES`, `FAST_V6_STRIDES`).
#[inline(always)]
fn fast_walk(g: &Gen, top: u32, bytes: &[u8]) -> Option<PrefixValue> {
    let mut value = lane_of(*g.fast_top.get(top >> 1)?, top);
    for &byte in bytes {
        if value & FAST_BLOCK == 0 {
            break;
        }
        // One lookup per stride: the block lies inside this page, read at masked
        // offsets (the mask keeps every access inside the element for the verifier).
        let w = value & FAST_OFFSET;
        let page = g.fast_blocks.get(w / FAST_PAGE_WORDS)?;
        let word = |x: u32| page[masked(x as usize, FAST_PAGE_WORDS as usize - 1)];
        let i = w % FAST_PAGE_WORDS;
        let lane = fast_block_lane(value & FAST_LIST != 0, i, byte, word);
        value = lane_of(word(lane >> 1), lane);
    }
    fast_leaf(value)
}

#[inline(always)]
fn lookup_v4_prefix(addr: &[u8; 4], g: &Gen, fast: bool) -> Option<PrefixValue> {
    if fast {
        // The /16's top slot, then a stride for the /24 slots (DIR-24-8's first
        // step) and one for the last byte.
        let top = u32::from(u16::from_be_bytes([addr[0], addr[1]]));
        if let Some(v) = fast_walk(g, top, &addr[2..2 + FAST_V4_STRIDES]) {
            return Some(v);
        }
    }
    g.prefix_v4.get(Key::new(32, *addr)).copied()
}

/// The IPv6 client's prefix. In an alias range the table's databases point at their
/// IPv4 tree (`flags`: `STATE_FLAG_ALIAS_*`, set with the generation), the client is
/// looked up as its embedded IPv4 address and the scope is the IPv4 match moved into
/// the range (+96, +32 or +16): exact, since every address of that block embeds an
/// address of the IPv4 prefix. The IPv6 table holds each such range as one prefix of
/// its own, so no IPv6 prefix claims a scope across it.
#[inline(always)]
fn lookup_v6_prefix(addr: &[u8; 16], g: &Gen, fast: bool, flags: u32) -> Option<PrefixValue> {
    if flags & STATE_FLAG_ALIASES != 0 {
        if let Some((v4, offset)) = ipv6_alias(addr, flags) {
            let mut v = lookup_v4_prefix(&v4, g, fast)?;
            v.prefix_len = v.prefix_len.wrapping_add(offset);
            return Some(v);
        }
    }
    if fast {
        // The top slot of the first 16 bits, then 8-bit strides down to /64.
        let top = FAST_V6_TOP + u32::from(u16::from_be_bytes([addr[0], addr[1]]));
        if let Some(v) = fast_walk(g, top, &addr[2..2 + FAST_V6_STRIDES]) {
            return Some(v);
        }
    }
    g.prefix_v6.get(Key::new(128, *addr)).copied()
}

/// Index of the first slot whose cumulative weight exceeds a uniform draw.
#[inline(always)]
fn pick_weighted(cum: &[u32; MAX_ANSWER_ADDRS], n: usize) -> usize {
    let total = cum[masked(n.wrapping_sub(1), MAX_ANSWER_ADDRS - 1)];
    if total == 0 {
        return 0;
    }
    // SAFETY: helper call without arguments.
    let r = unsafe { bpf_get_prandom_u32() } % total;
    // Bound: MAX_ANSWER_ADDRS slots.
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

/// Rewrites the query in place into the reply: keeps headers and question, appends the
/// answer records and the OPT record, swaps addresses and ports, fixes lengths and
/// checksums. Everything the reply needs from the query's tail is already in `q`.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "all are parts of one reply")]
fn write_reply(
    ctx: &XdpContext,
    qp: *mut Query,
    q: &View,
    ecs_addr: &[u8; 16],
    set: &AnswerSet,
    first: usize,
    want: usize,
    n: usize,
    scope: u8,
) -> Result<bool, Pass> {
    let rdlen: usize = if q.aaaa { 16 } else { 4 };
    let rr_len = 12 + rdlen;
    let ecs_alen = usize::from(q.ecs_source).div_ceil(8);
    let ecs_opt_len = if q.ecs { 4 + 4 + ecs_alen } else { 0 };
    let opt_len = if q.edns { 11 + ecs_opt_len } else { 0 };
    let answers_end = launder(qp, q.question_end + want * rr_len, MAX_PACKET)?;
    let new_end = answers_end + opt_len;
    let old_len = ctx.data_end() - ctx.data();
    #[expect(
        clippy::cast_possible_wrap,
        clippy::cast_possible_truncation,
        reason = "both are below MAX_PACKET"
    )]
    let delta = new_end as i32 - old_len as i32;
    if new_end > MAX_PACKET {
        return Err(counter::PASS_TOO_BIG);
    }
    // SAFETY (field pointer): `qp` is the per-CPU QUERY value.
    let grown = unsafe { reload(&raw const (*qp).grown, 1)? } != 0;
    // SAFETY: the helper checks delta against the frame; on failure nothing changed.
    if !grown && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        // Not enough tailroom: the grow stage makes room in the headroom, which
        // native XDP always has, and comes back here.
        let grow = usize::try_from(delta).map_err(|_| counter::PASS_TOO_BIG)?;
        // SAFETY: as above.
        unsafe { store(&raw mut (*qp).grow, grow) };
        return Ok(false);
    }

    // Answer records: pointer to the question name, type, class IN, TTL, address. The
    // 12 bytes before the address are the same in every record: two stores.
    let qtype = if q.aaaa { TYPE_AAAA } else { TYPE_A };
    let [t0, t1] = qtype.to_be_bytes();
    let [l0, l1] = u16::try_from(rdlen).unwrap_or(4).to_be_bytes();
    let [ttl0, ttl1, ttl2, ttl3] = set.ttl.to_be_bytes();
    let rr_head = u64::from_le_bytes([0xC0, 0x0C, t0, t1, 0, 1, ttl0, ttl1]);
    let rr_tail = u32::from_le_bytes([ttl2, ttl3, l0, l1]);
    // Bound: MAX_ANSWER_ADDRS records. No exit on `want` and the slot laundered: the
    // verifier then keeps one state whatever `want`, `first` and `n` are.
    for k in 0..MAX_ANSWER_ADDRS {
        if k >= want {
            continue;
        }
        let off = q.question_end + k * rr_len;
        // `first < n` and `k < want <= n`: one subtraction wraps it (no `%`, whose
        // division-by-zero check LLVM keeps as a panic call the verifier rejects).
        let at = first + k;
        let at = if at >= n { at - n } else { at };
        let slot = masked(launder(qp, at, MAX_ANSWER_ADDRS - 1)?, MAX_ANSWER_ADDRS - 1);
        if q.aaaa {
            let p = ptr_at::<[u8; 12 + 16]>(ctx, off)?.cast::<u8>();
            // The address is 4-aligned in the map value (`AnswerSet` is 4-aligned, `v6`
            // at offset 72, 16 bytes each): four u32 loads rather than 16 byte loads.
            #[expect(clippy::cast_ptr_alignment, reason = "4-aligned, see above")]
            let a = set.v6[slot].as_ptr().cast::<u32>();
            // SAFETY: ptr_at checked the 28 bytes; `a` is aligned, see above.
            unsafe {
                pkt::st64(p, rr_head);
                pkt::st32(p.add(8), rr_tail);
                pkt::st32(p.add(12), a.read());
                pkt::st32(p.add(16), a.add(1).read());
                pkt::st32(p.add(20), a.add(2).read());
                pkt::st32(p.add(24), a.add(3).read());
            }
        } else {
            let p = ptr_at::<[u8; 12 + 4]>(ctx, off)?.cast::<u8>();
            // The address is 4-aligned in the map value (`v4` at offset 8, 4 bytes each).
            #[expect(clippy::cast_ptr_alignment, reason = "4-aligned, see above")]
            let a = set.v4[slot].as_ptr().cast::<u32>();
            // SAFETY: ptr_at checked the 16 bytes; `a` is aligned, see above.
            unsafe {
                pkt::st64(p, rr_head);
                pkt::st32(p.add(8), rr_tail);
                pkt::st32(p.add(12), a.read());
            }
        }
    }

    if q.edns {
        let [p0, p1] = EDNS_UDP_PAYLOAD.to_be_bytes();
        let [r0, r1] = u16::try_from(ecs_opt_len).unwrap_or(0).to_be_bytes();
        // OPT: root name, type, payload size, TTL 0 (ext. RCODE, version, flags), RDLENGTH.
        let p = ptr_at::<[u8; 11]>(ctx, answers_end)?.cast::<u8>();
        // SAFETY: ptr_at checked the 11 bytes (the two stores overlap in byte 7).
        unsafe {
            pkt::st64(p, u64::from_le_bytes([0, 0, 41, p0, p1, 0, 0, 0]));
            pkt::st32(p.add(7), u32::from_le_bytes([0, 0, r0, r1]));
        }
        if q.ecs {
            let [o0, o1] = u16::try_from(4 + ecs_alen).unwrap_or(0).to_be_bytes();
            let [f0, f1] = q.ecs_family.to_be_bytes();
            let at = answers_end + 11;
            let p = ptr_at::<[u8; 8]>(ctx, at)?.cast::<u8>();
            let opt = u64::from_le_bytes([0, 8, o0, o1, f0, f1, q.ecs_source, scope]);
            // SAFETY: ptr_at checked the 8 bytes.
            unsafe { pkt::st64(p, opt) };
            // Bound: 16 address bytes at most.
            for (j, b) in ecs_addr.iter().enumerate() {
                if j < ecs_alen {
                    write_bytes(ctx, at + 8 + j, [*b])?;
                }
            }
        }
    }

    let new_end = launder(qp, new_end, MAX_PACKET)?;
    // DNS header: QR=1 AA=1, TC for a slip, RD and CD copied, RA=AD=Z=0, RCODE=0; the
    // counts.
    let [a0, a1] = u16::try_from(want).unwrap_or(1).to_be_bytes();
    let p = ptr_at::<[u8; 10]>(ctx, q.l4 + UDP_HLEN + 2)?.cast::<u8>();
    // SAFETY: ptr_at checked the 10 bytes.
    unsafe {
        pkt::st64(
            p,
            u64::from_le_bytes([0x84 | q.tc | q.rd, q.cd, 0, 1, a0, a1, 0, 0]),
        );
        pkt::st16(p.add(8), u16::from_le_bytes([0, u8::from(q.edns)]));
    }

    // SAFETY: `qp` is the per-CPU QUERY value; `end` is free once the query is parsed.
    unsafe { store(&raw mut (*qp).end, new_end) };
    finish_reply(ctx, qp)?;
    Ok(true)
}

/// Swaps addresses and ports, sets lengths and checksums. Every input is read back
/// from `QUERY`, so however many paths built the reply, the verifier checks this part
/// (and its checksum loop) once: nothing it reads differs between them.
///
/// Checksums are summed over words as they sit in memory (little-endian loads): the
/// one's-complement sum of byte-swapped words is the byte-swapped sum (RFC 1071,
/// section 2), so the folded sum is stored back as it is, and constants added to it
/// (protocol, lengths) are byte-swapped first.
#[inline(always)]
fn finish_reply(ctx: &XdpContext, qp: *mut Query) -> Result<(), Pass> {
    // SAFETY (field pointers): `qp` is the per-CPU QUERY value.
    let (l3, l4, v6, new_end) = unsafe {
        (
            reload(&raw const (*qp).l3, ETH_HLEN + 8)?,
            reload(&raw const (*qp).l4, ETH_HLEN + 8 + IPV6_HLEN)?,
            reload(&raw const (*qp).v6, 1)? != 0,
            reload(&raw const (*qp).end, MAX_PACKET)?,
        )
    };
    // Ethernet: swap MACs.
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?.cast::<u8>();
    // SAFETY: ptr_at checked 12 bytes.
    unsafe {
        let (d0, d1) = (pkt::ld32(eth), pkt::ld16(eth.add(4)));
        let (s0, s1) = (pkt::ld32(eth.add(6)), pkt::ld16(eth.add(10)));
        pkt::st32(eth, s0);
        pkt::st16(eth.add(4), s1);
        pkt::st32(eth.add(6), d0);
        pkt::st16(eth.add(10), d1);
    }

    let udp_len = launder(qp, new_end - l4, MAX_PACKET)?;
    let udp_len_be = u16::try_from(udp_len).unwrap_or(0).to_be();
    // UDP: swap ports, set length, zero the checksum before summing.
    let udp = ptr_at::<[u8; UDP_HLEN]>(ctx, l4)?.cast::<u8>();
    // SAFETY: ptr_at checked 8 bytes.
    unsafe {
        pkt::st32(udp, pkt::ld32(udp).rotate_left(16));
        pkt::st32(udp.add(4), u32::from(udp_len_be));
    }

    // Pseudo-header addresses (their sum does not change with the swap).
    let mut sum: u64 = if v6 {
        let ip = ptr_at::<[u8; IPV6_HLEN]>(ctx, l3)?.cast::<u8>();
        // SAFETY: ptr_at checked 40 bytes.
        unsafe {
            let s = (pkt::ld64(ip.add(8)), pkt::ld64(ip.add(16)));
            let d = (pkt::ld64(ip.add(24)), pkt::ld64(ip.add(32)));
            pkt::st64(ip.add(8), d.0);
            pkt::st64(ip.add(16), d.1);
            pkt::st64(ip.add(24), s.0);
            pkt::st64(ip.add(32), s.1);
            pkt::st16(ip.add(4), udp_len_be);
            *ip.add(7) = REPLY_TTL;
            halves(s.0) + halves(s.1) + halves(d.0) + halves(d.1)
        }
    } else {
        let ip = ptr_at::<[u8; IPV4_HLEN]>(ctx, l3)?.cast::<u8>();
        let total_be = u16::try_from(IPV4_HLEN + udp_len).unwrap_or(0).to_be();
        // SAFETY: ptr_at checked 20 bytes.
        unsafe {
            // The header is rewritten in registers and stored as whole words: loading
            // it back after narrower stores would stall on store forwarding. Bytes
            // (little-endian lanes) 0..8: the total length at 2..4; 8..16: TTL at 8,
            // protocol at 9 (kept), checksum at 10..12 (0 while summing), the source
            // address at 12..16, which becomes the query's destination.
            let (w0, w1) = (pkt::ld64(ip), pkt::ld64(ip.add(8)));
            let dst = pkt::ld32(ip.add(16));
            let src = (w1 >> 32) as u32;
            let w0 = (w0 & !0xFFFF_0000) | u64::from(total_be) << 16;
            let w1 = (w1 & 0xFF00) | u64::from(REPLY_TTL) | u64::from(dst) << 32;
            pkt::st64(ip, w0);
            pkt::st64(ip.add(8), w1);
            pkt::st32(ip.add(16), src);
            // Bytes 0..8, 8..16 and 16..20 (now the source address).
            let header = halves(w0) + halves(w1) + u64::from(src);
            pkt::st16(ip.add(10), !fold(header));
            u64::from(src) + u64::from(dst)
        }
    };
    // Pseudo-header: protocol and UDP length.
    sum += u64::from(u16::from(IPPROTO_UDP).to_be()) + u64::from(udp_len_be);
    sum += sum_words(ctx, l4, udp_len)?;
    let mut csum = !fold(sum);
    if csum == 0 {
        csum = 0xFFFF;
    }
    // SAFETY: `udp` was checked above for 8 bytes; the packet has not changed size.
    unsafe { pkt::st16(udp.add(6), csum) };
    Ok(())
}

/// Most bytes [`grow_at_head`] moves: headers with two VLAN tags, IPv6, UDP, DNS
/// header and the longest name the kernel answers, plus QTYPE/QCLASS.
const MAX_KEEP: usize = 22 + IPV6_HLEN + UDP_HLEN + DNS_HLEN + MAX_NAME_WIRE_LEN + 4;

/// Makes the frame `grow` bytes longer by extending it at the front, then moves the
/// first `keep` bytes (headers and question) to the new start. The bytes after `keep`
/// are left for the reply to overwrite.
#[inline(always)]
fn grow_at_head(ctx: &XdpContext, qp: *mut Query, grow: usize, keep: usize) -> Result<(), Pass> {
    let grow = launder(qp, grow, 256)?;
    let keep = launder(qp, keep, MAX_KEEP)?;
    #[expect(
        clippy::cast_possible_wrap,
        clippy::cast_possible_truncation,
        reason = "<= 256"
    )]
    let delta = -(grow as i32);
    // SAFETY: the helper checks delta against the headroom; on failure nothing changed.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return Err(counter::PASS_TOO_BIG);
    }
    // Forward copy (the destination is below the source). Every read is inside the
    // frame: `at + 8 <= keep <= old length`, and the frame is now `grow` longer.
    // Bound: MAX_KEEP / 8 + 1 words, then up to 7 bytes; no exit on `keep`.
    // `keep` is laundered again for each comparison, so a comparison never narrows a
    // value the next iteration uses (that would split the verifier's states).
    for w in 0..=MAX_KEEP / 8 {
        let at = 8 * w;
        if at + 8 <= launder(qp, keep, MAX_KEEP)? {
            // SAFETY: ptr_at checked both ranges.
            unsafe {
                let word = ptr_at::<[u8; 8]>(ctx, grow + at)?.read_unaligned();
                ptr_at::<[u8; 8]>(ctx, at)?.write_unaligned(word);
            }
        }
    }
    for j in 0..8 {
        let k = launder(qp, keep, MAX_KEEP)?;
        let at = (k & !7) + j;
        if at < k {
            let b = read_u8(ctx, grow + at)?;
            write_bytes(ctx, at, [b])?;
        }
    }
    Ok(())
}

#[inline(always)]
fn swap_addrs<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<(), Pass> {
    let src = ptr_at::<[u8; N]>(ctx, offset)?;
    let dst = ptr_at::<[u8; N]>(ctx, offset + N)?;
    // SAFETY: ptr_at checked both ranges.
    unsafe {
        let s = src.read_unaligned();
        let d = dst.read_unaligned();
        src.write_unaligned(d);
        dst.write_unaligned(s);
    }
    Ok(())
}

/// The two 32-bit halves of a word, added (for a one's-complement sum in 64 bits).
#[inline(always)]
fn halves(w: u64) -> u64 {
    (w >> 32) + (w & 0xFFFF_FFFF)
}

/// Sum of `len` packet bytes at `offset` as little-endian words (see [`finish_reply`]),
/// 8 bytes per load, then 4, 2 and 1.
#[inline(always)]
fn sum_words(ctx: &XdpContext, offset: usize, len: usize) -> Result<u64, Pass> {
    let mut sum: u64 = 0;
    // Bound: MAX_CSUM_WORDS / 4 words of 8 bytes.
    for i in 0..MAX_CSUM_WORDS / 4 {
        let at = 8 * i;
        if at + 8 > len {
            break;
        }
        let p = ptr_at::<[u8; 8]>(ctx, offset + at)?;
        // SAFETY: ptr_at checked the 8 bytes.
        sum += halves(unsafe { pkt::ld64(p.cast()) });
    }
    // The last 0..=7 bytes; a last odd byte is the first (low, in memory order) of
    // its 16-bit word.
    let mut at = offset + (len & !7);
    if len & 4 != 0 {
        let p = ptr_at::<[u8; 4]>(ctx, at)?;
        // SAFETY: ptr_at checked the 4 bytes.
        sum += u64::from(unsafe { pkt::ld32(p.cast()) });
        at += 4;
    }
    if len & 2 != 0 {
        let p = ptr_at::<[u8; 2]>(ctx, at)?;
        // SAFETY: ptr_at checked the 2 bytes.
        sum += u64::from(unsafe { pkt::ld16(p.cast()) });
        at += 2;
    }
    if len & 1 != 0 {
        sum += u64::from(read_u8(ctx, at)?);
    }
    Ok(sum)
}

/// Folds a one's-complement sum to 16 bits.
#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    u16::try_from(sum).unwrap_or(0xFFFF)
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
