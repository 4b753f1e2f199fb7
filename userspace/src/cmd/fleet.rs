//! `geodns fleet push CONFIG` and `geodns fleet status`: the config and the boxes of a
//! fleet (`geodns run --fleet`), through its etcd.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use geodns_maps::{
    diff::{diff, Diff, Table},
    Compiled, Config, Engine, NodeStates,
};

use crate::fleet::{BoxStatus, Endpoints, Keys};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    /// The fleet's etcd: `etcd://HOST:PORT[,HOST:PORT...]`.
    #[arg(long, global = true, value_name = "etcd://HOST:PORT", value_parser = crate::fleet::parse_endpoints, default_value = "etcd://127.0.0.1:2379")]
    pub fleet: Endpoints,
    /// The fleet's key prefix in etcd (`geodns run --fleet-prefix`).
    #[arg(long, global = true, default_value = "/geodns", value_name = "PREFIX")]
    pub fleet_prefix: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Store CONFIG as the fleet's next config revision: every box compiles it against
    /// its own databases and applies it, or keeps its config and reports why. First
    /// prints what the change does to answers (as `geodns diff`, both sides compiled
    /// here with CONFIG's databases), and refuses when more than --max-change percent
    /// of a record's address space changes answer, unless --force. Exit status: 0
    /// pushed (or nothing to push), 1 refused, 2 error.
    Push {
        /// The new config (relative paths in it are relative to its directory, here
        /// and on every box).
        config: PathBuf,
        /// The largest share (percent) of any record's IPv4 or IPv6 clients whose
        /// answer may change.
        #[arg(long, value_name = "PCT", default_value_t = 10.0, value_parser = percent)]
        max_change: f64,
        /// Push even above --max-change, or when the fleet's config does not compile
        /// here.
        #[arg(long)]
        force: bool,
        /// How many of the largest moved prefixes to list, per family.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// One line per box: config revision, map generation, database hashes, last error,
    /// node states, heartbeat age.
    Status {
        /// Print JSON (one object per box).
        #[arg(long)]
        json: bool,
    },
}

fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}`: expected a percentage from 0 to 100")),
    }
}

/// Runs the command and returns the exit status (errors printed on stderr).
#[must_use]
pub fn main(args: &Args) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geodns fleet: {e}");
            return 2;
        }
    };
    let result = rt.block_on(async {
        match &args.command {
            Command::Push {
                config,
                max_change,
                force,
                top,
            } => push(args, config, *max_change, *force, *top).await,
            Command::Status { json } => status(args, *json).await.map(|()| 0),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("geodns fleet: {e:#}");
            2
        }
    }
}

async fn connect(args: &Args) -> anyhow::Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    tokio::time::timeout(
        Duration::from_secs(5),
        Client::connect(&args.fleet.0, Some(options)),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "connecting to etcd at {}: timed out",
            args.fleet.0.join(",")
        )
    })?
    .with_context(|| format!("connecting to etcd at {}", args.fleet.0.join(",")))
}

/// The answer table of a config text, compiled as if it were the file `path`.
fn table_of(text: &str, path: &Path, source: &str) -> anyhow::Result<Table> {
    let name = path.display().to_string();
    let config = Config::from_str_named(text, &name)?;
    crate::fleet::check_pins(&config).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let compiled =
        Compiled::build(&config, &mut |_| {}).with_context(|| format!("compiling {source}"))?;
    let states = NodeStates::from_config(&config);
    let engine = Engine::new(Arc::new(config), Arc::new(compiled), &states);
    Ok(Table::from_engine(&engine, source, Some(path.to_owned())))
}

/// The largest share of any record's address space (per query type and family) whose
/// answer changes; a record that goes away changes all of its answers.
#[must_use]
pub fn largest_change(d: &Diff) -> f64 {
    let moved = d
        .records
        .iter()
        .flat_map(|r| r.a.iter().chain(r.aaaa.iter()))
        .map(|s| s.answer_share)
        .fold(0.0, f64::max);
    if d.only_old.is_empty() {
        moved
    } else {
        1.0
    }
}

async fn push(
    args: &Args,
    path: &Path,
    max_change: f64,
    force: bool,
    top: usize,
) -> anyhow::Result<i32> {
    let keys = Keys::new(&args.fleet_prefix);
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut client = connect(args).await?;
    let current = client.get(keys.config(), None).await?;
    let (old_revision, old_text) = current.kvs().first().map_or((0, None), |kv| {
        (
            kv.mod_revision(),
            Some(String::from_utf8_lossy(kv.value()).into_owned()),
        )
    });
    if old_text.as_deref() == Some(text.as_str()) {
        println!("the fleet already has this config (revision {old_revision}): nothing to push");
        return Ok(0);
    }
    // Both sides compile side by side, as `geodns diff` does.
    let new_path = path.to_path_buf();
    let new_text = text.clone();
    let new_side = tokio::task::spawn_blocking(move || {
        table_of(&new_text, &new_path, &format!("{}", new_path.display()))
    });
    let old_side = old_text.map(|old| {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            table_of(&old, &path, &format!("fleet revision {old_revision}"))
        })
    });
    let new_table = new_side.await.context("compiling the new config")??;
    match old_side {
        None => println!("the fleet has no config yet: this is its first revision"),
        Some(old) => match old.await.context("compiling the fleet's config")? {
            Ok(old_table) => {
                let d = diff(&old_table, &new_table, top);
                print!("{}", crate::cmd::diff::text(&d)?);
                let change = largest_change(&d) * 100.0;
                if change > max_change && !force {
                    eprintln!(
                        "geodns fleet push: refused: {change:.2}% of a record's clients change answer, more than --max-change {max_change}% (--force pushes anyway)"
                    );
                    return Ok(1);
                }
            }
            Err(e) if force => {
                eprintln!("the fleet's config (revision {old_revision}) does not compile here ({e:#}); pushing without a diff (--force)");
            }
            Err(e) => {
                eprintln!(
                    "geodns fleet push: refused: the fleet's config (revision {old_revision}) does not compile here, so there is no diff: {e:#} (--force pushes anyway)"
                );
                return Ok(1);
            }
        },
    }
    // Only over the revision the diff was made against: a push in between is not
    // overwritten unseen.
    let txn = Txn::new()
        .when([Compare::mod_revision(
            keys.config(),
            CompareOp::Equal,
            old_revision,
        )])
        .and_then([TxnOp::put(keys.config(), text, None)]);
    let resp = client.txn(txn).await?;
    if !resp.succeeded() {
        bail!("the fleet's config changed while this ran (it was revision {old_revision}): run again to see the new diff");
    }
    let revision = resp
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    println!(
        "pushed {} as config revision {revision}; `geodns fleet status` shows where it applied",
        path.display()
    );
    Ok(0)
}

/// One box as `geodns fleet status --json` prints it.
#[derive(serde::Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    status: &'a BoxStatus,
    /// Whether its lease is alive (it counts toward the quorum).
    live: bool,
    heartbeat_age_ms: u64,
}

async fn status(args: &Args, json: bool) -> anyhow::Result<()> {
    let keys = Keys::new(&args.fleet_prefix);
    let mut client = connect(args).await?;
    let all = client
        .get(keys.all(), Some(GetOptions::new().with_prefix()))
        .await?;
    let mut statuses = Vec::new();
    let mut live = Vec::new();
    let mut config_revision = None;
    for kv in all.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        match keys.parse(&key) {
            crate::fleet::view::Key::Status(name) => {
                match serde_json::from_slice::<BoxStatus>(kv.value()) {
                    Ok(s) => statuses.push(s),
                    Err(e) => eprintln!("{key}: unreadable status: {e}"),
                }
                let _ = name;
            }
            crate::fleet::view::Key::Health(name) => live.push(name.to_owned()),
            crate::fleet::view::Key::Config => config_revision = Some(kv.mod_revision()),
            _ => {}
        }
    }
    let now = crate::fleet::now_unix_ms();
    let rows: Vec<Row<'_>> = statuses
        .iter()
        .map(|s| Row {
            status: s,
            live: live.contains(&s.name),
            heartbeat_age_ms: now.saturating_sub(s.heartbeat_unix_ms),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    match config_revision {
        Some(r) => println!("fleet config revision {r}"),
        None => println!("no fleet config pushed yet"),
    }
    for r in &rows {
        println!("{}", line(r)?);
    }
    Ok(())
}

fn line(r: &Row<'_>) -> Result<String, std::fmt::Error> {
    let s = r.status;
    let mut out = String::new();
    write!(
        out,
        "{:<12} {:<5} config {:<8} generation {:<4} heartbeat {:>6.1}s ago",
        s.name,
        if r.live { "live" } else { "gone" },
        s.config_revision
            .map_or_else(|| "local".to_owned(), |r| r.to_string()),
        s.generation,
        // Milliseconds to seconds, for reading.
        f64::from(u32::try_from(r.heartbeat_age_ms).unwrap_or(u32::MAX)) / 1000.0,
    )?;
    let dbs: Vec<String> = s
        .databases
        .iter()
        .map(|(p, d)| {
            let file = Path::new(p)
                .file_name()
                .map_or_else(|| p.clone(), |f| f.to_string_lossy().into_owned());
            format!("{file}={}", d.get(..12).unwrap_or(d))
        })
        .collect();
    write!(
        out,
        "  databases {}",
        if dbs.is_empty() {
            "-".to_owned()
        } else {
            dbs.join(",")
        }
    )?;
    let states: Vec<String> = s.states.iter().map(|(n, st)| format!("{n}={st}")).collect();
    write!(out, "  states {}", states.join(","))?;
    write!(out, "  error {}", s.last_error.as_deref().unwrap_or("-"))?;
    Ok(out)
}
