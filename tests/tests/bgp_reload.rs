//! BGP RIB dumps reload like the databases: `geodns run` with XDP on
//! `examples/route.toml` (`[bgp] rib = "route-rib.mrt"`); a client in the BGP prefix
//! 192.0.2.128/25 (origin AS64520: ams1) is asked about over UDP (the kernel answers)
//! and TCP (the userspace server answers). A new dump that moves the prefix to AS64531
//! (gru1) is swapped in (both paths answer gru1 once `/metrics` counts the reload);
//! a truncated dump, a gzip dump cut short and a dump of garbage each count a failed
//! reload and change nothing.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use geodns_maps::mrt::{self, Peer, Route};
use geodns_tests::{
    client::{exchange, parse_reply, Transport},
    daemon::{metric, wait_for, Daemon},
    files::{route_without_rrl, TempDir},
    frame::Query,
    require_bpf, NetnsPair, Side,
};

const TIMEOUT: Duration = Duration::from_secs(1);
const AMS1: &str = "198.18.2.10";
const GRU1: &str = "198.18.6.10";

/// The example's dump with 192.0.2.128/25 announced by AS64531 instead of AS64520.
fn moved_dump() -> Vec<u8> {
    let peers = [Peer {
        asn: 65_001,
        ip: "198.18.0.11".parse().expect("ip"),
    }];
    let mut out = Vec::new();
    let mut w = mrt::RibWriter::new(&mut out, &peers).expect("writer");
    // The example's prefixes (so the shrink guard lets it through), one moved.
    for (a, len, origin) in [
        ("100.64.0.0", 10, 64_530),
        ("100.100.0.0", 16, 64_531),
        ("192.0.2.0", 24, 64_540),
        ("192.0.2.128", 25, 64_531),
        ("198.51.100.0", 24, 64_501),
        ("203.0.113.0", 24, 64_510),
        ("203.0.113.128", 25, 64_500),
        ("2001:db8::", 32, 64_540),
        ("2001:db8:8000::", 33, 64_520),
    ] {
        w.prefix(
            a.parse().expect("ip"),
            len,
            &[Route::seq(0, &[65_001, origin])],
        )
        .expect("prefix");
    }
    w.finish().expect("finish");
    out
}

fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename over the dump");
}

/// A gzip dump of 2,000 prefixes (the writer compresses by the extension).
fn gzip_dump(dir: &Path) -> Vec<u8> {
    let p = dir.join("tmp.mrt.gz");
    let peers = [Peer {
        asn: 65_001,
        ip: "198.18.0.11".parse().expect("ip"),
    }];
    mrt::write_file(
        &p,
        &peers,
        (0..2000u32).map(|i| {
            (
                IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 | i << 8)),
                24,
                vec![Route::seq(0, &[65_001, 64_999])],
            )
        }),
    )
    .expect("write gz");
    std::fs::read(&p).expect("read gz")
}

#[test]
fn a_new_dump_swaps_in_and_a_bad_one_keeps_the_old_table() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("bgp-reload");
    let config = route_without_rrl(dir.path());
    let rib = dir.path().join("route-rib.mrt");
    let pin = format!("/sys/fs/bpf/geodns-bgp-reload-{}", std::process::id());
    let daemon = Daemon::start(
        &pair,
        &config,
        "127.0.0.1:19191",
        &pin,
        &["--watch-interval", "100ms"],
        Duration::from_mins(1),
    );
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("xdp_pass on the client");
    let counts = || {
        let m = daemon.scrape(&pair).expect("metrics");
        (
            metric(&m, "geodns_reloads_total{result=\"ok\"}"),
            metric(&m, "geodns_reloads_total{result=\"failed\"}"),
        )
    };
    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    // (UDP answer, TCP answer) for a client of 192.0.2.200/32.
    let ask = || {
        pair.in_ns(Side::Client, || {
            [Transport::Udp, Transport::Tcp].map(|t| {
                let q = Query::new("www.cdn.example.net.", 1)
                    .id(7)
                    .ecs("192.0.2.200", 32);
                exchange(t, server, &q.build(), TIMEOUT)
                    .ok()
                    .flatten()
                    .map(|b| parse_reply(&b).expect("a reply parses").addrs)
                    .unwrap_or_default()
            })
        })
        .expect("client namespace")
    };
    let is = |got: &[Vec<IpAddr>; 2], want: &str| {
        let want: IpAddr = want.parse().expect("ip");
        got.iter().all(|a| a == &[want])
    };
    let first = ask();
    assert!(is(&first, AMS1), "AS64520's node on both paths: {first:?}");

    // A new dump: the prefix moves to AS64531 (gru1).
    let (ok, failed) = counts();
    replace(&rib, &moved_dump());
    wait_for("the new dump's reload", Duration::from_secs(20), || {
        counts().0 > ok
    });
    assert_eq!(counts().1, failed, "no failed reload");
    let moved = ask();
    assert!(is(&moved, GRU1), "AS64531's node on both paths: {moved:?}");

    // Bad dumps: each a failed reload, the answers unchanged.
    let good = moved_dump();
    let gz = gzip_dump(dir.path());
    let bad: [(&str, Vec<u8>); 3] = [
        ("truncated", good[..good.len() - 9].to_vec()),
        ("gzip cut short", gz[..gz.len() / 2].to_vec()),
        (
            "garbage",
            b"\x00\x00\x00\x00\x00\x0d\x00\x02\xff\xff\xff\xff not MRT".to_vec(),
        ),
    ];
    for (what, bytes) in bad {
        let (ok, failed) = counts();
        replace(&rib, &bytes);
        wait_for(
            &format!("the {what} dump's failed reload"),
            Duration::from_secs(20),
            || counts().1 > failed,
        );
        assert_eq!(counts().0, ok, "{what}: no reload applied");
        let now = ask();
        assert!(is(&now, GRU1), "{what}: the old table answers: {now:?}");
    }
    let _ = std::fs::remove_file(dir.path().join("tmp.mrt.gz"));
    drop(daemon);
}
