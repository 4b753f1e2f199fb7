//! The `geodns` daemon's parts: loader, control, the authoritative DNS server, health, reload, HTTP.

/// The XDP object built by `build.rs`, aligned for aya's ELF parser.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-dns"));
/// The baseline programs of the benchmarks and tests (`xdp_echo`, `xdp_pass`; see
/// `xdp-dns/src/bench.rs`), in an object of their own that `geodns run` never loads.
#[cfg(feature = "testkit")]
pub static XDP_BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-bench"));

pub mod authoritative;
pub mod cmd;
pub mod control;
pub mod daemon;
pub mod defence;
pub mod duration;
pub mod fleet;
pub mod health;
pub mod http;
pub mod loader;
pub mod object_check;
pub mod prom;
pub mod redirect;
pub mod shadow;
pub mod version;
