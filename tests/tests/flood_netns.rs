//! A random-subdomain flood, the classic attack on authoritative servers, against
//! `geodns run` with XDP on a veth pair: kxdpgun (`AF_XDP`, as fast as it can) sends
//! 100,000 distinct names that do not exist (`rNNNNNN.cdn.example.net.`, one template
//! per line, over IPv6) while a paced client asks the geo name `www`. The legitimate
//! client loses nothing, and the kernel answered the flood (NXDOMAIN from the static
//! tables: nothing reaches the userspace server for want of a name).
//!
//! The paced client asks over TCP (the userspace server's path): kxdpgun's own XDP
//! program on the client veth takes every UDP reply from port 53, IPv4 and IPv6, so no
//! UDP client beside it gets one. The flood must leave the box able to answer.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use geodns_tests::{
    daemon::{metric, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    require_bpf, stream, NetnsPair,
};

/// Distinct names in the flood's query file.
const NAMES: usize = 100_000;
/// Seconds kxdpgun floods.
const SECONDS: u64 = 6;
/// Queries a second of the flood: over twice what the userspace server answers on this
/// machine, yet leaving the two CPUs room for the paced client and the server's TCP
/// (at kxdpgun's full speed, about 500k a second here, the generator and the kernel's
/// receive work starved the paced TCP client, which then sent 72 queries in 3 s).
const FLOOD_QPS: u64 = 300_000;

/// kxdpgun's "total replies:" count.
fn replies(text: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with("total replies:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: flood, paced client, counts"
)]
fn random_subdomain_flood_is_answered_in_the_kernel() {
    if !require_bpf() {
        return;
    }
    if Command::new("kxdpgun").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("GEODNS_REQUIRE_BPF").is_none(),
            "kxdpgun missing (cargo xtask setup installs knot-dnsutils)"
        );
        eprintln!("skipped: kxdpgun missing (knot-dnsutils)");
        return;
    }
    let dir = TempDir::new("geodns-flood");
    let config = demo_without_checks(dir.path());
    let pair = NetnsPair::new().expect("namespaces");
    let daemon = Daemon::start(
        &pair,
        &config,
        "127.0.0.1:19181",
        &format!("/sys/fs/bpf/geodns-flood-{}", std::process::id()),
        &[],
        Duration::from_mins(1),
    );
    let mut names = String::new();
    for i in 0..NAMES {
        let _ = writeln!(names, "r{i:06}.cdn.example.net. A");
    }
    let file = dir.path().join("flood.txt");
    std::fs::write(&file, names).expect("write the query file");
    let counters = |what: &str| {
        let m = daemon.scrape(&pair).expect("metrics");
        metric(
            &m,
            &format!("geodns_xdp_packets_total{{outcome=\"{what}\"}}"),
        )
    };
    let (nx0, passed0) = (counters("answered_nxdomain"), counters("pass_not_served"));

    let stop = AtomicBool::new(false);
    let server = SocketAddr::from((pair.server_v4, 53));
    let www = Query::new("www.cdn.example.net.", 1).build();
    let (flood, samples) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            // kxdpgun's own XDP program on the client veth also lets the server's XDP_TX
            // replies in, for it and for the paced client.
            Command::new("ip")
                .args(["netns", "exec", &pair.client_ns, "kxdpgun"])
                .args([
                    "-t",
                    &SECONDS.to_string(),
                    "-Q",
                    &FLOOD_QPS.to_string(),
                    "-b",
                    "64",
                ])
                .arg("-i")
                .arg(&file)
                .args(["-I", &pair.client_if, &pair.server_v6.to_string()])
                .output()
                .expect("run kxdpgun")
        });
        // While kxdpgun runs (it attaches within a second): 500 geo queries a second.
        std::thread::sleep(Duration::from_millis(1500));
        let samples = pair
            .in_ns(geodns_tests::Side::Client, || {
                stream::tcp(
                    server,
                    &www,
                    stream::Pace {
                        rate: 500,
                        timeout: Duration::from_secs(1),
                        max_time: Duration::from_secs(SECONDS - 3),
                    },
                    &stop,
                )
            })
            .expect("client namespace");
        stop.store(true, Ordering::Relaxed);
        (flood.join().expect("kxdpgun thread"), samples)
    });
    let text = String::from_utf8_lossy(&flood.stdout).into_owned()
        + &String::from_utf8_lossy(&flood.stderr);
    eprint!("{text}");
    let flood_replies = replies(&text);
    let nx = counters("answered_nxdomain") - nx0;
    let passed = counters("pass_not_served") - passed0;
    let lost = samples.iter().filter(|s| s.reply.is_none()).count();
    let wrong = samples
        .iter()
        .filter(|s| s.reply.as_ref().is_some_and(|r| r.1 != 0 || r.2.is_empty()))
        .count();
    eprintln!(
        "flood: {flood_replies} replies seen by kxdpgun, {nx} NXDOMAIN by the kernel, {passed} \
         passed for want of a name; paced client: {} queries, {lost} lost, {wrong} wrong",
        samples.len()
    );
    assert!(
        flood_replies >= NAMES as u64,
        "the flood went through all {NAMES} names: {flood_replies} replies"
    );
    assert!(
        nx >= flood_replies,
        "the kernel answered the flood: {nx} NXDOMAIN for {flood_replies} replies"
    );
    assert!(
        passed * 1000 <= nx,
        "almost nothing of the flood reached userspace: {passed}"
    );
    assert!(
        samples.len() > 500,
        "the paced client ran: {}",
        samples.len()
    );
    assert_eq!(lost, 0, "the legitimate client loses nothing");
    assert_eq!(wrong, 0, "and gets its geo answers");
    drop(daemon);
}
