//! Stage 2: name -> record, client -> region (fast path, else the trie), answer set.

use crate::*;

/// The parsed query as the reply needs it, read back from `QUERY` (see [`reload`]).
#[expect(clippy::struct_excessive_bools, reason = "flags of one query")]
pub(crate) struct View {
    pub(crate) l3: usize,
    pub(crate) l4: usize,
    pub(crate) question_end: usize,
    pub(crate) v6: bool,
    pub(crate) aaaa: bool,
    pub(crate) rd: u8,
    pub(crate) cd: u8,
    pub(crate) edns: bool,
    pub(crate) ecs: bool,
    pub(crate) ecs_family: u16,
    pub(crate) ecs_source: u8,
    /// TC bit (0x02) of a slipped reply.
    pub(crate) tc: u8,
}

impl View {
    /// Address bytes of the ECS option: `ceil(source / 8)` (RFC 7871).
    #[inline(always)]
    pub(crate) fn ecs_alen(&self) -> usize {
        usize::from(self.ecs_source).div_ceil(8)
    }

    /// The ECS option a reply echoes (code, length, family, prefixes, address), 0
    /// without one.
    #[inline(always)]
    pub(crate) fn ecs_opt_len(&self) -> usize {
        if self.ecs {
            4 + 4 + self.ecs_alen()
        } else {
            0
        }
    }

    /// The OPT record a reply ends with, its ECS option included; 0 without EDNS.
    #[inline(always)]
    pub(crate) fn opt_len(&self) -> usize {
        if self.edns {
            11 + self.ecs_opt_len()
        } else {
            0
        }
    }
}

#[inline(always)]
pub(crate) fn view(q: *const Query) -> Result<View, Pass> {
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
/// the answer set and the query's view so the reply in the same program need not read
/// them again.
#[inline(always)]
pub(crate) fn try_lookup(ctx: &XdpContext, g: &Gen) -> Result<(&'static AnswerSet, View), Pass> {
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

    let (prefix, key) = client_prefix(ctx, q, &v, g, fast, flags).ok_or(counter::PASS_NO_REGION)?;
    let use_ecs = v.ecs && v.ecs_source > 0;

    let set = answer_set(g, record, prefix.region)?;
    let n = usize::from(if v.aaaa { set.n_v6 } else { set.n_v4 });
    if n == 0 || n > MAX_ANSWER_ADDRS {
        return Err(counter::PASS_NO_ANSWER);
    }
    let mut scope = if use_ecs { prefix.prefix_len } else { 0 };
    let cum = if v.aaaa { &set.cum_v6 } else { &set.cum_v4 };
    let first = if set.policy == POLICY_SPREAD {
        pick_weighted(cum, n)
    } else if set.policy == POLICY_STICKY {
        // The node depends on the whole hashed prefix: the scope covers it.
        if use_ecs {
            let lookup_v6 = v.ecs_family == 2;
            scope = sticky_scope(scope, lookup_v6);
        }
        let tags = if v.aaaa { &set.tag_v6 } else { &set.tag_v4 };
        sticky_slot(key, cum, tags, n)
    } else {
        0
    };
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    unsafe {
        store(&raw mut (*q).record, usize::from(record));
        store(&raw mut (*q).region, usize::from(prefix.region));
        store(&raw mut (*q).scope, usize::from(scope));
        store(&raw mut (*q).first, first);
    }
    Ok((set, v))
}

/// The client's prefix in generation `g` and its sticky key (its /24 or /56, a few ALU
/// instructions, used only by `sticky` sets): the ECS address when a non-zero source
/// prefix was sent, else the packet's source address.
#[inline(always)]
pub(crate) fn client_prefix(
    ctx: &XdpContext,
    q: *const Query,
    v: &View,
    g: &Gen,
    fast: bool,
    flags: u32,
) -> Option<(PrefixValue, u64)> {
    // SAFETY: `q` is the per-CPU QUERY value.
    let ecs_addr = unsafe { &(*q).ecs_addr };
    let use_ecs = v.ecs && v.ecs_source > 0;
    let lookup_v6 = if use_ecs { v.ecs_family == 2 } else { v.v6 };
    if lookup_v6 {
        let addr = if use_ecs {
            *ecs_addr
        } else {
            let p = ptr_at::<[u8; 16]>(ctx, v.l3 + 8).ok()?.cast::<u8>();
            // SAFETY: ptr_at checked the 16 bytes are in the packet.
            let (hi, lo) = unsafe { (pkt::ld64(p), pkt::ld64(p.add(8))) };
            (u128::from(hi) | (u128::from(lo) << 64)).to_le_bytes()
        };
        Some((
            lookup_v6_prefix(&addr, g, fast, flags)?,
            sticky_key_v6(&addr),
        ))
    } else {
        let addr = if use_ecs {
            [ecs_addr[0], ecs_addr[1], ecs_addr[2], ecs_addr[3]]
        } else {
            let p = ptr_at::<[u8; 4]>(ctx, v.l3 + 12).ok()?;
            // SAFETY: ptr_at checked the 4 bytes are in the packet.
            unsafe { pkt::ld32(p.cast()) }.to_le_bytes()
        };
        Some((lookup_v4_prefix(&addr, g, fast)?, sticky_key_v4(addr)))
    }
}

/// The shadow stage's work (see `STATE_FLAG_SHADOW`): the same query decided by the
/// candidate in generation `g` (name, client prefix, answer set, as the lookup stage
/// does), counted in `SHADOW` under the pair (live decision from `QUERY`, candidate
/// decision). Changes nothing else: the reply goes out from the live table after.
#[inline(always)]
pub(crate) fn shadow_count(ctx: &XdpContext, g: &Gen) -> Result<(), Pass> {
    let q = QUERY.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    let v = view(q)?;
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    let (flags, fp, live_record, live_region) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*q).flags),
            core::ptr::read_volatile(&raw const (*q).fingerprint),
            reload_internal(&raw const (*q).record, 0xFFFF)?,
            reload_internal(&raw const (*q).region, 0xFFFF)?,
        )
    };
    // The candidate's own aliases (see `SHADOW_ALIAS_SHIFT`).
    let flags = flags & !STATE_FLAG_ALIASES | (flags >> SHADOW_ALIAS_SHIFT) & STATE_FLAG_ALIASES;
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(counter::PASS_INTERNAL)?;
    // SAFETY: per-CPU scratch value; `exact` still holds the query name.
    let scratch = unsafe { &mut *scratch };
    // Plain locals with defined values on every path (an `Option` of a tuple leaves
    // the payload of `None` undefined, and the verifier rejects reading it).
    let mut candidate_record = u64::from(SHADOW_NO_ANSWER);
    let mut candidate_region = 0u64;
    if let Ok(record) = lookup_name(scratch, g, fp) {
        let fast = flags & STATE_FLAG_TRIE_ONLY == 0;
        if let Some((prefix, _)) = client_prefix(ctx, q, &v, g, fast, flags) {
            if let Ok(set) = answer_set(g, record, prefix.region) {
                let n = if v.aaaa { set.n_v6 } else { set.n_v4 };
                if n > 0 {
                    candidate_record = u64::from(record);
                    candidate_region = u64::from(prefix.region);
                }
            }
        }
    }
    #[expect(clippy::cast_possible_truncation, reason = "bounded by reload")]
    let key = shadow_key(
        v.aaaa,
        (live_record as u16, live_region as u16),
        (candidate_record as u16, candidate_region as u16),
    );
    count(counter::SHADOW_LOOKUPS);
    if let Some(n) = SHADOW.get_ptr_mut(key) {
        // SAFETY: this CPU's value of the entry; only this CPU writes it.
        unsafe { *n += 1 };
    } else if SHADOW.insert(key, 1, 0).is_err() {
        count(counter::SHADOW_FULL);
    }
    Ok(())
}

#[inline(always)]
pub(crate) fn answer_set(g: &Gen, record: u16, region: u16) -> Result<&'static AnswerSet, Pass> {
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
        let (key, set) = geodns_common::answer_slot_parts(slot);
        if key == packed {
            return g.sets.get(set).ok_or(counter::PASS_NO_ANSWER);
        }
        at = at.wrapping_add(1);
    }
    Err(counter::PASS_NO_ANSWER)
}

/// Word `w` of a name (8 bytes at `name + 8 * w`).
///
/// # Safety
/// `name` must be 8-aligned with `8 * w + 8` bytes readable: the names in `NameKey`
/// and `NameEntry` are (offsets 8 and 16 of 8-aligned map values), which lets the kernel use
/// one 8-byte access instead of eight byte accesses.
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "8-aligned, see above")]
pub(crate) unsafe fn load_word(name: *const u8, w: usize) -> u64 {
    // SAFETY: see the function's contract.
    unsafe { name.add(8 * w).cast::<u64>().read() }
}

/// Stores word `w` of a name; the same contract as [`load_word`], writable.
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "8-aligned, see load_word")]
pub(crate) unsafe fn store_word(name: *mut u8, w: usize, value: u64) {
    // SAFETY: see load_word.
    unsafe { name.add(8 * w).cast::<u64>().write(value) };
}

/// Looks `key` up by its fingerprint `fp` (the slots of its probe sequence, see
/// `NameEntry`) and checks the whole name.
#[inline(always)]
pub(crate) fn find_name(names: &Array<NameEntry>, key: &NameKey, fp: u64) -> Option<u16> {
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
pub(crate) fn lookup_name(scratch: &mut Scratch, g: &Gen, fp: u64) -> Result<u16, Pass> {
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
pub(crate) fn lane_of(word: u64, lane: u32) -> u32 {
    (word >> ((lane & 1) * 32)) as u32
}

/// The fast path's answer for an address: top slot `top`, then one stride per byte
/// of `bytes` while the slot names a block. `None` asks the trie. Bound: `bytes.len()`
/// strides (`FAST_V4_STRIDES`, `FAST_V6_STRIDES`).
#[inline(always)]
pub(crate) fn fast_walk(g: &Gen, top: u32, bytes: &[u8]) -> Option<PrefixValue> {
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
pub(crate) fn lookup_v4_prefix(addr: &[u8; 4], g: &Gen, fast: bool) -> Option<PrefixValue> {
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
pub(crate) fn lookup_v6_prefix(
    addr: &[u8; 16],
    g: &Gen,
    fast: bool,
    flags: u32,
) -> Option<PrefixValue> {
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
pub(crate) fn pick_weighted(cum: &[u32; MAX_ANSWER_ADDRS], n: usize) -> usize {
    let total = cum[masked(n.wrapping_sub(1), MAX_ANSWER_ADDRS - 1)];
    if total == 0 {
        return 0;
    }
    // SAFETY: helper call without arguments.
    let r = unsafe { bpf_get_prandom_u32() } % total;
    geodns_common::weighted_slot(cum, n, r)
}
