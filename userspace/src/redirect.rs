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

/// The request's host name (without port) as an absolute presentation name, if it is
/// a well-formed host name at all (IP literals are not).
fn host_name(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = if let Some(h) = uri.host() {
        h.to_owned()
    } else {
        let h = headers.get(header::HOST)?.to_str().ok()?.trim();
        if h.starts_with('[') {
            return None;
        }
        match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
            _ => h.to_owned(),
        }
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    name::absolute(&format!("{host}."), "").ok()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:8080` (quotes already removed).
fn forwarded_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, port) = s.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits `s` at `sep` outside double quotes (a backslash escapes inside them).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// A `Forwarded` value: a token, or a quoted string with its escapes resolved.
fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    out.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            out
        }
        None => v.to_owned(),
    }
}

/// The values of every `name` header, in order, as one comma-separated list; a value
/// that is not visible ASCII counts as one unusable entry.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in headers.get_all(name) {
        match v.to_str() {
            Ok(s) => out.extend(split_unquoted(s, ',').into_iter().map(str::to_owned)),
            Err(_) => out.push(String::new()),
        }
    }
    out
}

/// One parameter of one `Forwarded` element (lowercase name), unquoted.
fn forwarded_param(element: &str, param: &str) -> Option<String> {
    split_unquoted(element, ';').into_iter().find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case(param).then(|| unquote(v))
    })
}

/// The client address: the peer, or the right-most untrusted forwarded address when
/// the peer is a trusted proxy (see the module docs).
#[must_use]
pub fn client_addr(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[Cidr],
    which: ForwardedHeader,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let entries = match which {
        ForwardedHeader::XForwardedFor => header_list(headers, "x-forwarded-for"),
        ForwardedHeader::Forwarded => header_list(headers, "forwarded")
            .iter()
            .map(|e| forwarded_param(e, "for").unwrap_or_default())
            .collect(),
    };
    for entry in entries.iter().rev().take(MAX_HOPS) {
        let Some(ip) = forwarded_addr(entry) else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// `http` or `https`: what a trusted proxy says the client used, else `http` (this
/// listener does not speak TLS).
fn scheme(peer: IpAddr, headers: &HeaderMap, args: &RedirectArgs) -> &'static str {
    let peer = peer.to_canonical();
    if !args.trusted_proxies.iter().any(|c| c.contains(peer)) {
        return "http";
    }
    let proto = match args.forwarded_header {
        ForwardedHeader::XForwardedFor => header_list(headers, "x-forwarded-proto").pop(),
        ForwardedHeader::Forwarded => header_list(headers, "forwarded")
            .last()
            .and_then(|e| forwarded_param(e, "proto")),
    };
    match proto {
        Some(p) if p.trim().eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
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

/// Binds `addrs` and serves the redirector from `handle`; `None` when `addrs` is empty.
pub async fn start(
    addrs: &[SocketAddr],
    args: &RedirectArgs,
    handle: &EngineHandle,
) -> anyhow::Result<Option<Arc<RedirectStats>>> {
    if addrs.is_empty() {
        return Ok(None);
    }
    let stats = Arc::new(RedirectStats::default());
    let redirector = Arc::new(Redirector::new(
        handle.clone(),
        args.clone(),
        stats.clone(),
    )?);
    let listeners = bind(addrs).await?;
    spawn(listeners, &redirector);
    Ok(Some(stats))
}

/// [`start`] on listeners already bound (or handed over); `None` without any.
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
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter()
            .map(|s| parse_trusted(s).expect("cidr"))
            .collect()
    }

    #[test]
    fn forwarded_addresses() {
        for (s, want) in [
            ("192.0.2.1", Some("192.0.2.1")),
            (" 192.0.2.1:8080 ", Some("192.0.2.1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:192.0.2.1", Some("::ffff:192.0.2.1")),
            ("[192.0.2.1]", None),
            ("[2001:db8::1]x", None),
            ("192.0.2.1:99999999", None),
            ("unknown", None),
            ("_hidden", None),
            ("", None),
            ("2001:db8::1:80:", None),
        ] {
            assert_eq!(forwarded_addr(s), want.map(ip), "{s:?}");
        }
    }

    #[test]
    fn hostile_headers_never_panic() {
        let trusted = cidrs(&["198.18.0.0/15"]);
        let nasty = [
            "\"",
            "\"\\",
            "for=\"[",
            "for=\"[2001:db8::1]:\"",
            "for=\"\\\"\",,,;;;===",
            ",,,,",
            "for=ä, for=\"ü\"",
            "[[[]]]:::",
            "for=\"[2001:db8::1]:99999999999999999999\"",
            "  ;  for  =  192.0.2.1  ",
        ];
        for v in nasty {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                h.append("forwarded", v.clone());
                h.append("x-forwarded-for", v.clone());
                h.append("x-forwarded-proto", v.clone());
                h.append(header::HOST, v);
            }
            for which in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
                let c = client_addr(ip("198.18.0.1"), &h, &trusted, which);
                assert!(c == ip("198.18.0.1") || !trusted.iter().any(|t| t.contains(c)));
                let args = RedirectArgs {
                    trusted_proxies: trusted.clone(),
                    forwarded_header: which,
                    ..RedirectArgs::default()
                };
                let _ = scheme(ip("198.18.0.1"), &h, &args);
            }
            let _ = host_name(&Uri::from_static("/"), &h);
        }
        // Non-UTF-8 bytes (obs-text) in a header value.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"192.0.2.1, \xff\xfe").expect("obs-text"),
        );
        assert_eq!(
            client_addr(
                ip("198.18.0.1"),
                &h,
                &trusted,
                ForwardedHeader::XForwardedFor
            ),
            ip("198.18.0.1")
        );
    }

    #[test]
    fn x_forwarded_for_from_the_right() {
        let trusted = cidrs(&["198.18.0.0/24", "2001:2::1"]);
        let xff = ForwardedHeader::XForwardedFor;
        let proxy = ip("198.18.0.1");
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 192.0.2.7")]);
        // Untrusted peer: headers ignored.
        assert_eq!(
            client_addr(ip("192.0.2.200"), &h, &trusted, xff),
            ip("192.0.2.200")
        );
        // Trusted peer: the right-most address; the client's own claim on the left loses.
        assert_eq!(client_addr(proxy, &h, &trusted, xff), ip("192.0.2.7"));
        // Trusted hops are skipped; several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 192.0.2.7"),
            ("x-forwarded-for", "198.18.0.2, [2001:2::1]:1234"),
        ]);
        assert_eq!(client_addr(proxy, &h, &trusted, xff), ip("192.0.2.7"));
        // Only trusted addresses: the left-most.
        let h = headers(&[("x-forwarded-for", "198.18.0.3, 198.18.0.2")]);
        assert_eq!(client_addr(proxy, &h, &trusted, xff), ip("198.18.0.3"));
        // Garbage stops the walk at the last address before it.
        let h = headers(&[("x-forwarded-for", "192.0.2.7, nonsense, 198.18.0.2")]);
        assert_eq!(client_addr(proxy, &h, &trusted, xff), ip("198.18.0.2"));
        let h = headers(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(client_addr(proxy, &h, &trusted, xff), proxy);
        // No header: the peer. A mapped peer counts as IPv4.
        assert_eq!(
            client_addr(ip("::ffff:198.18.0.1"), &HeaderMap::new(), &trusted, xff),
            proxy
        );
        // The other header is not read.
        let h = headers(&[("forwarded", "for=192.0.2.7")]);
        assert_eq!(client_addr(proxy, &h, &trusted, xff), proxy);
    }

    #[test]
    fn rfc7239_forwarded() {
        let trusted = cidrs(&["198.18.0.0/24"]);
        let fwd = ForwardedHeader::Forwarded;
        let proxy = ip("198.18.0.1");
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#,
        )]);
        assert_eq!(
            client_addr(proxy, &h, &trusted, fwd),
            ip("2001:db8:cafe::17")
        );
        // Quoted commas and semicolons do not split; escapes resolve.
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.1, by="a,b;c";for="198.18.0.9", for="\[2001:db8::2\]""#,
        )]);
        assert_eq!(client_addr(proxy, &h, &trusted, fwd), ip("2001:db8::2"));
        // Trusted hops skipped, unknown stops.
        let h = headers(&[("forwarded", "for=192.0.2.1, for=198.18.0.9")]);
        assert_eq!(client_addr(proxy, &h, &trusted, fwd), ip("192.0.2.1"));
        let h = headers(&[("forwarded", "for=192.0.2.1, for=unknown")]);
        assert_eq!(client_addr(proxy, &h, &trusted, fwd), proxy);
        // An element without for= is not an address either.
        let h = headers(&[("forwarded", "for=192.0.2.1, proto=https")]);
        assert_eq!(client_addr(proxy, &h, &trusted, fwd), proxy);
        // X-Forwarded-For is not read in this mode.
        let h = headers(&[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(client_addr(proxy, &h, &trusted, fwd), proxy);
        // Untrusted peer.
        let h = headers(&[("forwarded", "for=192.0.2.1")]);
        assert_eq!(
            client_addr(ip("192.0.2.9"), &h, &trusted, fwd),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn hosts() {
        let uri: Uri = "/x".parse().expect("uri");
        let host = |h: &str| host_name(&uri, &headers(&[("host", h)]));
        assert_eq!(
            host("WWW.cdn.example.net"),
            Some("www.cdn.example.net.".into())
        );
        assert_eq!(
            host("www.cdn.example.net.:8080"),
            Some("www.cdn.example.net.".into())
        );
        assert_eq!(host("198.18.0.1:80"), None);
        assert_eq!(host("[2001:2::1]:80"), None);
        assert_eq!(host("bad host"), None);
        assert_eq!(host(""), None);
        assert_eq!(host_name(&uri, &HeaderMap::new()), None);
        let abs: Uri = "http://dl.cdn.example.net:81/x".parse().expect("uri");
        assert_eq!(
            host_name(&abs, &headers(&[("host", "other.example")])),
            Some("dl.cdn.example.net.".into())
        );
    }

    #[test]
    fn trusted_proxy_values() {
        assert_eq!(parse_trusted("10.0.0.0/8").map(|c| c.len()), Ok(8));
        assert_eq!(parse_trusted("10.1.2.3").map(|c| c.len()), Ok(32));
        assert_eq!(
            parse_trusted("::ffff:10.1.2.3").map(|c| c.is_ipv4()),
            Ok(true)
        );
        assert_eq!(parse_trusted("2001:2::1").map(|c| c.len()), Ok(128));
        assert!(parse_trusted("10.0.0.1/8").is_err());
        assert!(parse_trusted("proxy").is_err());
    }
}
