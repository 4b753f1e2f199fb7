//! `BPF_PROG_TEST_RUN` fixture rows for the zone's static answers in the kernel (SOA,
//! NS with glue, the name server's addresses, static records, NODATA, NXDOMAIN,
//! wildcards at any depth, empty non-terminals, referrals, REFUSED): the demo config
//! compiled and installed as `geodns run` installs it, each row's reply compared byte
//! for byte with the userspace server's reply to the same query bytes, and the
//! counter it must bump. Then a sweep of random names and types: wherever the kernel
//! answers it must be the userspace server's reply, and whatever it passes userspace
//! answers.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
};

use geodns::{
    authoritative::{handle, kernel::kernel_maps, Transport},
    loader::{KernelProgram, LoadOptions},
};
use geodns_common::counter;
use geodns_maps::{AnswerSource, Compiled, Config, Engine, NodeStates};
use geodns_tests::{
    frame::{self, verify_lengths_and_checksums, Frame, Query, L3},
    prog_test_run, require_bpf,
    synth::Rng,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

use counter::{
    ANSWERED_NODATA as NODATA, ANSWERED_NXDOMAIN as NX, ANSWERED_REFUSED as REFUSED,
    ANSWERED_STATIC as STATIC,
};

fn demo_engine() -> Engine {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml");
    let config = Config::from_path(&path).expect("parse the example config");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile the example databases");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 1);

fn l3() -> L3 {
    L3::V4 {
        src: CLIENT,
        dst: Ipv4Addr::new(198, 18, 9, 2),
    }
}

/// What a row expects of the kernel.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// `XDP_TX`, this counter, this RCODE, the userspace server's bytes.
    Tx(u32, u16),
    /// `XDP_PASS` with this counter, frame untouched.
    Pass(u32),
}

/// Runs `query`; checks action, counter, and bytes against `handle`.
fn run(xdp: &KernelProgram, fd: i32, engine: &Engine, desc: &str, query: &Query, want: Expect) {
    let f = Frame::new(l3(), query).build();
    let before = xdp.counters().expect("counters");
    let out = prog_test_run(fd, &f, 1).expect("test run");
    let after = xdp.counters().expect("counters");
    let bumped: Vec<usize> = (0..before.len())
        .filter(|i| after[*i] != before[*i] && *i != counter::RX as usize)
        .collect();
    let user = handle(engine, &query.build(), IpAddr::V4(CLIENT), Transport::Udp);
    match want {
        Expect::Tx(c, rcode) => {
            assert_eq!(out.action, XDP_TX, "{desc}: action (counters {bumped:?})");
            assert_eq!(bumped, vec![c as usize], "{desc}: counter");
            verify_lengths_and_checksums(&out.output).unwrap_or_else(|e| panic!("{desc}: {e}"));
            let reply = frame::parse(&out.output).expect("reply frame");
            assert_eq!(
                Some(&reply.payload[..]),
                user.response.as_deref(),
                "{desc}: kernel vs userspace bytes"
            );
            assert_eq!(user.rcode, Some(rcode), "{desc}: rcode");
        }
        Expect::Pass(c) => {
            assert_eq!(out.action, XDP_PASS, "{desc}: action");
            assert_eq!(bumped, vec![c as usize], "{desc}: counter");
            assert_eq!(out.output, f, "{desc}: passed untouched");
            assert!(user.response.is_some(), "{desc}: userspace answers");
        }
    }
}

fn load(engine: &Engine) -> (KernelProgram, i32) {
    let mut xdp = KernelProgram::load(&LoadOptions::default()).expect("load");
    let maps = kernel_maps(engine);
    assert!(
        maps.static_answers.len() > 5,
        "static answers compiled: {}",
        maps.static_answers.len()
    );
    xdp.install(&maps).expect("install");
    let fd = xdp.program_fd("xdp_dns").expect("fd");
    (xdp, fd)
}

#[test]
#[expect(clippy::too_many_lines, reason = "a fixture table")]
fn static_fixture_rows() {
    if !require_bpf() {
        return;
    }
    let engine = demo_engine();
    let (xdp, fd) = load(&engine);
    let q = Query::new;
    let rows: Vec<(&str, Query, Expect)> = vec![
        (
            "SOA at the apex",
            q("cdn.example.net.", 6),
            Expect::Tx(STATIC, 0),
        ),
        (
            "SOA at the apex, mixed case",
            q("CdN.eXample.NET.", 6),
            Expect::Tx(STATIC, 0),
        ),
        (
            "SOA with EDNS",
            q("cdn.example.net.", 6).edns(1232),
            Expect::Tx(STATIC, 0),
        ),
        (
            "SOA with ECS: echoed, scope 0",
            q("cdn.example.net.", 6).ecs("192.0.2.0", 24),
            Expect::Tx(STATIC, 0),
        ),
        (
            "SOA with an IPv6 ECS",
            q("cdn.example.net.", 6).ecs("2001:db8::", 48),
            Expect::Tx(STATIC, 0),
        ),
        (
            "NS at the apex with glue",
            q("cdn.example.net.", 2),
            Expect::Tx(STATIC, 0),
        ),
        (
            "NS at the apex with glue, EDNS",
            q("cdn.example.net.", 2).edns(4096),
            Expect::Tx(STATIC, 0),
        ),
        (
            "MX at the apex",
            q("cdn.example.net.", 15),
            Expect::Tx(STATIC, 0),
        ),
        (
            "TXT at the apex",
            q("cdn.example.net.", 16),
            Expect::Tx(STATIC, 0),
        ),
        (
            "CAA at the apex",
            q("cdn.example.net.", 257),
            Expect::Tx(STATIC, 0),
        ),
        (
            "A at the apex: NODATA",
            q("cdn.example.net.", 1),
            Expect::Tx(NODATA, 0),
        ),
        (
            "an unknown type at the apex: NODATA",
            q("cdn.example.net.", 65280),
            Expect::Tx(NODATA, 0),
        ),
        (
            "the name server's A (glue)",
            q("ns1.cdn.example.net.", 1),
            Expect::Tx(STATIC, 0),
        ),
        (
            "the name server's AAAA",
            q("ns1.cdn.example.net.", 28),
            Expect::Tx(STATIC, 0),
        ),
        (
            "the name server's TXT: NODATA",
            q("ns1.cdn.example.net.", 16),
            Expect::Tx(NODATA, 0),
        ),
        (
            "a static A",
            q("mail.cdn.example.net.", 1),
            Expect::Tx(STATIC, 0),
        ),
        (
            "a static A, mixed case",
            q("MAIL.cdn.Example.net.", 1),
            Expect::Tx(STATIC, 0),
        ),
        (
            "AAAA of a static name: NODATA",
            q("mail.cdn.example.net.", 28),
            Expect::Tx(NODATA, 0),
        ),
        (
            "TXT beside a geo record",
            q("www.cdn.example.net.", 16),
            Expect::Tx(STATIC, 0),
        ),
        (
            "HTTPS beside a geo record",
            q("www.cdn.example.net.", 65),
            Expect::Tx(STATIC, 0),
        ),
        (
            "MX of a geo name: NODATA",
            q("www.cdn.example.net.", 15),
            Expect::Tx(NODATA, 0),
        ),
        (
            "MX of a geo name: NODATA, ECS scope 0",
            q("www.cdn.example.net.", 15).ecs("198.51.100.0", 24),
            Expect::Tx(NODATA, 0),
        ),
        (
            "a name that does not exist",
            q("nope.cdn.example.net.", 1),
            Expect::Tx(NX, 3),
        ),
        (
            "NXDOMAIN for another type, with EDNS",
            q("nope.cdn.example.net.", 16).edns(1232),
            Expect::Tx(NX, 3),
        ),
        (
            "NXDOMAIN two labels below an existing name",
            q("a.b.www.cdn.example.net.", 1),
            Expect::Tx(NX, 3),
        ),
        (
            "NXDOMAIN, mixed case and ECS",
            q("NoPe.Deeper.CDN.example.net.", 28).ecs("203.0.113.0", 24),
            Expect::Tx(NX, 3),
        ),
        (
            "below the name server: NXDOMAIN with the SOA's MNAME compressed against it",
            q("x.ns1.cdn.example.net.", 1),
            Expect::Tx(NX, 3),
        ),
        (
            "the SOA's RNAME (outside the zone): REFUSED",
            q("hostmaster.example.net.", 1),
            Expect::Tx(REFUSED, 5),
        ),
        (
            "the wildcard's TXT: NODATA (geo wildcard, no static data)",
            q("xyz.img.cdn.example.net.", 16),
            Expect::Tx(NODATA, 0),
        ),
        (
            "the wildcard at depth: NODATA for MX",
            q("a.b.c.img.cdn.example.net.", 15),
            Expect::Tx(NODATA, 0),
        ),
        (
            "an existing name beside the wildcard: its own TXT",
            q("static.img.cdn.example.net.", 16),
            Expect::Tx(STATIC, 0),
        ),
        (
            "an existing name beside the wildcard: A is NODATA, not the wildcard",
            q("static.img.cdn.example.net.", 1),
            Expect::Tx(NODATA, 0),
        ),
        (
            "below an existing name under the wildcard: NXDOMAIN (closest encloser)",
            q("x.static.img.cdn.example.net.", 1),
            Expect::Tx(NX, 3),
        ),
        (
            "the empty non-terminal img: NODATA",
            q("img.cdn.example.net.", 1),
            Expect::Tx(NODATA, 0),
        ),
        (
            "the empty non-terminal img: NODATA for TXT",
            q("img.cdn.example.net.", 16),
            Expect::Tx(NODATA, 0),
        ),
        (
            "a delegation: referral",
            q("lab.cdn.example.net.", 1),
            Expect::Tx(STATIC, 0),
        ),
        (
            "below a delegation: referral",
            q("a.lab.cdn.example.net.", 28),
            Expect::Tx(STATIC, 0),
        ),
        (
            "outside the zone: REFUSED",
            q("www.example.com.", 1),
            Expect::Tx(REFUSED, 5),
        ),
        (
            "outside the zone with ECS: REFUSED, ECS echoed scope 0",
            q("www.example.com.", 16).ecs("192.0.2.0", 24),
            Expect::Tx(REFUSED, 5),
        ),
        (
            "the parent of the zone: REFUSED",
            q("example.net.", 6),
            Expect::Tx(REFUSED, 5),
        ),
        ("the root: REFUSED", q(".", 2), Expect::Tx(REFUSED, 5)),
        (
            "a CNAME to a geo name passes (the chain ends in a client's answer)",
            q("video.cdn.example.net.", 1),
            Expect::Pass(counter::PASS_NOT_SERVED),
        ),
        (
            "a meta type (AXFR) passes",
            q("cdn.example.net.", 252),
            Expect::Pass(counter::PASS_QTYPE),
        ),
        (
            "class CH passes",
            q("cdn.example.net.", 6).class(3),
            Expect::Pass(counter::PASS_QCLASS),
        ),
    ];
    for (desc, query, want) in &rows {
        run(&xdp, fd, &engine, desc, query, *want);
    }
    // RD clear and set, CD: copied as the userspace server copies them.
    run(
        &xdp,
        fd,
        &engine,
        "RD clear, CD set",
        &q("nope.cdn.example.net.", 1).flags(0x0010),
        Expect::Tx(NX, 3),
    );
    println!("{} static rows", rows.len() + 1);
}

/// Random names (existing, below existing ones at several depths, outside the zone,
/// in mixed case) and types, with and without EDNS and ECS: every kernel reply is the
/// userspace server's, and the kernel answers nearly all of them.
#[test]
fn static_sweep_matches_userspace() {
    if !require_bpf() {
        return;
    }
    let engine = demo_engine();
    let (_xdp, fd) = load(&engine);
    let names = [
        "cdn.example.net.",
        "ns1.cdn.example.net.",
        "mail.cdn.example.net.",
        "www.cdn.example.net.",
        "img.cdn.example.net.",
        "static.img.cdn.example.net.",
        "lab.cdn.example.net.",
        "ns1.lab.cdn.example.net.",
        "video.cdn.example.net.",
        "dl.cdn.example.net.",
        "cache.cdn.example.net.",
        "example.net.",
        "example.com.",
    ];
    let labels = [
        "",
        "x.",
        "nope.",
        "a.b.",
        "Zz9-q.",
        "very-long-label-here.",
        "*.",
    ];
    let types = [1u16, 28, 2, 6, 15, 16, 65, 257, 33, 255, 65280, 99];
    let mut rng = Rng(0x0057_471C);
    let (mut tx, mut pass) = (0, 0);
    for i in 0..4000u32 {
        let pick = |rng: &mut Rng, n: usize| usize::try_from(rng.below(n as u64)).expect("index");
        let base = names[pick(&mut rng, names.len())];
        let label = labels[pick(&mut rng, labels.len())];
        let mut name = format!("{label}{base}");
        if i % 5 == 0 {
            name = name
                .chars()
                .enumerate()
                .map(|(j, c)| {
                    if j % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
        }
        let qtype = types[pick(&mut rng, types.len())];
        let mut query = Query::new(&name, qtype).id(u16::try_from(i & 0xFFFF).expect("id"));
        match i % 4 {
            1 => query = query.edns(1232),
            2 => query = query.ecs("198.51.100.0", 24),
            3 => query = query.ecs("2001:db8:abcd::", 40),
            _ => {}
        }
        let f = Frame::new(l3(), &query).build();
        let out = prog_test_run(fd, &f, 1).expect("test run");
        let user = handle(&engine, &query.build(), IpAddr::V4(CLIENT), Transport::Udp);
        match out.action {
            XDP_TX => {
                tx += 1;
                let reply = frame::parse(&out.output).expect("reply frame");
                // Geo answers are compared by kernel_vs_engine and the differential
                // test (a spread draw differs by design); every static reply here.
                if matches!(
                    user.source,
                    Some(AnswerSource::Geo { .. } | AnswerSource::Fallback { .. })
                ) {
                    continue;
                }
                assert_eq!(
                    Some(&reply.payload[..]),
                    user.response.as_deref(),
                    "{name} {qtype} (query {i})"
                );
            }
            XDP_PASS => {
                pass += 1;
                assert!(user.response.is_some(), "{name} {qtype}: userspace answers");
            }
            other => panic!("{name} {qtype}: action {other}"),
        }
    }
    println!("sweep: {tx} answered by the kernel, {pass} passed");
    assert!(
        tx > 3000,
        "the kernel answers most of the zone: {tx} of 4000"
    );
}

/// RRL over the static answers, as BIND and Knot class them: NXDOMAIN (and NODATA) by
/// the zone, so a random-subdomain flood from one network shares one bucket however
/// many names it makes up; a positive answer by its records, so the SOA has a bucket of
/// its own. Over the limit: every `slip`-th an empty TC=1 reply (rcode kept), the
/// others dropped, as the userspace server does.
#[test]
fn rate_limit_classes() {
    if !require_bpf() {
        return;
    }
    let engine = demo_engine();
    let mut r = geodns_maps::config::Rrl::default();
    // 1 answer a second, burst 2, slip 2: nothing refills while the test runs.
    r.rate = 1;
    r.burst = 2;
    r.slip = 2;
    let (defence, _) =
        geodns_maps::defence::kernel_defence(&r, &geodns_maps::config::Guard::default(), None);
    let mut xdp = KernelProgram::load(&LoadOptions {
        defence,
        ..LoadOptions::default()
    })
    .expect("load");
    xdp.install(&kernel_maps(&engine)).expect("install");
    let fd = xdp.program_fd("xdp_dns").expect("fd");
    let send = |name: &str, qtype: u16| {
        let f = Frame::new(l3(), &Query::new(name, qtype).edns(1232)).build();
        prog_test_run(fd, &f, 1).expect("test run")
    };
    // Four different nonexistent names: one bucket (the zone's negative answers).
    let outcomes: Vec<(u32, bool)> = (0..6)
        .map(|i| {
            let run = send(&format!("flood{i}.cdn.example.net."), 1);
            let tc = run.action == XDP_TX && {
                let p = frame::parse(&run.output).expect("reply").payload;
                p[2] & 0x02 != 0
            };
            (run.action, tc)
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (XDP_TX, false),
            (XDP_TX, false),
            (XDP_DROP, false),
            (XDP_TX, true),
            (XDP_DROP, false),
            (XDP_TX, true)
        ],
        "NXDOMAIN of random names share the zone's bucket"
    );
    // A slipped NXDOMAIN keeps its rcode and carries no records (TC=1, question, OPT).
    let run = send("flood9.cdn.example.net.", 1);
    if run.action == XDP_TX {
        let p = frame::parse(&run.output).expect("reply").payload;
        assert_eq!(p[3] & 0x0F, 3, "slipped NXDOMAIN keeps RCODE 3");
        assert_eq!(&p[6..10], &[0, 0, 0, 0], "no records in a slip");
    }
    // NODATA is negative too: the same bucket, over the limit.
    assert_ne!(send("www.cdn.example.net.", 15).action, XDP_PASS);
    let nodata = send("www.cdn.example.net.", 15);
    assert!(
        nodata.action == XDP_DROP || nodata.action == XDP_TX,
        "NODATA limited"
    );
    // The SOA answer has its own bucket: answered in full.
    let soa = send("cdn.example.net.", 6);
    assert_eq!(soa.action, XDP_TX, "SOA answered");
    let p = frame::parse(&soa.output).expect("reply").payload;
    assert_eq!(p[2] & 0x02, 0, "SOA not slipped");
    let c = xdp.counters().expect("counters");
    assert!(c[counter::RRL_DROPPED as usize] >= 2 && c[counter::RRL_SLIPPED as usize] >= 2);
}
