#![no_std]
#![no_main]

#[cfg(not(test))]
extern crate ebpf_panic;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use geodns_common::{
    counter, AnswerKey, AnswerSet, NameKey, NameValue, PrefixValue, RuntimeState, Scratch,
};

#[map]
static STATE: Array<RuntimeState> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
static PREFIX_V4_0: LpmTrie<[u8; 4], PrefixValue> = LpmTrie::with_max_entries(1, 0);
#[map]
static PREFIX_V4_1: LpmTrie<[u8; 4], PrefixValue> = LpmTrie::with_max_entries(1, 0);
#[map]
static PREFIX_V6_0: LpmTrie<[u8; 16], PrefixValue> = LpmTrie::with_max_entries(1, 0);
#[map]
static PREFIX_V6_1: LpmTrie<[u8; 16], PrefixValue> = LpmTrie::with_max_entries(1, 0);
#[map]
static NAMES_0: HashMap<NameKey, NameValue> = HashMap::with_max_entries(1, 0);
#[map]
static NAMES_1: HashMap<NameKey, NameValue> = HashMap::with_max_entries(1, 0);
#[map]
static ANSWERS_0: HashMap<AnswerKey, AnswerSet> = HashMap::with_max_entries(1, 0);
#[map]
static ANSWERS_1: HashMap<AnswerKey, AnswerSet> = HashMap::with_max_entries(1, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

#[xdp]
pub fn xdp_dns(_ctx: XdpContext) -> u32 {
    count(counter::RX);
    xdp_action::XDP_PASS
}

/// Attached to the client side of a veth pair: XDP_TX replies over veth are only
/// received when the peer has an XDP program too.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
