//! `cargo xtask demo`: the XDP program answering geo queries between two network
//! namespaces. Simulated clients around the world (EDNS Client Subnet) query the
//! server-side veth; the kernel answers from the demo geo table and the counters show it.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::programs::XdpMode;
use geodns::loader::{LoadOptions, XdpDns};
use geodns_common::counter;
use geodns_tests::{client::query_udp, frame::Query, table::contents, NetnsPair, Side};

fn main() {
    // The namespaces are removed when `pair` drops; keep Ctrl-C from skipping that
    // during these few seconds.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
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
    xdp.install(&contents()).expect("fill the maps");
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
    let clients: [(&str, IpAddr, Query); 5] = [
        (
            "the resolver itself (no ECS)",
            IpAddr::V4(pair.server_v4),
            Query::new(www, 1),
        ),
        (
            "Europe, 192.0.2.0/24",
            IpAddr::V4(pair.server_v4),
            Query::new(www, 1).ecs("192.0.2.0", 24),
        ),
        (
            "Europe, 2001:db8:1::/48",
            IpAddr::V4(pair.server_v4),
            Query::new(www, 28).ecs("2001:db8:1::", 48),
        ),
        (
            "spread region 203.0.113.128/25",
            IpAddr::V4(pair.server_v4),
            Query::new(www, 1).ecs("203.0.113.130", 32),
        ),
        (
            "over IPv6 transport",
            IpAddr::V6(pair.server_v6),
            Query::new(www, 1),
        ),
    ];
    println!(
        "\n{:<34} {:<28} {:<6} answered by",
        "client location", "answer", "scope"
    );
    for (label, server, q) in &clients {
        let before = xdp.counters().expect("counters");
        let reply = pair
            .in_ns(Side::Client, || {
                query_udp(SocketAddr::new(*server, 53), q, Duration::from_secs(1))
            })
            .expect("client namespace");
        let after = xdp.counters().expect("counters");
        let by_xdp = after[counter::ANSWERED_V4 as usize] + after[counter::ANSWERED_V6 as usize]
            > before[counter::ANSWERED_V4 as usize] + before[counter::ANSWERED_V6 as usize];
        if let Ok(r) = reply {
            let addrs: Vec<String> = r.addrs.iter().map(ToString::to_string).collect();
            let scope = r.ecs_scope.map_or("-".to_string(), |s| format!("/{s}"));
            let by = if by_xdp { "XDP (kernel)" } else { "?" };
            println!("{label:<34} {:<28} {scope:<6} {by}", addrs.join(","));
        } else {
            let why: Vec<&str> = (0..after.len())
                .filter(|&i| after[i] > before[i] && counter::NAMES[i].starts_with("pass_"))
                .map(|i| counter::NAMES[i])
                .collect();
            println!(
                "{label:<34} {:<28} {:<6} passed to userspace ({}); no fallback server yet",
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
