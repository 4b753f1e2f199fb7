//! Restart, upgrade and crash under load: a client namespace sends a paced stream of
//! at least 20,000 queries a second (UDP `A`/`AAAA` with ECS, which the XDP program
//! answers; SOA and NXDOMAIN over UDP and `A` over TCP, which the userspace server
//! answers) while `geodns run` is replaced by a new one five times (handover), once by
//! a copy of the binary (an upgrade), and twice killed with SIGKILL and started again.
//! Successive daemons serve two different tables, so every answer must come from the
//! table of a daemon alive around the query. Lost: XDP-answered, none at all;
//! userspace-answered, none in a handover, and in a crash at most what the restart gap
//! can hold (reported).
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use geodns_maps::mmdb::{demo, Value};
use geodns_tests::{
    daemon::{geodns_bin, metric, wait_for, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    require_bpf,
    stream::{self, Pace},
    NetnsPair, Side,
};

/// UDP queries a second, in bursts every millisecond.
const RATE: u64 = 20_000;
/// TCP queries a second (a connection each).
const TCP_RATE: u64 = 100;
/// A query without a reply after this is lost.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds of the stream.
const MAX_TIME: Duration = Duration::from_mins(3);
const METRICS: &str = "127.0.0.1:19191";

/// The two tables: the demo database puts 192.0.2.0/24 in Germany (fra1); the other in
/// the United States (nyc1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Germany,
    Us,
}

impl Table {
    fn answer(self, qtype: u16) -> Vec<IpAddr> {
        let addrs: &[&str] = match (self, qtype) {
            (Self::Germany, 1) => &["198.18.1.10"],
            (Self::Germany, _) => &["2001:2:0:1::10"],
            (Self::Us, 1) => &["198.18.3.10", "198.18.3.11"],
            (Self::Us, _) => &["2001:2:0:3::10"],
        };
        addrs.iter().map(|a| a.parse().expect("address")).collect()
    }

    /// A config directory serving this table.
    fn config(self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("config dir");
        let config = demo_without_checks(dir);
        if self == Self::Us {
            let mut w = demo::country().expect("the demo country database");
            let us = Value::map([
                ("continent", Value::map([("code", Value::str("NA"))])),
                ("country", Value::map([("iso_code", Value::str("US"))])),
            ]);
            for half in ["192.0.2.0", "192.0.2.128"] {
                w.insert(half.parse().expect("ip"), 25, &us)
                    .expect("insert");
            }
            std::fs::write(dir.join("demo-country.mmdb"), w.to_bytes().expect("encode"))
                .expect("write the database");
        }
        config
    }
}

/// What a query asks and who answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `A`/`AAAA` of a geo name with ECS: the kernel answers.
    Geo(u16),
    /// `A` of a CNAME to a geo name (the answer depends on the client, so the kernel
    /// passes it): userspace answers.
    Cname,
    /// `ANY` (a meta type the kernel passes) of a name that does not exist: userspace
    /// answers NXDOMAIN. (The kernel answers the zone's static replies, SOA and plain
    /// NXDOMAIN among them, itself.)
    NxDomain,
    /// `A` with ECS over TCP: userspace.
    Tcp,
}

impl Kind {
    fn xdp(self) -> bool {
        matches!(self, Self::Geo(_))
    }

    fn query(self) -> Query {
        match self {
            Self::Geo(qtype) => Query::new("www.cdn.example.net.", qtype).ecs("192.0.2.0", 24),
            Self::Cname => Query::new("video.cdn.example.net.", 1),
            Self::NxDomain => Query::new("no-such-name.cdn.example.net.", 255),
            Self::Tcp => Query::new("www.cdn.example.net.", 1).ecs("192.0.2.0", 24),
        }
    }
}

/// The UDP queries of the stream, by `stream::Sample::kind`.
const UDP_KINDS: [Kind; 4] = [Kind::Geo(1), Kind::Geo(28), Kind::Cname, Kind::NxDomain];

/// Which of [`UDP_KINDS`] query `i` is: 90% geo (A and AAAA), 5% CNAME, 5% NXDOMAIN.
fn pick(i: usize) -> usize {
    match i % 20 {
        0..=17 => i % 2,
        18 => 2,
        _ => 3,
    }
}

/// One query of the stream.
#[derive(Clone, Debug)]
struct Sample {
    kind: Kind,
    sent: Instant,
    /// When the reply came, its RCODE and its A/AAAA addresses.
    reply: Option<(Instant, u8, Vec<IpAddr>)>,
}

impl Sample {
    fn from(kind: Kind, s: stream::Sample) -> Self {
        Self {
            kind,
            sent: s.sent,
            reply: s.reply,
        }
    }
}

/// A daemon of the scenario: the table it serves, from its start until the next one
/// is known to be in place.
struct Era {
    table: Table,
    from: Instant,
    until: Option<Instant>,
}

/// How a daemon gave way to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Handover,
    Upgrade,
    Kill,
}

/// Removes what a failed run leaves: the pins (a killed daemon's link keeps its
/// program attached until its namespace goes) and the handover socket.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
        let _ = std::fs::remove_file(geodns::daemon::handover::socket_path(&self.0));
    }
}

/// `geodns stats` in the server namespace.
fn stats(pair: &NetnsPair, pin: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", pair.server_ns))
        .arg(geodns_bin())
        .args(["stats", "--pin-dir", pin, "--api", METRICS])
        .output()
        .expect("run geodns stats");
    assert!(out.status.success(), "geodns stats: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of a `geodns stats` counter line (`name   value`).
fn stats_counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{name} in geodns stats:\n{text}"))
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, in order")]
fn restarts_upgrades_and_crashes_lose_no_kernel_answer() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("handover");
    let configs = [
        Table::Germany.config(&dir.path().join("de")),
        Table::Us.config(&dir.path().join("us")),
    ];
    let tables = [Table::Germany, Table::Us];
    let pin = format!("/sys/fs/bpf/geodns-handover-{}", std::process::id());
    let _pins = PinGuard(PathBuf::from(&pin));
    // The upgrade: another file, another build as far as the system can tell.
    let upgraded = dir.path().join("geodns-upgraded");
    std::fs::copy(geodns_bin(), &upgraded).expect("copy the binary");
    let version = std::process::Command::new(&upgraded)
        .arg("--version")
        .output()
        .expect("geodns --version");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.starts_with("geodns ") && version.contains("commit"),
        "geodns --version: {version}"
    );
    let extra = ["--watch-interval", "3600s"];
    let mut current = Daemon::start(
        &pair,
        &configs[0],
        METRICS,
        &pin,
        &extra,
        Duration::from_mins(1),
    );
    // /metrics answers from before the attach, the last step of a start.
    wait_for(
        "the first daemon's new link",
        Duration::from_mins(1),
        || {
            current
                .scrape(&pair)
                .is_some_and(|m| metric(&m, "geodns_xdp_attach_info{how=\"attached\"}") == 1)
        },
    );
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("xdp_pass on the client");
    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    let stop = AtomicBool::new(false);
    let mut eras = vec![Era {
        table: tables[0],
        from: Instant::now(),
        until: None,
    }];
    // (change, began, done): the window in which both daemons or none may answer.
    let mut changes: Vec<(Change, Instant, Instant)> = Vec::new();
    let (udp, tcp, current) = std::thread::scope(|s| {
        let udp = s.spawn(|| {
            let templates: Vec<Vec<u8>> = UDP_KINDS.iter().map(|k| k.query().build()).collect();
            let pace = Pace {
                rate: RATE,
                timeout: TIMEOUT,
                max_time: MAX_TIME,
            };
            pair.in_ns(Side::Client, || {
                stream::udp(server, &templates, pick, pace, &stop)
            })
            .expect("client namespace")
            .into_iter()
            .map(|s| Sample::from(UDP_KINDS[s.kind], s))
            .collect::<Vec<_>>()
        });
        let tcp = s.spawn(|| {
            let pace = Pace {
                rate: TCP_RATE,
                timeout: TIMEOUT,
                max_time: MAX_TIME,
            };
            let query = Kind::Tcp.query().build();
            pair.in_ns(Side::Client, || stream::tcp(server, &query, pace, &stop))
                .expect("client namespace")
                .into_iter()
                .map(|s| Sample::from(Kind::Tcp, s))
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_secs(1));
        let plan = [
            Change::Handover,
            Change::Handover,
            Change::Upgrade,
            Change::Handover,
            Change::Kill,
            Change::Handover,
            Change::Handover,
            Change::Kill,
        ];
        for (n, change) in plan.into_iter().enumerate() {
            let table = tables[(n + 1) % 2];
            let config = &configs[(n + 1) % 2];
            let bin = if change == Change::Upgrade {
                upgraded.clone()
            } else {
                geodns_bin()
            };
            let began = Instant::now();
            let mut next = match change {
                Change::Handover | Change::Upgrade => {
                    let mut next = Daemon::spawn(&bin, &pair, config, METRICS, &pin, &extra);
                    // Done when the old daemon has exited, having handed over.
                    wait_for(
                        &format!("change {n}: the old daemon to exit"),
                        Duration::from_mins(1),
                        || {
                            assert!(!next.exited(), "change {n}: the new daemon died");
                            current.exited()
                        },
                    );
                    next
                }
                Change::Kill => {
                    current.kill();
                    if n == plan.len() - 1 {
                        // Long enough for the heartbeat to go stale: the kernel answers
                        // alone, and says what it passed to nobody.
                        std::thread::sleep(Duration::from_secs(4));
                        let text = stats(&pair, &pin);
                        assert!(text.contains("DEAD"), "geodns stats:\n{text}");
                        assert!(
                            stats_counter(&text, "pass_no_daemon") > 0,
                            "queries passed while no daemon lived:\n{text}"
                        );
                    }
                    Daemon::spawn(&bin, &pair, config, METRICS, &pin, &extra)
                }
            };
            // In place: the new daemon answers /metrics (the old one is gone) and has
            // adopted the link.
            wait_for(
                &format!("change {n}: the new daemon in place"),
                Duration::from_mins(1),
                || {
                    assert!(!next.exited(), "change {n}: the new daemon died");
                    next.scrape(&pair)
                        .is_some_and(|m| metric(&m, "geodns_xdp_attach_info{how=\"updated\"}") == 1)
                },
            );
            let done = Instant::now();
            eprintln!(
                "change {n} ({change:?}) to {table:?}: {:.2} s",
                done.duration_since(began).as_secs_f64()
            );
            if let Some(last) = eras.last_mut() {
                last.until = Some(done);
            }
            eras.push(Era {
                table,
                from: began,
                until: None,
            });
            changes.push((change, began, done));
            current = std::mem::replace(&mut next, current);
            drop(next);
            std::thread::sleep(Duration::from_secs(1));
        }
        let m = current.scrape(&pair).expect("metrics");
        assert!(
            metric(&m, "geodns_xdp_previous_pass_no_daemon") > 0,
            "the adopted program's count of unanswered queries:\n{m}"
        );
        stop.store(true, Ordering::Relaxed);
        (
            udp.join().expect("UDP stream"),
            tcp.join().expect("TCP stream"),
            current,
        )
    });

    // The stream: rate and length.
    let first = udp.first().expect("queries").sent;
    let span = udp.last().expect("queries").sent.duration_since(first);
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = udp.len() as f64 / span.as_secs_f64();
    eprintln!(
        "{} UDP queries in {:.1} s ({rate:.0}/s), {} over TCP",
        udp.len(),
        span.as_secs_f64(),
        tcp.len()
    );
    assert!(span >= Duration::from_secs(10), "at least 10 s: {span:?}");
    assert!(
        rate >= 19_500.0,
        "at least 20,000 queries a second: {rate:.0}"
    );

    // Where a query falls: in a crash's gap (from the kill to the new daemon in place,
    // plus the reply timeout), or not.
    let in_crash = |s: &Sample| {
        changes.iter().any(|(c, began, done)| {
            *c == Change::Kill && s.sent + TIMEOUT >= *began && s.sent <= *done
        })
    };
    let all: Vec<&Sample> = udp.iter().chain(tcp.iter()).collect();
    let lost_xdp: Vec<&&Sample> = all
        .iter()
        .filter(|s| s.kind.xdp() && s.reply.is_none())
        .collect();
    let lost_user: Vec<&&Sample> = all
        .iter()
        .filter(|s| !s.kind.xdp() && s.reply.is_none())
        .collect();
    let lost_user_crash = lost_user.iter().filter(|s| in_crash(s)).count();
    let lost_user_else: Vec<_> = lost_user.iter().filter(|s| !in_crash(s)).collect();
    eprintln!(
        "lost: XDP-answered {}, userspace-answered {} in handovers and upgrades, {} in the crashes (the restart gap)",
        lost_xdp.len(),
        lost_user_else.len(),
        lost_user_crash
    );
    for (c, began, done) in &changes {
        eprintln!(
            "  {c:?}: {:.2} s",
            done.duration_since(*began).as_secs_f64()
        );
    }
    if !lost_xdp.is_empty() {
        let mut buckets = std::collections::BTreeMap::new();
        for s in &lost_xdp {
            *buckets
                .entry(s.sent.duration_since(first).as_millis() / 500)
                .or_insert(0usize) += 1;
        }
        eprintln!("XDP-answered lost by half second: {buckets:?}");
    }
    assert!(
        lost_xdp.is_empty(),
        "XDP-answered queries lost: {}, first at +{:?}: {:?}",
        lost_xdp.len(),
        lost_xdp.first().map(|s| s.sent.duration_since(first)),
        lost_xdp.first()
    );
    assert!(
        lost_user_else.is_empty(),
        "userspace-answered queries lost outside a crash: {}, first at +{:?}: {:?}",
        lost_user_else.len(),
        lost_user_else.first().map(|s| s.sent.duration_since(first)),
        lost_user_else.first()
    );
    // A crash loses at most what was sent to userspace from the kill until the new
    // daemon was in place (plus the queries still waiting for their reply).
    let crash_window: f64 = changes
        .iter()
        .filter(|(c, ..)| *c == Change::Kill)
        .map(|(_, began, done)| done.duration_since(*began).as_secs_f64() + TIMEOUT.as_secs_f64())
        .sum();
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a bound"
    )]
    let bound = (crash_window * (RATE as f64 / 10.0 + TCP_RATE as f64)) as usize;
    assert!(
        lost_user_crash <= bound,
        "userspace queries lost in the crashes: {lost_user_crash} > {bound}"
    );
    assert!(
        lost_user_crash > 0,
        "a crash leaves userspace unanswered until the restart: the test must see it"
    );

    // Every answer: the right RCODE, and a geo answer from a table in force around it.
    let mut wrong = Vec::new();
    for s in &all {
        let Some((at, rcode, addrs)) = &s.reply else {
            continue;
        };
        let ok = match s.kind {
            Kind::Cname => *rcode == 0,
            Kind::NxDomain => *rcode == 3,
            Kind::Geo(_) | Kind::Tcp => {
                let qtype = if let Kind::Geo(t) = s.kind { t } else { 1 };
                *rcode == 0
                    && eras.iter().any(|e| {
                        e.from <= *at
                            && e.until.is_none_or(|u| u >= s.sent)
                            && *addrs == e.table.answer(qtype)
                    })
            }
        };
        if !ok {
            wrong.push((s.kind, s.sent.duration_since(first), *rcode, addrs.clone()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers, first: {:?}",
        wrong.len(),
        wrong.first()
    );
    // Each table really served in its era (the test cannot pass on one table).
    for e in &eras {
        assert!(
            udp.iter().any(|s| s.sent >= e.from
                && e.until.is_none_or(|u| s.sent < u)
                && s.reply.as_ref().is_some_and(|(_, _, a)| {
                    let qtype = if let Kind::Geo(t) = s.kind { t } else { 0 };
                    qtype != 0 && *a == e.table.answer(qtype)
                })),
            "{:?} served in its era",
            e.table
        );
    }

    // A clean stop detaches and unpins.
    drop(current);
    assert!(
        !Path::new(&pin).exists(),
        "SIGTERM removes the pins and the pin directory"
    );
    let link = pair
        .exec(Side::Server, &["ip", "link", "show", &pair.server_if])
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    assert!(!link.contains("xdp"), "detached: {link}");
}

/// The kernel's counter `name` of the program pinned under `pin`, through `geodns stats`.
fn pinned_counter(pair: &NetnsPair, pin: &str, name: &str) -> u64 {
    stats_counter(&stats(pair, pin), name)
}

/// `--keep-on-exit`: SIGTERM leaves the program answering from its pinned maps, with
/// nobody behind it (`geodns stats` says so). A pin whose contract stamp is another
/// build's is not updated in place but detached and attached anew; a plain SIGTERM
/// then detaches and unpins.
#[test]
fn keep_on_exit_then_a_stale_pin_is_reattached() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("handover-stale");
    let config = Table::Germany.config(dir.path());
    let pin = format!("/sys/fs/bpf/geodns-stale-{}", std::process::id());
    let _pins = PinGuard(PathBuf::from(&pin));
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("xdp_pass on the client");
    let metrics = "127.0.0.1:19192";
    let attached = |d: &Daemon, how: &str| {
        let want = format!("geodns_xdp_attach_info{{how=\"{how}\"}}");
        wait_for(&format!("attach {how}"), Duration::from_mins(1), || {
            d.scrape(&pair).is_some_and(|m| metric(&m, &want) == 1)
        });
    };
    let geo = Kind::Geo(1).query();
    let daemon = Daemon::start(
        &pair,
        &config,
        metrics,
        &pin,
        &["--keep-on-exit"],
        Duration::from_mins(1),
    );
    attached(&daemon, "attached");
    assert_eq!(
        geodns_tests::client::answer_in(&pair, &geo),
        Table::Germany.answer(1)
    );
    // SIGTERM and wait.
    drop(daemon);
    assert!(
        Path::new(&pin).join("link").exists(),
        "--keep-on-exit leaves the link pinned"
    );
    let before = pinned_counter(&pair, &pin, "answered_v4");
    assert_eq!(
        geodns_tests::client::answer_in(&pair, &geo),
        Table::Germany.answer(1),
        "the kernel answers without a daemon"
    );
    assert_eq!(
        pinned_counter(&pair, &pin, "answered_v4"),
        before + 1,
        "and it was the kernel"
    );

    // Another build's program: its stamp differs.
    {
        use aya::maps::{Array, Map, MapData};
        let data = MapData::from_pin(Path::new(&pin).join("DAEMON")).expect("the DAEMON pin");
        let mut daemon_map: Array<MapData, geodns_common::DaemonState> =
            Array::try_from(Map::Array(data)).expect("DAEMON");
        let mut state = daemon_map.get(&0, 0).expect("read DAEMON");
        state.stamp ^= 1;
        daemon_map.set(0, state, 0).expect("write DAEMON");
    }
    let daemon = Daemon::start(&pair, &config, metrics, &pin, &[], Duration::from_mins(1));
    attached(&daemon, "reattached");
    assert_eq!(
        geodns_tests::client::answer_in(&pair, &geo),
        Table::Germany.answer(1),
        "answered after the re-attach"
    );
    drop(daemon);
    assert!(!Path::new(&pin).exists(), "a plain SIGTERM unpins");
    let link = pair
        .exec(Side::Server, &["ip", "link", "show", &pair.server_if])
        .expect("ip link");
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    assert!(!link.contains("xdp"), "detached: {link}");
}

/// Node states set at run time (`geodns node NAME drain`, no state file) survive a
/// handover: the old daemon sends them with its sockets.
#[test]
fn admin_states_carry_over_a_handover() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("handover-states");
    let config = Table::Germany.config(dir.path());
    let pin = format!("/sys/fs/bpf/geodns-states-{}", std::process::id());
    let _pins = PinGuard(PathBuf::from(&pin));
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("xdp_pass on the client");
    let metrics = "127.0.0.1:19195";
    let token = dir.path().join("token").display().to_string();
    let extra = ["--admin-token", token.as_str()];
    let node = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--admin-token", token.as_str()]);
        geodns_tests::daemon::node_cmd(Some(&pair.server_ns), metrics, &all)
    };
    let mut old = Daemon::start(
        &pair,
        &config,
        metrics,
        &pin,
        &extra,
        Duration::from_mins(1),
    );
    let geo = Kind::Geo(1).query();
    wait_for("the first daemon's answer", Duration::from_secs(30), || {
        geodns_tests::client::answer_in(&pair, &geo) == Table::Germany.answer(1)
    });
    let (ok, out) = node(&["fra1", "drain"]);
    assert!(ok, "geodns node fra1 drain: {out}");
    wait_for(
        "fra1 drained in the answers",
        Duration::from_secs(10),
        || geodns_tests::client::answer_in(&pair, &geo) != Table::Germany.answer(1),
    );
    let drained = geodns_tests::client::answer_in(&pair, &geo);
    let mut new = Daemon::spawn(&geodns_bin(), &pair, &config, metrics, &pin, &extra);
    wait_for(
        "the old daemon to hand over and exit",
        Duration::from_mins(1),
        || {
            assert!(!new.exited(), "the new daemon died");
            old.exited()
        },
    );
    let (ok, out) = node(&[]);
    assert!(ok, "geodns node: {out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("fra1"))
        .unwrap_or_else(|| panic!("fra1 in {out}"));
    assert!(
        line.to_lowercase().contains("drain"),
        "fra1 still drained after the handover: {out}"
    );
    assert_eq!(
        geodns_tests::client::answer_in(&pair, &geo),
        drained,
        "the new daemon answers with the drained state from its first install"
    );
    drop(new);
}
