//! Stage 2b: the zone's static answers (see `geodns_common::statics`): the node of the
//! query name or of its closest encloser, the answer for the query type, and its
//! precomputed records copied after the question.

use crate::*;

/// The answer for a name found in no zone's tree: REFUSED (see `STATIC_REFUSED`).
const NOT_FOUND: u32 = u32::MAX;

/// Records why the query goes to the static stage: the reason it passes with when
/// the static tables do not answer it either.
#[inline(always)]
pub(crate) fn to_static(reason: u32) {
    if let Some(q) = QUERY.get_ptr_mut(0) {
        // SAFETY: `q` is the per-CPU QUERY value.
        unsafe { store(&raw mut (*q).static_reason, reason as usize) };
    }
}

/// Set in `Query::grow` by the static stage (and in what `try_grow` returns): the frame
/// grown holds a static answer, and the grow stage goes back to the static stage.
pub(crate) const GROW_STATIC: u32 = 0x200;

/// The node of the first wildcard key found in `NAMES` walking up from the query name
/// (held in `scratch.exact`), and at which level (0: the name itself). `NOT_FOUND`
/// when no ancestor is in any zone.
#[inline(always)]
pub(crate) fn find_node(scratch: &mut Scratch, g: &Gen, q: *mut Query) -> u32 {
    scratch.wildcard.wildcard = 1;
    let src = scratch.exact.name.as_ptr();
    let dst = scratch.wildcard.name.as_mut_ptr();
    let mut skip = 0usize;
    // Bound: MAX_LABELS + 1 names, as in `lookup_name`.
    for level in 0..=MAX_LABELS {
        let mut wfp = FINGERPRINT_WILDCARD;
        // Bound: MAX_NAME_WIRE_LEN / 8 words (see `lookup_name`).
        for w in 0..MAX_NAME_WIRE_LEN / 8 {
            let at = masked(skip + 8 * w, 255);
            // SAFETY: as in `lookup_name`.
            unsafe {
                let word = src.add(at).cast::<u64>().read_unaligned();
                wfp = fingerprint_step(wfp, word);
                store_word(dst, w, word);
            }
        }
        let node = find_entry_node(g.names, &scratch.wildcard, wfp);
        if node != NOT_FOUND {
            // SAFETY: `q` is the per-CPU QUERY value.
            unsafe { store(&raw mut (*q).tmp, level) };
            return node;
        }
        let len = usize::from(scratch.exact.name[masked(skip, MAX_NAME_WIRE_LEN - 1)]);
        if len == 0 {
            break;
        }
        skip = masked(skip + len + 1, MAX_NAME_WIRE_LEN - 1);
    }
    NOT_FOUND
}

/// [`find_name`], returning the entry's static node (`NOT_FOUND` when absent).
#[inline(always)]
pub(crate) fn find_entry_node(names: &Array<NameEntry>, key: &NameKey, fp: u64) -> u32 {
    // SAFETY: reading a loader-set constant.
    let mask = unsafe { core::ptr::read_volatile(&raw const NAME_SLOT_MASK) };
    #[expect(clippy::cast_possible_truncation, reason = "the low bits index")]
    let mut at = fp as u32;
    // Bound: NAME_PROBES slots.
    for _ in 0..NAME_PROBES {
        let Some(entry) = names.get(at & mask) else {
            return NOT_FOUND;
        };
        if entry.fingerprint == 0 {
            return NOT_FOUND;
        }
        if entry.fingerprint == fp && entry.wildcard == key.wildcard {
            let a = key.name.as_ptr();
            let b = entry.name.as_ptr();
            let mut diff = 0u64;
            // Bound: MAX_NAME_WIRE_LEN / 8 words; no early exit.
            for w in 0..MAX_NAME_WIRE_LEN / 8 {
                // SAFETY: both names are 8-aligned with MAX_NAME_WIRE_LEN bytes.
                unsafe {
                    diff |= load_word(a, w) ^ load_word(b, w);
                }
            }
            if diff == 0 {
                return entry.node;
            }
        }
        at = at.wrapping_add(1);
    }
    NOT_FOUND
}

/// The answer index for the query: the node's exact or below answer for its type.
#[inline(always)]
pub(crate) fn choose(ctx: &XdpContext, g: &Gen, q: *mut Query, reason: u32) -> Result<u32, Pass> {
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY: per-CPU scratch value; `exact` holds the query name since the parse.
    let scratch = unsafe { &mut *scratch };
    let node = find_node(scratch, g, q);
    if node == NOT_FOUND {
        return Ok(STATIC_REFUSED);
    }
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (level, question_end) = unsafe {
        (
            reload_internal(&raw const (*q).tmp, MAX_LABELS)?,
            reload_internal(&raw const (*q).question_end, MAX_PACKET)?,
        )
    };
    // QTYPE, from the packet (stage 1 keeps only whether it is a geo type).
    let qtype = usize::from(read_u16(ctx, question_end - 4)?);
    let n = g.static_nodes.get(node).ok_or(reason)?;
    let (types, answers, other) = if level == 0 {
        (&n.exact_types, &n.exact, n.exact_other)
    } else {
        (&n.below_types, &n.below, n.below_other)
    };
    let mut answer = u32::from(other);
    // Bound: STATIC_NODE_TYPES types.
    for i in 0..STATIC_NODE_TYPES {
        if usize::from(types[i]) == qtype && types[i] != 0 {
            answer = u32::from(answers[i]);
        }
    }
    if answer == 0 {
        return Err(reason);
    }
    Ok(answer)
}

/// The static stage (see `xdp_dns_static_*`).
#[inline(always)]
pub(crate) fn try_static(ctx: &XdpContext, g: &Gen) -> Result<Option<u32>, Pass> {
    let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (grown, reason) = unsafe {
        (
            reload_internal(&raw const (*q).grown, 1)? != 0,
            reload_internal(&raw const (*q).static_reason, 0xFF)?,
        )
    };
    #[expect(clippy::cast_possible_truncation, reason = "a counter index")]
    let reason = reason as u32;
    if !grown {
        let answer = choose(ctx, g, q, reason)?;
        let a = g.static_answers.get(answer).ok_or(reason)?;
        if a.valid == 0 {
            return Err(reason);
        }
        // RRL classes as BIND and Knot: an answer by its records, NXDOMAIN, NODATA and
        // errors by the zone (every random name shares one bucket).
        let class = u64::from(a.rrl_class);
        let name = if class == u64::from(RRL_CLASS_ANSWER) {
            u64::from(answer) | 1 << 32
        } else {
            0
        };
        rrl_prepare_as(ctx, q, name, class)?;
        rate_limit(q)?;
        // SAFETY: as above.
        unsafe { store(&raw mut (*q).static_answer, answer as usize) };
    }
    // SAFETY: as above.
    let answer = unsafe { reload_internal(&raw const (*q).static_answer, 0xFFFF)? };
    #[expect(clippy::cast_possible_truncation, reason = "bounded by reload")]
    let a = g
        .static_answers
        .get(answer as u32)
        .ok_or(counter::PASS_INTERNAL)?;
    if a.valid == 0 {
        return Err(counter::PASS_INTERNAL);
    }
    let v = view(q)?;
    if !write_static(ctx, q, &v, a)? {
        return Ok(None);
    }
    count(if v.tc != 0 {
        counter::RRL_SLIPPED
    } else if a.rcode == 3 {
        counter::ANSWERED_NXDOMAIN
    } else if a.rcode == 5 {
        counter::ANSWERED_REFUSED
    } else if a.an == 0 && a.flags != 0 {
        counter::ANSWERED_NODATA
    } else {
        counter::ANSWERED_STATIC
    });
    Ok(Some(xdp_action::XDP_TX))
}

/// Most bytes a static reply's DNS message may take: the size every client takes
/// over UDP (RFC 1035); a longer one passes and userspace answers (or truncates) it.
const MAX_STATIC_MESSAGE: usize = 512;

/// Rewrites the query into the static reply `a`: the records after the question (their
/// moving pointers shifted by the name's length), OPT with the ECS option echoed with
/// scope 0, the header; then lengths and checksums. `Ok(false)`: the frame must grow
/// at its head first.
#[inline(always)]
pub(crate) fn write_static(
    ctx: &XdpContext,
    qp: *mut Query,
    q: &View,
    a: &StaticAnswer,
) -> Result<bool, Pass> {
    // The question: header, name, QTYPE and QCLASS after the UDP header.
    let name_len = q
        .question_end
        .checked_sub(q.l4 + UDP_HLEN + DNS_HLEN + 4)
        .ok_or(counter::PASS_INTERNAL)?;
    let name_len = launder(qp, name_len, MAX_NAME_WIRE_LEN)?;
    // The name's length minus the one the bytes were written for, modulo 2^16: an
    // answer shared by names of several lengths moves either way.
    let delta = u16::try_from(name_len).unwrap_or(0).wrapping_sub(a.base);
    let len = launder(qp, usize::from(a.len), STATIC_MAX_BLOB)?;
    let body = if q.tc == 0 { len } else { 0 };
    let body_end = launder(qp, q.question_end + body, MAX_PACKET)?;
    let new_end = body_end + q.opt_len();
    if new_end > MAX_PACKET || new_end > q.l4 + UDP_HLEN + MAX_STATIC_MESSAGE {
        return Err(counter::PASS_TOO_BIG);
    }
    let old_len = ctx.data_end() - ctx.data();
    #[expect(
        clippy::cast_possible_wrap,
        clippy::cast_possible_truncation,
        reason = "both are below MAX_PACKET"
    )]
    let grow_by = new_end as i32 - old_len as i32;
    // SAFETY (field pointer): `qp` is the per-CPU QUERY value.
    let grown = unsafe { reload_internal(&raw const (*qp).grown, 1)? } != 0;
    // SAFETY: the helper checks the delta against the frame; on failure nothing changed.
    if !grown && unsafe { bpf_xdp_adjust_tail(ctx.ctx, grow_by) } != 0 {
        let grow = usize::try_from(grow_by).map_err(|_| counter::PASS_TOO_BIG)?;
        if grow > 256 {
            return Err(counter::PASS_TOO_BIG);
        }
        // SAFETY: as above.
        unsafe { store(&raw mut (*qp).grow, grow | GROW_STATIC as usize) };
        return Ok(false);
    }

    let start = q.question_end;
    let blob = a.blob.as_ptr();
    // Bound: STATIC_MAX_BLOB / 8 words, then up to 7 bytes; no exit on `body`.
    for w in 0..STATIC_MAX_BLOB / 8 {
        let at = 8 * w;
        if at + 8 <= launder(qp, body, STATIC_MAX_BLOB)? {
            // SAFETY: `blob` is 8-aligned in the map value with STATIC_MAX_BLOB bytes.
            let word = unsafe { load_word(blob, w) };
            let p = ptr_at::<[u8; 8]>(ctx, start + at)?.cast::<u8>();
            // SAFETY: ptr_at checked the 8 bytes.
            unsafe { pkt::st64(p, word) };
        }
    }
    for j in 0..8 {
        let k = launder(qp, body, STATIC_MAX_BLOB)?;
        let at = (k & !7) + j;
        if at < k {
            let b = a.blob[masked(at, STATIC_MAX_BLOB - 1)];
            write_bytes(ctx, start + at, [b])?;
        }
    }
    // The pointers that move with the name (none in a slipped reply).
    let n_fix = if body == 0 { 0 } else { usize::from(a.n_fix) };
    // Bound: STATIC_MAX_FIXUPS pointers.
    for i in 0..STATIC_MAX_FIXUPS {
        if i < n_fix {
            let f = masked(usize::from(a.fix[i]), STATIC_MAX_BLOB - 1);
            let p = ptr_at::<[u8; 2]>(ctx, start + f)?.cast::<u8>();
            // SAFETY: ptr_at checked the 2 bytes.
            unsafe {
                let ptr = u16::from_be(pkt::ld16(p));
                pkt::st16(p, ptr.wrapping_add(delta).to_be());
            }
        }
    }

    if q.edns {
        // SAFETY: `qp` is the per-CPU QUERY value.
        let ecs_addr = unsafe { &(*qp).ecs_addr };
        // The answer does not depend on the client: ECS scope 0 (RFC 7871 section
        // 7.2.1). The sum it returns is for the geo reply: this stage sums the packet.
        write_opt(ctx, q, ecs_addr, body_end, 0)?;
    }

    let new_end = launder(qp, new_end, MAX_PACKET)?;
    let (an, ns, ar) = if q.tc == 0 {
        (a.an, a.ns, a.ar)
    } else {
        (0, 0, 0)
    };
    let [a0, a1] = an.to_be_bytes();
    let [n0, n1] = ns.to_be_bytes();
    let [d0, d1] = (ar + u16::from(q.edns)).to_be_bytes();
    let p = ptr_at::<[u8; 10]>(ctx, q.l4 + UDP_HLEN + 2)?.cast::<u8>();
    // SAFETY: ptr_at checked the 10 bytes.
    unsafe {
        pkt::st64(
            p,
            u64::from_le_bytes([
                0x80 | (a.flags & STATIC_FLAG_AA_MASK) | q.tc | q.rd,
                q.cd | (a.rcode & 0xF),
                0,
                1,
                a0,
                a1,
                n0,
                n1,
            ]),
        );
        pkt::st16(p.add(8), u16::from_le_bytes([d0, d1]));
    }
    // SAFETY: `qp` is the per-CPU QUERY value; `end` is free once the query is parsed.
    unsafe { store(&raw mut (*qp).end, new_end) };
    finish_reply(ctx, qp, Payload::Read)?;
    Ok(true)
}

/// The header bits of byte 2 an answer may set (AA).
const STATIC_FLAG_AA_MASK: u8 = geodns_common::STATIC_FLAG_AA;
