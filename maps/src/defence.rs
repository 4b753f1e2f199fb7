//! Response rate limiting and reflection defences: the kernel's `DEFENCE` global from
//! `[rrl]` and `[guard]`, and the same decisions for the fallback server.
//!
//! Both sides decide with [`geodns_common::rrl_step`] on buckets keyed alike
//! ([`RrlKey`]: the packet's source masked to `ipv4_prefix`/`ipv6_prefix`, never the
//! ECS address), so a client sees one behaviour whichever path answers it. The tables
//! are separate: the kernel limits what it answers, the fallback server what it
//! answers (UDP only).
use std::{collections::HashMap, net::IpAddr};

use geodns_common::{
    deny_bitmap, rrl_step, Defence, RrlBucket, RrlKey, MAX_SERVED, RRL_ALLOW, RRL_SLIP,
};

use crate::config::{Guard, Rrl};

/// [`Defence`] for `rrl` and `guard`; `served` is the served address list to use when
/// `guard` names none (the interface's addresses; `None`: any destination). Beyond
/// [`MAX_SERVED`] per family the check is left off (and that is returned as `false`):
/// an interface with that many addresses is no place for a fixed list.
#[must_use]
pub fn kernel_defence(rrl: &Rrl, guard: &Guard, served: Option<&[IpAddr]>) -> (Defence, bool) {
    let mut d = Defence::DEFAULT;
    if rrl.rate > 0 {
        d.rrl_interval_ns = (1_000_000_000 / u64::from(rrl.rate)).max(1);
        d.rrl_burst_ns = d.rrl_interval_ns * u64::from(rrl.burst.max(1));
    }
    d.rrl_slip = rrl.slip;
    d.rrl_v4_mask = u32::from_le_bytes(mask::<4>(rrl.ipv4_prefix));
    let m6 = mask::<16>(rrl.ipv6_prefix);
    d.rrl_v6_mask = words(&m6);
    d.deny_ports = deny_bitmap(&guard.reflector_ports);
    let list = guard.served_addresses.as_deref().or(served);
    let mut complete = true;
    if let Some(list) = list {
        d.served_check = 1;
        for ip in list {
            match ip {
                IpAddr::V4(a) => {
                    let i = d.served_v4_count as usize;
                    if i < MAX_SERVED {
                        d.served_v4[i] = u32::from_le_bytes(a.octets());
                        d.served_v4_count += 1;
                    } else {
                        complete = false;
                    }
                }
                IpAddr::V6(a) => {
                    let i = d.served_v6_count as usize;
                    if i < MAX_SERVED {
                        d.served_v6[i] = words(&a.octets());
                        d.served_v6_count += 1;
                    } else {
                        complete = false;
                    }
                }
            }
        }
        if !complete {
            d.served_check = 0;
        }
    }
    (d, complete)
}

/// The first `len` bits set, in network byte order.
fn mask<const N: usize>(len: u8) -> [u8; N] {
    let mut m = [0u8; N];
    for (i, b) in m.iter_mut().enumerate() {
        let bits = usize::from(len).saturating_sub(8 * i).min(8);
        // `bits` <= 8: the shift keeps the top `bits` bits of the byte.
        *b = u8::try_from(0xFF00u16 >> bits & 0xFF).unwrap_or(0);
    }
    m
}

/// 16 bytes as the kernel loads them: two little-endian words.
fn words(b: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// The bucket key of a query from `source` (the packet's source address).
#[must_use]
pub fn rrl_key(d: &Defence, source: IpAddr, class: u8, name: u64) -> RrlKey {
    let (prefix, family) = match source {
        IpAddr::V4(a) => (
            [u64::from(u32::from_le_bytes(a.octets()) & d.rrl_v4_mask), 0],
            4,
        ),
        IpAddr::V6(a) => {
            // A dual-stack socket's IPv4 peer: the same bucket as over IPv4.
            if let Some(v4) = a.to_ipv4_mapped() {
                return rrl_key(d, IpAddr::V4(v4), class, name);
            }
            let w = words(&a.octets());
            ([w[0] & d.rrl_v6_mask[0], w[1] & d.rrl_v6_mask[1]], 6)
        }
    };
    RrlKey {
        prefix,
        name,
        class,
        family,
        _pad: [0; 6],
    }
}

/// What to do with a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send it empty with TC=1.
    Slip,
    Drop,
}

/// The fallback server's bucket table: at most `capacity` buckets. When full, the
/// buckets that have refilled (due in the past, the same as absent) are forgotten,
/// and if that is not enough, all of them: a flood of spoofed prefixes costs the
/// limit its memory, never the server its memory.
#[derive(Debug)]
pub struct Limiter {
    defence: Defence,
    capacity: usize,
    buckets: HashMap<RrlKey, RrlBucket>,
}

impl Limiter {
    #[must_use]
    pub fn new(defence: Defence, capacity: u32) -> Self {
        Self {
            defence,
            capacity: usize::try_from(capacity.max(1)).unwrap_or(usize::MAX),
            buckets: HashMap::new(),
        }
    }

    /// Whether rate limiting is on.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.defence.rrl_interval_ns != 0
    }

    #[must_use]
    pub fn defence(&self) -> &Defence {
        &self.defence
    }

    /// One response of `class` (`RRL_CLASS_*`) for `name` to `source` at `now_ns` (a
    /// monotonic clock).
    pub fn check(&mut self, source: IpAddr, class: u8, name: u64, now_ns: u64) -> Verdict {
        let d = self.defence;
        if d.rrl_interval_ns == 0 {
            return Verdict::Send;
        }
        let key = rrl_key(&d, source, class, name);
        if self.buckets.len() >= self.capacity && !self.buckets.contains_key(&key) {
            self.buckets.retain(|_, b| b.tat > now_ns);
            if self.buckets.len() >= self.capacity {
                self.buckets.clear();
            }
        }
        let b = self.buckets.entry(key).or_default();
        match rrl_step(b, now_ns, d.rrl_interval_ns, d.rrl_burst_ns, d.rrl_slip) {
            RRL_ALLOW => Verdict::Send,
            RRL_SLIP => Verdict::Slip,
            _ => Verdict::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geodns_common::RRL_CLASS_ANSWER;

    fn limiter(rate: u32, burst: u32, slip: u32) -> Limiter {
        let rrl = Rrl {
            rate,
            burst,
            slip,
            ..Rrl::default()
        };
        Limiter::new(kernel_defence(&rrl, &Guard::default(), None).0, 16)
    }

    #[test]
    fn burst_then_rate_then_slips() {
        let mut l = limiter(10, 5, 2);
        let ip: IpAddr = "198.18.1.1".parse().expect("ip");
        let t0 = 1_000_000_000u64;
        let v: Vec<Verdict> = (0..9)
            .map(|_| l.check(ip, RRL_CLASS_ANSWER, 1, t0))
            .collect();
        assert_eq!(&v[..5], &[Verdict::Send; 5], "the burst at once");
        assert_eq!(
            &v[5..],
            &[Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip],
            "every 2nd over the limit slips"
        );
        // 100 ms later one more answer is due (rate 10/s).
        assert_eq!(
            l.check(ip, RRL_CLASS_ANSWER, 1, t0 + 100_000_000),
            Verdict::Send
        );
        assert_ne!(
            l.check(ip, RRL_CLASS_ANSWER, 1, t0 + 100_000_000),
            Verdict::Send
        );
        // Another name, another /24, another class: other buckets.
        assert_eq!(l.check(ip, RRL_CLASS_ANSWER, 2, t0), Verdict::Send);
        let other: IpAddr = "198.18.2.1".parse().expect("ip");
        assert_eq!(l.check(other, RRL_CLASS_ANSWER, 1, t0), Verdict::Send);
        // The same /24 shares the bucket.
        let same: IpAddr = "198.18.1.200".parse().expect("ip");
        assert_ne!(l.check(same, RRL_CLASS_ANSWER, 1, t0), Verdict::Send);
    }

    #[test]
    fn answers_stay_within_rate_times_duration_plus_burst() {
        let (rate, burst) = (50u32, 20u32);
        let mut l = limiter(rate, burst, 0);
        let ip: IpAddr = "2001:2::1".parse().expect("ip");
        // 10x the rate for 3 s.
        let n = 10 * rate * 3;
        let step = 3_000_000_000 / u64::from(n);
        let sent = (0..u64::from(n))
            .filter(|i| l.check(ip, RRL_CLASS_ANSWER, 7, 5 + i * step) == Verdict::Send)
            .count();
        let bound = usize::try_from(rate * 3 + burst).expect("small");
        assert!(
            sent <= bound && sent >= bound - 2,
            "{sent} answers, bound {bound}"
        );
    }

    #[test]
    fn slip_zero_drops_all_and_rate_zero_is_off() {
        let mut l = limiter(1, 1, 0);
        let ip: IpAddr = "198.18.0.9".parse().expect("ip");
        assert_eq!(l.check(ip, RRL_CLASS_ANSWER, 1, 10), Verdict::Send);
        for _ in 0..10 {
            assert_eq!(l.check(ip, RRL_CLASS_ANSWER, 1, 10), Verdict::Drop);
        }
        let mut off = limiter(0, 1, 2);
        assert!(!off.enabled());
        for _ in 0..1000 {
            assert_eq!(off.check(ip, RRL_CLASS_ANSWER, 1, 10), Verdict::Send);
        }
    }

    #[test]
    fn masks_and_served_list() {
        let rrl = Rrl {
            ipv4_prefix: 20,
            ipv6_prefix: 56,
            ..Rrl::default()
        };
        let served: Vec<IpAddr> = vec![
            "198.18.0.1".parse().expect("ip"),
            "2001:2::1".parse().expect("ip"),
        ];
        let (d, complete) = kernel_defence(&rrl, &Guard::default(), Some(&served));
        assert!(complete);
        assert_eq!(d.rrl_v4_mask.to_le_bytes(), [255, 255, 0xF0, 0]);
        let m6: Vec<u8> = d.rrl_v6_mask.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&m6[..8], &[255, 255, 255, 255, 255, 255, 255, 0]);
        assert_eq!(&m6[8..], &[0; 8]);
        assert_eq!(
            (d.served_check, d.served_v4_count, d.served_v6_count),
            (1, 1, 1)
        );
        assert_eq!(d.served_v4[0].to_le_bytes(), [198, 18, 0, 1]);
        let k1 = rrl_key(&d, "198.18.15.7".parse().expect("ip"), 1, 0);
        let k2 = rrl_key(&d, "198.18.0.1".parse().expect("ip"), 1, 0);
        let k3 = rrl_key(&d, "198.18.16.1".parse().expect("ip"), 1, 0);
        assert_eq!(k1, k2);
        assert_ne!(k1, k3);
        let mapped = rrl_key(&d, "::ffff:198.18.0.1".parse().expect("ip"), 1, 0);
        assert_eq!(mapped, k2);
        for p in [0u16, 7, 19, 123, 11211] {
            assert!(d.denies_port(p), "{p}");
        }
        for p in [53u16, 1024, 40000] {
            assert!(!d.denies_port(p), "{p}");
        }
        let many: Vec<IpAddr> = (0..=MAX_SERVED)
            .map(|i| IpAddr::from([198, 18, 0, u8::try_from(i).expect("small")]))
            .collect();
        let (d, complete) = kernel_defence(&rrl, &Guard::default(), Some(&many));
        assert!(!complete);
        assert_eq!(d.served_check, 0, "an incomplete list checks nothing");
    }
}
