//! Kernel benchmark: ns per query through `BPF_PROG_TEST_RUN`, with prefix tables of
//! 1k, 100k and 500k entries and client addresses drawn across the table (a fresh
//! frame per run, so no single hot address; `xdp_ns_v4_hot` is the one exception, to
//! show the program's cost with everything in cache). Prints one JSON object of figures;
//! `cargo xtask bench` merges it into target/bench/results.json.
//!
//! Usage: `xdp_bench [NAME...]` (default: all figures).
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use geodns::loader::{KernelProgram, LoadOptions, MapSizes};
use geodns_common::{STATE_FLAG_PASS_ALL, STATE_FLAG_TRIE_ONLY};
use geodns_maps::fastpath::FastTable;
use geodns_tests::{
    frame::{Frame, Query, L3},
    netns::load_baseline,
    probe::SlotProbe,
    prog_test_run,
    synth::{contents, mean_count, pick_v4, pick_v6, table_v4, table_v6, v6_length_mix, Rng},
};

/// Frames measured per figure, each run once.
const SAMPLES: usize = 20_000;

/// Median kernel-measured ns per run over `frames`, one run each (the median, not the
/// mean: this machine is shared, and a preempted run should not move the figure).
fn measure(xdp: &KernelProgram, fd: i32, frames: &[Vec<u8>], want_action: u32) -> f64 {
    measure_stats(xdp, fd, frames, want_action).0
}

/// [`measure`] of a headline figure into `out`: its median as `name`, and beside it
/// `NAME_mean`, the mean of the middle 80% of the runs. The kernel's durations come in
/// steps of about 10 ns here; the mean tells two builds apart by less (`cargo xtask
/// bench --compare`).
fn measure_into(
    out: &mut BTreeMap<String, f64>,
    name: &str,
    (xdp, fd): (&KernelProgram, i32),
    frames: &[Vec<u8>],
    want_action: u32,
) {
    let (median, _, trimmed) = measure_stats(xdp, fd, frames, want_action);
    out.insert(name.to_owned(), median);
    out.insert(format!("{name}_mean"), trimmed);
}

/// [`measure`]'s median, the mean and the mean of the middle 80%: the mean is the fair
/// figure for a cost paid by a sample of the queries (the median frame is one without
/// it).
fn measure_stats(
    xdp: &KernelProgram,
    fd: i32,
    frames: &[Vec<u8>],
    want_action: u32,
) -> (f64, f64, f64) {
    let rounds: usize = std::env::var("GEODNS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut ns = Vec::with_capacity(frames.len() * rounds);
    for f in frames.iter().cycle().take(frames.len() * rounds) {
        let run = prog_test_run(fd, f, 1).expect("BPF_PROG_TEST_RUN");
        if run.action != want_action {
            let counters = xdp.counters().expect("counters");
            let seen: Vec<(&str, u64)> = (0..counters.len())
                .filter(|&i| counters[i] > 0)
                .map(|i| (geodns_common::counter::NAMES[i], counters[i]))
                .collect();
            panic!(
                "unexpected XDP action {} for frame {f:02x?}; counters so far: {seen:?}",
                run.action
            );
        }
        ns.push(run.duration_ns);
    }
    ns.sort_unstable();
    #[expect(clippy::cast_precision_loss, reason = "a mean of nanoseconds")]
    let mean = ns.iter().map(|&n| f64::from(n)).sum::<f64>() / ns.len() as f64;
    let middle = &ns[ns.len() / 10..ns.len() - ns.len() / 10];
    #[expect(clippy::cast_precision_loss, reason = "a mean of nanoseconds")]
    let trimmed = middle.iter().map(|&n| f64::from(n)).sum::<f64>() / middle.len() as f64;
    (f64::from(ns[ns.len() / 2]), mean, trimmed)
}

/// Names this binary can measure, in the order it reports them.
const NAMES: &[&str] = &[
    "xdp_ns_empty",
    "xdp_ns_parse_pass",
    "xdp_ns_grow_tail",
    "xdp_ns_v4_1k",
    "xdp_ns_v4_100k",
    "xdp_ns_v4_500k",
    "xdp_ns_v4_500k_rrl",
    "xdp_ns_v4_500k_shadow",
    "xdp_ns_v4_500k_shadow_base",
    "xdp_ns_v4_500k_shadow_all",
    "xdp_ns_v4_500k_shadow_all_base",
    "xdp_ns_rrl_over_limit",
    "xdp_ns_v4_hot",
    "xdp_ns_v4_sticky_hot",
    "xdp_ns_v4_sticky_500k",
    "xdp_ns_v4_500k_trie_only",
    "xdp_ns_v4_500k_zipf",
    "xdp_ns_v4_ecs_500k",
    "xdp_ns_v6_500k",
    "xdp_ns_probe_slot24",
    "xdp_ns_static_soa",
    "xdp_ns_nxdomain",
    "fastpath_fill_seconds",
    "maps_memlock_mib",
    "xdp_v6_500k_share_len_upto_32",
    "xdp_v6_500k_share_len_33_48",
    "xdp_v6_500k_share_len_49_64",
    "xdp_v4_500k_block_reads",
    "xdp_v6_500k_block_reads",
];

fn frames_v4(addrs: impl Iterator<Item = Ipv4Addr>, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    addrs
        .map(|src| Frame::new(L3::V4 { src, dst }, &Query::new(WWW, 1)).build())
        .collect()
}

const WWW: &str = "www.cdn.example.net.";

/// The engine of `examples/demo.toml` and its databases.
fn demo_engine() -> geodns_maps::Engine {
    use std::sync::Arc;
    let path = geodns_tests::files::examples().join("demo.toml");
    let config = geodns_maps::Config::from_path(&path).expect("parse the demo config");
    let compiled =
        geodns_maps::Compiled::build(&config, &mut |_| {}).expect("compile the demo databases");
    let states = geodns_maps::NodeStates::from_config(&config);
    geodns_maps::Engine::new(Arc::new(config), Arc::new(compiled), &states)
}

/// Indexes `0..n` drawn with probability proportional to `1 / (k + 1)` (Zipf, s = 1).
fn zipf(rng: &mut Rng, n: usize, count: usize) -> Vec<usize> {
    let mut cum = Vec::with_capacity(n);
    let mut total = 0.0f64;
    for k in 0..n {
        #[expect(clippy::cast_precision_loss, reason = "ranks below 2^52")]
        let w = 1.0 / (k as f64 + 1.0);
        total += w;
        cum.push(total);
    }
    (0..count)
        .map(|_| {
            #[expect(clippy::cast_precision_loss, reason = "a uniform draw")]
            let r = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            cum.partition_point(|c| *c < r).min(n - 1)
        })
        .collect()
}

/// Median ns per run of each frame through program `a` and then program `b`, frame by
/// frame, so both see the same moments of this shared machine (`GEODNS_BENCH_ROUNDS`
/// as in [`measure`]); up to `others` runs of `b` may end in another action.
fn measure_interleaved(
    (a, want_a): (i32, u32),
    (b, want_b): (i32, u32),
    frames: &[Vec<u8>],
    mut others: usize,
) -> (f64, f64) {
    let rounds: usize = std::env::var("GEODNS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let (mut na, mut nb) = (Vec::new(), Vec::new());
    for f in frames.iter().cycle().take(frames.len() * rounds) {
        let ra = prog_test_run(a, f, 1).expect("BPF_PROG_TEST_RUN");
        let rb = prog_test_run(b, f, 1).expect("BPF_PROG_TEST_RUN");
        assert_eq!(ra.action, want_a, "baseline action for {f:02x?}");
        if rb.action != want_b {
            assert!(others > 0, "action {} for {f:02x?}", rb.action);
            others -= 1;
        }
        na.push(ra.duration_ns);
        nb.push(rb.duration_ns);
    }
    na.sort_unstable();
    nb.sort_unstable();
    (f64::from(na[na.len() / 2]), f64::from(nb[nb.len() / 2]))
}

/// `xdp_ns_v4_500k_rrl`: the 500k frames through a program loaded with RRL on (a
/// bucket per client /24 and record), the limit high enough never to bite; measured
/// with the buckets in place (one untimed pass first), as a server that answers its
/// clients steadily has them. `xdp_ns_rrl_over_limit`: the same frames with every
/// bucket spent (one answer an hour, slip 0): the lookup, the bucket and `XDP_DROP`.
/// Both are measured frame by frame interleaved with `xdp_ns_v4_500k` (`base`), which
/// this measurement then replaces: the ratio is the point, and this machine's other
/// tenants move a figure by 20% from one minute to the next.
fn rrl_figures(
    base: i32,
    want: &dyn Fn(&str) -> bool,
    contents: &geodns_maps::KernelMaps,
    frames: &[Vec<u8>],
    out: &mut BTreeMap<String, f64>,
) {
    let rrl_load = |interval_ns: u64, burst: u64, slip: u32, slots: u32| {
        let mut defence = geodns_common::Defence::DEFAULT;
        defence.rrl_interval_ns = interval_ns;
        defence.rrl_burst_ns = interval_ns * burst;
        defence.rrl_slip = slip;
        let mut xdp = KernelProgram::load(&LoadOptions {
            defence,
            rrl_buckets: slots,
            ..LoadOptions::default()
        })
        .expect("load XDP program with RRL");
        xdp.install(contents).expect("install");
        let fd = xdp.program_fd("xdp_dns").expect("fd");
        (xdp, fd)
    };
    if want("xdp_ns_v4_500k_rrl") {
        // 10 M answers a second per bucket, a second's worth of burst: never reached.
        let (xdp, fd) = rrl_load(100, 10_000_000, 2, geodns_maps::config::DEFAULT_RRL_BUCKETS);
        let cold = measure(&xdp, fd, frames, 3);
        eprintln!("xdp_ns_v4_500k_rrl with every bucket new: {cold} ns");
        // Its compute cost alone: one client, everything in cache (xdp_ns_v4_hot's frames).
        let hot = vec![frames[0].clone(); SAMPLES];
        let (hot_base, hot_rrl) = measure_interleaved((base, 3), (fd, 3), &hot, 0);
        eprintln!("one client (cached, as xdp_ns_v4_hot): {hot_base} ns, with RRL {hot_rrl} ns");
        let (b, r) = measure_interleaved((base, 3), (fd, 3), frames, 0);
        out.insert("xdp_ns_v4_500k".into(), b);
        out.insert("xdp_ns_v4_500k_rrl".into(), r);
    }
    if want("xdp_ns_rrl_over_limit") {
        // 2^20 slots for ~19,000 buckets in debt: a few pairs get a third, which
        // takes a slot over with a fresh bucket (and gets an answer); allowed below.
        let (xdp, fd) = rrl_load(3_600_000_000_000, 1, 0, 1 << 20);
        // The first query of each bucket is its one answer.
        for f in frames {
            prog_test_run(fd, f, 1).expect("BPF_PROG_TEST_RUN");
        }
        let (b, r) = measure_interleaved((base, 3), (fd, 1), frames, frames.len() / 200);
        eprintln!("xdp_ns_rrl_over_limit: {r} ns against {b} ns answered, interleaved");
        drop(xdp);
        out.insert("xdp_ns_rrl_over_limit".into(), r);
    }
}

#[expect(clippy::too_many_lines, reason = "a linear benchmark script")]
fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    for w in &wanted {
        assert!(
            NAMES.contains(&w.as_str()),
            "unknown figure {w}; known: {NAMES:?}"
        );
    }
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let mut rng = Rng(0x5E_ED6E_0DA5_u64);
    let dst4 = Ipv4Addr::new(198, 18, 0, 2);
    let dst6: Ipv6Addr = "2001:2::2".parse().expect("v6");
    let mut out = BTreeMap::new();
    let mut xdp = KernelProgram::load(&LoadOptions::default()).expect("load XDP program");
    let fd = xdp.program_fd("xdp_dns").expect("fd");

    for (name, size) in [("xdp_ns_v4_1k", 1_000), ("xdp_ns_v4_100k", 100_000)] {
        if want(name) {
            let v4 = table_v4(size, &mut rng);
            xdp.install(&contents(v4.clone(), Vec::new()))
                .expect("install");
            let frames = frames_v4((0..SAMPLES).map(|_| pick_v4(&v4, &mut rng)), dst4);
            out.insert(name.to_string(), measure(&xdp, fd, &frames, 3));
        }
    }

    // The 500k tables, both families in one generation.
    let v4 = table_v4(500_000, &mut rng);
    let v6 = table_v6(500_000, &mut rng);
    let t = Instant::now();
    let stats = xdp
        .install(&contents(v4.clone(), v6.clone()))
        .expect("install");
    eprintln!(
        "500k IPv4 + 500k IPv6 prefixes installed in {:.2}s (fast path {:.2}s, {} + {} blocks, {} words, {} overflow)",
        t.elapsed().as_secs_f64(),
        stats.fast_seconds,
        stats.fast_blocks_v4,
        stats.fast_blocks_v6,
        stats.fast_words,
        stats.fast_overflow
    );
    out.insert("fastpath_fill_seconds".into(), stats.fast_seconds);
    let clients4: Vec<Ipv4Addr> = (0..SAMPLES).map(|_| pick_v4(&v4, &mut rng)).collect();
    let frames = frames_v4(clients4.iter().copied(), dst4);
    // The blocks each lookup reads past its top slot, as the loader lays them out
    // (a second build of the table, only when those figures are asked for).
    let fast = (want("xdp_v4_500k_block_reads") || want("xdp_v6_500k_block_reads"))
        .then(|| FastTable::build(&v4, &v6, MapSizes::default().fast_words as usize));
    if let Some(fast) = &fast {
        out.insert(
            "xdp_v4_500k_block_reads".into(),
            mean_count(clients4.iter().map(|c| fast.block_reads_v4(c.octets()))),
        );
    }
    if want("xdp_ns_v4_500k") {
        measure_into(&mut out, "xdp_ns_v4_500k", (&xdp, fd), &frames, 3);
    }
    if want("xdp_ns_v4_500k_shadow") || want("xdp_ns_v4_500k_shadow_all") {
        // A shadow run of the same 500k table in the idle generation: the daemon's
        // default sample (one answered query in 2^4) and every query.
        let shifted = contents(v4.clone(), v6.clone());
        for (name, exp) in [
            ("xdp_ns_v4_500k_shadow", geodns::shadow::DEFAULT_SAMPLE_EXP),
            ("xdp_ns_v4_500k_shadow_all", 0),
        ] {
            if want(name) {
                // Off and on in alternating rounds (the flag is one STATE update), so
                // a drift of the machine hits both. Mean ns per query (a sampled cost
                // does not move the median): the figure is the median round with the
                // shadow, its `_base` the median round without.
                xdp.stage_shadow(&shifted, exp).expect("stage the shadow");
                let on = xdp.flags();
                let (mut off_ns, mut on_ns) = (Vec::new(), Vec::new());
                for _ in 0..4 {
                    xdp.set_flags(0).expect("flags");
                    off_ns.push(measure_stats(&xdp, fd, &frames, 3).1);
                    xdp.set_flags(on).expect("flags");
                    on_ns.push(measure_stats(&xdp, fd, &frames, 3).1);
                }
                let counted: u64 = xdp
                    .shadow_counts()
                    .expect("counts")
                    .iter()
                    .map(|c| c.1)
                    .sum();
                assert!(counted > 0, "{name}: the shadow stage counted nothing");
                xdp.end_shadow().expect("end the shadow");
                off_ns.sort_by(f64::total_cmp);
                on_ns.sort_by(f64::total_cmp);
                eprintln!("{name}: rounds without the shadow {off_ns:?}, with it {on_ns:?}");
                out.insert(name.into(), on_ns[on_ns.len() / 2]);
                out.insert(format!("{name}_base"), off_ns[off_ns.len() / 2]);
            }
        }
    }
    if want("xdp_ns_v4_500k_rrl") || want("xdp_ns_rrl_over_limit") {
        rrl_figures(
            fd,
            &want,
            &contents(v4.clone(), v6.clone()),
            &frames,
            &mut out,
        );
    }
    if want("xdp_ns_v4_hot") {
        // The same program and table with one client address, every run: all it
        // reads is in cache, so this is the program's own cost (compute, not memory).
        let hot = vec![frames[0].clone(); SAMPLES];
        measure_into(&mut out, "xdp_ns_v4_hot", (&xdp, fd), &hot, 3);
    }
    if want("xdp_ns_v4_500k_trie_only") {
        xdp.set_flags(STATE_FLAG_TRIE_ONLY).expect("flags");
        out.insert(
            "xdp_ns_v4_500k_trie_only".into(),
            measure(&xdp, fd, &frames, 3),
        );
        xdp.set_flags(0).expect("flags");
    }
    if want("xdp_ns_empty") {
        // The floor of this measurement: a program that only returns XDP_PASS, run
        // on the same frames (the kernel's timer, dispatch and frame setup).
        let baseline = load_baseline("xdp_pass").expect("load the baseline object");
        let pass = baseline_fd(&baseline, "xdp_pass");
        measure_into(&mut out, "xdp_ns_empty", (&xdp, pass), &frames, 2);
    }
    if want("xdp_ns_grow_tail") {
        // The price of the one helper a geo answer calls: the frame grown by a record
        // with `bpf_xdp_adjust_tail`, then passed (read it against xdp_ns_empty).
        let baseline = load_baseline("xdp_grow").expect("load the baseline object");
        let grow = baseline_fd(&baseline, "xdp_grow");
        measure_into(&mut out, "xdp_ns_grow_tail", (&xdp, grow), &frames, 2);
    }
    if want("xdp_ns_parse_pass") {
        // Same frames, same program, told to pass after parsing.
        xdp.set_flags(STATE_FLAG_PASS_ALL).expect("flags");
        measure_into(&mut out, "xdp_ns_parse_pass", (&xdp, fd), &frames, 2);
        xdp.set_flags(0).expect("flags");
    }
    if want("xdp_ns_v4_500k_zipf") {
        // A resolver-like stream: Zipf over 50,000 client addresses of the table.
        let clients: Vec<Ipv4Addr> = (0..50_000).map(|_| pick_v4(&v4, &mut rng)).collect();
        let picks = zipf(&mut rng, clients.len(), SAMPLES);
        let frames = frames_v4(picks.iter().map(|i| clients[*i]), dst4);
        out.insert("xdp_ns_v4_500k_zipf".into(), measure(&xdp, fd, &frames, 3));
    }
    if want("xdp_ns_v4_ecs_500k") {
        let ecs: Vec<Vec<u8>> = (0..SAMPLES)
            .map(|_| {
                let c = pick_v4(&v4, &mut rng).octets();
                let q = Query::new(WWW, 1).ecs_raw(1, 24, 0, &c[..3]);
                Frame::new(
                    L3::V4 {
                        src: dst4,
                        dst: dst4,
                    },
                    &q,
                )
                .build()
            })
            .collect();
        out.insert("xdp_ns_v4_ecs_500k".into(), measure(&xdp, fd, &ecs, 3));
    }
    // The synthetic IPv6 table's prefix-length mix (real_bench prints GeoLite2's).
    out.extend(v6_length_mix("xdp_v6_500k", v6.iter().map(|p| p.1)));
    if want("xdp_ns_v6_500k") || want("xdp_v6_500k_block_reads") {
        let clients6: Vec<Ipv6Addr> = (0..SAMPLES).map(|_| pick_v6(&v6, &mut rng)).collect();
        if let Some(fast) = &fast {
            out.insert(
                "xdp_v6_500k_block_reads".into(),
                mean_count(clients6.iter().map(|c| fast.block_reads_v6(c.octets()))),
            );
        }
        if want("xdp_ns_v6_500k") {
            let frames: Vec<Vec<u8>> = clients6
                .iter()
                .map(|&src| Frame::new(L3::V6 { src, dst: dst6 }, &Query::new(WWW, 1)).build())
                .collect();
            measure_into(&mut out, "xdp_ns_v6_500k", (&xdp, fd), &frames, 3);
        }
    }
    if want("xdp_ns_probe_slot24") {
        // The reference: one slot of a 2^24 array at the client's /24, nothing
        // else (122 ns where the targets were set). Same frames as xdp_ns_v4_500k.
        let probe = SlotProbe::load().expect("load the slot probe");
        measure_into(
            &mut out,
            "xdp_ns_probe_slot24",
            (&xdp, probe.fd()),
            &frames,
            2,
        );
    }
    if want("xdp_ns_v4_sticky_hot") || want("xdp_ns_v4_sticky_500k") {
        // Every region answers by `sticky` over four nodes (a draw per node: the
        // rendezvous hash's whole cost), hot and across the 500k table.
        let mut sticky = contents(v4.clone(), v6.clone());
        for (_, set) in &mut sticky.answers {
            set.policy = geodns_common::POLICY_STICKY;
            set.n_v4 = 4;
            set.n_v6 = 4;
            for i in 0..4u8 {
                let slot = usize::from(i);
                set.v4[slot] = [198, 18, 1, i];
                set.v6[slot] = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, u16::from(i)).octets();
                set.cum_v4[slot] = u32::from(i + 1) * 10;
                set.cum_v6[slot] = u32::from(i + 1) * 10;
                set.tag_v4[slot] = geodns_common::sticky_tag(&format!("node{i}"));
                set.tag_v6[slot] = set.tag_v4[slot];
            }
        }
        xdp.install(&sticky).expect("install");
        let hot = vec![frames[0].clone(); SAMPLES];
        out.insert("xdp_ns_v4_sticky_hot".into(), measure(&xdp, fd, &hot, 3));
        out.insert(
            "xdp_ns_v4_sticky_500k".into(),
            measure(&xdp, fd, &frames, 3),
        );
        xdp.install(&contents(v4.clone(), v6.clone()))
            .expect("install");
    }
    if want("xdp_ns_static_soa") || want("xdp_ns_nxdomain") {
        // The zone's static answers: the demo zone compiled as `geodns run` installs it
        // (its static tables; the prefix tables play no part in these answers). SOA
        // at the apex from sources across the 500k table, and a random-subdomain
        // flood: every frame another name that does not exist (NXDOMAIN).
        let engine = demo_engine();
        xdp.install(&geodns::authoritative::kernel::kernel_maps(&engine))
            .expect("install the demo zone");
        let srcs: Vec<Ipv4Addr> = (0..SAMPLES).map(|_| pick_v4(&v4, &mut rng)).collect();
        let soa: Vec<Vec<u8>> = srcs
            .iter()
            .map(|&src| {
                Frame::new(
                    L3::V4 { src, dst: dst4 },
                    &Query::new("cdn.example.net.", 6),
                )
                .build()
            })
            .collect();
        out.insert("xdp_ns_static_soa".into(), measure(&xdp, fd, &soa, 3));
        let nx: Vec<Vec<u8>> = srcs
            .iter()
            .map(|&src| {
                let name = format!("r{:010x}.cdn.example.net.", rng.next_u64() >> 24);
                Frame::new(L3::V4 { src, dst: dst4 }, &Query::new(&name, 1)).build()
            })
            .collect();
        out.insert("xdp_ns_nxdomain".into(), measure(&xdp, fd, &nx, 3));
        xdp.install(&contents(v4.clone(), v6.clone()))
            .expect("install");
    }
    if want("maps_memlock_mib") {
        // Fill the other generation too: a running daemon holds two full tables.
        xdp.install(&contents(v4, v6)).expect("install");
        #[expect(clippy::cast_precision_loss, reason = "MiB")]
        let mib = xdp.memlock_bytes().expect("memlock") as f64 / f64::from(1u32 << 20);
        let mut by_map = xdp.memlock_by_map().expect("memlock");
        by_map.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
        for (name, bytes) in by_map.iter().take(12) {
            #[expect(clippy::cast_precision_loss, reason = "MiB")]
            let map_mib = *bytes as f64 / f64::from(1u32 << 20);
            eprintln!("memlock {name:<16} {map_mib:>8.1} MiB");
        }
        out.insert("maps_memlock_mib".into(), mib);
    }
    out.retain(|k, _| {
        want(k)
            || k.strip_suffix("_base").is_some_and(&want)
            || k.strip_suffix("_mean").is_some_and(&want)
    });
    println!("{}", serde_json::to_string(&out).expect("json"));
}

/// Raw fd of a loaded program of the baseline object, for `BPF_PROG_TEST_RUN`.
fn baseline_fd(ebpf: &aya::Ebpf, name: &str) -> i32 {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let program: &aya::programs::Xdp = ebpf
        .program(name)
        .expect("baseline program")
        .try_into()
        .expect("an XDP program");
    program.fd().expect("fd").as_fd().as_raw_fd()
}
