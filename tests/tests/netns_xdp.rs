//! End-to-end across a veth pair between two network namespaces: real UDP datagrams
//! from the client namespace, the XDP program attached in native mode on the server
//! side. Nothing listens on the server's port 53, so every answer the client gets was
//! sent by the kernel program (`XDP_TX`).
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::programs::XdpMode;
use geodns::loader::{KernelProgram, LoadOptions};
use geodns_common::counter;
use geodns_tests::{
    client::query_udp,
    frame::Query,
    require_bpf,
    table::{contents, eu_v4, eu_v6, lab_v4},
    NetnsPair, Side,
};

/// Loads the program, fills the demo table, attaches `xdp_dns` (native) on the server
/// veth and `xdp_pass` on the client veth (veth delivers `XDP_TX` replies only then).
fn attach(pair: &NetnsPair) -> (KernelProgram, aya::Ebpf) {
    let mut xdp = KernelProgram::load(&LoadOptions::default()).expect("load XDP program");
    xdp.install(&contents()).expect("fill maps");
    pair.attach(Side::Server, &mut xdp, "xdp_dns", XdpMode::Driver)
        .expect("attach xdp_dns (native) on the server veth");
    let pass = pair
        .attach_pass(Side::Client)
        .expect("attach xdp_pass on the client veth");
    (xdp, pass)
}

#[test]
fn udp_datagram_is_counted() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("create namespaces");
    let (xdp, _pass) = attach(&pair);
    let before = xdp.counters().expect("counters")[counter::RX as usize];
    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 9999);
    pair.in_ns(Side::Client, || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.send_to(b"not dns", server).expect("send");
    })
    .expect("client namespace");
    // The datagram crosses the veth synchronously, but allow the counter a moment.
    let mut after = before;
    for _ in 0..50 {
        after = xdp.counters().expect("counters")[counter::RX as usize];
        if after > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        after > before,
        "RX counter did not move: {before} -> {after}"
    );
}

#[test]
fn kernel_answers_real_queries_v4_and_v6() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("create namespaces");
    let (xdp, _pass) = attach(&pair);
    let before = xdp.counters().expect("counters");
    let www = "www.cdn.example.net.";
    let cases = [
        // (server address, query, expected answer, expected ECS scope)
        (
            IpAddr::V4(pair.server_v4),
            Query::new(www, 1),
            IpAddr::V4(lab_v4()),
            None,
        ),
        (
            IpAddr::V4(pair.server_v4),
            Query::new(www, 1).ecs("192.0.2.0", 24),
            IpAddr::V4(eu_v4()),
            Some(24),
        ),
        (
            IpAddr::V6(pair.server_v6),
            Query::new(www, 1),
            IpAddr::V4(lab_v4()),
            None,
        ),
        // AAAA with ECS over IPv6: the reply needs 28 more bytes than a veth frame from
        // the local stack has as tailroom, so this one goes through the grow stage.
        (
            IpAddr::V6(pair.server_v6),
            Query::new(www, 28).ecs("2001:db8:77::", 48),
            IpAddr::V6(eu_v6()),
            Some(32),
        ),
    ];
    let replies = pair
        .in_ns(Side::Client, || {
            cases
                .iter()
                .map(|(server, q, _, _)| {
                    query_udp(SocketAddr::new(*server, 53), q, Duration::from_secs(2))
                })
                .collect::<Vec<_>>()
        })
        .expect("client namespace");
    for (i, ((server, _, want, scope), reply)) in cases.iter().zip(replies).enumerate() {
        let reply = reply.unwrap_or_else(|e| {
            let c = xdp.counters().expect("counters");
            let changed: Vec<_> = (0..c.len())
                .filter(|&i| c[i] != before[i])
                .map(|i| (counter::NAMES[i], c[i] - before[i]))
                .collect();
            panic!("case {i}: no reply from {server}: {e}; counters changed: {changed:?}")
        });
        assert_eq!(reply.addrs, vec![*want], "answer via {server}");
        assert_eq!(reply.ecs_scope, *scope, "ECS scope via {server}");
        assert!(reply.message.metadata.authoritative);
    }
    let after = xdp.counters().expect("counters");
    let delta = |c: u32| after[c as usize] - before[c as usize];
    assert_eq!(delta(counter::ANSWERED_V4), 2, "two answered over IPv4");
    assert_eq!(delta(counter::ANSWERED_V6), 2, "two answered over IPv6");
    assert_eq!(
        delta(counter::PASS_TOO_BIG),
        0,
        "nothing passed for lack of room"
    );
    assert_eq!(delta(counter::ANSWERED_ECS), 2);
}
