//! `BPF_PROG_TEST_RUN` fixture table for the XDP program: {description, input frame,
//! expected action, expected output}. Every `XDP_TX` output is decoded with hickory-proto
//! and checked field by field, its checksums are verified independently, and every
//! `XDP_PASS` output must equal its input byte for byte (passed untouched).
use std::net::{IpAddr, Ipv4Addr};

use geodns::loader::{KernelProgram, LoadOptions};
use geodns_common::counter;
use geodns_maps::defence::kernel_defence;
use geodns_tests::{
    frame::{self, wire_name, Frame, L3},
    prog_test_run, require_bpf,
    table::{contents, eu_v4, eu_v6, lab_v4, spread_v4, sticky_set, EU, WWW},
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        rdata::opt::{EdnsCode, EdnsOption},
        RData,
    },
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// What a fixture row expects.
enum Expect {
    /// `XDP_PASS` with this counter bumped, frame untouched.
    Pass(u32),
    /// `XDP_DROP` with this counter bumped.
    Drop(u32),
    /// `XDP_TX` with these answer addresses (or `spread_from`), and this ECS scope.
    Answer {
        addrs: Vec<IpAddr>,
        /// For spread answers: how many addresses and from which set.
        spread_from: Option<(usize, Vec<IpAddr>)>,
        ecs_scope: Option<u8>,
    },
}

struct Row {
    desc: &'static str,
    frame: Vec<u8>,
    expect: Expect,
}

fn answer(addrs: &[IpAddr], ecs_scope: Option<u8>) -> Expect {
    Expect::Answer {
        addrs: addrs.to_vec(),
        spread_from: None,
        ecs_scope,
    }
}

fn v4_client() -> L3 {
    L3::V4 {
        src: Ipv4Addr::new(198, 18, 7, 1),
        dst: Ipv4Addr::new(198, 18, 7, 2),
    }
}
fn v6_client() -> L3 {
    L3::V6 {
        src: "2001:2::7:1".parse().expect("v6"),
        dst: "2001:2::7:2".parse().expect("v6"),
    }
}
fn eu_client_v4() -> L3 {
    L3::V4 {
        src: Ipv4Addr::new(192, 0, 2, 77),
        dst: Ipv4Addr::new(198, 18, 7, 2),
    }
}
fn eu_client_v6() -> L3 {
    L3::V6 {
        src: "2001:db8:1::77".parse().expect("v6"),
        dst: "2001:2::7:2".parse().expect("v6"),
    }
}

fn q(name: &str, qtype: u16) -> frame::Query {
    frame::Query::new(name, qtype)
}

#[expect(clippy::too_many_lines, reason = "a fixture table")]
fn rows() -> Vec<Row> {
    let www = "www.cdn.example.net.";
    let eu4 = IpAddr::V4(eu_v4());
    let eu6 = IpAddr::V6(eu_v6());
    let lab4 = IpAddr::V4(lab_v4());
    let spread: Vec<IpAddr> = spread_v4().iter().map(|a| IpAddr::V4(*a)).collect();
    let f = |l3: L3, query: frame::Query| Frame::new(l3, &query).build();
    let mut rows = vec![
        Row {
            desc: "A over IPv4, source address in LAB region",
            frame: f(v4_client(), q(www, 1)),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "A over IPv6, source address in LAB region",
            frame: f(v6_client(), q(www, 1)),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "A over IPv4 from an EU source",
            frame: f(eu_client_v4(), q(www, 1)),
            expect: answer(&[eu4], None),
        },
        Row {
            desc: "AAAA over IPv6 from an EU source",
            frame: f(eu_client_v6(), q(www, 28)),
            expect: answer(&[eu6], None),
        },
        Row {
            desc: "AAAA where the chosen node has no IPv6 passes",
            frame: f(v4_client(), q(www, 28)),
            expect: Expect::Pass(counter::PASS_NO_ANSWER),
        },
        Row {
            desc: "mixed-case name matches, case kept in the reply",
            frame: f(v4_client(), q("WwW.CdN.ExAmPlE.NeT.", 1)),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "wildcard record",
            frame: f(eu_client_v4(), q("a1.img.cdn.example.net.", 1)),
            expect: answer(&[eu4], None),
        },
        Row {
            desc: "wildcard record, mixed case, long first label",
            frame: f(
                v4_client(),
                q(
                    "Some-Very-Long-First-Label-0123456789.IMG.cdn.example.net.",
                    1,
                ),
            ),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "wildcard at depth 2 (RFC 4592: any name below the closest encloser)",
            frame: f(v4_client(), q("a.b.img.cdn.example.net.", 1)),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "wildcard at depth 3",
            frame: f(eu_client_v4(), q("A.b.C.img.cdn.example.net.", 1)),
            expect: answer(&[eu4], None),
        },
        Row {
            desc: "wildcard at depth 10 (14 labels)",
            frame: f(
                v4_client(),
                q("a.b.c.d.e.f.g.h.i.j.img.cdn.example.net.", 1),
            ),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "an existing sibling of the wildcard is not covered by it",
            frame: f(v4_client(), q("sibling.img.cdn.example.net.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "below an existing sibling: its closest encloser has no wildcard",
            frame: f(v4_client(), q("x.sibling.img.cdn.example.net.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "an empty non-terminal is not covered by the wildcard",
            frame: f(v4_client(), q("ent.img.cdn.example.net.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "an empty non-terminal blocks the wildcard below it",
            frame: f(v4_client(), q("q.ent.img.cdn.example.net.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "the literal wildcard name passes (userspace answers it)",
            frame: f(v4_client(), q("*.img.cdn.example.net.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "a name under no wildcard walks up to the origin and passes",
            frame: f(v4_client(), q("a.b.nope.cdn.example.net.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "wildcard parent name itself is not served",
            frame: f(v4_client(), q("img.cdn.example.net.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "VLAN tagged",
            frame: Frame::new(v4_client(), &q(www, 1)).vlans(&[0x8100]).build(),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "QinQ (two VLAN tags), IPv6",
            frame: Frame::new(v6_client(), &q(www, 1))
                .vlans(&[0x88A8, 0x8100])
                .build(),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "EDNS without ECS gets OPT back",
            frame: f(v4_client(), q(www, 1).edns(4096)),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "EDNS with DO set: OPT back with DO cleared",
            frame: f(v4_client(), q(www, 1).edns(4096).dnssec_ok()),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "ECS IPv4 /24 in EU",
            frame: f(v4_client(), q(www, 1).ecs("192.0.2.0", 24)),
            expect: answer(&[eu4], Some(24)),
        },
        Row {
            desc: "ECS IPv4 /32 in EU",
            frame: f(v4_client(), q(www, 1).ecs("192.0.2.99", 32)),
            expect: answer(&[eu4], Some(24)),
        },
        Row {
            desc: "ECS IPv4 /0: source address used, scope 0",
            frame: f(eu_client_v4(), q(www, 1).ecs("0.0.0.0", 0)),
            expect: answer(&[eu4], Some(0)),
        },
        Row {
            desc: "ECS IPv6 /56 in EU over IPv4 transport",
            frame: f(v4_client(), q(www, 28).ecs("2001:db8:1:200::", 56)),
            expect: answer(&[eu6], Some(32)),
        },
        Row {
            desc: "ECS IPv6 /128",
            frame: f(v6_client(), q(www, 28).ecs("2001:db8::1", 128)),
            expect: answer(&[eu6], Some(32)),
        },
        Row {
            desc: "ECS IPv6 /0 over IPv6: source used",
            frame: f(eu_client_v6(), q(www, 28).ecs("::", 0)),
            expect: answer(&[eu6], Some(0)),
        },
        Row {
            desc: "ECS IPv4 /24 into a /25 region: scope is the matched /25",
            frame: f(v4_client(), q(www, 1).ecs("203.0.113.128", 25)),
            expect: Expect::Answer {
                addrs: vec![],
                spread_from: Some((2, spread.clone())),
                ecs_scope: Some(25),
            },
        },
        Row {
            desc: "spread policy: two addresses from the weighted set",
            frame: f(v4_client(), q(www, 1).ecs("203.0.113.200", 32)),
            expect: Expect::Answer {
                addrs: vec![],
                spread_from: Some((2, spread.clone())),
                ecs_scope: Some(25),
            },
        },
        // The table's databases alias the three IPv6 ranges onto their IPv4 tree
        // (`table::contents` sets the flags): looked up as the embedded IPv4 address
        // (192.0.2.99 in EU's 192.0.2.0/24), scope = 24 + the alias offset.
        Row {
            desc: "ECS 6to4 /48 of an EU address: bits 16-47, scope 24 + 16",
            frame: f(v4_client(), q(www, 28).ecs("2002:c000:263::", 48)),
            expect: answer(&[eu6], Some(40)),
        },
        Row {
            desc: "ECS 6to4 /40: the EU /24 exactly",
            frame: f(v4_client(), q(www, 1).ecs("2002:c000:200::", 40)),
            expect: answer(&[eu4], Some(40)),
        },
        Row {
            desc: "ECS Teredo /64 of an EU address: bits 32-63, scope 24 + 32",
            frame: f(v4_client(), q(www, 1).ecs("2001:0:c000:263::", 64)),
            expect: answer(&[eu4], Some(56)),
        },
        Row {
            desc: "ECS IPv4-mapped /128 of an EU address: bits 96-127, scope 24 + 96",
            frame: f(v6_client(), q(www, 28).ecs("::ffff:192.0.2.99", 128)),
            expect: answer(&[eu6], Some(120)),
        },
        Row {
            desc: "ECS IPv4-mapped of a /25 region: scope 25 + 96",
            frame: f(v4_client(), q(www, 1).ecs("::ffff:203.0.113.200", 128)),
            expect: Expect::Answer {
                addrs: Vec::new(),
                spread_from: Some((2, spread.clone())),
                ecs_scope: Some(121),
            },
        },
        Row {
            desc: "ECS 6to4 of an address in no region passes",
            frame: f(v4_client(), q(www, 1).ecs("2002:a01:203::", 48)),
            expect: Expect::Pass(counter::PASS_NO_ANSWER),
        },
        Row {
            desc: "ECS just outside 6to4 (2003::/16) uses the IPv6 table",
            frame: f(v4_client(), q(www, 1).ecs("2003:c000:263::", 48)),
            expect: Expect::Pass(counter::PASS_NO_ANSWER),
        },
        Row {
            desc: "6to4 packet source of an EU address, no ECS",
            frame: f(
                L3::V6 {
                    src: "2002:c000:263::1".parse().expect("v6"),
                    dst: "2001:2::7:2".parse().expect("v6"),
                },
                q(www, 1),
            ),
            expect: answer(&[eu4], None),
        },
        Row {
            desc: "Teredo packet source of a LAB address, no ECS",
            frame: f(
                L3::V6 {
                    src: "2001:0:c612:701::1".parse().expect("v6"),
                    dst: "2001:2::7:2".parse().expect("v6"),
                },
                q(www, 1),
            ),
            expect: answer(&[lab4], None),
        },
        // `sticky` (table region 100.64.0.0/16, 2001:db8:5700::/40): the node of the
        // client's /24 or /56 by weighted rendezvous hashing, scope at least that
        // prefix. Expected slots from the same helper userspace answers with.
        Row {
            desc: "sticky: ECS /32 in a /16 region, scope widened to the hashed /24",
            frame: f(v4_client(), q(www, 1).ecs("100.64.1.7", 32)),
            expect: answer(&[sticky_expect("100.64.1.7", false)], Some(24)),
        },
        Row {
            desc: "sticky: another address of the same /24 gets the same node",
            frame: f(v4_client(), q(www, 1).ecs("100.64.1.200", 32)),
            expect: answer(&[sticky_expect("100.64.1.7", false)], Some(24)),
        },
        Row {
            desc: "sticky: an ECS /20 is hashed as its /24 of zeros",
            frame: f(v4_client(), q(www, 1).ecs("100.64.16.0", 20)),
            expect: answer(&[sticky_expect("100.64.16.0", false)], Some(24)),
        },
        Row {
            desc: "sticky: AAAA for an IPv4 ECS client draws among the IPv6 slots",
            frame: f(v4_client(), q(www, 28).ecs("100.64.1.7", 32)),
            expect: answer(&[sticky_expect("100.64.1.7", true)], Some(24)),
        },
        Row {
            desc: "sticky: ECS IPv6 /64, scope widened to the hashed /56",
            frame: f(v4_client(), q(www, 28).ecs("2001:db8:5700:1234::", 64)),
            expect: answer(&[sticky_expect("2001:db8:5700:1234::", true)], Some(56)),
        },
        Row {
            desc: "sticky: IPv4 packet source in the region, no ECS",
            frame: f(
                L3::V4 {
                    src: Ipv4Addr::new(100, 64, 77, 9),
                    dst: Ipv4Addr::new(198, 18, 7, 2),
                },
                q(www, 1),
            ),
            expect: answer(&[sticky_expect("100.64.77.9", false)], None),
        },
        Row {
            desc: "sticky: IPv6 packet source in the region, no ECS, EDNS: scope 0",
            frame: f(
                L3::V6 {
                    src: "2001:db8:5700:ab00::9".parse().expect("v6"),
                    dst: "2001:2::7:2".parse().expect("v6"),
                },
                q(www, 1).edns(1232).ecs("::", 0),
            ),
            expect: answer(&[sticky_expect("2001:db8:5700:ab00::9", false)], Some(0)),
        },
        Row {
            desc: "ECS in a region without answer passes",
            frame: f(v4_client(), q(www, 1).ecs("10.1.2.0", 24)),
            expect: Expect::Pass(counter::PASS_NO_ANSWER),
        },
        Row {
            desc: "ECS with EDNS payload size 512 and other option ignored",
            frame: f(
                v4_client(),
                q(www, 1)
                    .edns(512)
                    .option(10, &[1, 2, 3, 4, 5, 6, 7, 8])
                    .ecs("192.0.2.0", 24),
            ),
            expect: answer(&[eu4], Some(24)),
        },
        // Pass reasons.
        Row {
            desc: "ECS with non-zero scope in a query",
            frame: f(v4_client(), q(www, 1).ecs_raw(1, 24, 8, &[192, 0, 2])),
            expect: Expect::Pass(counter::PASS_ECS),
        },
        Row {
            desc: "ECS with bits set past the prefix",
            frame: f(v4_client(), q(www, 1).ecs_raw(1, 23, 0, &[192, 0, 3])),
            expect: Expect::Pass(counter::PASS_ECS),
        },
        Row {
            desc: "ECS with too many address bytes",
            frame: f(v4_client(), q(www, 1).ecs_raw(1, 16, 0, &[192, 0, 2])),
            expect: Expect::Pass(counter::PASS_ECS),
        },
        Row {
            desc: "ECS family 3",
            frame: f(v4_client(), q(www, 1).ecs_raw(3, 8, 0, &[1])),
            expect: Expect::Pass(counter::PASS_ECS),
        },
        Row {
            desc: "ECS source prefix longer than the family",
            frame: f(v4_client(), q(www, 1).ecs_raw(1, 33, 0, &[1, 2, 3, 4, 0])),
            expect: Expect::Pass(counter::PASS_ECS),
        },
        Row {
            desc: "two ECS options",
            frame: f(
                v4_client(),
                q(www, 1).ecs("192.0.2.0", 24).ecs("192.0.2.0", 24),
            ),
            expect: Expect::Pass(counter::PASS_ECS),
        },
        Row {
            desc: "EDNS version 1",
            frame: f(v4_client(), q(www, 1).edns(1232).edns_version(1)),
            expect: Expect::Pass(counter::PASS_EDNS),
        },
        Row {
            desc: "two additional records",
            frame: f(v4_client(), q(www, 1).edns(1232).extra_additional()),
            expect: Expect::Pass(counter::PASS_EDNS),
        },
        Row {
            desc: "QTYPE MX",
            frame: f(v4_client(), q(www, 15)),
            expect: Expect::Pass(counter::PASS_QTYPE),
        },
        Row {
            desc: "QTYPE ANY",
            frame: f(v4_client(), q(www, 255)),
            expect: Expect::Pass(counter::PASS_QTYPE),
        },
        Row {
            desc: "QCLASS CH",
            frame: f(v4_client(), q(www, 1).class(3)),
            expect: Expect::Pass(counter::PASS_QCLASS),
        },
        Row {
            desc: "name not served",
            frame: f(v4_client(), q("nope.cdn.example.net.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "name outside the zone",
            frame: f(v4_client(), q("www.example.org.", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "root name",
            frame: f(v4_client(), q(".", 1)),
            expect: Expect::Pass(counter::PASS_NOT_SERVED),
        },
        Row {
            desc: "compression pointer in QNAME",
            frame: f(
                v4_client(),
                q(www, 1).raw_qname(&[3, b'w', b'w', b'w', 0xC0, 12]),
            ),
            expect: Expect::Pass(counter::PASS_NAME),
        },
        Row {
            desc: "name longer than the kernel bound",
            frame: f(
                v4_client(),
                q(
                    &format!(
                        "{}.cdn.example.net.",
                        ["a".repeat(60), "b".repeat(60)].join(".")
                    ),
                    1,
                ),
            ),
            expect: Expect::Pass(counter::PASS_NAME),
        },
        Row {
            desc: "more labels than the kernel bound",
            frame: f(
                v4_client(),
                q(&format!("{}cdn.example.net.", "x.".repeat(17)), 1),
            ),
            expect: Expect::Pass(counter::PASS_NAME),
        },
        Row {
            desc: "QR=1 (a response) to the DNS port: dropped",
            frame: f(v4_client(), q(www, 1).flags(0x8000)),
            expect: Expect::Drop(counter::DROPPED_RESPONSE),
        },
        Row {
            desc: "QR=1 over IPv6: dropped",
            frame: f(v6_client(), q(www, 1).flags(0x8400)),
            expect: Expect::Drop(counter::DROPPED_RESPONSE),
        },
        Row {
            desc: "source port 0: dropped",
            frame: Frame::new(v4_client(), &q(www, 1)).src_port(0).build(),
            expect: Expect::Drop(counter::DROPPED_PORT_ZERO),
        },
        Row {
            desc: "source port 53 is a resolver's: answered",
            frame: Frame::new(v4_client(), &q(www, 1)).src_port(53).build(),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "source port 0 on another destination port: not ours, passed",
            frame: Frame::new(v4_client(), &q(www, 1))
                .src_port(0)
                .dst_port(5353)
                .build(),
            expect: Expect::Pass(counter::PASS_NOT_OUR_PORT),
        },
        Row {
            desc: "broadcast destination MAC: dropped",
            frame: with_dst_mac(f(v4_client(), q(www, 1)), [0xFF; 6]),
            expect: Expect::Drop(counter::DROPPED_NOT_UNICAST),
        },
        Row {
            desc: "IPv6 multicast destination MAC: dropped",
            frame: with_dst_mac(f(v6_client(), q(www, 1)), [0x33, 0x33, 0, 0, 0, 1]),
            expect: Expect::Drop(counter::DROPPED_NOT_UNICAST),
        },
        Row {
            desc: "IPv4 destination not served: passed",
            frame: f(
                L3::V4 {
                    src: Ipv4Addr::new(198, 18, 7, 1),
                    dst: Ipv4Addr::new(198, 18, 7, 99),
                },
                q(www, 1),
            ),
            expect: Expect::Pass(counter::PASS_NOT_OUR_ADDRESS),
        },
        Row {
            desc: "IPv6 destination not served: passed",
            frame: f(
                L3::V6 {
                    src: "2001:2::7:1".parse().expect("v6"),
                    dst: "2001:2::7:99".parse().expect("v6"),
                },
                q(www, 1),
            ),
            expect: Expect::Pass(counter::PASS_NOT_OUR_ADDRESS),
        },
        Row {
            desc: "second served IPv4 address: answered",
            frame: f(
                L3::V4 {
                    src: Ipv4Addr::new(198, 18, 7, 1),
                    dst: Ipv4Addr::new(198, 18, 0, 53),
                },
                q(www, 1),
            ),
            expect: answer(&[lab4], None),
        },
        Row {
            desc: "IP total length longer than the frame holds",
            frame: longer_than_frame(f(v4_client(), q(www, 1))),
            expect: Expect::Pass(counter::PASS_TRUNCATED),
        },
        Row {
            desc: "opcode NOTIFY",
            frame: f(v4_client(), q(www, 1).flags(4 << 11)),
            expect: Expect::Pass(counter::PASS_HEADER),
        },
        Row {
            desc: "TC=1 in a query",
            frame: f(v4_client(), q(www, 1).flags(0x0200)),
            expect: Expect::Pass(counter::PASS_HEADER),
        },
        Row {
            desc: "Z bit set",
            frame: f(v4_client(), q(www, 1).flags(0x0040)),
            expect: Expect::Pass(counter::PASS_HEADER),
        },
        Row {
            desc: "QDCOUNT 2",
            frame: f(v4_client(), q(www, 1).counts(2, 0, 0)),
            expect: Expect::Pass(counter::PASS_HEADER),
        },
        Row {
            desc: "ANCOUNT 1",
            frame: f(v4_client(), q(www, 1).counts(1, 1, 0)),
            expect: Expect::Pass(counter::PASS_HEADER),
        },
        Row {
            desc: "trailing garbage after the question",
            frame: f(v4_client(), q(www, 1).trailing(&[0, 0, 0])),
            expect: Expect::Pass(counter::PASS_HEADER),
        },
        Row {
            desc: "other UDP port",
            frame: Frame::new(v4_client(), &q(www, 1)).dst_port(5353).build(),
            expect: Expect::Pass(counter::PASS_NOT_OUR_PORT),
        },
        Row {
            desc: "TCP",
            frame: Frame::new(v4_client(), &q(www, 1)).protocol(6).build(),
            expect: Expect::Pass(counter::PASS_NOT_UDP),
        },
        Row {
            desc: "IPv4 options",
            frame: Frame::new(v4_client(), &q(www, 1)).ipv4_options().build(),
            expect: Expect::Pass(counter::PASS_IP_OPTIONS_OR_FRAGMENT),
        },
        Row {
            desc: "IPv4 fragment (MF)",
            frame: Frame::new(v4_client(), &q(www, 1))
                .ipv4_frag(0x2000)
                .build(),
            expect: Expect::Pass(counter::PASS_IP_OPTIONS_OR_FRAGMENT),
        },
        Row {
            desc: "IPv4 fragment (offset)",
            frame: Frame::new(v4_client(), &q(www, 1))
                .ipv4_frag(0x0010)
                .build(),
            expect: Expect::Pass(counter::PASS_IP_OPTIONS_OR_FRAGMENT),
        },
        Row {
            desc: "IPv6 with a hop-by-hop extension header",
            frame: Frame::new(v6_client(), &q(www, 1))
                .ipv6_hop_by_hop()
                .build(),
            expect: Expect::Pass(counter::PASS_IPV6_EXT_HEADER),
        },
        Row {
            desc: "ARP (not IP)",
            frame: frame::arp(),
            expect: Expect::Pass(counter::PASS_NOT_IP),
        },
    ];
    for port in geodns_common::DEFAULT_REFLECTOR_PORTS {
        rows.push(Row {
            desc: "source port of a reflector service: dropped",
            frame: Frame::new(v4_client(), &q(www, 1)).src_port(port).build(),
            expect: Expect::Drop(counter::DROPPED_REFLECTOR_PORT),
        });
    }
    rows.push(Row {
        desc: "reflector source port over IPv6: dropped",
        frame: Frame::new(v6_client(), &q(www, 1)).src_port(19).build(),
        expect: Expect::Drop(counter::DROPPED_REFLECTOR_PORT),
    });
    // Truncated frames at every header boundary (and one byte into each header).
    // Frames shorter than an Ethernet header never reach XDP (BPF_PROG_TEST_RUN
    // rejects them too), so the cuts start at 14.
    let full = f(v4_client(), q(www, 1).ecs("192.0.2.0", 24));
    let vlan = Frame::new(v6_client(), &q(www, 1)).vlans(&[0x8100]).build();
    for (desc, cut) in [
        ("truncated: inside a VLAN tag", 16),
        ("truncated: inside IPv6 after a VLAN tag", 18 + 39),
        ("truncated: after IPv6 after a VLAN tag", 18 + 40),
    ] {
        rows.push(Row {
            desc,
            frame: vlan[..cut].to_vec(),
            expect: Expect::Pass(counter::PASS_TRUNCATED),
        });
    }
    let dns = 14 + 20 + 8;
    let qname_end = dns + 12 + wire_name(www).len();
    for (desc, cut) in [
        ("truncated: after Ethernet", 14),
        ("truncated: inside IPv4", 14 + 19),
        ("truncated: after IPv4", 14 + 20),
        ("truncated: after UDP", dns),
        ("truncated: inside DNS header", dns + 11),
        ("truncated: after DNS header", dns + 12),
        ("truncated: inside QNAME", dns + 15),
        ("truncated: after QNAME", qname_end),
        ("truncated: after QTYPE", qname_end + 2),
        ("truncated: after question", qname_end + 4),
        ("truncated: inside OPT", qname_end + 4 + 6),
        ("truncated: inside ECS", full.len() - 1),
    ] {
        rows.push(Row {
            desc,
            frame: full[..cut].to_vec(),
            expect: Expect::Pass(counter::PASS_TRUNCATED),
        });
    }
    rows
}

/// The alias flags come with the installed table: a table without them answers
/// 6to4, Teredo and IPv4-mapped clients from the IPv6 table (here `::/1`, region 0:
/// pass), and installing one with them again follows them.
#[test]
fn aliases_follow_the_installed_table() {
    if !require_bpf() {
        return;
    }
    let mut xdp = load();
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    let f = |query: frame::Query| Frame::new(v4_client(), &query).build();
    let www = "www.cdn.example.net.";
    let frames = [
        f(q(www, 1).ecs("2002:c000:263::", 48)),
        f(q(www, 1).ecs("2001:0:c000:263::", 64)),
        f(q(www, 1).ecs("::ffff:192.0.2.99", 128)),
    ];
    let mut without = contents();
    without.aliases = 0;
    for (table, want) in [
        (&without, XDP_PASS),
        (&contents(), XDP_TX),
        (&without, XDP_PASS),
    ] {
        xdp.install(table).expect("install");
        // Trie-only too: the translation is ahead of both lookups.
        for flags in [0, geodns_common::STATE_FLAG_TRIE_ONLY] {
            xdp.set_flags(flags).expect("flags");
            for frame in &frames {
                let run = prog_test_run(fd, frame, 1).expect("BPF_PROG_TEST_RUN");
                assert_eq!(
                    run.action, want,
                    "aliases {:#x}, flags {flags}",
                    table.aliases
                );
            }
        }
    }
}

/// `frame` (IPv4, untagged) with another destination MAC.
fn with_dst_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&mac);
    frame
}

/// `frame` (IPv4, untagged) with IP and UDP lengths 4 bytes longer than it holds.
fn longer_than_frame(mut frame: Vec<u8>) -> Vec<u8> {
    for at in [14 + 2, 14 + 20 + 4] {
        let n = u16::from_be_bytes([frame[at], frame[at + 1]]) + 4;
        frame[at..at + 2].copy_from_slice(&n.to_be_bytes());
    }
    frame
}

/// The addresses the fixture table serves: the test clients' destinations.
fn served() -> Vec<IpAddr> {
    ["198.18.7.2", "198.18.0.53", "2001:2::7:2"]
        .iter()
        .map(|a| a.parse().expect("address"))
        .collect()
}

fn load_with(rrl: &geodns_maps::config::Rrl) -> KernelProgram {
    let (defence, complete) =
        kernel_defence(rrl, &geodns_maps::config::Guard::default(), Some(&served()));
    assert!(complete);
    let mut xdp = KernelProgram::load(&LoadOptions {
        defence,
        ..LoadOptions::default()
    })
    .expect("load the XDP program");
    xdp.install(&contents()).expect("fill the maps");
    xdp
}

/// The fixture table's program: RRL off, the served addresses above.
fn load() -> KernelProgram {
    load_with(&rrl(0, 1, 2))
}

fn rrl(rate: u32, burst: u32, slip: u32) -> geodns_maps::config::Rrl {
    let mut r = geodns_maps::config::Rrl::default();
    r.rate = rate;
    r.burst = burst;
    r.slip = slip;
    r
}

#[test]
fn fixture_table() {
    if !require_bpf() {
        return;
    }
    let mut xdp = load();
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    let rows = rows();
    assert!(rows.len() >= 40, "the issue asks for at least 40 rows");
    let mut failures = Vec::new();
    for row in &rows {
        let before = xdp.counters().expect("counters");
        let run = prog_test_run(fd, &row.frame, 1).expect("BPF_PROG_TEST_RUN");
        let after = xdp.counters().expect("counters");
        let outcome = check_row(row, run.action, &run.output, &before, &after);
        if let Err(why) = outcome {
            failures.push(format!("{}: {why}", row.desc));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    println!("{} fixture rows passed", rows.len());
}

fn check_row(
    row: &Row,
    action: u32,
    output: &[u8],
    before: &[u64],
    after: &[u64],
) -> Result<(), String> {
    let bumped = |c: u32| after[c as usize] == before[c as usize] + 1;
    match &row.expect {
        Expect::Pass(reason) => {
            if action != XDP_PASS {
                return Err(format!("action {action}, expected XDP_PASS"));
            }
            if output != row.frame.as_slice() {
                return Err("passed frame was modified".into());
            }
            if !bumped(*reason) {
                return Err(format!(
                    "counter {} not bumped; changes: {:?}",
                    counter::NAMES[*reason as usize],
                    changed(before, after)
                ));
            }
            Ok(())
        }
        Expect::Drop(reason) => {
            if action != XDP_DROP {
                return Err(format!(
                    "action {action}, expected XDP_DROP; changes: {:?}",
                    changed(before, after)
                ));
            }
            if !bumped(*reason) {
                return Err(format!(
                    "counter {} not bumped; changes: {:?}",
                    counter::NAMES[*reason as usize],
                    changed(before, after)
                ));
            }
            Ok(())
        }
        Expect::Answer {
            addrs,
            spread_from,
            ecs_scope,
        } => {
            if action != XDP_TX {
                return Err(format!(
                    "action {action}, expected XDP_TX; changes: {:?}",
                    changed(before, after)
                ));
            }
            check_reply(&row.frame, output, addrs, spread_from.as_ref(), *ecs_scope)
        }
    }
}

fn changed(before: &[u64], after: &[u64]) -> Vec<&'static str> {
    (0..before.len())
        .filter(|&i| before[i] != after[i])
        .map(|i| counter::NAMES[i])
        .collect()
}

/// Decodes the reply and checks it field by field against the query.
fn check_reply(
    query_frame: &[u8],
    reply_frame: &[u8],
    addrs: &[IpAddr],
    spread_from: Option<&(usize, Vec<IpAddr>)>,
    ecs_scope: Option<u8>,
) -> Result<(), String> {
    let query = frame::parse(query_frame).ok_or("query frame does not parse")?;
    let reply = frame::parse(reply_frame).ok_or("reply frame does not parse")?;
    // Link and network layers: swapped, lengths and checksums right.
    if reply.dst_mac != query.src_mac || reply.src_mac != query.dst_mac {
        return Err("MACs not swapped".into());
    }
    if reply.vlans != query.vlans {
        return Err("VLAN tags changed".into());
    }
    if reply.src_ip != query.dst_ip || reply.dst_ip != query.src_ip {
        return Err("IP addresses not swapped".into());
    }
    if reply.src_port != query.dst_port || reply.dst_port != query.src_port {
        return Err("ports not swapped".into());
    }
    frame::verify_lengths_and_checksums(reply_frame).map_err(|e| format!("reply: {e}"))?;

    let q = Message::from_vec(&query.payload).map_err(|e| format!("query: {e}"))?;
    let m = Message::from_vec(&reply.payload).map_err(|e| format!("reply decode: {e}"))?;
    let md = &m.metadata;
    if md.id != q.metadata.id {
        return Err("id changed".into());
    }
    if md.message_type != hickory_proto::op::MessageType::Response
        || !md.authoritative
        || md.truncation
        || md.recursion_available
        || md.authentic_data
        || md.recursion_desired != q.metadata.recursion_desired
        || md.checking_disabled != q.metadata.checking_disabled
        || md.response_code != ResponseCode::NoError
    {
        return Err(format!("flags wrong: {md:?}"));
    }
    if m.queries != q.queries {
        return Err("question changed".into());
    }
    // The question keeps the client's case; the answers point at it.
    let qname = &q.queries[0].name;
    let got: Vec<IpAddr> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => Ok(IpAddr::V4(a.0)),
            RData::AAAA(a) => Ok(IpAddr::V6(a.0)),
            other => Err(format!("unexpected record {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    for r in &m.answers {
        if &r.name != qname || r.ttl != 60 || r.dns_class != hickory_proto::rr::DNSClass::IN {
            return Err(format!("answer record header wrong: {r:?}"));
        }
    }
    match spread_from {
        None => {
            if got != addrs {
                return Err(format!("answers {got:?}, expected {addrs:?}"));
            }
        }
        Some((n, set)) => {
            if got.len() != *n || !got.iter().all(|a| set.contains(a)) || got[0] == got[1] {
                return Err(format!("spread answers {got:?} not {n} of {set:?}"));
            }
        }
    }
    if !m.authorities.is_empty() || !m.additionals.is_empty() {
        return Err("unexpected authority/additional records".into());
    }
    // EDNS: present iff the query had it; 1232, version 0, DO clear, only ECS echoed.
    match (&q.edns, &m.edns) {
        (None, None) => {}
        (Some(qe), Some(re)) => {
            if re.max_payload() != 1232 || re.version() != 0 || re.flags().dnssec_ok {
                return Err(format!("OPT wrong: {re:?}"));
            }
            let q_ecs = qe.option(EdnsCode::Subnet);
            let r_ecs = re.option(EdnsCode::Subnet);
            let others = re.options().as_ref().len() - usize::from(r_ecs.is_some());
            if others != 0 {
                return Err("options other than ECS echoed".into());
            }
            match (q_ecs, r_ecs, ecs_scope) {
                (None, None, None) => {}
                (Some(EdnsOption::Subnet(qs)), Some(EdnsOption::Subnet(rs)), Some(scope)) => {
                    if rs.addr() != qs.addr()
                        || rs.source_prefix() != qs.source_prefix()
                        || rs.scope_prefix() != scope
                    {
                        return Err(format!("ECS echo {rs:?}, expected scope {scope} of {qs:?}"));
                    }
                }
                other => return Err(format!("ECS mismatch {other:?}")),
            }
        }
        other => return Err(format!("EDNS presence mismatch {other:?}")),
    }
    Ok(())
}

/// The address the table's sticky set gives `client` (its A or AAAA slot), computed
/// by the helper userspace uses.
fn sticky_expect(client: &str, v6: bool) -> IpAddr {
    let client: IpAddr = client.parse().expect("client address");
    let set = sticky_set();
    let key = geodns_maps::engine::sticky_key(client);
    if v6 {
        let i = geodns_common::sticky_slot(key, &set.cum_v6, &set.tag_v6, usize::from(set.n_v6));
        IpAddr::from(set.v6[i])
    } else {
        let i = geodns_common::sticky_slot(key, &set.cum_v4, &set.tag_v4, usize::from(set.n_v4));
        IpAddr::from(set.v4[i])
    }
}

/// Sticky answers: for 4,000 client /24s (ECS, random host bits) and 1,000 /56s the
/// kernel's node is the userspace helper's, the same /24 always gets the same node
/// (asked twice with other host bits), and the nodes' shares of the networks follow
/// their weights (1:2:3 for IPv4, 1:2 for IPv6; within 3 points at these counts).
#[test]
fn sticky_answers_follow_the_client_network() {
    if !require_bpf() {
        return;
    }
    let mut xdp = load();
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    let ask = |ecs: &str, source: u8, qtype: u16| -> (IpAddr, u8) {
        let frame = Frame::new(
            v4_client(),
            &q("www.cdn.example.net.", qtype).ecs(ecs, source),
        )
        .build();
        let run = prog_test_run(fd, &frame, 1).expect("test run");
        assert_eq!(run.action, XDP_TX, "{ecs}/{source}");
        let reply = frame::parse(&run.output).expect("reply parses");
        let r = geodns_tests::client::parse_reply(&reply.payload).expect("reply decodes");
        (r.addrs[0], r.ecs_scope.expect("ECS echoed"))
    };
    let node_of = |a: IpAddr| match a {
        IpAddr::V4(a) => match a.octets()[3] {
            11 => 0,
            12 | 13 => 1,
            _ => 2,
        },
        IpAddr::V6(a) => usize::from(a.octets()[15] - 0x11),
    };
    let mut shares = [0u32; 3];
    let mut rng = geodns_tests::synth::Rng(0x5717);
    let runs = 4000u32;
    for _ in 0..runs {
        let r = rng.next_u64();
        let [b2, h1, h2, ..] = r.to_le_bytes();
        let (a, scope) = ask(&format!("100.64.{b2}.{h1}"), 32, 1);
        assert_eq!(scope, 24);
        assert_eq!(
            a,
            sticky_expect(&format!("100.64.{b2}.0"), false),
            "100.64.{b2}.{h1}"
        );
        let (again, _) = ask(&format!("100.64.{b2}.{h2}"), 32, 1);
        assert_eq!(again, a, "the same /24 keeps its node");
        shares[node_of(a)] += 1;
    }
    for (i, w) in [1.0, 2.0, 3.0].iter().enumerate() {
        let share = f64::from(shares[i]) / f64::from(runs);
        assert!(
            (share - w / 6.0).abs() < 0.03,
            "node {i}: {share:.3} of the /24s, expected {:.3}: {shares:?}",
            w / 6.0
        );
    }
    let mut shares6 = [0u32; 2];
    for _ in 0..1000 {
        let [b5, b6, h7, ..] = rng.next_u64().to_le_bytes();
        let mut net = [0x20, 1, 0xd, 0xb8, 0x57, b5, b6, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let net_str = std::net::Ipv6Addr::from(net).to_string();
        net[7] = h7;
        net[15] = 1;
        let host = std::net::Ipv6Addr::from(net).to_string();
        let (a, scope) = ask(&host, 128, 28);
        assert_eq!(scope, 56);
        assert_eq!(a, sticky_expect(&net_str, true), "{host}");
        shares6[node_of(a)] += 1;
    }
    let share = f64::from(shares6[0]) / 1000.0;
    assert!((share - 1.0 / 3.0).abs() < 0.05, "IPv6 shares {shares6:?}");
}

/// Spread answers follow the weights (1:2:3) over many runs.
#[test]
fn spread_follows_weights() {
    if !require_bpf() {
        return;
    }
    let mut xdp = load();
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    let frame = Frame::new(
        v4_client(),
        &q("www.cdn.example.net.", 1).ecs("203.0.113.200", 32),
    )
    .build();
    let mut firsts = [0u32; 3];
    let runs = 3000;
    for _ in 0..runs {
        let run = prog_test_run(fd, &frame, 1).expect("test run");
        assert_eq!(run.action, XDP_TX);
        let reply = frame::parse(&run.output).expect("reply parses");
        let m = Message::from_vec(&reply.payload).expect("reply decodes");
        let RData::A(a) = &m.answers[0].data else {
            panic!("not an A record")
        };
        let i = spread_v4()
            .iter()
            .position(|x| *x == a.0)
            .expect("a spread address");
        firsts[i] += 1;
    }
    // Expected 1/6, 2/6, 3/6 of the runs; allow 4 percentage points.
    for (i, w) in [1.0, 2.0, 3.0].iter().enumerate() {
        let share = f64::from(firsts[i]) / f64::from(runs);
        assert!(
            (share - w / 6.0).abs() < 0.04,
            "first answer {i} share {share:.3}, expected {:.3}: {firsts:?}",
            w / 6.0
        );
    }
}

/// Swapping in a new generation changes answers at once; the old one is untouched
/// until the next swap.
#[test]
fn generation_swap() {
    if !require_bpf() {
        return;
    }
    let mut xdp = load();
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    let frame = Frame::new(eu_client_v4(), &q("www.cdn.example.net.", 1)).build();
    let first = |xdp: &mut KernelProgram| {
        let _ = xdp;
        let run = prog_test_run(fd, &frame, 1).expect("test run");
        assert_eq!(run.action, XDP_TX);
        let reply = frame::parse(&run.output).expect("reply parses");
        let m = Message::from_vec(&reply.payload).expect("reply decodes");
        match &m.answers[0].data {
            RData::A(a) => a.0,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(first(&mut xdp), eu_v4());
    let g0 = xdp.generation();
    let mut c = contents();
    for (k, v) in &mut c.answers {
        if k.region == EU && k.record == WWW {
            v.v4[0] = [192, 0, 2, 99];
        }
    }
    let stats = xdp.install(&c).expect("install new generation");
    assert_ne!(xdp.generation(), g0, "generation flipped");
    assert!(stats.written > 0);
    assert_eq!(first(&mut xdp), Ipv4Addr::new(192, 0, 2, 99));
    // Swap back: only the differing entry is rewritten.
    let stats = xdp.install(&contents()).expect("install again");
    assert_eq!(xdp.generation(), g0);
    assert_eq!(first(&mut xdp), eu_v4());
    assert!(stats.written <= 1, "diff install wrote {stats:?}");
}

/// Node-state changes rewrite answers of the generation in use, in place: a new set,
/// no answer (the kernel passes, counted), and back, with the generation unchanged;
/// the other keys keep answering throughout.
#[test]
fn answers_change_in_place() {
    if !require_bpf() {
        return;
    }
    let mut xdp = load();
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    let frame = Frame::new(eu_client_v4(), &q("www.cdn.example.net.", 1)).build();
    let other = Frame::new(v4_client(), &q("www.cdn.example.net.", 1)).build();
    let run = |frame: &[u8]| prog_test_run(fd, frame, 1).expect("test run");
    let first_a = |out: &[u8]| {
        let reply = frame::parse(out).expect("reply parses");
        let m = Message::from_vec(&reply.payload).expect("reply decodes");
        match &m.answers[0].data {
            RData::A(a) => a.0,
            other => panic!("unexpected {other:?}"),
        }
    };
    let other_before = run(&other).output;
    let key = geodns_common::AnswerKey {
        record: WWW,
        region: EU,
    };
    let mut set = contents()
        .answers
        .iter()
        .find(|(k, _)| *k == key)
        .expect("EU answer")
        .1;
    let g = xdp.generation();
    set.v4[0] = [192, 0, 2, 7];
    xdp.update_answers(&[(key, Some(set))]).expect("update");
    assert_eq!(first_a(&run(&frame).output), Ipv4Addr::new(192, 0, 2, 7));

    xdp.update_answers(&[(key, None)]).expect("remove");
    let before = xdp.counters().expect("counters");
    let r = run(&frame);
    assert_eq!(r.action, XDP_PASS, "no answer: the kernel passes");
    assert_eq!(r.output, frame, "passed untouched");
    let after = xdp.counters().expect("counters");
    assert_eq!(changed(&before, &after), vec!["rx", "pass_no_answer"]);

    let original = contents()
        .answers
        .iter()
        .find(|(k, _)| *k == key)
        .expect("EU answer")
        .1;
    xdp.update_answers(&[(key, Some(original))])
        .expect("restore");
    assert_eq!(first_a(&run(&frame).output), eu_v4());
    assert_eq!(xdp.generation(), g, "no generation switch");
    assert_eq!(run(&other).output, other_before, "other keys unchanged");
}

/// What one query of the rate-limit sequence must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rrl {
    Answer,
    /// An empty TC=1 reply.
    Slip,
    Dropped,
}

/// Runs `frame` once and checks the outcome against `want`, the reply in full.
fn rrl_step(xdp: &KernelProgram, fd: i32, frame: &[u8], want: Rrl, what: &str) {
    let before = xdp.counters().expect("counters");
    let run = prog_test_run(fd, frame, 1).expect("BPF_PROG_TEST_RUN");
    let after = xdp.counters().expect("counters");
    let bumped = |c: u32| after[c as usize] == before[c as usize] + 1;
    match want {
        Rrl::Answer => {
            assert_eq!(run.action, XDP_TX, "{what}: answered");
            let m = Message::from_vec(&frame::parse(&run.output).expect("reply").payload)
                .expect("reply decodes");
            assert!(
                !m.metadata.truncation && m.answers.len() == 1,
                "{what}: {m:?}"
            );
        }
        Rrl::Slip => {
            assert_eq!(run.action, XDP_TX, "{what}: slipped");
            assert!(bumped(counter::RRL_SLIPPED), "{what}: rrl_slipped");
            frame::verify_lengths_and_checksums(&run.output).expect("slip checksums");
            let reply = frame::parse(&run.output).expect("reply");
            let m = Message::from_vec(&reply.payload).expect("reply decodes");
            let q = Message::from_vec(&frame::parse(frame).expect("query").payload)
                .expect("query decodes");
            let md = &m.metadata;
            assert!(
                md.truncation
                    && md.authoritative
                    && md.response_code == ResponseCode::NoError
                    && md.id == q.metadata.id
                    && m.answers.is_empty()
                    && m.authorities.is_empty()
                    && m.queries == q.queries
                    && m.edns.is_some() == q.edns.is_some(),
                "{what}: an empty TC=1 reply with the question: {m:?}"
            );
        }
        Rrl::Dropped => {
            assert_eq!(run.action, XDP_DROP, "{what}: dropped");
            assert!(bumped(counter::RRL_DROPPED), "{what}: rrl_dropped");
        }
    }
}

/// RRL in the kernel: a bucket per source prefix and record gives `burst` answers at
/// once, then every `slip`-th query over the limit gets an empty TC=1 reply and the
/// rest are dropped. The ECS address does not pick the bucket (anyone can write it);
/// another /24, another record, and IPv6 by /56 do. `slip = 0` drops all.
#[test]
fn rate_limit_sequence() {
    use Rrl::{Answer, Dropped, Slip};
    if !require_bpf() {
        return;
    }
    // 1 answer a second: the test runs in milliseconds, so nothing refills.
    let xdp = load_with(&rrl(1, 2, 2));
    let mut xdp = xdp;
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    let www = "www.cdn.example.net.";
    let v4 = |src: [u8; 4], query: frame::Query| {
        Frame::new(
            L3::V4 {
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::new(198, 18, 7, 2),
            },
            &query,
        )
        .build()
    };
    let a = v4([198, 18, 7, 1], q(www, 1));
    for (i, want) in [Answer, Answer, Dropped, Slip, Dropped, Slip]
        .into_iter()
        .enumerate()
    {
        rrl_step(&xdp, fd, &a, want, &format!("query {i} from 198.18.7.1"));
    }
    let with_ecs = v4([198, 18, 7, 1], q(www, 1).id(7).ecs("192.0.2.0", 24));
    rrl_step(
        &xdp,
        fd,
        &with_ecs,
        Dropped,
        "an ECS address does not pick the bucket",
    );
    rrl_step(
        &xdp,
        fd,
        &with_ecs,
        Slip,
        "slip with EDNS and ECS: OPT kept",
    );
    let neighbour = v4([198, 18, 7, 200], q(www, 1));
    rrl_step(
        &xdp,
        fd,
        &neighbour,
        Dropped,
        "the same /24 shares the bucket",
    );
    let other = v4([198, 18, 8, 1], q(www, 1));
    rrl_step(&xdp, fd, &other, Answer, "another /24 has its own");
    let img = v4([198, 18, 7, 1], q("a.img.cdn.example.net.", 1));
    rrl_step(&xdp, fd, &img, Answer, "another record has its own");
    let aaaa = v4([198, 18, 7, 1], q(www, 28).ecs("2001:db8:1::", 48));
    rrl_step(&xdp, fd, &aaaa, Slip, "AAAA of the same record shares it");
    let v6 = |src: &str| {
        Frame::new(
            L3::V6 {
                src: src.parse().expect("v6"),
                dst: "2001:2::7:2".parse().expect("v6"),
            },
            &q(www, 1),
        )
        .build()
    };
    let six = v6("2001:2::7:1");
    for want in [Answer, Answer, Dropped, Slip] {
        rrl_step(&xdp, fd, &six, want, "IPv6 source");
    }
    rrl_step(&xdp, fd, &v6("2001:2:0:ff::1"), Dropped, "the same /56");
    rrl_step(&xdp, fd, &v6("2001:2:0:100::1"), Answer, "another /56");

    let mut xdp = load_with(&rrl(1, 1, 0));
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    rrl_step(&xdp, fd, &a, Answer, "slip 0: the burst");
    for i in 0..5 {
        rrl_step(&xdp, fd, &a, Dropped, &format!("slip 0: dropped {i}"));
    }
}

/// The geo reply's UDP checksum is summed from what the program writes and from the
/// question as parsed (no pass over the packet): every shape of query must still
/// get a reply whose checksums verify. Random names under the `*.img` wildcard (odd and
/// even lengths, any case, 1..=3 labels above it), A and AAAA, over IPv4 and IPv6,
/// without EDNS, with EDNS and with ECS of every source length (address bytes at odd
/// and even offsets); every combination must be answered and verified at least once.
#[test]
fn reply_checksums_hold_for_every_query_shape() {
    if !require_bpf() {
        return;
    }
    let mut xdp = load();
    // The wildcard's EU node gets an IPv6 address too, so AAAA is answered for names
    // of every length.
    let mut maps = contents();
    for (key, set) in &mut maps.answers {
        if key.record == geodns_tests::table::IMG && key.region == EU {
            *set = geodns_tests::table::answer_set(
                geodns_common::POLICY_BEST,
                1,
                &[(eu_v4(), 10)],
                &[(eu_v6(), 10)],
            );
        }
    }
    xdp.install(&maps).expect("install");
    let fd = xdp.program_fd("xdp_dns").expect("program fd");
    let mut rng = geodns_tests::synth::Rng(0x000C_5E0D);
    let mut seen = std::collections::BTreeSet::new();
    let mut answered = 0;
    let rounds = 3000;
    for _ in 0..rounds {
        let mut name = String::new();
        // At most 3 x 25 + 21 wire bytes: within what the kernel answers.
        for _ in 0..=rng.below(2) {
            let len = 1 + rng.below(24);
            for _ in 0..len {
                let c = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
                    [usize::try_from(rng.below(63)).expect("index")];
                name.push(char::from(c));
            }
            name.push('.');
        }
        name.push_str("img.cdn.example.net.");
        let qtype = if rng.below(2) == 0 { 1 } else { 28 };
        let v6 = rng.below(2) == 0;
        let l3 = if v6 { eu_client_v6() } else { eu_client_v4() };
        let edns = rng.below(3);
        let mut query = q(&name, qtype);
        let mut ecs_len = None;
        if edns == 1 {
            query = query.edns(1232);
        } else if edns == 2 {
            // ECS from the EU networks, truncated to a random source length.
            let (family, addr, max) = if rng.below(2) == 0 {
                (1, vec![192, 0, 2, 77], 32)
            } else {
                let a: std::net::Ipv6Addr = "2001:db8:1::77".parse().expect("v6");
                (2, a.octets().to_vec(), 128)
            };
            let source = u8::try_from(rng.below(max + 1)).expect("source");
            let alen = usize::from(source).div_ceil(8);
            let mut bytes = addr[..alen].to_vec();
            if source % 8 != 0 {
                bytes[alen - 1] &= 0xFF << (8 - source % 8);
            }
            query = query.edns(1232).ecs_raw(family, source, 0, &bytes);
            ecs_len = Some(alen % 2);
        }
        let frame = Frame::new(l3, &query).build();
        let run = prog_test_run(fd, &frame, 1).expect("BPF_PROG_TEST_RUN");
        if run.action != XDP_TX {
            continue;
        }
        answered += 1;
        frame::verify_lengths_and_checksums(&run.output)
            .unwrap_or_else(|e| panic!("{name} type {qtype} edns {edns}: {e}"));
        let reply = frame::parse(&run.output).expect("reply parses");
        Message::from_vec(&reply.payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        let name_odd = wire_name(&name).len() % 2;
        seen.insert((name_odd, qtype, v6, edns, ecs_len));
    }
    assert!(answered > rounds / 2, "{answered} of {rounds} answered");
    for name_odd in 0..2 {
        for qtype in [1, 28] {
            for v6 in [false, true] {
                for (edns, ecs) in [(0, None), (1, None), (2, Some(0)), (2, Some(1))] {
                    let shape = (name_odd, qtype, v6, edns, ecs);
                    assert!(seen.contains(&shape), "never answered: {shape:?}");
                }
            }
        }
    }
}

/// `xdp_grow`, the baseline of `xdp_ns_grow_tail` (the price of the one helper call a
/// geo answer makes), does what the figure says: the frame comes back one `A` record
/// (16 bytes) longer, its bytes unchanged and the new ones zeroed by the helper, and
/// passed.
#[test]
fn grow_baseline_adds_one_zeroed_record() {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    if !require_bpf() {
        return;
    }
    let ebpf = geodns_tests::netns::load_baseline("xdp_grow").expect("load the baseline");
    let program: &aya::programs::Xdp = ebpf
        .program("xdp_grow")
        .expect("xdp_grow in the baseline object")
        .try_into()
        .expect("an XDP program");
    let fd = program.fd().expect("fd").as_fd().as_raw_fd();
    let frame = Frame::new(v4_client(), &q("www.cdn.example.net.", 1)).build();
    let run = prog_test_run(fd, &frame, 1).expect("test run");
    assert_eq!(run.action, XDP_PASS);
    assert_eq!(run.output.len(), frame.len() + 16);
    assert_eq!(&run.output[..frame.len()], &frame[..]);
    assert!(run.output[frame.len()..].iter().all(|b| *b == 0));
}
