//! `geodns shadow`: start, read, promote or abort a shadow run in a running
//! `geodns run`, through its admin API (see `crate::shadow`).
use std::{net::SocketAddr, path::PathBuf};

use anyhow::{bail, Context as _};

use crate::{http::percent_encode, shadow::Report};

#[derive(clap::Args, Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per action, as clap wants them"
)]
#[command(group(clap::ArgGroup::new("action").args(["config", "report", "promote", "abort"]).required(true)))]
pub struct Args {
    /// Start a shadow run of this config (read by the daemon, so a path on its box).
    /// Its databases are compiled there; the live table keeps answering.
    pub config: Option<PathBuf>,
    /// Shadow one answered query in N (a power of two: 1, 2, 4, ... 32768). 1 looks
    /// every answered query up twice; the default 16 keeps the cost on the live answers near 1.1x (`xdp_ns_v4_500k_shadow`).
    #[arg(long, default_value_t = 16, value_parser = sample_parser)]
    pub sample: u32,
    /// Print what the shadow run has counted: the share of real queries whose answer
    /// would change, and where they would go.
    #[arg(long)]
    pub report: bool,
    /// With --report: the report as JSON.
    #[arg(long, requires = "report")]
    pub json: bool,
    /// Switch to the candidate (one atomic flip, as a reload) and end the run. The
    /// daemon's --config still names the old file: copy the candidate over it, or the
    /// next reload or restart serves the old table again.
    #[arg(long)]
    pub promote: bool,
    /// End the run without switching.
    #[arg(long)]
    pub abort: bool,
    /// The daemon's HTTP address (`geodns run --metrics`).
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub api: SocketAddr,
    #[command(flatten)]
    pub token: crate::http::TokenArgs,
}

fn sample_parser(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("`{s}`: not a number"))?;
    if n == 0 || !n.is_power_of_two() || n > 1 << 15 {
        return Err(format!("`{s}`: a power of two from 1 to 32768"));
    }
    Ok(n)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let request = |method: &str, path: &str| {
        crate::http::request(args.api, method, path, Some(&args.token.admin_token))
    };
    if let Some(config) = &args.config {
        let absolute = std::path::absolute(config)
            .with_context(|| format!("{}: no absolute path", config.display()))?;
        let Some(text) = absolute.to_str() else {
            bail!("{}: not UTF-8", absolute.display());
        };
        let exp = args.sample.trailing_zeros();
        print!(
            "{}",
            request(
                "POST",
                &format!("/v1/shadow?config={}&sample={exp}", percent_encode(text))
            )?
        );
    } else if args.report {
        let body = request("GET", "/v1/shadow")?;
        if args.json {
            println!("{body}");
        } else {
            let report: Report = serde_json::from_str(&body).context("reading the report")?;
            print!("{}", crate::shadow::render(&report));
        }
    } else if args.promote {
        print!("{}", request("POST", "/v1/shadow/promote")?);
    } else if args.abort {
        print!("{}", request("POST", "/v1/shadow/abort")?);
    }
    Ok(())
}
