//! Stage 1: parse and validate the frame, the question, the name and EDNS/ECS.

use crate::*;

/// The generation to continue in, with [`PARSED_STATIC`] set for a type the geo
/// tables do not hold.
#[inline(always)]
pub(crate) fn try_parse(ctx: &XdpContext) -> Result<u32, Pass> {
    let state = match STATE.get(0) {
        Some(s) => *s,
        None => RuntimeState::default(),
    };
    let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    let geo = parse(ctx, q)?;
    if state.flags & STATE_FLAG_PASS_ALL != 0 {
        return Err(counter::PASS_DISABLED);
    }
    // SAFETY: `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).generation, (state.generation & 1) as usize);
        store(&raw mut (*q).flags, state.flags as usize);
        store(&raw mut (*q).grown, 0);
    }
    Ok(state.generation & 1 | if geo { 0 } else { PARSED_STATIC })
}

/// Set in what [`try_parse`] returns: not a geo type, straight to the static stage.
pub(crate) const PARSED_STATIC: u32 = 2;

/// Parses and validates the query, recording what the reply needs in `*q`; whether
/// its type is one of the geo tables' (`A`, `AAAA`).
#[inline(always)]
#[expect(
    clippy::too_many_lines,
    reason = "one pass over the headers, in wire order"
)]
pub(crate) fn parse(ctx: &XdpContext, q: *mut Query) -> Result<bool, Pass> {
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
    let (name_len, name_sum) = parse_name(ctx, q, dns + DNS_HLEN)?;

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
    // OPT is no question (FORMERR), 128..=254 are meta types (NOTIMP): userspace's.
    if qtype == TYPE_OPT || (128..=254).contains(&qtype) {
        return Err(counter::PASS_QTYPE);
    }
    if qclass != CLASS_IN {
        return Err(counter::PASS_QCLASS);
    }
    let question_end = qtype_off + 4;
    // QTYPE and QCLASS join the name's sum, at the name's end: an odd name length puts
    // them at an odd offset (see `at_parity`). The UDP header starts at an even offset
    // of the frame (14, 18 or 22 + 20 or 40), so a frame offset has the same parity.
    let type_class = u64::from(u32::from_le_bytes([t0, t1, c0, c1]));
    // SAFETY: `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).aaaa, usize::from(qtype == TYPE_AAAA));
        store(&raw mut (*q).question_end, question_end);
        core::ptr::write_volatile(
            &raw mut (*q).question_sum,
            name_sum + at_parity(type_class, qtype_off),
        );
    }
    let geo = qtype == TYPE_A || qtype == TYPE_AAAA;
    if arcount == 1 {
        parse_opt(ctx, question_end, end, q).map(|()| geo)
    } else if question_end == end {
        Ok(geo)
    } else {
        Err(counter::PASS_HEADER)
    }
}

/// Copies QNAME, lowercased, into the per-CPU exact-name key; returns its wire length
/// and the checksum's sum of its raw bytes (see `Query::question_sum`).
/// Only plain labels: a compression pointer or extended label type passes.
///
/// Two passes keep the verifier's work linear: first hop from length byte to length
/// byte (one path per label), then copy bytes with a branch-free lowercase. Length
/// bytes (1..=63) are never in `A..=Z`, so lowercasing every byte is safe.
#[inline(always)]
pub(crate) fn parse_name(
    ctx: &XdpContext,
    q: *mut Query,
    qname: usize,
) -> Result<(usize, u64), Pass> {
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
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY: per-CPU scratch value, valid for the whole program run.
    let key = unsafe { &mut (*scratch).exact };
    let dst = key.name.as_mut_ptr();
    let mut fp = FINGERPRINT_EXACT;
    // The name's raw bytes (not lowercased) for the reply's checksum (`question_sum`).
    let mut sum = 0u64;
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
        let raw = word & mask;
        sum += halves(raw);
        let word = to_lower(raw);
        fp = fingerprint_step(fp, word);
        // SAFETY: `at + 8 <= MAX_NAME_WIRE_LEN`: inside `key.name`, 8-aligned.
        unsafe { store_word(dst, w, word) };
    }
    // SAFETY: `q` is the per-CPU QUERY value.
    unsafe { core::ptr::write_volatile(&raw mut (*q).fingerprint, fp) };
    Ok((name_len, sum))
}

/// Up to 8 bytes at `offset`, little-endian, zero past `left`.
#[inline(always)]
pub(crate) fn read_tail(
    ctx: &XdpContext,
    q: *mut Query,
    offset: usize,
    left: usize,
) -> Result<u64, Pass> {
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
pub(crate) fn to_lower(x: u64) -> u64 {
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
pub(crate) fn parse_opt(
    ctx: &XdpContext,
    opt: usize,
    end: usize,
    q: *mut Query,
) -> Result<(), Pass> {
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
pub(crate) fn parse_ecs(
    ctx: &XdpContext,
    data: usize,
    len: usize,
    q: *mut Query,
) -> Result<(), Pass> {
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
