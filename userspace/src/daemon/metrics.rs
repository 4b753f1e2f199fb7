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
    /// How the XDP program was attached, once it is.
    pub xdp: Arc<std::sync::Mutex<Option<XdpInfo>>>,
    /// The fleet this daemon is in (`--fleet`).
    pub fleet: Option<crate::fleet::Fleet>,
}

/// How the XDP program came to be attached, for `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct XdpInfo {
    pub how: crate::loader::AttachHow,
    /// Queries the previous daemon's program passed while no daemon was alive.
    pub previous_passed_no_daemon: u64,
}

/// Binds the metrics address and serves `/metrics` and the admin API there (on the
/// shared HTTP layer, with its limits and the admin token); returns the bound address
/// (port 0 picks one).
pub async fn start_metrics(
    addr: SocketAddr,
    sources: MetricsSources,
    token: Option<AdminToken>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    Ok(serve_metrics(listener, sources, token)?.0)
}

/// Serves `/metrics` and the admin API on a bound listener; returns its address and
/// the sources the page is written from.
pub fn serve_metrics(
    listener: TcpListener,
    sources: MetricsSources,
    token: Option<AdminToken>,
) -> anyhow::Result<(SocketAddr, Arc<MetricsSources>)> {
    let bound = listener.local_addr()?;
    let limits = Limits {
        max_connections: METRICS_MAX_CONNECTIONS,
        header_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    };
    let sources = Arc::new(sources);
    let shared = sources.clone();
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
            let Some(token) = token else {
                return crate::http::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the admin API is off: the daemon has no admin token (see its log)\n"
                        .to_owned(),
                );
            };
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
            if path == "/v1/shadow" || path.starts_with("/v1/shadow/") {
                let query = req.uri().query().unwrap_or("").to_owned();
                let (code, body) = shadow_request(
                    &sources.control,
                    req.method().as_str(),
                    path,
                    &query,
                    peer.ip(),
                )
                .await;
                return crate::http::text(code, body);
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
    Ok((bound, shared))
}

/// The shadow-run API (`geodns shadow`):
/// - `POST /v1/shadow?config=PATH[&sample=K]`: compiles the config at PATH (a file on
///   the daemon's box) and starts a shadow run of it, one answered query in `2^K`
///   shadowed (default [`crate::shadow::DEFAULT_SAMPLE_EXP`]);
/// - `GET /v1/shadow`: the report, as JSON;
/// - `POST /v1/shadow/promote`: switches to the candidate; `POST /v1/shadow/abort`:
///   drops it.
///
/// Changes only from a loopback peer, as the node admin states.
async fn shadow_request(
    control: &Control,
    method: &str,
    path: &str,
    query: &str,
    peer: std::net::IpAddr,
) -> (StatusCode, String) {
    let failed = |e: &dyn std::fmt::Display| (StatusCode::CONFLICT, format!("{e}\n"));
    if method == "POST" && !peer.to_canonical().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "admin requests only from loopback\n".to_owned(),
        );
    }
    match (method, path) {
        ("GET", "/v1/shadow") => match control.shadow_snapshot().await {
            Ok(Some(snapshot)) => {
                let report =
                    tokio::task::spawn_blocking(move || crate::shadow::report(&snapshot)).await;
                match report.map(|r| serde_json::to_string(&r)) {
                    Ok(Ok(body)) => (StatusCode::OK, body),
                    _ => failed(&"the report failed"),
                }
            }
            Ok(None) => (StatusCode::NOT_FOUND, "no shadow run\n".to_owned()),
            Err(e) => failed(&e),
        },
        ("POST", "/v1/shadow") => {
            let Some(config) = crate::http::query_param(query, "config") else {
                return (
                    StatusCode::BAD_REQUEST,
                    "POST /v1/shadow?config=PATH[&sample=K]\n".to_owned(),
                );
            };
            let sample = match crate::http::query_param(query, "sample").map(|k| k.parse::<u8>()) {
                None => crate::shadow::DEFAULT_SAMPLE_EXP,
                Some(Ok(k)) if k <= 15 => k,
                Some(_) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        "sample: an exponent 0..=15 (one query in 2^K)\n".to_owned(),
                    )
                }
            };
            let path = std::path::PathBuf::from(&config);
            let engine =
                tokio::task::spawn_blocking(move || super::reload::compile(&path, None)).await;
            let engine = match engine {
                Ok(Ok(engine)) => engine,
                Ok(Err(e)) => return (StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}\n")),
                Err(e) => return failed(&e),
            };
            match control.shadow_start(engine, config.clone(), sample).await {
                Ok(_) => (
                    StatusCode::OK,
                    format!(
                        "shadow run of {config} started: one answered query in {} is also looked up in it\n",
                        1u32 << sample
                    ),
                ),
                Err(e) => failed(&e),
            }
        }
        ("POST", "/v1/shadow/promote") => match control.shadow_promote().await {
            Ok(()) => (
                StatusCode::OK,
                "promoted: the candidate answers now\n".to_owned(),
            ),
            Err(e) => failed(&e),
        },
        ("POST", "/v1/shadow/abort") => match control.shadow_abort().await {
            Ok(true) => (StatusCode::OK, "shadow run aborted\n".to_owned()),
            Ok(false) => (StatusCode::NOT_FOUND, "no shadow run\n".to_owned()),
            Err(e) => failed(&e),
        },
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_owned(),
        ),
    }
}

impl MetricsSources {
    /// The metrics page. Reads only published counts and counters: never waits for an
    /// install in progress.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = metrics_text(&self.control, &self.reloads);
        let xdp = *self
            .xdp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(info) = xdp {
            use crate::prom::{Kind, Page};
            let mut p = Page::new();
            p.family(
                "geodns_xdp_attach_info",
                Kind::Gauge,
                "How this daemon attached the XDP program: attached (new link), updated (an earlier daemon's pinned link, its program replaced in one update), reattached (a pinned link of another layout, detached first).",
            );
            p.sample("geodns_xdp_attach_info", &[("how", info.how.as_str())], 1);
            p.single(
                "geodns_xdp_previous_pass_no_daemon",
                Kind::Gauge,
                "Queries the previous daemon's program passed to userspace while no daemon was alive (unanswered), read when this one adopted it.",
                info.previous_passed_no_daemon,
            );
            out.push_str(&p.finish());
        }
        out.push_str(&self.health.metrics_text());
        if let Some(r) = &self.redirect {
            out.push_str(&r.metrics_text());
        }
        if let Some(f) = &self.dns {
            out.push_str(&f.metrics_text());
        }
        if let Some(f) = &self.fleet {
            out.push_str(&f.metrics_text());
        }
        out
    }
}

/// The daemon's own lines of the metrics page.
#[must_use]
pub fn metrics_text(control: &Control, reloads: &ReloadStats) -> String {
    use crate::prom::{Kind, Page};
    let mut p = Page::new();
    p.family(
        "geodns_build_info",
        Kind::Gauge,
        "What runs: the version and the commit it was built from.",
    );
    p.sample(
        "geodns_build_info",
        &[
            ("version", crate::version::VERSION),
            ("commit", crate::version::COMMIT),
        ],
        1,
    );
    let counts = control.counts();
    if let Some(counters) = control.xdp_counters() {
        if let Ok(counters) = counters {
            p.by_label(
                "geodns_xdp_packets_total",
                Kind::Counter,
                "XDP outcomes, summed over CPUs.",
                "outcome",
                counter::NAMES.iter().copied().zip(counters),
            );
        }
        p.single(
            "geodns_xdp_generation",
            Kind::Gauge,
            "The generation of the kernel maps in use.",
            counts.generation,
        );
    }
    p.by_label(
        "geodns_map_entries",
        Kind::Gauge,
        "Entries of the table in use, by kernel map.",
        "map",
        [
            ("prefixes_v4", counts.prefixes_v4),
            ("prefixes_v6", counts.prefixes_v6),
            ("names", counts.names),
            ("answers", counts.answers),
        ],
    );
    p.by_label(
        "geodns_reloads_total",
        Kind::Counter,
        "Reloads of the config and databases, by result.",
        "result",
        [
            ("ok", &reloads.ok),
            ("failed", &reloads.failed),
            ("refused_shrink", &reloads.refused),
        ]
        .map(|(r, n)| (r, n.load(Ordering::Relaxed))),
    );
    #[expect(clippy::cast_precision_loss, reason = "microseconds")]
    let last = reloads.last_us.load(Ordering::Relaxed) as f64 / 1e6;
    p.single(
        "geodns_reload_last_seconds",
        Kind::Gauge,
        "Duration of the last successful reload.",
        last,
    );
    p.family(
        "geodns_node_up",
        Kind::Gauge,
        "Whether answers use the node (1), by node and state.",
    );
    for (node, state) in control.engine().load().states().iter() {
        let up = u8::from(matches!(state, geodns_maps::NodeState::Up));
        p.sample(
            "geodns_node_up",
            &[("node", node), ("state", &format!("{state:?}"))],
            up,
        );
    }
    p.finish()
}
