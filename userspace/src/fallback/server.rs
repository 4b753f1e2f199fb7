//! The sockets: UDP and TCP on every listen address, answering with [`handle`].
use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    task::{JoinHandle, JoinSet},
};

use super::{
    respond::{self, Outcome, Transport},
    stats::FallbackStats,
};
use crate::daemon::EngineHandle;

/// Largest DNS message: what a UDP datagram or a TCP length prefix can carry.
const MAX_MESSAGE: usize = 65535;
/// Tries at finding a port free for both UDP and TCP when port 0 is asked for.
const PORT_TRIES: usize = 16;
const TCP_BACKLOG: i32 = 1024;

/// Errors of the fallback server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("binding {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// TCP limits.
#[derive(Clone, Copy, Debug)]
pub struct TcpOptions {
    /// A connection with no complete query for this long is closed (also bounds one
    /// read or write).
    pub idle_timeout: Duration,
    /// Connections open at once; more are accepted and closed at once, and counted.
    pub max_connections: usize,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// A UDP socket and a TCP listener bound to the same address and port, not yet serving.
#[derive(Debug)]
pub struct Listener {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds UDP and TCP on `addr`. Port 0 picks one port free for both. An IPv6
    /// address is IPv6 only, so `[::]` and `0.0.0.0` bind side by side.
    pub fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        let tries = if addr.port() == 0 { PORT_TRIES } else { 1 };
        let mut last = None;
        for _ in 0..tries {
            let udp = socket(addr, socket2::Type::DGRAM)
                .and_then(|s| s.bind(&addr.into()).map(|()| s))
                .map_err(|source| ServerError::Bind {
                    proto: "UDP",
                    addr,
                    source,
                })?;
            let udp: std::net::UdpSocket = udp.into();
            let bound = udp.local_addr().map_err(|source| ServerError::Bind {
                proto: "UDP",
                addr,
                source,
            })?;
            match tcp_listener(bound) {
                Ok(tcp) => {
                    return Ok(Self {
                        udp,
                        tcp,
                        addr: bound,
                    })
                }
                Err(source) => {
                    last = Some(ServerError::Bind {
                        proto: "TCP",
                        addr: bound,
                        source,
                    });
                }
            }
        }
        Err(last.unwrap_or(ServerError::Bind {
            proto: "TCP",
            addr,
            source: io::Error::from(io::ErrorKind::AddrInUse),
        }))
    }

    /// The bound address (with the port chosen for port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn socket(addr: SocketAddr, ty: socket2::Type) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket(addr, socket2::Type::STREAM)?;
    // A restart must not wait for the last run's connections in TIME_WAIT.
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(TCP_BACKLOG)?;
    Ok(s.into())
}

/// The running server: one task per UDP socket and per TCP listener. Dropping it
/// stops every task, open connections included.
pub struct FallbackServer {
    addrs: Vec<SocketAddr>,
    stats: Arc<FallbackStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl FallbackServer {
    /// Serves `listeners`, answering every query with the engine `handle` holds at
    /// that moment (so reloads and node-state changes apply to the next query). Must
    /// be called inside a tokio runtime.
    pub fn start(
        handle: &EngineHandle,
        listeners: Vec<Listener>,
        tcp: TcpOptions,
        stats: Arc<FallbackStats>,
    ) -> io::Result<Self> {
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        let limit = Arc::new(Semaphore::new(tcp.max_connections));
        for l in listeners {
            addrs.push(l.addr);
            let udp = UdpSocket::from_std(l.udp)?;
            let listener = TcpListener::from_std(l.tcp)?;
            tasks.push(tokio::spawn(serve_udp(udp, handle.clone(), stats.clone())));
            tasks.push(tokio::spawn(serve_tcp(
                listener,
                handle.clone(),
                stats.clone(),
                tcp,
                limit.clone(),
            )));
        }
        Ok(Self {
            addrs,
            stats,
            tasks,
        })
    }

    /// The addresses served (UDP and TCP each).
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    #[must_use]
    pub fn stats(&self) -> &Arc<FallbackStats> {
        &self.stats
    }
}

impl Drop for FallbackServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_udp(sock: UdpSocket, handle: EngineHandle, stats: Arc<FallbackStats>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // E.g. ICMP errors reported on the socket: nothing to do but go on.
                tracing::debug!(error = %e, "fallback UDP receive");
                continue;
            }
        };
        let msg = buf.get(..n).unwrap_or_default();
        let outcome = handle_one(&handle, msg, peer.ip(), Transport::Udp);
        stats.record(Transport::Udp, &outcome);
        if let Some(resp) = outcome.response {
            if let Err(e) = sock.send_to(&resp, peer).await {
                tracing::debug!(error = %e, %peer, "fallback UDP send");
            }
        }
    }
}

/// Answers with the engine in use now: a reload or node-state change applies to the
/// next query.
fn handle_one(handle: &EngineHandle, msg: &[u8], peer: IpAddr, transport: Transport) -> Outcome {
    if super::update::is_update(msg) {
        return super::update::handle(handle, msg, transport);
    }
    respond::handle(&handle.load(), msg, peer, transport)
}

async fn serve_tcp(
    listener: TcpListener,
    handle: EngineHandle,
    stats: Arc<FallbackStats>,
    options: TcpOptions,
    limit: Arc<Semaphore>,
) {
    // Connections live in this set: stopping this task stops them.
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                tracing::warn!(error = %e, "fallback TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            stats.tcp_refused();
            drop(stream);
            continue;
        };
        stats.tcp_accepted();
        let handle = handle.clone();
        let stats = stats.clone();
        conns.spawn(async move {
            if let Err(e) = connection(stream, peer.ip(), &handle, &stats, options).await {
                tracing::debug!(error = %e, %peer, "fallback TCP connection");
            }
            stats.tcp_closed();
            drop(permit);
        });
    }
}

/// One TCP connection: length-prefixed queries answered in order, as many as the
/// client sends (pipelined), until it closes, sends garbage framing, or stays idle.
async fn connection(
    stream: TcpStream,
    peer: IpAddr,
    handle: &EngineHandle,
    stats: &FallbackStats,
    options: TcpOptions,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut w = BufWriter::new(w);
    // Fixed size: a length prefix never sizes an allocation.
    let mut buf = vec![0u8; MAX_MESSAGE];
    let idle = options.idle_timeout;
    loop {
        let len = match tokio::time::timeout(idle, r.read_u16()).await {
            Ok(Ok(n)) => usize::from(n),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                stats.tcp_timeout();
                return Ok(());
            }
        };
        let msg = buf.get_mut(..len).unwrap_or_default();
        match tokio::time::timeout(idle, r.read_exact(msg)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                stats.tcp_timeout();
                return Ok(());
            }
        }
        let outcome = handle_one(handle, msg, peer, Transport::Tcp);
        stats.record(Transport::Tcp, &outcome);
        if let Some(resp) = outcome.response {
            let n = u16::try_from(resp.len()).unwrap_or(u16::MAX);
            w.write_u16(n).await?;
            w.write_all(resp.get(..usize::from(n)).unwrap_or_default())
                .await?;
        }
        // Pipelined queries already received are answered before one flush.
        if r.buffer().is_empty() {
            let Ok(flushed) = tokio::time::timeout(idle, w.flush()).await else {
                stats.tcp_timeout();
                return Ok(());
            };
            flushed?;
        }
    }
}
