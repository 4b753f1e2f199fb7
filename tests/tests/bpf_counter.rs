//! The smallest kernel test: one crafted Ethernet/IPv4/UDP/DNS frame through
//! `BPF_PROG_TEST_RUN` on the freshly loaded program (no table installed) is passed
//! untouched and counted in `COUNTERS[RX]`. If this fails, nothing else in the kernel
//! tiers can be trusted: the object, the loader or the test run itself is broken.
use std::net::Ipv4Addr;

use geodns::loader::{KernelProgram, LoadOptions};
use geodns_common::counter;
use geodns_tests::{
    frame::{Frame, Query, L3},
    prog_test_run, require_bpf,
};

const XDP_PASS: u32 = 2;

#[test]
fn dns_frame_is_passed_and_counted() {
    if !require_bpf() {
        return;
    }
    let mut xdp = KernelProgram::load(&LoadOptions::default()).expect("load the XDP object");
    let fd = xdp.program_fd("xdp_dns").expect("xdp_dns fd");
    let frame = Frame::new(
        L3::V4 {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
        },
        &Query::new("www.cdn.example.net.", 1),
    )
    .build();
    let before = xdp.counters().expect("read counters");
    let run = prog_test_run(fd, &frame, 1).expect("BPF_PROG_TEST_RUN");
    let after = xdp.counters().expect("read counters");
    assert_eq!(run.action, XDP_PASS, "nothing is served yet, so it passes");
    assert_eq!(run.output, frame, "a passed frame is untouched");
    let rx = counter::RX as usize;
    assert_eq!(after[rx], before[rx] + 1, "COUNTERS[RX] counts the frame");
}
