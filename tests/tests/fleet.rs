//! A fleet of boxes that agree, through a real etcd (one member on loopback, data in a
//! temp dir): three `geodns run --no-xdp --fleet` boxes on loopback, and one case with
//! the XDP program in a test namespace. Admin states reach every box within a second,
//! health is decided by quorum, an etcd outage changes no answer, a pushed config
//! applies everywhere (or, where it cannot, changes nothing and says why), and a box
//! restarted mid-rollout comes up on the newest revision.
use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use geodns_tests::{
    client::answer_in,
    daemon::{metric, node_cmd, wait_for, Daemon},
    files::{demo_without_checks, TempDir},
    fleet::{
        admin_propagation, answers_fra1, fleet_cmd, fleet_status, fra1_query, Etcd, FleetBox, FRA1,
    },
    frame::Query,
    require_bpf, NetnsPair, Side,
};

/// The fleet tests share two CPUs with everything else: one at a time, so the timing
/// they measure is the fleet's, not the neighbours'.
static SERIAL: Mutex<()> = Mutex::new(());

const BOXES: [&str; 3] = ["a", "b", "c"];
/// Short leases and quick checks, so the tests take seconds.
const EXTRA: &[&str] = &[
    "--fleet-lease",
    "2s",
    "--check-interval",
    "100ms",
    "--check-timeout",
    "500ms",
    "--fall",
    "2",
    "--rise",
    "2",
    "--watch-interval",
    "200ms",
];

struct Fleet {
    // Dropped in field order: the boxes stop before etcd, then the files go.
    boxes: Vec<FleetBox>,
    etcd: Etcd,
    dir: TempDir,
}

impl Fleet {
    /// etcd and three boxes on the demo config (checks removed, rate limiting off);
    /// `edit` changes the config text first.
    fn start(tag: &str, edit: impl Fn(String) -> String) -> Self {
        let dir = TempDir::new(tag);
        let source = dir.path().join("source");
        std::fs::create_dir_all(&source).expect("source dir");
        let config = demo_without_checks(&source);
        let text = std::fs::read_to_string(&config).expect("config");
        std::fs::write(&config, edit(text)).expect("config");
        let etcd = Etcd::start(dir.path(), None);
        let boxes = BOXES
            .iter()
            .map(|name| FleetBox::start(name, &source, dir.path(), &etcd.endpoint(), EXTRA))
            .collect();
        let fleet = Self { boxes, etcd, dir };
        fleet.wait_joined();
        fleet
    }

    fn all(&self) -> Vec<&FleetBox> {
        self.boxes.iter().collect()
    }

    /// Every box reaches etcd and sees all three.
    fn wait_joined(&self) {
        wait_for(
            "every box to join the fleet",
            Duration::from_secs(20),
            || {
                self.boxes.iter().all(|b| {
                    let m = b.metrics();
                    metric(&m, "geodns_fleet_connected ") == 1
                        && metric(&m, "geodns_fleet_boxes ") == 3
                })
            },
        );
    }

    /// `fra1`'s state as each box answers with it (`GET /v1/node/fra1`).
    fn fra1_states(&self) -> Vec<String> {
        self.boxes
            .iter()
            .map(|b| {
                let out = b.node(&["fra1"]);
                let text = String::from_utf8_lossy(&out.stdout);
                text.lines()
                    .nth(1)
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect()
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn an_admin_drain_reaches_all_three_boxes_within_a_second() {
    let _serial = lock();
    let fleet = Fleet::start("fleet-admin", |t| t);
    let boxes = fleet.all();
    for b in &boxes {
        let r = b
            .query(&fra1_query(), Duration::from_secs(2))
            .expect("answer");
        assert!(answers_fra1(&r), "box {}: fra1 before the drain", b.name);
    }
    let mut worst = Duration::ZERO;
    // Through each box's own admin API in turn: every one writes through to etcd.
    for round in 0..6 {
        let via = &fleet.boxes[round % 3];
        let drained = admin_propagation(
            via,
            &boxes,
            "fra1",
            "drain",
            |r| !answers_fra1(r) && !r.addrs.is_empty(),
            Duration::from_secs(5),
        );
        let back = admin_propagation(
            via,
            &boxes,
            "fra1",
            "auto",
            answers_fra1,
            Duration::from_secs(5),
        );
        let max = drained
            .iter()
            .chain(&back)
            .max()
            .copied()
            .unwrap_or_default();
        println!(
            "round {round} via box {}: drain reached the boxes after {:?} ms, auto after {:?} ms",
            via.name,
            drained.iter().map(|d| ms(*d).round()).collect::<Vec<_>>(),
            back.iter().map(|d| ms(*d).round()).collect::<Vec<_>>(),
        );
        worst = worst.max(max);
    }
    println!(
        "fleet admin propagation: worst {:.1} ms over 12 changes",
        ms(worst)
    );
    assert!(
        worst < Duration::from_secs(1),
        "an admin change took {worst:?} to reach every box"
    );
    // The admin state is the fleet's: every box lists it, and etcd holds it.
    let out = fleet.boxes[1].node(&["fra1", "drain"]);
    assert!(out.status.success());
    wait_for(
        "every status to list fra1 drained",
        Duration::from_secs(3),
        || {
            let status = fleet_status(None, &fleet.etcd.endpoint());
            status.len() == 3 && status.iter().all(|s| s["states"]["fra1"] == "drain")
        },
    );
}

/// An HTTP health target that fails the checks of the boxes named in `failing` (by
/// the `User-Agent` a fleet box sends: `geodns-health (box NAME)`).
struct Target {
    addr: SocketAddr,
    failing: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Target {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the target");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let failing: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let failing = failing.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Bounded: the test stops it on drop; at most 10 minutes anyway.
                let deadline = Instant::now() + Duration::from_mins(10);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok((mut s, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let fail = failing
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .iter()
                        .any(|b| head.contains(&format!("(box {b})")));
                    let status = if fail {
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    };
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                }
            })
        };
        Self {
            addr,
            failing,
            stop,
            thread: Some(thread),
        }
    }

    fn fail_for(&self, boxes: &[&str]) {
        *self.failing.lock().unwrap_or_else(PoisonError::into_inner) =
            boxes.iter().map(|b| (*b).to_owned()).collect();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The demo config with an HTTP check on fra1 against `target`.
fn with_fra1_check(text: &str, target: SocketAddr) -> String {
    text.replace(
        "[nodes.fra1]\n",
        &format!("[nodes.fra1]\ncheck = \"http://{target}/health\"\n"),
    )
}

/// A German client: fra1 (weight 10), else ams1 (5). Unlike the lab range, which
/// only fra1 serves (and which fails open to it when it is down by health).
fn eu_query() -> Query {
    Query::new("www.cdn.example.net.", 1)
        .edns(1232)
        .ecs("192.0.2.0", 24)
}

const AMS1: &str = "198.18.2.10";

/// What a box's own checks say of fra1 (`health` column of `geodns node fra1`).
fn own_health(b: &FleetBox) -> String {
    let out = b.node(&["fra1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or("?")
        .to_owned()
}

#[test]
fn a_node_down_for_two_of_three_boxes_is_down_everywhere_and_for_one_up_everywhere() {
    let _serial = lock();
    let target = Target::start();
    let fleet = Fleet::start("fleet-quorum", |t| with_fra1_check(&t, target.addr));
    wait_for("fra1 healthy everywhere", Duration::from_secs(10), || {
        fleet.boxes.iter().all(|b| own_health(b) == "up")
    });
    assert_eq!(fleet.fra1_states(), ["up", "up", "up"]);

    // One box sees it fail: its own view says down, the fleet keeps it up.
    target.fail_for(&["a"]);
    wait_for("box a to see fra1 down", Duration::from_secs(10), || {
        own_health(&fleet.boxes[0]) == "down"
    });
    // Give the view time to travel: it must not change anything anywhere.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fleet.fra1_states(),
        ["up", "up", "up"],
        "1 of 3 is no quorum"
    );
    for b in &fleet.boxes {
        let r = b
            .query(&eu_query(), Duration::from_secs(2))
            .expect("answer");
        assert!(answers_fra1(&r), "box {}: still answers fra1", b.name);
    }

    // Two of three: down on all three, box c included, whose own checks pass.
    target.fail_for(&["a", "b"]);
    let started = Instant::now();
    wait_for("fra1 down on every box", Duration::from_secs(10), || {
        fleet.fra1_states() == ["down", "down", "down"]
    });
    println!(
        "2 of 3 down -> down everywhere after {:?}",
        started.elapsed()
    );
    assert_eq!(own_health(&fleet.boxes[2]), "up", "box c's own view");
    for b in &fleet.boxes {
        let r = b
            .query(&eu_query(), Duration::from_secs(2))
            .expect("answer");
        assert_eq!(
            r.addrs,
            [AMS1.parse::<IpAddr>().expect("ip")],
            "box {}: ams1 instead of fra1",
            b.name
        );
    }

    // Back to one: up everywhere again.
    target.fail_for(&["b"]);
    wait_for("fra1 up again everywhere", Duration::from_secs(10), || {
        fleet.fra1_states() == ["up", "up", "up"]
    });
    // A stopped box stops counting: b alone is 1 of 2.
    let mut fleet = fleet;
    fleet.boxes[0].stop();
    // It revoked its lease on the way out: gone well within the 2 s lease.
    wait_for("two live boxes", Duration::from_millis(1500), || {
        metric(&fleet.boxes[1].metrics(), "geodns_fleet_boxes ") == 2
    });
    target.fail_for(&["b", "c"]);
    wait_for(
        "fra1 down on both live boxes",
        Duration::from_secs(10),
        || {
            fleet.boxes[1..].iter().all(|b| {
                b.query(&eu_query(), Duration::from_secs(1))
                    .is_ok_and(|r| !r.addrs.is_empty() && !answers_fra1(&r))
            })
        },
    );
}

/// Queries every box at a steady pace for `duration`: every one must be answered.
fn paced_stream(boxes: &[&FleetBox], duration: Duration) -> (usize, usize) {
    let q = fra1_query();
    let started = Instant::now();
    let (mut sent, mut failed) = (0, 0);
    // 3 boxes x 100 queries a second, bounded by `duration`.
    while started.elapsed() < duration {
        for b in boxes {
            sent += 1;
            if b.query(&q, Duration::from_secs(1))
                .map_or(true, |r| r.addrs.is_empty())
            {
                failed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (sent, failed)
}

#[test]
fn with_etcd_stopped_for_ten_seconds_every_box_keeps_answering_then_reconverges() {
    let _serial = lock();
    let mut fleet = Fleet::start("fleet-outage", |t| t);
    // A fleet state from before the outage: fra1 drained.
    let out = fleet.boxes[0].node(&["fra1", "drain"]);
    assert!(out.status.success());
    // The drain is the fleet's state once every box answers by it; only then does
    // etcd go away (stopped sooner, a box may never have seen it).
    wait_for("the drain on every box", Duration::from_secs(10), || {
        fleet.all().iter().all(|b| {
            b.query(&fra1_query(), Duration::from_secs(1))
                .is_ok_and(|r| !answers_fra1(&r))
        })
    });
    fleet.etcd.stop();
    let boxes = fleet.all();
    let (sent, failed) = std::thread::scope(|s| {
        let stream = s.spawn(|| paced_stream(&boxes, Duration::from_secs(10)));
        wait_for("every box to notice", Duration::from_secs(8), || {
            boxes
                .iter()
                .all(|b| metric(&b.metrics(), "geodns_fleet_connected ") == 0)
        });
        // `geodns stats` says so too (a `--no-xdp` box pins no counters).
        let stats = std::process::Command::new(geodns_tests::daemon::geodns_bin())
            .args(["stats", "--api", &boxes[0].api, "--pin-dir"])
            .arg(boxes[0].dir.join("no-pins"))
            .output()
            .expect("geodns stats");
        let said = String::from_utf8_lossy(&stats.stdout);
        assert!(
            stats.status.success(),
            "{}",
            String::from_utf8_lossy(&stats.stderr)
        );
        assert!(said.contains("fleet: etcd UNREACHABLE"), "{said}");
        // Fail-static: the drain stays; an admin change cannot be made now, and says so.
        let out = boxes[1].node(&["fra1", "auto"]);
        assert!(!out.status.success(), "admin change without etcd");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("etcd is unreachable"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stream.join().expect("stream")
    });
    println!("etcd down 10 s: {sent} queries, {failed} failed");
    assert!(sent > 1000, "a paced stream: {sent}");
    assert_eq!(failed, 0, "queries failed while etcd was down");
    for b in &boxes {
        let m = b.metrics();
        let unreachable: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("geodns_fleet_unreachable_seconds "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(
            unreachable >= 5.0,
            "box {}: {unreachable} s unreachable",
            b.name
        );
        let r = b
            .query(&fra1_query(), Duration::from_secs(1))
            .expect("answer");
        assert!(!answers_fra1(&r), "box {}: the drain held", b.name);
    }
    drop(boxes);
    fleet.etcd.restart();
    fleet.wait_joined();
    for b in &fleet.boxes {
        assert!(metric(&b.metrics(), "geodns_fleet_disconnects_total ") >= 1);
    }
    // Reconverged: changes flow again.
    let boxes = fleet.all();
    let back = admin_propagation(
        &fleet.boxes[2],
        &boxes,
        "fra1",
        "auto",
        answers_fra1,
        Duration::from_secs(5),
    );
    println!("after the outage, auto reached the boxes after {back:?}");
}

/// `nyc1`'s first address, which the pushed configs change.
fn nyc1_query() -> Query {
    // A US client: nyc1 (weight 10) is the best candidate.
    Query::new("www.cdn.example.net.", 1)
        .edns(1232)
        .ecs("198.51.100.0", 24)
}

fn answers(b: &FleetBox, q: &Query) -> Vec<IpAddr> {
    b.query(q, Duration::from_secs(2))
        .map(|r| r.addrs)
        .unwrap_or_default()
}

/// Waits until every box reports the same config revision and `ok` holds for it.
fn wait_revision(endpoint: &str, ok: impl Fn(Option<i64>) -> bool) -> Option<i64> {
    let mut seen = None;
    wait_for("every box on one revision", Duration::from_secs(10), || {
        let st = fleet_status(None, endpoint);
        let first = st.first().and_then(|s| s["config_revision"].as_i64());
        seen = first;
        st.len() == 3 && st.iter().all(|s| s["config_revision"].as_i64() == first) && ok(first)
    });
    seen
}

fn push(fleet: &Fleet, config: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["push", config.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    fleet_cmd(None, &fleet.etcd.endpoint(), &args)
}

#[test]
fn a_pushed_config_applies_on_every_box_or_changes_nothing_where_it_cannot() {
    let _serial = lock();
    let mut fleet = Fleet::start("fleet-push", |t| t);
    let (text1, rev1) = first_pushes_apply_everywhere(&fleet);
    let text2 = a_pinned_database_that_differs_keeps_the_old_config(&fleet, &text1, rev1);
    a_box_restarted_mid_rollout_comes_up_on_the_newest(&mut fleet, &text2);
    a_config_that_does_not_compile_on_one_box_changes_nothing_there(&fleet, &text1);
}

/// Revision 0 (the config every box has), then revision 1, refused above
/// --max-change, then pushed: every box answers from it. Returns its text and revision.
fn first_pushes_apply_everywhere(fleet: &Fleet) -> (String, i64) {
    let us = nyc1_query();
    let before = answers(&fleet.boxes[0], &us);
    assert!(!before.is_empty(), "a US answer");
    let endpoint = fleet.etcd.endpoint();

    // Revision 1: nyc1 gets another first address.
    let source = fleet.dir.path().join("source");
    let v1 = source.join("v1.toml");
    let text = std::fs::read_to_string(source.join("demo.toml")).expect("config");
    let text1 = text.replace(
        "ipv4 = [\"198.18.3.10\", \"198.18.3.11\"]",
        "ipv4 = [\"198.18.3.20\", \"198.18.3.11\"]",
    );
    assert_ne!(text, text1, "the edit applies");
    std::fs::write(&v1, &text1).expect("v1");
    // The fleet's first revision: the config every box has (nothing to apply).
    let out = push(fleet, &source.join("demo.toml"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rev0 = wait_revision(&endpoint, |r| r.is_some());
    // Every US client moves: above --max-change 0, refused, nothing stored.
    let out = push(fleet, &v1, &["--max-change", "0"]);
    assert_eq!(out.status.code(), Some(1), "refused");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("answer changes for"), "the diff: {said}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--max-change"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fleet_status(None, &endpoint)
        .iter()
        .all(|s| s["config_revision"].as_i64() == rev0));
    let out = push(fleet, &v1, &["--max-change", "100"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    wait_for("revision 1 on every box", Duration::from_secs(10), || {
        fleet.boxes.iter().all(|b| {
            answers(b, &us)
                .iter()
                .any(|a| a.to_string() == "198.18.3.20")
        })
    });
    println!(
        "revision 1 answered by every box after {:?}",
        started.elapsed()
    );
    let status = fleet_status(None, &endpoint);
    let rev1 = status[0]["config_revision"].as_i64().expect("a revision");
    for s in &status {
        assert_eq!(s["config_revision"].as_i64(), Some(rev1), "{s}");
        assert!(s["last_error"].is_null(), "{s}");
    }
    for b in &fleet.boxes {
        assert_eq!(
            std::fs::read_to_string(b.config()).expect("box config"),
            text1,
            "box {}: the pushed config is its file now",
            b.name
        );
    }

    (text1, rev1)
}

/// Revision 2 pins the country database; box c has another release of it: a and b
/// apply it, c keeps revision 1 and says why. Returns revision 2's text.
fn a_pinned_database_that_differs_keeps_the_old_config(
    fleet: &Fleet,
    text1: &str,
    rev1: i64,
) -> String {
    let us = nyc1_query();
    let endpoint = fleet.etcd.endpoint();
    let source = fleet.dir.path().join("source");
    let country = source.join("demo-country.mmdb");
    let digest = geodns::fleet::hex(&geodns::fleet::sha256(
        &std::fs::read(&country).expect("country db"),
    ));
    geodns_maps::mmdb::demo::country()
        .expect("demo country")
        .build_epoch(1_234_567)
        .write_to(&fleet.boxes[2].dir.join("demo-country.mmdb"))
        .expect("another release");
    let text2 = text1
        .replace("198.18.3.20", "198.18.3.30")
        .replace(
            "asn_field = \"autonomous_system_number\"\n",
            &format!(
                "asn_field = \"autonomous_system_number\"\n\n[geoip.sha256]\n\"demo-country.mmdb\" = \"{digest}\"\n"
            ),
        );
    assert!(text2.contains("[geoip.sha256]"), "the pin applies");
    let v2 = source.join("v2.toml");
    std::fs::write(&v2, &text2).expect("v2");
    let out = push(fleet, &v2, &["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "revision 2 on a and b, an error on c",
        Duration::from_secs(10),
        || {
            let st = fleet_status(None, &endpoint);
            st.iter()
                .filter(|s| s["config_revision"].as_i64() > Some(rev1))
                .count()
                == 2
                && st
                    .iter()
                    .any(|s| s["name"] == "c" && !s["last_error"].is_null())
        },
    );
    let status = fleet_status(None, &endpoint);
    let c = status.iter().find(|s| s["name"] == "c").expect("box c");
    assert_eq!(
        c["config_revision"].as_i64(),
        Some(rev1),
        "c keeps revision 1: {c}"
    );
    let error = c["last_error"].as_str().expect("error");
    assert!(
        error.contains("SHA-256") && error.contains(&digest),
        "{error}"
    );
    // c still answers from revision 1, a and b from revision 2.
    assert!(answers(&fleet.boxes[2], &us)
        .iter()
        .any(|a| a.to_string() == "198.18.3.20"));
    for b in &fleet.boxes[..2] {
        assert!(answers(b, &us)
            .iter()
            .any(|a| a.to_string() == "198.18.3.30"));
    }
    assert_eq!(
        std::fs::read_to_string(fleet.boxes[2].config()).expect("c's config"),
        text1,
        "c's file is untouched"
    );
    // The text status names the box and its error.
    let out = fleet_cmd(None, &endpoint, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("c "))
        .expect("c's line");
    assert!(line.contains("SHA-256"), "{text}");
    println!("{text}");

    text2
}

/// Box b is down while revision 3 is pushed; it comes up on revision 3.
fn a_box_restarted_mid_rollout_comes_up_on_the_newest(fleet: &mut Fleet, text2: &str) {
    let us = nyc1_query();
    let endpoint = fleet.etcd.endpoint();
    let source = fleet.dir.path().join("source");
    fleet.boxes[1].stop();
    let text3 = text2.replace("198.18.3.30", "198.18.3.40");
    let v3 = source.join("v3.toml");
    std::fs::write(&v3, &text3).expect("v3");
    let out = push(fleet, &v3, &["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.boxes[1].restart();
    // Its first answer is from revision 3: it started on it, not on its old file.
    assert!(
        answers(&fleet.boxes[1], &us)
            .iter()
            .any(|a| a.to_string() == "198.18.3.40"),
        "b's first answers"
    );
    wait_for("b to report revision 3", Duration::from_secs(10), || {
        let status = fleet_status(None, &endpoint);
        let rev = |name: &str| {
            status
                .iter()
                .find(|s| s["name"] == name)
                .and_then(|s| s["config_revision"].as_i64())
        };
        rev("b").is_some() && rev("a") == rev("b")
    });
    assert_eq!(
        std::fs::read_to_string(fleet.boxes[1].config()).expect("b's config"),
        text3
    );
}

/// Revision 4 reads a country database that only boxes a and b have: it does not
/// compile on c, which keeps what it answers and reports the error.
fn a_config_that_does_not_compile_on_one_box_changes_nothing_there(fleet: &Fleet, text1: &str) {
    let us = nyc1_query();
    let endpoint = fleet.etcd.endpoint();
    let source = fleet.dir.path().join("source");
    for dir in [&source, &fleet.boxes[0].dir, &fleet.boxes[1].dir] {
        std::fs::copy(
            source.join("demo-country.mmdb"),
            dir.join("demo-country-4.mmdb"),
        )
        .expect("the new database");
    }
    let c_before = answers(&fleet.boxes[2], &us);
    let c_revision = |st: &[serde_json::Value]| {
        st.iter()
            .find(|s| s["name"] == "c")
            .and_then(|s| s["config_revision"].as_i64())
    };
    let c_rev = c_revision(&fleet_status(None, &endpoint));
    let text4 = text1
        .replace("198.18.3.20", "198.18.3.50")
        .replace("\"demo-country.mmdb\"", "\"demo-country-4.mmdb\"");
    assert!(text4.contains("demo-country-4.mmdb"), "the edit applies");
    let v4 = source.join("v4.toml");
    std::fs::write(&v4, &text4).expect("v4");
    let out = push(fleet, &v4, &["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("revision 4 on a and b", Duration::from_secs(10), || {
        fleet.boxes[..2].iter().all(|b| {
            answers(b, &us)
                .iter()
                .any(|a| a.to_string() == "198.18.3.50")
        })
    });
    wait_for("c's error", Duration::from_secs(10), || {
        fleet_status(None, &endpoint).iter().any(|s| {
            s["name"] == "c"
                && s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("demo-country-4.mmdb"))
        })
    });
    assert_eq!(
        answers(&fleet.boxes[2], &us),
        c_before,
        "c answers as before"
    );
    assert_eq!(
        c_revision(&fleet_status(None, &endpoint)),
        c_rev,
        "c's revision"
    );
}

/// Kills a child process on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The XDP program in a namespace follows the fleet: etcd and two boxes run in the
/// server namespace (one with XDP on the veth, one `--no-xdp`); a drain through the
/// second box's admin API changes what the kernel answers the client namespace.
#[test]
fn a_drain_through_another_box_reaches_the_kernel_answers() {
    if !require_bpf() {
        return;
    }
    let _serial = lock();
    let dir = TempDir::new("fleet-xdp");
    let pair = NetnsPair::new().expect("netns pair");
    let config = demo_without_checks(dir.path());
    let etcd = Etcd::start(dir.path(), Some(&pair.server_ns));
    let pin_dir = format!("/sys/fs/bpf/geodns-fleet-{}", std::process::id());
    let token_x = dir.path().join("token-x").display().to_string();
    let xdp = Daemon::start(
        &pair,
        &config,
        "127.0.0.1:19153",
        &pin_dir,
        &[
            "--admin-token",
            &token_x,
            "--fleet",
            &etcd.endpoint(),
            "--box",
            "x",
            "--fleet-lease",
            "2s",
        ],
        Duration::from_secs(30),
    );
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("attach xdp_pass on the client veth");
    // The second box: userspace only, in the same namespace.
    let token_y = dir.path().join("token-y");
    let y = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", pair.server_ns))
        .arg(geodns_tests::daemon::geodns_bin())
        .args(["run", "--no-xdp", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:5353", "--metrics", "127.0.0.1:19154"])
        .arg("--admin-token")
        .arg(&token_y)
        .args([
            "--fleet",
            &etcd.endpoint(),
            "--box",
            "y",
            "--fleet-lease",
            "2s",
        ])
        .spawn()
        .expect("start box y");
    let _y = Kill(y);
    wait_for("both boxes in the fleet", Duration::from_secs(20), || {
        xdp.scrape(&pair)
            .is_some_and(|m| metric(&m, "geodns_fleet_boxes ") == 2)
    });
    let q = fra1_query();
    let fra1: IpAddr = FRA1.parse().expect("ip");
    assert_eq!(answer_in(&pair, &q), vec![fra1]);
    let answered = |m: &str| metric(m, "geodns_xdp_packets_total{outcome=\"answered_v4\"}");
    let before = answered(&xdp.scrape(&pair).expect("metrics"));

    // Drain through y; measured at the client, through the kernel of box x.
    let token = token_y.display().to_string();
    let started = Instant::now();
    let (ok, said) = node_cmd(
        Some(&pair.server_ns),
        "127.0.0.1:19154",
        &["fra1", "drain", "--admin-token", &token],
    );
    assert!(ok, "{said}");
    wait_for(
        "the kernel to stop answering fra1",
        Duration::from_secs(1),
        || !answer_in(&pair, &q).contains(&fra1),
    );
    println!(
        "drain via box y reached box x's kernel answers after {:?}",
        started.elapsed()
    );
    // Undrained, the kernel answers fra1 itself again (counted as answered by XDP).
    let (ok, said) = node_cmd(
        Some(&pair.server_ns),
        "127.0.0.1:19154",
        &["fra1", "auto", "--admin-token", &token],
    );
    assert!(ok, "{said}");
    wait_for(
        "fra1 back in the kernel answers",
        Duration::from_secs(1),
        || answer_in(&pair, &q) == vec![fra1],
    );
    let after = answered(&xdp.scrape(&pair).expect("metrics"));
    assert!(after > before, "the kernel answered ({before} -> {after})");
    let status = fleet_status(Some(&pair.server_ns), &etcd.endpoint());
    let x = status.iter().find(|s| s["name"] == "x").expect("box x");
    assert!(x["generation"].is_u64(), "the kernel's generation: {x}");
    assert_eq!(x["states"]["fra1"], "up", "{x}");
}
