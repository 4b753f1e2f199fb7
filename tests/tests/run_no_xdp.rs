//! `geodns run --no-xdp`: the userspace server alone on loopback, as a child process.
//! It logs one ready line naming its listen addresses, answers over UDP and TCP on
//! IPv4 and IPv6, counts in `/metrics`, and stops cleanly on SIGTERM. No root needed.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use geodns_tests::{
    client::{parse_reply, query_udp},
    daemon::{geodns_bin, metric},
    frame::Query,
};

/// Kills the child if the test fails before it stopped it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The value of `key=` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: geodns\r\nconnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text
}

fn tcp_query(server: SocketAddr, query: &Query) -> geodns_tests::client::Reply {
    let mut s = TcpStream::connect(server).expect("connect over TCP");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let q = query.build();
    let mut framed = u16::try_from(q.len()).expect("len").to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("length");
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut m).expect("message");
    parse_reply(&m).expect("decodes")
}

#[test]
fn no_xdp_serves_udp_and_tcp_and_stops_on_sigterm() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml");
    let child = Command::new(geodns_bin())
        .args(["run", "--no-xdp", "--config"])
        .arg(&config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--metrics",
            "127.0.0.1:0",
            "--pin-dir",
            "/nonexistent/geodns-no-xdp-test",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start geodns run --no-xdp");
    let mut child = KillOnDrop(child);
    // The log goes to stdout.
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("geodns run logs `geodns ready` within 30 s");
        if line.contains("geodns ready") {
            break line;
        }
    };
    let listen: Vec<SocketAddr> = field(&ready, "listen")
        .expect("the ready line names the listen addresses")
        .split(',')
        .map(|a| a.parse().expect("a listen address"))
        .collect();
    assert_eq!(listen.len(), 2, "{ready}");
    let (dns, dns6) = (listen[0], listen[1]);
    assert_eq!(dns.ip(), IpAddr::from([127, 0, 0, 1]));
    assert!(dns6.is_ipv6());
    let metrics = field(&ready, "metrics")
        .expect("metrics address")
        .to_owned();

    // The demo config: 192.0.2.0/24 is in Europe, where fra1 answers.
    let www = Query::new("www.cdn.example.net.", 1).ecs("192.0.2.0", 24);
    let udp = query_udp(dns, &www, Duration::from_secs(2)).expect("a UDP answer");
    assert_eq!(udp.addrs, vec![IpAddr::from([198, 18, 1, 10])]);
    assert_eq!(udp.ecs_scope, Some(24));
    assert!(udp.message.metadata.authoritative);
    let tcp = tcp_query(dns, &www);
    assert_eq!(tcp.addrs, udp.addrs);
    // Over IPv6 the same (the ECS address decides, not the source).
    let udp6 = query_udp(dns6, &www, Duration::from_secs(2)).expect("a UDP answer over IPv6");
    assert_eq!(udp6.addrs, udp.addrs);
    assert_eq!(tcp_query(dns6, &www).addrs, udp.addrs);
    let refused = query_udp(dns, &Query::new("example.com.", 1), Duration::from_secs(2))
        .expect("an answer outside the zone");
    assert_eq!(u16::from(refused.message.metadata.response_code), 5);

    let m = scrape(&metrics);
    assert_eq!(
        metric(&m, "geodns_fallback_responses_total{rcode=\"NOERROR\"}"),
        4,
        "{m}"
    );
    assert_eq!(
        metric(&m, "geodns_fallback_responses_total{rcode=\"REFUSED\"}"),
        1
    );
    assert_eq!(
        metric(
            &m,
            "geodns_fallback_transport_queries_total{transport=\"tcp\"}"
        ),
        2
    );

    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(child.0.id()).expect("pid"), libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() <= deadline,
            "geodns run did not stop within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit: {status}");
}
