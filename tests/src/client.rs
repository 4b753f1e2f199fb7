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

/// How a raw query travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// One connection per query, two-byte length framing.
    Tcp,
}

/// Sends the message `bytes` to `server` and returns the reply's bytes, or `None` when
/// none came within `timeout` (a dropped query; over TCP also a closed connection).
pub fn exchange(
    transport: Transport,
    server: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    match transport {
        Transport::Udp => {
            let bind: SocketAddr = if server.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = UdpSocket::bind(bind)?;
            sock.set_read_timeout(Some(timeout))?;
            sock.send_to(bytes, server)?;
            let mut buf = vec![0u8; 65_535];
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => Ok(Some(buf[..n].to_vec())),
                Err(e) if is_timeout(&e) => Ok(None),
                Err(e) => Err(e),
            }
        }
        Transport::Tcp => {
            let mut s = std::net::TcpStream::connect_timeout(&server, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            write_framed(&mut s, bytes)?;
            read_framed(&mut s)
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes one DNS message with its two-byte length prefix.
pub fn write_framed(s: &mut impl io::Write, bytes: &[u8]) -> io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
    let mut m = len.to_be_bytes().to_vec();
    m.extend_from_slice(bytes);
    s.write_all(&m)
}

/// Reads one length-prefixed DNS message: `None` on a timeout, EOF or reset.
pub fn read_framed(s: &mut impl io::Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e)
            if is_timeout(&e)
                || matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(Some(buf))
}
