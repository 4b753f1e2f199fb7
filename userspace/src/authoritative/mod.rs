//! The userspace authoritative server: complete for the zone, on
//! UDP and TCP, answering what the XDP program passes (or everything, with `--no-xdp`).
//!
//! Every decision is [`geodns_maps::Engine::resolve`]'s, the same the kernel maps
//! hold; this module only parses, validates and writes. In the order a query is
//! checked ([`respond::handle`]):
//!
//! | input | response |
//! |---|---|
//! | over UDP: from source port 0 or a reflector port (`[guard]`) | dropped (`guard`) |
//! | shorter than a header, QR=1, or counts the datagram cannot hold (not DNS) | dropped |
//! | OPCODE not QUERY | NOTIMP, opcode copied (question and OPT echoed when they parse) |
//! | a bad name (label > 63, name > 255, a pointer that is not backwards into an earlier name), a record past the end, QDCOUNT != 1, OPT outside the additional section or not owned by the root, two OPTs, an option running past its OPT, an ECS option breaking RFC 7871 (family not 1/2, source prefix too long, address bytes not matching it, bits set past it, scope != 0, twice), question type OPT, bytes after the last record | FORMERR |
//! | EDNS version > 0 | BADVERS (OPT version 0) |
//! | QCLASS not IN | REFUSED |
//! | QTYPE 128..=254 (AXFR, IXFR, TSIG, ...) | NOTIMP |
//! | a name outside the zone | REFUSED, AA=0 (never an open resolver; RA=0 always) |
//! | SOA / NS at the apex | the record(s); NS with glue (A, then AAAA) for in-zone names |
//! | A / AAAA of a served name | the engine's addresses (region, else `[fallback]` weighted round robin), owner `0xC00C` |
//! | another type of an existing name | NODATA: NOERROR, SOA in authority |
//! | a name in the zone that does not exist | NXDOMAIN, SOA in authority |
//!
//! Answers are AA=1 with RD and CD copied. The negative SOA's TTL is
//! min(zone TTL, SOA MINIMUM). With EDNS the response carries an OPT record (payload
//! 1232, version 0, DO and other flags cleared) echoing a valid ECS option with SCOPE =
//! the matched prefix length for address answers when the source prefix was not 0,
//! else 0; other options are ignored and not echoed. ECS source prefix 0 means the
//! packet's source address decides (as in the kernel). A UDP response longer than the
//! client's size (512 without EDNS, else its payload within 512..=1232) is sent as
//! header, question and OPT with TC=1. Over UDP the response then passes the rate
//! limit (`[rrl]`, [`guard`]): sent, slipped (header, question and OPT with TC=1), or
//! dropped.
//!
//! TCP: two-byte length framing, queries answered in order as they arrive (pipelined;
//! responses to queries already received are flushed together), a connection closes
//! after `--tcp-idle-timeout` without a query or when a reply cannot be written in
//! that time (a client that does not read), after `--tcp-max-queries` answers and after
//! `--tcp-max-lifetime`; beyond `--tcp-max-connections` open connections, or
//! `--tcp-max-per-source` from one address, a new one is closed at once (counted).
#[cfg(any(test, feature = "testkit"))]
pub mod check;
pub mod guard;
pub mod kernel;
pub mod parse;
pub mod respond;
pub mod server;
pub mod stats;
#[cfg(test)]
mod tests;
pub mod udp;
pub mod update;

use std::{net::SocketAddr, time::Duration};

pub use respond::{handle, Outcome, Transport};
pub use server::{DnsServer, Listener, ServerError, TcpOptions};
pub use stats::ServerStats;

/// The authoritative server's options of `geodns run`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Address to answer DNS on, over UDP and TCP; repeat for more. Default:
    /// 0.0.0.0 and [::] on --dns-port. A reply leaves from the address its query came
    /// to, also on a wildcard address.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// UDP sockets per listen address, each served by its own thread (`SO_REUSEPORT`:
    /// the kernel spreads clients over them). 0: one per CPU, each thread pinned to its CPU.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Close a TCP connection after this long without a complete query.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub tcp_idle_timeout: Duration,
    /// TCP connections open at once; a connection beyond it is closed at once.
    #[arg(long, default_value_t = 1024)]
    pub tcp_max_connections: usize,
    /// TCP connections open at once from one source address.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_per_source: u32,
    /// Queries answered on one TCP connection before the server closes it.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_queries: u32,
    /// Longest life of a TCP connection, however busy.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub tcp_max_lifetime: Duration,
}

impl ServerArgs {
    /// `--workers`, 0 resolved to the CPU count.
    #[must_use]
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
    }

    #[must_use]
    pub fn tcp(&self) -> TcpOptions {
        TcpOptions {
            idle_timeout: self.tcp_idle_timeout,
            max_connections: self.tcp_max_connections,
            max_per_source: self.tcp_max_per_source as usize,
            max_queries: self.tcp_max_queries,
            max_lifetime: self.tcp_max_lifetime,
        }
    }
}

/// Binds the listen addresses: the given ones (each must bind), else `0.0.0.0:port`
/// and `[::]:port` (the IPv6 one may fail, on a host without IPv6: logged). With
/// `xdp`, warns when no address is on `port`, where the program passes queries.
pub fn bind(args: &ServerArgs, port: u16, xdp: bool) -> Result<Vec<Listener>, ServerError> {
    if !args.listen.is_empty() {
        if xdp && !args.listen.iter().any(|a| a.port() == port) {
            tracing::warn!(
                dns_port = port,
                "no --listen address on --dns-port: what the XDP program passes gets no answer"
            );
        }
        return args
            .listen
            .iter()
            .map(|a| Listener::bind(*a, args.workers()))
            .collect();
    }
    let v4 = Listener::bind(SocketAddr::from(([0, 0, 0, 0], port)), args.workers())?;
    let mut out = vec![v4];
    match Listener::bind(SocketAddr::from(([0u16; 8], port)), args.workers()) {
        Ok(l) => out.push(l),
        Err(e) => tracing::warn!(error = %e, "not answering DNS over IPv6"),
    }
    Ok(out)
}
