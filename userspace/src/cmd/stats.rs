//! `geodns stats`: the live XDP counters of a running `geodns run`, read from the maps
//! it pinned (so they show even when its HTTP side does not answer), then the rest of
//! its `/metrics`: authoritative server, reloads, map entries, node states.
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
    // A `--no-xdp` daemon pins nothing: its /metrics still tell the rest.
    let counters = print_counters(args);
    if let Err(e) = &counters {
        eprintln!("(no XDP counters: {e:#})");
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
            if let Some(line) = fleet_line(&text) {
                println!();
                println!("{line}");
            }
        }
        Err(e) if counters.is_err() => return Err(e.context("no pinned counters and no /metrics")),
        Err(e) => eprintln!("(the rest of /metrics: {e:#})"),
    }
    Ok(())
}

/// One line on the daemon's fleet, from its `/metrics`: connected, or how long etcd
/// has been unreachable (the box then serves fail-static).
fn fleet_line(metrics: &str) -> Option<String> {
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let connected = value("geodns_fleet_connected")?;
    let boxes = value("geodns_fleet_boxes").unwrap_or(0.0);
    let revision = value("geodns_fleet_config_revision").unwrap_or(0.0);
    Some(if connected > 0.0 {
        format!("fleet: connected to etcd; {boxes} live boxes; config revision {revision}")
    } else {
        format!(
            "fleet: etcd UNREACHABLE for {:.0} s: serving fail-static with the last agreed node states and this box's own checks ({boxes} boxes as last seen; config revision {revision})",
            value("geodns_fleet_unreachable_seconds").unwrap_or(0.0)
        )
    })
}

/// The XDP outcome counters from the pinned `COUNTERS` map.
fn print_counters(args: &Args) -> anyhow::Result<()> {
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
    // The heartbeat: a daemon killed or crashed leaves the program answering alone.
    match crate::loader::read_pinned_daemon(&args.pin_dir) {
        Ok(d) => {
            let age_ns = crate::loader::monotonic_ns().saturating_sub(d.beat_ns);
            #[expect(clippy::cast_precision_loss, reason = "seconds for display")]
            let age = age_ns as f64 / 1e9;
            let alive = age_ns <= geodns_common::DAEMON_DEAD_NS;
            println!(
                "{:<30} pid {} heartbeat {age:.1} s ago: {}",
                "daemon",
                d.pid,
                if alive {
                    "alive"
                } else {
                    "DEAD (the kernel answers what it can from the last maps; pass_no_daemon counts the queries nobody answered)"
                }
            );
        }
        Err(e) => println!("{:<30} unknown: {e}", "daemon"),
    }
    Ok(())
}
