//! The sockets: UDP and TCP on every listen address, answering with [`handle`].
use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::{JoinHandle, JoinSet},
};

pub use super::stats::TcpClose;
use super::{
    guard::UdpGuard,
    respond::{self, Outcome, Responder, Transport},
    stats::{ServerStats, Tally},
};
use crate::control::Control;

/// Largest DNS message: what a UDP datagram or a TCP length prefix can carry.
const MAX_MESSAGE: usize = 65535;
/// Tries at finding a port free for both UDP and TCP when port 0 is asked for.
const PORT_TRIES: usize = 16;
const TCP_BACKLOG: i32 = 1024;

/// Errors of the authoritative server.
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

/// TCP limits (RFC 7766 section 6.2: a server must not let clients hold its
/// connections; every way of holding one is bounded here).
#[derive(Clone, Copy, Debug)]
pub struct TcpOptions {
    /// A connection with no complete query for this long is closed; a write (a client
    /// that does not read its replies) is given as long.
    pub idle_timeout: Duration,
    /// Connections open at once; more are accepted and closed at once, and counted.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_per_source: usize,
    /// Queries answered on one connection before it is closed.
    pub max_queries: u32,
    /// Longest life of a connection, however busy.
    pub max_lifetime: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_per_source: 32,
            max_queries: 1000,
            max_lifetime: Duration::from_mins(2),
        }
    }
}

/// Open connections per source address, shared by every listener.
#[derive(Default)]
struct PerSource(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

impl PerSource {
    /// Takes a slot for `peer`, or `None` when it holds `max` already.
    fn take(self: &Arc<Self>, peer: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(peer).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            table: self.clone(),
            peer,
        })
    }
}

/// A connection's slot of its source; given back on drop.
struct SourceSlot {
    table: Arc<PerSource>,
    peer: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

/// UDP sockets (one per worker, `SO_REUSEPORT`: the kernel spreads queries over them
/// by flow) and a TCP listener bound to the same address and port, not yet serving.
#[derive(Debug)]
pub struct Listener {
    udp: Vec<std::net::UdpSocket>,
    tcp: std::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds `workers` UDP sockets and one TCP listener on `addr`. Port 0 picks one
    /// port free for both. An IPv6 address is IPv6 only, so `[::]` and `0.0.0.0` bind
    /// side by side. The TCP listener does not share its port: a second server on the
    /// same address fails to start instead of taking half the UDP queries.
    pub fn bind(addr: SocketAddr, workers: usize) -> Result<Self, ServerError> {
        let tries = if addr.port() == 0 { PORT_TRIES } else { 1 };
        let mut last = None;
        for _ in 0..tries {
            let udp_err = |addr, source| ServerError::Bind {
                proto: "UDP",
                addr,
                source,
            };
            let first = udp_socket(addr).map_err(|e| udp_err(addr, e))?;
            let bound = first.local_addr().map_err(|e| udp_err(addr, e))?;
            let mut udp = vec![first];
            for _ in 1..workers.max(1) {
                udp.push(udp_socket(bound).map_err(|e| udp_err(bound, e))?);
            }
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

    /// A listener on sockets another process bound (a handover): the UDP sockets of
    /// its workers and its TCP listener, served as they are.
    pub fn from_sockets(
        addr: SocketAddr,
        udp: Vec<std::net::UdpSocket>,
        tcp: std::net::TcpListener,
    ) -> io::Result<Self> {
        for u in &udp {
            u.set_nonblocking(true)?;
        }
        tcp.set_nonblocking(true)?;
        Ok(Self { udp, tcp, addr })
    }

    /// Copies (dup) of the sockets, to hand them over: (TCP?, fd).
    pub fn dup_sockets(&self) -> io::Result<Vec<(bool, std::os::fd::OwnedFd)>> {
        use std::os::fd::AsFd as _;
        let mut out = Vec::new();
        for u in &self.udp {
            out.push((false, u.as_fd().try_clone_to_owned()?));
        }
        out.push((true, self.tcp.as_fd().try_clone_to_owned()?));
        Ok(out)
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

/// One UDP socket of a worker: port shared with the others, destination reported
/// (on a wildcard address).
fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = socket(addr, socket2::Type::DGRAM)?;
    s.set_reuse_port(true)?;
    receive_buffer(&s);
    // Only a wildcard address needs each datagram's destination: a socket bound to one
    // address replies from it anyway, and skips a control message each way.
    if addr.ip().is_unspecified() {
        super::udp::enable_pktinfo(&s, addr.is_ipv6())?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Bytes a UDP socket may queue: a few thousand queries. The kernel default (about 200
/// KiB, a few hundred queries) overflowed at 20,000 queries a second to userspace
/// while a new daemon compiled a 500k table beside the old one (a handover) on two CPUs.
const UDP_RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// Sets [`UDP_RECEIVE_BUFFER`]: past `net.core.rmem_max` with `CAP_NET_ADMIN`
/// (`SO_RCVBUFFORCE`), else as far as `rmem_max` allows; never fails the bind.
fn receive_buffer(s: &socket2::Socket) {
    use std::os::fd::AsRawFd as _;
    let bytes = UDP_RECEIVE_BUFFER;
    // SAFETY: setsockopt on our own socket with an int of its size.
    let forced = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            4,
        )
    } == 0;
    if !forced {
        let _ = s.set_recv_buffer_size(4 << 20);
    }
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket(addr, socket2::Type::STREAM)?;
    // A restart must not wait for the last run's connections in TIME_WAIT.
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(TCP_BACKLOG)?;
    Ok(s.into())
}

/// The running server: one thread per UDP socket ([`UdpWorker`]) and one task per TCP
/// listener. Dropping it stops every thread and task, open connections included.
pub struct DnsServer {
    addrs: Vec<SocketAddr>,
    stats: Arc<ServerStats>,
    tasks: Vec<JoinHandle<()>>,
    udp: Vec<std::thread::JoinHandle<()>>,
    /// Wakes and stops the UDP threads.
    udp_stop: Arc<Stop>,
    /// Set to stop reading ([`DnsServer::drain`]).
    stop: tokio::sync::watch::Sender<bool>,
}

/// The UDP threads' stop signal: a flag each checks between batches, and an eventfd
/// that wakes the ones waiting for a datagram.
struct Stop {
    flag: std::sync::atomic::AtomicBool,
    wake: std::os::fd::OwnedFd,
}

impl Stop {
    fn new() -> io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: eventfd returns a new descriptor we own, or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            flag: std::sync::atomic::AtomicBool::new(false),
            // SAFETY: a fresh descriptor, owned from here on.
            wake: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    fn stopped(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the flag and makes the eventfd readable for good (nobody reads it).
    fn signal(&self) {
        use std::os::fd::AsRawFd as _;
        self.flag.store(true, std::sync::atomic::Ordering::Relaxed);
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

/// The CPUs this process may run on, in order (empty when the kernel does not say).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is empty; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect()
    }
}

/// Runs the calling thread on `cpu` only (best effort: logged when refused).
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc != 0 {
        tracing::debug!(cpu, error = %io::Error::last_os_error(), "pinning a UDP worker");
    }
}

/// How long a UDP worker waits for a datagram before it looks at the stop flag again
/// (the eventfd wakes it at once; this only bounds a missed wake).
const UDP_IDLE: Duration = Duration::from_millis(500);
/// How long a UDP worker waits for room in a full socket send buffer per batch.
const UDP_SEND_WAIT: Duration = Duration::from_millis(100);

/// One UDP socket's thread: takes a batch of datagrams (`recvmmsg`), answers each into
/// a reused buffer with the engine it caches ([`crate::control::EngineCache`]), counts
/// locally and publishes the counts once per batch, and sends the batch's replies
/// (`sendmmsg`). Nothing is locked or allocated per query on this path, except the
/// rate limiter's table when `[rrl]` is on and what static data and RFC 2136 updates
/// need.
struct UdpWorker {
    sock: std::net::UdpSocket,
    control: Control,
    stats: Arc<ServerStats>,
    guard: Arc<UdpGuard>,
    stop: Arc<Stop>,
    runtime: tokio::runtime::Handle,
    /// The CPU to run on, when there is one worker per CPU.
    cpu: Option<usize>,
}

impl UdpWorker {
    fn run(self) {
        use std::os::fd::AsRawFd as _;
        if let Some(cpu) = self.cpu {
            pin_to(cpu);
        }
        let fd = self.sock.as_raw_fd();
        let wake = self.stop.wake.as_raw_fd();
        let mut batch = super::udp::Batch::new(MAX_MESSAGE);
        let mut responder = Responder::default();
        let mut engine = self.control.engine().cache();
        let mut tally = Tally::default();
        while !self.stop.stopped() {
            let n = match batch.recv(fd) {
                Ok(n) => n,
                Err(e) => {
                    // E.g. ICMP errors reported on the socket: nothing to do but go on.
                    tracing::debug!(error = %e, "fallback UDP receive");
                    continue;
                }
            };
            if n == 0 {
                super::udp::wait_fd(fd, libc::POLLIN, Some(wake), UDP_IDLE);
                continue;
            }
            let e = engine.get();
            for i in 0..n {
                let Some((msg, peer, local)) = batch.datagram(i) else {
                    continue;
                };
                let (summary, owned) = if super::update::is_update(msg) {
                    // Signed by a key, answered to the sender alone: not rate limited.
                    let o = self.runtime.block_on(super::update::handle(
                        &self.control,
                        msg,
                        Transport::Udp,
                    ));
                    (o.summary(), o.response)
                } else {
                    (self.guard.answer(&mut responder, e, msg, peer), None)
                };
                tally.record(Transport::Udp, &summary);
                if summary.respond {
                    let bytes = owned.as_deref().unwrap_or(responder.response());
                    batch.reply(i, bytes, local, peer);
                }
            }
            // Counted before the replies leave: a client that has its answer sees it
            // in `/metrics`.
            tally.flush(&self.stats);
            batch.send(fd, UDP_SEND_WAIT);
        }
    }
}

/// After [`DnsServer::drain`], how long an open TCP connection still waits for a query
/// its client may have sent before it saw the handover.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// The longest [`DnsServer::drain`] waits for connections to finish.
const DRAIN_MAX: Duration = Duration::from_secs(5);

impl DnsServer {
    /// Serves `listeners`, answering every query with the engine `control` holds at
    /// that moment (so reloads and node-state changes apply to the next query). Must
    /// be called inside a tokio runtime.
    pub fn start(
        control: &Control,
        listeners: Vec<Listener>,
        tcp: TcpOptions,
        stats: Arc<ServerStats>,
    ) -> io::Result<Self> {
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        let limit = Arc::new(Semaphore::new(tcp.max_connections));
        let per_source = Arc::new(PerSource::default());
        let guard = Arc::new(UdpGuard::new(control.engine().load().config()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let udp_stop = Arc::new(Stop::new()?);
        let runtime = tokio::runtime::Handle::current();
        let cpus = allowed_cpus();
        let mut udp_threads = Vec::new();
        for l in listeners {
            addrs.push(l.addr);
            // One worker per CPU: each on its own.
            let pin = l.udp.len() > 1 && l.udp.len() == cpus.len();
            for (i, udp) in l.udp.into_iter().enumerate() {
                let worker = UdpWorker {
                    sock: udp,
                    control: control.clone(),
                    stats: stats.clone(),
                    guard: guard.clone(),
                    stop: udp_stop.clone(),
                    runtime: runtime.clone(),
                    cpu: if pin { cpus.get(i).copied() } else { None },
                };
                let thread = std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || worker.run());
                match thread {
                    Ok(t) => udp_threads.push(t),
                    Err(e) => {
                        udp_stop.signal();
                        return Err(e);
                    }
                }
            }
            let listener = TcpListener::from_std(l.tcp)?;
            tasks.push(tokio::spawn(serve_tcp(
                listener,
                control.clone(),
                stats.clone(),
                tcp,
                limit.clone(),
                per_source.clone(),
                stopped.clone(),
            )));
        }
        Ok(Self {
            addrs,
            stats,
            tasks,
            udp: udp_threads,
            udp_stop,
            stop,
        })
    }

    /// Stops reading new queries and waits (at most a few seconds) for the ones in
    /// flight: a UDP task finishes the datagram it holds, a TCP connection answers
    /// what its client sent. The sockets themselves stay open in the process they
    /// were handed to, which reads what is queued in them from then on.
    pub async fn drain(mut self) {
        let _ = self.stop.send(true);
        self.udp_stop.signal();
        let deadline = tokio::time::Instant::now() + DRAIN_MAX;
        // A UDP thread ends after the batch it holds is answered.
        let threads = std::mem::take(&mut self.udp);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = tokio::time::timeout_at(deadline, joined).await;
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// The addresses served (UDP and TCP each).
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    #[must_use]
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.udp_stop.signal();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Answers with the engine in use now: a reload or node-state change applies to the
/// next query.
async fn handle_one(control: &Control, msg: &[u8], peer: IpAddr, transport: Transport) -> Outcome {
    if super::update::is_update(msg) {
        return super::update::handle(control, msg, transport).await;
    }
    respond::handle(&control.engine().load(), msg, peer, transport)
}

async fn serve_tcp(
    listener: TcpListener,
    control: Control,
    stats: Arc<ServerStats>,
    options: TcpOptions,
    limit: Arc<Semaphore>,
    per_source: Arc<PerSource>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Connections live in this set: stopping this task stops them.
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            a = listener.accept() => Some(a),
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Some(accepted) = accepted else {
            // Draining: no new connection (the listener's queue is the next
            // process's); the open ones finish what their clients sent.
            drop(listener);
            while conns.join_next().await.is_some() {}
            return;
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
        let Some(slot) = per_source.take(peer.ip(), options.max_per_source) else {
            stats.tcp_refused_source();
            drop(stream);
            continue;
        };
        stats.tcp_accepted();
        let control = control.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let life = options.max_lifetime;
            let served = connection(stream, peer.ip(), &control, &stats, options, stop);
            match tokio::time::timeout(life, served).await {
                Ok(Ok(Some(why))) => stats.tcp_close(why),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "fallback TCP connection"),
                Err(_) => stats.tcp_close(TcpClose::Lifetime),
            }
            stats.tcp_closed();
            drop((permit, slot));
        });
    }
}

/// One TCP connection: length-prefixed queries answered in order, as many as the
/// client sends (pipelined), until it closes, sends garbage framing, stays idle, does
/// not read its replies, or reaches `max_queries`. Returns why the server closed it
/// (`None`: the client did). The caller bounds its lifetime.
async fn connection(
    stream: TcpStream,
    peer: IpAddr,
    control: &Control,
    stats: &ServerStats,
    options: TcpOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> io::Result<Option<TcpClose>> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut w = BufWriter::new(w);
    // Fixed size: a length prefix never sizes an allocation.
    let mut buf = vec![0u8; MAX_MESSAGE];
    let idle = options.idle_timeout;
    let mut answered = 0u32;
    loop {
        // The next query's first bytes (`fill_buf` is cancel-safe: what it read stays
        // in the buffer). While the server drains, a connection waits only
        // `DRAIN_GRACE` for a query its client sent before it saw the handover.
        while r.buffer().is_empty() {
            let draining = *stop.borrow();
            let wait = if draining { DRAIN_GRACE } else { idle };
            let got = tokio::select! {
                got = tokio::time::timeout(wait, r.fill_buf()) => Some(got.map(|g| g.map(<[u8]>::is_empty))),
                _ = stop.wait_for(|s| *s), if !draining => None,
            };
            match got {
                None => {}
                Some(Ok(Ok(true))) => return Ok(None),
                Some(Ok(Ok(false))) => break,
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(_)) if draining => return Ok(None),
                Some(Err(_)) => return Ok(Some(TcpClose::Idle)),
            }
        }
        let len = match tokio::time::timeout(idle, r.read_u16()).await {
            Ok(Ok(n)) => usize::from(n),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(Some(TcpClose::Idle)),
        };
        let msg = buf.get_mut(..len).unwrap_or_default();
        match tokio::time::timeout(idle, r.read_exact(msg)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(Some(TcpClose::Idle)),
        }
        let outcome = handle_one(control, msg, peer, Transport::Tcp).await;
        stats.record(Transport::Tcp, &outcome);
        if let Some(resp) = outcome.response {
            let n = u16::try_from(resp.len()).unwrap_or(u16::MAX);
            // Every write is bounded: the buffer flushes into the socket when full, and
            // a client that never reads would otherwise hold the connection forever.
            let write = async {
                w.write_u16(n).await?;
                w.write_all(resp.get(..usize::from(n)).unwrap_or_default())
                    .await
            };
            match tokio::time::timeout(idle, write).await {
                Ok(written) => written?,
                Err(_) => return Ok(Some(TcpClose::WriteTimeout)),
            }
            answered += 1;
        }
        let last = answered >= options.max_queries;
        // Pipelined queries already received are answered before one flush.
        if last || r.buffer().is_empty() {
            match tokio::time::timeout(idle, w.flush()).await {
                Ok(flushed) => flushed?,
                Err(_) => return Ok(Some(TcpClose::WriteTimeout)),
            }
        }
        if last {
            return Ok(Some(TcpClose::Queries));
        }
    }
}
