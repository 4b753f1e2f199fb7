//! End-to-end benchmark over a veth pair between two network namespaces: kxdpgun
//! (`AF_XDP`, Debian's knot-dnsutils) in the client namespace sends queries for a
//! bounded time; the figure is replies per second.
//!
//! - `e2e_qps_xdp`: the XDP program answering from the compiled demo config;
//! - `e2e_qps_echo_ceiling`: a trivial XDP echo on the same veth, same generator (the
//!   most this generator and veth can show, measured in the same run);
//! - `e2e_qps_xdp_rrl`: the same with response rate limiting on (a bucket per client
//!   /24 and record, the served-address check on), kxdpgun told to send from
//!   198.18.0.0/15 (`-l`); the limit (10M answers a second and as many at once) is
//!   high enough never to bite: the figure is the cost of keeping the buckets. (The
//!   kxdpgun of Debian 12, 3.2.6, sends every query from the range's first address,
//!   198.18.0.0, checked with a capture: one bucket. `xdp_bench`'s
//!   `xdp_ns_v4_500k_rrl` measures 20,000 clients.)
//! - `e2e_qps_userspace`: `geodns run --no-xdp` (the userspace server alone) on the
//!   server side of the same veth, same generator, same queries.
//!
//! - `reload_swap_seconds_500k`: `geodns run` serving a 500k-network database (made by
//!   `compile_bench gen` into the directory given as `--data DIR`); the database file is
//!   replaced and the figure is the time until `/metrics` counts the swapped reload.
//!
//! - `handover_seconds`: `geodns run` serving that 500k-network database is replaced
//!   by a new `geodns run` (a handover, see `daemon::handover`) while a paced stream
//!   (20,000 queries a second, 90% `A` the XDP program answers, 10% SOA userspace
//!   answers) runs; from the start of the new process to the old one's exit.
//!   `handover_lost_queries`: queries of that stream without a reply (2 s).
//!   `handover_cold_start_seconds` (the baseline): the first daemon's start on the same
//!   table, from the process start to the program attached.
//!   `handover_baseline_lost_queries` (the baseline): the same stream as long again,
//!   nothing changing: what this host loses anyway (on a loaded 2-CPU VM a stalled
//!   softirq overflows a veth ring).
//!
//! In all three runs the server's veth gets a receive thread of its own (threaded NAPI,
//! pinned to the last CPU: [`NetnsPair::receive_thread`]); kxdpgun pins itself to CPU
//! 0. Without it veth does the server's receive work, and so the XDP program, in the
//! generator's softirq on the generator's CPU, while the other CPU idles: the XDP
//! figure was the generator's and the program's share of one CPU (about 0.8 of an echo
//! that shared it the same way), while the userspace server already ran on the other
//! CPU. On a DNS box the NIC's receive queues have their own cores.
//!
//! Prints one JSON object. Bounded: each run lasts `SECONDS`, at most `QPS` offered.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::programs::XdpMode;
use geodns::loader::{KernelProgram, LoadOptions};
use geodns_maps::{
    config::{Guard, Rrl},
    defence::kernel_defence,
    Compiled, Config, Engine, NodeStates,
};
use geodns_tests::{
    daemon::{geodns_bin, metric, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    stream::{self, Pace},
    NetnsPair, Side,
};

const SECONDS: u32 = 3;
const QPS: u32 = 2_000_000;
/// Queries per send batch: kxdpgun's default of 10 made the generator the limit (the
/// echo ceiling rose from ~590k to ~670k replies/s with 64 here).
const BATCH: u32 = 64;

/// Runs kxdpgun in the client namespace and returns the replies per second it saw.
fn kxdpgun(pair: &NetnsPair, queries: &std::path::Path, extra: &[&str]) -> f64 {
    kxdpgun_share(pair, queries, extra).0
}

/// [`kxdpgun`], and the share of the queries sent that got a reply.
fn kxdpgun_share(pair: &NetnsPair, queries: &std::path::Path, extra: &[&str]) -> (f64, f64) {
    let out = Command::new("ip")
        .args(["netns", "exec", &pair.client_ns, "kxdpgun"])
        .args(extra)
        .args(["-t", &SECONDS.to_string(), "-Q", &QPS.to_string()])
        .args(["-b", &BATCH.to_string()])
        .arg("-i")
        .arg(queries)
        .args(["-I", &pair.client_if, &pair.server_v4.to_string()])
        .output()
        .expect("run kxdpgun (cargo xtask bench installs knot-dnsutils)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprint!("{text}");
    // "total replies:     123456 (41152 pps) (99%)"
    let line = text.lines().find(|l| l.starts_with("total replies:"));
    let field = |i: usize| -> f64 {
        line.and_then(|l| l.split('(').nth(i))
            .and_then(|s| s.split(|c: char| c.is_whitespace() || c == '%').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0)
    };
    (field(1), field(2) / 100.0)
}

/// Replies per second from `geodns run --no-xdp` listening on the server's address.
fn userspace(config: &Path, queries: &Path) -> f64 {
    userspace_with(config, queries, &[], false).0
}

/// [`userspace`] with more `geodns run` arguments, optionally with every query from
/// another source in 198.18.0.0/15 (`kxdpgun -l`: the kernel spreads them over the
/// workers' sockets; the server namespace routes that subnet back through the client
/// veth); also the share of the queries that got a reply.
fn userspace_with(config: &Path, queries: &Path, extra: &[&str], many: bool) -> (f64, f64) {
    let pair = NetnsPair::new().expect("namespaces");
    let listen = format!("{}:53", pair.server_v4);
    let mut args = vec!["--no-xdp", "--listen", &listen];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(
        &pair,
        config,
        "127.0.0.1:19155",
        &format!("/sys/fs/bpf/geodns-e2e-user-{}", std::process::id()),
        &args,
        Duration::from_mins(1),
    );
    pair.receive_thread(Side::Server)
        .expect("a receive thread for the server veth");
    if many {
        let route = pair.exec(
            Side::Server,
            &[
                "ip",
                "route",
                "add",
                "198.18.0.0/15",
                "via",
                &pair.client_v4.to_string(),
            ],
        );
        assert!(
            route.is_ok_and(|o| o.status.success()),
            "route to the sources"
        );
    }
    let sources: &[&str] = if many { &["-l", "198.18.0.0/15"] } else { &[] };
    let (qps, share) = kxdpgun_share(&pair, queries, sources);
    let answered = daemon.scrape(&pair).map_or(0, |m| {
        metric(&m, "geodns_xdp_packets_total{outcome=\"answered_v4\"}")
    });
    eprintln!(
        "userspace {extra:?}, many sources {many}: {qps} replies/s, {:.1}% of the queries (geodns run --no-xdp; XDP answered {answered})",
        share * 100.0
    );
    (qps, share)
}

/// File change to swapped maps for the 500k-network database in `data`.
fn reload_swap(data: &Path) -> f64 {
    let pair = NetnsPair::new().expect("namespaces");
    let pin = format!("/sys/fs/bpf/geodns-e2e-{}", std::process::id());
    let daemon = Daemon::start(
        &pair,
        &data.join("bench.toml"),
        "127.0.0.1:19154",
        &pin,
        &["--watch-interval", "50ms"],
        Duration::from_mins(1),
    );
    let reloads = || {
        daemon
            .scrape(&pair)
            .map_or(0, |m| metric(&m, "geodns_reloads_total{result=\"ok\"}"))
    };
    // Replace the database (same content, new file): a full compile and swap.
    let db = data.join("bench.mmdb");
    let tmp = data.join("bench.mmdb.new");
    std::fs::copy(&db, &tmp).expect("copy database");
    let t = Instant::now();
    std::fs::rename(&tmp, &db).expect("replace database");
    let mut seconds = f64::NAN;
    while t.elapsed() < Duration::from_secs(30) {
        if reloads() >= 1 {
            seconds = t.elapsed().as_secs_f64();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seconds
}

/// When a stream's first query left.
fn first_sent(samples: &[stream::Sample]) -> Instant {
    samples.first().map_or_else(Instant::now, |s| s.sent)
}

/// The first daemon's cold start, then a handover under load on the 500k table in
/// `data`: (`handover_cold_start_seconds`, `handover_seconds`, `handover_lost_queries`,
/// `handover_baseline_lost_queries`).
fn handover(data: &Path) -> (f64, f64, f64, f64) {
    // The stream comes from one address: no rate limit.
    let text = std::fs::read_to_string(data.join("bench.toml")).expect("bench.toml");
    let config = data.join("handover.toml");
    std::fs::write(&config, text + "\n[rrl]\nrate = 0\n").expect("handover.toml");
    let pair = NetnsPair::new().expect("namespaces");
    let pin = format!("/sys/fs/bpf/geodns-bench-handover-{}", std::process::id());
    let metrics = "127.0.0.1:19155";
    let attached = |d: &mut Daemon| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_mins(2) {
            assert!(!d.exited(), "the daemon exited");
            if d.scrape(&pair)
                .is_some_and(|m| m.contains("geodns_xdp_attach_info{"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the daemon did not attach");
    };
    let started = Instant::now();
    let mut old = Daemon::spawn(&geodns_bin(), &pair, &config, metrics, &pin, &[]);
    attached(&mut old);
    let cold = started.elapsed().as_secs_f64();
    let _pass = pair.attach_pass(Side::Client).expect("xdp_pass");
    let server = std::net::SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    let templates = vec![
        Query::new("www.cdn.example.net.", 1).build(),
        Query::new("cdn.example.net.", 6).build(),
    ];
    let pace = Pace {
        rate: 20_000,
        timeout: Duration::from_secs(2),
        max_time: Duration::from_mins(3),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Drops and errors the veths count (`ethtool -S`), both ends: where a loss happened.
    let veth_drops = || {
        let mut out = String::new();
        for side in [Side::Server, Side::Client] {
            let text = pair
                .exec(side, &["ethtool", "-S", pair.ifname(side)])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let snmp = pair
                .exec(side, &["sh", "-c", "grep '^Udp:' /proc/net/snmp | tail -1"])
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            out += &format!("{side:?} Udp {snmp}; ");
            for l in text.lines() {
                let l = l.trim();
                if (l.contains("drop") || l.contains("err") || l.contains("full"))
                    && !l.ends_with(": 0")
                {
                    out += &format!("{side:?} {l}; ");
                }
            }
        }
        out
    };
    eprintln!("server veth before: {}", veth_drops());
    let mut began_at = Instant::now();
    let (seconds, samples, new) = std::thread::scope(|s| {
        let samples = s.spawn(|| {
            pair.in_ns(Side::Client, || {
                stream::udp(
                    server,
                    &templates,
                    |i| usize::from(i % 10 == 9),
                    pace,
                    &stop,
                )
            })
            .expect("client namespace")
        });
        std::thread::sleep(Duration::from_secs(1));
        let began = Instant::now();
        began_at = began;
        let mut new = Daemon::spawn(&geodns_bin(), &pair, &config, metrics, &pin, &[]);
        while !old.exited() {
            assert!(!new.exited(), "the new daemon exited");
            assert!(began.elapsed() < Duration::from_mins(2), "no handover");
            std::thread::sleep(Duration::from_millis(5));
        }
        let seconds = began.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (seconds, samples.join().expect("stream"), new)
    });
    // The baseline: the same stream for as long, on the new daemon, nothing changing
    // (this machine's own losses: a loaded host stalls softirqs).
    let span = samples.last().map_or(Duration::ZERO, |l| {
        l.sent.duration_since(first_sent(&samples))
    });
    let quiet = std::sync::atomic::AtomicBool::new(false);
    let steady = std::thread::scope(|s| {
        let steady = s.spawn(|| {
            pair.in_ns(Side::Client, || {
                stream::udp(
                    server,
                    &templates,
                    |i| usize::from(i % 10 == 9),
                    pace,
                    &quiet,
                )
            })
            .expect("client namespace")
        });
        std::thread::sleep(span);
        quiet.store(true, std::sync::atomic::Ordering::Relaxed);
        steady.join().expect("stream")
    });
    let steady_lost = steady.iter().filter(|s| s.reply.is_none()).count();
    drop(new);
    eprintln!("server veth after: {}", veth_drops());
    let lost = samples.iter().filter(|s| s.reply.is_none()).count();
    // Where the losses fall, by quarter second from the new daemon's start, and kind.
    let mut at = BTreeMap::new();
    for s in samples.iter().filter(|s| s.reply.is_none()) {
        #[expect(clippy::cast_possible_truncation, reason = "quarter seconds")]
        let q = ((s.sent.duration_since(first_sent(&samples)).as_secs_f64()
            - began_at.duration_since(first_sent(&samples)).as_secs_f64())
            * 4.0)
            .floor() as i64;
        *at.entry((q, s.kind)).or_insert(0usize) += 1;
    }
    eprintln!("lost by (quarter second from the new daemon's start, kind): {at:?}");
    let lost_at: Vec<f64> = samples
        .iter()
        .filter(|s| s.reply.is_none())
        .map(|s| s.sent.saturating_duration_since(began_at).as_secs_f64() - seconds)
        .collect();
    if let (Some(a), Some(b)) = (lost_at.first(), lost_at.last()) {
        eprintln!("lost from {a:+.3} s to {b:+.3} s around the old daemon's exit");
    }
    eprintln!(
        "handover of the 500k table: cold start {cold:.2} s, handover {seconds:.2} s, {lost} of {} queries lost; {steady_lost} of {} without a handover",
        samples.len(),
        steady.len()
    );
    #[expect(clippy::cast_precision_loss, reason = "counts")]
    (cold, seconds, lost as f64, steady_lost as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args
        .iter()
        .position(|a| a == "--data")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let wanted: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && Some(Path::new(a.as_str())) != data.as_deref())
        .cloned()
        .collect();
    let want = |n: &str| wanted.is_empty() || wanted.iter().any(|w| w == n);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml");
    let config = Config::from_path(&path).expect("demo config");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile");
    let states = NodeStates::from_config(&config);
    let engine = Engine::new(Arc::new(config), Arc::new(compiled), &states);
    let queries = std::env::temp_dir().join(format!("geodns-e2e-{}.txt", std::process::id()));
    std::fs::write(&queries, "www.cdn.example.net A\n").expect("queries file");

    let mut out = BTreeMap::new();
    for (name, program) in [
        ("e2e_qps_xdp", "xdp_dns"),
        ("e2e_qps_xdp_rrl", "xdp_dns"),
        ("e2e_qps_echo_ceiling", "xdp_echo"),
    ] {
        if !want(name) {
            continue;
        }
        let pair = NetnsPair::new().expect("namespaces");
        let rrl = name == "e2e_qps_xdp_rrl";
        let mut options = LoadOptions::default();
        if rrl {
            let mut r = Rrl::default();
            r.rate = 10_000_000;
            r.burst = 10_000_000;
            let served = [IpAddr::V4(pair.server_v4), IpAddr::V6(pair.server_v6)];
            options.defence = kernel_defence(&r, &Guard::default(), Some(&served)).0;
            options.rrl_buckets = r.buckets;
        }
        let mut xdp = KernelProgram::load(&options).expect("load");
        xdp.install(&engine.kernel_maps()).expect("install");
        // The echo is in the baseline object; the responder's counters then stay 0.
        let _echo = if program == "xdp_echo" {
            Some(
                pair.attach_baseline(Side::Server, program)
                    .expect("attach the echo on the server veth"),
            )
        } else {
            pair.attach(Side::Server, &mut xdp, program, XdpMode::Driver)
                .expect("attach on the server veth");
            None
        };
        pair.receive_thread(Side::Server)
            .expect("a receive thread for the server veth");
        let extra: &[&str] = if rrl { &["-l", "198.18.0.0/15"] } else { &[] };
        let qps = kxdpgun(&pair, &queries, extra);
        let c = xdp.counters().expect("counters");
        eprintln!(
            "{name}: {qps} replies/s ({program}; XDP answered {} in total; rrl_dropped {}, rrl_slipped {})",
            c[1] + c[2],
            c[geodns_common::counter::RRL_DROPPED as usize],
            c[geodns_common::counter::RRL_SLIPPED as usize],
        );
        out.insert(name.to_string(), qps);
    }
    if want("e2e_qps_userspace") {
        // The demo's health-check targets are not on the bench hosts.
        let dir = TempDir::new("e2e-user");
        let config = demo_without_checks(dir.path());
        out.insert(
            "e2e_qps_userspace".to_string(),
            userspace(&config, &queries),
        );
    }
    // The userspace server with every query from another client: one worker against
    // the default (one per CPU), and how many queries it leaves unanswered.
    if want("e2e_qps_userspace_many") || want("e2e_qps_userspace_many_1worker") {
        let dir = TempDir::new("e2e-user-many");
        let config = demo_without_checks(dir.path());
        let (one, _) = userspace_with(&config, &queries, &["--workers", "1"], true);
        let (all, share) = userspace_with(&config, &queries, &[], true);
        out.insert("e2e_qps_userspace_many_1worker".to_string(), one);
        out.insert("e2e_qps_userspace_many".to_string(), all);
        out.insert("e2e_userspace_reply_share_many".to_string(), share);
    }
    let _ = std::fs::remove_file(&queries);
    if want("reload_swap_seconds_500k") {
        let data = data
            .clone()
            .expect("--data DIR with the 500k-network database (compile_bench gen)");
        out.insert("reload_swap_seconds_500k".to_string(), reload_swap(&data));
    }
    if want("handover_seconds")
        || want("handover_lost_queries")
        || want("handover_cold_start_seconds")
        || want("handover_baseline_lost_queries")
    {
        let data = data.expect("--data DIR with the 500k-network database (compile_bench gen)");
        let (cold, seconds, lost, steady) = handover(&data);
        out.insert("handover_cold_start_seconds".to_string(), cold);
        out.insert("handover_seconds".to_string(), seconds);
        out.insert("handover_lost_queries".to_string(), lost);
        out.insert("handover_baseline_lost_queries".to_string(), steady);
    }
    println!("{}", serde_json::to_string(&out).expect("json"));
}
