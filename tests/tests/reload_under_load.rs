//! Reload under load: a client in its namespace sends a steady, bounded stream of
//! queries to `geodns run` (UDP `A`/`AAAA`, which the XDP program answers, and `A` over
//! TCP, which the userspace server answers) while the country database is replaced
//! five times: two of the new files are corrupt. Every query must be answered (zero
//! timeouts), every answer must come from the table before or after the replacement in
//! progress, once `/metrics` counts a reload only the new table may answer, and a
//! corrupt file changes nothing.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use geodns_maps::mmdb::{demo, Value};
use geodns_tests::{
    client::{exchange, parse_reply, Transport},
    daemon::{metric, wait_for, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    require_bpf, NetnsPair, Side,
};

/// One query every `PACE`; at most `MAX_QUERIES` or `MAX_TIME`, whichever comes first.
const PACE: Duration = Duration::from_millis(2);
const MAX_QUERIES: usize = 40_000;
const MAX_TIME: Duration = Duration::from_mins(1);
const TIMEOUT: Duration = Duration::from_secs(1);

/// The two tables: the demo database puts 192.0.2.0/24 in Germany (fra1); the other in
/// the United States (nyc1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Germany,
    Us,
}

impl Table {
    /// The addresses of the node the table picks (nyc1 has two IPv4 addresses).
    fn answer(self, qtype: u16) -> Vec<IpAddr> {
        let addrs: &[&str] = match (self, qtype) {
            (Self::Germany, 1) => &["198.18.1.10"],
            (Self::Germany, _) => &["2001:2:0:1::10"],
            (Self::Us, 1) => &["198.18.3.10", "198.18.3.11"],
            (Self::Us, _) => &["2001:2:0:3::10"],
        };
        addrs.iter().map(|a| a.parse().expect("address")).collect()
    }

    fn database(self) -> Vec<u8> {
        let mut w = demo::country().expect("the demo country database");
        if self == Self::Us {
            let us = Value::map([
                ("continent", Value::map([("code", Value::str("NA"))])),
                ("country", Value::map([("iso_code", Value::str("US"))])),
            ]);
            for half in ["192.0.2.0", "192.0.2.128"] {
                w.insert(half.parse().expect("ip"), 25, &us)
                    .expect("insert");
            }
        }
        w.to_bytes().expect("encode")
    }
}

/// Replaces `path` at once (a rename), as an operator's deploy would.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename over the database");
}

struct Sample {
    sent: Instant,
    qtype: u16,
    transport: Transport,
    answer: Option<Vec<IpAddr>>,
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, in order")]
fn reload_under_load_keeps_answering() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("reload-load");
    let config = demo_without_checks(dir.path());
    let db = dir.path().join("demo-country.mmdb");
    let pin = format!("/sys/fs/bpf/geodns-reload-{}", std::process::id());
    let daemon = Daemon::start(
        &pair,
        &config,
        "127.0.0.1:19181",
        &pin,
        &["--watch-interval", "100ms"],
        Duration::from_mins(1),
    );
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("xdp_pass on the client");
    let counts = || {
        let m = daemon.scrape(&pair).expect("metrics");
        (
            metric(&m, "geodns_reloads_total{result=\"ok\"}"),
            metric(&m, "geodns_reloads_total{result=\"failed\"}"),
        )
    };

    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    let stop = AtomicBool::new(false);
    let samples = Mutex::new(Vec::new());
    // (file written, reload counted, table in force after it)
    let mut steps: Vec<(Instant, Instant, Table)> = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let got = pair
                .in_ns(Side::Client, || {
                    let started = Instant::now();
                    let mut out = Vec::new();
                    let mut next = Instant::now();
                    for i in 0..MAX_QUERIES {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_TIME {
                            break;
                        }
                        let (qtype, transport) = match i % 4 {
                            0 | 1 => (1, Transport::Udp),
                            2 => (28, Transport::Udp),
                            _ => (1, Transport::Tcp),
                        };
                        let q = Query::new("www.cdn.example.net.", qtype)
                            .id(u16::try_from(i % 65_536).expect("id"))
                            .ecs("192.0.2.0", 24);
                        let sent = Instant::now();
                        let answer = exchange(transport, server, &q.build(), TIMEOUT)
                            .ok()
                            .flatten()
                            .map(|b| parse_reply(&b).expect("a reply parses").addrs);
                        out.push(Sample {
                            sent,
                            qtype,
                            transport,
                            answer,
                        });
                        next += PACE;
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    out
                })
                .expect("client namespace");
            *samples.lock().expect("lock") = got;
        });

        // Warm up on the first table, then five replacements, two of them corrupt.
        std::thread::sleep(Duration::from_millis(500));
        let mut table = Table::Germany;
        for (i, new) in [
            Some(Table::Us),
            None,
            Some(Table::Germany),
            None,
            Some(Table::Us),
        ]
        .into_iter()
        .enumerate()
        {
            let (ok, failed) = counts();
            let written = Instant::now();
            match new {
                Some(t) => replace(&db, &t.database()),
                None => replace(&db, b"\x00 this is not a MaxMind database"),
            }
            wait_for(
                &format!("replacement {} to be counted", i + 1),
                Duration::from_secs(20),
                || {
                    let (o, f) = counts();
                    if new.is_some() {
                        o > ok
                    } else {
                        f > failed
                    }
                },
            );
            let counted = Instant::now();
            table = new.unwrap_or(table);
            steps.push((written, counted, table));
            // Serve a while on this table.
            std::thread::sleep(Duration::from_millis(700));
        }
        stop.store(true, Ordering::Relaxed);
    });

    let samples = samples.into_inner().expect("samples");
    let (ok, failed) = counts();
    assert_eq!((ok, failed), (3, 2), "three good reloads, two failed ones");
    let timeouts = samples.iter().filter(|s| s.answer.is_none()).count();
    let tcp = samples
        .iter()
        .filter(|s| s.transport == Transport::Tcp)
        .count();
    eprintln!(
        "{} queries ({tcp} over TCP) during {} replacements; {timeouts} timeouts",
        samples.len(),
        steps.len()
    );
    assert!(samples.len() >= 2_000, "a steady stream: {}", samples.len());
    assert_eq!(timeouts, 0, "every query answered");
    let mut wrong = Vec::new();
    for s in &samples {
        let got = s.answer.clone().unwrap_or_default();
        // The table before the last replacement written before this query, and after.
        let mut before = Table::Germany;
        let mut allowed = vec![Table::Germany];
        for (written, counted, table) in &steps {
            if s.sent >= *counted {
                before = *table;
                allowed = vec![*table];
            } else if s.sent >= *written {
                allowed = vec![before, *table];
            }
        }
        if !allowed.iter().any(|t| got == t.answer(s.qtype)) {
            wrong.push(format!(
                "{:?} qtype {} at +{:?}: {got:?}, allowed {allowed:?}",
                s.transport,
                s.qtype,
                s.sent.duration_since(samples[0].sent)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers, first: {:?}",
        wrong.len(),
        wrong.first()
    );
    // Each table really served after its swap (the test cannot pass on one table).
    for (_, counted, table) in &steps {
        assert!(
            samples
                .iter()
                .any(|s| s.sent > *counted && s.answer == Some(table.answer(s.qtype))),
            "{table:?} served after its swap"
        );
    }
    drop(daemon);
}
