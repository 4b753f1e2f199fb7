//! Node health through the XDP path: the compiled test config is installed into the
//! loaded program, the checker rewrites the answer sets of the live generation, and
//! queries run through the program with `BPF_PROG_TEST_RUN` see the change at the same
//! check as the userspace answers. No generation switch happens (the prefix and name
//! maps are never rewritten for a health change).
mod health_common;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use geodns::{
    control::EngineHandle,
    health::{self, admin_request},
    loader::{LoadOptions, XdpDns},
};
use geodns_maps::AnswerSource;
use geodns_tests::{
    client::parse_reply,
    frame::{self, Frame, Query, L3},
    prog_test_run, require_bpf,
};
use health_common::{
    args, checks, config_text, engine, ip, limit, resolve, wait_until, www, TcpTarget, A, B, C,
    CLIENT,
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const LONG: Duration = Duration::from_secs(10);

/// What the program does with an `A` query for `name` from [`CLIENT`] (as ECS /32):
/// `Some(addresses)` when it answers, `None` when it passes the query to userspace.
fn kernel(fd: i32, name: &str) -> Option<Vec<IpAddr>> {
    let q = Query::new(name, 1).ecs(CLIENT, 32);
    let transport = L3::V4 {
        src: Ipv4Addr::new(198, 18, 9, 1),
        dst: Ipv4Addr::new(198, 18, 9, 2),
    };
    let run = prog_test_run(fd, &Frame::new(transport, &q).build(), 1).expect("test run");
    match run.action {
        XDP_TX => {
            let reply = frame::parse(&run.output).expect("reply frame parses");
            Some(parse_reply(&reply.payload).expect("reply decodes").addrs)
        }
        XDP_PASS => None,
        other => panic!("{name}: XDP action {other}"),
    }
}

fn kernel_www(fd: i32) -> Option<Vec<IpAddr>> {
    kernel(fd, "www.cdn.example.net.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_changes_reach_the_kernel_answers_in_place() {
    if !require_bpf() {
        return;
    }
    limit(async {
        let mut ta = TcpTarget::start().await;
        let mut tc = TcpTarget::start().await;
        let handle = EngineHandle::new(engine(&config_text(
            &[("a", ta.check()), ("c", tc.check())],
            &[],
        )));
        let mut loaded = XdpDns::load(&LoadOptions::default()).expect("load the XDP object");
        loaded
            .install(&handle.load().kernel_maps())
            .expect("install the test maps");
        let fd = loaded.program_fd("xdp_dns").expect("program fd");
        let generation = loaded.generation();
        let (control, live) = health::start(&args(100, 300), &handle, Some(loaded))
            .await
            .expect("spawn");
        wait_until("two good checks", LONG, || checks(&control, "a").0 >= 2).await;
        assert_eq!(kernel_www(fd), Some(vec![ip(A)]));

        // a fails: the kernel and userspace move to b at the third failed check.
        let (_, failed0) = checks(&control, "a");
        ta.stop().await;
        wait_until("the kernel to answer b", LONG, || {
            kernel_www(fd) == Some(vec![ip(B)])
        })
        .await;
        let failed = checks(&control, "a").1 - failed0;
        assert!(
            (3..=4).contains(&failed),
            "switched after {failed} failed checks"
        );
        wait_until("userspace to answer b", Duration::from_millis(100), || {
            www(&handle) == vec![ip(B)]
        })
        .await;

        // Spread over { a = 3, b = 1, c = 1 } with a and c down: only b, in the kernel too.
        tc.stop().await;
        wait_until("c down in the kernel", LONG, || {
            (0..50).all(|_| kernel(fd, "dl.cdn.example.net.") == Some(vec![ip(B)]))
        })
        .await;
        tc.restart().await;
        wait_until("c back in the kernel", LONG, || {
            (0..50).any(|_| kernel(fd, "dl.cdn.example.net.") == Some(vec![ip(C)]))
        })
        .await;

        // drain b, the last up candidate: at once the region fails open to a (down by
        // health only), in the kernel too.
        let lo = ip("127.0.0.1");
        let post = |path: &'static str| admin_request(&control, "POST", path, lo);
        assert_eq!(post("/v1/node/b/drain").await.0, 200);
        assert_eq!(kernel_www(fd), Some(vec![ip(A)]));
        assert!(matches!(
            resolve(&handle, "www.cdn.example.net.").1,
            AnswerSource::Geo {
                fail_open: true,
                ..
            }
        ));
        // a taken out by the operator as well: the kernel has no answer for the region
        // and passes; userspace answers from the fallback.
        assert_eq!(post("/v1/node/a/down").await.0, 200);
        assert_eq!(kernel_www(fd), None);
        assert!(matches!(
            resolve(&handle, "www.cdn.example.net.").1,
            AnswerSource::Fallback { .. }
        ));
        assert_eq!(post("/v1/node/a/auto").await.0, 200);
        assert_eq!(post("/v1/node/b/auto").await.0, 200);
        assert_eq!(kernel_www(fd), Some(vec![ip(B)]));

        // a recovers after two good checks.
        let (checks0, failed0) = checks(&control, "a");
        ta.restart().await;
        wait_until("the kernel to answer a again", LONG, || {
            kernel_www(fd) == Some(vec![ip(A)])
        })
        .await;
        let (all, failed) = checks(&control, "a");
        let good = (all - checks0) - (failed - failed0);
        assert!((2..=3).contains(&good), "back after {good} good checks");

        assert_eq!(live.counts().generation, generation, "no generation switch");
        control.stop();
        live.stop().await;
    })
    .await;
}
