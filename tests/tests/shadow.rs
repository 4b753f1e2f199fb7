//! `geodns shadow` against a real `geodns run` with XDP in a namespace: the daemon
//! serves table A (the demo), a shadow run of table B (fra1's IPv4 address changed)
//! counts, in the kernel, every answered query whose answer B would change; the counts
//! equal the number of such queries in a known stream exactly, every answer during the
//! run is A's, and `--promote` switches to B without losing a query.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use geodns::shadow::Report;
use geodns_maps::{Compiled, Config, Engine, NodeStates, Question, Resolution};
use geodns_tests::{
    client::query_udp,
    daemon::{geodns_bin, metric, node_cmd, wait_for, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    require_bpf, NetnsPair, Side,
};

const A: u16 = 1;
const AAAA: u16 = 28;
const API: &str = "127.0.0.1:19163";
const FRA1_A: &str = "198.18.1.10";
const FRA1_B: &str = "198.18.1.99";

fn engine(config: &Path) -> Engine {
    let config = Config::from_path(config).expect("config");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
}

/// `geodns shadow ARGS` in the server's namespace, with the test's admin token.
fn shadow_cmd(pair: &NetnsPair, token: &Path, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", pair.server_ns))
        .arg(geodns_bin())
        .arg("shadow")
        .args(args)
        .args(["--api", API, "--admin-token"])
        .arg(token)
        .output()
        .expect("run geodns shadow");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "geodns shadow {args:?}: {text}");
    text
}

/// The stream: names answered from the kernel (best-policy records), both families,
/// clients all over the demo table given by ECS.
fn stream() -> Vec<(String, u16, String)> {
    let clients = [
        "192.0.2.77",
        "192.0.2.200",
        "198.51.100.7",
        "203.0.113.130",
        "203.0.113.5",
        "100.64.1.1",
        "198.18.0.9",
        "2001:db8::1",
        "2001:db8:ffff::1",
        "2001:2::77",
    ];
    let names = ["www.cdn.example.net.", "a.img.cdn.example.net."];
    let mut out = Vec::new();
    for round in 0..40 {
        for (i, c) in clients.iter().enumerate() {
            let name = names[(round + i) % names.len()];
            let qtype = if (round + i) % 3 == 0 { AAAA } else { A };
            out.push((name.to_owned(), qtype, (*c).to_owned()));
        }
    }
    out
}

fn ecs_query(name: &str, qtype: u16, client: &str) -> Query {
    let source = if client.contains(':') { 56 } else { 24 };
    Query::new(name, qtype).ecs(client, source)
}

/// `client` as the ECS option of [`ecs_query`] carries it: /24 or /56.
fn truncated(client: &str) -> IpAddr {
    match client.parse::<IpAddr>().expect("ip") {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & !0xFF).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & !((1u128 << 72) - 1)).into()),
    }
}

fn ask(server: SocketAddr, q: &Query) -> Option<Vec<IpAddr>> {
    query_udp(server, q, Duration::from_millis(500))
        .ok()
        .map(|r| r.addrs)
}

/// A's answer to each query, and how many of them B changes (only fra1's IPv4
/// address differs, so exactly the `A` answers that hold it).
fn expected(
    a: &Engine,
    fra1_a: IpAddr,
    queries: &[(String, u16, String)],
) -> (Vec<Vec<IpAddr>>, u64) {
    let mut expected_answers = Vec::new();
    let mut expected_changed = 0u64;
    for (name, qtype, client) in queries {
        // The server sees the ECS address, truncated to the source prefix.
        let client_ip = truncated(client);
        match a.resolve(&Question::new(name, *qtype, client_ip)) {
            Resolution::Addresses {
                addrs,
                source: geodns_maps::AnswerSource::Geo { .. },
                ..
            } => {
                if *qtype == A && addrs.contains(&fra1_a) {
                    expected_changed += 1;
                }
                expected_answers.push(addrs);
            }
            other => panic!("{name}/{qtype} for {client}: not a geo answer: {other:?}"),
        }
    }
    (expected_answers, expected_changed)
}

/// Promotes while a paced stream runs: nothing lost, answers from A then B.
fn promote_under_load(pair: &NetnsPair, token: &Path, server: SocketAddr, fra1_a: IpAddr) {
    // Promote while a paced stream runs: nothing lost, answers from A then B.
    let stop = Arc::new(AtomicBool::new(false));
    let www = ecs_query("www.cdn.example.net.", A, "192.0.2.77");
    let fra1_b: IpAddr = FRA1_B.parse().expect("ip");
    let stream = {
        let www = &www;
        std::thread::scope(|s| {
            let flag = stop.clone();
            let h = s.spawn(move || {
                pair.in_ns(Side::Client, || {
                    let mut seen = Vec::new();
                    let t = Instant::now();
                    while !flag.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(20) {
                        seen.push(ask(server, www));
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    seen
                })
                .expect("client namespace")
            });
            std::thread::sleep(Duration::from_millis(300));
            let promoted = shadow_cmd(pair, token, &["--promote"]);
            assert!(promoted.contains("promoted"), "{promoted}");
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            h.join().expect("stream thread")
        })
    };
    let lost = stream.iter().filter(|r| r.is_none()).count();
    eprintln!(
        "promote: {} queries during the promote, {lost} lost",
        stream.len()
    );
    assert_eq!(lost, 0, "queries lost during the promote");
    let got: Vec<IpAddr> = stream.into_iter().flatten().flatten().collect();
    let first_b = got
        .iter()
        .position(|a| *a == fra1_b)
        .expect("B answers after the promote");
    assert!(
        got[..first_b].iter().all(|a| *a == fra1_a) && got[first_b..].iter().all(|a| *a == fra1_b),
        "A's answers, then B's: {got:?}"
    );
    wait_for("B to answer", Duration::from_secs(5), || {
        pair.in_ns(Side::Client, || ask(server, &www))
            .ok()
            .flatten()
            .is_some_and(|a| a == vec![fra1_b])
    });
}

/// The shadow report, read as JSON.
fn report(pair: &NetnsPair, token: &Path) -> Report {
    let json = shadow_cmd(pair, token, &["--report", "--json"]);
    serde_json::from_str(json.trim()).expect("report JSON")
}

/// A node-state change during the run: the candidate is rebuilt with the new states
/// and its counts start again (the report says so).
fn node_change_restarts_the_counts(pair: &NetnsPair, token: &Path) {
    let before = report(pair, token);
    assert!(before.queries > 0 && before.restarts == 0, "{before:?}");
    let token_arg = token.to_str().expect("utf-8");
    for state in ["down", "auto"] {
        let (ok, text) = node_cmd(
            Some(&pair.server_ns),
            API,
            &["ams1", state, "--admin-token", token_arg],
        );
        assert!(ok, "geodns node ams1 {state}: {text}");
    }
    let after = report(pair, token);
    assert_eq!(after.restarts, 2, "down, then auto: {after:?}");
    assert_eq!(after.queries, 0, "the counts started again: {after:?}");
}

/// A reload (the daemon's config file changed) during a run drops the run: the reload
/// needs the idle generation.
fn reload_drops_the_run(
    pair: &NetnsPair,
    token: &Path,
    config_a: &Path,
    config_b: &Path,
    daemon: &Daemon,
) {
    shadow_cmd(pair, token, &[config_b.to_str().expect("utf-8")]);
    assert_eq!(report(pair, token).queries, 0, "a new run starts at zero");
    let reloads = |d: &Daemon| {
        d.scrape(pair)
            .map_or(0, |m| metric(&m, "geodns_reloads_total{result=\"ok\"}"))
    };
    let before = reloads(daemon);
    let text = std::fs::read_to_string(config_a).expect("read A");
    std::fs::write(config_a, text + "\n").expect("touch A");
    wait_for("the reload", Duration::from_secs(10), || {
        reloads(daemon) > before
    });
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", pair.server_ns))
        .arg(geodns_bin())
        .args(["shadow", "--report", "--api", API, "--admin-token"])
        .arg(token)
        .output()
        .expect("geodns shadow --report");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("no shadow run"),
        "the reload dropped the run: {text}"
    );
}

/// Table A (the demo) and table B (fra1's IPv4 address changed), as config files.
fn configs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let config_a = demo_without_checks(dir);
    let text = std::fs::read_to_string(&config_a).expect("read");
    assert!(
        text.contains(FRA1_A),
        "the demo config names fra1's address"
    );
    let config_b = dir.join("candidate.toml");
    std::fs::write(&config_b, text.replace(FRA1_A, FRA1_B)).expect("write B");
    (config_a, config_b)
}

#[test]
fn shadow_counts_exactly_and_promote_loses_nothing() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let tmp = TempDir::new("shadow");
    let (config_a, config_b) = configs(tmp.path());
    let token = tmp.path().join("admin.token");
    let pin_dir = format!("/sys/fs/bpf/geodns-shadow-{}", std::process::id());
    let daemon = Daemon::start(
        &pair,
        &config_a,
        API,
        &pin_dir,
        &[
            "--admin-token",
            token.to_str().expect("utf-8"),
            "--watch-interval",
            "200ms",
        ],
        Duration::from_secs(30),
    );
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("attach xdp_pass on the client veth");
    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);

    // What each query should get from A, and whether B changes it (only fra1's IPv4
    // address differs, so exactly the A answers that hold it change).
    let a = engine(&config_a);
    let fra1_a: IpAddr = FRA1_A.parse().expect("ip");
    let queries = stream();
    let (expected_answers, expected_changed) = expected(&a, fra1_a, &queries);
    assert!(
        expected_changed > 0 && expected_changed < queries.len() as u64,
        "the stream mixes changed and unchanged answers ({expected_changed} of {})",
        queries.len()
    );

    let started = shadow_cmd(
        &pair,
        &token,
        &[config_b.to_str().expect("utf-8"), "--sample", "1"],
    );
    assert!(started.contains("started"), "{started}");
    let before = daemon.scrape(&pair).expect("metrics");
    let answered_before = metric(&before, "geodns_xdp_packets_total{outcome=\"answered_v4\"}");

    // The paced stream: every answer is A's while the shadow runs.
    let answers: Vec<Option<Vec<IpAddr>>> = pair
        .in_ns(Side::Client, || {
            queries
                .iter()
                .map(|(name, qtype, client)| {
                    let r = ask(server, &ecs_query(name, *qtype, client));
                    std::thread::sleep(Duration::from_micros(500));
                    r
                })
                .collect()
        })
        .expect("client namespace");
    for (i, (got, want)) in answers.iter().zip(&expected_answers).enumerate() {
        let (name, qtype, client) = &queries[i];
        assert_eq!(
            got.as_ref(),
            Some(want),
            "{name}/{qtype} for {client} during the shadow run: A's answer"
        );
    }
    let after = daemon.scrape(&pair).expect("metrics");
    let kernel_answered =
        metric(&after, "geodns_xdp_packets_total{outcome=\"answered_v4\"}") - answered_before;
    assert_eq!(
        kernel_answered,
        queries.len() as u64,
        "every query of the stream is answered by XDP"
    );

    eprintln!(
        "shadow: {} queries, {expected_changed} with an answer B changes",
        queries.len()
    );
    let report = report(&pair, &token);
    assert_eq!(report.queries, queries.len() as u64, "{report:?}");
    assert_eq!(report.changed, expected_changed, "{report:?}");
    let moved: u64 = report.moves.iter().map(|m| m.queries).sum();
    assert_eq!(moved, expected_changed, "{report:?}");
    assert!(
        report
            .moves
            .iter()
            .all(|m| m.family == "A" && m.from.contains("fra1") && m.to.contains("fra1")),
        "only fra1's IPv4 answers move (to fra1's new address): {report:?}"
    );
    let text = shadow_cmd(&pair, &token, &["--report"]);
    assert!(
        text.contains(&format!("{expected_changed} would change")),
        "{text}"
    );

    node_change_restarts_the_counts(&pair, &token);
    promote_under_load(&pair, &token, server, fra1_a);
    reload_drops_the_run(&pair, &token, &config_a, &config_b, &daemon);
    drop(daemon);
    let _ = std::fs::remove_dir(&pin_dir);
}
