//! The HTTP redirector: `302 Found` to the node the DNS decision picks for the client.
//!
//! `geodns redirect` serves it on its own (with node health, the admin API and reloads,
//! like `geodns run`); `geodns run --redirect-listen ADDR` serves it next to the XDP
//! responder, from the same [`EngineHandle`], so both always decide with the same
//! config, databases and node states.
//!
//! # The answer
//!
//! Any `GET` or `HEAD` is answered `302 Found` with
//! `Location: <node base><original path and query>`:
//!
//! - **Which record.** The request's `Host` (port stripped, any case, trailing dot
//!   optional) when it is a served record name (exact, or one level under a wildcard),
//!   else `--redirect-record NAME` (relative names are relative to the zone origin);
//!   else `404`. So a redirector that clients reach under a served name
//!   (`www.cdn.example.net`) needs no flag, and one behind another name says which
//!   record it redirects for.
//! - **Which node.** [`Engine::node_for`], the DNS decision itself (regions, policy,
//!   node health, `[fallback]`), for the `A` question when the client address is IPv4
//!   and the `AAAA` question when it is IPv6: the node is one the client's own family
//!   reaches, the same node its resolver's query of that type gets. Where that family
//!   has no answer at all, the other family's decision is used (a redirect beats none).
//! - **Which URL.** The node's `http_base` (`scheme://host[:port][/prefix]`, a trailing
//!   `/` dropped) followed by the request's path and query. A node without `http_base`
//!   gets `<scheme>://<address>` with the first address of the decision (IPv6 in
//!   brackets) and the scheme's default port; the scheme is the request's own: `http`,
//!   or what a trusted proxy says (`X-Forwarded-Proto` or the `proto` of `Forwarded`).
//! - `Cache-Control: no-store` (the answer follows node health), and
//!   `X-Geodns-Node: NAME` for operators.
//!
//! `GET /v1/lookup?ip=ADDR[&ecs=ADDR/LEN]` answers the explanation of the decision for
//! ADDR as JSON, the same as `geodns lookup --json` but with the live node states;
//! without `ip`, for the client address of the request itself.
//!
//! # The client address
//!
//! The socket peer. When the peer is in a `--trusted-proxy` prefix, the header named by
//! `--forwarded-header` (`X-Forwarded-For`, or RFC 7239 `Forwarded` with its `for=`
//! parameters) is read from the right, skipping addresses that are themselves trusted
//! proxies: the first untrusted one is the client. Only one header is read because a
//! proxy appends to the one it maintains and passes the other through as the client
//! wrote it. If every address is trusted, the left-most is the client; an entry that is
//! not an address (`unknown`, an obfuscated identifier, garbage) ends the walk at the
//! last address before it. Headers from untrusted peers are never read.
//!
//! # Limits
//!
//! HTTP/1.1 (and 1.0) on hyper. A request head may take at most
//! `--http-header-timeout` (default 5 s) to arrive and [`MAX_HEAD_BYTES`] in size with at
//! most [`MAX_HEADERS`] headers (beyond: `431`); a connection, keep-alive included,
//! lives at most `--http-timeout` (default 30 s: it is then closed after the response
//! in flight); [`MAX_CONNECTIONS`] connections at once (more wait in the kernel's
//! backlog). Request bodies are never read. Other methods get `405` with
//! `Allow: GET, HEAD`.
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use geodns_maps::{
    engine::{QTYPE_A, QTYPE_AAAA},
    name, AnswerSource, Cidr, Engine, Question,
};
use hyper::{
    header::{self, HeaderMap, HeaderValue},
    Method, Response, StatusCode, Uri,
};
use tokio::net::TcpListener;

pub use crate::http::{MAX_HEADERS, MAX_HEAD_BYTES};
use crate::{
    control::EngineHandle,
    http::{text, Body},
};

mod client;

pub use client::client_addr;
use client::{host_name, scheme};

/// Connections served at once, over all listeners.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most entries of a forwarded header looked at (from the right).
pub const MAX_HOPS: usize = 32;

/// Which header a trusted proxy writes the client address into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...` (nginx, `HAProxy`, most CDNs).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:443"`.
    Forwarded,
}

/// The redirector's settings, shared by `geodns redirect` and `geodns run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RedirectArgs {
    /// The record to redirect for when the request's `Host` is not a served record
    /// name (relative names are relative to the zone origin, like in the config).
    /// Without it such requests get 404.
    #[arg(long, value_name = "NAME")]
    pub redirect_record: Option<String>,
    /// A proxy (CIDR, or one address) whose forwarded header is believed
    /// (repeatable). Requests from other peers are decided for the peer's address.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_trusted)]
    pub trusted_proxies: Vec<Cidr>,
    /// The header trusted proxies write the client address into. Only that one is
    /// read: a proxy passes the other on as the client wrote it.
    #[arg(long, value_enum, default_value_t = ForwardedHeader::XForwardedFor)]
    pub forwarded_header: ForwardedHeader,
    /// Time a client has to send a request head.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub http_header_timeout: Duration,
    /// Also answer `GET /v1/lookup?ip=ADDR` on the redirector's own address (every
    /// node's addresses and weights, to anyone who can reach it). Off by default: the
    /// admin API serves the same behind its token.
    #[arg(long)]
    pub redirect_lookup: bool,
    /// Longest life of a connection (keep-alive included), and so of any request.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub http_timeout: Duration,
}

impl Default for RedirectArgs {
    fn default() -> Self {
        Self {
            redirect_record: None,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            http_header_timeout: Duration::from_secs(5),
            redirect_lookup: false,
            http_timeout: Duration::from_secs(30),
        }
    }
}

/// `198.51.100.0/24`, or one address (`/32`, `/128`).
fn parse_trusted(s: &str) -> Result<Cidr, String> {
    if s.contains('/') {
        return s.parse().map_err(|e| format!("`{s}`: {e}"));
    }
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("`{s}`: expected a CIDR or an IP address"))?;
    let ip = ip.to_canonical();
    Ok(Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 }))
}

/// Requests by outcome, for `/metrics`.
#[derive(Debug, Default)]
pub struct RedirectStats {
    pub redirect: AtomicU64,
    pub lookup: AtomicU64,
    /// No record for the `Host` and no `--redirect-record`.
    pub no_record: AtomicU64,
    /// The decision had no node (no candidate and no `[fallback]` of either family).
    pub no_node: AtomicU64,
    pub bad_request: AtomicU64,
    pub method_not_allowed: AtomicU64,
    /// A node's `http_base` that cannot be a header value (500).
    pub error: AtomicU64,
}

impl RedirectStats {
    /// The `geodns_http_requests_total` family.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        let mut p = crate::prom::Page::new();
        p.by_label(
            "geodns_http_requests_total",
            crate::prom::Kind::Counter,
            "HTTP redirector requests by outcome.",
            "result",
            [
                ("redirect", &self.redirect),
                ("lookup", &self.lookup),
                ("no_record", &self.no_record),
                ("no_node", &self.no_node),
                ("bad_request", &self.bad_request),
                ("method_not_allowed", &self.method_not_allowed),
                ("error", &self.error),
            ]
            .map(|(name, n)| (name, n.load(Ordering::Relaxed))),
        );
        p.finish()
    }
}

/// Answers requests from the engine in use.
pub struct Redirector {
    handle: EngineHandle,
    args: RedirectArgs,
    stats: Arc<RedirectStats>,
}

/// `key=value` pairs of a query string, percent-decoded.
fn query_param(uri: &Uri, key: &str) -> Option<String> {
    crate::http::query_param(uri.query()?, key)
}

impl Redirector {
    /// Checks `--redirect-record` against the engine in use.
    pub fn new(
        handle: EngineHandle,
        args: RedirectArgs,
        stats: Arc<RedirectStats>,
    ) -> anyhow::Result<Self> {
        let r = Self {
            handle,
            args,
            stats,
        };
        if let Some(name) = &r.args.redirect_record {
            let engine = r.handle.load();
            let wire = r.default_record(&engine).with_context(|| {
                format!("--redirect-record {name}: not a name (letters, digits, `-`, `_`)")
            })?;
            if !engine.serves(&wire) {
                anyhow::bail!(
                    "--redirect-record {name}: no record of {} answers it",
                    engine.config().file
                );
            }
        }
        Ok(r)
    }

    /// `--redirect-record` in wire format under the engine's origin.
    fn default_record(&self, engine: &Engine) -> Option<Vec<u8>> {
        let name = self.args.redirect_record.as_deref()?;
        let full = name::absolute(name, &engine.config().zone.origin).ok()?;
        Some(name::to_wire(&full))
    }

    /// The response to one request from `peer`. Never fails: every problem is a status.
    #[must_use]
    pub fn respond(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Response<Body> {
        let stats = &self.stats;
        if method != Method::GET && method != Method::HEAD {
            stats.method_not_allowed.fetch_add(1, Ordering::Relaxed);
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD\n".to_owned(),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let engine = self.handle.load();
        let client = client_addr(
            peer,
            headers,
            &self.args.trusted_proxies,
            self.args.forwarded_header,
        );
        if uri.path() == "/v1/lookup" && self.args.redirect_lookup {
            return self.lookup(&engine, uri, client);
        }
        let wire = host_name(uri, headers)
            .map(|h| name::to_wire(&h))
            .filter(|w| engine.serves(w))
            .or_else(|| self.default_record(&engine).filter(|w| engine.serves(w)));
        let Some(wire) = wire else {
            stats.no_record.fetch_add(1, Ordering::Relaxed);
            return text(
                StatusCode::NOT_FOUND,
                "the Host names no record served here, and no --redirect-record applies\n"
                    .to_owned(),
            );
        };
        let (first, second) = if client.is_ipv4() {
            (QTYPE_A, QTYPE_AAAA)
        } else {
            (QTYPE_AAAA, QTYPE_A)
        };
        let decision = engine
            .node_for(&Question::from_wire(&wire, first, client))
            .or_else(|| engine.node_for(&Question::from_wire(&wire, second, client)));
        let Some((node, addrs, source)) = decision else {
            stats.no_node.fetch_add(1, Ordering::Relaxed);
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no node to send this client to\n".to_owned(),
            );
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.starts_with('/') { path } else { "/" };
        let location = match (&node.http_base, addrs.first()) {
            (Some(base), _) => format!("{}{path}", base.trim_end_matches('/')),
            (None, Some(IpAddr::V4(a))) => {
                format!("{}://{a}{path}", scheme(peer, headers, &self.args))
            }
            (None, Some(IpAddr::V6(a))) => {
                format!("{}://[{a}]{path}", scheme(peer, headers, &self.args))
            }
            (None, None) => {
                stats.no_node.fetch_add(1, Ordering::Relaxed);
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("node {} has no address and no http_base\n", node.name),
                );
            }
        };
        let Ok(value) = HeaderValue::from_str(&location) else {
            stats.error.fetch_add(1, Ordering::Relaxed);
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "node {}: http_base is not a valid header value\n",
                    node.name
                ),
            );
        };
        stats.redirect.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %client, node = %node.name, %location, "302");
        let mut r = text(StatusCode::FOUND, format!("Found: {location}\n"));
        let h = r.headers_mut();
        h.insert(header::LOCATION, value);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(&node.name) {
            h.insert("x-geodns-node", v);
        }
        h.insert(
            "x-geodns-source",
            HeaderValue::from_static(match source {
                AnswerSource::Geo { .. } => "geo",
                AnswerSource::Fallback { .. } => "fallback",
                AnswerSource::Glue => "glue",
            }),
        );
        r
    }

    /// `GET /v1/lookup?ip=ADDR[&ecs=ADDR/LEN]`.
    fn lookup(&self, engine: &Engine, uri: &Uri, client: IpAddr) -> Response<Body> {
        let bad = |msg: String| {
            self.stats.bad_request.fetch_add(1, Ordering::Relaxed);
            text(StatusCode::BAD_REQUEST, msg)
        };
        let ip = match query_param(uri, "ip") {
            None => client,
            Some(s) => match s.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return bad(format!("ip={s}: not an IP address\n")),
            },
        };
        let ecs = match query_param(uri, "ecs")
            .map(|s| crate::cmd::lookup::parse_ecs(&s))
            .transpose()
        {
            Ok(ecs) => ecs,
            Err(e) => return bad(format!("{e:#}\n")),
        };
        let Ok(json) = crate::cmd::lookup::json(&engine.explain(ip, ecs)) else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the explanation did not serialize\n".to_owned(),
            );
        };
        self.stats.lookup.fetch_add(1, Ordering::Relaxed);
        let mut r = text(StatusCode::OK, json);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// Binds every address, failing on the first that cannot be bound.
pub async fn bind(addrs: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(addrs.len());
    for a in addrs {
        out.push(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the redirector address {a}"))?,
        );
    }
    Ok(out)
}

/// Serves `listeners` until the runtime stops.
pub fn spawn(listeners: Vec<TcpListener>, redirector: &Arc<Redirector>) {
    let redirector = redirector.clone();
    let limits = crate::http::Limits {
        max_connections: MAX_CONNECTIONS,
        header_timeout: redirector.args.http_header_timeout,
        timeout: redirector.args.http_timeout,
    };
    crate::http::serve(listeners, limits, move |req, peer| {
        let resp = redirector.respond(req.method(), req.uri(), req.headers(), peer.ip());
        async move { resp }
    });
}

/// Serves the redirector from `handle` on listeners already bound (see [`bind`]) or
/// handed over; `None` without any.
pub fn start_on(
    listeners: Vec<TcpListener>,
    args: &RedirectArgs,
    handle: &EngineHandle,
) -> anyhow::Result<Option<Arc<RedirectStats>>> {
    if listeners.is_empty() {
        return Ok(None);
    }
    let stats = Arc::new(RedirectStats::default());
    let redirector = Arc::new(Redirector::new(
        handle.clone(),
        args.clone(),
        stats.clone(),
    )?);
    spawn(listeners, &redirector);
    Ok(Some(stats))
}

#[cfg(test)]
mod tests;
