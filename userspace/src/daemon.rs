//! `geodns run`: compile, load, attach, serve; reload in the background; metrics.
//!
//! The XDP side lives here; the userspace fallback server ([`crate::fallback`]) answers
//! on `--listen` with [`EngineHandle`], the engine every answer in userspace is decided
//! with. A reload compiles on a blocking thread while the old maps serve, installs the
//! new kernel maps into the idle generation and flips it with one update, then swaps
//! the engine: a bad file changes nothing and is counted.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use geodns_common::counter;
use geodns_maps::{Compiled, Config, Engine, NodeStates};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};

use crate::loader::{xdp_mode, LoadOptions, XdpDns};

/// The engine in use, shared by everything that answers in userspace; swapped whole
/// on a reload.
#[derive(Clone)]
pub struct EngineHandle(Arc<RwLock<Arc<Engine>>>);

impl EngineHandle {
    #[must_use]
    pub fn new(engine: Engine) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(engine))))
    }

    /// The current engine (cheap: an `Arc` clone).
    #[must_use]
    pub fn load(&self) -> Arc<Engine> {
        self.0
            .read()
            .map_or_else(|e| e.into_inner().clone(), |g| g.clone())
    }

    pub fn store(&self, engine: Engine) {
        let mut guard = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(engine);
    }
}

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
    /// Address of the HTTP endpoint serving `GET /metrics` (Prometheus text format).
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub metrics: SocketAddr,
    /// Where the maps are pinned for `geodns stats` (on a BPF filesystem).
    #[arg(long, default_value = "/sys/fs/bpf/geodns")]
    pub pin_dir: PathBuf,
    /// How often the config and database files are checked for changes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub watch_interval: Duration,
    #[command(flatten)]
    pub health: crate::health::HealthArgs,
    /// Also serve the HTTP redirector (as `geodns redirect` does) on ADDR, from the
    /// same engine and node states (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub redirect_listen: Vec<SocketAddr>,
    #[command(flatten)]
    pub redirect: crate::redirect::RedirectArgs,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected e.g. 500ms, 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        _ => Err(format!("`{s}`: unit must be ms or s")),
    }
}

/// Reload outcomes, for `/metrics`.
#[derive(Default)]
pub struct ReloadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Duration of the last successful reload, in microseconds.
    pub last_us: AtomicU64,
}

/// Compiles `path` into an engine with the node states `states` gives for its config
/// (the config's own without it).
pub fn compile(
    path: &Path,
    states: Option<&dyn Fn(&Config) -> NodeStates>,
) -> anyhow::Result<Engine> {
    let config = Config::from_path(path)?;
    let compiled = Compiled::build(&config, &mut |_| {})
        .with_context(|| format!("compiling {}", path.display()))?;
    let states = states.map_or_else(|| NodeStates::from_config(&config), |f| f(&config));
    Ok(Engine::new(Arc::new(config), Arc::new(compiled), &states))
}

/// The files whose change triggers a reload: the config, its databases, the zone file
/// and the files it includes.
fn watched_files(engine: &Engine, config: &Path) -> Vec<PathBuf> {
    let mut files = vec![config.to_path_buf()];
    let c = engine.config();
    let dbs = c
        .geoip
        .iter()
        .flat_map(|g| g.country.iter().chain(&g.asn).chain(&g.city));
    for f in dbs.chain(&c.statics.files) {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    files
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
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

pub fn run(args: &Args) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(args))
}

async fn run_async(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let signals = Signals::install()?;
    let engine = compile(&args.config, None)?;
    let handle = EngineHandle::new(engine);
    // Bound before the kernel is touched: a port in use fails the start cleanly.
    let listeners = crate::fallback::bind(&args.dns, args.dns_port, !args.no_xdp)?;
    let xdp = if args.no_xdp {
        None
    } else {
        let iface = args
            .iface
            .as_deref()
            .context("--iface IFACE is required (or --no-xdp to serve from userspace only)")?;
        let if_index = if_index(iface)?;
        let mut xdp = XdpDns::load(&LoadOptions {
            dns_port: args.dns_port,
            ..LoadOptions::default()
        })?;
        xdp.install(&handle.load().kernel_maps())?;
        xdp.attach(if_index, xdp_mode(args.xdp_mode == XdpModeArg::Skb))
            .with_context(|| format!("attaching to {iface}"))?;
        ensure_bpffs()?;
        // A crashed run may have left pins: they would stop this one.
        let _ = std::fs::remove_dir_all(&args.pin_dir);
        if let Err(e) = xdp.pin(&args.pin_dir) {
            let _ = std::fs::remove_dir_all(&args.pin_dir);
            return Err(e)
                .with_context(|| format!("pinning maps under {}", args.pin_dir.display()));
        }
        Some(Arc::new(Mutex::new(xdp)))
    };
    let reloads = Arc::new(ReloadStats::default());
    let health = crate::health::spawn(&args.health, handle.clone(), xdp.clone())?;
    // The listeners, before "ready": a port that cannot be bound stops the start, and
    // leaves no pins behind.
    let listening = async {
        let dns = crate::fallback::FallbackServer::start(
            &handle,
            listeners,
            args.dns.tcp(),
            Arc::default(),
        )?;
        let redirect =
            crate::redirect::start(&args.redirect_listen, &args.redirect, &handle).await?;
        let metrics = start_metrics(
            args.metrics,
            &handle,
            xdp.as_ref(),
            &reloads,
            &health,
            redirect.as_ref(),
            Some(dns.stats()),
        )
        .await?;
        anyhow::Ok((dns, metrics))
    }
    .await;
    let (dns, metrics) = match listening {
        Ok(x) => x,
        Err(e) => {
            health.stop();
            if xdp.is_some() {
                drop(xdp);
                let _ = std::fs::remove_dir_all(&args.pin_dir);
            }
            return Err(e);
        }
    };
    let listen: Vec<String> = dns.local_addrs().iter().map(ToString::to_string).collect();
    tracing::info!(
        config = %args.config.display(),
        xdp = !args.no_xdp,
        iface = args.iface.as_deref().unwrap_or("-"),
        listen = %listen.join(","),
        metrics = %metrics,
        redirect = ?args.redirect_listen,
        seconds = started.elapsed().as_secs_f64(),
        "geodns ready"
    );

    let stopped = reload_until_stopped(
        signals,
        &args.config,
        args.watch_interval,
        &handle,
        xdp.as_ref(),
        &reloads,
        &health,
    )
    .await;
    drop(dns);
    health.stop();
    if let Some(xdp) = xdp {
        tracing::info!("stopping: detaching the XDP program and removing pins");
        drop(xdp);
        // Only our own pins: with --no-xdp the directory may be another daemon's.
        let _ = std::fs::remove_dir_all(&args.pin_dir);
    } else {
        tracing::info!("stopping");
    }
    stopped
}

/// Binds the metrics address and serves `/metrics` and the admin API there; returns
/// the bound address (port 0 picks one).
pub(crate) async fn start_metrics(
    addr: SocketAddr,
    handle: &EngineHandle,
    xdp: Option<&Arc<Mutex<XdpDns>>>,
    reloads: &Arc<ReloadStats>,
    health: &crate::health::HealthControl,
    redirect: Option<&Arc<crate::redirect::RedirectStats>>,
    fallback: Option<&Arc<crate::fallback::FallbackStats>>,
) -> anyhow::Result<SocketAddr> {
    let metrics = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = metrics.local_addr().unwrap_or(addr);
    tokio::spawn(serve_metrics(
        metrics,
        handle.clone(),
        xdp.cloned(),
        reloads.clone(),
        health.clone(),
        redirect.cloned(),
        fallback.cloned(),
    ));
    Ok(bound)
}

/// SIGHUP, SIGINT and SIGTERM, taken over first thing at start: a signal that comes
/// while the daemon is still starting waits for the loop and stops it cleanly, rather
/// than killing the process half set up.
pub(crate) struct Signals {
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// Reloads on SIGHUP and when the config or one of its databases changes, until
/// SIGINT or SIGTERM.
pub(crate) async fn reload_until_stopped(
    signals: Signals,
    config: &Path,
    watch_interval: Duration,
    handle: &EngineHandle,
    xdp: Option<&Arc<Mutex<XdpDns>>>,
    reloads: &ReloadStats,
    health: &crate::health::HealthControl,
) -> anyhow::Result<()> {
    let Signals {
        mut hup,
        mut int,
        mut term,
    } = signals;
    let mut files = watched_files(&handle.load(), config);
    let mut seen = mtimes(&files);
    let mut tick = tokio::time::interval(watch_interval);
    loop {
        let why = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = tick.tick() => {
                if mtimes(&files) == seen {
                    continue;
                }
                "file changed"
            }
            _ = int.recv() => break,
            _ = term.recv() => break,
        };
        reload(config, handle, xdp, reloads, health, why).await;
        files = watched_files(&handle.load(), config);
        seen = mtimes(&files);
    }
    Ok(())
}

/// Compiles in the background; on success swaps the kernel generation and the
/// engine; on failure leaves everything as it was and counts it.
async fn reload(
    config: &Path,
    handle: &EngineHandle,
    xdp: Option<&Arc<Mutex<XdpDns>>>,
    counts: &ReloadStats,
    health: &crate::health::HealthControl,
    why: &str,
) {
    let started = Instant::now();
    let path = config.to_path_buf();
    // Node states from health and admin, for the new config's nodes too.
    let wanted = health.clone();
    let compiled = tokio::task::spawn_blocking(move || {
        compile(&path, Some(&|c: &Config| wanted.states_for(c)))
    })
    .await;
    let engine = match compiled {
        Ok(Ok(engine)) => crate::fallback::update::carry_serial(&handle.load(), engine),
        Ok(Err(e)) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(trigger = why, error = %format!("{e:#}"), "reload failed; the running maps stay");
            return;
        }
        Err(e) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(trigger = why, error = %e, "reload failed; the running maps stay");
            return;
        }
    };
    // Install and swap with node-state changes held off (and under the XDP lock, which
    // `health::apply` holds from reading the engine to rewriting the live generation):
    // a change never writes the old engine's answer sets into the new generation, nor
    // stores the old engine over the new one.
    let held = health.hold();
    let mut guard = xdp.map(|x| x.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    if let Some(xdp) = guard.as_deref_mut() {
        if let Err(e) = xdp.install(&engine.kernel_maps()) {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(trigger = why, error = %e, "reload failed installing the maps; the running generation stays");
            return;
        }
    }
    handle.store(engine);
    drop(guard);
    drop(held);
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    counts.last_us.store(us, Ordering::Relaxed);
    counts.ok.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        trigger = why,
        seconds = started.elapsed().as_secs_f64(),
        "reloaded"
    );
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

/// Minimal HTTP/1.1: `GET /metrics` in the Prometheus text format, the node admin API
/// under `/v1/` (`health::admin_request`), 404 otherwise.
async fn serve_metrics(
    listener: TcpListener,
    handle: EngineHandle,
    xdp: Option<Arc<Mutex<XdpDns>>>,
    reloads: Arc<ReloadStats>,
    health: crate::health::HealthControl,
    redirect: Option<Arc<crate::redirect::RedirectStats>>,
    fallback: Option<Arc<crate::fallback::FallbackStats>>,
) {
    loop {
        let Ok((mut sock, peer)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        let xdp = xdp.clone();
        let reloads = reloads.clone();
        let health = health.clone();
        let redirect = redirect.clone();
        let fallback = fallback.clone();
        tokio::spawn(async move {
            // The request line may come in several segments: read up to the end of the
            // head (or 2 KiB, or 5 s).
            let mut buf = [0u8; 2048];
            let mut n = 0;
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(got) => n += got,
                    }
                }
            })
            .await;
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut request = head.split_whitespace();
            let (method, path) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
            let (status, body) = if method == "GET" && path == "/metrics" {
                let mut text = metrics_text(&handle, xdp.as_deref(), &reloads);
                text.push_str(&health.metrics_text());
                if let Some(r) = &redirect {
                    text.push_str(&r.metrics_text());
                }
                if let Some(f) = &fallback {
                    text.push_str(&f.metrics_text());
                }
                ("200 OK", text)
            } else if path.starts_with("/v1/") {
                let (code, body) = crate::health::admin_request(&health, method, path, peer.ip());
                let status = match code {
                    200 => "200 OK",
                    400 => "400 Bad Request",
                    403 => "403 Forbidden",
                    405 => "405 Method Not Allowed",
                    _ => "404 Not Found",
                };
                (status, body)
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// The metrics page.
#[must_use]
pub fn metrics_text(
    handle: &EngineHandle,
    xdp: Option<&Mutex<XdpDns>>,
    reloads: &ReloadStats,
) -> String {
    let mut out = String::new();
    if let Some(xdp) = xdp {
        let xdp = xdp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(counters) = xdp.counters() {
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
        let _ = writeln!(out, "geodns_xdp_generation {}", xdp.generation());
    }
    let engine = handle.load();
    let maps = engine.kernel_maps();
    let _ = writeln!(out, "# TYPE geodns_map_entries gauge");
    for (name, n) in [
        ("prefixes_v4", maps.prefixes_v4.len()),
        ("prefixes_v6", maps.prefixes_v6.len()),
        ("names", maps.names.len()),
        ("answers", maps.answers.len()),
    ] {
        let _ = writeln!(out, "geodns_map_entries{{map=\"{name}\"}} {n}");
    }
    let _ = writeln!(out, "# TYPE geodns_reloads_total counter");
    let _ = writeln!(
        out,
        "geodns_reloads_total{{result=\"ok\"}} {}",
        reloads.ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "geodns_reloads_total{{result=\"failed\"}} {}",
        reloads.failed.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# TYPE geodns_reload_last_seconds gauge");
    #[expect(clippy::cast_precision_loss, reason = "microseconds")]
    let last = reloads.last_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "geodns_reload_last_seconds {last}");
    let _ = writeln!(out, "# TYPE geodns_node_up gauge");
    for (node, state) in engine.states().iter() {
        let up = u8::from(matches!(state, geodns_maps::NodeState::Up));
        let _ = writeln!(
            out,
            "geodns_node_up{{node=\"{node}\",state=\"{state:?}\"}} {up}"
        );
    }
    out
}
