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
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use geodns_maps::mmdb::{demo, Value};
use geodns_tests::{
    client::{exchange, Transport},
    daemon::{geodns_bin, metric, wait_for, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    require_bpf, NetnsPair, Side,
};

/// UDP queries a second, in bursts every millisecond.
const RATE: u64 = 20_000;
/// TCP queries a second (a connection each).
const TCP_RATE: u64 = 100;
/// A query without a reply after this is lost.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds of the stream.
const MAX_TIME: Duration = Duration::from_mins(3);
const SOCKETS: usize = 8;
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
    /// SOA of the apex: the kernel passes, userspace answers.
    Soa,
    /// A name that does not exist: userspace answers NXDOMAIN.
    NxDomain,
    /// `A` with ECS over TCP: userspace.
    Tcp,
}

impl Kind {
    fn of(i: usize) -> Self {
        match i % 20 {
            0..=17 => Self::Geo(if i.is_multiple_of(2) { 1 } else { 28 }),
            18 => Self::Soa,
            _ => Self::NxDomain,
        }
    }

    fn xdp(self) -> bool {
        matches!(self, Self::Geo(_))
    }

    fn query(self) -> Query {
        match self {
            Self::Geo(qtype) => Query::new("www.cdn.example.net.", qtype).ecs("192.0.2.0", 24),
            Self::Soa => Query::new("cdn.example.net.", 6),
            Self::NxDomain => Query::new("no-such-name.cdn.example.net.", 1),
            Self::Tcp => Query::new("www.cdn.example.net.", 1).ecs("192.0.2.0", 24),
        }
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

/// RCODE and A/AAAA addresses of a reply (a small parser: the client must keep up with
/// 20,000 replies a second in a debug build).
fn read_reply(b: &[u8]) -> Option<(u16, u8, Vec<IpAddr>)> {
    let id = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let rcode = b.get(3)? & 0x0f;
    let an = u16::from_be_bytes([*b.get(6)?, *b.get(7)?]);
    let mut at = 12;
    // The question name, uncompressed as sent.
    while *b.get(at)? != 0 {
        at += usize::from(*b.get(at)?) + 1;
    }
    at += 5;
    let mut addrs = Vec::new();
    for _ in 0..an {
        // Owner: a pointer or a name.
        if b.get(at)? & 0xc0 == 0xc0 {
            at += 2;
        } else {
            while *b.get(at)? != 0 {
                at += usize::from(*b.get(at)?) + 1;
            }
            at += 1;
        }
        let rtype = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*b.get(at + 8)?, *b.get(at + 9)?]));
        let data = b.get(at + 10..at + 10 + len)?;
        match (rtype, len) {
            (1, 4) => addrs.push(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
            (28, 16) => addrs.push(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
            _ => {}
        }
        at += 10 + len;
    }
    Some((id, rcode, addrs))
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

/// A reply as a receiver saw it: (query index, arrival, RCODE, addresses).
type Received = (usize, Instant, u8, Vec<IpAddr>);

/// The UDP stream: `SOCKETS` sockets, query `i` on socket `i % SOCKETS` with id
/// `(i / SOCKETS) % 65536`; a receiver per socket matches a reply to the latest query
/// of its id.
#[expect(clippy::too_many_lines, reason = "senders and receivers of one stream")]
fn udp_stream(server: SocketAddr, stop: &AtomicBool) -> Vec<Sample> {
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("0.0.0.0:0").expect("client socket");
            // Room for the replies of a second: the receivers of a debug build may
            // stall while a daemon starts on the same CPUs.
            let bytes: libc::c_int = 16 << 20;
            // SAFETY: setsockopt on our own socket with an int of its size.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&raw const bytes).cast(),
                    4,
                );
            }
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            s
        })
        .collect();
    let templates: HashMap<&str, Vec<u8>> = [
        ("a", Kind::Geo(1).query().build()),
        ("aaaa", Kind::Geo(28).query().build()),
        ("soa", Kind::Soa.query().build()),
        ("nx", Kind::NxDomain.query().build()),
    ]
    .into_iter()
    .collect();
    let sent = AtomicUsize::new(0);
    let samples: Mutex<Vec<Sample>> = Mutex::new(Vec::with_capacity(4_000_000));
    let replies: Vec<Mutex<Vec<Received>>> = (0..SOCKETS).map(|_| Mutex::new(Vec::new())).collect();
    let sending = AtomicBool::new(true);
    std::thread::scope(|s| {
        for (k, sock) in sockets.iter().enumerate() {
            let (sent, replies, sending) = (&sent, &replies[k], &sending);
            s.spawn(move || {
                let mut buf = [0u8; 2048];
                let mut quiet_since: Option<Instant> = None;
                loop {
                    match sock.recv_from(&mut buf) {
                        Ok((n, _)) => {
                            let now = Instant::now();
                            quiet_since = None;
                            let Some((id, rcode, addrs)) = read_reply(&buf[..n]) else {
                                continue;
                            };
                            // The latest query of this socket with this id.
                            let total = sent.load(Ordering::Acquire);
                            let mut i = k + SOCKETS * usize::from(id);
                            while i + SOCKETS * 65_536 < total {
                                i += SOCKETS * 65_536;
                            }
                            replies.lock().expect("lock").push((i, now, rcode, addrs));
                        }
                        Err(_) => {
                            if !sending.load(Ordering::Relaxed) {
                                let since = *quiet_since.get_or_insert_with(Instant::now);
                                if since.elapsed() > TIMEOUT {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
        // The sender: bursts every millisecond to keep RATE on average.
        let started = Instant::now();
        let mut out = Vec::new();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_TIME {
            let due = usize::try_from(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX) * RATE / 1_000_000,
            )
            .unwrap_or(usize::MAX);
            while i < due {
                let kind = Kind::of(i);
                let name = match kind {
                    Kind::Geo(1) => "a",
                    Kind::Geo(_) => "aaaa",
                    Kind::Soa => "soa",
                    _ => "nx",
                };
                let mut q = templates[name].clone();
                let id = u16::try_from((i / SOCKETS) % 65_536).expect("id");
                q[..2].copy_from_slice(&id.to_be_bytes());
                out.push(Sample {
                    kind,
                    sent: Instant::now(),
                    reply: None,
                });
                sent.store(i + 1, Ordering::Release);
                if let Err(e) = sockets[i % SOCKETS].send_to(&q, server) {
                    // A full send buffer: the query is lost on our side, not the
                    // server's; it must not count against the server.
                    panic!("sending query {i}: {e}");
                }
                i += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        sending.store(false, Ordering::Relaxed);
        *samples.lock().expect("lock") = out;
    });
    let mut samples = samples.into_inner().expect("samples");
    for r in replies {
        for (i, at, rcode, addrs) in r.into_inner().expect("replies") {
            if let Some(s) = samples.get_mut(i) {
                if at.duration_since(s.sent) <= TIMEOUT {
                    s.reply = Some((at, rcode, addrs));
                }
            }
        }
    }
    samples
}

/// One `A` query per connection, `TCP_RATE` a second.
fn tcp_stream(server: SocketAddr, stop: &AtomicBool) -> Vec<Sample> {
    let started = Instant::now();
    let mut out = Vec::new();
    let pace = Duration::from_micros(1_000_000 / TCP_RATE);
    let mut next = Instant::now();
    let q = Kind::Tcp.query();
    for i in 0u32.. {
        if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_TIME {
            break;
        }
        let sent = Instant::now();
        let bytes = q.clone().id(u16::try_from(i % 65_536).expect("id")).build();
        let reply = exchange(Transport::Tcp, server, &bytes, TIMEOUT)
            .ok()
            .flatten()
            .and_then(|b| read_reply(&b))
            .map(|(_, rcode, addrs)| (Instant::now(), rcode, addrs));
        out.push(Sample {
            kind: Kind::Tcp,
            sent,
            reply,
        });
        next += pace;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    out
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
            pair.in_ns(Side::Client, || udp_stream(server, &stop))
                .expect("client namespace")
        });
        let tcp = s.spawn(|| {
            pair.in_ns(Side::Client, || tcp_stream(server, &stop))
                .expect("client namespace")
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
            Kind::Soa => *rcode == 0,
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
