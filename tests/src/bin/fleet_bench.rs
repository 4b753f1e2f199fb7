//! `fleet_admin_propagation_ms`: how long an admin drain takes to reach the answers of
//! every box of a fleet (a real etcd and three `geodns run --no-xdp --fleet` boxes on
//! loopback), from just before `geodns node fra1 drain` starts until the third box
//! answers without fra1; p50 and max over 20 drains, each through another box's admin
//! API. The baseline, measured in the same run: the same drain on a lone box (the
//! local admin API, no etcd). Prints one JSON object of figures.
use std::time::Duration;

use geodns_tests::{
    files::{demo_without_checks, TempDir},
    fleet::{admin_propagation, answers_fra1, Etcd, FleetBox},
};

const DRAINS: usize = 20;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Drains and undrains fra1 `DRAINS` times through `boxes` in turn; the drain times
/// (until every box answers without fra1), sorted, in milliseconds.
fn drains(boxes: &[&FleetBox]) -> Vec<f64> {
    let timeout = Duration::from_secs(10);
    let mut out = Vec::new();
    for i in 0..DRAINS {
        let via = boxes[i % boxes.len()];
        let t = admin_propagation(
            via,
            boxes,
            "fra1",
            "drain",
            |r| !answers_fra1(r) && !r.addrs.is_empty(),
            timeout,
        );
        out.push(ms(t.into_iter().max().unwrap_or_default()));
        let _ = admin_propagation(via, boxes, "fra1", "auto", answers_fra1, timeout);
    }
    out.sort_by(f64::total_cmp);
    out
}

fn main() {
    let dir = TempDir::new("fleet-bench");
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).expect("source dir");
    let _config = demo_without_checks(&source);

    let lone = FleetBox::lone("lone", &source, dir.path(), &[]);
    let local = drains(&[&lone]);
    drop(lone);

    let etcd = Etcd::start(dir.path(), None);
    let boxes: Vec<FleetBox> = ["a", "b", "c"]
        .iter()
        .map(|n| FleetBox::start(n, &source, dir.path(), &etcd.endpoint(), &[]))
        .collect();
    // Every box in the fleet before the first drain.
    geodns_tests::daemon::wait_for("three boxes in the fleet", Duration::from_secs(20), || {
        boxes
            .iter()
            .all(|b| geodns_tests::daemon::metric(&b.metrics(), "geodns_fleet_boxes ") == 3)
    });
    let refs: Vec<&FleetBox> = boxes.iter().collect();
    let fleet = drains(&refs);
    drop(refs);
    drop(boxes);
    drop(etcd);

    let figures = serde_json::json!({
        "fleet_admin_propagation_ms_p50": percentile(&fleet, 0.5),
        "fleet_admin_propagation_ms_max": fleet.last().copied().unwrap_or_default(),
        "fleet_admin_local_ms_p50": percentile(&local, 0.5),
    });
    println!("{figures}");
}
