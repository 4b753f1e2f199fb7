//! `geodns node`: show nodes, or set a node's admin state, in a running `geodns run`
//! through its HTTP API (the metrics address).
use std::net::SocketAddr;

use anyhow::Context as _;

use crate::{
    health::{AdminState, NodeStatus},
    http::percent_encode,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node; without it, every node is listed.
    pub node: Option<String>,
    /// The admin state to set: `auto` hands the node back to its health checks (or the
    /// config's `admin`). Without it, the node is shown.
    #[arg(value_enum)]
    pub state: Option<AdminState>,
    /// The daemon's HTTP address (`geodns run --metrics`; `geodns redirect` defaults to
    /// 127.0.0.1:9154).
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub api: SocketAddr,
    #[command(flatten)]
    pub token: crate::http::TokenArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let request = |method: &str, path: &str| {
        crate::http::request(args.api, method, path, Some(&args.token.admin_token))
    };
    match (&args.node, args.state) {
        (None, _) => {
            let body = request("GET", "/v1/nodes")?;
            let nodes: Vec<NodeStatus> =
                serde_json::from_str(&body).context("reading the node list")?;
            print_table(&nodes);
        }
        (Some(node), None) => {
            let body = request("GET", &format!("/v1/node/{}", percent_encode(node)))?;
            let status: NodeStatus = serde_json::from_str(&body).context("reading the node")?;
            print_table(&[status]);
        }
        (Some(node), Some(state)) => {
            let state = match state {
                AdminState::Up => "up",
                AdminState::Down => "down",
                AdminState::Drain => "drain",
                AdminState::Auto => "auto",
            };
            let path = format!("/v1/node/{}/{state}", percent_encode(node));
            print!("{}", request("POST", &path)?);
        }
    }
    Ok(())
}

fn print_table(nodes: &[NodeStatus]) {
    let show = |s: Option<geodns_maps::NodeState>| s.map_or("-".to_owned(), |s| s.to_string());
    println!(
        "{:<16} {:<6} {:<6} {:<7} {:<7} {:>8} {:>8}  last error",
        "node", "state", "admin", "config", "health", "checks", "failed"
    );
    for n in nodes {
        println!(
            "{:<16} {:<6} {:<6} {:<7} {:<7} {:>8} {:>8}  {}",
            n.node,
            n.state.to_string(),
            show(n.admin),
            show(n.config_admin),
            show(n.health),
            n.checks,
            n.failed_checks,
            n.last_error.as_deref().unwrap_or("-")
        );
    }
}
