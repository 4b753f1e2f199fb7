//! `geodns run --redirect-listen` across a veth pair, with the demo config: for the same
//! client, over IPv4 and IPv6, the XDP DNS answer and the 302 name the same node; the
//! client namespace is the trusted proxy that says who the client is; `geodns node
//! NAME down` against the daemon moves both at once.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use geodns_maps::{Cidr, Config};
use geodns_tests::{
    client::query_udp,
    daemon::{metric, node_cmd, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    http::{get, HttpReply},
    require_bpf, NetnsPair, Side,
};

const API: &str = "127.0.0.1:19164";

/// The DNS answer (from the XDP program) to `name`/`qtype` with ECS `ecs`/`len`, asked
/// from the client namespace over the family of `ecs`.
fn dns(pair: &NetnsPair, name: &str, qtype: u16, ecs: &str, len: u8) -> Vec<IpAddr> {
    let server = if ecs.contains(':') {
        IpAddr::V6(pair.server_v6)
    } else {
        IpAddr::V4(pair.server_v4)
    };
    // ECS carries the prefix with the host bits cleared (RFC 7871).
    let prefix = Cidr::new(ecs.parse().expect("address"), len)
        .addr()
        .to_string();
    let q = Query::new(name, qtype).ecs(&prefix, len);
    pair.in_ns(Side::Client, || {
        query_udp(SocketAddr::new(server, 53), &q, Duration::from_millis(500))
    })
    .expect("client namespace")
    .map(|r| r.addrs)
    .unwrap_or_default()
}

/// `GET /video.mp4` for `host` from the client namespace to `server`, as a proxy for
/// `client` (none: the namespace's own address is the client).
fn http(pair: &NetnsPair, server: SocketAddr, host: &str, client: Option<&str>) -> HttpReply {
    let mut headers = vec![("host", host)];
    if let Some(c) = client {
        headers.push(("x-forwarded-for", c));
    }
    pair.in_ns(Side::Client, || get(server, "/video.mp4", &headers))
        .expect("client namespace")
        .unwrap_or_else(|e| panic!("GET from {server}: {e}"))
}

/// The addresses of `node` of the family of `v6`.
fn addrs(config: &Config, node: &str, v6: bool) -> Vec<IpAddr> {
    let n = config.node(node).expect("node in the config");
    if v6 {
        n.ipv6.iter().map(|a| IpAddr::V6(*a)).collect()
    } else {
        n.ipv4.iter().map(|a| IpAddr::V4(*a)).collect()
    }
}

#[test]
fn run_redirects_where_it_answers_dns() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("redirect-run");
    // Without the demo's checks: their targets are not on the test hosts.
    let config_path = demo_without_checks(dir.path());
    let config = Config::from_path(&config_path).expect("demo config");
    let v4 = SocketAddr::new(IpAddr::V4(pair.server_v4), 8080);
    let v6 = SocketAddr::new(IpAddr::V6(pair.server_v6), 8080);
    let (v4s, v6s) = (v4.to_string(), v6.to_string());
    let (c4, c6) = (pair.client_v4.to_string(), pair.client_v6.to_string());
    let pin_dir = format!("/sys/fs/bpf/geodns-redirect-{}", std::process::id());
    let daemon = Daemon::start(
        &pair,
        &config_path,
        API,
        &pin_dir,
        &[
            "--redirect-listen",
            &v4s,
            "--redirect-listen",
            &v6s,
            "--trusted-proxy",
            &c4,
            "--trusted-proxy",
            &c6,
        ],
        Duration::from_secs(30),
    );
    // XDP_TX replies over veth arrive only when the peer has an XDP program too.
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("attach xdp_pass on the client veth");

    let www = "www.cdn.example.net";
    // (client address, ECS length, node): the DNS answer is that node's addresses and
    // the redirect goes to its http_base, over the client's family.
    for (client, len, node) in [
        ("192.0.2.10", 24, "fra1"),
        ("198.51.100.10", 25, "nyc1"),
        ("198.51.100.130", 26, "gru1"),
        ("203.0.113.10", 25, "sin1"),
        ("2001:db8:8000::10", 48, "fra1"),
        ("3fff::10", 20, "sin1"),
    ] {
        let v6c = client.contains(':');
        let answer = dns(&pair, www, if v6c { 28 } else { 1 }, client, len);
        assert_eq!(answer, addrs(&config, node, v6c), "DNS for {client}");
        let r = http(&pair, if v6c { v6 } else { v4 }, www, Some(client));
        assert_eq!(r.status, 302, "{r:?}");
        assert_eq!(r.header("x-geodns-node"), Some(node), "HTTP for {client}");
        assert_eq!(
            r.location(),
            Some(format!("https://{node}.cdn.example.net/video.mp4").as_str())
        );
    }
    // The client namespace's own addresses (198.19.x.x, 2001:2:...): the lab CIDRs.
    for server in [v4, v6] {
        let r = http(&pair, server, www, None);
        assert_eq!(
            r.location(),
            Some("https://fra1.cdn.example.net/video.mp4"),
            "{server}"
        );
    }
    // sjc1 has no http_base: the AS64500 client of the spread record `dl` may get it
    // by address.
    let r = http(&pair, v4, "dl.cdn.example.net", Some("203.0.113.200"));
    let node = r.header("x-geodns-node").expect("a node").to_owned();
    let want = if node == "sjc1" {
        "http://198.18.4.10/video.mp4".to_owned()
    } else {
        format!("https://{node}.cdn.example.net/video.mp4")
    };
    assert_eq!(r.location(), Some(want.as_str()), "{r:?}");

    // fra1 down through the admin API: DNS and HTTP both move to ams1 at once.
    let (ok, out) = node_cmd(Some(&pair.server_ns), API, &["fra1", "down"]);
    assert!(ok, "{out}");
    assert_eq!(
        dns(&pair, www, 1, "192.0.2.10", 24),
        addrs(&config, "ams1", false)
    );
    let r = http(&pair, v4, www, Some("192.0.2.10"));
    assert_eq!(
        r.location(),
        Some("https://ams1.cdn.example.net/video.mp4"),
        "{r:?}"
    );
    assert_eq!(
        dns(&pair, www, 28, "2001:db8:8000::10", 48),
        addrs(&config, "ams1", true)
    );
    let r = http(&pair, v6, www, Some("2001:db8:8000::10"));
    assert_eq!(r.location(), Some("https://ams1.cdn.example.net/video.mp4"));

    let m = daemon.scrape(&pair).expect("metrics");
    // Six clients, two direct, one for dl, two after the change.
    assert_eq!(
        metric(&m, "geodns_http_requests_total{result=\"redirect\"}"),
        11,
        "{m}"
    );
    drop(daemon);
    assert!(!Path::new(&pin_dir).exists(), "pins removed");
}
