//! `geodns`: a `GeoDNS` responder whose hot path runs in XDP.
use clap::{Parser, Subcommand};
use geodns::cmd;

/// `GeoDNS` for a CDN: answers `A`/`AAAA` per client location from an XDP program, with a
/// complete authoritative server in userspace.
///
/// Typical use: `geodns compile --config FILE` to check a config and its `GeoIP`
/// databases, `geodns lookup --config FILE IP` to explain one decision, and
/// `geodns run --config FILE --iface IFACE` to serve.
#[derive(Parser)]
#[command(name = "geodns", version = geodns::version::LONG, about, long_about)]
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
    /// Show what a new config or database does to answers before it goes live: per
    /// record the share of the IPv4 and IPv6 space whose answer (or only region)
    /// changes, node gains and losses, the largest moved prefixes. Exit status 0:
    /// nothing moves, 1: something moves, 2: error.
    ///
    /// `geodns diff OLD.toml NEW.toml`, `geodns diff --live NEW.toml` (against the
    /// running daemon), `geodns diff CONFIG --db country=new.mmdb` (a new database
    /// release).
    Diff(cmd::diff::Args),
    /// Serve: attach the XDP program, answer, reload on file changes and SIGHUP; with
    /// --redirect-listen, also the HTTP redirector (see `geodns redirect --help`).
    Run(geodns::daemon::Args),
    /// Print the live XDP counters of a running `geodns run` (from its pinned maps), then
    /// the rest of its `/metrics` (authoritative server, reloads, map entries, nodes).
    Stats(cmd::stats::Args),
    /// Show nodes, or set a node's admin state (up, down, drain, auto) in a running
    /// `geodns run` or `geodns redirect`.
    Node(cmd::node::Args),
    /// Try a candidate config on live traffic before it goes live: the running daemon
    /// loads it into its idle table without switching, and the XDP program looks a
    /// sample of the answered queries up in it too, counting in the kernel the queries
    /// whose answer would change and where they would go.
    ///
    /// `geodns shadow NEW.toml [--sample N]` starts, `geodns shadow --report` shows the
    /// live-traffic-weighted diff, `--promote` switches to the candidate (one atomic
    /// flip), `--abort` drops it. A reload during the run drops it; a node-state change
    /// rebuilds the candidate with the new states and restarts the counts.
    Shadow(cmd::shadow::Args),
    /// Serve the HTTP redirector: `302 Found` to the node the DNS decision picks for
    /// the client (with node health, the admin API and reloads; no XDP).
    ///
    /// Any GET or HEAD is answered `302 Found` with `Location: <the node's http_base><the
    /// request's path and query>`, the node chosen by the same decision as the DNS
    /// answer (regions, policy, node health, fallback). The record decided for is the
    /// request's Host when that is a served record name, else --redirect-record. An
    /// IPv4 client gets the node of the A answer, an IPv6 client that of the AAAA answer
    /// (the other family's when its own has none). A node without `http_base` is
    /// redirected to by its address (`http://198.18.1.10/...`,
    /// `http://[2001:db8::1]/...`), with the scheme a trusted proxy reports
    /// (X-Forwarded-Proto, or `proto=` of Forwarded), else http.
    ///
    /// The client is the socket peer; when the peer is a --trusted-proxy, the right-most
    /// address of --forwarded-header that is not itself a trusted proxy.
    /// `GET /v1/lookup?ip=ADDR[&ecs=PREFIX]` explains a decision as JSON, as
    /// `geodns lookup --json` does, with the live node states. `geodns run
    /// --redirect-listen ADDR` serves the same inside the DNS daemon.
    Redirect(geodns::daemon::RedirectDaemonArgs),
    /// A fleet of boxes (`geodns run --fleet etcd://HOST:PORT --box NAME`): push a new
    /// config to every box (`push CONFIG`, with the answer diff first), or show each
    /// box's config revision, generation, databases, errors and node states (`status`).
    Fleet(cmd::fleet::Args),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Compile(args) => cmd::compile::run(&args),
        Command::Lookup(args) => cmd::lookup::run(&args),
        Command::Diff(args) => std::process::exit(cmd::diff::main(&args)),
        Command::Run(args) => {
            init_tracing();
            geodns::daemon::run(&args)
        }
        Command::Stats(args) => cmd::stats::run(&args),
        Command::Node(args) => cmd::node::run(&args),
        Command::Shadow(args) => cmd::shadow::run(&args),
        Command::Redirect(args) => {
            init_tracing();
            geodns::daemon::run_redirect(&args)
        }
        Command::Fleet(args) => std::process::exit(cmd::fleet::main(&args)),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// Every duration option of every command rejects 0 (`--watch-interval 0` once
    /// panicked in tokio's `interval`). Duration options are found by their value name;
    /// an option whose default looks like a duration must have that name, so a new one
    /// cannot slip past this test with a parser of its own.
    #[test]
    fn every_duration_option_rejects_zero() {
        let cli = Cli::command();
        let mut checked = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let is_duration = arg
                    .get_value_names()
                    .is_some_and(|n| n.iter().any(|n| n.as_str() == "DURATION"));
                let looks_like_one = arg.get_default_values().iter().any(|v| {
                    let v = v.to_string_lossy();
                    let digits = v.trim_end_matches("ms").trim_end_matches('s');
                    digits != v && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                });
                assert!(
                    is_duration || !looks_like_one,
                    "{} --{}: a duration default without the duration parser",
                    sub.get_name(),
                    arg.get_id()
                );
                if !is_duration {
                    continue;
                }
                let long = arg.get_long().expect("duration options are long options");
                // Everything optional, so the option is parsed on its own.
                let alone = sub.clone().mut_args(|a| a.required(false));
                for zero in ["0", "0s", "0ms"] {
                    let parsed = alone.clone().try_get_matches_from([
                        sub.get_name(),
                        &format!("--{long}"),
                        zero,
                    ]);
                    let err = parsed
                        .err()
                        .unwrap_or_else(|| panic!("{} --{long} {zero} accepted", sub.get_name()));
                    assert!(err.to_string().contains("more than 0"), "{err}");
                }
                checked.push(format!("{} --{}", sub.get_name(), arg.get_id()));
            }
        }
        for known in [
            "run --watch_interval",
            "run --tcp_idle_timeout",
            "run --check_interval",
            "run --check_timeout",
            "redirect --watch_interval",
            "redirect --http_timeout",
            "run --fleet_lease",
        ] {
            assert!(
                checked.iter().any(|c| c == known),
                "{known} not checked: {checked:?}"
            );
        }
    }
}
