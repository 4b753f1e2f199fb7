//! `geodns node`: show nodes, or set a node's admin state, in a running `geodns run`
//! through its HTTP API (the metrics address).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::health::{percent_encode, AdminState, NodeStatus};

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
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    match (&args.node, args.state) {
        (None, _) => {
            let body = request(args.api, "GET", "/v1/nodes")?;
            let nodes: Vec<NodeStatus> =
                serde_json::from_str(&body).context("reading the node list")?;
            print_table(&nodes);
        }
        (Some(node), None) => {
            let body = request(
                args.api,
                "GET",
                &format!("/v1/node/{}", percent_encode(node)),
            )?;
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
            print!("{}", request(args.api, "POST", &path)?);
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

/// One HTTP/1.1 request; the body of a 2xx response, else an error with the body.
pub(crate) fn request(api: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_secs(3)).with_context(|| {
        format!("connecting to {api} (is `geodns run` or `geodns redirect` running with --metrics {api}?)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One write: `write!` on the socket would send each piece in a segment of its own.
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {api}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{api} did not answer HTTP"))?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: HTTP {status}: {}", body.trim_end());
    }
    Ok(body.to_owned())
}
