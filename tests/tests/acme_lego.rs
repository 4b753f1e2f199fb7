//! A wildcard certificate through ACME DNS-01, offline: Let's Encrypt's test ACME
//! server (pebble, Debian's `pebble`) on loopback validates against `geodns run
//! --no-xdp` (its `-dnsserver`), and lego (Debian's `lego`, `--dns rfc2136`) writes
//! the `_acme-challenge` TXT records through TSIG-signed RFC 2136 updates, as it would
//! for Let's Encrypt. `cargo xtask test` installs both (and openssl for pebble's own
//! TLS certificate). Nothing leaves 127.0.0.1.
use std::{
    net::UdpSocket,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use geodns_tests::{
    daemon::{metric, Daemon},
    files::TempDir,
};

const SECRET: &str = "2v2AxN3sJbC0cD3gG8h8fW1ZqQ1S9kq1y0m5eW0m3xY=";

fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Kills the child (pebble) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_files(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("cdn.zone"), "www TXT \"static\"\n").expect("zone file");
    std::fs::write(
        dir.join("acme.key"),
        format!("key \"acme\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n"),
    )
    .expect("key file");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        r#"
[zone]
origin = "cdn.example.net."
ttl = 30
file = "cdn.zone"
[[zone.ns]]
name = "ns1"
ipv4 = "198.18.0.53"

[nodes.a]
ipv4 = "198.18.1.1"

[fallback]
a = 1

[[update.keys]]
file = "acme.key"
"#,
    )
    .expect("config");
    config
}

/// pebble on loopback with its own HTTPS certificate (for 127.0.0.1), validating
/// against `dns`; returns it and its ACME port once it listens.
fn start_pebble(d: &Path, dns: &str) -> (Killed, u16) {
    // pebble's own HTTPS certificate, for 127.0.0.1.
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=localhost", "-days", "1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(d)
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl made pebble's certificate");
    let acme_port = free_port();
    std::fs::write(
        d.join("pebble.json"),
        format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{acme_port}",
 "managementListenAddress": "127.0.0.1:{}", "certificate": "cert.pem",
 "privateKey": "key.pem", "httpPort": {}, "tlsPort": {}, "ocspResponderURL": "",
 "externalAccountBindingRequired": false}}}}"#,
            free_port(),
            free_port(),
            free_port()
        ),
    )
    .expect("pebble config");
    let pebble = Killed(
        Command::new("pebble")
            .args(["-config", "pebble.json", "-dnsserver", dns])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "pebble did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    (pebble, acme_port)
}

#[test]
fn lego_gets_a_wildcard_certificate_from_pebble_through_geodns() {
    let missing: Vec<&str> = [
        ("pebble", "-version"),
        ("lego", "--version"),
        ("openssl", "version"),
    ]
    .into_iter()
    .filter(|(t, a)| !have(t, a))
    .map(|(t, _)| t)
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("GEODNS_REQUIRE_BPF").as_deref() != Ok("1"),
            "missing {missing:?}: `cargo xtask test` installs pebble, lego and openssl"
        );
        eprintln!("skipping: missing {missing:?} (Debian's pebble, lego, openssl)");
        return;
    }
    let dir = TempDir::new("acme");
    let d = dir.path();
    let config = write_files(d);
    let dns_port = free_port();
    let dns = format!("127.0.0.1:{dns_port}");
    let metrics = format!("127.0.0.1:{}", free_port());
    let daemon = Daemon::start_local(
        &config,
        &metrics,
        &["--no-xdp", "--listen", &dns],
        Duration::from_secs(30),
    );

    let (pebble, acme_port) = start_pebble(d, &dns);

    let out = Command::new("lego")
        .args(["--server", &format!("https://127.0.0.1:{acme_port}/dir")])
        .args(["--email", "hostmaster@cdn.example.net", "--accept-tos"])
        .args([
            "--dns",
            "rfc2136",
            "--dns.resolvers",
            &dns,
            "--dns.disable-cp",
        ])
        .args([
            "-d",
            "cdn.example.net",
            "-d",
            "*.cdn.example.net",
            "--path",
            "lego",
            "run",
        ])
        .env("LEGO_CA_CERTIFICATES", "cert.pem")
        .env("RFC2136_NAMESERVER", &dns)
        .env("RFC2136_TSIG_KEY", "acme.")
        .env("RFC2136_TSIG_SECRET", SECRET)
        .env("RFC2136_TSIG_ALGORITHM", "hmac-sha256.")
        .env("RFC2136_PROPAGATION_TIMEOUT", "30")
        .env("RFC2136_POLLING_INTERVAL", "1")
        .env("RFC2136_SEQUENCE_INTERVAL", "1")
        .env("RFC2136_TTL", "30")
        .current_dir(d)
        .output()
        .expect("run lego");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lego failed:\n{log}");
    let cert = std::fs::read_to_string(d.join("lego/certificates/cdn.example.net.crt"))
        .expect("the certificate file");
    assert!(cert.contains("BEGIN CERTIFICATE"), "{cert}");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(d.join("lego/certificates/cdn.example.net.crt"))
        .output()
        .expect("openssl x509");
    let sans = String::from_utf8_lossy(&text.stdout);
    assert!(
        sans.contains("DNS:*.cdn.example.net") && sans.contains("DNS:cdn.example.net"),
        "{sans}"
    );
    // Two challenges presented and cleaned up: four applied updates, none refused.
    let m = daemon.scrape_local().expect("metrics");
    assert!(
        metric(&m, "geodns_updates_total{result=\"applied\"}") >= 4,
        "{m}"
    );
    assert_eq!(
        metric(&m, "geodns_updates_total{result=\"notauth\"}"),
        0,
        "{m}"
    );
    drop(pebble);
    drop(daemon);
}
