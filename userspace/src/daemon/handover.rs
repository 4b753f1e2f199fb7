//! Handover: a new `geodns run` on the pin directory of a running one takes its place
//! without a lost query.
//!
//! The running daemon listens on a unix socket named after its pin directory. The new
//! one connects first thing and asks (`TAKE`); the old one sends its pid, version and
//! node states, then every listening socket it serves on (DNS UDP and TCP, metrics,
//! redirector) as file descriptors (`SCM_RIGHTS`), and keeps serving. The new daemon
//! compiles and loads its maps, serves on the same sockets (both processes read them
//! during the overlap: the kernel queues a datagram or a connection once, on the
//! socket, and whichever reads first answers), replaces the program behind the pinned
//! link in one update, pins its maps, and says `DONE`. The old one then stops
//! reading, answers what it holds, and exits without detaching or unpinning; the
//! connection closing is the new one's sign that it is alone.
//!
//! Passing the sockets rather than binding new ones with `SO_REUSEPORT`: a datagram
//! queued on a reuseport socket is lost when that socket closes, and the TCP listener
//! does not share its port; a passed socket never closes, so nothing queued on it is
//! lost. If the new daemon fails before `DONE` (a bad config, a failed load) it just
//! exits: the old one sees the connection close and goes on serving.
use std::{
    io::{self, Read as _, Write as _},
    net::SocketAddr,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

const HELLO: &[u8] = b"TAKE geodns-handover/1\n";
const DONE: &[u8] = b"DONE\n";
/// The old daemon's offer is at most this long (node states of a large fleet).
const MAX_OFFER: u32 = 16 << 20;
/// How long the new daemon waits for the old one to answer, and then to exit.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a socket is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    DnsUdp,
    DnsTcp,
    Metrics,
    Redirect,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Offer {
    pid: u32,
    version: String,
    /// The node book's state (`NodeBook::snapshot`).
    states: String,
    sockets: Vec<(Role, SocketAddr)>,
}

/// The unix socket of the daemon on `pin_dir`: one daemon per pin directory (and so
/// per interface), found by the next one.
#[must_use]
pub fn socket_path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    PathBuf::from("/run/geodns").join(format!("handover-{name}.sock"))
}

/// The listening sockets this daemon serves on (copies), to hand over.
#[derive(Clone, Default)]
pub struct Kept(Arc<Mutex<Vec<(Role, SocketAddr, OwnedFd)>>>);

impl Kept {
    pub fn keep(&self, role: Role, addr: SocketAddr, fd: OwnedFd) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((role, addr, fd));
    }

    /// A copy of `socket` under `role`.
    pub fn keep_dup(
        &self,
        role: Role,
        addr: SocketAddr,
        socket: &impl std::os::fd::AsFd,
    ) -> io::Result<()> {
        self.keep(role, addr, socket.as_fd().try_clone_to_owned()?);
        Ok(())
    }
}

/// What the old daemon handed over; the connection stays open until [`Taken::finish`].
pub struct Taken {
    conn: UnixStream,
    pub pid: u32,
    pub version: String,
    pub states: String,
    sockets: Vec<(Role, SocketAddr, Option<OwnedFd>)>,
    started: Instant,
}

impl Taken {
    /// Takes every handed-over socket of `role` (at `addr`, or any address).
    pub fn take(&mut self, role: Role, addr: Option<SocketAddr>) -> Vec<(SocketAddr, OwnedFd)> {
        let mut out = Vec::new();
        for (r, a, fd) in &mut self.sockets {
            if *r == role && addr.is_none_or(|want| want == *a) {
                if let Some(fd) = fd.take() {
                    out.push((*a, fd));
                }
            }
        }
        out
    }

    /// The DNS listeners as the old daemon served them: per address its UDP sockets
    /// and its TCP listener.
    pub fn dns_listeners(&mut self) -> anyhow::Result<Vec<crate::authoritative::Listener>> {
        let tcp = self.take(Role::DnsTcp, None);
        let mut out = Vec::new();
        for (addr, fd) in tcp {
            let udp = self
                .take(Role::DnsUdp, Some(addr))
                .into_iter()
                .map(|(_, fd)| std::net::UdpSocket::from(fd))
                .collect();
            out.push(
                crate::authoritative::Listener::from_sockets(
                    addr,
                    udp,
                    std::net::TcpListener::from(fd),
                )
                .with_context(|| format!("the handed-over sockets of {addr}"))?,
            );
        }
        Ok(out)
    }

    /// Tells the old daemon to go and waits until it has exited (its end of the
    /// connection closes with the process). Returns the time since the handover began.
    pub fn finish(mut self) -> anyhow::Result<Duration> {
        self.conn
            .write_all(DONE)
            .context("telling the old daemon to exit")?;
        self.conn.set_read_timeout(Some(EXIT_TIMEOUT))?;
        let mut byte = [0u8; 1];
        loop {
            match self.conn.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("waiting for the old daemon (pid {}) to exit", self.pid)
                    })
                }
            }
        }
        Ok(self.started.elapsed())
    }
}

/// Asks the daemon listening at `path` for its sockets and states. `None` when no
/// daemon listens there (none ran, or it died: a stale socket file).
pub fn take(path: &Path) -> anyhow::Result<Option<Taken>> {
    let started = Instant::now();
    let mut conn = match UnixStream::connect(path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    let ctx = || format!("the handover from the daemon at {}", path.display());
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    conn.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    conn.write_all(HELLO).with_context(ctx)?;
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).with_context(ctx)?;
    let len = u32::from_le_bytes(len);
    anyhow::ensure!(len <= MAX_OFFER, "{}: an offer of {len} bytes", ctx());
    let mut text = vec![0u8; len as usize];
    conn.read_exact(&mut text).with_context(ctx)?;
    let offer: Offer = serde_json::from_slice(&text).with_context(ctx)?;
    let mut sockets = Vec::with_capacity(offer.sockets.len());
    for (role, addr) in offer.sockets {
        let fd = recv_fd(&conn).with_context(ctx)?;
        sockets.push((role, addr, Some(fd)));
    }
    tracing::info!(
        pid = offer.pid,
        version = %offer.version,
        sockets = sockets.len(),
        "taking over from the running daemon"
    );
    Ok(Some(Taken {
        conn,
        pid: offer.pid,
        version: offer.version,
        states: offer.states,
        sockets,
        started,
    }))
}

/// The old side: answers one new daemon at a time. `states` gives the node book's
/// state at the moment of the request. `handing_over` is set while a new daemon holds
/// the sockets (a SIGTERM then must not detach what it is about to take); `done` fires
/// when it said `DONE`.
pub fn listen(
    path: &Path,
    kept: Kept,
    states: impl Fn() -> String + Send + 'static,
    handing_over: Arc<AtomicBool>,
    done: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A dead daemon's socket file; a live daemon's was handed over already (this one
    // has waited for it to exit).
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Only root may take the sockets over.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("geodns-handover".to_owned())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match offer(conn, &kept, &states, &handing_over) {
                    Ok(true) => {
                        let _ = done.send(true);
                        return;
                    }
                    Ok(false) => {
                        tracing::warn!("the new daemon gave up before taking over; still serving");
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "handover failed; still serving");
                    }
                }
                handing_over.store(false, Ordering::SeqCst);
            }
        })?;
    Ok(())
}

/// One conversation; `true` when the new daemon said `DONE`.
fn offer(
    mut conn: UnixStream,
    kept: &Kept,
    states: &impl Fn() -> String,
    handing_over: &AtomicBool,
) -> anyhow::Result<bool> {
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut hello = [0u8; HELLO.len()];
    conn.read_exact(&mut hello).context("reading the request")?;
    anyhow::ensure!(hello == HELLO, "not a handover request");
    let kept = kept.0.lock().unwrap_or_else(PoisonError::into_inner);
    let offer = Offer {
        pid: std::process::id(),
        version: crate::version::long(),
        states: states(),
        sockets: kept.iter().map(|(r, a, _)| (*r, *a)).collect(),
    };
    let text = serde_json::to_vec(&offer)?;
    handing_over.store(true, Ordering::SeqCst);
    conn.write_all(&u32::try_from(text.len())?.to_le_bytes())?;
    conn.write_all(&text)?;
    for (_, _, fd) in kept.iter() {
        send_fd(&conn, fd.as_raw_fd())?;
    }
    drop(kept);
    tracing::info!("sockets handed over; serving on until the new daemon is ready");
    // The new daemon compiles and loads meanwhile: no timeout.
    conn.set_read_timeout(None)?;
    let mut done = [0u8; DONE.len()];
    match conn.read_exact(&mut done) {
        Ok(()) if done == DONE => {}
        _ => return Ok(false),
    }
    // Kept open until the process exits: the new daemon waits for it to close.
    std::mem::forget(conn);
    Ok(true)
}

/// Bytes of one descriptor in a control message.
const FD_LEN: u32 = 4;
const _: () = assert!(std::mem::size_of::<RawFd>() == FD_LEN as usize);

/// The buffers of a one-byte message carrying one descriptor: the byte, the control
/// buffer (8-aligned, `CMSG_SPACE` of one descriptor) and the iovec over the byte.
struct FdMessage {
    byte: [u8; 1],
    iov: libc::iovec,
    control: Vec<u64>,
}

impl FdMessage {
    fn new() -> Self {
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(FD_LEN) } as usize;
        Self {
            byte: [0],
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 1,
            },
            control: vec![0u64; space.div_ceil(8)],
        }
    }

    /// A `msghdr` over these buffers; valid while `self` stays where it is.
    fn header(&mut self) -> libc::msghdr {
        self.iov.iov_base = self.byte.as_mut_ptr().cast();
        // SAFETY: an all-zero msghdr is a valid empty one; CMSG_SPACE only computes.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut self.iov;
        msg.msg_iovlen = 1;
        msg.msg_control = self.control.as_mut_ptr().cast();
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(FD_LEN) } as usize;
        msg
    }
}

/// Sends one descriptor with one byte of data.
fn send_fd(conn: &UnixStream, fd: RawFd) -> io::Result<()> {
    let mut buffers = FdMessage::new();
    let msg = buffers.header();
    // SAFETY: `msg` points into `buffers`, alive here, with room for one descriptor.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(FD_LEN) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(conn.as_raw_fd(), &raw const msg, 0) != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`].
fn recv_fd(conn: &UnixStream) -> io::Result<OwnedFd> {
    let mut buffers = FdMessage::new();
    let mut msg = buffers.header();
    // SAFETY: as in `send_fd`; the descriptor read from the control message is a new
    // one the kernel installed in this process.
    unsafe {
        let n = libc::recvmsg(conn.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::other("a handover message without a descriptor"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_named_after_the_pin_dir() {
        assert_eq!(
            socket_path(Path::new("/sys/fs/bpf/geodns")),
            PathBuf::from("/run/geodns/handover-sys-fs-bpf-geodns.sock")
        );
    }

    #[test]
    fn descriptors_cross_a_unix_socket() {
        let (a, b) = UnixStream::pair().expect("pair");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = udp.local_addr().expect("addr");
        send_fd(&a, udp.as_raw_fd()).expect("send");
        send_fd(&a, udp.as_raw_fd()).expect("send");
        let first = std::net::UdpSocket::from(recv_fd(&b).expect("receive"));
        let second = std::net::UdpSocket::from(recv_fd(&b).expect("receive"));
        assert_eq!(first.local_addr().expect("addr"), addr);
        assert_eq!(second.local_addr().expect("addr"), addr);
    }
}
