//! `geodns diff` as a user runs it: two configs, a config with a replaced database
//! (`--db`), and the running daemon (`--live`, `geodns run --no-xdp` on loopback);
//! exit status 0/1/2 like `diff`, and the JSON figures against the demo's known
//! networks. No root needed.
use std::{
    net::{IpAddr, UdpSocket},
    path::Path,
    process::Command,
    time::Duration,
};

use geodns_maps::mmdb::{demo, Value};
use geodns_tests::{
    daemon::{geodns_bin, Daemon},
    files::{demo_without_checks, TempDir},
};

/// Runs `geodns diff ARGS --json`: (exit status, JSON when it printed some).
fn diff(args: &[&str]) -> (i32, Option<serde_json::Value>) {
    let out = Command::new(geodns_bin())
        .arg("diff")
        .args(args)
        .arg("--json")
        .output()
        .expect("run geodns diff");
    let json = serde_json::from_slice(&out.stdout).ok();
    (out.status.code().expect("exit status"), json)
}

/// `answer_changed` of a record, query type (`a`/`aaaa`) and client space (0 IPv4, 1 IPv6).
fn changed(j: &serde_json::Value, record: &str, q: &str, space: usize) -> u128 {
    let r = j["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["name"] == record)
        .unwrap_or_else(|| panic!("record {record} in {j}"));
    let v = &r[q][space]["answer_changed"];
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("answer_changed: {v}"))
}

/// The demo with a map key for Germany: `DE` (`192.0.2.0/25`, `10.0.0.0/9`,
/// `2001:db8::/33` in the demo database) moves from fra1 (continent:EU) to ams1.
fn demo_with_de(dir: &Path, demo: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(demo).expect("read demo");
    let text = text.replace(
        "\"continent:EU\" = { fra1 = 10, ams1 = 5 }",
        "\"continent:EU\" = { fra1 = 10, ams1 = 5 }\n\"DE\" = { ams1 = 10 }",
    );
    assert!(
        text.contains("\"DE\" = { ams1 = 10 }"),
        "the demo's EU key moved"
    );
    let p = dir.join("demo-de.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

/// The IPv4 addresses and IPv6 addresses of Germany in the demo database: its IPv6
/// /33, and its IPv4 space again in each alias range the database has (6to4: 2^80
/// addresses per IPv4 address, Teredo: 2^64, IPv4-mapped: 1).
const DE_V4: u128 = (1 << 23) + 128;
const ALIASED: u128 = (1 << 80) + (1 << 64) + 1;
const DE_V6: u128 = (1 << 95) + DE_V4 * ALIASED;

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

#[test]
fn configs_and_replaced_databases() {
    let dir = TempDir::new("diff-cli");
    let demo = demo_without_checks(dir.path());
    let demo_s = demo.to_str().expect("utf-8 path");

    let (code, j) = diff(&[demo_s, demo_s]);
    assert_eq!(code, 0, "a config against itself moves nothing");
    assert_eq!(j.expect("json")["moved"], false);

    let de = demo_with_de(dir.path(), &demo);
    let (code, j) = diff(&[demo_s, de.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "the DE key moves clients");
    let j = j.expect("json");
    assert_eq!(changed(&j, "www.cdn.example.net.", "a", 0), DE_V4);
    assert_eq!(changed(&j, "www.cdn.example.net.", "a", 1), DE_V6);
    assert_eq!(changed(&j, "www.cdn.example.net.", "aaaa", 0), DE_V4);
    // The spread map has no country keys: nothing moves there.
    assert_eq!(changed(&j, "dl.cdn.example.net.", "a", 0), 0);
    assert_eq!(j["top_v4"][0]["prefix"], "10.0.0.0/9");
    assert_eq!(j["top_v4"][1]["prefix"], "192.0.2.0/25");
    // 10.0.0.0/9 seen through 6to4 (2^103 addresses) is larger than the /33.
    assert_eq!(j["top_v6"][0]["prefix"], "2002:a00::/25");
    assert_eq!(j["top_v6"][1]["prefix"], "2001:db8::/33");
    let flows = j["records"][0]["a"][0]["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0]["from"], "fra1");
    assert_eq!(flows[0]["to"], "ams1");

    // A new release of the country database: 198.51.100.0/25 goes from US to DE.
    let mut w = demo::country().expect("demo database");
    let ip: IpAddr = "198.51.100.0".parse().expect("ip");
    w.insert(
        ip,
        25,
        &Value::map([
            ("continent", Value::map([("code", Value::str("EU"))])),
            ("country", Value::map([("iso_code", Value::str("DE"))])),
        ]),
    )
    .expect("insert");
    let new_db = dir.path().join("new-country.mmdb");
    w.write_to(&new_db).expect("write database");
    let spec = format!("country={}", new_db.display());
    let (code, j) = diff(&[demo_s, "--db", &spec]);
    assert_eq!(code, 1);
    let j = j.expect("json");
    assert_eq!(changed(&j, "www.cdn.example.net.", "a", 0), 128);
    assert_eq!(changed(&j, "www.cdn.example.net.", "a", 1), 128 * ALIASED);
    assert_eq!(j["top_v4"][0]["prefix"], "198.51.100.0/25");
    assert_eq!(j["top_v4"][0]["changes"][0]["old_region"], "US");
    assert_eq!(j["top_v4"][0]["changes"][0]["new_region"], "continent:EU");
    // The same file named by its old path.
    let spec = format!(
        "{}={}",
        dir.path().join("demo-country.mmdb").display(),
        new_db.display()
    );
    assert_eq!(diff(&[demo_s, "--db", &spec]).0, 1);

    // Errors: 2, like diff.
    assert_eq!(diff(&[demo_s, "/nonexistent/geodns.toml"]).0, 2);
    assert_eq!(diff(&[demo_s, "--db", "country=/nonexistent.mmdb"]).0, 2);
    assert_eq!(
        diff(&[demo_s, "--db", "/not/in/config.mmdb=/etc/hostname"]).0,
        2
    );
    assert_eq!(
        diff(&[demo_s]).0,
        2,
        "one config and no --db compares nothing"
    );
    let bad = dir.path().join("bad.mmdb");
    std::fs::write(&bad, b"not a database").expect("write");
    assert_eq!(
        diff(&[demo_s, "--db", &format!("country={}", bad.display())]).0,
        2
    );
}

#[test]
fn against_the_running_daemon() {
    let dir = TempDir::new("diff-live");
    let demo = demo_without_checks(dir.path());
    let de = demo_with_de(dir.path(), &demo);
    let metrics = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let _daemon = Daemon::start_local(
        &demo,
        &metrics,
        &["--no-xdp", "--listen", &listen],
        Duration::from_secs(30),
    );
    let (code, j) = diff(&["--live", "--api", &metrics, demo.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "the daemon serves this config: {j:?}");
    let (code, j) = diff(&["--live", "--api", &metrics, de.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    let j = j.expect("json");
    assert!(j["old"].as_str().expect("old").starts_with("live"));
    assert_eq!(changed(&j, "www.cdn.example.net.", "a", 0), DE_V4);
    assert_eq!(changed(&j, "www.cdn.example.net.", "a", 1), DE_V6);
    // No daemon there: an error, not "nothing moves".
    let nobody = format!("127.0.0.1:{}", free_port());
    assert_eq!(
        diff(&["--live", "--api", &nobody, de.to_str().expect("utf-8")]).0,
        2
    );
}
