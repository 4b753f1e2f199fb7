//! The kernel's fast path (compressed blocks in front of the LPM trie), the trie alone
//! and `geodns_maps::fastpath::FastTable`'s own walk agree on region and ECS scope: the
//! same frames through `BPF_PROG_TEST_RUN` with the fast path on and with
//! `STATE_FLAG_TRIE_ONLY`, for random addresses and for the first and last address of
//! prefixes and their neighbours, IPv4 and IPv6; and with a fast path too small for
//! the table, whose blocks that do not fit ask the trie.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use geodns::loader::{KernelProgram, LoadOptions, MapSizes};
use geodns_common::{counter, PrefixValue, STATE_FLAG_TRIE_ONLY};
use geodns_maps::fastpath::FastTable;
use geodns_tests::{
    client::parse_reply,
    frame::{self, Frame, Query, L3},
    prog_test_run, require_bpf,
    synth::{contents, table_v4, table_v6, Rng},
};

const XDP_TX: u32 = 3;

/// (answer address, ECS scope) of one run.
fn answer(fd: i32, frame: &[u8]) -> (IpAddr, u8) {
    let run = prog_test_run(fd, frame, 1).expect("test run");
    assert_eq!(run.action, XDP_TX, "not answered");
    let reply = frame::parse(&run.output).expect("reply parses");
    let r = parse_reply(&reply.payload).expect("reply decodes");
    (r.addrs[0], r.ecs_scope.expect("ECS echoed"))
}

/// The (A answer, ECS scope) the synthetic answer sets give for a prefix value (see
/// `synth::contents`); every frame here asks for an A record.
fn expected(v: PrefixValue) -> (IpAddr, u8) {
    let last = u8::try_from(v.region % 250).expect("u8");
    (IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)), v.prefix_len)
}

/// Runs `frames` with the fast path and with the trie alone; both must agree with each
/// other, and with `userspace` (`FastTable`'s walk) wherever that resolves. Returns how
/// many probes `FastTable` resolved.
fn compare(
    xdp: &mut KernelProgram,
    frames: &[Vec<u8>],
    userspace: &[Option<(IpAddr, u8)>],
) -> usize {
    let fd = xdp.program_fd("xdp_dns").expect("fd");
    let fast: Vec<_> = frames.iter().map(|f| answer(fd, f)).collect();
    xdp.set_flags(STATE_FLAG_TRIE_ONLY).expect("trie only");
    let trie: Vec<_> = frames.iter().map(|f| answer(fd, f)).collect();
    xdp.set_flags(0).expect("fast again");
    let differ = fast.iter().zip(&trie).filter(|(a, b)| a != b).count();
    assert_eq!(
        differ,
        0,
        "fast path and trie differ on {differ} of {} frames",
        frames.len()
    );
    for ((k, u), f) in fast.iter().zip(userspace).zip(frames) {
        if let Some(u) = u {
            assert_eq!(k, u, "kernel and FastTable differ on frame {f:02x?}");
        }
    }
    userspace.iter().filter(|u| u.is_some()).count()
}

/// What a run of [`check_v4`]/[`check_v6`] saw.
struct Seen {
    /// Fast-path blocks that did not fit, as the loader counted them.
    overflow: usize,
    probes: usize,
    /// Probes `FastTable` resolved (the others ask the trie).
    resolved: usize,
}

fn load(fast_words: u32) -> KernelProgram {
    KernelProgram::load(&LoadOptions {
        sizes: MapSizes {
            fast_words,
            ..MapSizes::default()
        },
        ..LoadOptions::default()
    })
    .expect("load")
}

fn src4() -> L3 {
    L3::V4 {
        src: Ipv4Addr::new(198, 18, 0, 1),
        dst: Ipv4Addr::new(198, 18, 0, 2),
    }
}

const WWW: &str = "www.cdn.example.net.";

/// IPv4 probes through the kernel (fast path and trie alone) and `FastTable`, with
/// `fast_words` words of blocks.
fn check_v4(fast_words: u32) -> Seen {
    let mut rng = Rng(0xF457);
    let v4 = table_v4(20_000, &mut rng);
    let mut xdp = load(fast_words);
    let stats = xdp
        .install(&contents(v4.clone(), Vec::new()))
        .expect("install");
    assert!(
        stats.fast_blocks_v4 > 0,
        "longer-than-/16 prefixes need blocks"
    );
    let mut addrs = Vec::new();
    for (a, len, _) in v4.iter().step_by(10) {
        let first = u32::from_be_bytes(*a);
        let last = first | u32::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
        addrs.extend([first, last, first.wrapping_sub(1), last.wrapping_add(1)]);
    }
    for _ in 0..2000 {
        addrs.push(u32::try_from(rng.next_u64() >> 32).expect("u32"));
    }
    let frames: Vec<Vec<u8>> = addrs
        .iter()
        .map(|a| {
            let q = Query::new(WWW, 1).ecs_raw(1, 32, 0, &a.to_be_bytes());
            Frame::new(src4(), &q).build()
        })
        .collect();
    let table = FastTable::build(&v4, &[], fast_words as usize);
    assert_eq!(table.v4.overflow, stats.fast_overflow);
    let userspace: Vec<_> = addrs
        .iter()
        .map(|a| table.lookup_v4(a.to_be_bytes()).map(expected))
        .collect();
    let resolved = compare(&mut xdp, &frames, &userspace);
    let c = xdp.counters().expect("counters");
    assert_eq!(c[counter::PASS_NO_REGION as usize], 0);
    Seen {
        overflow: stats.fast_overflow,
        probes: frames.len(),
        resolved,
    }
}

/// As [`check_v4`], for IPv6.
fn check_v6(fast_words: u32) -> Seen {
    let mut rng = Rng(0xF466);
    let v6 = table_v6(20_000, &mut rng);
    let mut xdp = load(fast_words);
    let stats = xdp
        .install(&contents(Vec::new(), v6.clone()))
        .expect("install");
    assert!(stats.fast_blocks_v6 > 0);
    let mut addrs = Vec::new();
    for (a, len, _) in v6.iter().step_by(10) {
        let first = u128::from_be_bytes(*a);
        let last = first | u128::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
        addrs.extend([first, last, first.wrapping_sub(1), last.wrapping_add(1)]);
    }
    for _ in 0..2000 {
        addrs.push(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
    }
    let frames: Vec<Vec<u8>> = addrs
        .iter()
        .map(|a| {
            let q = Query::new(WWW, 1).ecs_raw(2, 128, 0, &Ipv6Addr::from(*a).octets());
            Frame::new(src4(), &q).build()
        })
        .collect();
    let table = FastTable::build(&[], &v6, fast_words as usize);
    assert_eq!(table.v6.overflow, stats.fast_overflow);
    let userspace: Vec<_> = addrs
        .iter()
        .map(|a| table.lookup_v6(a.to_be_bytes()).map(expected))
        .collect();
    let resolved = compare(&mut xdp, &frames, &userspace);
    Seen {
        overflow: stats.fast_overflow,
        probes: frames.len(),
        resolved,
    }
}

#[test]
fn v4_fast_path_agrees_with_trie() {
    if !require_bpf() {
        return;
    }
    let seen = check_v4(MapSizes::default().fast_words);
    assert_eq!(seen.overflow, 0);
    assert_eq!(seen.resolved, seen.probes, "every IPv4 probe in the blocks");
}

#[test]
fn v6_fast_path_agrees_with_trie() {
    if !require_bpf() {
        return;
    }
    let seen = check_v6(MapSizes::default().fast_words);
    assert_eq!(seen.overflow, 0);
    // Up to /64, which is all of this table: every probe in the blocks.
    assert_eq!(seen.resolved, seen.probes, "every IPv6 probe in the blocks");
}

#[test]
fn full_fast_path_still_agrees_with_trie() {
    if !require_bpf() {
        return;
    }
    // A few thousand words: most blocks do not fit, their slots ask the trie.
    for seen in [check_v4(3000), check_v6(3000)] {
        assert!(seen.overflow > 0, "the small array should overflow");
        assert!(seen.resolved > 0 && seen.resolved < seen.probes);
    }
}

/// The bench's reference probe (`xdp_ns_probe_slot24`) loads, and passes a query
/// frame and a frame too short to hold a source address: the bench would otherwise
/// find out only when it runs, which CI does not do.
#[test]
fn reference_probe_loads_and_passes() {
    if !require_bpf() {
        return;
    }
    let probe = geodns_tests::probe::SlotProbe::load().expect("load the slot probe");
    let query = Frame::new(src4(), &Query::new("www.example.com.", 1)).build();
    for f in [&query[..], &query[..20]] {
        let run = prog_test_run(probe.fd(), f, 1).expect("test run");
        assert_eq!(run.action, 2, "XDP_PASS for a {}-byte frame", f.len());
    }
}
