//! `geodns`: a `GeoDNS` responder whose hot path runs in XDP.
use clap::{Parser, Subcommand};
use geodns::cmd;

/// `GeoDNS` for a CDN: answers `A`/`AAAA` per client location from an XDP program, with a
/// complete authoritative fallback server in userspace.
///
/// Typical use: `geodns compile --config FILE` to check a config and its `GeoIP`
/// databases, `geodns lookup --config FILE IP` to explain one decision, and
/// `geodns run --config FILE --iface IFACE` to serve.
#[derive(Parser)]
#[command(name = "geodns", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile the config and `GeoIP` databases into the geo-map and print what it holds.
    Compile(cmd::compile::Args),
    /// Explain the decision for one client address (or ECS prefix).
    Lookup(cmd::lookup::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Compile(args) => cmd::compile::run(&args),
        Command::Lookup(args) => cmd::lookup::run(&args),
    }
}
