//! `cargo xtask demo`: the XDP program answering geo queries between two network
//! namespaces, from the bundled demo config and `GeoIP` databases (examples/). Simulated
//! clients around the world (EDNS Client Subnet) query the server-side veth; the table
//! shows each decision, who answered it, and the counters.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use aya::programs::XdpMode;
use geodns::loader::{LoadOptions, XdpDns};
use geodns_common::counter;
use geodns_maps::{Compiled, Config, Engine, NodeStates};
use geodns_tests::{client::query_udp, frame::Query, NetnsPair, Side};

#[expect(clippy::too_many_lines, reason = "a linear demo script")]
fn main() {
    // The namespaces are removed when `pair` drops; keep Ctrl-C from skipping that
    // during these few seconds.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml");
    let config = Config::from_path(&path).expect("parse examples/demo.toml");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile the demo databases");
    let states = NodeStates::from_config(&config);
    let engine = Engine::new(Arc::new(config), Arc::new(compiled), &states);
    println!(
        "config {}: {} regions, {} records",
        path.display(),
        engine.compiled().region_count(),
        engine.config().records.len()
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
    let mut xdp = XdpDns::load(&LoadOptions::default()).expect("load the XDP program");
    xdp.install(&engine.kernel_maps()).expect("fill the maps");
    let s_idx = pair.ifindex(Side::Server).expect("ifindex");
    let c_idx = pair.ifindex(Side::Client).expect("ifindex");
    pair.in_ns(Side::Server, || xdp.attach(s_idx, XdpMode::Driver))
        .expect("server namespace")
        .expect("attach xdp_dns");
    pair.in_ns(Side::Client, || {
        xdp.attach_program("xdp_pass", c_idx, XdpMode::Driver)
    })
    .expect("client namespace")
    .expect("attach xdp_pass");

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
    ];
    println!(
        "\n{:<28} {:<34} {:<6} answered by",
        "client location", "answer", "scope"
    );
    for (label, server, q) in &clients {
        let before = xdp.counters().expect("counters");
        let reply = pair
            .in_ns(Side::Client, || {
                query_udp(SocketAddr::new(*server, 53), q, Duration::from_millis(500))
            })
            .expect("client namespace");
        let after = xdp.counters().expect("counters");
        let bumped = |c: u32| after[c as usize] > before[c as usize];
        if let Ok(r) = reply {
            let addrs: Vec<String> = r.addrs.iter().map(ToString::to_string).collect();
            let scope = r.ecs_scope.map_or("-".to_string(), |s| format!("/{s}"));
            let by = if bumped(counter::ANSWERED_V4) || bumped(counter::ANSWERED_V6) {
                "XDP (kernel)"
            } else {
                "userspace"
            };
            println!("{label:<28} {:<34} {scope:<6} {by}", addrs.join(","));
        } else {
            let why: Vec<&str> = (0..after.len())
                .filter(|&i| after[i] > before[i] && counter::NAMES[i].starts_with("pass_"))
                .map(|i| counter::NAMES[i])
                .collect();
            println!(
                "{label:<28} {:<34} {:<6} passed to userspace ({}); no fallback server in this demo yet",
                "-",
                "-",
                why.join(",")
            );
        }
    }
    println!("\nXDP counters (summed over CPUs):");
    for (i, v) in xdp.counters().expect("counters").iter().enumerate() {
        if *v > 0 {
            println!("  {:<30} {v}", counter::NAMES[i]);
        }
    }
    drop(xdp);
    drop(pair);
    println!("\ncleaned up: namespaces deleted");
}
