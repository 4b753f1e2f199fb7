//! The benchmarks' load generator (`geodns_tests::gun`) against the real responder on a
//! veth pair, briefly and slowly: every query it sends comes from another address of
//! 198.18.0.0/15, the responder answers each one (the table maps the whole range), and
//! `xdp_count` on the client veth counts exactly those replies. A generator that sent
//! from one address, or a counter that missed replies, would fail here before it could
//! skew a benchmark.
use aya::programs::XdpMode;
use geodns::loader::{KernelProgram, LoadOptions};
use geodns_common::counter;
use geodns_tests::{
    gun::{self, Sources, Template},
    require_bpf,
    table::contents,
    NetnsPair, Side,
};

#[test]
fn every_query_from_another_client_is_answered_and_counted() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("create namespaces");
    let mut xdp = KernelProgram::load(&LoadOptions::default()).expect("load XDP program");
    xdp.install(&contents()).expect("fill maps");
    pair.attach(Side::Server, &mut xdp, "xdp_dns", XdpMode::Driver)
        .expect("attach xdp_dns on the server veth");
    // Bounded: half a second at 20,000 queries a second at most.
    let shot = gun::fire(
        &pair,
        &[Template::new("www.cdn.example.net", 1, 1)],
        Sources::Many,
        0.5,
        20_000,
    )
    .expect("fire");
    let c = xdp.counters().expect("counters");
    let answered = c[counter::ANSWERED_V4 as usize];
    assert!(shot.sent > 1_000, "sent {}", shot.sent);
    assert_eq!(shot.refused, 0, "the veth refused frames at this rate");
    // Every reply is a NOERROR answer, and every one the kernel sent was counted.
    assert_eq!(shot.replies(), shot.rcodes[0], "rcodes {:?}", shot.rcodes);
    assert_eq!(shot.replies(), answered, "replies counted vs sent by XDP");
    assert_eq!(shot.replies(), shot.sent, "a query without a reply");
}
