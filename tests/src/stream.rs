//! A paced stream of DNS queries that notes, per query, whether and when a reply came:
//! for the tests and benchmarks that count what a restart loses. UDP at tens of
//! thousands of queries a second from `SOCKETS` sockets (a receiver thread each), and
//! TCP with a connection per query.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use crate::client::{exchange, Transport};

/// Client sockets of the UDP stream.
const SOCKETS: usize = 8;

/// One query of a stream.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Which of the stream's queries it was.
    pub kind: usize,
    pub sent: Instant,
    /// When the reply came, its RCODE and its A/AAAA addresses.
    pub reply: Option<(Instant, u8, Vec<IpAddr>)>,
}

/// How a stream runs.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Queries a second.
    pub rate: u64,
    /// A query without a reply after this is lost.
    pub timeout: Duration,
    /// The stream stops after this, whatever `stop` says.
    pub max_time: Duration,
}

/// The id, RCODE and A/AAAA addresses of a reply (a small parser: the client must keep
/// up with 20,000 replies a second in a debug build).
#[must_use]
pub fn read_reply(b: &[u8]) -> Option<(u16, u8, Vec<IpAddr>)> {
    let id = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let rcode = b.get(3)? & 0x0f;
    let an = u16::from_be_bytes([*b.get(6)?, *b.get(7)?]);
    let mut at = 12;
    // The question name, uncompressed as sent.
    while *b.get(at)? != 0 {
        at += usize::from(*b.get(at)?) + 1;
    }
    at += 5;
    let mut addrs = Vec::new();
    for _ in 0..an {
        // Owner: labels ending in the root or in a pointer (a CNAME's target owns the
        // next record: its first label, then a pointer to the zone).
        loop {
            let len = *b.get(at)?;
            if len & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            at += usize::from(len) + 1;
            if len == 0 {
                break;
            }
        }
        let rtype = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*b.get(at + 8)?, *b.get(at + 9)?]));
        let data = b.get(at + 10..at + 10 + len)?;
        match (rtype, len) {
            (1, 4) => addrs.push(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
            (28, 16) => addrs.push(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
            _ => {}
        }
        at += 10 + len;
    }
    Some((id, rcode, addrs))
}

/// A reply as a receiver saw it: (query index, arrival, RCODE, addresses).
type Received = (usize, Instant, u8, Vec<IpAddr>);

fn client_socket() -> UdpSocket {
    let s = UdpSocket::bind("0.0.0.0:0").expect("client socket");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    // Room for the replies of a second: the receivers of a debug build may stall while
    // a daemon starts on the same CPUs.
    let bytes: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on our own socket with an int of its size.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            4,
        );
    }
    s
}

/// Sends the queries `templates[pick(i)]` (their ids rewritten) to `server` over UDP at
/// `pace.rate` a second, in bursts every half millisecond, until `stop` (or
/// `pace.max_time`). Query `i` leaves from socket `i % SOCKETS` with id
/// `(i / SOCKETS) % 65536`; a receiver per socket matches a reply to the latest query
/// of its id. Returns every query in order, with its reply if one came in time.
#[must_use]
pub fn udp(
    server: SocketAddr,
    templates: &[Vec<u8>],
    pick: impl Fn(usize) -> usize,
    pace: Pace,
    stop: &AtomicBool,
) -> Vec<Sample> {
    let sockets: Vec<UdpSocket> = (0..SOCKETS).map(|_| client_socket()).collect();
    let sent = AtomicUsize::new(0);
    let replies: Vec<Mutex<Vec<Received>>> = (0..SOCKETS).map(|_| Mutex::new(Vec::new())).collect();
    let sending = AtomicBool::new(true);
    let mut out = Vec::new();
    std::thread::scope(|s| {
        for (k, sock) in sockets.iter().enumerate() {
            let (sent, replies, sending) = (&sent, &replies[k], &sending);
            s.spawn(move || receive(k, sock, sent, replies, sending, pace.timeout));
        }
        let started = Instant::now();
        let mut i = 0usize;
        let mut query = Vec::new();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < pace.max_time {
            let due = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX) * pace.rate
                / 1_000_000;
            while (i as u64) < due {
                let kind = pick(i);
                query.clone_from(&templates[kind]);
                let id = u16::try_from((i / SOCKETS) % 65_536).expect("id");
                query[..2].copy_from_slice(&id.to_be_bytes());
                out.push(Sample {
                    kind,
                    sent: Instant::now(),
                    reply: None,
                });
                sent.store(i + 1, Ordering::Release);
                // A failed send is the client's failure, never the server's: stop loudly.
                if let Err(e) = sockets[i % SOCKETS].send_to(&query, server) {
                    panic!("sending query {i}: {e}");
                }
                i += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        sending.store(false, Ordering::Relaxed);
    });
    for r in replies {
        for (i, at, rcode, addrs) in r.into_inner().expect("replies") {
            if let Some(s) = out.get_mut(i) {
                if at.duration_since(s.sent) <= pace.timeout {
                    s.reply = Some((at, rcode, addrs));
                }
            }
        }
    }
    out
}

/// The receiver of socket `k`: until the sender has stopped and the socket has been
/// quiet for `timeout`.
fn receive(
    k: usize,
    sock: &UdpSocket,
    sent: &AtomicUsize,
    replies: &Mutex<Vec<Received>>,
    sending: &AtomicBool,
    timeout: Duration,
) {
    let mut buf = [0u8; 2048];
    let mut quiet_since: Option<Instant> = None;
    loop {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let now = Instant::now();
            quiet_since = None;
            let Some((id, rcode, addrs)) = read_reply(&buf[..n]) else {
                continue;
            };
            // The latest query of this socket with this id.
            let total = sent.load(Ordering::Acquire);
            let mut i = k + SOCKETS * usize::from(id);
            while i + SOCKETS * 65_536 < total {
                i += SOCKETS * 65_536;
            }
            replies.lock().expect("lock").push((i, now, rcode, addrs));
        } else if !sending.load(Ordering::Relaxed) {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > timeout {
                return;
            }
        }
    }
}

/// Sends `query` over TCP, a connection each, `pace.rate` a second, until `stop`.
#[must_use]
pub fn tcp(server: SocketAddr, query: &[u8], pace: Pace, stop: &AtomicBool) -> Vec<Sample> {
    let started = Instant::now();
    let mut out = Vec::new();
    let every = Duration::from_micros(1_000_000 / pace.rate.max(1));
    let mut next = Instant::now();
    let mut bytes = query.to_vec();
    for i in 0u32.. {
        if stop.load(Ordering::Relaxed) || started.elapsed() > pace.max_time {
            break;
        }
        let sent = Instant::now();
        bytes[..2].copy_from_slice(&u16::try_from(i % 65_536).expect("id").to_be_bytes());
        let reply = exchange(Transport::Tcp, server, &bytes, pace.timeout)
            .ok()
            .flatten()
            .and_then(|b| read_reply(&b))
            .map(|(_, rcode, addrs)| (Instant::now(), rcode, addrs));
        out.push(Sample {
            kind: 0,
            sent,
            reply,
        });
        next += every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    out
}
