//! Baseline programs of the benchmarks and the tests, kept out of the responder's
//! object so that `geodns run` neither loads nor verifies them:
//! - `xdp_echo`, the end-to-end ceiling: every IPv4/UDP frame to the DNS port goes
//!   straight back (addresses and ports swapped, QR set, UDP checksum cleared, which
//!   IPv4 allows). No lookup, no reply building: what the NIC path costs on its own.
//! - `xdp_pass`: the floor of `BPF_PROG_TEST_RUN` figures, and the program a test's
//!   client veth needs (veth delivers an `XDP_TX` reply only to a peer that has an XDP
//!   program too).
//! - `xdp_grow`: what the kernel charges for a reply longer than its query. It grows
//!   the frame's tail by one `A` record (16 bytes) with `bpf_xdp_adjust_tail`, the
//!   helper every geo answer calls, and passes: over `xdp_pass`, the helper's price
//!   (the call, the zeroing of the new bytes, the returns).
//! - `xdp_count`: the receiving half of the benchmarks' own load generator, on the
//!   client veth: every IPv4/UDP frame from the DNS port is counted by its rcode in
//!   `REPLIES` and dropped there (the generator sends from addresses its host does not
//!   have, so its stack could not take the replies anyway); everything else (ARP)
//!   passes.
#![no_std]
#![no_main]
// The swap helper is inlined into the entry point so the verifier sees constant offsets
// from the one checked pointer.
#![expect(clippy::inline_always, reason = "see above")]

extern crate ebpf_panic;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_tail,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use geodns_common::{DEFAULT_DNS_PORT, REPLY_COUNT_SLOTS};

/// UDP port of DNS queries; set by the loader, as in the responder.
#[unsafe(no_mangle)]
static DNS_PORT: u16 = DEFAULT_DNS_PORT;

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Ethernet, IPv4 without options, UDP, and the DNS header's first four bytes.
const ECHO_LEN: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN + 4;

/// `xdp_count`'s replies by rcode (the low four bits of the DNS header's fourth byte).
#[map]
static REPLIES: PerCpuArray<u64> = PerCpuArray::with_max_entries(REPLY_COUNT_SLOTS, 0);

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] entry point signature"
)]
pub fn xdp_echo(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + ECHO_LEN > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let p = start as *mut u8;
    // SAFETY: the frame holds at least ECHO_LEN bytes (checked above), and every
    // offset below is a constant inside them.
    unsafe {
        let at = |i: usize| p.add(i);
        if at(12).read() != 0x08 || at(13).read() != 0x00 || at(ETH_HLEN).read() != 0x45 {
            return xdp_action::XDP_PASS;
        }
        if at(ETH_HLEN + 9).read() != 17 {
            return xdp_action::XDP_PASS;
        }
        let l4 = ETH_HLEN + IPV4_HLEN;
        let port = core::ptr::read_volatile(&raw const DNS_PORT).to_be_bytes();
        if at(l4 + 2).read() != port[0] || at(l4 + 3).read() != port[1] {
            return xdp_action::XDP_PASS;
        }
        let flags = at(l4 + UDP_HLEN + 2);
        flags.write(flags.read() | 0x80);
        swap(at(0), at(6), 6);
        swap(at(ETH_HLEN + 12), at(ETH_HLEN + 16), 4);
        swap(at(l4), at(l4 + 2), 2);
        at(l4 + 6).write(0);
        at(l4 + 7).write(0);
    }
    xdp_action::XDP_TX
}

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] entry point signature"
)]
pub fn xdp_grow(ctx: XdpContext) -> u32 {
    // SAFETY: the helper checks the new end against the frame; on failure nothing
    // changed.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, 16) } != 0 {
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_PASS
}

/// Swaps `n` bytes at `a` and `b`.
///
/// # Safety
/// Both ranges lie inside the packet and do not overlap.
#[inline(always)]
unsafe fn swap(a: *mut u8, b: *mut u8, n: usize) {
    for i in 0..n {
        // SAFETY: the caller's contract.
        unsafe {
            let x = a.add(i).read();
            a.add(i).write(b.add(i).read());
            b.add(i).write(x);
        }
    }
}

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] entry point signature"
)]
pub fn xdp_count(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + ECHO_LEN > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let p = start as *const u8;
    // SAFETY: the frame holds at least ECHO_LEN bytes (checked above), and every
    // offset below is a constant inside them.
    let rcode = unsafe {
        let at = |i: usize| p.add(i).read();
        if at(12) != 0x08 || at(13) != 0x00 || at(ETH_HLEN) != 0x45 || at(ETH_HLEN + 9) != 17 {
            return xdp_action::XDP_PASS;
        }
        let l4 = ETH_HLEN + IPV4_HLEN;
        let port = core::ptr::read_volatile(&raw const DNS_PORT).to_be_bytes();
        if at(l4) != port[0] || at(l4 + 1) != port[1] {
            return xdp_action::XDP_PASS;
        }
        u32::from(at(l4 + UDP_HLEN + 3) & 0x0f)
    };
    if let Some(n) = REPLIES.get_ptr_mut(rcode) {
        // SAFETY: a per-CPU slot, written by this CPU only.
        unsafe { *n += 1 };
    }
    xdp_action::XDP_DROP
}

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
