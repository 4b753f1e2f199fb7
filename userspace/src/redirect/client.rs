//! Who the client is and what it asked for: the host name, the client address behind
//! trusted proxies (`Forwarded`, `X-Forwarded-For`), the scheme.

use std::net::IpAddr;

use geodns_maps::{name, Cidr};
use hyper::{
    header::{self, HeaderMap},
    Uri,
};

use super::{ForwardedHeader, RedirectArgs, MAX_HOPS};

/// The request's host name (without port) as an absolute presentation name, if it is
/// a well-formed host name at all (IP literals are not).
pub(super) fn host_name(uri: &Uri, headers: &HeaderMap) -> Option<String> {
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
pub(super) fn forwarded_addr(s: &str) -> Option<IpAddr> {
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

pub(super) fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits `s` at `sep` outside double quotes (a backslash escapes inside them).
pub(super) fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
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
pub(super) fn unquote(v: &str) -> String {
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
pub(super) fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
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
pub(super) fn forwarded_param(element: &str, param: &str) -> Option<String> {
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
pub(super) fn scheme(peer: IpAddr, headers: &HeaderMap, args: &RedirectArgs) -> &'static str {
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
