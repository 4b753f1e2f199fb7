//! Handover of a large table under load, over a veth pair between two namespaces:
//! `geodns run` serving the 500k-network database that `compile_bench gen` made (in
//! the directory given as `--data DIR`) is replaced by a new `geodns run` while a paced
//! stream runs (20,000 queries a second: 90% `A` the XDP program answers, 10% SOA the
//! userspace server answers; a reply within 2 s or lost).
//!
//! - `handover_seconds`: from the start of the new process to the old one's exit;
//!   `handover_cold_start_seconds` (its baseline): the first daemon's start on the same
//!   table, from the process start to the program attached.
//! - `handover_lost_queries`: queries of the stream without a reply;
//!   `handover_baseline_lost_queries` (its baseline): the same stream as long again on
//!   the new daemon, nothing changing: what this host loses anyway.
//!
//! Where the losses fall (by quarter second from the new daemon's start), the veths'
//! drop counters and both namespaces' UDP counters go to stderr. Prints one JSON object.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use geodns_tests::{
    daemon::{geodns_bin, Daemon},
    frame::Query,
    stream::{self, Pace},
    NetnsPair, Side,
};

const PACE: Pace = Pace {
    rate: 20_000,
    timeout: Duration::from_secs(2),
    max_time: Duration::from_mins(3),
};
const METRICS: &str = "127.0.0.1:19155";

/// Which of the two queries query `i` is: every 10th the SOA.
fn pick(i: usize) -> usize {
    usize::from(i % 10 == 9)
}

/// When a stream's first query left.
fn first_sent(samples: &[stream::Sample]) -> Instant {
    samples.first().map_or_else(Instant::now, |s| s.sent)
}

/// Drops and errors both veths count (`ethtool -S`) and both namespaces' UDP counters.
fn drops(pair: &NetnsPair) -> String {
    let mut out = String::new();
    for side in [Side::Server, Side::Client] {
        let snmp = pair
            .exec(side, &["sh", "-c", "grep '^Udp:' /proc/net/snmp | tail -1"])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let _ = write!(out, "{side:?} {snmp}; ");
        let stats = pair
            .exec(side, &["ethtool", "-S", pair.ifname(side)])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for l in stats.lines().map(str::trim) {
            if (l.contains("drop") || l.contains("err") || l.contains("full"))
                && !l.ends_with(": 0")
            {
                let _ = write!(out, "{side:?} {l}; ");
            }
        }
    }
    out
}

/// Waits until the daemon has attached its program.
fn attached(pair: &NetnsPair, d: &mut Daemon) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_mins(2) {
        assert!(!d.exited(), "the daemon exited");
        if d.scrape(pair)
            .is_some_and(|m| m.contains("geodns_xdp_attach_info{"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the daemon did not attach");
}

/// Runs the stream in the client namespace until `stop`.
fn run_stream(pair: &NetnsPair, templates: &[Vec<u8>], stop: &AtomicBool) -> Vec<stream::Sample> {
    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    pair.in_ns(Side::Client, || {
        stream::udp(server, templates, pick, PACE, stop)
    })
    .expect("client namespace")
}

/// Lost queries of `samples`, by (quarter second from `began`, kind), on stderr.
fn report(samples: &[stream::Sample], began: Instant, seconds: f64) {
    let mut at = BTreeMap::new();
    let first = first_sent(samples);
    for s in samples.iter().filter(|s| s.reply.is_none()) {
        let from_start = s.sent.duration_since(first).as_secs_f64()
            - began.saturating_duration_since(first).as_secs_f64();
        #[expect(clippy::cast_possible_truncation, reason = "quarter seconds")]
        let q = (from_start * 4.0).floor() as i64;
        *at.entry((q, s.kind)).or_insert(0usize) += 1;
    }
    eprintln!("lost by (quarter second from the new daemon's start, kind): {at:?}");
    let lost: Vec<f64> = samples
        .iter()
        .filter(|s| s.reply.is_none())
        .map(|s| s.sent.saturating_duration_since(began).as_secs_f64() - seconds)
        .collect();
    if let (Some(a), Some(b)) = (lost.first(), lost.last()) {
        eprintln!("lost from {a:+.3} s to {b:+.3} s around the old daemon's exit");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args
        .iter()
        .position(|a| a == "--data")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .expect("--data DIR with the 500k-network database (compile_bench gen)");
    // The stream comes from one address: no rate limit.
    let text = std::fs::read_to_string(data.join("bench.toml")).expect("bench.toml");
    let config = data.join("handover.toml");
    std::fs::write(&config, text + "\n[rrl]\nrate = 0\n").expect("handover.toml");
    let config: &Path = &config;
    let pair = NetnsPair::new().expect("namespaces");
    let pin = format!("/sys/fs/bpf/geodns-bench-handover-{}", std::process::id());
    let started = Instant::now();
    let mut old = Daemon::spawn(&geodns_bin(), &pair, config, METRICS, &pin, &[]);
    attached(&pair, &mut old);
    let cold = started.elapsed().as_secs_f64();
    let _pass = pair.attach_pass(Side::Client).expect("xdp_pass");
    let templates = vec![
        // A client the table answers in the kernel (1.2.0.0/18 has a region of its own).
        Query::new("www.cdn.example.net.", 1)
            .ecs("1.2.3.0", 24)
            .build(),
        Query::new("cdn.example.net.", 6).build(),
    ];
    eprintln!("before: {}", drops(&pair));
    let stop = AtomicBool::new(false);
    let (began, seconds, samples, new) = std::thread::scope(|s| {
        let samples = s.spawn(|| run_stream(&pair, &templates, &stop));
        std::thread::sleep(Duration::from_secs(1));
        let began = Instant::now();
        let mut new = Daemon::spawn(&geodns_bin(), &pair, config, METRICS, &pin, &[]);
        while !old.exited() {
            assert!(!new.exited(), "the new daemon exited");
            assert!(began.elapsed() < Duration::from_mins(2), "no handover");
            std::thread::sleep(Duration::from_millis(5));
        }
        let seconds = began.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        (began, seconds, samples.join().expect("stream"), new)
    });
    eprintln!("after the handover: {}", drops(&pair));
    report(&samples, began, seconds);
    // The baseline: as long again on the new daemon, nothing changing.
    let span = samples.last().map_or(Duration::ZERO, |l| {
        l.sent.duration_since(first_sent(&samples))
    });
    let quiet = AtomicBool::new(false);
    let steady = std::thread::scope(|s| {
        let steady = s.spawn(|| run_stream(&pair, &templates, &quiet));
        std::thread::sleep(span);
        quiet.store(true, Ordering::Relaxed);
        steady.join().expect("stream")
    });
    eprintln!("after the baseline: {}", drops(&pair));
    let page = new.scrape(&pair).unwrap_or_default();
    let outcomes: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("geodns_xdp_packets_total") && !l.ends_with(" 0"))
        .collect();
    eprintln!("the new daemon's XDP outcomes: {outcomes:?}");
    drop(new);
    let lost = samples.iter().filter(|s| s.reply.is_none()).count();
    let steady_lost = steady.iter().filter(|s| s.reply.is_none()).count();
    eprintln!(
        "handover of the 500k table: cold start {cold:.2} s, handover {seconds:.2} s, {lost} of {} queries lost; {steady_lost} of {} without a handover",
        samples.len(),
        steady.len()
    );
    #[expect(clippy::cast_precision_loss, reason = "counts")]
    let out = BTreeMap::from([
        ("handover_cold_start_seconds", cold),
        ("handover_seconds", seconds),
        ("handover_lost_queries", lost as f64),
        ("handover_baseline_lost_queries", steady_lost as f64),
    ]);
    println!("{}", serde_json::to_string(&out).expect("json"));
}
