//! The kernel answers exactly what `geodns_maps::Engine` decides: the demo config and
//! its `GeoIP` databases are compiled by maps/, installed into the XDP program, and the
//! same questions go to both, from random clients (EDNS Client Subnet, IPv4 and IPv6,
//! several prefix lengths) for every served name and for A and AAAA (the sticky record's
//! node compared exactly, the spread record's count). Where the kernel
//! answers, the userspace authoritative server's reply to the same query is the same bytes.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::Arc,
};

use geodns::{
    authoritative::{check::check_response, handle, Transport},
    loader::{KernelProgram, LoadOptions},
};
use geodns_maps::{AnswerSource, Compiled, Config, Engine, NodeStates, Question, Resolution};
use geodns_tests::{
    client::parse_reply,
    frame::{self, Frame, Query, L3},
    prog_test_run, require_bpf,
    synth::Rng,
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

fn example_engine(name: &str) -> Engine {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let config = Config::from_path(&path).expect("parse the example config");
    let compiled = Compiled::build(&config, &mut |_| {}).expect("compile the example databases");
    let states = NodeStates::from_config(&config);
    Engine::new(Arc::new(config), Arc::new(compiled), &states)
}

/// The client address the engine must see for an ECS option of `source` bits: the
/// address truncated to the prefix (zero padded), as it travels in the option.
fn truncate(ip: IpAddr, source: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(source)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(source)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

fn ecs_query(name: &str, qtype: u16, ip: IpAddr, source: u8) -> Query {
    let (family, bytes) = match ip {
        IpAddr::V4(a) => (1, a.octets().to_vec()),
        IpAddr::V6(a) => (2, a.octets().to_vec()),
    };
    Query::new(name, qtype).ecs_raw(family, source, 0, &bytes[..usize::from(source).div_ceil(8)])
}

#[test]
fn kernel_answers_what_the_engine_decides() {
    if !require_bpf() {
        return;
    }
    compare(&example_engine("demo.toml"));
}

/// The same for `examples/route.toml`: `nearest` rankings as regions (best, spread and
/// sticky over them), from its City database.
#[test]
fn kernel_answers_what_the_engine_decides_by_coordinates() {
    if !require_bpf() {
        return;
    }
    let engine = example_engine("route.toml");
    assert!(
        engine.compiled().ranking_count() > 5,
        "the route example ranks by coordinates"
    );
    compare(&engine);
}

#[expect(clippy::too_many_lines, reason = "one differential loop")]
fn compare(engine: &Engine) {
    assert_eq!(
        engine.compiled().aliases(),
        geodns_common::STATE_FLAG_ALIASES,
        "the demo databases alias all three ranges, as MaxMind's do"
    );
    let mut xdp = KernelProgram::load(&LoadOptions::default()).expect("load");
    // As `geodns run` installs it: the geo tables and the zone's static answers.
    xdp.install(&geodns::authoritative::kernel::kernel_maps(engine))
        .expect("install the compiled demo maps");
    let fd = xdp.program_fd("xdp_dns").expect("fd");
    let origin = engine.config().zone.origin.clone();
    let names: Vec<String> = engine
        .config()
        .records
        .iter()
        .map(|r| r.name.replacen('*', "Any-Label", 1))
        .collect();
    let transport = L3::V4 {
        src: Ipv4Addr::new(198, 18, 9, 1),
        dst: Ipv4Addr::new(198, 18, 9, 2),
    };
    // Clients inside the compiled networks (mostly known regions, some unknown space).
    let v4: Vec<([u8; 4], u8, u16)> = engine.compiled().prefixes_v4().collect();
    let v6: Vec<([u8; 16], u8, u16)> = engine.compiled().prefixes_v6().collect();
    let known4: Vec<_> = v4.iter().filter(|p| p.2 != 0).copied().collect();
    let known6: Vec<_> = v6.iter().filter(|p| p.2 != 0).copied().collect();
    let mut rng = Rng(0xD1FF);
    let (mut by_kernel, mut passed, mut checked, mut sticky) = (0, 0, 0, 0);
    for i in 0..3000 {
        let raw = rng.next_u64();
        let pick = usize::try_from(rng.next_u64() % 1_000_003).expect("index");
        let (ip, source) = if i % 10 == 3 || i % 10 == 5 || i % 10 == 7 {
            // An IPv6 client in an alias range: the embedded address is a known one.
            let (a, len, _) = known4[pick % known4.len()];
            let host = u32::try_from(raw >> 32).expect("u32")
                & u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let v4 = u128::from(u32::from_be_bytes(a) | host);
            let low = u128::from(rng.next_u64());
            let (bits, sources) = match i % 10 {
                3 => ((0x2002 << 112) | v4 << 80 | low, [48u8, 40, 32, 128]),
                5 => ((0x2001_0000 << 96) | v4 << 64 | low, [64, 56, 48, 128]),
                _ => ((0xffff << 32) | v4, [128, 120, 112, 104]),
            };
            (IpAddr::V6(Ipv6Addr::from(bits)), sources[(i / 10) % 4])
        } else if i % 2 == 0 {
            let table = if i % 10 == 0 { &v4 } else { &known4 };
            let (a, len, _) = table[pick % table.len()];
            let host = u32::try_from(raw >> 32).expect("u32")
                & u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let ip = IpAddr::V4(Ipv4Addr::from(u32::from_be_bytes(a) | host));
            (ip, [32u8, 24, 16, 0][(i / 2) % 4])
        } else {
            let table = if i % 10 == 1 { &v6 } else { &known6 };
            let (a, len, _) = table[pick % table.len()];
            let host = (u128::from(raw) << 64 | u128::from(rng.next_u64()))
                & u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let ip = IpAddr::V6(Ipv6Addr::from(u128::from_be_bytes(a) | host));
            (ip, [128u8, 56, 48, 32][(i / 2) % 4])
        };
        let ip = truncate(ip, source);
        let name = &names[i % names.len()];
        let qtype = if i % 3 == 0 { 28 } else { 1 };
        let query = ecs_query(name, qtype, ip, source);
        let f = Frame::new(transport, &query).build();
        let run = prog_test_run(fd, &f, 1).expect("test run");
        // Source prefix 0: the transport source address is the client.
        let client = if source == 0 {
            IpAddr::V4(Ipv4Addr::new(198, 18, 9, 1))
        } else {
            ip
        };
        let decided = engine.resolve(&Question::new(name, qtype, client));
        checked += 1;
        match run.action {
            XDP_TX => {
                by_kernel += 1;
                // `cache` is sticky: the node of the client network, compared exactly.
                sticky += usize::from(name.starts_with("cache."));
                let reply = frame::parse(&run.output).expect("reply parses");
                let r = parse_reply(&reply.payload).expect("reply decodes");
                let Resolution::Addresses {
                    addrs,
                    scope,
                    source: AnswerSource::Geo { .. },
                    ..
                } = &decided
                else {
                    panic!("{name} {qtype} from {client}/{source}: kernel answered {:?}, engine {decided:?}", r.addrs);
                };
                let want_scope = if source == 0 { 0 } else { *scope };
                assert_eq!(
                    r.ecs_scope,
                    Some(want_scope),
                    "{name} from {client}/{source}"
                );
                if name.starts_with("dl.") {
                    // spread: a per-query weighted draw on both sides: same count.
                    assert_eq!(r.addrs.len(), addrs.len(), "{name} from {client}");
                } else {
                    assert_eq!(&r.addrs, addrs, "{name} {qtype} from {client}/{source}");
                    let user = handle(
                        engine,
                        &query.build(),
                        IpAddr::V4(Ipv4Addr::new(198, 18, 9, 1)),
                        Transport::Udp,
                    );
                    assert_eq!(
                        user.response.as_deref(),
                        Some(&reply.payload[..]),
                        "authoritative server vs kernel: {name} {qtype} from {client}/{source}"
                    );
                }
            }
            XDP_PASS => {
                passed += 1;
                // What the kernel passes, the authoritative server answers.
                let q = query.build();
                let user = handle(
                    engine,
                    &q,
                    IpAddr::V4(Ipv4Addr::new(198, 18, 9, 1)),
                    Transport::Udp,
                );
                let response = user.response.expect("the authoritative server answers");
                check_response(&q, &response, Transport::Udp).expect("a valid response");
                assert_eq!(user.rcode, Some(0), "{name} {qtype} from {client}/{source}");
                assert!(
                    !matches!(
                        decided,
                        Resolution::Addresses {
                            source: AnswerSource::Geo { .. },
                            ..
                        }
                    ),
                    "{name} {qtype} from {client}/{source}: kernel passed, engine has a geo answer {decided:?}"
                );
            }
            other => panic!("unexpected action {other}"),
        }
    }
    println!("{checked} questions: {by_kernel} answered by the kernel ({sticky} sticky), {passed} passed to userspace (origin {origin})");
    assert!(
        sticky > 50,
        "the kernel answers the sticky record: {sticky}"
    );
    assert!(
        by_kernel > checked / 3,
        "the kernel should answer most: {by_kernel}/{checked}"
    );
}
