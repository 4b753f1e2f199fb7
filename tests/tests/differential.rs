//! XDP == fallback: the same random queries (client locations via ECS over IPv4 and
//! IPv6, and the packet's own source; served and unserved names; several qtypes; with
//! and without EDNS) sent over a veth to `geodns run` with the XDP program attached
//! (port 53) and to `geodns run --no-xdp` (port 5353, same config, same namespace)
//! get the same replies: header, question, every section, OPT and ECS fields. The
//! only field allowed to differ is which addresses a `spread` record picked (random
//! per query by design): there both must hold the same number of distinct candidates.
//!
//! Both servers see the same queries in the same order, so their deterministic
//! fallback rotations stay in step and are compared too.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use geodns_tests::{
    client::{exchange, parse_reply, Transport},
    daemon::{metric, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    require_bpf,
    synth::Rng,
    NetnsPair, Side,
};
use hickory_proto::{op::Message, rr::Record};

const QUERIES: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(1);

/// Served names more often than not, so a good share of the queries is the kernel's.
const NAMES: &[&str] = &[
    "www.cdn.example.net.",
    "www.cdn.example.net.",
    "www.cdn.example.net.",
    "a.img.cdn.example.net.",
    "WwW.cDn.ExAmPlE.nEt.",
    "a.img.cdn.example.net.",
    "xyz.img.cdn.example.net.",
    "a.b.img.cdn.example.net.",
    "a.b.c.img.cdn.example.net.",
    "static.img.cdn.example.net.",
    "x.static.img.cdn.example.net.",
    "video.cdn.example.net.",
    "a.lab.cdn.example.net.",
    "dl.cdn.example.net.",
    "cache.cdn.example.net.",
    "cache.cdn.example.net.",
    "cdn.example.net.",
    "ns1.cdn.example.net.",
    "nope.cdn.example.net.",
    "www.example.com.",
    // The static classes the kernel answers too: records, NODATA, NXDOMAIN at depth
    // and below existing names, an empty non-terminal, a referral, REFUSED.
    "mail.cdn.example.net.",
    "MaIl.cdn.example.net.",
    "img.cdn.example.net.",
    "lab.cdn.example.net.",
    "a.lab.cdn.example.net.",
    "x.ns1.cdn.example.net.",
    "deep.nope.cdn.example.net.",
    "x.y.www.cdn.example.net.",
    "example.net.",
];
/// Records with the `spread` policy: their addresses are picked at random per query.
/// (`cache` is `sticky`: both paths must pick the same node, compared as is.)
const SPREAD: &[&str] = &["dl.cdn.example.net."];
const QTYPES: &[u16] = &[
    1, 1, 1, 1, 1, 1, 28, 28, 28, 16, 2, 6, 15, 257, 65280, 65, 33, 255,
];

fn pick<T: Copy>(rng: &mut Rng, from: &[T]) -> T {
    from[usize::try_from(rng.below(from.len() as u64)).expect("an index")]
}

fn below_u8(rng: &mut Rng, n: u8) -> u8 {
    u8::try_from(rng.below(u64::from(n))).expect("below n")
}

/// A random client network for ECS: mostly near the demo database's networks (the low
/// 10 bits random, so neighbours outside them too), sometimes anywhere.
fn ecs_v4(rng: &mut Rng) -> (IpAddr, u8) {
    let base = u32::from_be_bytes(pick(
        rng,
        &[
            [192, 0, 2, 0],
            [198, 51, 100, 0],
            [203, 0, 113, 0],
            [10, 0, 0, 0],
            [100, 64, 0, 0],
            [100, 100, 0, 0],
            [198, 18, 0, 0],
        ],
    ));
    let random = u32::try_from(rng.below(1 << 32)).expect("32 bits");
    let addr = if rng.below(5) == 0 {
        random
    } else {
        base | (random & 0x3FF)
    };
    let source = below_u8(rng, 33);
    let mask = u32::MAX.checked_shl(32 - u32::from(source)).unwrap_or(0);
    (IpAddr::V4(Ipv4Addr::from(addr & mask)), source)
}

fn ecs_v6(rng: &mut Rng) -> (IpAddr, u8) {
    // A quarter: a demo network seen through an alias of the databases (6to4,
    // Teredo, IPv4-mapped), looked up as IPv4 by both servers.
    if rng.below(4) == 0 {
        let (IpAddr::V4(a), source) = ecs_v4(rng) else {
            unreachable!("ecs_v4 gives IPv4")
        };
        let a = u128::from(u32::from(a));
        let (bits, offset) = pick(
            rng,
            &[
                ((0x2002 << 112) | a << 80, 16u8),
                ((0x2001_0000 << 96) | a << 64, 32),
                ((0xffff << 32) | a, 96),
            ],
        );
        return (IpAddr::V6(Ipv6Addr::from(bits)), offset + source);
    }
    let base = pick(
        rng,
        &[
            0x2001_0db8_u128 << 96,
            0x2001_0db8_8000_u128 << 80,
            0x2001_0db8_abcd_1200_u128 << 64,
            0x3fff_u128 << 112,
            0x2001_0002_u128 << 96,
        ],
    );
    let random = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    let addr = if rng.below(5) == 0 {
        random
    } else {
        base | (random >> 40)
    };
    let source = below_u8(rng, 65);
    let mask = u128::MAX.checked_shl(128 - u32::from(source)).unwrap_or(0);
    (IpAddr::V6(Ipv6Addr::from(addr & mask)), source)
}

fn random_query(rng: &mut Rng, id: u16, names: &[&'static str]) -> (Query, &'static str) {
    let name = pick(rng, names);
    let mut q = Query::new(name, pick(rng, QTYPES)).id(id);
    if rng.below(4) == 0 {
        q = q.flags(0); // RD clear
    }
    if rng.below(10) < 7 {
        q = q.edns(pick(rng, &[512, 1232, 4096]));
        if rng.below(10) == 0 {
            q = q.dnssec_ok();
        }
        match rng.below(10) {
            0..=3 => {
                let (a, s) = ecs_v4(rng);
                q = q.ecs(&a.to_string(), s);
            }
            4..=6 => {
                let (a, s) = ecs_v6(rng);
                q = q.ecs(&a.to_string(), s);
            }
            // An ECS that breaks RFC 7871 (a scope in a query): FORMERR from both.
            7 => q = q.ecs_raw(1, 24, 8, &[192, 0, 2]),
            _ => {}
        }
    }
    (q, name)
}

/// A reply in a form where equal means "the same answer": parsed sections, and the
/// raw header and OPT fields.
#[derive(Debug, PartialEq)]
struct Normal {
    header: [u8; 12],
    question: Vec<u8>,
    answers: Vec<String>,
    authorities: Vec<String>,
    additionals: Vec<String>,
    opt: Option<String>,
}

fn record(r: &Record) -> String {
    format!(
        "{} {} {:?} {} {}",
        r.name.to_ascii(),
        r.ttl,
        r.dns_class,
        r.record_type(),
        r.data
    )
}

fn normalize(b: &[u8], spread: bool) -> Normal {
    let m = Message::from_vec(b).unwrap_or_else(|e| panic!("reply parses: {e}: {b:02x?}"));
    let mut header = [0u8; 12];
    header.copy_from_slice(&b[..12]);
    let qend = 12 + m.queries.first().map_or(0, |q| q.name().len() + 4);
    let mut answers: Vec<String> = m.answers.iter().map(record).collect();
    if spread {
        // Random picks: keep that they are distinct addresses, drop which ones.
        let addrs = parse_reply(b).expect("reply parses").addrs;
        let distinct: BTreeSet<_> = addrs.iter().collect();
        assert_eq!(
            distinct.len(),
            answers.len(),
            "spread picks distinct: {answers:?}"
        );
        answers = vec![format!("{} spread answers", answers.len())];
    }
    Normal {
        header,
        question: b[12..qend.min(b.len())].to_vec(),
        answers,
        authorities: m.authorities.iter().map(record).collect(),
        additionals: m.additionals.iter().map(record).collect(),
        opt: m.edns.as_ref().map(|e| format!("{e:?}")),
    }
}

/// The two paths side by side on the server of `pair`, from `config`: `geodns run` with
/// XDP (port 53, metrics on `metrics[0]`) and `geodns run --no-xdp` on port 5353
/// (`metrics[1]`); and `xdp_pass` on the client, without which veth drops `XDP_TX`
/// replies.
fn both_paths(
    pair: &NetnsPair,
    config: &Path,
    tag: &str,
    metrics: [u16; 2],
) -> (Daemon, Daemon, aya::Ebpf) {
    let pin = format!("/sys/fs/bpf/{tag}-{}", std::process::id());
    let xdp = Daemon::start(
        pair,
        config,
        &format!("127.0.0.1:{}", metrics[0]),
        &pin,
        &[],
        Duration::from_mins(1),
    );
    let v4 = SocketAddr::from((pair.server_v4, 5353)).to_string();
    let v6 = SocketAddr::from((pair.server_v6, 5353)).to_string();
    let user = Daemon::start(
        pair,
        config,
        &format!("127.0.0.1:{}", metrics[1]),
        &format!("{pin}-user"),
        &["--no-xdp", "--listen", &v4, "--listen", &v6],
        Duration::from_mins(1),
    );
    let pass = pair
        .attach_pass(Side::Client)
        .expect("xdp_pass on the client");
    (xdp, user, pass)
}

#[test]
fn xdp_and_fallback_give_the_same_answers() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("differential");
    let config = demo_without_checks(dir.path());
    same_answers(&config, NAMES, QUERIES, "geodns-diff", [19171, 19172]);
}

/// Names of `examples/route.toml`: `nearest` rankings (best, spread, sticky).
const ROUTE_NAMES: &[&str] = &[
    "www.cdn.example.net.",
    "www.cdn.example.net.",
    "a.img.cdn.example.net.",
    "dl.cdn.example.net.",
    "cache.cdn.example.net.",
    "cache.cdn.example.net.",
    "nope.cdn.example.net.",
    "cdn.example.net.",
];

/// The same for `examples/route.toml`: clients ranked by the coordinates of their
/// network in a City database, and clients whose `AS` key is the BGP origin of their
/// prefix in the example's RIB dump (`192.0.2.128/25`, `100.100.0.0/16`,
/// `2001:db8:8000::/33`, also through the aliases), through both paths.
#[test]
fn xdp_and_fallback_agree_by_coordinates() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("differential-route");
    let config = geodns_tests::files::route_without_rrl(dir.path());
    same_answers(
        &config,
        ROUTE_NAMES,
        4000,
        "geodns-diff-route",
        [19175, 19176],
    );
}

/// `queries` random queries for `names` to both paths; the replies must be equal.
fn same_answers(
    config: &Path,
    names: &[&'static str],
    queries: usize,
    tag: &str,
    metrics: [u16; 2],
) {
    let pair = NetnsPair::new().expect("namespaces");
    let (xdp, user, _pass) = both_paths(&pair, config, tag, metrics);
    let answered = |d: &Daemon| {
        let m = d.scrape(&pair).expect("metrics");
        metric(&m, "geodns_xdp_packets_total{outcome=\"answered_v4\"}")
            + metric(&m, "geodns_xdp_packets_total{outcome=\"answered_v6\"}")
    };
    // The static answers by class (SOA, NS, records; NODATA; NXDOMAIN; REFUSED).
    let classes = |d: &Daemon| -> [u64; 4] {
        let m = d.scrape(&pair).expect("metrics");
        [
            "answered_static",
            "answered_nodata",
            "answered_nxdomain",
            "answered_refused",
        ]
        .map(|c| metric(&m, &format!("geodns_xdp_packets_total{{outcome=\"{c}\"}}")))
    };
    let before = answered(&xdp);
    let classes_before = classes(&xdp);

    let (server_v4, server_v6) = (IpAddr::V4(pair.server_v4), IpAddr::V6(pair.server_v6));
    let (compared, spread) = pair
        .in_ns(Side::Client, || {
            let mut rng = Rng(0x5EED_D1FF);
            let mut spread = 0;
            for i in 0..queries {
                let (q, name) =
                    random_query(&mut rng, u16::try_from(i % 65_536).expect("id"), names);
                let server = if rng.below(3) == 0 {
                    server_v6
                } else {
                    server_v4
                };
                let bytes = q.build();
                let ask = |port| {
                    exchange(
                        Transport::Udp,
                        SocketAddr::new(server, port),
                        &bytes,
                        TIMEOUT,
                    )
                    .expect("send")
                    .unwrap_or_else(|| panic!("query {i} to port {port}: no reply: {q:?}"))
                };
                let (k, u) = (ask(53), ask(5353));
                let is_spread = SPREAD.contains(&name.to_ascii_lowercase().as_str());
                spread += usize::from(is_spread);
                assert_eq!(
                    normalize(&k, is_spread),
                    normalize(&u, is_spread),
                    "query {i} ({q:?}) to {server}: XDP path (left) vs --no-xdp (right)"
                );
            }
            (queries, spread)
        })
        .expect("client namespace");
    let by_xdp = answered(&xdp) - before;
    let after = classes(&xdp);
    let by_class: Vec<u64> = (0..4).map(|i| after[i] - classes_before[i]).collect();
    let statics: u64 = by_class.iter().sum();
    eprintln!(
        "{compared} queries compared ({spread} to spread records); {by_xdp} geo answers by \
         XDP, {statics} static ones (records, NODATA, NXDOMAIN, REFUSED: {by_class:?}), the \
         rest by the authoritative server behind it"
    );
    if names.iter().any(|n| n.starts_with("mail.")) {
        for (class, n) in ["records", "NODATA", "NXDOMAIN", "REFUSED"]
            .iter()
            .zip(&by_class)
        {
            assert!(*n > 0, "the kernel answered no {class} query");
        }
    }
    assert_eq!(answered(&user), 0, "--no-xdp loads no program");
    let n = u64::try_from(queries).expect("count");
    assert!(
        by_xdp >= n / 10 && by_xdp + statics >= n / 2,
        "the kernel path must carry a good share of the queries: {by_xdp} geo, {statics} static"
    );
    drop(user);
    drop(xdp);
}

/// What a reply of a rate-limit burst was.
#[derive(Debug, PartialEq)]
enum Limited {
    Answer(Normal),
    /// An empty TC=1 reply.
    Slip(Normal),
    Nothing,
}

/// Sends `queries` back to back from one socket and sorts the replies by id.
fn burst(server: SocketAddr, queries: &[Vec<u8>]) -> Vec<Limited> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(bind).expect("bind");
    for q in queries {
        sock.send_to(q, server).expect("send");
    }
    let mut out: Vec<Limited> = queries.iter().map(|_| Limited::Nothing).collect();
    let until = std::time::Instant::now() + Duration::from_millis(500);
    let mut buf = vec![0u8; 4096];
    // Bound: 500 ms.
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let Ok(n) = sock.recv(&mut buf) else { break };
        let b = &buf[..n];
        let id = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let tc = b[2] & 0x02 != 0;
        if let Some(slot) = out.get_mut(id) {
            *slot = if tc {
                Limited::Slip(normalize(b, false))
            } else {
                Limited::Answer(normalize(b, false))
            };
        }
    }
    out
}

/// The demo config with `[rrl] rate = 1, burst = 2, slip = 2`.
fn rrl_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = geodns_tests::files::demo_with_rrl(dir);
    let text = std::fs::read_to_string(&config).expect("read the config");
    let text: String = text
        .lines()
        .map(|l| match l.split('=').next().map(str::trim) {
            Some("rate") => "rate = 1",
            Some("burst") => "burst = 2",
            Some("slip") => "slip = 2",
            _ => l,
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    std::fs::write(&config, text).expect("write the config");
    config
}

/// Both paths make the same rate-limit decisions: with `[rrl] rate = 1, burst = 2,
/// slip = 2` the same bursts to the XDP path (port 53) and to `--no-xdp` (port 5353)
/// get the same sequence of answers, empty TC=1 slips and silences, and equal bytes
/// where they reply. Each burst has a bucket of its own (family x record) on both.
#[test]
fn rate_limit_decisions_are_the_same() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("differential-rrl");
    let config = rrl_config(dir.path());
    let (xdp, user, _pass) = both_paths(&pair, &config, "geodns-diff-rrl", [19173, 19174]);
    let (server_v4, server_v6) = (IpAddr::V4(pair.server_v4), IpAddr::V6(pair.server_v6));
    let bursts: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "A, ECS changing",
            (0..6u16)
                .map(|i| {
                    let q = Query::new("www.cdn.example.net.", 1).id(i);
                    if i % 2 == 0 {
                        q.build()
                    } else {
                        q.edns(1232).ecs(&format!("192.0.2.{i}"), 32).build()
                    }
                })
                .collect(),
        ),
        (
            "AAAA with EDNS",
            (0..6u16)
                .map(|i| {
                    Query::new("a.img.cdn.example.net.", 28)
                        .id(i)
                        .edns(1232)
                        .build()
                })
                .collect(),
        ),
    ];
    pair.in_ns(Side::Client, || {
        for server in [server_v4, server_v6] {
            for (what, queries) in &bursts {
                let k = burst(SocketAddr::new(server, 53), queries);
                let u = burst(SocketAddr::new(server, 5353), queries);
                let kinds: Vec<&str> = k
                    .iter()
                    .map(|r| match r {
                        Limited::Answer(_) => "answer",
                        Limited::Slip(_) => "slip",
                        Limited::Nothing => "-",
                    })
                    .collect();
                assert_eq!(
                    kinds,
                    ["answer", "answer", "-", "slip", "-", "slip"],
                    "{what} to {server}: the XDP path"
                );
                assert_eq!(
                    k, u,
                    "{what} to {server}: XDP path (left) vs --no-xdp (right)"
                );
            }
        }
    })
    .expect("client namespace");
    let m = xdp.scrape(&pair).expect("metrics");
    let kernel_slips = metric(&m, "geodns_xdp_packets_total{outcome=\"rrl_slipped\"}");
    eprintln!(
        "slips by the kernel: {kernel_slips}; by the fallback behind it: {}",
        metric(&m, "geodns_server_rrl_slipped_total")
    );
    drop(user);
    drop(xdp);
}
