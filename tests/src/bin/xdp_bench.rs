//! Kernel benchmark: ns per query through `BPF_PROG_TEST_RUN`, with prefix tables of
//! 1k, 100k and 500k entries and client addresses drawn across the table (a fresh
//! frame per run, so no single hot address). Prints one JSON object of figures;
//! `cargo xtask bench` merges it into target/bench/results.json.
//!
//! Usage: `xdp_bench [NAME...]` (default: all figures).
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use geodns::loader::{Contents, LoadOptions, XdpDns};
use geodns_common::{
    AnswerKey, AnswerSet, NameKey, NameValue, PrefixValue, POLICY_BEST, STATE_FLAG_PASS_ALL,
};
use geodns_tests::{
    frame::{wire_name, Frame, Query, L3},
    prog_test_run,
};

/// Frames measured per figure, each run once.
const SAMPLES: usize = 20_000;
const REGIONS: u16 = 250;

/// Small deterministic generator (xorshift64*), so runs compare.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pv(region: u16, len: u8) -> PrefixValue {
    PrefixValue {
        region,
        prefix_len: len,
        _pad: 0,
    }
}

/// `n` distinct IPv4 prefixes with a GeoIP-like length mix (most /16../24, a third
/// longer than /24).
fn table_v4(n: usize, rng: &mut Rng) -> Vec<([u8; 4], u8, PrefixValue)> {
    let mut seen = BTreeMap::new();
    while seen.len() < n {
        let len = match rng.below(100) {
            0..=9 => 16 + u8::try_from(rng.below(4)).unwrap_or(0),
            10..=61 => 20 + u8::try_from(rng.below(5)).unwrap_or(0),
            _ => 25 + u8::try_from(rng.below(6)).unwrap_or(0),
        };
        let addr = u32::try_from(rng.below(1 << 32)).unwrap_or(0);
        let masked = addr & (u32::MAX << (32 - u32::from(len)));
        let region = 1 + u16::try_from(rng.below(u64::from(REGIONS))).unwrap_or(0);
        seen.insert((masked, len), region);
    }
    // Whole-space default, as the compiled maps have (gaps get region 0).
    seen.insert((0, 0), 0);
    seen.into_iter()
        .map(|((a, l), r)| (a.to_be_bytes(), l, pv(r, l)))
        .collect()
}

fn table_v6(n: usize, rng: &mut Rng) -> Vec<([u8; 16], u8, PrefixValue)> {
    let mut seen = BTreeMap::new();
    while seen.len() < n {
        let len = match rng.below(100) {
            0..=8 => 20 + u8::try_from(rng.below(13)).unwrap_or(0),
            9..=36 => 33 + u8::try_from(rng.below(16)).unwrap_or(0),
            _ => 49 + u8::try_from(rng.below(16)).unwrap_or(0),
        };
        let hi = (0x2000u128 | u128::from(rng.below(0x1FFF))) << 112;
        let addr = hi | (u128::from(rng.next()) << 48);
        let masked = addr & (u128::MAX << (128 - u32::from(len)));
        let region = 1 + u16::try_from(rng.below(u64::from(REGIONS))).unwrap_or(0);
        seen.insert((masked, len), region);
    }
    seen.insert((0, 0), 0);
    seen.into_iter()
        .map(|((a, l), r)| (a.to_be_bytes(), l, pv(r, l)))
        .collect()
}

fn contents(v4: Vec<([u8; 4], u8, PrefixValue)>, v6: Vec<([u8; 16], u8, PrefixValue)>) -> Contents {
    let mut key = NameKey::ZERO;
    let wire = wire_name("www.cdn.example.net.");
    key.name[..wire.len()].copy_from_slice(&wire);
    let mut answers = Vec::new();
    for region in 0..=REGIONS {
        let mut s = AnswerSet::EMPTY;
        s.ttl = 60;
        s.policy = POLICY_BEST;
        s.count = 1;
        s.n_v4 = 1;
        s.n_v6 = 1;
        s.v4[0] = [198, 18, 0, u8::try_from(region % 250).unwrap_or(0)];
        s.v6[0] = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, region).octets();
        answers.push((AnswerKey { record: 0, region }, s));
    }
    Contents {
        prefixes_v4: v4,
        prefixes_v6: v6,
        names: vec![(key, NameValue { record: 0, _pad: 0 })],
        answers,
    }
}

/// A client address inside a random prefix of the table.
fn pick_v4(table: &[([u8; 4], u8, PrefixValue)], rng: &mut Rng) -> Ipv4Addr {
    let idx = usize::try_from(rng.below(table.len() as u64)).unwrap_or(0);
    let (a, len, _) = table[idx];
    let host = u32::try_from(rng.below(1 << (32 - u32::from(len)))).unwrap_or(0);
    Ipv4Addr::from(u32::from_be_bytes(a) | host)
}

fn pick_v6(table: &[([u8; 16], u8, PrefixValue)], rng: &mut Rng) -> Ipv6Addr {
    let idx = usize::try_from(rng.below(table.len() as u64)).unwrap_or(0);
    let (a, len, _) = table[idx];
    let host = u128::from(rng.next()) & (u128::MAX >> u32::from(len).min(127));
    Ipv6Addr::from(u128::from_be_bytes(a) | host)
}

/// Mean kernel-measured ns per run over `frames`, one run each.
fn measure(xdp: &XdpDns, fd: i32, frames: &[Vec<u8>], want_action: u32) -> f64 {
    let mut total = 0u64;
    for f in frames {
        let before = xdp.counters().expect("counters");
        let run = prog_test_run(fd, f, 1).expect("BPF_PROG_TEST_RUN");
        if run.action != want_action {
            let after = xdp.counters().expect("counters");
            let why: Vec<&str> = (0..before.len())
                .filter(|&i| before[i] != after[i])
                .map(|i| geodns_common::counter::NAMES[i])
                .collect();
            panic!(
                "unexpected XDP action {} ({why:?}) for frame {f:02x?}",
                run.action
            );
        }
        total += u64::from(run.duration_ns);
    }
    #[expect(clippy::cast_precision_loss, reason = "a mean")]
    let mean = total as f64 / frames.len() as f64;
    mean
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let mut rng = Rng(0x5E_ED6E_0DA5_u64);
    let dst4 = Ipv4Addr::new(198, 18, 0, 2);
    let dst6: Ipv6Addr = "2001:2::2".parse().expect("v6");
    let www = "www.cdn.example.net.";
    let mut out = BTreeMap::new();
    let mut xdp = XdpDns::load(&LoadOptions::default()).expect("load XDP program");
    let fd = xdp.program_fd("xdp_dns").expect("fd");

    for (name, size) in [
        ("xdp_ns_v4_1k", 1_000),
        ("xdp_ns_v4_100k", 100_000),
        ("xdp_ns_v4_500k", 500_000),
    ] {
        if !want(name)
            && !(size == 500_000 && (want("xdp_ns_v4_ecs_500k") || want("xdp_ns_parse_pass")))
        {
            continue;
        }
        let v4 = table_v4(size, &mut rng);
        let t = Instant::now();
        xdp.install(&contents(v4.clone(), Vec::new()))
            .expect("install");
        eprintln!(
            "{name}: {size} IPv4 prefixes installed in {:.2}s",
            t.elapsed().as_secs_f64()
        );
        let frames: Vec<Vec<u8>> = (0..SAMPLES)
            .map(|_| {
                let src = pick_v4(&v4, &mut rng);
                Frame::new(L3::V4 { src, dst: dst4 }, &Query::new(www, 1)).build()
            })
            .collect();
        if want(name) {
            out.insert(name.to_string(), measure(&xdp, fd, &frames, 3));
        }
        if size == 500_000 {
            if want("xdp_ns_v4_ecs_500k") {
                let ecs: Vec<Vec<u8>> = (0..SAMPLES)
                    .map(|_| {
                        let c = pick_v4(&v4, &mut rng).octets();
                        let q = Query::new(www, 1).ecs_raw(1, 24, 0, &c[..3]);
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
            if want("xdp_ns_parse_pass") {
                // Same frames, same program, told to pass after parsing.
                xdp.set_flags(STATE_FLAG_PASS_ALL).expect("flags");
                out.insert("xdp_ns_parse_pass".into(), measure(&xdp, fd, &frames, 2));
                xdp.set_flags(0).expect("flags");
            }
        }
    }
    if want("xdp_ns_v6_500k") {
        let v6 = table_v6(500_000, &mut rng);
        let t = Instant::now();
        xdp.install(&contents(Vec::new(), v6.clone()))
            .expect("install");
        eprintln!(
            "xdp_ns_v6_500k: 500000 IPv6 prefixes installed in {:.2}s",
            t.elapsed().as_secs_f64()
        );
        let frames: Vec<Vec<u8>> = (0..SAMPLES)
            .map(|_| {
                let src = pick_v6(&v6, &mut rng);
                Frame::new(L3::V6 { src, dst: dst6 }, &Query::new(www, 1)).build()
            })
            .collect();
        out.insert("xdp_ns_v6_500k".into(), measure(&xdp, fd, &frames, 3));
    }
    println!("{}", serde_json::to_string(&out).expect("json"));
}
