//! `geodns lookup`: explain the decision for one client address or ECS prefix.
use std::{fmt::Write as _, net::IpAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use geodns_maps::{
    engine::{CandidateState, FamilyAnswer},
    Compiled, Config, Engine, Explanation, NodeStates,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The client (resolver) address.
    pub ip: IpAddr,
    /// An EDNS Client Subnet prefix (ADDRESS/LENGTH) that the query carries: it is
    /// looked up instead of IP when its length is not 0.
    #[arg(long)]
    pub ecs: Option<String>,
    /// Print the explanation as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also ask the kernel maps of a running `geodns run` (pinned under --pin-dir)
    /// which prefix and region they hold for this client, and compare.
    #[arg(long)]
    pub live: bool,
    /// Where `geodns run` pinned its maps.
    #[arg(long, default_value = "/sys/fs/bpf/geodns")]
    pub pin_dir: std::path::PathBuf,
}

/// The live kernel answer for `ip`: (generation, region, prefix length). An IPv6
/// client in an alias range the live generation follows is read as the kernel reads
/// it: its embedded IPv4 address in the IPv4 trie, the length moved by the offset.
fn live_prefix(pin_dir: &std::path::Path, ip: IpAddr) -> anyhow::Result<(u32, u16, u8)> {
    use aya::maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData};
    use geodns_common::{PrefixValue, RuntimeState};
    let open = |name: &str| {
        let path = pin_dir.join(name);
        MapData::from_pin(&path).with_context(|| {
            format!(
                "opening {} (is `geodns run` running with --pin-dir {}?)",
                path.display(),
                pin_dir.display()
            )
        })
    };
    let state_map = Map::Array(open("STATE")?);
    let state: Array<_, RuntimeState> = Array::try_from(&state_map)?;
    let st = state.get(&0, 0)?;
    let generation = st.generation & 1;
    let (ip, offset) = match ip {
        IpAddr::V6(a) => geodns_common::ipv6_alias(&a.octets(), st.flags)
            .map_or((ip, 0), |(v4, o)| {
                (IpAddr::V4(std::net::Ipv4Addr::from(v4)), o)
            }),
        IpAddr::V4(_) => (ip, 0),
    };
    let v = match ip {
        IpAddr::V4(a) => {
            let map = Map::LpmTrie(open(&format!("PREFIX_V4_{generation}"))?);
            let trie: LpmTrie<_, [u8; 4], PrefixValue> = LpmTrie::try_from(&map)?;
            trie.get(&Key::new(32, a.octets()), 0)?
        }
        IpAddr::V6(a) => {
            let map = Map::LpmTrie(open(&format!("PREFIX_V6_{generation}"))?);
            let trie: LpmTrie<_, [u8; 16], PrefixValue> = LpmTrie::try_from(&map)?;
            trie.get(&Key::new(128, a.octets()), 0)?
        }
    };
    Ok((generation, v.region, v.prefix_len + offset))
}

/// `ADDRESS/LENGTH` (the length defaults to the whole address).
pub fn parse_ecs(s: &str) -> anyhow::Result<(IpAddr, u8)> {
    let (a, l) = s.split_once('/').unwrap_or((s, ""));
    let addr: IpAddr = a
        .parse()
        .with_context(|| format!("--ecs {s}: `{a}` is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = if l.is_empty() {
        max
    } else {
        l.parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .with_context(|| format!("--ecs {s}: the length must be 0 to {max}"))?
    };
    Ok((addr, len))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let ecs = args.ecs.as_deref().map(parse_ecs).transpose()?;
    let config = Config::from_path(&args.config)?;
    let compiled = Compiled::build(&config, &mut |_| {})
        .with_context(|| format!("compiling {}", args.config.display()))?;
    let config = Arc::new(config);
    let engine = Engine::new(
        config.clone(),
        Arc::new(compiled),
        &NodeStates::from_config(&config),
    );
    let e = engine.explain(args.ip, ecs);
    if args.live {
        live_note(&args.pin_dir, &e)?;
    }
    if args.json {
        return super::compile::emit(&json(&e)?);
    }
    let mut out = String::new();
    match &e.ecs {
        Some(ecs) => writeln!(
            out,
            "client      {} (ECS {ecs}; the query came from {})",
            e.client, args.ip
        )?,
        None => writeln!(out, "client      {}", e.client)?,
    }
    writeln!(
        out,
        "prefix      {} (ECS scope /{}), region {}",
        e.prefix,
        e.prefix.len(),
        e.region
    )?;
    alias_line(&mut out, &e)?;
    if let Some(f) = &e.facts {
        let mut parts = Vec::new();
        if let Some(c) = f.cidr {
            parts.push(format!("config CIDR {c}"));
        }
        if let Some(a) = f.asn {
            parts.push(format!("AS{a}"));
        }
        if let Some(c) = &f.country {
            parts.push(format!("country {c}"));
        }
        if let Some(c) = &f.continent {
            parts.push(format!("continent {c}"));
        }
        if !f.in_database {
            parts.push("in no database".to_owned());
        }
        writeln!(out, "facts       {}", parts.join(", "))?;
        for (db, net) in &f.networks {
            writeln!(out, "            {} has {net}", db.display())?;
        }
    }
    if let Some(err) = &e.facts_error {
        writeln!(out, "facts       unavailable: {err}")?;
    }
    writeln!(out, "maps")?;
    for m in &e.maps {
        let key = m
            .key
            .map_or_else(|| "(none)".to_owned(), |k| format!("\"{k}\""));
        writeln!(out, "  {:<10} {key:<18} {}", m.map, m.why)?;
    }
    writeln!(
        out,
        "records     (node states: admin states from the config, others assumed up)"
    )?;
    for r in &e.records {
        writeln!(
            out,
            "  {} (map {}, {}, ttl {}){}",
            r.name,
            r.map,
            r.policy,
            r.ttl,
            if r.kernel {
                ""
            } else {
                " - no kernel answer set: userspace answers"
            }
        )?;
        if !r.candidates.is_empty() {
            writeln!(out, "    candidates {}", candidates(&r.candidates))?;
        }
        writeln!(out, "    A          {}", answer(&r.a))?;
        writeln!(out, "    AAAA       {}", answer(&r.aaaa))?;
    }
    writeln!(out, "fallback    {}", candidates(&e.fallback))?;
    super::compile::emit(&out)
}

/// Compares the explanation with the running daemon's kernel maps (on stderr).
fn live_note(pin_dir: &std::path::Path, e: &Explanation) -> anyhow::Result<()> {
    let (generation, region, len) = live_prefix(pin_dir, e.client)?;
    let agrees = region == e.region && len == e.prefix.len();
    eprintln!(
        "live        kernel generation {generation}: region {region}, prefix length /{len} ({})",
        if agrees {
            "the same as this config compiles to"
        } else {
            "DIFFERENT from this config: the daemon serves another version"
        }
    );
    Ok(())
}

/// How an aliased IPv6 client (6to4, Teredo, IPv4-mapped) was looked up.
fn alias_line(out: &mut String, e: &Explanation) -> std::fmt::Result {
    if let Some(a) = &e.alias {
        let kind = match a.range.len() {
            96 => "IPv4-mapped",
            32 => "Teredo",
            _ => "6to4",
        };
        writeln!(
            out,
            "alias       {} ({kind}) is aliased to the databases' IPv4 tree: looked up as {}, \
             which matched {}; scope = {} + {}",
            a.range,
            a.ipv4,
            a.ipv4_prefix,
            a.ipv4_prefix.len(),
            a.range.len()
        )?;
    }
    Ok(())
}

/// The explanation as `geodns lookup --json` prints it and the redirector's
/// `GET /v1/lookup` serves it: pretty JSON and a newline.
pub fn json(e: &Explanation) -> serde_json::Result<String> {
    Ok(serde_json::to_string_pretty(e)? + "\n")
}

fn candidates(list: &[CandidateState]) -> String {
    list.iter()
        .map(|c| format!("{} (weight {}, {})", c.node, c.weight, c.state))
        .collect::<Vec<_>>()
        .join(", ")
}

fn answer(a: &FamilyAnswer) -> String {
    let addrs: Vec<String> = a
        .addresses
        .iter()
        .enumerate()
        .map(|(i, ip)| match a.weights.get(i) {
            Some(w) => format!("{ip} (weight {w})"),
            None => ip.to_string(),
        })
        .collect();
    match a.source {
        "geo" if !a.weights.is_empty() => format!(
            "geo, {} per answer picked by weight from: {}",
            a.count,
            addrs.join(", ")
        ),
        "geo" => format!("geo: {}", addrs.join(" ")),
        "fallback" => format!("fallback round robin over: {}", addrs.join(" ")),
        _ => "no address of this family: NODATA".to_owned(),
    }
}
