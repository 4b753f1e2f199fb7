//! UDP with the destination address: a reply leaves from the address its query came to.
//!
//! A socket bound to a wildcard address (`0.0.0.0`, `[::]`) receives queries for every
//! address of the host; a plain `send_to` lets routing pick the reply's source, which on
//! a host with several addresses (anycast boxes have a service address beside the
//! management one) is often not the address the client asked, and the client drops the
//! reply. `IP_PKTINFO`/`IPV6_RECVPKTINFO` report each datagram's destination address and
//! interface; the reply is sent with the same `IP_PKTINFO`/`IPV6_PKTINFO` as source.
//! A [`Batch`] takes and sends many datagrams per system call (`recvmmsg`/`sendmmsg`).
use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd as _, RawFd},
};

/// Where a datagram arrived: its destination address and interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    pub addr: IpAddr,
    pub ifindex: u32,
}

/// Room for one `in6_pktinfo` control message (the larger of the two), aligned.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Asks the kernel to report each datagram's destination (`socket` of `family`).
pub fn enable_pktinfo(socket: &socket2::Socket, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: a valid fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&on).cast(),
            socklen(size_of::<libc::c_int>()),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn socklen(n: usize) -> libc::socklen_t {
    libc::socklen_t::try_from(n).unwrap_or(libc::socklen_t::MAX)
}

/// Where a datagram arrived, from one control message (`None`: not a pktinfo one).
///
/// # Safety
/// `c` points at a control message inside a buffer the kernel filled.
unsafe fn cmsg_local(c: *const libc::cmsghdr) -> Option<Local> {
    // SAFETY: the caller's; the type says which struct the data holds.
    unsafe {
        let data = libc::CMSG_DATA(c);
        match ((*c).cmsg_level, (*c).cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                Some(Local {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
                    ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
                })
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                Some(Local {
                    addr: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                    ifindex: info.ipi6_ifindex,
                })
            }
            _ => None,
        }
    }
}

/// Room for the larger pktinfo struct (`in6_pktinfo`, 20 bytes).
type PktinfoBytes = [u8; 20];

/// The control message that sends a reply from `local`: (level, type, data, length),
/// only where `local` is the peer's family (a v4-mapped peer on a v6 socket is
/// answered as the kernel chooses).
fn source_info(
    local: Option<Local>,
    peer: SocketAddr,
) -> Option<(libc::c_int, libc::c_int, PktinfoBytes, u32)> {
    let mut out: PktinfoBytes = [0; 20];
    match (local?, peer) {
        (
            Local {
                addr: IpAddr::V4(a),
                ifindex,
            },
            SocketAddr::V4(_),
        ) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: libc::c_int::try_from(ifindex).unwrap_or(0),
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let len = pod_into(&info, &mut out);
            Some((libc::IPPROTO_IP, libc::IP_PKTINFO, out, len))
        }
        (
            Local {
                addr: IpAddr::V6(a),
                ifindex,
            },
            SocketAddr::V6(_),
        ) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                ipi6_ifindex: ifindex,
            };
            let len = pod_into(&info, &mut out);
            Some((libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, out, len))
        }
        _ => None,
    }
}

/// Copies the bytes of a plain C struct into `out`; returns their number.
fn pod_into<T: Copy>(v: &T, out: &mut PktinfoBytes) -> u32 {
    let n = size_of::<T>().min(out.len());
    // SAFETY: `T` is one of the libc pktinfo structs: plain data, read as bytes; at
    // most `out.len()` of them are copied.
    unsafe {
        std::ptr::copy_nonoverlapping(std::ptr::from_ref(v).cast::<u8>(), out.as_mut_ptr(), n);
    };
    u32::try_from(n).unwrap_or(0)
}

fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { std::ptr::read(std::ptr::from_ref(s).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read(std::ptr::from_ref(s).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Datagrams taken or sent by one system call (`recvmmsg`/`sendmmsg`).
pub const BATCH: usize = BATCH_C as usize;
const BATCH_C: libc::c_uint = 32;

/// One received datagram's slot of a [`Batch`].
struct Slot {
    buf: Vec<u8>,
    len: usize,
    name: libc::sockaddr_storage,
    namelen: libc::socklen_t,
    control: Control,
    /// Bytes of `control` the kernel wrote.
    controllen: usize,
    /// Its reply, when there is one.
    reply: Vec<u8>,
    send: bool,
    /// The reply's pktinfo control message (built from where the query arrived).
    reply_control: Control,
    reply_controllen: usize,
}

/// Buffers for [`BATCH`] datagrams and their replies, allocated once per worker: a
/// receive and a send are one system call each for the whole batch.
pub struct Batch {
    slots: Vec<Slot>,
    headers: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    /// Datagrams in the slots since the last [`Batch::recv`].
    filled: usize,
}

impl Batch {
    /// Slots of `size` bytes each (a datagram longer than that is cut, as by `recv`).
    #[must_use]
    pub fn new(size: usize) -> Self {
        let slots = (0..BATCH)
            .map(|_| Slot {
                buf: vec![0; size],
                len: 0,
                // SAFETY: plain C structs, zero is a valid value.
                name: unsafe { zeroed() },
                namelen: 0,
                control: Control([0; 64]),
                controllen: 0,
                reply: Vec::with_capacity(512),
                send: false,
                reply_control: Control([0; 64]),
                reply_controllen: 0,
            })
            .collect();
        Self {
            slots,
            // SAFETY: as above.
            headers: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            filled: 0,
        }
    }

    /// Takes up to [`BATCH`] datagrams waiting on `fd` without blocking; `Ok(0)`: none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.filled = 0;
        for ((slot, h), iov) in self
            .slots
            .iter_mut()
            .zip(&mut self.headers)
            .zip(&mut self.iovs)
        {
            iov.iov_base = slot.buf.as_mut_ptr().cast();
            iov.iov_len = slot.buf.len();
            // SAFETY: zero is a valid msghdr.
            h.msg_hdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = std::ptr::from_mut(&mut slot.name).cast();
            h.msg_hdr.msg_namelen = socklen(size_of::<libc::sockaddr_storage>());
            h.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = slot.control.0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = slot.control.0.len();
            h.msg_len = 0;
            slot.send = false;
        }
        // SAFETY: every header points into a slot of this batch, alive and of the
        // stated length for the call; BATCH fits a c_uint.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH_C,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = usize::try_from(n).unwrap_or(0).min(BATCH);
        for (slot, h) in self.slots.iter_mut().zip(&self.headers).take(n) {
            slot.len = (h.msg_len as usize).min(slot.buf.len());
            slot.namelen = h.msg_hdr.msg_namelen;
            slot.controllen = h.msg_hdr.msg_controllen;
        }
        self.filled = n;
        Ok(n)
    }

    /// The `i`th datagram received: its bytes, sender and destination.
    #[must_use]
    pub fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr, Option<Local>)> {
        if i >= self.filled {
            return None;
        }
        let slot = self.slots.get(i)?;
        let peer = sockaddr(&slot.name)?;
        Some((slot.buf.get(..slot.len)?, peer, pktinfo(slot)))
    }

    /// Sets the reply to datagram `i` (sent by [`Batch::send`]), leaving from where the
    /// query arrived.
    pub fn reply(&mut self, i: usize, bytes: &[u8], local: Option<Local>, peer: SocketAddr) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        slot.reply.clear();
        slot.reply.extend_from_slice(bytes);
        slot.send = true;
        slot.reply_controllen = 0;
        if let Some((level, ty, data, len)) = source_info(local, peer) {
            // SAFETY: a zeroed msghdr pointing at this slot's control buffer, large
            // enough for one pktinfo message (CMSG_SPACE of in6_pktinfo is 32 bytes).
            unsafe {
                let mut msg: libc::msghdr = zeroed();
                msg.msg_control = slot.reply_control.0.as_mut_ptr().cast();
                let space = libc::CMSG_SPACE(len) as usize;
                msg.msg_controllen = space;
                let c = libc::CMSG_FIRSTHDR(&raw const msg);
                (*c).cmsg_level = level;
                (*c).cmsg_type = ty;
                (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
                std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), len as usize);
                slot.reply_controllen = space;
            }
        }
    }

    /// Sends the replies set since the last receive, in one `sendmmsg` where the socket
    /// takes them all; waits for room (at most `wait` in all) when its buffer is full.
    /// A reply the kernel refuses (an unreachable peer) is skipped.
    pub fn send(&mut self, fd: RawFd, wait: std::time::Duration) {
        let mut n = 0;
        for i in 0..self.filled {
            let (Some(slot), Some(h), Some(iov)) = (
                self.slots.get_mut(i),
                self.headers.get_mut(n),
                self.iovs.get_mut(n),
            ) else {
                break;
            };
            if !slot.send {
                continue;
            }
            iov.iov_base = slot.reply.as_mut_ptr().cast();
            iov.iov_len = slot.reply.len();
            // SAFETY: zero is a valid msghdr.
            h.msg_hdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = std::ptr::from_mut(&mut slot.name).cast();
            h.msg_hdr.msg_namelen = slot.namelen;
            h.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            h.msg_hdr.msg_iovlen = 1;
            if slot.reply_controllen > 0 {
                h.msg_hdr.msg_control = slot.reply_control.0.as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = slot.reply_controllen;
            }
            h.msg_len = 0;
            n += 1;
        }
        let deadline = std::time::Instant::now() + wait;
        let mut done = 0;
        while done < n {
            let rest = self.headers.get_mut(done..n).unwrap_or_default();
            // SAFETY: headers point into the slots, alive for the call.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    rest.as_mut_ptr(),
                    libc::c_uint::try_from(rest.len()).unwrap_or(0),
                    libc::MSG_DONTWAIT,
                )
            };
            if sent > 0 {
                done += usize::try_from(sent).unwrap_or(1);
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    tracing::debug!(dropped = n - done, "UDP send buffer full");
                    return;
                }
                wait_fd(fd, libc::POLLOUT, None, left);
                continue;
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::debug!(error = %e, "fallback UDP send");
            done += 1;
        }
    }
}

/// Waits until `fd` is ready for `events` or `wake` is readable, at most `timeout`.
pub fn wait_fd(
    fd: RawFd,
    events: libc::c_short,
    wake: Option<RawFd>,
    timeout: std::time::Duration,
) {
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: two valid pollfd structs (a negative fd is ignored by poll).
    unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
}

/// Where the datagram in `slot` arrived, from its pktinfo control message.
fn pktinfo(slot: &Slot) -> Option<Local> {
    // SAFETY: a msghdr over the slot's control buffer with the length the kernel
    // wrote; the CMSG macros stay within it.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_control = slot.control.0.as_ptr().cast_mut().cast();
        msg.msg_controllen = slot.controllen.min(slot.control.0.len());
        let mut local = None;
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            local = local.or_else(|| cmsg_local(c));
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
        local
    }
}
