//! `geodns run` and `geodns redirect`: one daemon made of optional parts.
//!
//! Every daemon has the control thread ([`crate::control`]: the only writer of the
//! engine and the kernel maps), node health ([`crate::health`]), reloads, and the
//! metrics/admin HTTP server; `geodns run` adds the XDP program and the DNS server,
//! either of them may add the HTTP redirector. A reload compiles on a blocking thread
//! while the old maps serve and hands the engine to the control thread, which installs
//! it into the idle generation and flips: a bad file changes nothing and is counted.
pub mod handover;
mod metrics;
pub(crate) mod reload;

pub use metrics::{metrics_text, serve_metrics, start_metrics, MetricsSources, XdpInfo};
pub use reload::{compile, compile_config};
use reload::{Reloader, Stop};

use std::{
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
    control::{Control, ControlError, EngineHandle, JournalMark},
    fleet::ConfigPush,
    health::{HealthControl, NodeBook},
    http::{AdminToken, Limits},
    loader::{xdp_mode, KernelProgram, LoadOptions},
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
    pub dns: crate::authoritative::ServerArgs,
    /// Where the maps are pinned for `geodns stats` (on a BPF filesystem). Only the
    /// names geodns pins there are ever removed.
    #[arg(long, default_value = "/sys/fs/bpf/geodns")]
    pub pin_dir: PathBuf,
    /// On SIGTERM/SIGINT, leave the XDP program attached and its maps pinned: the kernel
    /// keeps answering what it can from the last table until the next `geodns run`
    /// adopts it (without this, a stop detaches and unpins).
    #[arg(long)]
    pub keep_on_exit: bool,
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
    #[command(flatten)]
    pub fleet: crate::fleet::FleetArgs,
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
    keep_on_exit: bool,
}

/// Which parts a daemon runs.
struct Parts<'a> {
    config: &'a Path,
    common: &'a CommonArgs,
    xdp: Option<XdpPart<'a>>,
    dns: Option<(&'a crate::authoritative::ServerArgs, u16)>,
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
            keep_on_exit: args.keep_on_exit,
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

/// Loads and fills the XDP program; nothing is attached yet ([`attach_kernel`]).
fn load_kernel(part: &XdpPart<'_>, engine: &Engine) -> anyhow::Result<KernelProgram> {
    let options = LoadOptions {
        dns_port: part.dns_port,
        ..LoadOptions::default()
    };
    let options = crate::defence::load_options(options, engine.config(), part.iface)
        .with_context(|| format!("reading the addresses of {}", part.iface))?;
    let mut xdp = KernelProgram::load(&options)?;
    xdp.install(&crate::authoritative::kernel::kernel_maps(engine))?;
    Ok(xdp)
}

/// Attaches the loaded program through the pinned link (a new link, or the program of
/// an earlier daemon's link replaced in one update) and pins the maps in place of the
/// earlier daemon's: the last step of a start that can fail.
async fn attach_kernel(control: &Control, part: &XdpPart<'_>) -> anyhow::Result<XdpInfo> {
    let if_index = if_index(part.iface)?;
    ensure_bpffs()?;
    std::fs::create_dir_all(part.pin_dir)
        .with_context(|| format!("creating the pin directory {}", part.pin_dir.display()))?;
    let dir = part.pin_dir.to_path_buf();
    let mode = xdp_mode(part.mode == XdpModeArg::Skb);
    let attached = control
        .with_kernel(move |k| {
            let attachment = k.attach_pinned(if_index, mode, &dir)?;
            // The earlier daemon's map pins (or a crashed run's) make way for ours; only
            // `geodns stats` and the next daemon read them.
            remove_pins(&dir);
            if let Err(e) = k.pin(&dir) {
                tracing::error!(error = %e, dir = %dir.display(), "maps not pinned: `geodns stats` and the next daemon cannot read them");
            }
            anyhow::Ok(attachment)
        })
        .await
        .context("the control thread stopped")?
        .with_context(|| format!("attaching to {}", part.iface))?;
    if let Some(p) = attached.previous {
        tracing::info!(
            pid = p.pid,
            heartbeat_age_seconds = p.beat_age.as_secs_f64(),
            passed_without_daemon = p.passed_no_daemon,
            "adopted the pinned XDP link (its program replaced in one update)"
        );
    }
    Ok(XdpInfo {
        how: attached.how,
        previous_passed_no_daemon: attached.previous.map_or(0, |p| p.passed_no_daemon),
    })
}

/// Beats into the program's `DAEMON` map every second, on a thread of its own (an
/// install on the control thread takes seconds).
fn start_heartbeat(mut beat: crate::loader::Heartbeat) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("geodns-heartbeat".to_owned())
        .spawn(move || loop {
            if let Err(e) = beat.beat() {
                tracing::warn!(error = %e, "heartbeat not written");
            }
            std::thread::sleep(Duration::from_secs(1));
        })?;
    Ok(())
}

/// The redirector's listeners: those handed over, else new ones.
async fn redirect_listeners(
    addrs: &[SocketAddr],
    handed: Option<&mut handover::Taken>,
) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    let mut handed = handed;
    for a in addrs {
        let inherited = handed
            .as_deref_mut()
            .and_then(|t| t.take(handover::Role::Redirect, Some(*a)).pop());
        out.push(match inherited {
            Some((_, fd)) => {
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)?
            }
            None => TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the redirector address {a}"))?,
        });
    }
    Ok(out)
}

/// The metrics listener: the one handed over, else a new one.
async fn metrics_listener(
    addr: SocketAddr,
    handed: Option<&mut handover::Taken>,
) -> anyhow::Result<TcpListener> {
    if let Some((_, fd)) = handed.and_then(|t| t.take(handover::Role::Metrics, Some(addr)).pop()) {
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        return Ok(TcpListener::from_std(l)?);
    }
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))
}

#[expect(
    clippy::too_many_lines,
    reason = "the start and stop sequence, read top to bottom"
)]
async fn serve(parts: Parts<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    let common = parts.common;
    let signals = Signals::install()?;
    // A daemon serving on the same pin directory hands over its sockets and node states
    // (it keeps serving until this one is ready; if this one fails, it goes on).
    let handover_path = parts.xdp.as_ref().map(|x| handover::socket_path(x.pin_dir));
    let mut handed = match &handover_path {
        Some(path) => handover::take(path)?,
        None => None,
    };
    // The state file first: the first install already answers with the remembered
    // states, never with the config's alone. A handing-over daemon's are newer.
    let book = NodeBook::open(
        common.health.state_file.as_deref(),
        common.health.max_down_share,
    );
    if let Some(t) = &handed {
        book.adopt(&t.states);
    }
    let states = |c: &Config| book.effective(c);
    // A fleet box starts on the fleet's newest config when it compiles here.
    let engine = match crate::fleet::first_engine(&common.fleet, parts.config, &states).await {
        Some(engine) => engine,
        None => compile(parts.config, Some(&states))?,
    };
    let handle = EngineHandle::new(engine);
    // Without a token (a user who cannot write the token file's directory, e.g. an
    // unprivileged `--no-xdp` run) the daemon still serves; only the admin API is off.
    let token = match AdminToken::load_or_create(&common.token.admin_token) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the admin API is off: no admin token (--admin-token)");
            None
        }
    };
    // Every listening socket is kept (a copy) for the next daemon.
    let kept = handover::Kept::default();
    // Bound (or handed over) before the kernel is touched: a port in use fails the start
    // cleanly.
    let listeners = match (parts.dns, handed.as_mut()) {
        (Some(_), Some(t)) => Some(t.dns_listeners()?),
        (Some((dns, port)), None) => {
            Some(crate::authoritative::bind(dns, port, parts.xdp.is_some())?)
        }
        (None, _) => None,
    };
    for l in listeners.iter().flatten() {
        for (tcp, fd) in l.dup_sockets()? {
            let role = if tcp {
                handover::Role::DnsTcp
            } else {
                handover::Role::DnsUdp
            };
            kept.keep(role, l.local_addr(), fd);
        }
    }
    let kernel = match &parts.xdp {
        Some(part) => Some(load_kernel(part, &handle.load())?),
        None => None,
    };
    let heartbeat = kernel.as_ref().map(KernelProgram::heartbeat).transpose()?;
    let control = Control::start(handle.clone(), kernel, book.states_fn())?;
    let reloads = Arc::new(ReloadStats::default());
    let snapshot_book = book.clone();
    let mut health_args = common.health.clone();
    health_args.box_name.clone_from(&common.fleet.box_name);
    let fleet_book = book.clone();
    let health = match crate::health::spawn(&health_args, &control, book).await {
        Ok(h) => h,
        Err(e) => {
            control.stop().await;
            return Err(e.into());
        }
    };
    // New config revisions of the fleet go to the reloader below.
    let (push_tx, push_rx) = tokio::sync::mpsc::channel::<ConfigPush>(4);
    let fleet = crate::fleet::start(&common.fleet, parts.config, &control, &fleet_book, push_tx);
    // The listeners, before "ready": a port that cannot be bound stops the start. Nothing
    // is attached or pinned yet, so a failed start leaves an earlier daemon serving.
    let listening = async {
        let dns = match listeners {
            Some(l) => {
                let (dns, _) = parts.dns.context("listeners without DNS options")?;
                Some(crate::authoritative::DnsServer::start(
                    &control,
                    l,
                    dns.tcp(),
                    Arc::default(),
                )?)
            }
            None => None,
        };
        let (addrs, redirect_args) = parts.redirect;
        let redirect_listeners = redirect_listeners(addrs, handed.as_mut()).await?;
        for l in &redirect_listeners {
            kept.keep_dup(handover::Role::Redirect, l.local_addr()?, l)?;
        }
        let redirect = crate::redirect::start_on(redirect_listeners, redirect_args, &handle)?;
        let metrics_listener = metrics_listener(common.metrics, handed.as_mut()).await?;
        kept.keep_dup(
            handover::Role::Metrics,
            metrics_listener.local_addr()?,
            &metrics_listener,
        )?;
        let metrics = serve_metrics(
            metrics_listener,
            MetricsSources {
                control: control.clone(),
                reloads: reloads.clone(),
                health: health.clone(),
                redirect,
                dns: dns.as_ref().map(|d| d.stats().clone()),
                xdp: Arc::default(),
                fleet: fleet.clone(),
            },
            token,
        )?;
        anyhow::Ok((dns, metrics))
    }
    .await;
    let (dns, (metrics, sources)) = match listening {
        Ok(x) => x,
        Err(e) => {
            if let Some(f) = &fleet {
                f.stop().await;
            }
            health.stop();
            control.stop().await;
            return Err(e);
        }
    };
    // Attach last: from here on the kernel runs this daemon's program.
    if let Some(part) = &parts.xdp {
        match attach_kernel(&control, part).await {
            Ok(info) => {
                *sources
                    .xdp
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(info);
            }
            Err(e) => {
                drop(dns);
                if let Some(f) = &fleet {
                    f.stop().await;
                }
                health.stop();
                control.stop().await;
                return Err(e);
            }
        }
    }
    if let Some(beat) = heartbeat {
        start_heartbeat(beat)?;
    }
    if let Some(t) = handed.take() {
        let (pid, version) = (t.pid, t.version.clone());
        // This daemon serves already: a previous daemon that went away on its own (a
        // SIGTERM during the handover) is no reason to stop.
        match tokio::task::spawn_blocking(move || t.finish()).await? {
            Ok(took) => tracing::info!(
                pid,
                version = %version,
                seconds = took.as_secs_f64(),
                "handover done: the previous daemon has exited"
            ),
            Err(e) => tracing::warn!(
                pid,
                error = %format!("{e:#}"),
                "the previous daemon did not take part in the end of the handover"
            ),
        }
    }
    let handing_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    if let Some(path) = &handover_path {
        let book = snapshot_book.clone();
        if let Err(e) = handover::listen(
            path,
            kept.clone(),
            move || book.snapshot(),
            handing_over.clone(),
            done_tx,
        ) {
            tracing::warn!(error = %format!("{e:#}"), "no handover socket: a restart will not be seamless");
        }
    }
    let listen: Vec<String> = dns
        .as_ref()
        .map(|d| d.local_addrs().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    tracing::info!(
        version = crate::version::LONG,
        config = %parts.config.display(),
        xdp = parts.xdp.is_some(),
        iface = parts.xdp.as_ref().map_or("-", |x| x.iface),
        listen = %listen.join(","),
        metrics = %metrics,
        redirect = ?parts.redirect.0,
        generation = control.counts().generation,
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
    let pushes = fleet.is_some().then_some(push_rx);
    let stopped = reloader
        .until_stopped(signals, common.watch_interval, done_rx, pushes)
        .await?;
    let handed_over =
        stopped == Stop::HandedOver || handing_over.load(std::sync::atomic::Ordering::SeqCst);
    match dns {
        // The next daemon reads the same sockets: answer what is in flight, then go.
        Some(d) if handed_over => d.drain().await,
        d => drop(d),
    }
    if let Some(f) = &fleet {
        f.stop().await;
    }
    health.stop();
    snapshot_book.save_if_dirty();
    match &parts.xdp {
        Some(_) if handed_over => {
            tracing::info!(
                "handed over: exiting, the program and pins now belong to the new daemon"
            );
            // Emptied before the process lets go of the maps (see `empty_tries`).
            let started = Instant::now();
            if let Some(Err(e)) = control.with_kernel(KernelProgram::empty_tries).await {
                tracing::warn!(error = %e, "the old tries were not emptied before exit");
            }
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                "old tries emptied"
            );
            control.stop().await;
        }
        Some(part) if part.keep_on_exit => {
            tracing::info!("stopping (--keep-on-exit): the XDP program stays attached and answers from the last maps");
            control.stop().await;
            if let Some(path) = &handover_path {
                let _ = std::fs::remove_file(path);
            }
        }
        Some(part) => {
            tracing::info!("stopping: detaching the XDP program and removing pins");
            let dir = part.pin_dir.to_path_buf();
            control.with_kernel(move |k| k.detach_pinned(&dir)).await;
            control.stop().await;
            remove_pins(part.pin_dir);
            if let Some(path) = &handover_path {
                let _ = std::fs::remove_file(path);
            }
        }
        None => {
            tracing::info!("stopping");
            control.stop().await;
        }
    }
    Ok(())
}

/// SIGHUP, SIGUSR1, SIGINT and SIGTERM, handed over first thing at start: a signal that
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

fn if_index(iface: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(iface).context("interface name")?;
    // SAFETY: a valid C string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        bail!("no interface named {iface}");
    }
    Ok(idx)
}
