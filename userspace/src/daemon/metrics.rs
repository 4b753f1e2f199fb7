//! `/metrics` and the admin API on the metrics address.
use super::*;

/// What `/metrics` reports.
#[derive(Clone)]
pub struct MetricsSources {
    pub control: Control,
    pub reloads: Arc<ReloadStats>,
    pub health: HealthControl,
    pub redirect: Option<Arc<crate::redirect::RedirectStats>>,
    pub dns: Option<Arc<crate::authoritative::ServerStats>>,
}

/// Binds the metrics address and serves `/metrics` and the admin API there (on the
/// shared HTTP layer, with its limits and the admin token); returns the bound address
/// (port 0 picks one).
pub async fn start_metrics(
    addr: SocketAddr,
    sources: MetricsSources,
    token: AdminToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let limits = Limits {
        max_connections: METRICS_MAX_CONNECTIONS,
        header_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    };
    let sources = Arc::new(sources);
    crate::http::serve(vec![listener], limits, move |req, peer| {
        let sources = sources.clone();
        let token = token.clone();
        async move {
            let path = req.uri().path();
            if req.method() == Method::GET && path == "/metrics" {
                let mut r = crate::http::text(StatusCode::OK, sources.text());
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                return r;
            }
            if !path.starts_with("/v1/") {
                return crate::http::text(StatusCode::NOT_FOUND, "not found\n".to_owned());
            }
            if let Some(refused) = crate::http::admin_refusal(&token, req.headers()) {
                return refused;
            }
            if req.method() == Method::GET && path == "/v1/table" {
                // `geodns diff --live`: the table the engine answers with (the kernel
                // maps hold the same).
                let engine = sources.control.engine().load();
                let table = tokio::task::spawn_blocking(move || {
                    let config = Some(std::path::PathBuf::from(&engine.config().file));
                    let t = geodns_maps::diff::Table::from_engine(&engine, "live", config);
                    serde_json::to_string(&t)
                })
                .await;
                return match table {
                    Ok(Ok(body)) => crate::http::text(StatusCode::OK, body),
                    _ => crate::http::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "table unavailable\n".to_owned(),
                    ),
                };
            }
            let full = req
                .uri()
                .path_and_query()
                .map_or(path, hyper::http::uri::PathAndQuery::as_str);
            let (code, body) = crate::health::admin_request(
                &sources.health,
                req.method().as_str(),
                full,
                peer.ip(),
            )
            .await;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            crate::http::text(status, body)
        }
    });
    Ok(bound)
}

impl MetricsSources {
    /// The metrics page. Reads only published counts and counters: never waits for an
    /// install in progress.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = metrics_text(&self.control, &self.reloads);
        out.push_str(&self.health.metrics_text());
        if let Some(r) = &self.redirect {
            out.push_str(&r.metrics_text());
        }
        if let Some(f) = &self.dns {
            out.push_str(&f.metrics_text());
        }
        out
    }
}

/// The daemon's own lines of the metrics page.
#[must_use]
pub fn metrics_text(control: &Control, reloads: &ReloadStats) -> String {
    let mut out = String::new();
    let counts = control.counts();
    if let Some(counters) = control.xdp_counters() {
        if let Ok(counters) = counters {
            let _ = writeln!(
                out,
                "# HELP geodns_xdp_packets_total XDP outcomes, summed over CPUs."
            );
            let _ = writeln!(out, "# TYPE geodns_xdp_packets_total counter");
            for (i, v) in counters.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "geodns_xdp_packets_total{{outcome=\"{}\"}} {v}",
                    counter::NAMES[i]
                );
            }
        }
        let _ = writeln!(out, "# TYPE geodns_xdp_generation gauge");
        let _ = writeln!(out, "geodns_xdp_generation {}", counts.generation);
    }
    let _ = writeln!(out, "# TYPE geodns_map_entries gauge");
    for (name, n) in [
        ("prefixes_v4", counts.prefixes_v4),
        ("prefixes_v6", counts.prefixes_v6),
        ("names", counts.names),
        ("answers", counts.answers),
    ] {
        let _ = writeln!(out, "geodns_map_entries{{map=\"{name}\"}} {n}");
    }
    let _ = writeln!(out, "# TYPE geodns_reloads_total counter");
    for (result, n) in [
        ("ok", &reloads.ok),
        ("failed", &reloads.failed),
        ("refused_shrink", &reloads.refused),
    ] {
        let _ = writeln!(
            out,
            "geodns_reloads_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE geodns_reload_last_seconds gauge");
    #[expect(clippy::cast_precision_loss, reason = "microseconds")]
    let last = reloads.last_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "geodns_reload_last_seconds {last}");
    let _ = writeln!(out, "# TYPE geodns_node_up gauge");
    for (node, state) in control.engine().load().states().iter() {
        let up = u8::from(matches!(state, geodns_maps::NodeState::Up));
        let _ = writeln!(
            out,
            "geodns_node_up{{node=\"{node}\",state=\"{state:?}\"}} {up}"
        );
    }
    out
}
