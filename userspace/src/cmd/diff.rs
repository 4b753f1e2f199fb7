//! `geodns diff OLD NEW`: what a new config, database or node table does to answers,
//! over the whole address space, before it goes live.
//!
//! Each side is a config (compiled with its databases), the running daemon (`--live`:
//! the table its engine answers with, from `GET /v1/table` on its HTTP address; the
//! kernel maps hold the same), or a config with replacement databases (`--db`, for the
//! new side). Exit status as `diff`: 0 nothing moves, 1 something moves, 2 error.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::{bail, Context as _};
use geodns_maps::{
    diff::{diff, Diff, SpaceDiff, Table},
    Compiled, Config, Engine, NodeState, NodeStates,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The old side: a config file. With --live, the running daemon is the old side and
    /// the one file given is the new side.
    pub old: Option<PathBuf>,
    /// The new side: a config file. Without it, the new side is OLD with the databases
    /// that --db replaces.
    pub new: Option<PathBuf>,
    /// Compare against the running `geodns run` (or `geodns redirect`): the table its
    /// engine answers with, under its live node states (the config side then uses them
    /// too, except for nodes whose `admin` the config sets).
    #[arg(long)]
    pub live: bool,
    /// The daemon's HTTP address (`--metrics` of `geodns run`).
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub api: SocketAddr,
    #[command(flatten)]
    pub token: crate::http::TokenArgs,
    /// Replace databases of the new side: `country=FILE`, `asn=FILE`, `city=FILE`
    /// (repeat a kind for several files), or `OLDFILE=FILE` for one file of the config.
    #[arg(long = "db", value_name = "KIND=FILE")]
    pub db: Vec<String>,
    /// How many of the largest moved prefixes to list, per family.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command and returns the exit status: 0 nothing moves, 1 something moves,
/// 2 error (printed on stderr).
#[must_use]
pub fn main(args: &Args) -> i32 {
    match run(args) {
        Ok(true) => 1,
        Ok(false) => 0,
        Err(e) => {
            eprintln!("geodns diff: {e:#}");
            2
        }
    }
}

/// One side to build.
enum Side {
    Live,
    Config { path: PathBuf, db: Vec<String> },
}

fn sides(args: &Args) -> anyhow::Result<(Side, Side)> {
    let with_db = |path: &Path| Side::Config {
        path: path.to_owned(),
        db: args.db.clone(),
    };
    let plain = |path: &Path| Side::Config {
        path: path.to_owned(),
        db: Vec::new(),
    };
    Ok(match (args.live, &args.old, &args.new) {
        (true, Some(new), None) => (Side::Live, with_db(new)),
        (true, None, None) => {
            bail!("--live compares the daemon with a config: give the new config")
        }
        (true, Some(_), Some(_)) => bail!("--live is the old side: give one config, the new one"),
        (false, Some(old), Some(new)) => (plain(old), with_db(new)),
        (false, Some(old), None) if !args.db.is_empty() => (plain(old), with_db(old)),
        (false, Some(_), None) => bail!("give NEW, or --db to compare OLD with replaced databases"),
        (false, None, _) | (true, None, Some(_)) => {
            bail!("give OLD and NEW configs, or --live and a config")
        }
    })
}

/// `config` with its databases replaced as `--db` says.
fn replace_databases(config: &mut Config, specs: &[String]) -> anyhow::Result<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let geoip = config
        .geoip
        .as_mut()
        .with_context(|| format!("--db: {} has no [geoip] section", config.file))?;
    let mut by_kind: Vec<(&str, Vec<PathBuf>)> = Vec::new();
    for spec in specs {
        let (what, file) = spec
            .split_once('=')
            .with_context(|| format!("--db {spec}: expected KIND=FILE or OLDFILE=FILE"))?;
        let file = PathBuf::from(file);
        if !file.is_file() {
            bail!("--db {spec}: {} is not a file", file.display());
        }
        match what {
            "country" | "asn" | "city" => match by_kind.iter_mut().find(|(k, _)| *k == what) {
                Some((_, v)) => v.push(file),
                None => by_kind.push((what, vec![file])),
            },
            old => {
                let old = Path::new(old);
                let mut found = false;
                for p in geoip
                    .country
                    .iter_mut()
                    .chain(geoip.asn.iter_mut())
                    .chain(geoip.city.iter_mut())
                {
                    if same_file(p, old) {
                        p.clone_from(&file);
                        found = true;
                    }
                }
                if !found {
                    bail!(
                        "--db {spec}: {} is not a database of {} (or use country=, asn=, city=)",
                        old.display(),
                        config.file
                    );
                }
            }
        }
    }
    for (kind, files) in by_kind {
        match kind {
            "country" => geoip.country = files,
            "asn" => geoip.asn = files,
            _ => geoip.city = files,
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The running daemon's table.
fn live_table(api: SocketAddr, token: &Path) -> anyhow::Result<Table> {
    let body = crate::http::request(api, "GET", "/v1/table", Some(token))?;
    let mut t: Table =
        serde_json::from_str(&body).with_context(|| format!("reading the table of {api}"))?;
    t.source = format!("live {api}");
    t.check()?;
    Ok(t)
}

/// Compiles a config side, with `live` node states where the config sets no `admin`.
fn config_table(
    path: &Path,
    db: &[String],
    live: Option<&[(String, NodeState)]>,
) -> anyhow::Result<Table> {
    let mut config = Config::from_path(path)?;
    replace_databases(&mut config, db)?;
    let compiled = Compiled::build(&config, &mut |_| {})
        .with_context(|| format!("compiling {}", path.display()))?;
    let mut states = NodeStates::from_config(&config);
    for (node, state) in live.unwrap_or_default() {
        if config.node(node).is_some_and(|n| n.admin.is_none()) {
            states.set(node, *state);
        }
    }
    let mut source = path.display().to_string();
    if !db.is_empty() {
        let _ = write!(source, " with --db {}", db.join(" --db "));
    }
    let config = Arc::new(config);
    let engine = Engine::new(config, Arc::new(compiled), &states);
    let t = Table::from_engine(&engine, &source, Some(path.to_owned()));
    Ok(t)
}

/// Builds both tables (two configs compile side by side) and compares them.
pub fn compare(args: &Args) -> anyhow::Result<Diff> {
    let (old, new) = sides(args)?;
    let live = match (&old, &new) {
        (Side::Live, _) | (_, Side::Live) => Some(live_table(args.api, &args.token.admin_token)?),
        _ => None,
    };
    let states = live.as_ref().map(|t| t.states.as_slice());
    let build = |side: &Side| -> anyhow::Result<Option<Table>> {
        match side {
            Side::Live => Ok(None),
            Side::Config { path, db } => config_table(path, db, states).map(Some),
        }
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| build(&old));
        let b = build(&new);
        (a.join(), b)
    });
    let a = a.map_err(|_| anyhow::anyhow!("compiling the old side panicked"))??;
    let b = b?;
    let mut live = live;
    let old = a.or_else(|| live.take()).context("no old side")?;
    let new = b.or_else(|| live.take()).context("no new side")?;
    Ok(diff(&old, &new, args.top))
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut d = compare(args)?;
    d.seconds = started.elapsed().as_secs_f64();
    if args.json {
        super::compile::emit(&(serde_json::to_string_pretty(&d)? + "\n"))?;
    } else {
        super::compile::emit(&text(&d)?)?;
    }
    Ok(d.moved)
}

/// A share of a space as a percentage, with the precision it needs.
fn pct(x: f64) -> String {
    let p = x * 100.0;
    if p == 0.0 {
        "0%".to_owned()
    } else if p.abs() < 0.0001 {
        format!("{}<0.0001%", if p < 0.0 { "-" } else { "" })
    } else if p.abs() < 1.0 {
        format!("{p:.4}%")
    } else {
        format!("{p:.2}%")
    }
}

fn space_line(out: &mut String, what: &str, s: &SpaceDiff, unit: &str) -> std::fmt::Result {
    writeln!(
        out,
        "    {what:<17} answer changes for {} ({:.1} {unit}), region only for {} ({:.1} {unit})",
        pct(s.answer_share),
        s.answer_units,
        pct(s.region_share),
        s.region_units
    )
}

/// Gains and losses per node, and the from/to matrix.
fn nodes(out: &mut String, s: &SpaceDiff) -> std::fmt::Result {
    if s.nodes.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = s.nodes.iter().map(|n| n.node.as_str()).collect();
    let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(9);
    write!(
        out,
        "      {:<w$} {:>10} {:>10}   from \\ to:",
        "node", "gains", "loses"
    )?;
    for n in &names {
        write!(out, " {n:>w$}")?;
    }
    writeln!(out)?;
    for n in &s.nodes {
        write!(
            out,
            "      {:<w$} {:>10} {:>10}   {:10}",
            n.node,
            pct(n.gained),
            pct(n.lost),
            ""
        )?;
        for to in &names {
            let cell = s
                .flows
                .iter()
                .find(|f| f.from == n.node && f.to == *to)
                .map_or_else(|| "-".to_owned(), |f| pct(f.share));
            write!(out, " {cell:>w$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

pub(crate) fn text(d: &Diff) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    writeln!(out, "old  {}", d.old)?;
    writeln!(out, "new  {}", d.new)?;
    for r in &d.only_old {
        writeln!(
            out,
            "record {r}: only in the old table (its answers go away)"
        )?;
    }
    for r in &d.only_new {
        writeln!(out, "record {r}: only in the new table")?;
    }
    for r in &d.records {
        writeln!(out, "{}", r.name)?;
        let mut any = false;
        for (q, fam) in [("A", &r.a), ("AAAA", &r.aaaa)] {
            for (space, s, unit) in [("IPv4", &fam[0], "/24s"), ("IPv6", &fam[1], "/48s")] {
                if s.answer_changed == 0 && s.region_only == 0 {
                    continue;
                }
                any = true;
                space_line(&mut out, &format!("{q} {space} clients"), s, unit)?;
                nodes(&mut out, s)?;
            }
        }
        if !any {
            writeln!(out, "    no answer or region changes")?;
        }
    }
    for (family, top) in [("IPv4", &d.top_v4), ("IPv6", &d.top_v6)] {
        if top.is_empty() {
            continue;
        }
        writeln!(out, "largest moved {family} prefixes")?;
        for m in top {
            writeln!(
                out,
                "  {:<20} {} of {family}",
                m.prefix.to_string(),
                pct(m.share)
            )?;
            for c in &m.changes {
                writeln!(
                    out,
                    "      {} {}: region {} -> {}; {} -> {}",
                    c.record, c.qtype, c.old_region, c.new_region, c.old_answer, c.new_answer
                )?;
            }
        }
    }
    writeln!(
        out,
        "{} ({:.2} s)",
        if d.moved {
            "answers move"
        } else {
            "nothing moves"
        },
        d.seconds
    )?;
    Ok(out)
}
