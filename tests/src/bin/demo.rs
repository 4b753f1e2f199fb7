//! `cargo xtask demo`: `geodns run` serving the bundled demo config and `GeoIP`
//! databases (examples/) on a veth between two network namespaces. Simulated clients
//! around the world (EDNS Client Subnet) query the server side; the table shows each
//! answer, its ECS scope and who answered it, then the daemon's counters.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use aya::programs::XdpMode;
use geodns::loader::{LoadOptions, XdpDns};
use geodns_tests::{client::query_udp, frame::Query, NetnsPair, Side};

const METRICS: &str = "127.0.0.1:19155";

/// `/metrics` of the daemon, read inside the server namespace.
fn metrics(pair: &NetnsPair) -> Option<String> {
    pair.in_ns(Side::Server, || {
        let mut s = TcpStream::connect(METRICS).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    })
    .ok()
    .flatten()
}

fn answered_by_xdp(text: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with("geodns_xdp_packets_total{outcome=\"answered_v4\"}")
                || l.starts_with("geodns_xdp_packets_total{outcome=\"answered_v6\"}")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.0.id()).unwrap_or(0), libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[expect(clippy::too_many_lines, reason = "a linear demo script")]
fn main() {
    // Ctrl-C reaches the daemon too (it stops cleanly); this process ignores it so
    // that it still deletes the namespaces.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
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
    let child = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", pair.server_ns))
        .arg(&geodns)
        .args(["run", "--config"])
        .arg(&config)
        .args([
            "--iface",
            &pair.server_if,
            "--metrics",
            METRICS,
            "--pin-dir",
            &pin,
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start geodns run");
    let daemon = Daemon(child);
    // XDP_TX replies over veth arrive only when the peer has an XDP program too.
    let mut pass = XdpDns::load(&LoadOptions::default()).expect("load the XDP object");
    let c_idx = pair.ifindex(Side::Client).expect("ifindex");
    pair.in_ns(Side::Client, || {
        pass.attach_program("xdp_pass", c_idx, XdpMode::Driver)
    })
    .expect("client namespace")
    .expect("attach xdp_pass");
    let started = Instant::now();
    while metrics(&pair).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "geodns run did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "geodns run --config {} --iface {} ready in {:.1}s\n",
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
        let before = metrics(&pair).map_or(0, |m| answered_by_xdp(&m));
        let reply = pair
            .in_ns(Side::Client, || {
                query_udp(SocketAddr::new(*server, 53), q, Duration::from_millis(500))
            })
            .expect("client namespace");
        let after = metrics(&pair).map_or(0, |m| answered_by_xdp(&m));
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
                "{label:<28} {:<34} {:<6} passed to userspace: no answer yet (the fallback server is not wired in)",
                "-", "-"
            );
        }
    }
    if let Some(m) = metrics(&pair) {
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
    println!("\ncleaned up: daemon stopped, namespaces deleted");
}
