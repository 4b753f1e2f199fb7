//! The benchmarks' own DNS load generator: every query from another client.
//!
//! kxdpgun (Knot 3.2.6, Debian 12) takes `-l 198.18.0.0/15` but walks its source ports
//! first: the address changes once every 63,536 queries, so a 3-second run at 1M
//! queries a second comes from about 50 clients, each looked up 63,536 times in a row
//! with everything in cache. This generator sends each query of a run from another
//! address and port drawn at random from the range, with a name drawn by weight from a
//! mix of templates (a `{rand}` in a name becomes 8 random hex digits per query: a
//! random-subdomain flood).
//!
//! Sending: one `AF_PACKET` socket on the client veth (no queueing discipline:
//! `PACKET_QDISC_BYPASS`), `sendmmsg` of 64 prebuilt Ethernet frames at a time, cycling
//! through a pool of [`POOL`] frames built before the clock starts, from a thread
//! pinned to CPU 0 in the client namespace. Receiving: `xdp_count` of the baseline
//! object on the client veth counts every reply from the DNS port by rcode and drops
//! it (the replies go to addresses the client host does not have). Bounded: a run lasts
//! the given time and offers at most the given rate.
use std::{
    io,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use aya::maps::PerCpuArray;
use geodns_common::REPLY_COUNT_SLOTS;

use crate::{NetnsPair, Side};

/// Frames built before a run; sending cycles through them.
pub const POOL: usize = 1 << 16;
/// Frames per `sendmmsg`.
const BATCH: usize = 64;

/// One kind of query of a mix.
#[derive(Clone, Debug)]
pub struct Template {
    /// The query name; `{rand}` becomes 8 random hex digits in each frame.
    pub name: String,
    /// The query type (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
    /// With an OPT record (payload size 1232).
    pub edns: bool,
    /// Share of the mix, relative to the other templates' weights.
    pub weight: u32,
}

impl Template {
    /// A template without EDNS.
    #[must_use]
    pub fn new(name: &str, qtype: u16, weight: u32) -> Self {
        Self {
            name: name.to_string(),
            qtype,
            edns: false,
            weight,
        }
    }
}

/// Where the queries come from.
#[derive(Clone, Copy, Debug)]
pub enum Sources {
    /// The client veth's own address, one source port.
    One,
    /// Random addresses of `198.18.0.0/15` (never the pair's own /30) and random ports.
    Many,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Shot {
    /// Frames the socket accepted.
    pub sent: u64,
    /// Frames the socket refused (the veth's queue was full).
    pub refused: u64,
    /// Seconds of sending.
    pub seconds: f64,
    /// Replies counted on the client veth, by rcode.
    pub rcodes: [u64; REPLY_COUNT_SLOTS as usize],
}

impl Shot {
    /// All replies.
    #[must_use]
    pub fn replies(&self) -> u64 {
        self.rcodes.iter().sum()
    }

    /// Replies per second of sending.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    pub fn qps(&self) -> f64 {
        self.replies() as f64 / self.seconds
    }

    /// Queries sent per second.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    pub fn sent_qps(&self) -> f64 {
        self.sent as f64 / self.seconds
    }

    /// The share of the queries sent that got a reply.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a share")]
    pub fn reply_share(&self) -> f64 {
        self.replies() as f64 / self.sent.max(1) as f64
    }
}

/// xorshift64*: enough randomness for addresses, ports and names, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The DNS query of `t` with id `id`, `{rand}` filled from `rng`.
fn query(t: &Template, id: u16, rng: &mut Rng) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(t.edns)]);
    let name = if t.name.contains("{rand}") {
        t.name
            .replace("{rand}", &format!("{:08x}", rng.next() & 0xffff_ffff))
    } else {
        t.name.clone()
    };
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("a label of at most 63 bytes"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&t.qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if t.edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

/// The ones' complement sum of `data` folded to 16 bits, not inverted.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// One Ethernet frame: IPv4, UDP with its checksum, the DNS query.
fn frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    dns: &[u8],
) -> Vec<u8> {
    let udp_len = u16::try_from(8 + dns.len()).expect("a small query");
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + usize::from(ip_len));
    f.extend_from_slice(&macs.1);
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.0.octets());
    ip[16..20].copy_from_slice(&dst.0.octets());
    let c = !u16::try_from(sum16(0, &ip)).unwrap_or(0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&src.1.to_be_bytes());
    udp.extend_from_slice(&dst.1.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(dns);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.0.octets());
    pseudo[4..8].copy_from_slice(&dst.0.octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let c = !u16::try_from(sum16(sum16(0, &pseudo), &udp)).unwrap_or(0);
    let c = if c == 0 { 0xffff } else { c };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// A MAC address as `ip link` prints it.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

fn mac_of(pair: &NetnsPair, side: Side) -> io::Result<[u8; 6]> {
    let path = format!("/sys/class/net/{}/address", pair.ifname(side));
    let out = pair.exec(side, &["cat", &path])?;
    parse_mac(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| io::Error::other(format!("no MAC address in {path}")))
}

/// Builds the run's frame pool: `POOL` queries drawn from `mix` by weight.
fn pool(
    pair: &NetnsPair,
    mix: &[Template],
    sources: Sources,
    seed: u64,
) -> io::Result<Vec<Vec<u8>>> {
    let macs = (mac_of(pair, Side::Client)?, mac_of(pair, Side::Server)?);
    frames(macs, (pair.client_v4, pair.server_v4), mix, sources, seed)
}

/// [`POOL`] frames from `hosts.0`'s side (or the many sources, never `hosts.0`'s /30)
/// to `hosts.1`, port 53, with queries drawn from `mix` by weight.
fn frames(
    macs: ([u8; 6], [u8; 6]),
    hosts: (Ipv4Addr, Ipv4Addr),
    mix: &[Template],
    sources: Sources,
    seed: u64,
) -> io::Result<Vec<Vec<u8>>> {
    let total: u64 = mix.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        return Err(io::Error::other("a query mix without weight"));
    }
    let own = u32::from(hosts.0) & !3;
    let mut rng = Rng(seed | 1);
    let mut frames = Vec::with_capacity(POOL);
    for i in 0..POOL {
        let mut pick = rng.below(total);
        let t = mix
            .iter()
            .find(|t| {
                let w = u64::from(t.weight);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(&mix[0]);
        let src = match sources {
            Sources::One => (hosts.0, 40_000),
            Sources::Many => loop {
                let a = 0xc612_0000 | u32::try_from(rng.below(1 << 17)).unwrap_or(0);
                if a & !3 != own {
                    let port = 1024 + u16::try_from(rng.below(64_512)).unwrap_or(0);
                    break (Ipv4Addr::from(a), port);
                }
            },
        };
        let id = u16::try_from(i & 0xffff).unwrap_or(0);
        let dns = query(t, id, &mut rng);
        frames.push(frame(macs, src, (hosts.1, 53), &dns));
    }
    Ok(frames)
}

/// Pins every thread of process `pid` to `cpu` (threads it starts later inherit it):
/// the server under test shares the second CPU with its receive thread, as in the
/// peers' measurements, and leaves the first to the generator.
///
/// # Errors
/// The process is gone or the affinity call failed.
pub fn pin_process(pid: u32, cpu: usize) -> io::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        crate::netns::pin_task(tid, cpu)?;
    }
    Ok(())
}

/// The CPU the server side runs on in the end-to-end benchmarks: the last one.
#[must_use]
pub fn server_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get) - 1
}

/// Sends `frames` in a loop on the interface `ifindex` of the calling thread's
/// namespace for `seconds`, at most `max_qps` a second; returns (sent, refused, seconds).
fn send_loop(
    ifindex: u32,
    frames: &[Vec<u8>],
    seconds: f64,
    max_qps: u64,
) -> io::Result<(u64, u64, f64)> {
    // SAFETY: plain socket calls with valid, sized arguments; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let one: libc::c_int = 1;
        // SAFETY: an int option by pointer with its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                u32::try_from(size_of::<libc::c_int>()).unwrap_or(4),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Room for every frame in flight, and sends that never sleep: a sender that
        // waits for its buffer to drain is woken by each frame the receiving CPU frees,
        // which costs that CPU more than the frame itself.
        let sndbuf: libc::c_int = 64 << 20;
        // SAFETY: an int option by pointer with its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&raw const sndbuf).cast(),
                u32::try_from(size_of::<libc::c_int>()).unwrap_or(4),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zeroed sockaddr_ll, filled below.
        let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        ll.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
        ll.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
        ll.sll_halen = 6;
        let ll_len = u32::try_from(size_of::<libc::sockaddr_ll>()).unwrap_or(20);
        // SAFETY: a sockaddr_ll by pointer with its size.
        let rc = unsafe { libc::bind(fd, (&raw const ll).cast(), ll_len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: zeroed msghdr, then pointed at one iovec and the address.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = std::ptr::from_mut(iov);
                m.msg_hdr.msg_iovlen = 1;
                m.msg_hdr.msg_name = (&raw mut ll).cast();
                m.msg_hdr.msg_namelen = ll_len;
                m
            })
            .collect();
        let (mut sent, mut refused) = (0u64, 0u64);
        let mut at = 0usize;
        let start = Instant::now();
        let limit = Duration::from_secs_f64(seconds);
        #[expect(clippy::cast_precision_loss, reason = "a pacing rate")]
        let per_ns = max_qps as f64 / 1e9;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= limit {
                break;
            }
            #[expect(clippy::cast_precision_loss, reason = "a pacing rate")]
            if (sent + refused) as f64 > elapsed.as_nanos() as f64 * per_ns {
                std::hint::spin_loop();
                continue;
            }
            let n = BATCH.min(msgs.len() - at);
            // SAFETY: `n` initialised mmsghdrs from `at`, pointing at live frames.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs.as_mut_ptr().add(at),
                    u32::try_from(n).unwrap_or(1),
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let done = usize::try_from(rc).unwrap_or(0);
                sent += done as u64;
                at = (at + done) % msgs.len();
            } else {
                // The veth's queue is full (ENOBUFS) or the socket is busy: the frame
                // is dropped, as on a congested link; go on with the next.
                refused += 1;
                at = (at + 1) % msgs.len();
            }
        }
        Ok((sent, refused, start.elapsed().as_secs_f64()))
    })();
    // SAFETY: the socket opened above.
    unsafe { libc::close(fd) };
    result
}

/// Sends the mix from the client side of `pair` to its server address, port 53, for
/// `seconds` at most `max_qps` a second, and counts the replies on the client veth.
///
/// # Errors
/// The namespaces, the socket or the counting program failed.
pub fn fire(
    pair: &NetnsPair,
    mix: &[Template],
    sources: Sources,
    seconds: f64,
    max_qps: u64,
) -> io::Result<Shot> {
    let frames = pool(pair, mix, sources, 0x9e37_79b9_7f4a_7c15)?;
    let mut counter = pair.attach_baseline(Side::Client, "xdp_count")?;
    let ifindex = pair.ifindex(Side::Client)?;
    let (sent, refused, secs) = pair.in_ns(Side::Client, || {
        crate::netns::pin_task(0, 0)?;
        send_loop(ifindex, &frames, seconds, max_qps)
    })??;
    // Replies still in flight.
    std::thread::sleep(Duration::from_millis(200));
    let replies: PerCpuArray<_, u64> = PerCpuArray::try_from(
        counter
            .map_mut("REPLIES")
            .ok_or_else(|| io::Error::other("the baseline object has no REPLIES"))?,
    )
    .map_err(io::Error::other)?;
    let mut rcodes = [0u64; REPLY_COUNT_SLOTS as usize];
    for (i, slot) in rcodes.iter_mut().enumerate() {
        let values = replies
            .get(&u32::try_from(i).unwrap_or(0), 0)
            .map_err(io::Error::other)?;
        *slot = values.iter().sum();
    }
    Ok(Shot {
        sent,
        refused,
        seconds: secs,
        rcodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_correct_checksums() {
        let t = Template::new("{rand}.cdn.example.net", 1, 1);
        let dns = query(&t, 7, &mut Rng(3));
        let f = frame(
            ([2; 6], [4; 6]),
            (Ipv4Addr::new(198, 18, 9, 9), 4000),
            (Ipv4Addr::new(198, 19, 0, 1), 53),
            &dns,
        );
        // A correct header sums to 0xffff, as does UDP with its pseudo-header.
        assert_eq!(sum16(0, &f[14..34]), 0xffff);
        let udp = &f[34..];
        let mut pseudo = [0u8; 12];
        pseudo[0..8].copy_from_slice(&f[26..34]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&u16::try_from(udp.len()).unwrap().to_be_bytes());
        assert_eq!(sum16(sum16(0, &pseudo), udp), 0xffff);
        // The name: 8 hex digits, then the zone.
        assert_eq!(dns[12], 8);
        assert!(dns[13..21].iter().all(u8::is_ascii_hexdigit));
        assert_eq!(&dns[21..25], b"\x03cdn");
    }

    #[test]
    fn many_sources_are_many_clients_and_the_mix_holds() {
        let client = Ipv4Addr::new(198, 19, 0, 2);
        let mix = [
            Template::new("www.cdn.example.net", 1, 85),
            Template::new("{rand}.cdn.example.net", 1, 15),
        ];
        let f = frames(
            ([2; 6], [4; 6]),
            (client, Ipv4Addr::new(198, 19, 0, 1)),
            &mix,
            Sources::Many,
            7,
        )
        .unwrap();
        assert_eq!(f.len(), POOL);
        let sources: std::collections::HashSet<[u8; 4]> =
            f.iter().map(|f| f[26..30].try_into().unwrap()).collect();
        // 65,536 draws from 2^17 addresses: about 51,000 distinct ones.
        assert!(sources.len() > 45_000, "{} distinct sources", sources.len());
        assert!(sources.iter().all(|a| {
            let a = u32::from_be_bytes(*a);
            a >> 17 == 0xc612_0000 >> 17 && a & !3 != u32::from(client)
        }));
        let random = f.iter().filter(|f| f[54] == 8).count();
        #[expect(clippy::cast_precision_loss, reason = "a share")]
        let share = random as f64 / POOL as f64;
        assert!((0.14..0.16).contains(&share), "random names {share}");
        let mut names: Vec<&[u8]> = f
            .iter()
            .filter(|f| f[54] == 8)
            .map(|f| &f[55..63])
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() > random * 99 / 100, "random labels repeat");
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:ab:00:10:ff:01\n"),
            Some([2, 0xab, 0, 0x10, 0xff, 1])
        );
        assert_eq!(parse_mac("02:ab"), None);
    }
}
