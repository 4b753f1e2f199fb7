//! Response rate limiting end to end, across a veth pair: the XDP program answers with
//! `[rrl] rate = 100, burst = 20, slip = 2`. One source (the spoofed victim of a
//! reflection attack: the client namespace's own address, where the replies land)
//! sends 10x the rate for two seconds, with a different ECS address in each query to
//! dodge the limit (it does not: the packet's source picks the bucket). The replies it
//! gets stay within rate x duration + burst answers plus the slips (every 2nd query
//! over the limit, an empty TC=1 reply). Meanwhile two well-behaved clients, one over
//! IPv4 from another /24 and one over IPv6, get every answer.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aya::programs::XdpMode;
use geodns::loader::{KernelProgram, LoadOptions};
use geodns_common::counter;
use geodns_maps::{
    config::{Guard, Rrl},
    defence::kernel_defence,
};
use geodns_tests::{
    client::parse_reply, frame::Query, require_bpf, table::contents, NetnsPair, Side,
};

const RATE: u32 = 100;
const BURST: u32 = 20;
const DURATION: Duration = Duration::from_secs(2);
/// The well-behaved clients' pace: a quarter of the rate.
const GOOD_EVERY: Duration = Duration::from_millis(40);
/// Where the well-behaved IPv4 client lives: another /24 than the victim's.
const GOOD_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 254, 2);

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
fn flood_from_one_source_is_limited_others_answered() {
    if !require_bpf() {
        return;
    }
    let pair = NetnsPair::new().expect("create namespaces");
    let mut rrl = Rrl::default();
    rrl.rate = RATE;
    rrl.burst = BURST;
    rrl.slip = 2;
    let served = [IpAddr::V4(pair.server_v4), IpAddr::V6(pair.server_v6)];
    let (defence, _) = kernel_defence(&rrl, &Guard::default(), Some(&served));
    let mut xdp = KernelProgram::load(&LoadOptions {
        defence,
        ..LoadOptions::default()
    })
    .expect("load the XDP program");
    xdp.install(&contents()).expect("fill the maps");
    pair.attach(Side::Server, &mut xdp, "xdp_dns", XdpMode::Driver)
        .expect("attach xdp_dns on the server veth");
    let _pass = pair
        .attach_pass(Side::Client)
        .expect("attach xdp_pass on the client veth");
    let out = pair
        .exec(
            Side::Client,
            &[
                "ip",
                "addr",
                "add",
                &format!("{GOOD_V4}/32"),
                "dev",
                pair.ifname(Side::Client),
            ],
        )
        .expect("ip addr add");
    assert!(out.status.success(), "ip addr add: {out:?}");

    let www = "www.cdn.example.net.";
    let server_v4 = SocketAddr::new(IpAddr::V4(pair.server_v4), 53);
    let server_v6 = SocketAddr::new(IpAddr::V6(pair.server_v6), 53);
    let before = xdp.counters().expect("counters");
    let sending = AtomicBool::new(true);
    let (answers, slips, other) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let (sent, elapsed, good) = pair
        .in_ns(Side::Client, || {
            std::thread::scope(|s| {
                // The victim's address: replies to the flood arrive here.
                let victim = UdpSocket::bind((pair.client_v4, 0)).expect("bind the victim");
                victim
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("timeout");
                let rx = victim.try_clone().expect("clone the socket");
                let (sending, answers, slips, other) = (&sending, &answers, &slips, &other);
                let counter = s.spawn(move || {
                    let mut buf = [0u8; 1500];
                    let quiet_until = |t: Instant| t + Duration::from_millis(500);
                    let mut last = Instant::now();
                    // Bound: the flood's 2 s, then until 500 ms pass without a reply.
                    while sending.load(Ordering::Relaxed) || Instant::now() < quiet_until(last) {
                        if let Ok(n) = rx.recv(&mut buf) {
                            last = Instant::now();
                            match parse_reply(&buf[..n]) {
                                Ok(r) if r.message.metadata.truncation && r.addrs.is_empty() => {
                                    slips.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(r) if !r.addrs.is_empty() => {
                                    answers.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {
                                    other.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                });
                let good_clients = [
                    (IpAddr::V4(GOOD_V4), server_v4),
                    (IpAddr::V6(pair.client_v6), server_v6),
                ]
                .map(move |(bind, server)| {
                    s.spawn(move || {
                        let sock = UdpSocket::bind((bind, 0)).expect("bind a good client");
                        sock.set_read_timeout(Some(Duration::from_secs(1)))
                            .expect("timeout");
                        let (mut asked, mut got) = (0u32, 0u32);
                        let mut buf = [0u8; 1500];
                        // Bound: one query per GOOD_EVERY while the flood lasts.
                        while sending.load(Ordering::Relaxed) {
                            asked += 1;
                            let q = Query::new(www, 1).id(u16::try_from(asked).unwrap_or(0));
                            sock.send_to(&q.build(), server).expect("send");
                            if let Ok(n) = sock.recv(&mut buf) {
                                if parse_reply(&buf[..n]).is_ok_and(|r| {
                                    !r.addrs.is_empty() && !r.message.metadata.truncation
                                }) {
                                    got += 1;
                                }
                            }
                            std::thread::sleep(GOOD_EVERY);
                        }
                        (bind, asked, got)
                    })
                });
                // The flood: 10x the rate, paced, bounded in count and time.
                let total = 10 * RATE * u32::try_from(DURATION.as_secs()).unwrap_or(2);
                let start = Instant::now();
                let mut sent = 0u32;
                for i in 0..total {
                    let due = start + DURATION * i / total;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if start.elapsed() > DURATION * 2 {
                        break;
                    }
                    let ecs = format!("192.0.2.{}", i % 256);
                    let q = Query::new(www, 1)
                        .id(u16::try_from(i % 65536).unwrap_or(0))
                        .ecs(&ecs, 32);
                    victim.send_to(&q.build(), server_v4).expect("send");
                    sent += 1;
                }
                let elapsed = start.elapsed();
                sending.store(false, Ordering::Relaxed);
                let good = good_clients.map(|h| h.join().expect("good client"));
                counter.join().expect("reply counter");
                (sent, elapsed, good)
            })
        })
        .expect("client namespace");
    let after = xdp.counters().expect("counters");
    let delta = |c: u32| after[c as usize] - before[c as usize];
    let (answers, slips, other) = (
        answers.load(Ordering::Relaxed),
        slips.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    let seconds = elapsed.as_secs_f64();
    // The bound, plus one answer for the time between the first query and the clock
    // and one tick (at most 4 ms) of the kernel's jiffy clock.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "small"
    )]
    let bound = (f64::from(RATE) * (seconds + 0.004)).ceil() as u64 + u64::from(BURST) + 1;
    let over = u64::from(sent).saturating_sub(answers);
    println!(
        "flood: {sent} queries in {seconds:.2} s -> {answers} answers (bound {bound}), {slips} slips, \
         {other} other; rrl_dropped {}, rrl_slipped {}; good clients {good:?}",
        delta(counter::RRL_DROPPED),
        delta(counter::RRL_SLIPPED)
    );
    assert!(
        sent >= 10 * RATE,
        "the flood ran at 10x the rate: {sent} in {seconds:.2} s"
    );
    assert_eq!(other, 0, "nothing but answers and slips");
    assert!(
        answers <= bound,
        "{answers} answers > rate x duration + burst = {bound}"
    );
    assert!(
        answers >= u64::from(BURST) + u64::from(RATE),
        "the limit is a rate, not a wall: {answers} answers"
    );
    assert!(
        slips <= over / 2 + 1,
        "{slips} slips for {over} queries over the limit"
    );
    assert!(
        slips + 1 >= over / 2 * 9 / 10,
        "every 2nd over the limit slips: {slips} of {over}"
    );
    assert_eq!(delta(counter::RRL_SLIPPED), slips, "every slip arrived");
    for (client, asked, got) in good {
        assert!(asked >= 20, "{client} asked {asked}");
        assert_eq!(got, asked, "{client}: every answer");
    }
}
