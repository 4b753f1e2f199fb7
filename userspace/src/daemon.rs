//! `geodns run` and `geodns redirect`: one daemon made of optional parts.
//!
//! Every daemon has the control thread ([`crate::control`]: the only writer of the
//! engine and the kernel maps), node health ([`crate::health`]), reloads, and the
//! metrics/admin HTTP server; `geodns run` adds the XDP program and the DNS server,
//! either of them may add the HTTP redirector. A reload compiles on a blocking thread
//! while the old maps serve and hands the engine to the control thread, which installs
//! it into the idle generation and flips: a bad file changes nothing and is counted.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use geodns_common::counter;
use geodns_maps::{Compiled, Config, Engine, NodeStates};
use hyper::{Method, StatusCode};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};

use crate::{
    control::{Control, EngineHandle},
    health::{HealthControl, NodeBook},
    http::{AdminToken, Limits},
    loader::{xdp_mode, LoadOptions, XdpDns},
};

/// Connections the metrics/admin server serves at once.
const METRICS_MAX_CONNECTIONS: usize = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) XDP.
    #[default]
    Native,
    /// Generic XDP, for drivers without native support (slower).
    Skb,
}

/// Serve a zone: the XDP program on `--iface` answers what it can, the rest passes to
/// the userspace server.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The interface to attach the XDP program to (required unless --no-xdp).
    #[arg(long)]
    pub iface: Option<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    pub xdp_mode: XdpModeArg,
    /// Serve from userspace only (no kernel program).
    #[arg(long)]
    pub no_xdp: bool,
    /// UDP port of DNS queries the XDP program answers, and of the default --listen
    /// addresses.
    #[arg(long, default_value_t = 53)]
    pub dns_port: u16,
    #[command(flatten)]
    pub dns: crate::fallback::ServerArgs,
    /// Where the maps are pinned for `geodns stats` (on a BPF filesystem). Only the
    /// names geodns pins there are ever removed.
    #[arg(long, default_value = "/sys/fs/bpf/geodns")]
    pub pin_dir: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also serve the HTTP redirector (as `geodns redirect` does) on ADDR, from the
    /// same engine and node states (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub redirect_listen: Vec<SocketAddr>,
    #[command(flatten)]
    pub redirect: crate::redirect::RedirectArgs,
}

/// `geodns redirect`: the HTTP redirector on its own, with node health, the admin API
/// and `/metrics`, and reloads: the daemon of `geodns run` without XDP and DNS
/// ([`run_redirect`]).
#[derive(clap::Args, Debug)]
pub struct RedirectDaemonArgs {
    /// The config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Address to serve HTTP on (repeatable: e.g. one IPv4 and one IPv6 listener).
    #[arg(long, value_name = "ADDR", required = true)]
    pub listen: Vec<SocketAddr>,
    #[command(flatten)]
    pub redirect: crate::redirect::RedirectArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The options every daemon has.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// Address of the HTTP endpoint serving `GET /metrics` (Prometheus text format) and
    /// the admin API under `/v1/`.
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub metrics: SocketAddr,
    /// How often the config and database files are checked for changes.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub watch_interval: Duration,
    #[command(flatten)]
    pub reload: ReloadArgs,
    #[command(flatten)]
    pub health: crate::health::HealthArgs,
    #[command(flatten)]
    pub token: crate::http::TokenArgs,
}

/// The guard against a valid but empty or truncated database.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct ReloadArgs {
    /// Refuse a reload whose database networks or regions drop by more than this many
    /// percent against the table in use (counted and logged with the figures). SIGUSR1
    /// reloads once without this check.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_shrink: u8,
    /// Never refuse a reload for shrinking.
    #[arg(long)]
    pub force_reload: bool,
}

/// Reload outcomes, for `/metrics`.
#[derive(Default)]
pub struct ReloadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Refused by the shrink guard.
    pub refused: AtomicU64,
    /// Duration of the last successful reload, in microseconds.
    pub last_us: AtomicU64,
}

/// Compiles the config `config` with the node states `states` gives for it (the
/// config's own without it).
pub fn compile_config(
    config: Config,
    states: Option<&dyn Fn(&Config) -> NodeStates>,
) -> anyhow::Result<Engine> {
    let compiled = Compiled::build(&config, &mut |_| {})
        .with_context(|| format!("compiling {}", config.file))?;
    let states = states.map_or_else(|| NodeStates::from_config(&config), |f| f(&config));
    Ok(Engine::new(Arc::new(config), Arc::new(compiled), &states))
}

/// Reads and compiles `path`; see [`compile_config`].
pub fn compile(
    path: &Path,
    states: Option<&dyn Fn(&Config) -> NodeStates>,
) -> anyhow::Result<Engine> {
    compile_config(Config::from_path(path)?, states)
}

/// The files whose change triggers a reload, and what they were when last read.
#[derive(Debug, PartialEq, Eq)]
struct Watch {
    files: Vec<PathBuf>,
    seen: Vec<Option<(SystemTime, u64, u64)>>,
}

impl Watch {
    /// Reads the config at `path` and notes its files (the config, its databases, the
    /// zone file and its journal)
    /// as they are *before* anything is compiled from them: a file replaced during the
    /// compile (geoipupdate replaces one database, then the next, seconds apart) then
    /// differs from what is noted, and the next look reloads again.
    fn read(path: &Path) -> (anyhow::Result<Config>, Self) {
        let config = Config::from_path(path).map_err(anyhow::Error::from);
        let mut files = vec![path.to_path_buf()];
        if let Ok(c) = &config {
            // The databases, the zone file, the files it includes and its journal.
            let dbs = c
                .geoip
                .iter()
                .flat_map(|g| g.country.iter().chain(&g.asn).chain(&g.city));
            for f in dbs.chain(&c.statics.files) {
                if !files.contains(f) {
                    files.push(f.clone());
                }
            }
        }
        let seen = Self::stat(&files);
        (config, Self { files, seen })
    }

    fn stat(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64, u64)>> {
        files
            .iter()
            .map(|f| {
                let m = std::fs::metadata(f).ok()?;
                Some((m.modified().ok()?, m.ino(), m.len()))
            })
            .collect()
    }

    fn changed(&self) -> bool {
        Self::stat(&self.files) != self.seen
    }
}

/// Mounts the BPF filesystem at /sys/fs/bpf when nothing is mounted there.
fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    std::fs::create_dir_all("/sys/fs/bpf")?;
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, dst, fs) = (c("bpf"), c("/sys/fs/bpf"), c("bpf"));
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!(
            "mounting bpffs on /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Removes the pins geodns makes under `dir` (the contract's map names) and `dir` itself
/// if that leaves it empty: never another program's pins, even with `--pin-dir
/// /sys/fs/bpf`.
pub fn remove_pins(dir: &Path) {
    for name in geodns_common::MAP_NAMES {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(pin = %dir.join(name).display(), error = %e, "pin not removed");
            }
        }
    }
    // Fails while anything else is in it: then it is not only ours.
    let _ = std::fs::remove_dir(dir);
}

/// The XDP part of `geodns run`.
struct XdpPart<'a> {
    iface: &'a str,
    mode: XdpModeArg,
    dns_port: u16,
    pin_dir: &'a Path,
}

/// Which parts a daemon runs.
struct Parts<'a> {
    config: &'a Path,
    common: &'a CommonArgs,
    xdp: Option<XdpPart<'a>>,
    dns: Option<(&'a crate::fallback::ServerArgs, u16)>,
    redirect: (&'a [SocketAddr], &'a crate::redirect::RedirectArgs),
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let xdp = if args.no_xdp {
        None
    } else {
        let iface = args
            .iface
            .as_deref()
            .context("--iface IFACE is required (or --no-xdp to serve from userspace only)")?;
        Some(XdpPart {
            iface,
            mode: args.xdp_mode,
            dns_port: args.dns_port,
            pin_dir: &args.pin_dir,
        })
    };
    runtime()?.block_on(serve(Parts {
        config: &args.config,
        common: &args.common,
        xdp,
        dns: Some((&args.dns, args.dns_port)),
        redirect: (&args.redirect_listen, &args.redirect),
    }))
}

/// `geodns redirect`: the daemon without XDP and DNS.
pub fn run_redirect(args: &RedirectDaemonArgs) -> anyhow::Result<()> {
    runtime()?.block_on(serve(Parts {
        config: &args.config,
        common: &args.common,
        xdp: None,
        dns: None,
        redirect: (&args.listen, &args.redirect),
    }))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Loads, fills, attaches and pins the XDP program.
fn start_kernel(part: &XdpPart<'_>, engine: &Engine) -> anyhow::Result<XdpDns> {
    let if_index = if_index(part.iface)?;
    let options = LoadOptions {
        dns_port: part.dns_port,
        ..LoadOptions::default()
    };
    let options = crate::defence::load_options(options, engine.config(), part.iface)
        .with_context(|| format!("reading the addresses of {}", part.iface))?;
    let mut xdp = XdpDns::load(&options)?;
    xdp.install(&engine.kernel_maps())?;
    xdp.attach(if_index, xdp_mode(part.mode == XdpModeArg::Skb))
        .with_context(|| format!("attaching to {}", part.iface))?;
    ensure_bpffs()?;
    // A crashed run may have left pins: they would stop this one.
    remove_pins(part.pin_dir);
    if let Err(e) = xdp.pin(part.pin_dir) {
        remove_pins(part.pin_dir);
        return Err(e).with_context(|| format!("pinning maps under {}", part.pin_dir.display()));
    }
    Ok(xdp)
}

#[expect(
    clippy::too_many_lines,
    reason = "the start and stop sequence, read top to bottom"
)]
async fn serve(parts: Parts<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    let common = parts.common;
    let signals = Signals::install()?;
    // The state file first: the first install already answers with the remembered
    // states, never with the config's alone.
    let book = NodeBook::open(
        common.health.state_file.as_deref(),
        common.health.max_down_share,
    );
    let engine = compile(parts.config, Some(&|c: &Config| book.effective(c)))?;
    let handle = EngineHandle::new(engine);
    let token = AdminToken::load_or_create(&common.token.admin_token)?;
    // Bound before the kernel is touched: a port in use fails the start cleanly.
    let listeners = match parts.dns {
        Some((dns, port)) => Some(crate::fallback::bind(dns, port, parts.xdp.is_some())?),
        None => None,
    };
    let kernel = match &parts.xdp {
        Some(part) => Some(start_kernel(part, &handle.load())?),
        None => None,
    };
    let pins = parts.xdp.as_ref().map(|p| p.pin_dir);
    let stop_kernel = |control: Control| async move {
        control.stop().await;
        if let Some(dir) = pins {
            remove_pins(dir);
        }
    };
    let control = Control::start(handle.clone(), kernel, book.states_fn())?;
    let reloads = Arc::new(ReloadStats::default());
    let health = match crate::health::spawn(&common.health, &control, book).await {
        Ok(h) => h,
        Err(e) => {
            stop_kernel(control).await;
            return Err(e.into());
        }
    };
    // The listeners, before "ready": a port that cannot be bound stops the start, and
    // leaves no pins behind.
    let listening = async {
        let dns = match listeners {
            Some(l) => {
                let (dns, _) = parts.dns.context("listeners without DNS options")?;
                Some(crate::fallback::FallbackServer::start(
                    &control,
                    l,
                    dns.tcp(),
                    Arc::default(),
                )?)
            }
            None => None,
        };
        let (addrs, redirect_args) = parts.redirect;
        let redirect = crate::redirect::start(addrs, redirect_args, &handle).await?;
        let metrics = start_metrics(
            common.metrics,
            MetricsSources {
                control: control.clone(),
                reloads: reloads.clone(),
                health: health.clone(),
                redirect,
                fallback: dns.as_ref().map(|d| d.stats().clone()),
            },
            token,
        )
        .await?;
        anyhow::Ok((dns, metrics))
    }
    .await;
    let (dns, metrics) = match listening {
        Ok(x) => x,
        Err(e) => {
            health.stop();
            stop_kernel(control).await;
            return Err(e);
        }
    };
    let listen: Vec<String> = dns
        .as_ref()
        .map(|d| d.local_addrs().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    tracing::info!(
        config = %parts.config.display(),
        xdp = parts.xdp.is_some(),
        iface = parts.xdp.as_ref().map_or("-", |x| x.iface),
        listen = %listen.join(","),
        metrics = %metrics,
        redirect = ?parts.redirect.0,
        seconds = started.elapsed().as_secs_f64(),
        "geodns ready"
    );

    let reloader = Reloader {
        config: parts.config,
        control: &control,
        health: &health,
        counts: &reloads,
        guard: common.reload,
    };
    let stopped = reloader.until_stopped(signals, common.watch_interval).await;
    drop(dns);
    health.stop();
    if parts.xdp.is_some() {
        tracing::info!("stopping: detaching the XDP program and removing pins");
    } else {
        tracing::info!("stopping");
    }
    stop_kernel(control).await;
    stopped
}

/// What `/metrics` reports.
#[derive(Clone)]
pub struct MetricsSources {
    pub control: Control,
    pub reloads: Arc<ReloadStats>,
    pub health: HealthControl,
    pub redirect: Option<Arc<crate::redirect::RedirectStats>>,
    pub fallback: Option<Arc<crate::fallback::FallbackStats>>,
}

/// Binds the metrics address and serves `/metrics` and the admin API there (on the
/// shared HTTP layer, with its limits and the admin token); returns the bound address
/// (port 0 picks one).
pub async fn start_metrics(
    addr: SocketAddr,
    sources: MetricsSources,
    token: AdminToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let limits = Limits {
        max_connections: METRICS_MAX_CONNECTIONS,
        header_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    };
    let sources = Arc::new(sources);
    crate::http::serve(vec![listener], limits, move |req, peer| {
        let sources = sources.clone();
        let token = token.clone();
        async move {
            let path = req.uri().path();
            if req.method() == Method::GET && path == "/metrics" {
                let mut r = crate::http::text(StatusCode::OK, sources.text());
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                return r;
            }
            if !path.starts_with("/v1/") {
                return crate::http::text(StatusCode::NOT_FOUND, "not found\n".to_owned());
            }
            if let Some(refused) = crate::http::admin_refusal(&token, req.headers()) {
                return refused;
            }
            if req.method() == Method::GET && path == "/v1/table" {
                // `geodns diff --live`: the table the engine answers with (the kernel
                // maps hold the same).
                let engine = sources.control.engine().load();
                let table = tokio::task::spawn_blocking(move || {
                    let config = Some(std::path::PathBuf::from(&engine.config().file));
                    let t = geodns_maps::diff::Table::from_engine(&engine, "live", config);
                    serde_json::to_string(&t)
                })
                .await;
                return match table {
                    Ok(Ok(body)) => crate::http::text(StatusCode::OK, body),
                    _ => crate::http::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "table unavailable\n".to_owned(),
                    ),
                };
            }
            let full = req
                .uri()
                .path_and_query()
                .map_or(path, hyper::http::uri::PathAndQuery::as_str);
            let (code, body) = crate::health::admin_request(
                &sources.health,
                req.method().as_str(),
                full,
                peer.ip(),
            )
            .await;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            crate::http::text(status, body)
        }
    });
    Ok(bound)
}

impl MetricsSources {
    /// The metrics page. Reads only published counts and counters: never waits for an
    /// install in progress.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = metrics_text(&self.control, &self.reloads);
        out.push_str(&self.health.metrics_text());
        if let Some(r) = &self.redirect {
            out.push_str(&r.metrics_text());
        }
        if let Some(f) = &self.fallback {
            out.push_str(&f.metrics_text());
        }
        out
    }
}

/// SIGHUP, SIGUSR1, SIGINT and SIGTERM, taken over first thing at start: a signal that
/// comes while the daemon is still starting waits for the loop and stops it cleanly,
/// rather than killing the process half set up.
pub(crate) struct Signals {
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// Reloads the config and its databases.
struct Reloader<'a> {
    config: &'a Path,
    control: &'a Control,
    health: &'a HealthControl,
    counts: &'a ReloadStats,
    guard: ReloadArgs,
}

impl Reloader<'_> {
    /// Reloads on SIGHUP (SIGUSR1: without the shrink guard) and when the config or one
    /// of its databases changes, until SIGINT or SIGTERM.
    async fn until_stopped(&self, signals: Signals, every: Duration) -> anyhow::Result<()> {
        let Signals {
            mut hup,
            mut usr1,
            mut int,
            mut term,
        } = signals;
        let (_, mut watch) = Watch::read(self.config);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (why, force) = tokio::select! {
                _ = hup.recv() => ("SIGHUP", false),
                _ = usr1.recv() => ("SIGUSR1", true),
                _ = tick.tick() => {
                    if !watch.changed() {
                        continue;
                    }
                    ("file changed", false)
                }
                _ = int.recv() => break,
                _ = term.recv() => break,
            };
            watch = self.reload(why, force).await;
        }
        Ok(())
    }

    /// Compiles in the background; on success hands the engine to the control thread;
    /// on failure leaves everything as it was and counts it. Returns the files as
    /// they were read.
    async fn reload(&self, why: &str, force: bool) -> Watch {
        let started = Instant::now();
        let (config, watch) = Watch::read(self.config);
        let failed = |error: String| {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(trigger = why, error = %error, "reload failed; the running maps stay");
        };
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                failed(format!("{e:#}"));
                return watch;
            }
        };
        let health = self.health.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            compile_config(config, Some(&|c: &Config| health.states_for(c)))
        })
        .await;
        let engine = match compiled {
            Ok(Ok(engine)) => {
                crate::fallback::update::carry_serial(&self.control.engine().load(), engine)
            }
            Ok(Err(e)) => {
                failed(format!("{e:#}"));
                return watch;
            }
            Err(e) => {
                failed(e.to_string());
                return watch;
            }
        };
        let max_drop = f64::from(self.guard.max_shrink) / 100.0;
        let current = self.control.engine().load();
        let shrink = engine
            .compiled()
            .stats()
            .shrink_from(current.compiled().stats(), max_drop);
        if let Some(shrink) = shrink.filter(|_| !force && !self.guard.force_reload) {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                trigger = why,
                what = shrink.what,
                old = shrink.old,
                new = shrink.new,
                max_shrink_percent = self.guard.max_shrink,
                "reload refused: {shrink}, more than --max-shrink allows; the running maps stay (SIGUSR1 reloads once without this check)"
            );
            return watch;
        }
        if let Err(e) = self.control.install(engine).await {
            failed(format!("installing the maps: {e}"));
            return watch;
        }
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counts.last_us.store(us, Ordering::Relaxed);
        self.counts.ok.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            trigger = why,
            seconds = started.elapsed().as_secs_f64(),
            "reloaded"
        );
        watch
    }
}

fn if_index(iface: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(iface).context("interface name")?;
    // SAFETY: a valid C string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        bail!("no interface named {iface}");
    }
    Ok(idx)
}

/// The daemon's own lines of the metrics page.
#[must_use]
pub fn metrics_text(control: &Control, reloads: &ReloadStats) -> String {
    let mut out = String::new();
    let counts = control.counts();
    if let Some(counters) = control.xdp_counters() {
        if let Ok(counters) = counters {
            let _ = writeln!(
                out,
                "# HELP geodns_xdp_packets_total XDP outcomes, summed over CPUs."
            );
            let _ = writeln!(out, "# TYPE geodns_xdp_packets_total counter");
            for (i, v) in counters.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "geodns_xdp_packets_total{{outcome=\"{}\"}} {v}",
                    counter::NAMES[i]
                );
            }
        }
        let _ = writeln!(out, "# TYPE geodns_xdp_generation gauge");
        let _ = writeln!(out, "geodns_xdp_generation {}", counts.generation);
    }
    let _ = writeln!(out, "# TYPE geodns_map_entries gauge");
    for (name, n) in [
        ("prefixes_v4", counts.prefixes_v4),
        ("prefixes_v6", counts.prefixes_v6),
        ("names", counts.names),
        ("answers", counts.answers),
    ] {
        let _ = writeln!(out, "geodns_map_entries{{map=\"{name}\"}} {n}");
    }
    let _ = writeln!(out, "# TYPE geodns_reloads_total counter");
    for (result, n) in [
        ("ok", &reloads.ok),
        ("failed", &reloads.failed),
        ("refused_shrink", &reloads.refused),
    ] {
        let _ = writeln!(
            out,
            "geodns_reloads_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE geodns_reload_last_seconds gauge");
    #[expect(clippy::cast_precision_loss, reason = "microseconds")]
    let last = reloads.last_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "geodns_reload_last_seconds {last}");
    let _ = writeln!(out, "# TYPE geodns_node_up gauge");
    for (node, state) in control.engine().load().states().iter() {
        let up = u8::from(matches!(state, geodns_maps::NodeState::Up));
        let _ = writeln!(
            out,
            "geodns_node_up{{node=\"{node}\",state=\"{state:?}\"}} {up}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The regression of a reload that missed a change: the files are noted before the
    /// compile, so one replaced while it runs is seen at the next look.
    #[test]
    fn a_file_replaced_during_a_compile_is_seen_afterwards() {
        let dir = std::env::temp_dir().join(format!("geodns-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let dbs = geodns_maps::mmdb::demo::databases().expect("demo databases");
        for (name, bytes) in &dbs {
            std::fs::write(dir.join(name), bytes).expect("database");
        }
        let asn = dir.join("demo-asn.mmdb");
        let config = dir.join("geodns.toml");
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml"),
        )
        .expect("demo config");
        std::fs::write(&config, text).expect("config");
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        std::fs::copy(examples.join("demo.zone"), dir.join("demo.zone")).expect("zone file");
        let (parsed, watch) = Watch::read(&config);
        parsed.expect("the demo config reads");
        assert!(!watch.changed());
        // "During the compile": the second database is replaced (a new file renamed
        // over it, as geoipupdate does).
        let tmp = dir.join("demo-asn.mmdb.new");
        std::fs::write(&tmp, &dbs[1].1).expect("new asn");
        std::fs::rename(&tmp, &asn).expect("rename");
        assert!(
            watch.changed(),
            "the replaced file is noticed after the compile"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
