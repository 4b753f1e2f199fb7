//! `geodns run` with node health, end to end across a veth pair: a TCP check target in
//! the server namespace is stopped and restarted, and the answers the XDP program sends
//! to the client namespace follow; `geodns node NAME drain|auto` against the running
//! daemon changes them at once; the state file records it; `/metrics` counts checks.
mod health_common;

use std::{
    net::TcpListener,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use geodns_tests::{
    client::answer_in,
    daemon::{metric, wait_for, Daemon},
    files::TempDir,
    frame::Query,
    require_bpf, NetnsPair, Side,
};
use health_common::{ip, A, B, C};

const API: &str = "127.0.0.1:19156";

/// A TCP listener inside the server namespace (where the daemon checks it), accepting
/// on a host thread until stopped.
struct NsTcpTarget {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NsTcpTarget {
    fn start(pair: &NetnsPair, port: u16) -> Self {
        let listener = pair
            .in_ns(Side::Server, move || TcpListener::bind(("127.0.0.1", port)))
            .expect("server namespace")
            .expect("bind the check target");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => drop(sock),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NsTcpTarget {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `geodns node ARGS --api API` in the server namespace: (success, stdout).
fn node_cmd(pair: &NetnsPair, args: &[&str]) -> (bool, String) {
    geodns_tests::daemon::node_cmd(Some(&pair.server_ns), API, args)
}

#[test]
fn daemon_follows_health_and_admin_commands() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let mut target = NsTcpTarget::start(&pair, 0);
    let tmp = TempDir::new("health-run");
    let dir = tmp.path();
    let config = dir.join("health.toml");
    // www: best over { a = 10, b = 5 }, plus c = 1 so draining b leaves an answer.
    let text = health_common::config_text(&[("a", format!("127.0.0.1:{}", target.port))], &[])
        .replace("{ a = 10, b = 5 }", "{ a = 10, b = 5, c = 1 }");
    std::fs::write(&config, text).expect("write config");
    let states: PathBuf = dir.join("states.json");
    let pin_dir = format!("/sys/fs/bpf/geodns-health-{}", std::process::id());
    let state_arg = states.display().to_string();
    let daemon = Daemon::start(
        &pair,
        &config,
        API,
        &pin_dir,
        &[
            "--check-interval",
            "100ms",
            "--check-timeout",
            "300ms",
            "--state-file",
            &state_arg,
        ],
        Duration::from_secs(30),
    );
    // XDP_TX replies over veth arrive only when the peer has an XDP program too.
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("attach xdp_pass on the client veth");

    let www = Query::new("www.cdn.example.net.", 1).ecs("10.1.2.0", 24);
    assert_eq!(answer_in(&pair, &www), vec![ip(A)]);

    // The check target goes away: b answers after three failed checks.
    target.stop();
    wait_for("the answer to move to b", Duration::from_secs(10), || {
        answer_in(&pair, &www) == vec![ip(B)]
    });
    let m = daemon.scrape(&pair).expect("metrics");
    assert!(
        metric(
            &m,
            "geodns_health_checks_total{node=\"a\",result=\"failed\"}"
        ) >= 3,
        "{m}"
    );
    assert!(m.contains("geodns_node_healthy{node=\"a\"} 0"), "{m}");

    // drain b: the next answer is c.
    let (ok, out) = node_cmd(&pair, &["b", "drain"]);
    assert!(ok, "{out}");
    assert_eq!(out, "b: admin drain: up -> drain\n");
    assert_eq!(answer_in(&pair, &www), vec![ip(C)]);
    let (ok, out) = node_cmd(&pair, &[]);
    assert!(ok, "{out}");
    let line = |node: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>())
    };
    assert_eq!(line("a"), Some(vec!["a", "down", "-"]), "{out}");
    assert_eq!(line("b"), Some(vec!["b", "drain", "drain"]), "{out}");
    let saved = std::fs::read_to_string(&states).expect("state file written");
    assert!(saved.contains("\"b\": \"drain\""), "{saved}");
    let (ok, out) = node_cmd(&pair, &["nosuchnode", "up"]);
    assert!(!ok && out.contains("404"), "{out}");

    let (ok, out) = node_cmd(&pair, &["b", "auto"]);
    assert!(ok, "{out}");
    assert_eq!(answer_in(&pair, &www), vec![ip(B)]);

    // The target comes back: a answers again after two good checks.
    let _target = NsTcpTarget::start(&pair, target.port);
    wait_for(
        "the answer to move back to a",
        Duration::from_secs(10),
        || answer_in(&pair, &www) == vec![ip(A)],
    );

    drop(daemon);
    assert!(!std::path::Path::new(&pin_dir).exists(), "pins removed");
}
