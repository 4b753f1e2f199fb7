//! `geodns run` as a process in a server namespace: the XDP program answers from the
//! compiled demo config, a config change is picked up without a restart (answers switch
//! to the new table), a corrupt database changes nothing and is counted, `/metrics`
//! shows it, and SIGTERM detaches and removes the pins.
use std::{net::IpAddr, path::Path, process::Command, time::Duration};

use geodns_tests::{
    client::answer_in,
    daemon::{geodns_bin, metric, wait_for, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    require_bpf, NetnsPair, Side,
};

#[test]
fn run_serves_reloads_and_stops_cleanly() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    // The config and databases, copied so the test can change them.
    let tmp = TempDir::new("run");
    let dir = tmp.path();
    let config = demo_without_checks(dir);
    let pin_dir = format!("/sys/fs/bpf/geodns-test-{}", std::process::id());
    // Another program's pin in the same directory: geodns must never remove it.
    let foreign = foreign_pin(Path::new(&pin_dir));
    let daemon = Daemon::start(
        &pair,
        &config,
        "127.0.0.1:19153",
        &pin_dir,
        &["--watch-interval", "200ms"],
        Duration::from_secs(30),
    );
    // The client side needs an XDP program for XDP_TX replies to arrive over veth.
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("attach xdp_pass on the client veth");
    wait_for(
        "geodns run to serve /metrics",
        Duration::from_secs(30),
        || daemon.scrape(&pair).is_some(),
    );
    assert!(Path::new(&pin_dir).join("COUNTERS").exists(), "maps pinned");

    let de = Query::new("www.cdn.example.net.", 1).ecs("192.0.2.0", 24);
    assert_eq!(
        answer_in(&pair, &de),
        vec!["198.18.1.10".parse::<IpAddr>().expect("ip")]
    );
    let m = daemon.scrape(&pair).expect("metrics");
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
    // From the server's namespace, so it also reaches the daemon's /metrics (nsenter:
    // `ip netns exec` would mount a sysfs without the BPF filesystem and its pins).
    let stats = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", pair.server_ns))
        .arg(geodns_bin())
        .args(["stats", "--pin-dir", &pin_dir, "--api", "127.0.0.1:19153"])
        .output()
        .expect("geodns stats");
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("answered_v4"), "geodns stats: {text}");
    assert!(
        text.contains("geodns_reloads_total{result=\"ok\"} 0")
            && text.contains("geodns_fallback_tcp_open_connections"),
        "geodns stats shows the rest of /metrics: {text}"
    );

    // A config change: fra1 gets a new address; the answer follows without a restart.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, text.replace("198.18.1.10", "198.18.1.99")).expect("write config");
    wait_for(
        "the reload to change the answer",
        Duration::from_secs(10),
        || answer_in(&pair, &de) == vec!["198.18.1.99".parse::<IpAddr>().expect("ip")],
    );
    let m = daemon.scrape(&pair).expect("metrics");
    assert_eq!(metric(&m, "geodns_reloads_total{result=\"ok\"}"), 1, "{m}");

    // A corrupt database: counted as a failed reload, answers unchanged.
    std::fs::write(dir.join("demo-country.mmdb"), b"not a maxmind database").expect("corrupt");
    wait_for(
        "the failed reload to be counted",
        Duration::from_secs(10),
        || {
            daemon
                .scrape(&pair)
                .is_some_and(|m| metric(&m, "geodns_reloads_total{result=\"failed\"}") >= 1)
        },
    );
    assert_eq!(
        answer_in(&pair, &de),
        vec!["198.18.1.99".parse::<IpAddr>().expect("ip")]
    );

    drop(daemon);
    assert!(
        !Path::new(&pin_dir).join("COUNTERS").exists(),
        "pins removed on SIGTERM"
    );
    assert!(foreign.exists(), "another program's pin is left alone");
    let left: Vec<_> = std::fs::read_dir(&pin_dir)
        .expect("the directory stays for the other pin")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![foreign.file_name().expect("name").to_owned()]);
    std::fs::remove_file(&foreign).expect("remove the foreign pin");
    std::fs::remove_dir(&pin_dir).expect("remove the pin directory");
}

/// Pins a map under `dir` with a name geodns does not use, as another program would.
fn foreign_pin(dir: &Path) -> std::path::PathBuf {
    let scratch = std::path::PathBuf::from(format!("{}-scratch", dir.display()));
    let mut xdp = geodns::loader::XdpDns::load(&geodns::loader::LoadOptions::default())
        .expect("load the XDP object");
    xdp.pin(&scratch).expect("pin");
    std::fs::create_dir_all(dir).expect("pin dir");
    let foreign = dir.join("other_tool_map");
    std::fs::rename(scratch.join("COUNTERS"), &foreign).expect("move one pin");
    geodns::daemon::remove_pins(&scratch);
    foreign
}
