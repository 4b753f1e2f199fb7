//! `examples/grafana-dashboard.json`: every metric its panels query, and every label
//! value they match exactly, is on the `/metrics` page of a running `geodns run`.
use std::time::Duration;

use geodns_tests::{
    daemon::{metric, wait_for, Daemon},
    files::{demo_with_rrl, examples, TempDir},
    require_bpf, NetnsPair,
};

/// The Prometheus expressions of the dashboard's panels.
fn exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            out.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    out
}

/// `(metric, [(label, value)])` for every `geodns_*` selector of `expr`, with its
/// exact (`=`) matchers.
fn selectors(expr: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("geodns_") {
        rest = &rest[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..end].to_owned();
        rest = &rest[end..];
        let mut matchers = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let close = inner.find('}').expect("a closed selector");
            for m in inner[..close].split(',') {
                if let Some((label, value)) = m.split_once("=\"") {
                    if !label.ends_with(['!', '=', '~']) {
                        matchers.push((
                            label.trim().to_owned(),
                            value.trim_end_matches('"').to_owned(),
                        ));
                    }
                }
            }
        }
        out.push((name, matchers));
    }
    out
}

#[test]
fn every_metric_the_dashboard_queries_exists() {
    if !require_bpf() {
        return;
    }
    let text =
        std::fs::read_to_string(examples().join("grafana-dashboard.json")).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let exprs = exprs(&dashboard);
    assert!(exprs.len() >= 10, "a dashboard: {exprs:?}");
    let pair = NetnsPair::new().expect("namespaces");
    let dir = TempDir::new("grafana");
    // The demo as shipped, health checks included: their counters are on the page only
    // for checked nodes (the targets are not on the test hosts; the checks fail).
    // (The databases and zone file of the demo, then its config unchanged.)
    let config = demo_with_rrl(dir.path());
    std::fs::copy(examples().join("demo.toml"), &config).expect("the demo config");
    let pin = format!("/sys/fs/bpf/geodns-grafana-{}", std::process::id());
    let daemon = Daemon::start(
        &pair,
        &config,
        "127.0.0.1:19194",
        &pin,
        &[],
        Duration::from_mins(1),
    );
    wait_for("the program attached", Duration::from_mins(1), || {
        daemon
            .scrape(&pair)
            .is_some_and(|m| metric(&m, "geodns_xdp_attach_info{how=\"attached\"}") == 1)
    });
    let page = daemon.scrape(&pair).expect("metrics");
    let samples: Vec<&str> = page.lines().filter(|l| !l.starts_with('#')).collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for expr in &exprs {
        for (name, matchers) in selectors(expr) {
            checked += 1;
            let found = samples.iter().any(|l| {
                let rest = l.strip_prefix(name.as_str()).unwrap_or("!");
                (rest.starts_with('{') || rest.starts_with(' '))
                    && matchers
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            });
            if !found {
                missing.push(format!("{name} {matchers:?} (in {expr})"));
            }
        }
    }
    assert!(checked >= exprs.len(), "selectors found: {checked}");
    assert!(missing.is_empty(), "not in /metrics: {missing:#?}");
}

#[test]
fn selectors_are_read_with_their_exact_matchers() {
    assert_eq!(
        selectors(r#"sum by (x) (rate(geodns_a_total{outcome="b",c=~"d|e"}[1m])) / geodns_f"#),
        vec![
            (
                "geodns_a_total".to_owned(),
                vec![("outcome".to_owned(), "b".to_owned())]
            ),
            ("geodns_f".to_owned(), vec![]),
        ]
    );
}
