//! The daemon's guards, on loopback with `geodns run --no-xdp`: the admin API needs its
//! token and refuses browsers; a reload that would shrink the table is refused (and
//! SIGUSR1 takes it once anyway).
use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    time::Duration,
};

use geodns_maps::mmdb::{Value, Writer};
use geodns_tests::{
    client::query_udp,
    daemon::{metric, wait_for, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One raw HTTP/1.1 request; the status code.
fn status(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: geodns\r\nconnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("content-length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text}"))
}

#[test]
fn the_admin_api_needs_the_token_and_refuses_browsers() {
    let dir = TempDir::new("admin-token");
    let config = demo_without_checks(dir.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    let dns = format!("127.0.0.1:{}", free_port());
    let token_file = dir.path().join("run").join("admin-token");
    let token_arg = token_file.to_string_lossy().into_owned();
    let _daemon = Daemon::start_local(
        &config,
        &metrics,
        &["--no-xdp", "--listen", &dns, "--admin-token", &token_arg],
        Duration::from_secs(30),
    );
    let mode = std::fs::metadata(&token_file)
        .expect("the daemon created the token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is the owner's only");
    let token = std::fs::read_to_string(&token_file).expect("token");
    let bearer = format!("Bearer {}", token.trim());

    assert_eq!(
        status(&metrics, "GET", "/metrics", &[]),
        200,
        "metrics stay open"
    );
    assert_eq!(status(&metrics, "GET", "/v1/nodes", &[]), 401);
    assert_eq!(status(&metrics, "POST", "/v1/node/fra1/drain", &[]), 401);
    let wrong = [("authorization", "Bearer 0123456789abcdef0123456789abcdef")];
    assert_eq!(status(&metrics, "POST", "/v1/node/fra1/drain", &wrong), 401);
    let good = [("authorization", bearer.as_str())];
    assert_eq!(status(&metrics, "GET", "/v1/nodes", &good), 200);
    // A cross-site request from a page in a browser on the box, even if it had the token.
    let browser = [
        ("authorization", bearer.as_str()),
        ("origin", "https://attacker.example"),
    ];
    assert_eq!(
        status(&metrics, "POST", "/v1/node/fra1/drain", &browser),
        403
    );
    assert_eq!(
        status(&metrics, "GET", "/v1/lookup?ip=192.0.2.7", &good),
        200,
        "the explanation is served behind the token"
    );
    assert_eq!(status(&metrics, "GET", "/v1/lookup?ip=192.0.2.7", &[]), 401);
    // `geodns node` reads the token file itself.
    let (ok, out) = geodns_tests::daemon::node_cmd(
        None,
        &metrics,
        &["--admin-token", &token_arg, "fra1", "drain"],
    );
    assert!(ok, "geodns node with the token: {out}");
}

#[test]
fn a_reload_that_would_shrink_the_table_is_refused() {
    let dir = TempDir::new("shrink");
    let config = demo_without_checks(dir.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let daemon = Daemon::start_local(
        &config,
        &metrics,
        &[
            "--no-xdp",
            "--listen",
            &dns.to_string(),
            "--watch-interval",
            "100ms",
            "--admin-token",
            &dir.path().join("token").to_string_lossy(),
        ],
        Duration::from_secs(30),
    );
    let ask = || {
        let q = Query::new("www.cdn.example.net.", 1).ecs("192.0.2.7", 32);
        query_udp(dns, &q, Duration::from_secs(2)).expect("an answer")
    };
    let before = ask();
    // A valid database with one network: it parses, and would send nearly every
    // client to the default answer.
    let mut w = Writer::new(6, "GeoDNS-Demo-Country").alias_ipv4(true);
    let de = Value::map([
        ("continent", Value::map([("code", Value::str("EU"))])),
        ("country", Value::map([("iso_code", Value::str("DE"))])),
    ]);
    w.insert("192.0.2.0".parse().expect("ip"), 24, &de)
        .expect("insert");
    let tmp = dir.path().join("country.new");
    w.write_to(&tmp).expect("write the small database");
    std::fs::rename(&tmp, dir.path().join("demo-country.mmdb")).expect("replace");
    let refused = "geodns_reloads_total{result=\"refused_shrink\"}";
    wait_for(
        "the shrunken reload to be refused",
        Duration::from_secs(10),
        || metric(&daemon.scrape_local().unwrap_or_default(), refused) >= 1,
    );
    let m = daemon.scrape_local().expect("metrics");
    assert_eq!(metric(&m, "geodns_reloads_total{result=\"ok\"}"), 0, "{m}");
    assert_eq!(ask().addrs, before.addrs, "the running table still answers");
    // SIGUSR1: the operator takes it once anyway.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(daemon.pid()).expect("pid"), libc::SIGUSR1) };
    wait_for("the forced reload", Duration::from_secs(10), || {
        metric(
            &daemon.scrape_local().unwrap_or_default(),
            "geodns_reloads_total{result=\"ok\"}",
        ) >= 1
    });
}

/// On a wildcard address a reply leaves from the address its query came to (a host
/// with several addresses: the client, connected to one of them, drops a reply from
/// another), and every worker has a UDP socket of its own on the port.
#[test]
fn replies_leave_from_the_queried_address_and_workers_share_the_port() {
    let dir = TempDir::new("pktinfo");
    let config = demo_without_checks(dir.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let _daemon = Daemon::start_local(
        &config,
        &metrics,
        &[
            "--no-xdp",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--workers",
            "3",
            "--admin-token",
            &dir.path().join("token").to_string_lossy(),
        ],
        Duration::from_secs(30),
    );
    let udp = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let sockets = udp
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(format!("00000000:{port:04X}").as_str()))
        .count();
    assert_eq!(sockets, 3, "one UDP socket per worker on port {port}");
    for to in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Connected: the kernel drops datagrams from any other source.
        sock.connect((to, port)).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let q = Query::new("www.cdn.example.net.", 1).build();
        for _ in 0..3 {
            sock.send(&q).expect("send");
            let mut buf = [0u8; 1500];
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no reply from {to}: {e}"));
            assert!(n > 12, "a DNS reply from {to}");
        }
    }
}

/// The metrics/admin server cannot be held: idle connections are closed after the
/// header timeout, and connections beyond its limit wait in the backlog instead of
/// each getting a task, so a scrape gets through once the idle ones are gone.
#[test]
fn idle_connections_cannot_hold_the_metrics_server() {
    let dir = TempDir::new("metrics-limits");
    let config = demo_without_checks(dir.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    let dns = format!("127.0.0.1:{}", free_port());
    let _daemon = Daemon::start_local(
        &config,
        &metrics,
        &[
            "--no-xdp",
            "--listen",
            &dns,
            "--admin-token",
            &dir.path().join("token").to_string_lossy(),
        ],
        Duration::from_secs(30),
    );
    let started = std::time::Instant::now();
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&metrics).expect("connect"))
        .collect();
    assert_eq!(status(&metrics, "GET", "/metrics", &[]), 200);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "a scrape behind 100 idle connections took {waited:?}"
    );
    // The server closed the idle ones it had accepted (header timeout, 5 s).
    let mut closed = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        // EOF: closed by the server; a timeout: still open.
        if matches!(s.read(&mut [0u8; 64]), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 64, "only {closed} idle connections were closed");
}

/// A token file that cannot be written (an unprivileged `--no-xdp` run) does not stop
/// the daemon: it serves DNS and `/metrics`, and the admin API says it is off.
#[test]
fn without_a_token_the_daemon_serves_and_the_admin_api_is_off() {
    let dir = TempDir::new("no-token");
    let config = demo_without_checks(dir.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let _daemon = Daemon::start_local(
        &config,
        &metrics,
        &[
            "--no-xdp",
            "--listen",
            &dns.to_string(),
            "--admin-token",
            "/proc/geodns-cannot-be-here/token",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status(&metrics, "GET", "/metrics", &[]), 200);
    assert_eq!(status(&metrics, "GET", "/v1/nodes", &[]), 503);
    let q = Query::new("www.cdn.example.net.", 1);
    assert!(
        query_udp(dns, &q, Duration::from_secs(2)).is_ok(),
        "DNS is served"
    );
}
