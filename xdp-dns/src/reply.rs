//! Stage 3: the reply written in place, its lengths, and growing the frame at its head.

use crate::*;

/// Rewrites the query into the reply, from what the lookup stage recorded (the reply
/// stage, entered again after the grow stage).
#[inline(always)]
pub(crate) fn try_reply(ctx: &XdpContext, g: &Gen) -> Result<Option<u32>, Pass> {
    let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (record, region) = unsafe {
        (
            reload_internal(&raw const (*q).record, 0xFFFF)?,
            reload_internal(&raw const (*q).region, 0xFFFF)?,
        )
    };
    #[expect(clippy::cast_possible_truncation, reason = "bounded by reload")]
    let set = answer_set(g, record as u16, region as u16)?;
    reply_with(ctx, q, set, &view(q)?)
}

/// Rewrites the query into the reply from answer set `set` and what the lookup recorded
/// in `QUERY` (read back here, so the verifier checks this part in one state however
/// the lookup went).
#[inline(always)]
pub(crate) fn reply_with(
    ctx: &XdpContext,
    q: *mut Query,
    set: &AnswerSet,
    v: &View,
) -> Result<Option<u32>, Pass> {
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (scope, first) = unsafe {
        (
            reload_internal(&raw const (*q).scope, 128)?,
            reload_internal(&raw const (*q).first, MAX_ANSWER_ADDRS - 1)?,
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
    if !write_reply(ctx, q, v, ecs_addr, set, first, want, n, scope as u8)? {
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

/// Rewrites the query in place into the reply: keeps headers and question, appends the
/// answer records and the OPT record, swaps addresses and ports, fixes lengths and
/// checksums. Everything the reply needs from the query's tail is already in `q`.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "all are parts of one reply")]
pub(crate) fn write_reply(
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
    let answers_end = bounded(q.question_end + want * rr_len, MAX_PACKET)?;
    let new_end = answers_end + q.opt_len();
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
    let grown = unsafe { reload_internal(&raw const (*qp).grown, 1)? } != 0;
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
    // The checksum's sum of everything written after the question, as words from the
    // question's end (see `finish_reply`): every record starts at an even distance.
    let mut tail = 0u64;
    // Bound: MAX_ANSWER_ADDRS records. No exit on `want`, and the slot masked: the
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
        let slot = masked(bounded(at, MAX_ANSWER_ADDRS - 1)?, MAX_ANSWER_ADDRS - 1);
        if q.aaaa {
            let p = ptr_at::<[u8; 12 + 16]>(ctx, off)?.cast::<u8>();
            // The address is 4-aligned in the map value (`AnswerSet` is 4-aligned, `v6`
            // at offset 72, 16 bytes each): four u32 loads rather than 16 byte loads.
            #[expect(clippy::cast_ptr_alignment, reason = "4-aligned, see above")]
            let a = set.v6[slot].as_ptr().cast::<u32>();
            // SAFETY: ptr_at checked the 28 bytes; `a` is aligned, see above.
            unsafe {
                let addr = (a.read(), a.add(1).read(), a.add(2).read(), a.add(3).read());
                pkt::st64(p, rr_head);
                pkt::st32(p.add(8), rr_tail);
                pkt::st32(p.add(12), addr.0);
                pkt::st32(p.add(16), addr.1);
                pkt::st32(p.add(20), addr.2);
                pkt::st32(p.add(24), addr.3);
                tail +=
                    u64::from(addr.0) + u64::from(addr.1) + u64::from(addr.2) + u64::from(addr.3);
            }
        } else {
            let p = ptr_at::<[u8; 12 + 4]>(ctx, off)?.cast::<u8>();
            // The address is 4-aligned in the map value (`v4` at offset 8, 4 bytes each).
            #[expect(clippy::cast_ptr_alignment, reason = "4-aligned, see above")]
            let a = set.v4[slot].as_ptr().cast::<u32>();
            // SAFETY: ptr_at checked the 16 bytes; `a` is aligned, see above.
            unsafe {
                let addr = a.read();
                pkt::st64(p, rr_head);
                pkt::st32(p.add(8), rr_tail);
                pkt::st32(p.add(12), addr);
                tail += u64::from(addr);
            }
        }
        tail += halves(rr_head) + u64::from(rr_tail);
    }

    if q.edns {
        tail += write_opt(ctx, q, ecs_addr, answers_end, scope)?;
    }

    let payload = write_header(ctx, qp, q, want, tail)?;

    // SAFETY: `qp` is the per-CPU QUERY value; `end` is free once the query is parsed.
    unsafe {
        store(&raw mut (*qp).end, new_end);
        core::ptr::write_volatile(&raw mut (*qp).payload_sum, payload);
    }
    finish_reply(ctx, qp, Payload::Summed)?;
    Ok(true)
}

/// Where `finish_reply` gets the DNS message's part of the UDP checksum.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    /// `Query::payload_sum`, summed by the writer from what it wrote.
    Summed,
    /// Summed over the packet (the static stage copies its replies from a map).
    Read,
}

/// Writes the OPT record (and the ECS option, `scope` its scope) at `at`, the end of
/// the answers; returns the checksum's sum of what it wrote, as words from the
/// question's end (the answers' length is even: OPT starts at an even distance).
#[inline(always)]
pub(crate) fn write_opt(
    ctx: &XdpContext,
    q: &View,
    ecs_addr: &[u8; 16],
    at: usize,
    scope: u8,
) -> Result<u64, Pass> {
    let ecs_alen = q.ecs_alen();
    let [p0, p1] = EDNS_UDP_PAYLOAD.to_be_bytes();
    let [r0, r1] = u16::try_from(q.ecs_opt_len()).unwrap_or(0).to_be_bytes();
    // OPT: root name, type, payload size, TTL 0 (ext. RCODE, version, flags), RDLENGTH.
    let opt = ptr_at::<[u8; 11]>(ctx, at)?.cast::<u8>();
    let (opt_head, opt_rdlen) = (
        u64::from_le_bytes([0, 0, 41, p0, p1, 0, 0, 0]),
        u32::from_le_bytes([0, 0, r0, r1]),
    );
    // SAFETY: ptr_at checked the 11 bytes (the two stores overlap in byte 7, 0 in both,
    // so it is summed once).
    unsafe {
        pkt::st64(opt, opt_head);
        pkt::st32(opt.add(7), opt_rdlen);
    }
    let mut sum = halves(opt_head) + at_parity(u64::from(opt_rdlen), 7);
    if q.ecs {
        let [o0, o1] = u16::try_from(4 + ecs_alen).unwrap_or(0).to_be_bytes();
        let [f0, f1] = q.ecs_family.to_be_bytes();
        let ecs = ptr_at::<[u8; 8]>(ctx, at + 11)?.cast::<u8>();
        let option = u64::from_le_bytes([0, 8, o0, o1, f0, f1, q.ecs_source, scope]);
        // SAFETY: ptr_at checked the 8 bytes.
        unsafe { pkt::st64(ecs, option) };
        // Bound: 16 address bytes at most.
        for (j, b) in ecs_addr.iter().enumerate() {
            if j < ecs_alen {
                write_bytes(ctx, at + 19 + j, [*b])?;
            }
        }
        // The option at 11 bytes from OPT's start, its address at 19: odd. The address
        // bytes past `ecs_alen` are 0 (see `parse_ecs`).
        #[expect(clippy::cast_ptr_alignment, reason = "ecs_addr is 8-aligned in Query")]
        let words = ecs_addr.as_ptr().cast::<u64>();
        // SAFETY: the 16 bytes of `ecs_addr`, 8-aligned (see `parse_ecs`).
        let address = unsafe { halves(words.read()) + halves(words.add(1).read()) };
        sum += at_parity(halves(option) + address, 11);
    }
    Ok(sum)
}

/// Writes the DNS header's flags and counts (`want` answers); returns the checksum's
/// sum of the whole message: the header, the question (summed by the parser) and
/// `tail`, the sum of what follows the question, as words from its end.
#[inline(always)]
pub(crate) fn write_header(
    ctx: &XdpContext,
    qp: *mut Query,
    q: &View,
    want: usize,
    tail: u64,
) -> Result<u64, Pass> {
    // QR=1 AA=1, TC for a slip, RD and CD copied, RA=AD=Z=0, RCODE=0; the counts.
    let [a0, a1] = u16::try_from(want).unwrap_or(1).to_be_bytes();
    let header = ptr_at::<[u8; DNS_HLEN]>(ctx, q.l4 + UDP_HLEN)?.cast::<u8>();
    let flags_counts = u64::from_le_bytes([0x84 | q.tc | q.rd, q.cd, 0, 1, a0, a1, 0, 0]);
    let arcount = u16::from_le_bytes([0, u8::from(q.edns)]);
    // SAFETY: ptr_at checked the 12 bytes.
    let id = unsafe {
        pkt::st64(header.add(2), flags_counts);
        pkt::st16(header.add(10), arcount);
        pkt::ld16(header)
    };
    // SAFETY: `qp` is the per-CPU QUERY value.
    let question = unsafe { core::ptr::read_volatile(&raw const (*qp).question_sum) };
    Ok(u64::from(id)
        + halves(flags_counts)
        + u64::from(arcount)
        + question
        + at_parity(tail, q.question_end))
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
pub(crate) fn finish_reply(ctx: &XdpContext, qp: *mut Query, payload: Payload) -> Result<(), Pass> {
    // SAFETY (field pointers): `qp` is the per-CPU QUERY value.
    let (l3, l4, v6, new_end) = unsafe {
        (
            reload_internal(&raw const (*qp).l3, ETH_HLEN + 8)?,
            reload_internal(&raw const (*qp).l4, ETH_HLEN + 8 + IPV6_HLEN)?,
            reload_internal(&raw const (*qp).v6, 1)? != 0,
            reload_internal(&raw const (*qp).end, MAX_PACKET)?,
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

    let udp_len = bounded(new_end - l4, MAX_PACKET)?;
    let udp_len_be = u16::try_from(udp_len).unwrap_or(0).to_be();
    // UDP: swap ports, set length, zero the checksum before summing.
    let udp = ptr_at::<[u8; UDP_HLEN]>(ctx, l4)?.cast::<u8>();
    // SAFETY: ptr_at checked 8 bytes.
    let ports = unsafe {
        let ports = pkt::ld32(udp);
        pkt::st32(udp, ports.rotate_left(16));
        pkt::st32(udp.add(4), u32::from(udp_len_be));
        ports
    };

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
    sum += match payload {
        // The UDP header (the ports' sum does not change with the swap; the checksum
        // field is 0 while summing) and the message.
        Payload::Summed => {
            // SAFETY: `qp` is the per-CPU QUERY value.
            let message = unsafe { core::ptr::read_volatile(&raw const (*qp).payload_sum) };
            u64::from(ports) + u64::from(udp_len_be) + message
        }
        Payload::Read => sum_words(ctx, l4, udp_len)?,
    };
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
pub(crate) const MAX_KEEP: usize = 22 + IPV6_HLEN + UDP_HLEN + DNS_HLEN + MAX_NAME_WIRE_LEN + 4;

/// Makes the frame `grow` bytes longer by extending it at the front, then moves the
/// first `keep` bytes (headers and question) to the new start. The bytes after `keep`
/// are left for the reply to overwrite.
#[inline(always)]
pub(crate) fn grow_at_head(
    ctx: &XdpContext,
    qp: *mut Query,
    grow: usize,
    keep: usize,
) -> Result<(), Pass> {
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
