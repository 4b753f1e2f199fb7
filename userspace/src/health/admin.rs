//! The node admin API, served under `/v1/` on the daemon's metrics address (the HTTP
//! layer, [`crate::http`], checks the admin token and refuses browser requests first):
//!
//! - `GET /v1/nodes`: every node's [`super::NodeStatus`], as JSON.
//! - `GET /v1/node/NAME`: one node.
//! - `POST /v1/node/NAME/STATE` with STATE `up`, `down`, `drain` or `auto`: sets the
//!   runtime admin state, in the maps before the response is sent. Only from a
//!   loopback `peer`.
//! - `GET /v1/lookup?ip=ADDR[&ecs=PREFIX]`: the explanation of a decision with the live
//!   node states, as `geodns lookup --json` prints it.
use std::net::IpAddr;

use super::{AdminState, HealthControl};
use crate::http::{percent_decode, query_param};

/// Answers one admin request: the HTTP status and body.
pub async fn admin_request(
    control: &HealthControl,
    method: &str,
    path: &str,
    peer: IpAddr,
) -> (u16, String) {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["v1", "nodes"]) => (200, json_line(&control.status())),
        ("GET", ["v1", "node", name]) => {
            let name = percent_decode(name);
            control
                .status()
                .into_iter()
                .find(|s| s.node == name)
                .map_or_else(|| not_found(&name), |s| (200, json_line(&s)))
        }
        ("POST", ["v1", "node", name, state]) => {
            if !peer.to_canonical().is_loopback() {
                return (403, "admin requests only from loopback\n".to_owned());
            }
            let name = percent_decode(name);
            let Ok(state) = state.parse::<AdminState>() else {
                return (
                    400,
                    format!("`{state}`: expected up, down, drain or auto\n"),
                );
            };
            match control.set_admin(&name, state).await {
                Ok(msg) => (200, msg),
                Err(super::AdminError::UnknownNode(_)) => not_found(&name),
                Err(e) => (503, format!("{name}: {e}\n")),
            }
        }
        ("GET", ["v1", "lookup"]) => lookup(control, query),
        (_, ["v1", "nodes" | "lookup"] | ["v1", "node", ..]) => {
            (405, "method not allowed\n".to_owned())
        }
        _ => (404, "not found\n".to_owned()),
    }
}

fn lookup(control: &HealthControl, query: &str) -> (u16, String) {
    let Some(ip) = query_param(query, "ip").and_then(|s| s.parse::<IpAddr>().ok()) else {
        return (400, "expected ?ip=ADDR[&ecs=PREFIX]\n".to_owned());
    };
    let ecs = match query_param(query, "ecs").map(|s| crate::cmd::lookup::parse_ecs(&s)) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => return (400, format!("ecs: {e:#}\n")),
    };
    let engine = control.0.control.engine().load();
    match crate::cmd::lookup::json(&engine.explain(ip, ecs)) {
        Ok(json) => (200, json),
        Err(e) => (500, format!("{e}\n")),
    }
}

fn not_found(name: &str) -> (u16, String) {
    (404, format!("no node named `{name}` in the config\n"))
}

fn json_line<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}
