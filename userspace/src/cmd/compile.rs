//! `geodns compile`: compile the config and `GeoIP` databases and print what the kernel
//! maps would hold, with timings, peak memory and warnings.
use std::{
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use geodns_maps::{Compiled, Config, Engine, KernelMaps, NodeStates, Progress, ProgressStage};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file (TOML); relative paths inside it are relative to its directory.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print the figures as one JSON object (for benches and scripts).
    #[arg(long)]
    pub json: bool,
}

/// What one run produced, for either output form.
struct Report<'a> {
    args: &'a Args,
    config: &'a Config,
    compiled: &'a Compiled,
    maps: &'a KernelMaps,
    elapsed: Duration,
    peak_kib: Option<u64>,
    warnings: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = Arc::new(Config::from_path(&args.config)?);
    let tty = std::io::stderr().is_terminal();
    let mut progress = progress_line(tty);
    let compiled = Arc::new(
        Compiled::build(&config, &mut progress)
            .with_context(|| format!("compiling {}", args.config.display()))?,
    );
    if tty {
        eprintln!();
    }
    let states = NodeStates::from_config(&config);
    let maps = Engine::new(config.clone(), compiled.clone(), &states).kernel_maps();
    let mut warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
    warnings.extend(compiled.warnings().iter().map(ToString::to_string));
    let report = Report {
        args,
        config: &config,
        compiled: &compiled,
        maps: &maps,
        elapsed: started.elapsed(),
        peak_kib: peak_rss_kib(),
        warnings,
    };
    if args.json {
        emit(&(serde_json::to_string_pretty(&report.json())? + "\n"))
    } else {
        emit(&report.text()?)
    }
}

/// Progress on stderr: one line rewritten in place on a terminal, a line per million
/// networks otherwise.
fn progress_line(tty: bool) -> impl FnMut(Progress) {
    let mut last_len = 0usize;
    move |p: Progress| {
        let line = match p.stage {
            ProgressStage::Reading => format!(
                "reading {}: {} networks",
                p.path
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                p.networks
            ),
            _ => "combining databases and config CIDRs into regions".to_owned(),
        };
        let mut err = std::io::stderr().lock();
        if tty {
            let pad = last_len.saturating_sub(line.len());
            let _ = write!(err, "\r{line}{}", " ".repeat(pad));
            last_len = line.len();
        } else if p.stage != ProgressStage::Reading || p.networks.is_multiple_of(1 << 20) {
            let _ = writeln!(err, "{line}");
        }
    }
}

impl Report<'_> {
    fn json(&self) -> serde_json::Value {
        let s = self.compiled.stats();
        serde_json::json!({
            "config": self.args.config,
            "databases": s.databases,
            "networks_v4": s.v4.networks,
            "networks_v6": s.v6.networks,
            "networks": s.v4.networks + s.v6.networks,
            "prefixes_before_v4": s.v4.prefixes_before,
            "prefixes_before_v6": s.v6.prefixes_before,
            "prefixes_v4": s.v4.prefixes_after,
            "prefixes_v6": s.v6.prefixes_after,
            "regions": s.regions,
            "bgp": s.bgp,
            "nearest_rankings": self.compiled.ranking_count(),
            "ipv6_aliases": aliases(self.compiled),
            "records": self.config.records.len(),
            "kernel_names": self.maps.names.len(),
            "answer_sets": self.maps.answers.len(),
            "seconds": self.elapsed.as_secs_f64(),
            "compile_seconds": s.elapsed.as_secs_f64(),
            "peak_rss_kib": self.peak_kib,
            "warnings": self.warnings,
        })
    }

    fn text(&self) -> Result<String, std::fmt::Error> {
        let s = self.compiled.stats();
        let mut out = String::new();
        writeln!(out, "config        {}", self.args.config.display())?;
        for db in &s.databases {
            writeln!(out, "database      {}", db.display())?;
        }
        writeln!(
            out,
            "networks      IPv4 {:>9}   IPv6 {:>9}",
            s.v4.networks, s.v6.networks
        )?;
        writeln!(
            out,
            "prefixes      IPv4 {:>9} -> {:<9} IPv6 {:>9} -> {:<9} (before -> after merging)",
            s.v4.prefixes_before, s.v4.prefixes_after, s.v6.prefixes_before, s.v6.prefixes_after
        )?;
        if let Some(b) = &s.bgp {
            for f in &b.files {
                writeln!(out, "BGP RIB       {}", f.display())?;
            }
            writeln!(
                out,
                "BGP prefixes  IPv4 {:>9}   IPv6 {:>9}   ({} RIB records, {} routes, {:.2} s)",
                b.prefixes_v4,
                b.prefixes_v6,
                b.records,
                b.routes,
                b.parse.as_secs_f64()
            )?;
            writeln!(
                out,
                "BGP origins   {} prefixes with peers disagreeing (the origin most peers see won; {} ties to the lowest AS); skipped: {} AS_SET-origin routes, {} routes without AS path, {} prefixes without an origin, {} other records",
                b.disagreeing_prefixes,
                b.tied_prefixes,
                b.as_set_routes,
                b.no_path_routes,
                b.prefixes_without_origin,
                b.skipped_records
            )?;
        }
        let rankings = self.compiled.ranking_count();
        writeln!(
            out,
            "regions       {} (region 0: in no database){}",
            s.regions,
            if rankings > 0 {
                format!("; {rankings} nearest rankings over all maps")
            } else {
                String::new()
            }
        )?;
        let live = aliases(self.compiled);
        writeln!(
            out,
            "IPv6 aliases  {}",
            if live.is_empty() {
                "none (no IPv6 range is looked up as IPv4)".to_owned()
            } else {
                format!(
                    "{} looked up as their embedded IPv4 address",
                    live.join(", ")
                )
            }
        )?;
        writeln!(
            out,
            "records       {} geo, {} static RRsets; {} kernel names, {} answer sets",
            self.config.records.len(),
            self.config
                .statics
                .names
                .values()
                .map(Vec::len)
                .sum::<usize>(),
            self.maps.names.len(),
            self.maps.answers.len()
        )?;
        writeln!(
            out,
            "time          {:.3} s (databases and merging {:.3} s)",
            self.elapsed.as_secs_f64(),
            s.elapsed.as_secs_f64()
        )?;
        match self.peak_kib {
            Some(kib) => writeln!(
                out,
                "peak memory   {:.1} MiB",
                f64::from(u32::try_from(kib).unwrap_or(u32::MAX)) / 1024.0
            )?,
            None => writeln!(out, "peak memory   unknown (no VmHWM in /proc/self/status)")?,
        }
        if self.warnings.is_empty() {
            writeln!(out, "warnings      none")?;
        } else {
            writeln!(out, "warnings      {}", self.warnings.len())?;
            for w in &self.warnings {
                writeln!(out, "  - {w}")?;
            }
        }
        Ok(out)
    }
}

/// The IPv6 ranges looked up as IPv4 (`Compiled::aliases`).
fn aliases(compiled: &Compiled) -> Vec<String> {
    geodns_common::IPV6_ALIASES
        .iter()
        .filter(|(flag, _, _)| compiled.aliases() & flag != 0)
        .map(|(_, start, len)| format!("{}/{len}", std::net::Ipv6Addr::from(*start)))
        .collect()
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
