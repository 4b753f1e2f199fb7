//! The userspace server on a realistic mix of queries: `geodns run --no-xdp` on the
//! loopback of a test namespace, asked by this process over UDP from several sockets
//! (several source ports, so `SO_REUSEPORT` spreads them over the workers).
//!
//! - `userspace_qps_mixed`: replies per second to a mix of 50% geo `A` (clients around
//!   the world by ECS), 9% SOA, 9% NS at the apex, 9% the name server's own `A`, 8%
//!   `AAAA` of a name that has only an `A` (NODATA) and 15% names that do not exist
//!   (NXDOMAIN, each a different random name).
//!
//! The generator keeps at most `WINDOW` queries outstanding per socket and sends and
//! receives in batches (`sendmmsg`/`recvmmsg`), on one thread: like kxdpgun, it takes
//! one CPU of its own, and the figure is what the server answers with what is left.
//! Queries a busy server drops are given up after `LOST_AFTER` without progress.
//!
//! - `userspace_qps_mixed_knot`: Knot DNS (Debian's `knot`) serving the same zone as
//!   plain static records (the geo name as one `A`; ECS ignored) on the same loopback,
//!   asked the same way right after: the peer's figure in the same run.
//!
//! `--geodns PATH` runs that daemon binary (default: the one next to this binary), so
//! `cargo xtask bench --compare REF` measures REF's server with this generator.
//!
//! Prints one JSON object. Bounded: `SECONDS` of load, at most `QPS_CAP` queries sent
//! per second.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use geodns_tests::{
    daemon::{geodns_bin, Daemon},
    files::{demo_without_checks, TempDir},
    frame::Query,
    knot::Knot,
    synth::Rng,
    NetnsPair, Side,
};

const SECONDS: u64 = 3;
/// A bound on the queries sent per second (far above what the server answers).
const QPS_CAP: u64 = 3_000_000;
const SOCKETS: usize = 8;
const WINDOW: usize = 64;
const BATCH: usize = 32;
const LOST_AFTER: Duration = Duration::from_millis(20);
/// Distinct queries in the pool the generator cycles through.
const POOL: usize = 4096;

/// ECS client addresses in the demo database's networks (several regions).
const CLIENTS: &[&str] = &[
    "192.0.2.0",
    "198.51.100.0",
    "203.0.113.0",
    "198.18.5.0",
    "10.9.8.0",
    "100.64.1.0",
];

/// The query mix, as the issue of the userspace server's speed describes it.
fn pool(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..POOL)
        .map(|i| {
            let id = u16::try_from(i & 0xFFFF).unwrap_or(0);
            let roll = rng.below(100);
            let q = match roll {
                0..50 => {
                    let client =
                        CLIENTS[usize::try_from(rng.below(CLIENTS.len() as u64)).unwrap_or(0)];
                    Query::new("www.cdn.example.net.", 1)
                        .edns(1232)
                        .ecs(client, 24)
                }
                50..59 => Query::new("cdn.example.net.", 6).edns(1232),
                59..68 => Query::new("cdn.example.net.", 2).edns(1232),
                68..77 => Query::new("ns1.cdn.example.net.", 1).edns(1232),
                77..85 => Query::new("mail.cdn.example.net.", 28).edns(1232),
                _ => Query::new(
                    &format!("x{:08x}.cdn.example.net.", rng.next_u64() >> 32),
                    1,
                )
                .edns(1232),
            };
            q.id(id).build()
        })
        .collect()
}

/// Replies per second, and the share of replies per RCODE (index: RCODE).
fn generate(server: SocketAddr, queries: &[Vec<u8>]) -> (f64, [u64; 16]) {
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a client socket");
            s.connect(server).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let mut outstanding = [0usize; SOCKETS];
    let mut progress = [Instant::now(); SOCKETS];
    let mut next = 0usize;
    let mut replies = 0u64;
    let mut sent = 0u64;
    let mut rcodes = [0u64; 16];
    let mut bufs = vec![[0u8; 1500]; BATCH];
    let header = |iov: &mut libc::iovec| {
        // SAFETY: zero is a valid mmsghdr.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_iov = std::ptr::from_mut(iov);
        h.msg_hdr.msg_iovlen = 1;
        h
    };
    // Built once: they point into `bufs`, which stays where it is.
    let mut recv_iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut recv_msgs: Vec<libc::mmsghdr> = recv_iovs.iter_mut().map(header).collect();
    let mut send_iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut send_msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    let start = Instant::now();
    let end = start + Duration::from_secs(SECONDS);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed_ms = u64::try_from(now.duration_since(start).as_millis()).unwrap_or(0);
        for (i, s) in sockets.iter().enumerate() {
            let fd = s.as_raw_fd();
            let allowed = QPS_CAP * (elapsed_ms + 1) / 1000;
            let room = WINDOW.saturating_sub(outstanding[i]).min(BATCH);
            if room > 0 && sent < allowed {
                send_iovs.clear();
                send_iovs.extend((0..room).map(|k| {
                    let q = &queries[(next + k) % queries.len()];
                    libc::iovec {
                        iov_base: q.as_ptr().cast_mut().cast(),
                        iov_len: q.len(),
                    }
                }));
                send_msgs.clear();
                send_msgs.extend(send_iovs.iter_mut().map(header));
                // SAFETY: headers over live iovecs into the query pool.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        send_msgs.as_mut_ptr(),
                        u32::try_from(send_msgs.len()).unwrap_or(0),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    let n = usize::try_from(n).unwrap_or(0);
                    next = (next + n) % queries.len();
                    outstanding[i] += n;
                    sent += n as u64;
                }
            }
            // SAFETY: headers over live iovecs into `bufs`.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    recv_msgs.as_mut_ptr(),
                    u32::try_from(recv_msgs.len()).unwrap_or(0),
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n > 0 {
                let n = usize::try_from(n).unwrap_or(0);
                for (b, m) in bufs.iter().zip(&recv_msgs).take(n) {
                    if m.msg_len >= 4 {
                        rcodes[usize::from(b[3] & 0xF)] += 1;
                    }
                }
                replies += n as u64;
                outstanding[i] = outstanding[i].saturating_sub(n);
                progress[i] = now;
            } else if outstanding[i] > 0 && now.duration_since(progress[i]) > LOST_AFTER {
                // What is still out after a quiet while was dropped.
                outstanding[i] = 0;
                progress[i] = now;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("userspace_bench: sent {sent}, replies {replies} in {secs:.2}s");
    (float(replies) / secs, rcodes)
}

/// Where Knot listens in the server namespace.
const KNOT_PORT: u16 = 5300;

/// A count as a float (counts here stay far below 2^52).
#[expect(clippy::cast_precision_loss, reason = "counts of queries in seconds")]
fn float(n: u64) -> f64 {
    n as f64
}

/// `n` in percent of `total`.
fn percent(n: u64, total: u64) -> f64 {
    100.0 * float(n) / float(total.max(1))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin = args
        .iter()
        .position(|a| a == "--geodns")
        .and_then(|i| args.get(i + 1))
        .map_or_else(geodns_bin, PathBuf::from);
    let dir = TempDir::new("userspace-bench");
    let config = demo_without_checks(dir.path());
    let pair = NetnsPair::new().expect("namespaces");
    let mut daemon = Daemon::spawn(
        &bin,
        &pair,
        &config,
        "127.0.0.1:19156",
        &format!("/sys/fs/bpf/geodns-userspace-bench-{}", std::process::id()),
        &["--no-xdp", "--listen", "127.0.0.1:53"],
    );
    let started = Instant::now();
    while daemon.scrape(&pair).is_none() {
        assert!(!daemon.exited(), "geodns run exited at start");
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "geodns run did not serve /metrics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let queries = pool(&mut Rng(0x5EED_0026));
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
    let (qps, rcodes) = pair
        .in_ns(Side::Server, || generate(server, &queries))
        .expect("generator in the server namespace");
    let total: u64 = rcodes.iter().sum();
    eprintln!(
        "userspace_qps_mixed: {qps:.0} replies/s ({}), NOERROR {:.1}%, NXDOMAIN {:.1}%",
        bin.display(),
        percent(rcodes[0], total),
        percent(rcodes[3], total),
    );
    drop(daemon);
    let mut out = BTreeMap::new();
    out.insert("userspace_qps_mixed".to_string(), qps);
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, KNOT_PORT));
    if let Some(knot) = Knot::start(&pair, dir.path(), server) {
        let (knot_qps, rcodes) = pair
            .in_ns(Side::Server, || generate(server, &queries))
            .expect("generator in the server namespace");
        let total: u64 = rcodes.iter().sum();
        eprintln!(
            "userspace_qps_mixed_knot: {knot_qps:.0} replies/s (knotd, static records), NOERROR {:.1}%, NXDOMAIN {:.1}%",
            percent(rcodes[0], total),
            percent(rcodes[3], total),
        );
        drop(knot);
        out.insert("userspace_qps_mixed_knot".to_string(), knot_qps);
    }
    println!("{}", serde_json::to_string(&out).expect("json"));
}
