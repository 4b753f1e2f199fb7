//! `geodns stats`: the live XDP counters of a running `geodns run`, read from the maps
//! it pinned (so they show even when its HTTP side does not answer), then the rest of
//! its `/metrics`: fallback server, reloads, map entries, node states.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use geodns_common::counter;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where `geodns run` pinned its maps.
    #[arg(long, default_value = "/sys/fs/bpf/geodns")]
    pub pin_dir: PathBuf,
    /// The daemon's HTTP address (`geodns run --metrics`), for the figures that are
    /// not in pinned maps.
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub api: SocketAddr,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let path = args.pin_dir.join("COUNTERS");
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is `geodns run` running with --pin-dir {}?)",
            path.display(),
            args.pin_dir.display()
        )
    })?;
    let map = aya::maps::Map::PerCpuArray(data);
    let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(&map)?;
    for (i, name) in counter::NAMES.iter().enumerate() {
        let values = counters.get(&u32::try_from(i)?, 0)?;
        let total: u64 = values.iter().sum();
        println!("{name:<30} {total}");
    }
    match crate::http::request(args.api, "GET", "/metrics", None) {
        Ok(text) => {
            println!();
            for line in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("geodns_xdp_packets_total"))
            {
                println!("{line}");
            }
        }
        Err(e) => eprintln!("(the rest of /metrics: {e:#})"),
    }
    Ok(())
}
