//! UDP with the destination address: a reply leaves from the address its query came to.
//!
//! A socket bound to a wildcard address (`0.0.0.0`, `[::]`) receives queries for every
//! address of the host; a plain `send_to` lets routing pick the reply's source, which on
//! a host with several addresses (anycast boxes have a service address beside the
//! management one) is often not the address the client asked, and the client drops the
//! reply. `IP_PKTINFO`/`IPV6_RECVPKTINFO` report each datagram's destination address and
//! interface; the reply is sent with the same `IP_PKTINFO`/`IPV6_PKTINFO` as source.
use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd as _, RawFd},
};

use tokio::{io::Interest, net::UdpSocket};

/// Where a datagram arrived: its destination address and interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    pub addr: IpAddr,
    pub ifindex: u32,
}

// The address families as `sa_family_t` (2 and 10 fit any width).
#[expect(clippy::cast_possible_truncation, reason = "small constants")]
const AF_INET: libc::sa_family_t = libc::AF_INET as libc::sa_family_t;
#[expect(clippy::cast_possible_truncation, reason = "small constants")]
const AF_INET6: libc::sa_family_t = libc::AF_INET6 as libc::sa_family_t;

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

/// Receives one datagram: its length, the sender, and where it arrived (when the
/// kernel said).
pub async fn recv(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Local>)> {
    let fd = sock.as_raw_fd();
    sock.async_io(Interest::READABLE, || recvmsg(fd, buf)).await
}

/// Sends `buf` to `peer` from `local` (the address the query came to).
pub async fn send(
    sock: &UdpSocket,
    buf: &[u8],
    peer: SocketAddr,
    local: Option<Local>,
) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    sock.async_io(Interest::WRITABLE, || sendmsg(fd, buf, peer, local))
        .await
}

fn recvmsg(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Local>)> {
    // SAFETY: zeroed plain C structs; every pointer handed to the kernel points into
    // a live local of the stated length.
    unsafe {
        let mut name: libc::sockaddr_storage = zeroed();
        let mut control = Control([0; 64]);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = std::ptr::from_mut(&mut name).cast();
        msg.msg_namelen = socklen(size_of::<libc::sockaddr_storage>());
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len();
        let n = libc::recvmsg(fd, &raw mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let peer = sockaddr(&name).ok_or_else(|| io::Error::other("unknown sender family"))?;
        let mut local = None;
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    local = Some(Local {
                        addr: IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
                        ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    local = Some(Local {
                        addr: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                        ifindex: info.ipi6_ifindex,
                    });
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
        Ok((usize::try_from(n).unwrap_or(0), peer, local))
    }
}

fn sendmsg(fd: RawFd, buf: &[u8], peer: SocketAddr, local: Option<Local>) -> io::Result<usize> {
    // SAFETY: as in `recvmsg`; the control buffer is large enough for one pktinfo
    // message (CMSG_SPACE of in6_pktinfo is 32 bytes).
    unsafe {
        let (mut name, namelen) = to_sockaddr(peer);
        let mut control = Control([0; 64]);
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = std::ptr::from_mut(&mut name).cast();
        msg.msg_namelen = namelen;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        // The source only where it is the peer's family (a v4-mapped peer on a v6
        // socket is answered as the kernel chooses).
        let cmsg = match (local, peer) {
            (
                Some(Local {
                    addr: IpAddr::V4(a),
                    ifindex,
                }),
                SocketAddr::V4(_),
            ) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: libc::c_int::try_from(ifindex).unwrap_or(0),
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                Some((libc::IPPROTO_IP, libc::IP_PKTINFO, pod_bytes(&info)))
            }
            (
                Some(Local {
                    addr: IpAddr::V6(a),
                    ifindex,
                }),
                SocketAddr::V6(_),
            ) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                Some((libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, pod_bytes(&info)))
            }
            _ => None,
        };
        if let Some((level, ty, data)) = cmsg {
            let len = u32::try_from(data.len()).unwrap_or(0);
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(len) as usize;
            let c = libc::CMSG_FIRSTHDR(&raw const msg);
            (*c).cmsg_level = level;
            (*c).cmsg_type = ty;
            (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
        }
        let n = libc::sendmsg(fd, &raw const msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// The bytes of a plain C struct.
fn pod_bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: `T` is one of the libc pktinfo structs: plain data, no padding read
    // as anything but bytes.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
        .to_vec()
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

fn to_sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed storage, then one sockaddr of the matching family written in.
    unsafe {
        let mut s: libc::sockaddr_storage = zeroed();
        let len = match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: AF_INET,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*v4.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                std::ptr::write(std::ptr::from_mut(&mut s).cast(), sin);
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: AF_INET6,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                std::ptr::write(std::ptr::from_mut(&mut s).cast(), sin6);
                size_of::<libc::sockaddr_in6>()
            }
        };
        (s, socklen(len))
    }
}
