//! The `sticky` policy in userspace: a client network keeps its node, a node that goes
//! down moves only its own networks, shares follow the weights, and the ECS scope
//! covers the hashed prefix.
mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{engine, Scratch};
use geodns_maps::{
    engine::{QTYPE_A, QTYPE_AAAA},
    Engine, NodeState, Question, Resolution,
};

/// Client networks of the tests: 100,000 /24s spread over 64.0.0.0/2.
const NETWORKS: u32 = 100_000;

fn setup() -> (Scratch, Engine) {
    let s = Scratch::new("sticky");
    let nodes = (1..=4).fold(String::new(), |mut out, i| {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "[nodes.n{i}]\nipv4 = \"198.18.{i}.1\"\nipv6 = \"2001:2:0:{i}::1\""
        );
        out
    });
    let config = s.config(&format!(
        r#"
[zone]
origin = "cdn.example.net."
[[zone.ns]]
name = "ns1.example.org."

{nodes}
[nodes.two]
ipv4 = ["198.18.9.1", "198.18.9.2"]

[maps.even]
"64.0.0.0/2" = ["n1", "n2", "n3", "n4"]
"2001:db8::/32" = ["n1", "n2", "n3", "n4"]

[maps.weighted]
"64.0.0.0/2" = {{ n1 = 1, n2 = 2, n3 = 3, n4 = 4 }}

[maps.multi]
"64.0.0.0/2" = {{ n1 = 1, two = 1 }}

[[records]]
name = "even"
map = "even"
policy = "sticky"

[[records]]
name = "weighted"
map = "weighted"
policy = "sticky"

[[records]]
name = "multi"
map = "multi"
policy = "sticky"

[[records]]
name = "pair"
map = "weighted"
policy = "sticky"
max_answers = 2

[fallback]
n1 = 1
"#
    ));
    let e = engine(config);
    (s, e)
}

/// The `i`-th client network's address with host byte `host`.
fn network(i: u32, host: u8) -> IpAddr {
    // Spread over the /2 so that every /8 of it is used.
    let base = 0x4000_0000 + i.wrapping_mul(2_654_435_761) % (1 << 30);
    IpAddr::V4(Ipv4Addr::from((base & !0xFF) | u32::from(host)))
}

fn answer(e: &Engine, name: &str, qtype: u16, client: IpAddr) -> (Vec<IpAddr>, u8) {
    match e.resolve(&Question::new(
        &format!("{name}.cdn.example.net."),
        qtype,
        client,
    )) {
        Resolution::Addresses { addrs, scope, .. } => (addrs, scope),
        other => panic!("{name} from {client}: {other:?}"),
    }
}

/// Which of n1..n4 an address belongs to (0-based).
fn node(a: IpAddr) -> usize {
    match a {
        IpAddr::V4(a) => usize::from(a.octets()[2]) - 1,
        IpAddr::V6(a) => usize::from(a.segments()[3]) - 1,
    }
}

#[test]
fn the_same_network_always_gets_the_same_node() {
    let (_s, e) = setup();
    for i in 0..2000 {
        let (first, scope) = answer(&e, "even", QTYPE_A, network(i, 1));
        assert_eq!(
            scope, 24,
            "the scope covers the hashed /24 (the rule is a /2)"
        );
        for host in [7, 128, 255] {
            assert_eq!(answer(&e, "even", QTYPE_A, network(i, host)).0, first);
        }
        // AAAA for the same client network: the same node (slots carry node tags).
        let (v6, _) = answer(&e, "even", QTYPE_AAAA, network(i, 1));
        assert_eq!(
            node(v6[0]),
            node(first[0]),
            "A and AAAA of {}",
            network(i, 1)
        );
    }
    // IPv6: a /56 keeps its node whatever the rest of the address.
    for i in 0..2000u64 {
        let net = (0x2001_0db8_u128 << 96)
            | u128::from(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xFF_FFFF) << 72;
        let (first, scope) = answer(&e, "even", QTYPE_AAAA, IpAddr::V6(Ipv6Addr::from(net | 1)));
        assert_eq!(
            scope, 56,
            "the scope covers the hashed /56 (the rule is a /32)"
        );
        let other = net | (0xAB << 64) | 0xFFFF;
        assert_eq!(
            answer(&e, "even", QTYPE_AAAA, IpAddr::V6(Ipv6Addr::from(other))).0,
            first
        );
    }
}

#[test]
fn a_node_going_down_moves_only_its_own_networks() {
    let (_s, e) = setup();
    let before: Vec<usize> = (0..NETWORKS)
        .map(|i| node(answer(&e, "even", QTYPE_A, network(i, 1)).0[0]))
        .collect();
    for gone in 0..4 {
        let mut states = e.states().clone();
        states.set(&format!("n{}", gone + 1), NodeState::Down);
        let after = e.with_states(&states);
        let mut moved = 0u32;
        for (i, was) in (0..NETWORKS).zip(&before) {
            let now = node(answer(&after, "even", QTYPE_A, network(i, 1)).0[0]);
            if now != *was {
                assert_eq!(
                    *was,
                    gone,
                    "network {i} moved from n{} though n{} went down",
                    was + 1,
                    gone + 1
                );
                moved += 1;
            }
            assert_ne!(now, gone);
        }
        let share = f64::from(moved) / f64::from(NETWORKS);
        assert!(
            (share - 0.25).abs() < 0.01,
            "n{} down moved {share:.4} of the networks, expected 1/4 within 1 point",
            gone + 1
        );
    }
    // Weighted: the moved networks are exactly the ones the node had.
    let mut states = e.states().clone();
    states.set("n3", NodeState::Drain);
    let after = e.with_states(&states);
    let (mut had, mut moved) = (0u32, 0u32);
    for i in 0..20_000 {
        let was = node(answer(&e, "weighted", QTYPE_A, network(i, 1)).0[0]);
        let now = node(answer(&after, "weighted", QTYPE_A, network(i, 1)).0[0]);
        had += u32::from(was == 2);
        moved += u32::from(was != now);
        assert!(
            was == now || was == 2,
            "network {i}: n{} -> n{}",
            was + 1,
            now + 1
        );
    }
    assert_eq!(had, moved);
}

#[test]
fn shares_follow_the_weights() {
    let (_s, e) = setup();
    let mut count = [0u32; 4];
    for i in 0..NETWORKS {
        count[node(answer(&e, "weighted", QTYPE_A, network(i, 1)).0[0])] += 1;
    }
    for (i, c) in count.iter().enumerate() {
        let share = f64::from(*c) / f64::from(NETWORKS);
        let want = f64::from(u32::try_from(i + 1).expect("small")) / 10.0;
        assert!(
            (share - want).abs() < 0.02,
            "n{} has {share:.4} of the networks, weight says {want}: {count:?}",
            i + 1
        );
    }
    // A node with two addresses weighs its weight once: n1 = 1, two = 1.
    let two = (0..20_000)
        .filter(|i| {
            answer(&e, "multi", QTYPE_A, network(*i, 1)).0[0]
                .to_string()
                .starts_with("198.18.9.")
        })
        .count();
    assert!(
        (8_000..12_000).contains(&two),
        "two-address node: {two} of 20000"
    );
}

#[test]
fn more_answers_start_at_the_sticky_slot() {
    let (_s, e) = setup();
    for i in 0..500 {
        let (one, _) = answer(&e, "weighted", QTYPE_A, network(i, 1));
        let (two, _) = answer(&e, "pair", QTYPE_A, network(i, 1));
        assert_eq!(two.len(), 2);
        assert_eq!(two[0], one[0]);
    }
}

#[test]
fn explain_names_the_hashed_network_and_its_draw() {
    let (_s, e) = setup();
    let client = network(5, 77);
    let x = e.explain(client, None);
    let rec = x
        .records
        .iter()
        .find(|r| r.name.starts_with("even."))
        .expect("record");
    let pick = rec.a.sticky.expect("a sticky draw");
    assert_eq!(pick.prefix.len(), 24);
    assert_eq!(
        rec.a.addresses[pick.slot],
        answer(&e, "even", QTYPE_A, client).0[0]
    );
}
