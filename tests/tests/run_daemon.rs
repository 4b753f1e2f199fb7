//! `geodns run` as a process in a server namespace: the XDP program answers from the
//! compiled demo config, a config change is picked up without a restart (answers switch
//! to the new table), a corrupt database changes nothing and is counted, `/metrics`
//! shows it, and SIGTERM detaches and removes the pins.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use aya::programs::XdpMode;
use geodns::loader::{LoadOptions, XdpDns};
use geodns_tests::{client::query_udp, frame::Query, require_bpf, NetnsPair, Side};

/// The `geodns` binary cargo built next to this test's deps directory.
fn geodns_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("geodns");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p geodns` first",
        bin.display()
    );
    bin
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.0.id()).unwrap_or(0), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metrics(pair: &NetnsPair) -> Option<String> {
    pair.in_ns(Side::Server, || {
        let mut s = TcpStream::connect_timeout(
            &"127.0.0.1:19153".parse().expect("addr"),
            Duration::from_millis(300),
        )
        .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .ok()
    .flatten()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn answer(pair: &NetnsPair, q: &Query) -> Vec<IpAddr> {
    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    pair.in_ns(Side::Client, || {
        query_udp(server, q, Duration::from_secs(1))
    })
    .expect("client namespace")
    .map(|r| r.addrs)
    .unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn run_serves_reloads_and_stops_cleanly() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    // The config and databases, copied so the test can change them.
    let dir = std::env::temp_dir().join(format!("geodns-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for f in ["demo.toml", "demo-country.mmdb", "demo-asn.mmdb"] {
        std::fs::copy(examples.join(f), dir.join(f)).expect("copy example");
    }
    let config = dir.join("demo.toml");
    let pin_dir = format!("/sys/fs/bpf/geodns-test-{}", std::process::id());
    // nsenter switches only the network namespace (`ip netns exec` would also give the
    // daemon its own /sys, and so its own BPF filesystem for the pins).
    let child = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", pair.server_ns))
        .arg(geodns_bin())
        .args(["run", "--config"])
        .arg(&config)
        .args(["--iface", &pair.server_if, "--metrics", "127.0.0.1:19153"])
        .args(["--pin-dir", &pin_dir, "--watch-interval", "200ms"])
        .spawn()
        .expect("start geodns run");
    let daemon = Daemon(child);
    // The client side needs an XDP program for XDP_TX replies to arrive over veth.
    let mut pass = XdpDns::load(&LoadOptions::default()).expect("load");
    let c_idx = pair.ifindex(Side::Client).expect("ifindex");
    pair.in_ns(Side::Client, || {
        pass.attach_program("xdp_pass", c_idx, XdpMode::Driver)
    })
    .expect("client namespace")
    .expect("attach xdp_pass");
    wait_for(
        "geodns run to serve /metrics",
        Duration::from_secs(30),
        || metrics(&pair).is_some(),
    );
    assert!(Path::new(&pin_dir).join("COUNTERS").exists(), "maps pinned");

    let de = Query::new("www.cdn.example.net.", 1).ecs("192.0.2.0", 24);
    assert_eq!(
        answer(&pair, &de),
        vec!["198.18.1.10".parse::<IpAddr>().expect("ip")]
    );
    let m = metrics(&pair).expect("metrics");
    assert!(
        metric(&m, "geodns_xdp_packets_total{outcome=\"answered_v4\"}") >= 1,
        "{m}"
    );
    // `geodns lookup --live` and `geodns stats` read the pinned maps from another process.
    let live = Command::new(geodns_bin())
        .args(["lookup", "--config"])
        .arg(&config)
        .args(["192.0.2.77", "--live", "--pin-dir", &pin_dir])
        .output()
        .expect("geodns lookup --live");
    let text = String::from_utf8_lossy(&live.stderr);
    assert!(
        text.contains("the same as this config compiles to"),
        "lookup --live: {text}"
    );
    let stats = Command::new(geodns_bin())
        .args(["stats", "--pin-dir", &pin_dir])
        .output()
        .expect("geodns stats");
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("answered_v4"), "geodns stats: {text}");

    // A config change: fra1 gets a new address; the answer follows without a restart.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, text.replace("198.18.1.10", "198.18.1.99")).expect("write config");
    wait_for(
        "the reload to change the answer",
        Duration::from_secs(10),
        || answer(&pair, &de) == vec!["198.18.1.99".parse::<IpAddr>().expect("ip")],
    );
    let m = metrics(&pair).expect("metrics");
    assert_eq!(metric(&m, "geodns_reloads_total{result=\"ok\"}"), 1, "{m}");

    // A corrupt database: counted as a failed reload, answers unchanged.
    std::fs::write(dir.join("demo-country.mmdb"), b"not a maxmind database").expect("corrupt");
    wait_for(
        "the failed reload to be counted",
        Duration::from_secs(10),
        || {
            metrics(&pair)
                .is_some_and(|m| metric(&m, "geodns_reloads_total{result=\"failed\"}") >= 1)
        },
    );
    assert_eq!(
        answer(&pair, &de),
        vec!["198.18.1.99".parse::<IpAddr>().expect("ip")]
    );

    drop(daemon);
    assert!(!Path::new(&pin_dir).exists(), "pins removed on SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}
