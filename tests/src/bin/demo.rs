//! `cargo xtask demo`: `geodns run` serving the bundled demo config and `GeoIP`
//! databases (examples/) on a veth between two network namespaces. Simulated clients
//! around the world (EDNS Client Subnet) query the server side; the table shows each
//! answer, its ECS scope and who answered it. Then the same clients ask the HTTP
//! redirector of the same daemon (the client namespace is a trusted proxy that names
//! the client in `X-Forwarded-For`, the honest way to simulate a location over HTTP),
//! and the daemon's counters close.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::Message,
    rr::{
        rdata::opt::{EdnsCode, EdnsOption},
        RecordType,
    },
};

use geodns_tests::{
    client::query_udp,
    daemon::{metric, Daemon},
    frame::Query,
    http, NetnsPair, Side,
};

fn answered_by_xdp(text: &str) -> u64 {
    metric(text, "geodns_xdp_packets_total{outcome=\"answered_v4\"}")
        + metric(text, "geodns_xdp_packets_total{outcome=\"answered_v6\"}")
}

/// Set by Ctrl-C: the demo stops asking and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

#[expect(clippy::too_many_lines, reason = "a linear demo script")]
fn main() {
    // Ctrl-C reaches the daemon too (it stops cleanly); this process only notes it, so
    // that it stops early and still deletes the namespaces.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = root.join("examples/demo.toml");
    let geodns = std::env::current_exe()
        .expect("exe")
        .with_file_name("geodns");
    assert!(
        geodns.exists(),
        "{} not built (cargo xtask demo builds it)",
        geodns.display()
    );

    let pair = NetnsPair::new().expect("create the demo namespaces (are you root?)");
    println!(
        "namespaces {} ({}, {}) <-> {} ({}, {})",
        pair.server_ns,
        pair.server_v4,
        pair.server_v6,
        pair.client_ns,
        pair.client_v4,
        pair.client_v6
    );
    let pin = format!("/sys/fs/bpf/geodns-demo-{}", std::process::id());
    let started = Instant::now();
    // The redirector inside the daemon, on port 80 of both server addresses; the
    // client namespace is the trusted proxy.
    let http_v4 = SocketAddr::new(IpAddr::V4(pair.server_v4), 80);
    let http_v6 = SocketAddr::new(IpAddr::V6(pair.server_v6), 80);
    let (l4, l6) = (http_v4.to_string(), http_v6.to_string());
    let (c4, c6) = (pair.client_v4.to_string(), pair.client_v6.to_string());
    let daemon = Daemon::start(
        &pair,
        &config,
        "127.0.0.1:19155",
        &pin,
        &[
            "--redirect-listen",
            &l4,
            "--redirect-listen",
            &l6,
            "--trusted-proxy",
            &c4,
            "--trusted-proxy",
            &c6,
        ],
        Duration::from_secs(30),
    );
    // XDP_TX replies over veth arrive only when the peer has an XDP program too.
    let pass = pair
        .attach_pass(Side::Client)
        .expect("attach xdp_pass on the client veth");
    println!(
        "geodns run --config {} --iface {} --redirect-listen {l4} --redirect-listen {l6} \\\n    --trusted-proxy {c4} --trusted-proxy {c6}: ready in {:.1}s\n",
        config.display(),
        pair.server_if,
        started.elapsed().as_secs_f64()
    );

    let www = "www.cdn.example.net.";
    let v4 = IpAddr::V4(pair.server_v4);
    let v6 = IpAddr::V6(pair.server_v6);
    let clients: Vec<(&str, IpAddr, Query)> = vec![
        ("the lab resolver itself", v4, Query::new(www, 1)),
        (
            "Germany 192.0.2.0/24",
            v4,
            Query::new(www, 1).ecs("192.0.2.0", 24),
        ),
        (
            "France 2001:db8:8000::/48",
            v6,
            Query::new(www, 28).ecs("2001:db8:8000::", 48),
        ),
        (
            "USA 198.51.100.0/25",
            v4,
            Query::new(www, 1).ecs("198.51.100.0", 25),
        ),
        (
            "Brazil 198.51.100.128/26",
            v4,
            Query::new(www, 1).ecs("198.51.100.128", 26),
        ),
        ("Japan 3fff::/20", v6, Query::new(www, 1).ecs("3fff::", 20)),
        (
            "Australia 203.0.113.0/25",
            v4,
            Query::new(www, 1).ecs("203.0.113.0", 25),
        ),
        (
            "AS64500 203.0.113.128/25",
            v4,
            Query::new("dl.cdn.example.net.", 1).ecs("203.0.113.128", 25),
        ),
        (
            "wildcard a1.img, Canada",
            v4,
            Query::new("a1.img.cdn.example.net.", 1).ecs("100.100.0.0", 16),
        ),
        (
            "unknown space 8.8.8.0/24",
            v4,
            Query::new(www, 1).ecs("8.8.8.0", 24),
        ),
        ("SOA of the zone", v4, Query::new("cdn.example.net.", 6)),
    ];
    println!(
        "{:<28} {:<34} {:<6} answered by",
        "client location", "answer", "scope"
    );
    for (label, server, q) in &clients {
        let before = daemon.scrape(&pair).map_or(0, |m| answered_by_xdp(&m));
        let reply = pair
            .in_ns(Side::Client, || {
                query_udp(SocketAddr::new(*server, 53), q, Duration::from_millis(500))
            })
            .expect("client namespace");
        let after = daemon.scrape(&pair).map_or(0, |m| answered_by_xdp(&m));
        if INTERRUPTED.load(Ordering::Relaxed) {
            println!("interrupted");
            break;
        }
        if let Ok(r) = reply {
            let addrs: Vec<String> = r.addrs.iter().map(ToString::to_string).collect();
            let scope = r.ecs_scope.map_or("-".to_string(), |s| format!("/{s}"));
            let by = if after > before {
                "XDP (kernel)"
            } else {
                "userspace"
            };
            let shown = if addrs.is_empty() {
                format!("{:?}", r.message.metadata.response_code)
            } else {
                addrs.join(",")
            };
            println!("{label:<28} {shown:<34} {scope:<6} {by}");
        } else {
            println!(
                "{label:<28} {:<34} {:<6} passed to userspace: no answer yet (the authoritative server is not wired in)",
                "-", "-"
            );
        }
    }
    redirects(&pair, &clients, http_v4, http_v6);
    if let Some(m) = daemon.scrape(&pair) {
        println!("\n/metrics (non-zero):");
        for line in m.lines().filter(|l| l.starts_with("geodns_")) {
            if !line.ends_with(" 0") {
                println!("  {line}");
            }
        }
    }
    drop(daemon);
    drop(pass);
    drop(pair);
    println!(
        "\ncleaned up: daemon stopped, namespaces deleted ({:.1}s in all)",
        started.elapsed().as_secs_f64()
    );
}

/// What a query asks, read back from its wire form: the name (without the final dot) of
/// an address question, and the ECS address when it carries one.
fn asked(q: &Query) -> Option<(String, Option<IpAddr>)> {
    let m = Message::from_vec(&q.build()).ok()?;
    let question = m.queries.first()?;
    if !matches!(question.query_type(), RecordType::A | RecordType::AAAA) {
        return None;
    }
    let ecs = m
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) if s.source_prefix() > 0 => Some(s.addr()),
            _ => None,
        });
    let name = question.name().to_string();
    Some((name.trim_end_matches('.').to_owned(), ecs))
}

/// The 302 for each client: `GET /video.mp4` with the query's name as `Host`, over the
/// family of the DNS query, naming the ECS address (if any) in `X-Forwarded-For`.
fn redirects(pair: &NetnsPair, clients: &[(&str, IpAddr, Query)], v4: SocketAddr, v6: SocketAddr) {
    println!(
        "\nHTTP redirector, GET /video.mp4 (Host: the name asked above; X-Forwarded-For: the ECS address)"
    );
    println!("{:<28} {:<50} node", "client location", "302 Location");
    for (label, server, q) in clients {
        if INTERRUPTED.load(Ordering::Relaxed) {
            println!("interrupted");
            break;
        }
        let Some((host, ecs)) = asked(q) else {
            continue;
        };
        let client = ecs.map(|a| a.to_string());
        let mut headers = vec![("host", host.as_str())];
        if let Some(c) = &client {
            headers.push(("x-forwarded-for", c.as_str()));
        }
        let to = if server.is_ipv4() { v4 } else { v6 };
        let reply = pair
            .in_ns(Side::Client, || http::get(to, "/video.mp4", &headers))
            .expect("client namespace");
        match reply {
            Ok(r) => println!(
                "{label:<28} {:<50} {}",
                r.location()
                    .map_or_else(|| format!("{} (no Location)", r.status), str::to_owned),
                r.header("x-geodns-node").unwrap_or("-")
            ),
            Err(e) => println!("{label:<28} {:<50} -", format!("no answer: {e}")),
        }
    }
}
