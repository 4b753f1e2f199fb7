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
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
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
    daemon::{metric, Daemon},
    files::{demo_without_checks, TempDir},
    gun::{self, Shot, Sources, Template},
    knot::Knot,
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

/// Routes 198.18.0.0/15 from the server namespace back through the client veth: a
/// server's replies to the many sources go back to where the generator sends from.
fn route_sources(pair: &NetnsPair) {
    let via = pair.client_v4.to_string();
    let route = pair.exec(
        Side::Server,
        &["ip", "route", "add", "198.18.0.0/15", "via", &via],
    );
    assert!(
        route.is_ok_and(|o| o.status.success()),
        "route to the sources"
    );
}

/// `geodns run --listen <server>:53 EXTRA...` serving `config` on a fresh pair, the
/// server veth with its receive thread; with `many`, the server namespace routes
/// 198.18.0.0/15 back through the client veth, where the many sources' replies go.
fn daemon_pair(config: &Path, extra: &[&str], many: bool) -> (NetnsPair, Daemon) {
    let pair = NetnsPair::new().expect("namespaces");
    let listen = format!("{}:53", pair.server_v4);
    let mut args = vec!["--listen", &listen];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(
        &pair,
        config,
        "127.0.0.1:19155",
        &format!("/sys/fs/bpf/geodns-e2e-daemon-{}", std::process::id()),
        &args,
        Duration::from_mins(1),
    );
    pair.receive_thread(Side::Server)
        .expect("a receive thread for the server veth");
    if many {
        route_sources(&pair);
    }
    (pair, daemon)
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
    let mut args = vec!["--no-xdp"];
    args.extend_from_slice(extra);
    let (pair, daemon) = daemon_pair(config, &args, many);
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

/// The demo config with the lab range split over many regions: 64 CIDR keys of
/// 198.18.0.0/15 (a /21 each), each with its own candidates among 8 nodes, so every
/// query of a many-sources run is a real lookup that lands in one of 64 regions.
fn many_regions(dir: &Path) -> PathBuf {
    let config = demo_without_checks(dir);
    let text = std::fs::read_to_string(&config).expect("read the config");
    let nodes = [
        "fra1", "ams1", "nyc1", "sjc1", "gru1", "sin1", "core1", "core2",
    ];
    let mut keys = String::new();
    for i in 0..64u32 {
        let net = std::net::Ipv4Addr::from(0xc612_0000 | (i << 11));
        let (a, b) = (
            nodes[(i % 8) as usize],
            nodes[((i + 1 + (i / 8) % 7) % 8) as usize],
        );
        let _ = writeln!(keys, "\"{net}/21\" = {{ {a} = {}, {b} = 1 }}", 10 + i / 8);
    }
    let old = "\"198.18.0.0/15\" = { fra1 = 1 }";
    assert!(text.contains(old), "the demo maps the lab range");
    let text = text.replacen(old, keys.trim_end(), 1);
    std::fs::write(&config, text).expect("write the config");
    config
}

/// Loads the responder with `options` and `engine`'s maps (geo and static) and attaches
/// `program` natively on `pair`'s server veth, or the echo of the baseline object (the
/// responder's counters then stay 0), and gives that veth its receive thread. The
/// program stays attached while the returned objects live.
fn serve(
    pair: &NetnsPair,
    engine: &Engine,
    program: &'static str,
    options: &LoadOptions,
) -> (KernelProgram, Option<aya::Ebpf>) {
    let mut xdp = KernelProgram::load(options).expect("load");
    xdp.install(&geodns::authoritative::kernel::kernel_maps(engine))
        .expect("install");
    let echo = if program == "xdp_echo" {
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
    (xdp, echo)
}

/// Loads the responder with `config`'s maps (or the echo) on a fresh pair's server veth
/// and fires `mix` at it with the benchmarks' generator.
fn xdp_gun(engine: &Engine, program: &'static str, mix: &[Template], sources: Sources) -> Shot {
    let pair = NetnsPair::new().expect("namespaces");
    let (xdp, _echo) = serve(&pair, engine, program, &LoadOptions::default());
    let shot = gun::fire(&pair, mix, sources, f64::from(SECONDS), u64::from(QPS)).expect("fire");
    let c = xdp.counters().expect("counters");
    eprintln!(
        "{program} {sources:?}: {:.0} replies/s of {:.0} sent/s ({} refused); rcodes {:?}; XDP answered {}",
        shot.qps(),
        shot.sent_qps(),
        shot.refused,
        &shot.rcodes[..6],
        c[1] + c[2],
    );
    shot
}

/// The query mix of a realistic load: half geo `A`, the apex SOA and NS, the name
/// server's own address, `AAAA` of a name that has only `A` (NODATA), and 15% names
/// that do not exist (a new random label each query: NXDOMAIN).
fn mixed() -> Vec<Template> {
    vec![
        Template::new("www.cdn.example.net", 1, 50),
        Template::new("cdn.example.net", 6, 8),
        Template::new("cdn.example.net", 2, 8),
        Template::new("ns1.cdn.example.net", 1, 8),
        Template::new("mail.cdn.example.net", 28, 11),
        Template::new("{rand}.cdn.example.net", 1, 15),
    ]
}

/// `geodns run` (with XDP on the server veth, or `--no-xdp`) serving `config` on a
/// fresh pair, the mix fired at it from many sources; also the share of the replies
/// that XDP gave.
fn daemon_gun(config: &Path, xdp: bool, mix: &[Template]) -> (Shot, f64) {
    let args: &[&str] = if xdp { &[] } else { &["--no-xdp"] };
    let (pair, daemon) = daemon_pair(config, args, true);
    gun::pin_process(daemon.pid(), gun::server_cpu()).expect("pin the daemon");
    let shot = gun::fire(
        &pair,
        mix,
        Sources::Many,
        f64::from(SECONDS),
        u64::from(QPS),
    )
    .expect("fire");
    // Everything XDP answered: geo answers and the zone's static ones.
    let answered = daemon.scrape(&pair).map_or(0, |m| {
        [
            "answered_v4",
            "answered_v6",
            "answered_static",
            "answered_nodata",
            "answered_nxdomain",
            "answered_refused",
        ]
        .iter()
        .map(|o| metric(&m, &format!("geodns_xdp_packets_total{{outcome=\"{o}\"}}")))
        .sum::<u64>()
    });
    #[expect(clippy::cast_precision_loss, reason = "a share")]
    let share = answered as f64 / shot.replies().max(1) as f64;
    eprintln!(
        "geodns run (xdp {xdp}), mixed: {:.0} replies/s of {:.0} sent/s ({:.1}% replied, {} refused); rcodes {:?}; XDP gave {:.1}% of the replies",
        shot.qps(),
        shot.sent_qps(),
        shot.reply_share() * 100.0,
        shot.refused,
        &shot.rcodes[..6],
        share * 100.0,
    );
    (shot, share)
}

/// Knot (Debian's `knotd`, one UDP worker per CPU, its default) serving [`geodns_tests::knot::ZONE`]
/// on a fresh pair's server address, the mix fired at it from many sources.
fn knot_gun(mix: &[Template]) -> Shot {
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("e2e-knot");
    let knot = Knot::start(&pair, dir.path(), SocketAddr::from((pair.server_v4, 53)))
        .expect("knotd (cargo xtask bench installs Debian's knot)");
    gun::pin_process(knot.pid(), gun::server_cpu()).expect("pin knotd");
    pair.receive_thread(Side::Server)
        .expect("a receive thread for the server veth");
    route_sources(&pair);
    let shot = gun::fire(
        &pair,
        mix,
        Sources::Many,
        f64::from(SECONDS),
        u64::from(QPS),
    )
    .expect("fire");
    drop(knot);
    eprintln!(
        "knotd, mixed: {:.0} replies/s of {:.0} sent/s ({:.1}% replied); rcodes {:?}",
        shot.qps(),
        shot.sent_qps(),
        shot.reply_share() * 100.0,
        &shot.rcodes[..6],
    );
    shot
}

/// Rounds of the many-sources figures; each round runs every one once, the order
/// reversed every other round, and a figure is the median of its rounds (with its
/// smallest and largest under `_min` and `_max`).
const ROUNDS: usize = 3;

/// The figures with the benchmarks' own generator (every query another client):
/// - `e2e_qps_echo_ceiling_many`: the echo, the most this generator and veth show;
/// - `e2e_qps_xdp_many`: geo `A` queries, the responder alone, the demo with the lab
///   range split over 64 regions and 8 nodes;
/// - `e2e_qps_xdp_mixed`: `geodns run` with XDP, the realistic mix ([`mixed`]), and
///   `e2e_xdp_answered_share_mixed`, the share of its replies XDP gave;
/// - `e2e_qps_userspace_mixed`: `geodns run --no-xdp`, the same mix;
/// - `e2e_qps_knot_mixed`: Knot serving the same zone without geo answers, a peer.
fn many_sources(want: &dyn Fn(&str) -> bool, out: &mut BTreeMap<String, f64>) {
    let names = [
        "e2e_qps_echo_ceiling_many",
        "e2e_qps_xdp_many",
        "e2e_qps_xdp_mixed",
        "e2e_qps_userspace_mixed",
        "e2e_qps_knot_mixed",
    ];
    let run: Vec<&str> = names.iter().copied().filter(|n| want(n)).collect();
    if run.is_empty() {
        return;
    }
    let dir = TempDir::new("e2e-many");
    let config = many_regions(dir.path());
    let engine = engine_of(&config);
    let geo = [Template::new("www.cdn.example.net", 1, 1)];
    let mix = mixed();
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut order = run.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for name in order {
            let (qps, extra) = match name {
                "e2e_qps_echo_ceiling_many" => (
                    xdp_gun(&engine, "xdp_echo", &geo, Sources::Many).qps(),
                    None,
                ),
                "e2e_qps_xdp_many" => {
                    (xdp_gun(&engine, "xdp_dns", &geo, Sources::Many).qps(), None)
                }
                "e2e_qps_knot_mixed" => (knot_gun(&mix).qps(), None),
                "e2e_qps_xdp_mixed" => {
                    let (shot, share) = daemon_gun(&config, true, &mix);
                    (shot.qps(), Some(("e2e_xdp_answered_share_mixed", share)))
                }
                _ => {
                    let (shot, _) = daemon_gun(&config, false, &mix);
                    (
                        shot.qps(),
                        Some(("e2e_userspace_reply_share_mixed", shot.reply_share())),
                    )
                }
            };
            samples.entry(name).or_default().push(qps);
            if let Some((n, v)) = extra {
                samples.entry(n).or_default().push(v);
            }
        }
    }
    for (name, mut v) in samples {
        v.sort_by(f64::total_cmp);
        eprintln!("{name}: rounds {v:?}");
        out.insert(name.to_string(), v[v.len() / 2]);
        out.insert(format!("{name}_min"), v[0]);
        out.insert(format!("{name}_max"), v[v.len() - 1]);
    }
}

fn engine_of(path: &Path) -> Engine {
    let config = Config::from_path(path).expect("config");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
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
    many_sources(&want, &mut out);
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
        let (xdp, _echo) = serve(&pair, &engine, program, &options);
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
        let data = data.expect("--data DIR with the 500k-network database (compile_bench gen)");
        out.insert("reload_swap_seconds_500k".to_string(), reload_swap(&data));
    }
    println!("{}", serde_json::to_string(&out).expect("json"));
}
