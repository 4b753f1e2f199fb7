//! Node health against real TCP and HTTP(S) servers on loopback that each test starts
//! and stops: `fall` failed checks take a node down, `rise` good ones bring it back, and
//! the userspace answers (`Engine::resolve`, what the fallback server answers with)
//! follow at the next check; admin states take effect at once; the policies for down
//! candidates hold; the state file carries states across a restart.
mod health_common;

use std::{collections::HashMap, net::IpAddr, time::Duration};

use geodns::{
    control::EngineHandle,
    health::{self, admin_request, NodeStatus, Probe, ProbeError, StatusRange, Target},
};
use geodns_maps::{AnswerSource, NodeState, SplitMix};
use health_common::{
    args, checks, config_text, engine, fixture, ip, limit, node_state, resolve, wait_until, www,
    HttpTarget, TcpTarget, A, B, C, CORE1, CORE2, HANG,
};

const LOOPBACK: &str = "127.0.0.1";
const WWW: &str = "www.cdn.example.net.";
const DL: &str = "dl.cdn.example.net.";
const LONG: Duration = Duration::from_secs(10);

async fn post(control: &health::HealthControl, path: &str) -> (u16, String) {
    admin_request(control, "POST", path, ip(LOOPBACK)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_node_goes_down_after_fall_failures_and_back_after_rise_successes() {
    limit(async {
        let mut tcp = TcpTarget::start().await;
        let handle = EngineHandle::new(engine(&config_text(&[("a", tcp.check())], &[])));
        let control = health::start(&args(100, 300), &handle, None)
            .await
            .expect("spawn")
            .0;
        wait_until("two good checks", LONG, || checks(&control, "a").0 >= 2).await;
        assert_eq!(www(&handle), vec![ip(A)]);

        let (_, failed0) = checks(&control, "a");
        tcp.stop().await;
        let took = wait_until("www to move to b", LONG, || www(&handle) == vec![ip(B)]).await;
        let failed = checks(&control, "a").1 - failed0;
        // The answer switched at the third failed check, before a fourth (one interval).
        assert!(
            (3..=4).contains(&failed),
            "switched after {failed} failed checks"
        );
        assert!(
            took >= Duration::from_millis(180),
            "down after {took:?}: sooner than three checks 100 ms apart"
        );
        assert_eq!(node_state(&control, "a"), NodeState::Down);
        // `best` moves to the next up candidate: still the region's own answer.
        assert!(matches!(resolve(&handle, WWW).1, AnswerSource::Geo { .. }));

        let (checks0, failed0) = checks(&control, "a");
        tcp.restart().await;
        wait_until("www back to a", LONG, || www(&handle) == vec![ip(A)]).await;
        let (all, failed) = checks(&control, "a");
        let good = (all - checks0) - (failed - failed0);
        assert!((2..=3).contains(&good), "back after {good} good checks");
        assert!(tcp.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 4);
        control.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_status_decides_and_short_flaps_are_ignored() {
    limit(async {
        let http = HttpTarget::start(200).await;
        let handle = EngineHandle::new(engine(&config_text(&[("a", http.check())], &[])));
        let control = health::start(&args(100, 500), &handle, None)
            .await
            .expect("spawn")
            .0;
        wait_until("two answered checks", LONG, || http.answered() >= 2).await;

        // Two 503s in a row: fewer than `fall`, the node stays in the answers throughout.
        let (_, failed0) = checks(&control, "a");
        let seen = http.answered();
        http.fail_next
            .store(2, std::sync::atomic::Ordering::Relaxed);
        while http.answered() < seen + 6 {
            assert_eq!(www(&handle), vec![ip(A)], "a flap of two failures");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(checks(&control, "a").1 - failed0, 2);

        // 503 from now on: down at the third.
        let (_, failed0) = checks(&control, "a");
        http.set_status(503);
        wait_until("www to move to b", LONG, || www(&handle) == vec![ip(B)]).await;
        let failed = checks(&control, "a").1 - failed0;
        assert!(
            (3..=4).contains(&failed),
            "switched after {failed} failed checks"
        );
        let status = control.status();
        let a = status.iter().find(|s| s.node == "a").expect("a");
        assert_eq!(
            a.last_error.as_deref(),
            Some("HTTP status 503 outside the expected range")
        );
        assert_eq!(a.health, Some(NodeState::Down));

        // A redirect is healthy with the default 200-399; a 404 is not.
        http.set_status(302);
        wait_until("www back to a on 302", LONG, || www(&handle) == vec![ip(A)]).await;
        http.set_status(404);
        wait_until("www to b on 404", LONG, || www(&handle) == vec![ip(B)]).await;
        control.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_status_range_is_configurable() {
    limit(async {
        let http = HttpTarget::start(302).await;
        let target = Target::parse(&http.check()).expect("target");
        let strict = Probe::new(
            Duration::from_secs(2),
            "200-299".parse::<StatusRange>().expect("range"),
            None,
        )
        .expect("probe");
        let default =
            Probe::new(Duration::from_secs(2), StatusRange::default(), None).expect("probe");
        assert!(default.check(&target).await.is_ok());
        assert!(matches!(
            strict.check(&target).await,
            Err(ProbeError::Status(302))
        ));
        http.set_status(204);
        assert!(strict.check(&target).await.is_ok());
        let mut closed = TcpTarget::start().await;
        closed.stop().await;
        let closed_target = format!("http://{}/", closed.check());
        assert!(matches!(
            default
                .check(&Target::parse(&closed_target).expect("target"))
                .await,
            Err(ProbeError::Connect(_) | ProbeError::Io(_))
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_checks_verify_the_certificate() {
    limit(async {
        let https = HttpTarget::start_tls(200).await;
        let target = Target::parse(&https.check()).expect("target");
        let by_ip = Target::parse(&format!("https://127.0.0.1:{}/health", https.addr.port()))
            .expect("target");
        let with_ca = Probe::new(
            Duration::from_secs(2),
            StatusRange::default(),
            Some(&fixture("ca.pem")),
        )
        .expect("probe with the test CA");
        let public_only =
            Probe::new(Duration::from_secs(2), StatusRange::default(), None).expect("probe");
        with_ca.check(&target).await.expect("trusted certificate");
        with_ca.check(&by_ip).await.expect("IP address in the SAN");
        assert!(matches!(
            public_only.check(&target).await,
            Err(ProbeError::Tls(_))
        ));
        https.set_status(500);
        assert!(matches!(
            with_ca.check(&target).await,
            Err(ProbeError::Status(500))
        ));

        // Through the checker: the node follows the HTTPS status.
        https.set_status(200);
        let handle = EngineHandle::new(engine(&config_text(&[("a", https.check())], &[])));
        let mut a = args(100, 1000);
        a.check_ca = Some(fixture("ca.pem"));
        let control = health::start(&a, &handle, None).await.expect("spawn").0;
        wait_until("two good HTTPS checks", LONG, || https.answered() >= 2).await;
        assert_eq!(checks(&control, "a").1, 0, "no failed HTTPS check");
        https.set_status(500);
        wait_until("www to move to b", LONG, || www(&handle) == vec![ip(B)]).await;
        control.stop();

        let mut bad = args(100, 1000);
        bad.check_ca = Some(fixture("README.md"));
        assert!(
            health::start(&bad, &handle, None).await.is_err(),
            "a CA file without certificates"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_checks_time_out_and_a_node_starts_up() {
    limit(async {
        let http = HttpTarget::start(HANG).await;
        let handle = EngineHandle::new(engine(&config_text(&[("a", http.check())], &[])));
        let control = health::start(&args(100, 300), &handle, None)
            .await
            .expect("spawn")
            .0;
        // Warm start: up, and still up while the first check has not completed.
        assert_eq!(node_state(&control, "a"), NodeState::Up);
        assert_eq!(www(&handle), vec![ip(A)]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(checks(&control, "a"), (0, 0), "no check completed yet");
        assert_eq!(www(&handle), vec![ip(A)]);

        let took = wait_until("three timeouts", LONG, || www(&handle) == vec![ip(B)]).await;
        assert!(took >= Duration::from_millis(650), "down after {took:?}");
        let status = control.status();
        let a = status.iter().find(|s| s.node == "a").expect("a");
        assert_eq!(a.last_error.as_deref(), Some("timed out"));
        control.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn admin_states_take_effect_at_once() {
    limit(async {
        let http = HttpTarget::start(200).await;
        let handle = EngineHandle::new(engine(&config_text(
            &[("a", http.check())],
            &[("c", "admin = \"drain\"")],
        )));
        let control = health::start(&args(100, 500), &handle, None)
            .await
            .expect("spawn")
            .0;
        assert_eq!(www(&handle), vec![ip(A)]);

        // The config's admin state holds until an admin command overrides it, and comes
        // back with auto.
        assert_eq!(node_state(&control, "c"), NodeState::Drain);
        assert_eq!(post(&control, "/v1/node/c/up").await.0, 200);
        assert_eq!(node_state(&control, "c"), NodeState::Up);
        assert_eq!(handle.load().states().get("c"), NodeState::Up);
        let (code, body) = post(&control, "/v1/node/c/auto").await;
        assert_eq!(
            (code, body.as_str()),
            (
                200,
                "c: admin auto: up -> drain (the config's admin state drain applies)\n"
            )
        );
        assert_eq!(handle.load().states().get("c"), NodeState::Drain);

        // drain: out of new answers when the request returns.
        let (code, body) = post(&control, "/v1/node/a/drain").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body, "a: admin drain: up -> drain\n");
        assert_eq!(www(&handle), vec![ip(B)]);
        for _ in 0..1000 {
            assert_ne!(
                resolve(&handle, DL).0,
                vec![ip(A)],
                "a drained from spread too"
            );
        }
        let status = control.status();
        let a = status.iter().find(|s| s.node == "a").expect("a");
        assert_eq!(
            (a.state, a.admin, a.health),
            (
                NodeState::Drain,
                Some(NodeState::Drain),
                Some(NodeState::Up)
            )
        );
        let (code, body) = post(&control, "/v1/node/a/auto").await;
        assert_eq!(
            (code, body.as_str()),
            (200, "a: admin auto: drain -> up (health checks)\n")
        );
        assert_eq!(www(&handle), vec![ip(A)]);

        // up overrides failing checks; auto hands the node back to them.
        http.set_status(503);
        wait_until("a down by health", LONG, || www(&handle) == vec![ip(B)]).await;
        assert_eq!(post(&control, "/v1/node/a/up").await.0, 200);
        assert_eq!(www(&handle), vec![ip(A)]);
        assert_eq!(post(&control, "/v1/node/a/auto").await.0, 200);
        assert_eq!(www(&handle), vec![ip(B)]);
        // down on a node without checks: a, down by health, is the region's last
        // candidate, so the region fails open to it (the operator's down holds for b).
        assert_eq!(post(&control, "/v1/node/b/down").await.0, 200);
        assert!(matches!(
            resolve(&handle, WWW),
            (addrs, AnswerSource::Geo { fail_open: true, .. }) if addrs == vec![ip(A)]
        ));
        // Both taken out by the operator: the fallback answers.
        assert_eq!(post(&control, "/v1/node/a/drain").await.0, 200);
        assert!(matches!(
            resolve(&handle, WWW).1,
            AnswerSource::Fallback {
                fail_open: false,
                ..
            }
        ));
        assert_eq!(post(&control, "/v1/node/a/auto").await.0, 200);

        // The rest of the API.
        let (code, body) = admin_request(&control, "GET", "/v1/nodes", ip("192.0.2.1")).await;
        assert_eq!(code, 200);
        let nodes: Vec<NodeStatus> = serde_json::from_str(&body).expect("node list JSON");
        assert_eq!(nodes.len(), 5);
        let (code, body) = admin_request(&control, "GET", "/v1/node/b", ip(LOOPBACK)).await;
        assert_eq!(code, 200);
        let b: NodeStatus = serde_json::from_str(&body).expect("node JSON");
        assert_eq!((b.state, b.health), (NodeState::Down, None));
        let forbidden = admin_request(&control, "POST", "/v1/node/b/up", ip("192.0.2.1")).await;
        assert_eq!(forbidden.0, 403);
        assert_eq!(
            node_state(&control, "b"),
            NodeState::Down,
            "refused: no change"
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(
            admin_request(&control, "POST", "/v1/node/b/auto", mapped)
                .await
                .0,
            200
        );
        assert_eq!(post(&control, "/v1/node/zz9/up").await.0, 404);
        assert_eq!(post(&control, "/v1/node/a/sideways").await.0, 400);
        assert_eq!(
            admin_request(&control, "GET", "/v1/node/a/up", ip(LOOPBACK))
                .await
                .0,
            405
        );
        assert_eq!(
            admin_request(&control, "GET", "/v1/other", ip(LOOPBACK))
                .await
                .0,
            404
        );
        control.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_renormalises_over_up_candidates() {
    limit(async {
        let mut tcp = TcpTarget::start().await;
        let e = engine(&config_text(&[("c", tcp.check())], &[]))
            .with_picker(Box::new(SplitMix::seeded(9)));
        let handle = EngineHandle::new(e);
        let control = health::start(&args(100, 300), &handle, None)
            .await
            .expect("spawn")
            .0;
        tcp.stop().await;
        wait_until("c down", LONG, || {
            node_state(&control, "c") == NodeState::Down
        })
        .await;
        let mut seen: HashMap<IpAddr, u32> = HashMap::new();
        for _ in 0..10_000 {
            let (addrs, source) = resolve(&handle, DL);
            assert!(matches!(source, AnswerSource::Geo { .. }));
            *seen.entry(addrs[0]).or_default() += 1;
        }
        assert_eq!(seen.get(&ip(C)), None, "c is down");
        // { a = 3, b = 1, c = 1 } without c: 3/4 and 1/4.
        let share = |a: &str| f64::from(seen.get(&ip(a)).copied().unwrap_or(0)) / 10_000.0;
        assert!((share(A) - 0.75).abs() < 0.02, "{seen:?}");
        assert!((share(B) - 0.25).abs() < 0.02, "{seen:?}");
        control.stop();
    })
    .await;
}

/// Picks `n` answers for `www` and counts them by first address, with how many were
/// fallback answers that failed open.
fn count_www(handle: &EngineHandle, n: u32) -> (HashMap<IpAddr, u32>, u32) {
    let mut seen: HashMap<IpAddr, u32> = HashMap::new();
    let mut fail_open = 0;
    for _ in 0..n {
        let (addrs, source) = resolve(handle, WWW);
        let AnswerSource::Fallback { fail_open: f, .. } = source else {
            panic!("expected a fallback answer, got {source:?}");
        };
        fail_open += u32::from(f);
        *seen.entry(addrs[0]).or_default() += 1;
    }
    (seen, fail_open)
}

/// Every candidate of a region down by health: the region fails open (all of them are
/// answered, in the kernel's set too), as gdnsd and Route 53 do: a checker cut off from
/// the nodes must not move every client. An operator's down or drain always holds:
/// with the candidates taken out, the `[fallback]` answers by weighted round robin,
/// failing open only over fallback nodes down by health. More than --max-down-share of
/// the nodes down at once: the checker is suspect and health is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_candidates_down_fails_open_and_admin_states_hold() {
    limit(async {
        let mut ta = TcpTarget::start().await;
        let mut tb = TcpTarget::start().await;
        let mut t1 = TcpTarget::start().await;
        let mut t2 = TcpTarget::start().await;
        let handle = EngineHandle::new(engine(&config_text(
            &[
                ("a", ta.check()),
                ("b", tb.check()),
                ("core1", t1.check()),
                ("core2", t2.check()),
            ],
            &[],
        )));
        let (control, live) = health::start(&args(100, 300), &handle, None)
            .await
            .expect("spawn");

        // a and b (2 of 5 nodes) down by health: www fails open within its region.
        ta.stop().await;
        tb.stop().await;
        wait_until("a and b down", LONG, || {
            node_state(&control, "a") == NodeState::Down
                && node_state(&control, "b") == NodeState::Down
        })
        .await;
        wait_until("www to fail open", LONG, || {
            matches!(
                resolve(&handle, WWW).1,
                AnswerSource::Geo {
                    fail_open: true,
                    ..
                }
            )
        })
        .await;
        assert_eq!(
            resolve(&handle, WWW).0,
            vec![ip(A)],
            "best of the failed-open set"
        );
        assert_eq!(
            handle.load().fail_open_sets(),
            1,
            "www fails open, dl has c up"
        );
        assert!(control
            .metrics_text()
            .lines()
            .any(|l| l == "geodns_fail_open_sets 1"));
        assert!(control
            .metrics_text()
            .lines()
            .any(|l| l == "geodns_health_suspect 0"));

        // The operator takes a and b out: that holds, the fallback answers 2:1.
        assert_eq!(post(&control, "/v1/node/a/down").await.0, 200);
        assert_eq!(post(&control, "/v1/node/b/drain").await.0, 200);
        let (seen, fail_open) = count_www(&handle, 9000);
        assert_eq!(fail_open, 0);
        assert_eq!(seen.get(&ip(CORE1)), Some(&6000), "{seen:?}");
        assert_eq!(seen.get(&ip(CORE2)), Some(&3000), "{seen:?}");

        // a and b healthy again (still out by admin); core1 and core2 down by health:
        // the fallback fails open over them, counted.
        ta.restart().await;
        tb.restart().await;
        t1.stop().await;
        t2.stop().await;
        wait_until("core1 and core2 down, a and b healthy", LONG, || {
            let st = control.status();
            let health = |n: &str| st.iter().find(|s| s.node == n).and_then(|s| s.health);
            health("core1") == Some(NodeState::Down)
                && health("core2") == Some(NodeState::Down)
                && health("a") == Some(NodeState::Up)
                && health("b") == Some(NodeState::Up)
        })
        .await;
        live.apply_states().await.expect("apply");
        let before = handle.load().fail_open_count();
        let (seen, fail_open) = count_www(&handle, 3000);
        assert_eq!(fail_open, 3000);
        assert_eq!(handle.load().fail_open_count() - before, 3000);
        assert_eq!(seen.get(&ip(CORE1)), Some(&2000), "{seen:?}");
        assert_eq!(seen.get(&ip(CORE2)), Some(&1000), "{seen:?}");

        // core2 drained by the operator: failing open never brings it back.
        assert_eq!(post(&control, "/v1/node/core2/drain").await.0, 200);
        let (seen, _) = count_www(&handle, 300);
        assert_eq!(seen.get(&ip(CORE1)), Some(&300), "{seen:?}");

        // a and b fail their checks again: 4 of 5 nodes down by health, more than
        // --max-down-share (50%): the checker is suspect, health is ignored, admin holds.
        ta.stop().await;
        tb.stop().await;
        wait_until("the checker to be suspect", LONG, || {
            control
                .metrics_text()
                .lines()
                .any(|l| l == "geodns_health_suspect 1")
        })
        .await;
        live.apply_states().await.expect("apply");
        let (seen, fail_open) = count_www(&handle, 300);
        assert_eq!(fail_open, 0, "core1 counts as up while health is ignored");
        assert_eq!(seen.get(&ip(CORE1)), Some(&300), "{seen:?}");
        assert_eq!(node_state(&control, "c"), NodeState::Up);
        control.stop();
        live.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_carries_states_across_a_restart() {
    limit(async {
        let dir = std::env::temp_dir().join(format!("geodns-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("states.json");
        std::fs::write(
            &path,
            r#"{"health": {"a": "down"}, "admin": {"c": "drain"}}"#,
        )
        .expect("write state file");
        let http = HttpTarget::start(200).await;
        let text = config_text(&[("a", http.check())], &[]);
        // Checks 10 s apart: only the state file can say a is down.
        let mut a = args(10_000, 1000);
        a.state_file = Some(path.clone());

        let handle = EngineHandle::new(engine(&text));
        let control = health::start(&a, &handle, None).await.expect("spawn").0;
        assert_eq!(www(&handle), vec![ip(B)], "a remembered down");
        assert_eq!(node_state(&control, "c"), NodeState::Drain);
        assert_eq!(post(&control, "/v1/node/b/drain").await.0, 200);
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("state file"))
                .expect("state file JSON");
        assert_eq!(saved["admin"]["b"], "drain");
        assert_eq!(saved["admin"]["c"], "drain");
        assert_eq!(saved["health"]["a"], "down");
        control.stop();

        // Restarted: the same states at once.
        let handle = EngineHandle::new(engine(&text));
        let control = health::start(&a, &handle, None)
            .await
            .expect("spawn again")
            .0;
        // a remembered down by health, b drained: the region fails open to a.
        assert!(matches!(
            resolve(&handle, WWW),
            (addrs, AnswerSource::Geo { fail_open: true, .. }) if addrs == vec![ip(A)]
        ));
        assert_eq!(node_state(&control, "b"), NodeState::Drain);
        assert_eq!(node_state(&control, "c"), NodeState::Drain);
        control.stop();

        // An unreadable state file is ignored: everything starts up.
        std::fs::write(&path, "{not json").expect("corrupt state file");
        let handle = EngineHandle::new(engine(&text));
        let control = health::start(&a, &handle, None)
            .await
            .expect("spawn with a bad file")
            .0;
        assert_eq!(www(&handle), vec![ip(A)]);
        control.stop();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_health_and_checks_new_targets() {
    limit(async {
        let mut ta = TcpTarget::start().await;
        let handle = EngineHandle::new(engine(&config_text(&[("a", ta.check())], &[])));
        let (control, live) = health::start(&args(100, 300), &handle, None)
            .await
            .expect("spawn");
        ta.stop().await;
        wait_until("a down", LONG, || www(&handle) == vec![ip(B)]).await;

        // A reload hands the control thread an engine compiled with every node up, and a
        // check for c: it is stored with the health states already applied, so there is
        // no moment where the down node is answered.
        let tc = HttpTarget::start(503).await;
        let text = config_text(&[("a", ta.check()), ("c", tc.check())], &[]);
        live.install(engine(&text)).await.expect("install");
        assert_eq!(
            www(&handle),
            vec![ip(B)],
            "the reloaded engine answers with the health states at once"
        );
        wait_until("c checked and down", LONG, || {
            node_state(&control, "c") == NodeState::Down
        })
        .await;
        assert!(tc.answered() >= 3);
        control.stop();
    })
    .await;
}
