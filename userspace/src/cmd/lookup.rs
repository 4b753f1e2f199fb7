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
    /// Instead of the explanation, the whole response the server gives this client for
    /// NAME (relative to the origin, or absolute with a final dot): static records,
    /// CNAMEs followed, wildcards, referrals and geo answers, as `dig` would show them.
    #[arg(long)]
    pub name: Option<String>,
    /// The query type with --name (A, AAAA, TXT, HTTPS, ... or a number).
    #[arg(long = "type", default_value = "A")]
    pub qtype: String,
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
    if let Some(name) = &args.name {
        return super::compile::emit(&answer_for(&engine, args, name, ecs)?);
    }
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
        facts_lines(&mut out, f)?;
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

/// A query for `name`/`qtype` as the client would send it (with the ECS option when
/// given), through the server's own handler; the response printed section by section.
fn answer_for(
    engine: &Engine,
    args: &Args,
    name: &str,
    ecs: Option<(IpAddr, u8)>,
) -> anyhow::Result<String> {
    use hickory_proto::rr::RecordType;
    let origin = &engine.config().zone.origin;
    let full =
        geodns_maps::name::absolute(name, origin).with_context(|| format!("--name {name}"))?;
    let qtype = args
        .qtype
        .parse::<u16>()
        .or_else(|_| {
            args.qtype
                .to_ascii_uppercase()
                .parse::<RecordType>()
                .map(u16::from)
        })
        .map_err(|e| anyhow::anyhow!("--type {}: {e}", args.qtype))?;
    let msg = query_bytes(&geodns_maps::name::to_wire(&full), qtype, ecs);
    let outcome =
        crate::authoritative::handle(engine, &msg, args.ip, crate::authoritative::Transport::Tcp);
    let bytes = outcome.response.context("the server drops this query")?;
    let reply = hickory_proto::op::Message::from_vec(&bytes).context("decoding the response")?;
    let mut out = String::new();
    writeln!(
        out,
        "{full} {} from {}{}: {} (AA={})",
        RecordType::from(qtype),
        args.ip,
        ecs.map_or_else(String::new, |(a, l)| format!(" ECS {a}/{l}")),
        reply.metadata.response_code,
        u8::from(reply.metadata.authoritative)
    )?;
    for (section, records) in [
        ("answer", &reply.answers),
        ("authority", &reply.authorities),
        ("additional", &reply.additionals),
    ] {
        for r in records {
            writeln!(out, "{section:<11} {r}")?;
        }
    }
    if let Some(source) = outcome.source {
        writeln!(out, "source      {source:?}")?;
    }
    Ok(out)
}

/// A query message: id 0, RD=0, one question, an OPT with ECS when `ecs` is given.
fn query_bytes(name: &[u8], qtype: u16, ecs: Option<(IpAddr, u8)>) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(ecs.is_some())];
    m.extend_from_slice(name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let Some((addr, len)) = ecs {
        let (family, octets): (u16, Vec<u8>) = match addr {
            IpAddr::V4(a) => (1, a.octets().to_vec()),
            IpAddr::V6(a) => (2, a.octets().to_vec()),
        };
        let keep = usize::from(len).div_ceil(8).min(octets.len());
        let mut data = family.to_be_bytes().to_vec();
        data.extend_from_slice(&[len, 0]);
        data.extend_from_slice(&octets[..keep]);
        let opt_len = u16::try_from(4 + data.len()).unwrap_or(0);
        let data_len = u16::try_from(data.len()).unwrap_or(0);
        m.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0]);
        m.extend_from_slice(&opt_len.to_be_bytes());
        m.extend_from_slice(&8u16.to_be_bytes());
        m.extend_from_slice(&data_len.to_be_bytes());
        m.extend_from_slice(&data);
    }
    m
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
        "geo" if a.sticky.is_some() => {
            let pick = a.sticky.as_ref().map_or(0, |p| p.slot);
            format!(
                "geo, sticky: client network {} draws {} (weighted rendezvous hash; {} per answer from there) among: {}",
                a.sticky.as_ref().map_or_else(String::new, |p| p.prefix.to_string()),
                a.addresses.get(pick).map_or_else(String::new, ToString::to_string),
                a.count,
                addrs.join(", ")
            )
        }
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

/// The `facts` lines: what the databases, the BGP table and the config's CIDRs say.
fn facts_lines(out: &mut String, f: &geodns_maps::AddressFacts) -> std::fmt::Result {
    let mut parts = Vec::new();
    if let Some(c) = f.cidr {
        parts.push(format!("config CIDR {c}"));
    }
    if let Some(b) = &f.bgp {
        parts.push(format!("BGP origin AS{}", b.origin));
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
    if let Some(b) = &f.bgp {
        writeln!(
            out,
            "            BGP {} originated by AS{} ({} of {} peers agree)",
            b.prefix, b.origin, b.agree, b.peers
        )?;
    }
    for (db, net) in &f.networks {
        writeln!(out, "            {} has {net}", db.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Engine {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml");
        crate::daemon::compile(&path, None).expect("the demo compiles")
    }

    fn ask(e: &Engine, name: &str, qtype: &str, ecs: Option<&str>) -> String {
        let args = Args {
            config: PathBuf::new(),
            ip: "192.0.2.10".parse().expect("ip"),
            ecs: None,
            json: false,
            live: false,
            pin_dir: PathBuf::new(),
            name: Some(name.to_owned()),
            qtype: qtype.to_owned(),
        };
        let ecs = ecs.map(|e| parse_ecs(e).expect("ecs"));
        answer_for(e, &args, name, ecs).expect("an answer")
    }

    #[test]
    fn lookup_name_shows_static_answers_chains_and_referrals() {
        let e = demo();
        let out = ask(&e, "video", "A", Some("192.0.2.0/24"));
        assert!(out.contains("CNAME www.cdn.example.net."), "{out}");
        assert!(out.contains("IN A 198.18.1.10"), "{out}");
        let out = ask(&e, "www", "HTTPS", None);
        assert!(out.contains("alpn=h3,h2"), "{out}");
        let out = ask(&e, "x.lab", "A", None);
        assert!(
            out.contains("(AA=0)") && out.contains("authority   lab."),
            "{out}"
        );
        let out = ask(&e, "@", "257", None);
        assert!(out.contains("CAA 0 issue"), "{out}");
    }
}
