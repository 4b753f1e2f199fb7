//! The command line of a fleet box: `--fleet`, `--box`, `--fleet-prefix`, `--fleet-lease`.

use std::time::Duration;

/// `--fleet etcd://HOST:PORT[,HOST:PORT...]`: the etcd endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints(pub Vec<String>);

/// Parses `etcd://HOST:PORT[,HOST:PORT...]` (also `http://`, or none) into gRPC URLs.
pub fn parse_endpoints(s: &str) -> Result<Endpoints, String> {
    let rest = s
        .strip_prefix("etcd://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let mut out = Vec::new();
    for part in rest.split(',').map(str::trim) {
        let part = part.strip_prefix("etcd://").unwrap_or(part);
        let ok = part.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!(
                "`{part}`: expected etcd://HOST:PORT[,HOST:PORT...]"
            ));
        }
        out.push(format!("http://{part}"));
    }
    Ok(Endpoints(out))
}

pub(super) fn parse_box_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}`: expected 1 to 63 letters, digits, `-`, `_` or `.`"
        ))
    }
}

/// Joining a fleet (flattened into the daemon's arguments).
#[derive(clap::Args, Clone, Debug)]
pub struct FleetArgs {
    /// Join a fleet whose node states and config live in etcd (v3 API):
    /// `etcd://HOST:PORT[,HOST:PORT...]`. Admin states, health verdicts (by quorum) and
    /// pushed configs (`geodns fleet push`) then apply on every box. Requires --box.
    #[arg(long, value_name = "etcd://HOST:PORT", value_parser = parse_endpoints, requires = "box_name")]
    pub fleet: Option<Endpoints>,
    /// This box's name in the fleet (unique per box).
    #[arg(long = "box", value_name = "NAME", value_parser = parse_box_name, requires = "fleet")]
    pub box_name: Option<String>,
    /// The fleet's key prefix in etcd.
    #[arg(long, default_value = "/geodns", value_name = "PREFIX")]
    pub fleet_prefix: String,
    /// How long the box's health views outlive it in etcd (its lease): a box that dies
    /// or loses etcd stops counting toward the quorum after this.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub fleet_lease: Duration,
}
