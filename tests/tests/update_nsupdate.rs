//! RFC 2136 updates with TSIG from a real client: BIND's `nsupdate` (Debian's
//! bind9-dnsutils, installed by `cargo xtask test`) adds and deletes an
//! `_acme-challenge` TXT record of `geodns run --no-xdp` on loopback, over UDP and TCP;
//! a query sees each change at once; the record survives a restart (the journal); a
//! wrong key, an unsigned update and a name the key may not change are refused and
//! change nothing.
use std::{
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use geodns_tests::{
    client::{exchange, Transport},
    daemon::{metric, wait_for, Daemon},
    files::TempDir,
    frame::Query,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RData,
};

const ZONE: &str = "cdn.example.net.";
const TIMEOUT: Duration = Duration::from_secs(2);
const TXT: u16 = 16;
const SOA: u16 = 6;
/// A test key (32 bytes, base64), as `tsig-keygen -a hmac-sha256 acme` prints one.
const SECRET: &str = "2v2AxN3sJbC0cD3gG8h8fW1ZqQ1S9kq1y0m5eW0m3xY=";
const WRONG: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn key_file(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("key \"acme\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"),
    )
    .expect("write a key file");
    path.display().to_string()
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("cdn.zone"), "www TXT \"static\"\n").expect("zone file");
    key_file(dir, "acme.key", SECRET);
    let text = format!(
        r#"
[zone]
origin = "{ZONE}"
ttl = 30
serial = 100
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
"#
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Runs nsupdate with `script`; returns (success, output).
fn nsupdate(key: &str, script: &str, tcp: bool) -> (bool, String) {
    let mut cmd = Command::new("nsupdate");
    cmd.args(["-k", key]);
    if tcp {
        cmd.arg("-v");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsupdate (bind9-dnsutils; `cargo xtask test` installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write the script");
    let out = child.wait_with_output().expect("nsupdate ran");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn script(port: u16, body: &str) -> String {
    format!("server 127.0.0.1 {port}\nzone {ZONE}\n{body}\nsend\nquit\n")
}

fn ask(server: SocketAddr, name: &str, qtype: u16) -> Message {
    let reply = exchange(
        Transport::Udp,
        server,
        &Query::new(name, qtype).build(),
        TIMEOUT,
    )
    .expect("send")
    .expect("a reply");
    Message::from_vec(&reply).expect("the reply parses")
}

fn txts(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

fn serial(server: SocketAddr) -> u32 {
    match &ask(server, ZONE, SOA).answers[0].data {
        RData::SOA(s) => s.serial,
        other => panic!("SOA expected, got {other:?}"),
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one story: add, refuse, restart, delete"
)]
fn nsupdate_adds_and_deletes_an_acme_challenge() {
    if Command::new("nsupdate").arg("-V").output().is_err() {
        assert!(
            std::env::var("GEODNS_REQUIRE_BPF").as_deref() != Ok("1"),
            "nsupdate is missing: install bind9-dnsutils (cargo xtask test does)"
        );
        eprintln!("skipping: nsupdate is missing (bind9-dnsutils)");
        return;
    }
    let dir = TempDir::new("nsupdate");
    let config = write_config(dir.path());
    let key = dir.path().join("acme.key").display().to_string();
    let wrong = key_file(dir.path(), "wrong.key", WRONG);
    let port = free_port();
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let listen = server.to_string();
    let metrics = format!("127.0.0.1:{}", free_port());
    let start = || {
        Daemon::start_local(
            &config,
            &metrics,
            &["--no-xdp", "--listen", &listen, "--watch-interval", "100ms"],
            Duration::from_secs(30),
        )
    };
    let challenge = "_acme-challenge.www.cdn.example.net.";
    let daemon = start();
    assert_eq!(serial(server), 100);

    // Add over UDP: served at once, the serial moves.
    let (ok, out) = nsupdate(
        &key,
        &script(port, &format!("update add {challenge} 60 TXT \"token-1\"")),
        false,
    );
    assert!(ok, "nsupdate add: {out}");
    assert_eq!(txts(&ask(server, challenge, TXT)), ["token-1"]);
    assert_eq!(serial(server), 101);

    // A wrong key: NOTAUTH (BADSIG), nothing changes.
    let (ok, out) = nsupdate(
        &wrong,
        &script(port, &format!("update add {challenge} 60 TXT \"evil\"")),
        false,
    );
    assert!(
        !ok && out.contains("NOTAUTH(BADSIG)"),
        "the wrong key must be refused: {out}"
    );
    // A name the key may not change: REFUSED.
    let (ok, out) = nsupdate(
        &key,
        &script(port, "update add www.cdn.example.net. 60 TXT \"evil\""),
        false,
    );
    assert!(
        !ok && out.contains("REFUSED"),
        "not an _acme-challenge name: {out}"
    );
    // A failed prerequisite: the RRset must not exist, and does.
    let (ok, out) = nsupdate(
        &key,
        &script(
            port,
            &format!("prereq nxrrset {challenge} TXT\nupdate add {challenge} 60 TXT \"x\""),
        ),
        false,
    );
    assert!(!ok && out.contains("YXRRSET"), "prerequisite: {out}");
    assert_eq!(txts(&ask(server, challenge, TXT)), ["token-1"]);
    assert_eq!(serial(server), 101);

    let m = daemon.scrape_local().expect("metrics");
    for (result, n) in [
        ("applied", 1),
        ("notauth", 1),
        ("refused", 1),
        ("prerequisite", 1),
    ] {
        let name = format!("geodns_updates_total{{result=\"{result}\"}}");
        assert_eq!(metric(&m, &name), n, "{name}:\n{m}");
    }

    // Restart: replayed from the journal.
    drop(daemon);
    let daemon = start();
    assert_eq!(
        txts(&ask(server, challenge, TXT)),
        ["token-1"],
        "after a restart"
    );
    assert_eq!(serial(server), 101, "the serial too");

    // A second token over TCP (wildcard certificates need two), then delete the first.
    let (ok, out) = nsupdate(
        &key,
        &script(port, &format!("update add {challenge} 60 TXT \"token-2\"")),
        true,
    );
    assert!(ok, "nsupdate over TCP: {out}");
    let mut got = txts(&ask(server, challenge, TXT));
    got.sort();
    assert_eq!(got, ["token-1", "token-2"]);
    let (ok, out) = nsupdate(
        &key,
        &script(port, &format!("update delete {challenge} TXT \"token-1\"")),
        false,
    );
    assert!(ok, "nsupdate delete: {out}");
    assert_eq!(txts(&ask(server, challenge, TXT)), ["token-2"]);
    let (ok, out) = nsupdate(
        &key,
        &script(port, &format!("update delete {challenge} TXT")),
        false,
    );
    assert!(ok, "nsupdate delete the RRset: {out}");
    let m = ask(server, challenge, TXT);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
    assert_eq!(serial(server), 104);

    let m = daemon.scrape_local().expect("metrics");
    assert_eq!(
        metric(&m, "geodns_updates_total{result=\"applied\"}"),
        3,
        "{m}"
    );
    assert_eq!(
        metric(&m, "geodns_updates_total{result=\"notauth\"}"),
        0,
        "{m}"
    );

    // The operator edits the zone file and keeps the serial: the reload serves the new
    // record with the next serial. A broken file keeps the zone as it was.
    let zone_file = dir.path().join("cdn.zone");
    std::fs::write(&zone_file, "www TXT \"static\"\nnew TXT \"edited\"\n").expect("edit");
    wait_for(
        "the edited zone file served",
        Duration::from_secs(10),
        || txts(&ask(server, "new.cdn.example.net.", TXT)) == ["edited"],
    );
    assert_eq!(serial(server), 105, "a zone change moves the serial");
    std::fs::write(&zone_file, "www TXT \"static\"\nnew BOGUS 1\n").expect("break");
    wait_for(
        "the broken zone file refused",
        Duration::from_secs(10),
        || {
            let m = daemon.scrape_local().unwrap_or_default();
            metric(&m, "geodns_reloads_total{result=\"failed\"}") >= 1
        },
    );
    assert_eq!(txts(&ask(server, "new.cdn.example.net.", TXT)), ["edited"]);
    assert_eq!(serial(server), 105);
    drop(daemon);
    // The carried serial survives a restart (recorded in the journal), and the broken
    // file stops the start, naming its line.
    std::fs::write(&zone_file, "www TXT \"static\"\nnew TXT \"edited\"\n").expect("repair");
    let daemon = start();
    assert_eq!(serial(server), 105);
    drop(daemon);
    std::fs::write(&zone_file, "www TXT \"static\"\nnew BOGUS 1\n").expect("break");
    let out = Command::new(geodns_tests::daemon::geodns_bin())
        .args(["compile", "--config"])
        .arg(&config)
        .output()
        .expect("geodns compile");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cdn.zone:2"), "{err}");
}
