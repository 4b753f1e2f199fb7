//! The HTTP redirector on loopback (IPv4 and IPv6) against hyper's client: the exact
//! `Location` for the node the DNS decision picks, the record from `Host` or
//! `--redirect-record`, forwarded headers from trusted proxies only, `/v1/lookup`
//! equal to `Engine::explain`, the limits, a node going down between two requests
//! (health check and admin state), and `geodns redirect` as a process that reloads
//! and takes `geodns node` commands.
mod health_common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use geodns::{
    control::EngineHandle,
    health::{self, AdminState},
    redirect::{self, ForwardedHeader, RedirectArgs, RedirectStats, Redirector},
};
use geodns_maps::{
    engine::{QTYPE_A, QTYPE_AAAA},
    NodeState, Question,
};
use geodns_tests::{
    daemon::{metric, node_cmd, wait_for, Daemon},
    files::TempDir,
    http::{get, request, HttpReply},
};
use health_common::{ip, HttpTarget};

/// eu1 and eu2 with `http_base`s (one with a trailing `/`, one with a port and a
/// path), v4only and core1 with addresses only. `www` (map main): loopback and
/// 127.0.0.0/8 -> eu1 then eu2; 192.0.2.0/24 and `2001:db8::/32` -> eu2;
/// 198.51.100.0/24 -> v4only. `*.img` (map other): v4only everywhere it maps.
fn config_text(eu1_check: Option<&str>) -> String {
    let check = eu1_check.map_or(String::new(), |c| format!("check = \"{c}\"\n"));
    format!(
        r#"
[zone]
origin = "cdn.example.net."
[[zone.ns]]
name = "ns1.example.org."

[nodes.eu1]
ipv4 = "198.18.1.1"
ipv6 = "2001:2:0:1::1"
http_base = "https://eu1.cdn.example.net/"
{check}
[nodes.eu2]
ipv4 = "198.18.1.2"
ipv6 = "2001:2:0:1::2"
http_base = "https://eu2.cdn.example.net:8443/media"

[nodes.v4only]
ipv4 = "198.18.2.1"

[nodes.core1]
ipv4 = "198.18.100.1"
ipv6 = "2001:2:0:100::1"

[maps.main]
"127.0.0.0/8" = {{ eu1 = 10, eu2 = 5 }}
"::1/128" = {{ eu1 = 10, eu2 = 5 }}
"192.0.2.0/24" = ["eu2"]
"2001:db8::/32" = ["eu2"]
"198.51.100.0/24" = ["v4only"]

[maps.other]
"127.0.0.0/8" = ["v4only"]
"::1/128" = ["v4only"]
"2001:db8::/32" = ["v4only"]

[[records]]
name = "www"
map = "main"

[[records]]
name = "*.img"
map = "other"

[fallback]
core1 = 1
"#
    )
}

const WWW: &str = "www.cdn.example.net";
const IMG: &str = "a1.img.cdn.example.net:8080";

/// A redirector served in this process on `127.0.0.1:0` and `[::1]:0`.
struct Served {
    rt: tokio::runtime::Runtime,
    handle: EngineHandle,
    stats: Arc<RedirectStats>,
    v4: SocketAddr,
    v6: SocketAddr,
}

impl Served {
    fn start(text: &str, args: RedirectArgs) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let handle = EngineHandle::new(health_common::engine(text));
        let stats = Arc::new(RedirectStats::default());
        let redirector = Arc::new(
            Redirector::new(handle.clone(), args, stats.clone()).expect("redirector settings"),
        );
        let addrs: Vec<SocketAddr> = ["127.0.0.1:0", "[::1]:0"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let listeners = rt.block_on(redirect::bind(&addrs)).expect("bind loopback");
        let v4 = listeners[0].local_addr().expect("v4 addr");
        let v6 = listeners[1].local_addr().expect("v6 addr");
        {
            let _in_rt = rt.enter();
            redirect::spawn(listeners, &redirector);
        }
        Self {
            rt,
            handle,
            stats,
            v4,
            v6,
        }
    }
}

fn trusting(which: ForwardedHeader) -> RedirectArgs {
    RedirectArgs {
        trusted_proxies: vec!["127.0.0.1/32".parse().expect("cidr")],
        forwarded_header: which,
        redirect_lookup: true,
        ..RedirectArgs::default()
    }
}

fn ok_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpReply {
    get(addr, path, headers).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// The `Location` of a 302 for `GET path` with `headers`.
fn location(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let r = ok_get(addr, path, headers);
    assert_eq!(r.status, 302, "GET {path} {headers:?}: {r:?}");
    r.location().expect("a Location").to_owned()
}

#[test]
fn redirects_to_the_node_the_dns_decision_picks() {
    let s = Served::start(&config_text(None), RedirectArgs::default());
    let r = ok_get(s.v4, "/video/a.mp4?x=1&y=%20", &[("host", WWW)]);
    assert_eq!(r.status, 302, "{r:?}");
    // http_base's trailing slash is not doubled; path and query are kept as sent.
    assert_eq!(
        r.location(),
        Some("https://eu1.cdn.example.net/video/a.mp4?x=1&y=%20")
    );
    assert_eq!(r.header("x-geodns-node"), Some("eu1"));
    assert_eq!(r.header("x-geodns-source"), Some("geo"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // The node is exactly the engine's DNS decision for that client.
    let engine = s.handle.load();
    let (node, _, _) = engine
        .node_for(&Question::new(WWW, QTYPE_A, ip("127.0.0.1")))
        .expect("decision");
    assert_eq!(node.name, "eu1");

    // Host in any case, with a trailing dot and a port.
    assert_eq!(
        location(s.v4, "/", &[("host", "WWW.CDN.Example.NET.:80")]),
        "https://eu1.cdn.example.net/"
    );
    // A wildcard record; its node has no http_base: the address, the request's scheme.
    assert_eq!(
        location(s.v4, "/i/1.png", &[("host", IMG)]),
        "http://198.18.2.1/i/1.png"
    );
    // HEAD: the same redirect, no body.
    let r = request(s.v4, "HEAD", "/x", &[("host", WWW)], Duration::from_secs(2)).expect("HEAD");
    assert_eq!(
        (r.status, r.location(), r.body.as_str()),
        (302, Some("https://eu1.cdn.example.net/x"), "")
    );
    // A Host that is no record (or an address), and no --redirect-record: 404.
    for host in [
        "other.example.org",
        "cdn.example.net",
        "127.0.0.1:80",
        "[::1]",
    ] {
        let r = ok_get(s.v4, "/", &[("host", host)]);
        assert_eq!(r.status, 404, "{host}: {r:?}");
    }

    // With --redirect-record, such requests go by that record.
    let s = Served::start(
        &config_text(None),
        RedirectArgs {
            redirect_record: Some("a7.img".into()),
            ..RedirectArgs::default()
        },
    );
    assert_eq!(
        location(s.v4, "/p?q", &[("host", "redirect.example.org")]),
        "http://198.18.2.1/p?q"
    );
    // A served Host still wins.
    assert_eq!(
        location(s.v4, "/p", &[("host", WWW)]),
        "https://eu1.cdn.example.net/p"
    );
    assert_eq!(
        s.stats.redirect.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // An unknown --redirect-record is refused at start.
    let handle = EngineHandle::new(health_common::engine(&config_text(None)));
    let bad = RedirectArgs {
        redirect_record: Some("nope".into()),
        ..RedirectArgs::default()
    };
    assert!(Redirector::new(handle, bad, Arc::default()).is_err());
    drop(s.rt);
}

#[test]
fn ipv6_clients_get_the_aaaa_decision() {
    let s = Served::start(&config_text(None), RedirectArgs::default());
    // From ::1: the AAAA decision for www is eu1, as for IPv4.
    assert_eq!(
        location(s.v6, "/a", &[("host", WWW)]),
        "https://eu1.cdn.example.net/a"
    );
    // v4only has no IPv6 address: an IPv6 client gets the node the AAAA answer has
    // (the fallback), with its address in brackets.
    let r = ok_get(s.v6, "/i/1.png", &[("host", IMG)]);
    assert_eq!(r.location(), Some("http://[2001:2:0:100::1]/i/1.png"));
    assert_eq!(
        (r.header("x-geodns-node"), r.header("x-geodns-source")),
        (Some("core1"), Some("fallback"))
    );
    let engine = s.handle.load();
    let (node, addrs, _) = engine
        .node_for(&Question::new(
            IMG.split(':').next().expect("name"),
            QTYPE_AAAA,
            ip("::1"),
        ))
        .expect("AAAA decision");
    assert_eq!(
        (node.name.as_str(), addrs),
        ("core1", vec![ip("2001:2:0:100::1")])
    );
}

#[test]
fn forwarded_headers_only_from_trusted_proxies() {
    let xff = |v: &'static str| [("host", WWW), ("x-forwarded-for", v)];
    // Not a trusted proxy: the header is ignored, the peer (127.0.0.1) decides.
    let plain = Served::start(&config_text(None), RedirectArgs::default());
    assert_eq!(
        location(plain.v4, "/", &xff("192.0.2.7")),
        "https://eu1.cdn.example.net/"
    );

    let s = Served::start(&config_text(None), trusting(ForwardedHeader::XForwardedFor));
    // The proxy's client: 192.0.2.7 -> eu2 (http_base with a port and a path prefix).
    assert_eq!(
        location(s.v4, "/v.mp4", &xff("192.0.2.7")),
        "https://eu2.cdn.example.net:8443/media/v.mp4"
    );
    // Right-most untrusted: what the client itself wrote on the left is not believed.
    assert_eq!(
        location(s.v4, "/", &xff("192.0.2.7, 198.51.100.9")),
        "http://198.18.2.1/"
    );
    // Trusted hops are skipped (127.0.0.1 is the trusted proxy here).
    assert_eq!(
        location(s.v4, "/", &xff("192.0.2.7, 127.0.0.1")),
        "https://eu2.cdn.example.net:8443/media/"
    );
    // An IPv6 client behind the proxy, and the scheme the proxy reports.
    assert_eq!(
        location(
            s.v4,
            "/i",
            &[
                ("host", IMG),
                ("x-forwarded-for", "2001:db8::5"),
                ("x-forwarded-proto", "https")
            ]
        ),
        "https://[2001:2:0:100::1]/i"
    );
    // The IPv6 listener's peer (::1) is not trusted: its header is ignored.
    assert_eq!(
        location(s.v6, "/", &xff("192.0.2.7")),
        "https://eu1.cdn.example.net/"
    );
    // A Forwarded header is not read in X-Forwarded-For mode.
    assert_eq!(
        location(s.v4, "/", &[("host", WWW), ("forwarded", "for=192.0.2.7")]),
        "https://eu1.cdn.example.net/"
    );

    // RFC 7239 mode: a quoted IPv6 address with a port, proto=https.
    let f = Served::start(&config_text(None), trusting(ForwardedHeader::Forwarded));
    assert_eq!(
        location(
            f.v4,
            "/i",
            &[
                ("host", IMG),
                (
                    "forwarded",
                    r#"for=192.0.2.1, for="[2001:db8::5]:4711";proto=https"#
                )
            ]
        ),
        "https://[2001:2:0:100::1]/i"
    );
    assert_eq!(
        location(f.v4, "/", &[("host", WWW), ("forwarded", "for=192.0.2.60")]),
        "https://eu2.cdn.example.net:8443/media/"
    );
    // Garbage or `unknown`: no client address from the header; the proxy's own decides.
    assert_eq!(
        location(f.v4, "/", &[("host", WWW), ("forwarded", "for=unknown")]),
        "https://eu1.cdn.example.net/"
    );
    assert_eq!(
        location(
            f.v4,
            "/",
            &[("host", WWW), ("x-forwarded-for", "192.0.2.7")]
        ),
        "https://eu1.cdn.example.net/"
    );
}

#[test]
fn lookup_json_is_the_engine_explanation() {
    let s = Served::start(&config_text(None), trusting(ForwardedHeader::XForwardedFor));
    let engine = s.handle.load();
    let json = |r: &HttpReply| -> serde_json::Value {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        serde_json::from_str(&r.body).expect("JSON body")
    };
    let explain = |client: &str, ecs: Option<(&str, u8)>| {
        serde_json::to_value(engine.explain(ip(client), ecs.map(|(a, l)| (ip(a), l))))
            .expect("explanation serializes")
    };
    let r = ok_get(s.v4, "/v1/lookup?ip=192.0.2.7", &[]);
    assert_eq!(json(&r), explain("192.0.2.7", None));
    // The same text as `geodns lookup --json` prints.
    assert_eq!(
        r.body,
        geodns::cmd::lookup::json(&engine.explain(ip("192.0.2.7"), None)).expect("json")
    );
    let r = ok_get(
        s.v4,
        "/v1/lookup?ip=2001%3Adb8%3A%3A5&ecs=2001:db8::/32",
        &[],
    );
    assert_eq!(json(&r), explain("2001:db8::5", Some(("2001:db8::", 32))));
    // Without ip=: the requesting client, after forwarded headers.
    let r = ok_get(s.v4, "/v1/lookup", &[("x-forwarded-for", "198.51.100.9")]);
    assert_eq!(json(&r), explain("198.51.100.9", None));
    let r = ok_get(s.v6, "/v1/lookup", &[]);
    assert_eq!(json(&r), explain("::1", None));
    for bad in [
        "/v1/lookup?ip=nonsense",
        "/v1/lookup?ip=192.0.2.1&ecs=192.0.2.0/40",
    ] {
        assert_eq!(ok_get(s.v4, bad, &[]).status, 400, "{bad}");
    }
}

/// Sends raw bytes and reads until the server closes or `limit` passes; returns what
/// came back and how long it took.
fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(limit)).expect("timeout");
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn limits_and_methods() {
    let s = Served::start(
        &config_text(None),
        RedirectArgs {
            http_header_timeout: Duration::from_millis(300),
            http_timeout: Duration::from_millis(1500),
            ..RedirectArgs::default()
        },
    );
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let r = request(s.v4, method, "/", &[("host", WWW)], Duration::from_secs(2)).expect(method);
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some("GET, HEAD")),
            "{method}"
        );
    }
    assert_eq!(
        request(s.v4, "POST", "/v1/lookup", &[], Duration::from_secs(2))
            .expect("POST lookup")
            .status,
        405
    );
    // A head over 8 KiB: 431. The server closes with the rest of the head unread, so
    // the client may see the reset before the 431; it never sees a redirect.
    let big = "x".repeat(9000);
    if let Ok(r) = get(s.v4, "/", &[("host", WWW), ("x-big", &big)]) {
        assert_eq!(r.status, 431, "{r:?}");
    }
    // Too many headers: 431.
    let (text, _) = raw(
        s.v4,
        format!(
            "GET / HTTP/1.1\r\nhost: {WWW}\r\n{}\r\n",
            "x-many: 1\r\n".repeat(80)
        )
        .as_bytes(),
        Duration::from_secs(3),
    );
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // Not HTTP: 400, and the server goes on.
    let (text, _) = raw(s.v4, b"\x16\x03\x01garbage\r\n\r\n", Duration::from_secs(3));
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    // A head that never completes: closed after the header timeout.
    let (_, took) = raw(s.v4, b"GET / HTTP/1.1\r\nhost: w", Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // An idle keep-alive connection is closed by the same timeout.
    let mut c = TcpStream::connect(s.v4).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(format!("GET / HTTP/1.1\r\nhost: {WWW}\r\n\r\n").as_bytes())
        .expect("write");
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 302"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A client that keeps the connection busy is cut off after --http-timeout.
    let mut c = TcpStream::connect(s.v4).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        let req = format!("GET / HTTP/1.1\r\nhost: {WWW}\r\n\r\n");
        if c.write_all(req.as_bytes()).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 4096];
        if matches!(c.read(&mut buf), Ok(0)) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    assert!(closed, "the connection stayed open");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Still serving.
    assert_eq!(
        location(s.v4, "/", &[("host", WWW)]),
        "https://eu1.cdn.example.net/"
    );
}

#[test]
fn a_node_going_down_between_two_requests_moves_the_redirect() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut target = rt.block_on(HttpTarget::start(200));
    let s = Served::start(&config_text(Some(&target.check())), RedirectArgs::default());
    let control = {
        let _in_rt = s.rt.enter();
        s.rt.block_on(health::start(
            &health_common::args(50, 200),
            &s.handle,
            None,
        ))
        .expect("health")
        .0
    };
    let www = [("host", WWW)];
    assert_eq!(location(s.v4, "/a", &www), "https://eu1.cdn.example.net/a");
    assert_eq!(location(s.v6, "/a", &www), "https://eu1.cdn.example.net/a");

    // eu1's check target stops: after `fall` failed checks, eu2.
    rt.block_on(target.stop());
    wait_for("eu1 to go down", Duration::from_secs(10), || {
        health_common::node_state(&control, "eu1") == NodeState::Down
    });
    assert_eq!(
        location(s.v4, "/a", &www),
        "https://eu2.cdn.example.net:8443/media/a"
    );
    assert_eq!(
        location(s.v6, "/a", &www),
        "https://eu2.cdn.example.net:8443/media/a"
    );
    // eu2 drained by the admin: eu1, down by health only, is all the region has: it
    // fails open to eu1.
    rt.block_on(control.set_admin("eu2", AdminState::Drain))
        .expect("eu2 exists");
    let r = ok_get(s.v4, "/a", &www);
    assert_eq!(
        (r.location(), r.header("x-geodns-source")),
        (Some("https://eu1.cdn.example.net/a"), Some("geo"))
    );
    // eu1 down by the admin too: no candidate left, the fallback answers.
    rt.block_on(control.set_admin("eu1", AdminState::Down))
        .expect("eu1 exists");
    let r = ok_get(s.v4, "/a", &www);
    assert_eq!(
        (r.location(), r.header("x-geodns-source")),
        (Some("http://198.18.100.1/a"), Some("fallback"))
    );
    assert_eq!(location(s.v6, "/a", &www), "http://[2001:2:0:100::1]/a");
    // The target comes back: eu1 again.
    rt.block_on(control.set_admin("eu1", AdminState::Auto))
        .expect("eu1 exists");
    rt.block_on(control.set_admin("eu2", AdminState::Auto))
        .expect("eu2 exists");
    rt.block_on(target.restart());
    wait_for("eu1 to come back", Duration::from_secs(10), || {
        health_common::node_state(&control, "eu1") == NodeState::Up
    });
    assert_eq!(location(s.v4, "/a", &www), "https://eu1.cdn.example.net/a");
    control.stop();
}

#[test]
fn geodns_redirect_process_reloads_and_takes_node_commands() {
    let dir = TempDir::new("redirect");
    let config: PathBuf = dir.path().join("redirect.toml");
    std::fs::write(&config, config_text(None)).expect("write config");
    // Fixed ports below the ephemeral range: the other tests' listeners on port 0
    // never take them.
    let v4: SocketAddr = "127.0.0.1:19161".parse().expect("addr");
    let v6: SocketAddr = "[::1]:19161".parse().expect("addr");
    let api = "127.0.0.1:19162".to_owned();
    let daemon = Daemon::start_redirect(
        &config,
        &api,
        &[
            "--listen",
            &v4.to_string(),
            "--listen",
            &v6.to_string(),
            "--trusted-proxy",
            "127.0.0.1",
            "--watch-interval",
            "100ms",
        ],
        Duration::from_secs(20),
    );
    let www = [("host", WWW)];
    assert_eq!(location(v4, "/a", &www), "https://eu1.cdn.example.net/a");
    assert_eq!(location(v6, "/a", &www), "https://eu1.cdn.example.net/a");
    assert_eq!(
        location(v4, "/a", &[("host", WWW), ("x-forwarded-for", "192.0.2.7")]),
        "https://eu2.cdn.example.net:8443/media/a"
    );

    // The admin API of `geodns redirect` itself: eu1 down moves the redirect at once.
    let (ok, out) = node_cmd(None, &api, &["eu1", "down"]);
    assert!(ok, "{out}");
    assert_eq!(
        location(v4, "/a", &www),
        "https://eu2.cdn.example.net:8443/media/a"
    );
    let (ok, out) = node_cmd(None, &api, &["eu1", "auto"]);
    assert!(ok, "{out}");
    assert_eq!(location(v4, "/a", &www), "https://eu1.cdn.example.net/a");

    // A config change is picked up without a restart.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(
        &config,
        text.replace(
            "https://eu1.cdn.example.net/",
            "https://eu1-new.cdn.example.net",
        ),
    )
    .expect("write config");
    wait_for(
        "the reload to change the Location",
        Duration::from_secs(10),
        || {
            get(v4, "/a", &www)
                .is_ok_and(|r| r.location() == Some("https://eu1-new.cdn.example.net/a"))
        },
    );
    let m = daemon.scrape_local().expect("metrics");
    assert_eq!(metric(&m, "geodns_reloads_total{result=\"ok\"}"), 1, "{m}");
    assert!(
        metric(&m, "geodns_http_requests_total{result=\"redirect\"}") >= 6,
        "{m}"
    );
    drop(daemon);
    // Nothing listens any more.
    assert!(get(v4, "/", &www).is_err());
}
