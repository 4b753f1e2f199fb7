//! Counters of the authoritative server for `/metrics`.
use std::sync::atomic::{AtomicU64, Ordering};

use geodns_maps::AnswerSource;

use crate::prom::{Kind, Page};

use super::{
    parse::Drop,
    respond::{rcode, Outcome, Summary, Transport},
};

/// Why a connection ended on the server's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpClose {
    /// No complete query within the idle timeout.
    Idle,
    /// A reply could not be written within the idle timeout.
    WriteTimeout,
    /// `max_queries` answered.
    Queries,
    /// `max_lifetime` reached.
    Lifetime,
}

impl TcpClose {
    pub const ALL: [Self; 4] = [
        Self::Idle,
        Self::WriteTimeout,
        Self::Queries,
        Self::Lifetime,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::WriteTimeout => "write_timeout",
            Self::Queries => "max_queries",
            Self::Lifetime => "max_lifetime",
        }
    }
}

/// RCODEs counted by name; anything else is `other`.
const RCODES: [u16; 7] = [
    rcode::NOERROR,
    rcode::FORMERR,
    rcode::SERVFAIL,
    rcode::NXDOMAIN,
    rcode::NOTIMP,
    rcode::REFUSED,
    rcode::BADVERS,
];

/// QTYPEs counted by name; anything else is `other`.
const QTYPES: [(u16, &str); 20] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (35, "NAPTR"),
    (43, "DS"),
    (46, "RRSIG"),
    (47, "NSEC"),
    (48, "DNSKEY"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (251, "IXFR"),
    (252, "AXFR"),
    (255, "ANY"),
    (257, "CAA"),
];

const SOURCES: [&str; 3] = ["geo", "fallback", "glue"];

/// One worker's counts since its last [`Tally::flush`]: plain integers, so counting a
/// query writes no memory another worker uses.
#[derive(Default)]
pub struct Tally {
    any: bool,
    queries: [u64; 2],
    rcodes: [u64; RCODES.len() + 1],
    qtypes: [u64; QTYPES.len() + 1],
    sources: [u64; SOURCES.len()],
    truncated: u64,
    slipped: u64,
    dropped: [u64; Drop::ALL.len()],
}

impl Tally {
    pub fn record(&mut self, transport: Transport, o: &Summary) {
        self.any = true;
        if let Some(d) = o.dropped {
            if let Some(i) = Drop::ALL.iter().position(|x| *x == d) {
                self.dropped[i] += 1;
            }
            return;
        }
        self.queries[usize::from(transport == Transport::Tcp)] += 1;
        if let Some(r) = o.rcode {
            let i = RCODES.iter().position(|x| *x == r).unwrap_or(RCODES.len());
            self.rcodes[i] += 1;
        }
        if let Some(t) = o.qtype {
            let i = QTYPES
                .iter()
                .position(|(x, _)| *x == t)
                .unwrap_or(QTYPES.len());
            self.qtypes[i] += 1;
        }
        if let Some(s) = o.source {
            self.sources[match s {
                AnswerSource::Geo { .. } => 0,
                AnswerSource::Fallback { .. } => 1,
                AnswerSource::Glue => 2,
            }] += 1;
        }
        self.truncated += u64::from(o.truncated);
        self.slipped += u64::from(o.slipped);
    }

    /// Adds the counts to `stats` and starts again from zero.
    pub fn flush(&mut self, stats: &ServerStats) {
        if !std::mem::take(&mut self.any) {
            return;
        }
        let add = |into: &[AtomicU64], from: &mut [u64]| {
            for (c, n) in into.iter().zip(from.iter_mut()) {
                if *n != 0 {
                    c.fetch_add(std::mem::take(n), Ordering::Relaxed);
                }
            }
        };
        add(&stats.queries, &mut self.queries);
        add(&stats.rcodes, &mut self.rcodes);
        add(&stats.qtypes, &mut self.qtypes);
        add(&stats.sources, &mut self.sources);
        add(&stats.dropped, &mut self.dropped);
        add(
            std::slice::from_ref(&stats.truncated),
            std::slice::from_mut(&mut self.truncated),
        );
        add(
            std::slice::from_ref(&stats.slipped),
            std::slice::from_mut(&mut self.slipped),
        );
    }
}

/// Everything the authoritative server counts; shared by its tasks.
#[derive(Default)]
pub struct ServerStats {
    /// Per transport (udp, tcp): messages that got a response.
    queries: [AtomicU64; 2],
    rcodes: [AtomicU64; RCODES.len() + 1],
    qtypes: [AtomicU64; QTYPES.len() + 1],
    sources: [AtomicU64; SOURCES.len()],
    truncated: AtomicU64,
    slipped: AtomicU64,
    dropped: [AtomicU64; Drop::ALL.len()],
    tcp_accepted: AtomicU64,
    tcp_refused: AtomicU64,
    tcp_open: AtomicU64,
    tcp_timeouts: AtomicU64,
    tcp_refused_source: AtomicU64,
    tcp_closes: [AtomicU64; TcpClose::ALL.len()],
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl ServerStats {
    pub fn record(&self, transport: Transport, o: &Outcome) {
        let mut t = Tally::default();
        t.record(transport, &o.summary());
        t.flush(self);
    }

    pub(crate) fn tcp_accepted(&self) {
        inc(&self.tcp_accepted);
        inc(&self.tcp_open);
    }

    pub(crate) fn tcp_closed(&self) {
        self.tcp_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn tcp_refused(&self) {
        inc(&self.tcp_refused);
    }

    pub(crate) fn tcp_refused_source(&self) {
        inc(&self.tcp_refused_source);
    }

    pub(crate) fn tcp_close(&self, why: TcpClose) {
        if why == TcpClose::Idle {
            inc(&self.tcp_timeouts);
        }
        if let Some(i) = TcpClose::ALL.iter().position(|c| *c == why) {
            inc(&self.tcp_closes[i]);
        }
    }

    /// Responses sent with this RCODE (by number).
    #[must_use]
    pub fn rcode(&self, rcode: u16) -> u64 {
        let i = RCODES
            .iter()
            .position(|x| *x == rcode)
            .unwrap_or(RCODES.len());
        self.rcodes[i].load(Ordering::Relaxed)
    }

    /// Messages dropped for `why`.
    #[must_use]
    pub fn dropped(&self, why: Drop) -> u64 {
        Drop::ALL
            .iter()
            .position(|x| *x == why)
            .map_or(0, |i| self.dropped[i].load(Ordering::Relaxed))
    }

    /// TCP connections closed at once because `--tcp-max-connections` were open.
    #[must_use]
    pub fn tcp_refused_count(&self) -> u64 {
        self.tcp_refused.load(Ordering::Relaxed)
    }

    /// TCP connections open now.
    #[must_use]
    pub fn tcp_open_count(&self) -> u64 {
        self.tcp_open.load(Ordering::Relaxed)
    }

    /// The Prometheus text of these counters.
    #[must_use]
    #[expect(clippy::too_many_lines, reason = "one family after another")]
    pub fn metrics_text(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut p = Page::new();
        let answered: u64 = self.queries.iter().map(get).sum();
        let with_qtype: u64 = self.qtypes.iter().map(get).sum();
        let qtypes = self
            .qtypes
            .iter()
            .enumerate()
            .map(|(i, c)| (QTYPES.get(i).map_or("other", |(_, n)| n), get(c)))
            .chain([("none", answered.saturating_sub(with_qtype))]);
        p.by_label(
            "geodns_server_queries_total",
            Kind::Counter,
            "Queries the userspace server answered, by QTYPE (none: no question parsed).",
            "qtype",
            qtypes,
        );
        p.by_label(
            "geodns_server_responses_total",
            Kind::Counter,
            "Responses the userspace server sent, by RCODE.",
            "rcode",
            self.rcodes
                .iter()
                .enumerate()
                .map(|(i, c)| (RCODES.get(i).map_or("other", |r| rcode::name(*r)), get(c))),
        );
        p.by_label(
            "geodns_server_transport_queries_total",
            Kind::Counter,
            "Queries the userspace server answered, by transport.",
            "transport",
            ["udp", "tcp"].into_iter().zip(self.queries.iter().map(get)),
        );
        p.by_label(
            "geodns_server_answers_total",
            Kind::Counter,
            "Address answers by where they came from: the region (geo), the fallback round robin, NS glue.",
            "source",
            SOURCES.into_iter().zip(self.sources.iter().map(get)),
        );
        p.by_label(
            "geodns_server_dropped_total",
            Kind::Counter,
            "Messages dropped without a response, by reason.",
            "reason",
            Drop::ALL
                .iter()
                .map(|d| d.name())
                .zip(self.dropped.iter().map(get)),
        );
        p.by_label(
            "geodns_server_tcp_connections_total",
            Kind::Counter,
            "TCP connections: accepted, or refused (closed at once) by --tcp-max-connections or --tcp-max-per-source.",
            "result",
            [
                ("accepted", get(&self.tcp_accepted)),
                ("refused", get(&self.tcp_refused)),
                ("refused_per_source", get(&self.tcp_refused_source)),
            ],
        );
        p.by_label(
            "geodns_server_tcp_closed_total",
            Kind::Counter,
            "TCP connections the server closed, by reason.",
            "reason",
            TcpClose::ALL
                .iter()
                .map(|c| c.name())
                .zip(self.tcp_closes.iter().map(get)),
        );
        for (name, kind, help, value) in [
            (
                "geodns_server_truncated_total",
                Kind::Counter,
                "UDP responses sent with TC=1 because the answer exceeded the client's size.",
                get(&self.truncated),
            ),
            (
                "geodns_server_rrl_slipped_total",
                Kind::Counter,
                "UDP responses over the rate limit sent empty with TC=1 (the slip); the dropped ones are dropped_total{reason=\"rate_limited\"}.",
                get(&self.slipped),
            ),
            (
                "geodns_server_tcp_idle_timeouts_total",
                Kind::Counter,
                "TCP connections closed by --tcp-idle-timeout.",
                get(&self.tcp_timeouts),
            ),
            (
                "geodns_server_tcp_open_connections",
                Kind::Gauge,
                "TCP connections open now.",
                get(&self.tcp_open),
            ),
        ] {
            p.single(name, kind, help, value);
        }
        p.append(&super::update::metrics_text());
        p.finish()
    }
}
