//! Reflection defences and response rate limiting (the served-address check, the bucket).

use crate::*;

/// Whether the destination address (IPv4 in the low half of `lo`) is one the loader
/// listed. Bound: `MAX_SERVED` addresses.
#[inline(always)]
pub(crate) fn served(v6: bool, lo: u64, hi: u64) -> bool {
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
pub(crate) fn rrl_prepare(ctx: &XdpContext, q: *mut Query, record: u16) -> Result<(), Pass> {
    rrl_prepare_as(ctx, q, u64::from(record), u64::from(RRL_CLASS_ANSWER))
}

/// [`rrl_prepare`] for any name number and `RRL_CLASS_*` (the static answers').
#[inline(always)]
pub(crate) fn rrl_prepare_as(
    ctx: &XdpContext,
    q: *mut Query,
    name: u64,
    class: u64,
) -> Result<(), Pass> {
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
    let tail = class | if v6 { 6 << 8 } else { 4 << 8 };
    let tag = rrl_tag(defence!(rrl_seed), [prefix[0], prefix[1], name, tail]);
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
/// TCP, which is exempt. Returns the TC bit the reply carries (`Query::tc`, also stored).
#[inline(always)]
pub(crate) fn rate_limit(q: *mut Query) -> Result<u8, Pass> {
    // SAFETY (field pointers): `q` is the per-CPU QUERY value.
    unsafe { store(&raw mut (*q).tc, 0) };
    let interval = defence!(rrl_interval_ns);
    if interval == 0 {
        return Ok(0);
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
        RRL_ALLOW => Ok(0),
        RRL_SLIP => {
            // SAFETY: as above.
            unsafe { store(&raw mut (*q).tc, 2) };
            Ok(2)
        }
        _ => Err(DROP | counter::RRL_DROPPED),
    }
}
