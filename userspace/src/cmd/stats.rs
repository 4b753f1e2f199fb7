//! `geodns stats`: the live XDP counters of a running `geodns run`, read from the maps
//! it pinned.
use std::path::PathBuf;

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use geodns_common::counter;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where `geodns run` pinned its maps.
    #[arg(long, default_value = "/sys/fs/bpf/geodns")]
    pub pin_dir: PathBuf,
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
    Ok(())
}
