//! The per-CPU query record the stages pass on, and the verifier's round trips through it.

use crate::*;

/// Where the layers of a query sit, and what the reply needs from it. Kept in a
/// per-CPU map rather than on the stack: see [`reload`].
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Query {
    pub(crate) l3: u32,
    pub(crate) l4: u32,
    pub(crate) dns: u32,
    /// Offset just past QTYPE/QCLASS: the reply keeps everything before it.
    pub(crate) question_end: u32,
    /// Offset of the end of the DNS message (UDP length, not the frame end).
    pub(crate) end: u32,
    pub(crate) v6: u32,
    pub(crate) aaaa: u32,
    /// RD (bit 0 of flags byte 2), copied to the reply.
    pub(crate) rd: u32,
    /// CD (bit 4 of flags byte 3), copied to the reply.
    pub(crate) cd: u32,
    pub(crate) edns: u32,
    /// A valid EDNS Client Subnet option (RFC 7871) was received.
    pub(crate) ecs_present: u32,
    pub(crate) ecs_family: u32,
    pub(crate) ecs_source: u32,
    /// Round-trip slot for [`launder`].
    pub(crate) tmp: u32,
    /// Generation and flags read at parse time: every stage uses the same ones.
    pub(crate) generation: u32,
    pub(crate) flags: u32,
    /// Fingerprint of the exact name key, computed while copying it.
    pub(crate) fingerprint: u64,
    /// Found by the lookup stage, for the reply stage.
    pub(crate) record: u32,
    pub(crate) region: u32,
    pub(crate) scope: u32,
    pub(crate) first: u32,
    /// Bytes the grow stage must add at the front (the tail had no room), and whether
    /// it did.
    pub(crate) grow: u32,
    pub(crate) grown: u32,
    /// 0x02 (the TC bit of flags byte 2) when RRL slips this reply: no answers.
    pub(crate) tc: u32,
    /// The RRL bucket's pair of slots and its tag (`rrl_prepare`), and where the
    /// early read of the pair lands.
    pub(crate) rrl_pair: u32,
    pub(crate) rrl_tag: u64,
    pub(crate) rrl_sink: u64,
    /// One's-complement sum (see `checksum`) of the question as it is in the packet:
    /// the name's raw bytes, QTYPE and QCLASS, as 16-bit words from the name's start.
    /// Summed while parsing, so the reply's UDP checksum needs no pass over the packet.
    pub(crate) question_sum: u64,
    /// The same sum of the whole DNS message of a geo reply (header, question, answers,
    /// OPT), from its start: `write_reply` sums what it writes, `finish_reply` adds the
    /// UDP header and the pseudo-header. Handed over here, not as an argument: a sum
    /// kept in a register carries its bounds on each path, and the lookup stage then
    /// verifies in 551k instructions instead of 165k.
    pub(crate) payload_sum: u64,
    /// The static stage's answer (an index of `STATIC_ANSWERS_*`), kept for its second
    /// entry after the grow stage; the pass reason it falls back to (`PASS_QTYPE` or
    /// `PASS_NOT_SERVED`). Written only on the static path.
    pub(crate) static_answer: u32,
    pub(crate) static_reason: u32,
    /// ECS address bytes as received (`ceil(source / 8)` of them), zero padded.
    pub(crate) ecs_addr: [u8; 16],
}

#[map]
pub(crate) static QUERY: PerCpuArray<Query> = PerCpuArray::with_max_entries(1, 0);
const _: () = assert!(core::mem::offset_of!(Query, ecs_addr) % 8 == 0);
const _: () = assert!(core::mem::align_of::<Query>() == 8);

/// Reads back a value the program stored in its per-CPU `QUERY` map, bounded by `max`.
///
/// The verifier knows nothing of map contents, so every path that reaches a reload
/// continues in one state. Without it the verifier explores each combination of VLAN
/// depth x label count x EDNS option count separately and gives up at 1M instructions.
#[inline(always)]
pub(crate) fn reload(field: *const u32, max: usize) -> Result<usize, Pass> {
    // SAFETY: `field` points into the per-CPU QUERY value, valid for the program run.
    let v = unsafe { core::ptr::read_volatile(field) } as usize;
    if v > max {
        return Err(counter::PASS_HEADER);
    }
    Ok(v)
}

/// [`reload`] of a value a stage stored after checking it: out of bounds it is the
/// program's own inconsistency, counted as internal, not as a bad header.
#[inline(always)]
pub(crate) fn reload_internal(field: *const u32, max: usize) -> Result<usize, Pass> {
    reload(field, max).map_err(|_| counter::PASS_INTERNAL)
}

/// Passes `value` through the per-CPU map so every path continues in one state (see
/// [`reload`]); used between the phases of writing the reply.
#[inline(always)]
pub(crate) fn launder(q: *mut Query, value: usize, max: usize) -> Result<usize, Pass> {
    // SAFETY: `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).tmp, value);
        reload(&raw const (*q).tmp, max)
    }
}

/// `value`, checked against `max` and opaque to LLVM, without the round trip of
/// [`launder`]: for a value the verifier need not see as one state on every path.
#[inline(always)]
pub(crate) fn bounded(value: usize, max: usize) -> Result<usize, Pass> {
    let v = opaque(value);
    if v > max {
        return Err(counter::PASS_INTERNAL);
    }
    Ok(v)
}

#[inline(always)]
pub(crate) fn store(field: *mut u32, value: usize) {
    // SAFETY: `field` points into the per-CPU QUERY value, valid for the program run.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "offsets are below MAX_PACKET"
    )]
    unsafe {
        core::ptr::write_volatile(field, value as u32);
    };
}
