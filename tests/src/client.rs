//! A plain UDP DNS client for tests and the demo: one query, one reply or a timeout.
use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use hickory_proto::{
    op::Message,
    rr::{
        rdata::opt::{EdnsCode, EdnsOption},
        RData,
    },
};

use crate::frame::Query;

/// What came back for one query.
#[derive(Clone, Debug)]
pub struct Reply {
    pub message: Message,
    pub addrs: Vec<IpAddr>,
    /// ECS SCOPE PREFIX-LENGTH of the reply, if it echoed ECS.
    pub ecs_scope: Option<u8>,
}

/// Sends `query` to `server` over UDP and waits up to `timeout` for the reply.
pub fn query_udp(server: SocketAddr, query: &Query, timeout: Duration) -> io::Result<Reply> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(&query.build(), server)?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf)?;
    parse_reply(&buf[..n])
}

/// Decodes a DNS reply and pulls out its addresses and ECS scope.
pub fn parse_reply(bytes: &[u8]) -> io::Result<Reply> {
    let message = Message::from_vec(bytes).map_err(io::Error::other)?;
    let addrs = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    let ecs_scope = message
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
            _ => None,
        });
    Ok(Reply {
        message,
        addrs,
        ecs_scope,
    })
}

/// The addresses the server side of `pair` answers to `query` (sent over IPv4 from the
/// client namespace); empty when nothing came back within half a second.
#[must_use]
pub fn answer_in(pair: &crate::NetnsPair, query: &Query) -> Vec<IpAddr> {
    let server = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    pair.in_ns(crate::Side::Client, || {
        query_udp(server, query, Duration::from_millis(500))
    })
    .ok()
    .and_then(Result::ok)
    .map(|r| r.addrs)
    .unwrap_or_default()
}
