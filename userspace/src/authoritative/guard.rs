//! The UDP side's defences, the same as the kernel's (`geodns_common::Defence`): no
//! answer to source port 0 or a reflector port, and response rate limiting with the
//! kernel's algorithm and bucket keys (`geodns_maps::defence`). TCP is exempt: its
//! source address is proven by the handshake, so it cannot reflect.
use std::{
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    time::Instant,
};

use geodns_common::Defence;
use geodns_maps::{
    defence::{kernel_defence, Limiter},
    Config, Engine,
};

use super::{
    parse::Drop,
    respond::{Outcome, Responder, Summary, Transport},
};

/// Decides for one UDP datagram; shared by the server's UDP tasks (one table of
/// buckets for all of them).
pub struct UdpGuard {
    defence: Defence,
    limiter: Mutex<Limiter>,
    start: Instant,
}

impl UdpGuard {
    /// From `[rrl]` and `[guard]` of `config`; like the kernel's settings, they hold
    /// until a restart.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let (defence, _) = kernel_defence(&config.rrl, &config.guard, None);
        Self {
            defence,
            limiter: Mutex::new(Limiter::new(defence, config.rrl.buckets)),
            start: Instant::now(),
        }
    }

    /// Answers a UDP datagram from `peer`, or drops it.
    pub fn handle(&self, engine: &Engine, msg: &[u8], peer: SocketAddr) -> Outcome {
        let mut r = Responder::default();
        let s = self.answer(&mut r, engine, msg, peer);
        Outcome::from_summary(s, s.respond.then(|| r.response().to_vec()))
    }

    /// [`UdpGuard::handle`] into the buffer of `r` (a worker's own).
    pub fn answer(
        &self,
        r: &mut Responder,
        engine: &Engine,
        msg: &[u8],
        peer: SocketAddr,
    ) -> Summary {
        let port = peer.port();
        if port == 0 {
            return Summary::dropped(Drop::PortZero);
        }
        if self.defence.denies_port(port) {
            return Summary::dropped(Drop::ReflectorPort);
        }
        if self.defence.rrl_interval_ns == 0 {
            return r.answer(engine, msg, peer.ip(), Transport::Udp, None);
        }
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut limit = |class, name| {
            self.limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .check(peer.ip(), class, name, now)
        };
        r.answer(engine, msg, peer.ip(), Transport::Udp, Some(&mut limit))
    }
}
