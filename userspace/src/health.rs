//! Node health: active checks with hysteresis, admin overrides, and applying a change of
//! node state to the live engine and the kernel's answer sets.
//!
//! # Checks
//!
//! Every node with a `check` target gets one task. A target `host:port` is checked with a
//! TCP connect; `http://host[:port]/path` (or `https://`) with a `GET` whose status must
//! fall in `--check-status` (default `200-399`). Each check has `--check-timeout` (default
//! 5 s) for connecting and reading the status line, and runs every `--check-interval`
//! (default 10 s). `--fall` consecutive failures (default 3) take a node down and
//! `--rise` consecutive successes (default 2) bring it back. Interval and timeout are
//! gdnsd's defaults for its `http_status` and `tcp_connect` monitors; gdnsd's
//! thresholds are a decaying score rather than counts, so rise and fall take
//! `HAProxy`'s defaults, which count results in a row. HTTPS checks verify the
//! certificate against the URL's host with the Mozilla roots plus `--check-ca`.
//!
//! # Warm start
//!
//! A node starts in its configured state: `up`, unless the config gives it an `admin`
//! state, or `--state-file` remembers it. A check can only take it down after `fall`
//! checks have completed and failed, so a restart never starts with every node down
//! (the cold-start outage `PowerDNS` users reported with checks that start "down").
//! The state file (JSON: `{"health": {node: "up"|"down"}, "admin": {node: state}}`)
//! is rewritten on every change and read at start; a missing or unreadable one is
//! logged and ignored.
//!
//! # The state a node is answered with
//!
//! The first of: the runtime admin state (`geodns node NAME up|down|drain`; `auto`
//! removes it), the config's `admin`, the health checks (nodes without a `check` are
//! `up`). `drain` takes a healthy node out of new answers, like `down`.
//!
//! # Applying a change
//!
//! [`apply`] derives the engine for the new states from the one in use
//! ([`Engine::with_states`]: same config, same compiled prefixes), compares the kernel
//! answer sets of both and rewrites only the entries that differ in the generation the
//! kernel reads ([`XdpDns::update_answers`]; each entry update is atomic for readers).
//! The prefix and name maps are never touched. Then the engine is swapped, so userspace
//! answers change at the same time. A (record, region) with no up candidate loses its
//! entry: the kernel passes those queries and userspace answers them from the
//! `[fallback]` nodes by weighted round robin. When every fallback node is down too,
//! they are used anyway (fail open), and counted (`Engine::fail_open_count`).
//!
//! Geo answer TTLs are not lowered while a node flaps: rise and fall already keep a
//! flapping node out of (or in) the answers for whole intervals.
//!
//! # Admin API
//!
//! [`admin_request`] serves `/v1/` on the daemon's metrics address: `GET /v1/nodes`,
//! `GET /v1/node/NAME`, `POST /v1/node/NAME/{up,down,drain,auto}` (from loopback only).
//! `geodns node` is its client. A change is in the maps before the response is sent,
//! and logged with one line.
//!
//! Checks report to one reconcile task, which applies a change as soon as it happens;
//! it also looks once a second whether the engine in use (swapped by a reload) holds the
//! states wanted, and starts or stops checks for nodes the new config added or removed.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use geodns_common::{AnswerKey, AnswerSet};
use geodns_maps::{Config, Engine, NodeState, NodeStates};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::Notify,
    task::AbortHandle,
};

use crate::{
    daemon::EngineHandle,
    loader::{LoaderError, XdpDns},
};

/// How often the reconcile task looks at the engine in use even when nothing reported:
/// a reload swaps the engine, and a change must be in the maps within one second.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Bytes read to find the status line of an HTTP response.
const STATUS_LINE_MAX: usize = 1024;

/// Errors of the health module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    #[error("check target `{target}`: {reason}")]
    Target {
        target: String,
        reason: &'static str,
    },
    #[error("state file {path}: {op}: {source}")]
    StateFile {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path}: {source}")]
    StateFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("check CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("applying node states: {0}")]
    Apply(#[from] LoaderError),
}

/// Why one check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("HTTP status {0} outside the expected range")]
    Status(u16),
    #[error("not an HTTP response")]
    BadResponse,
}

/// Accepted HTTP statuses, inclusive: `200-399` or a single `200`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    #[must_use]
    pub fn contains(self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl Default for StatusRange {
    fn default() -> Self {
        Self {
            low: 200,
            high: 399,
        }
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: expected a status or a range such as 200-399");
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let low: u16 = lo.trim().parse().map_err(|_| bad())?;
        let high: u16 = hi.trim().parse().map_err(|_| bad())?;
        if !(100..=599).contains(&low) || !(low..=599).contains(&high) {
            return Err(bad());
        }
        Ok(Self { low, high })
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// `500ms`, `2s` or `2` (seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected e.g. 500ms, 2s"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        _ => return Err(format!("`{s}`: unit must be ms or s")),
    };
    if d.is_zero() {
        return Err(format!("`{s}`: must be more than 0"));
    }
    Ok(d)
}

fn at_least_one(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}`: expected a whole number of at least 1")),
    }
}

/// Health-check settings of `geodns run` (flattened into its arguments).
#[derive(clap::Args, Clone, Debug)]
pub struct HealthArgs {
    /// Time between two checks of a node.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub check_interval: Duration,
    /// Time a check may take (connect, and the HTTP status line).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub check_timeout: Duration,
    /// Consecutive good checks that bring a down node back.
    #[arg(long, default_value = "2", value_parser = at_least_one)]
    pub rise: u32,
    /// Consecutive failed checks that take an up node down.
    #[arg(long, default_value = "3", value_parser = at_least_one)]
    pub fall: u32,
    /// HTTP statuses that count as healthy.
    #[arg(long, default_value = "200-399")]
    pub check_status: StatusRange,
    /// Extra CA certificates (PEM) trusted by `https://` checks, besides the Mozilla
    /// roots.
    #[arg(long)]
    pub check_ca: Option<PathBuf>,
    /// Remembers health and admin states across restarts (JSON, rewritten on change).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
}

impl Default for HealthArgs {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            rise: 2,
            fall: 3,
            check_status: StatusRange::default(),
            check_ca: None,
            state_file: None,
        }
    }
}

/// What a check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port`: a TCP connect.
    Tcp { host: String, port: u16 },
    /// `http(s)://host[:port]/path`: a `GET`.
    Http {
        tls: bool,
        /// Without brackets (an IPv6 literal is `::1`).
        host: String,
        port: u16,
        path: String,
        /// As written in the URL (brackets kept), for the `Host` header.
        authority: String,
    },
}

impl Target {
    /// Parses a node's `check` value (the config has validated its form already).
    pub fn parse(text: &str) -> Result<Self, HealthError> {
        let err = |reason| HealthError::Target {
            target: text.to_owned(),
            reason,
        };
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("http://") {
            (false, &t[7..])
        } else if lower.starts_with("https://") {
            (true, &t[8..])
        } else {
            let (host, port) = split_host_port(t).ok_or_else(|| err("expected host:port"))?;
            let port = port.ok_or_else(|| err("expected host:port"))?;
            return Ok(Self::Tcp { host, port });
        };
        let (authority, path) = rest
            .find(['/', '?'])
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            return Err(err("user info in a check URL is not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| err("bad host or port"))?;
        Ok(Self::Http {
            tls,
            host,
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            path,
            authority: authority.to_owned(),
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; `None` for an empty host or a bad port.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let (host, p) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            _ => (h, Some(port(after.strip_prefix(':')?)?)),
        }
    } else if s.matches(':').count() > 1 {
        // A bare IPv6 literal: no port.
        (s, None)
    } else if let Some((h, p)) = s.rsplit_once(':') {
        (h, Some(port(p)?))
    } else {
        (s, None)
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), p))
}

/// How a check is run; shared by every node's task.
#[derive(Clone)]
pub struct Probe {
    pub timeout: Duration,
    pub status: StatusRange,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("timeout", &self.timeout)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// With the Mozilla roots plus the certificates of `extra_ca` (PEM) for HTTPS.
    pub fn new(
        timeout: Duration,
        status: StatusRange,
        extra_ca: Option<&Path>,
    ) -> Result<Self, HealthError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_ca {
            use rustls::pki_types::{pem::PemObject as _, CertificateDer};
            let ca_err = |reason: String| HealthError::CaFile {
                path: path.to_path_buf(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no certificate in the file".to_owned()));
            }
            for c in certs {
                roots.add(c).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HealthError::CaFile {
            path: extra_ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            timeout,
            status,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// One check of `target`, within the timeout.
    pub async fn check(&self, target: &Target) -> Result<(), ProbeError> {
        tokio::time::timeout(self.timeout, self.check_inner(target))
            .await
            .unwrap_or(Err(ProbeError::Timeout))
    }

    async fn check_inner(&self, target: &Target) -> Result<(), ProbeError> {
        match target {
            Target::Tcp { host, port } => {
                TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(ProbeError::Connect)?;
                Ok(())
            }
            Target::Http {
                tls,
                host,
                port,
                path,
                authority,
            } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(ProbeError::Connect)?;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: geodns-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                );
                let status = if *tls {
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| ProbeError::Tls(std::io::Error::other(e)))?;
                    let mut s = self.tls.connect(name, tcp).await.map_err(ProbeError::Tls)?;
                    http_status(&mut s, &request).await?
                } else {
                    let mut s = tcp;
                    http_status(&mut s, &request).await?
                };
                if self.status.contains(status) {
                    Ok(())
                } else {
                    Err(ProbeError::Status(status))
                }
            }
        }
    }
}

/// Sends `request` and reads the status code of the response's status line.
async fn http_status<S>(s: &mut S, request: &str) -> Result<u16, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    let mut buf = [0u8; STATUS_LINE_MAX];
    let mut n = 0;
    loop {
        if let Some(end) = buf[..n].iter().position(|b| *b == b'\n') {
            return parse_status_line(&buf[..end]).ok_or(ProbeError::BadResponse);
        }
        if n == buf.len() {
            return Err(ProbeError::BadResponse);
        }
        let got = s.read(&mut buf[n..]).await.map_err(ProbeError::Io)?;
        if got == 0 {
            return parse_status_line(&buf[..n]).ok_or(ProbeError::BadResponse);
        }
        n += got;
    }
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

/// Consecutive-result hysteresis of one node: `fall` failures in a row take it down,
/// `rise` successes in a row bring it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    pub up: bool,
    /// Results in a row that disagree with `up`.
    pub streak: u32,
    pub rise: u32,
    pub fall: u32,
}

impl Hysteresis {
    #[must_use]
    pub fn new(up: bool, rise: u32, fall: u32) -> Self {
        Self {
            up,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Counts one result; `true` when it changed the state.
    pub fn record(&mut self, ok: bool) -> bool {
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            return true;
        }
        false
    }
}

/// What an admin command sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AdminState {
    /// Answer with the node whatever its checks say.
    Up,
    /// Never answer with the node.
    Down,
    /// Healthy, but no new answers carry it.
    Drain,
    /// Back to the config's admin state, else the health checks.
    Auto,
}

impl AdminState {
    fn node_state(self) -> Option<NodeState> {
        match self {
            Self::Up => Some(NodeState::Up),
            Self::Down => Some(NodeState::Down),
            Self::Drain => Some(NodeState::Drain),
            Self::Auto => None,
        }
    }
}

impl FromStr for AdminState {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "up" => Ok(Self::Up),
            "down" => Ok(Self::Down),
            "drain" => Ok(Self::Drain),
            "auto" => Ok(Self::Auto),
            _ => Err(()),
        }
    }
}

/// One node as `GET /v1/nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// The state answers use.
    pub state: NodeState,
    /// Runtime admin state (`geodns node`), if any.
    pub admin: Option<NodeState>,
    /// The config's admin state, if any.
    pub config_admin: Option<NodeState>,
    /// `None` for a node without a check target.
    pub health: Option<NodeState>,
    pub check: Option<String>,
    pub checks: u64,
    pub failed_checks: u64,
    /// The last failure's reason, if the last check failed.
    pub last_error: Option<String>,
}

/// Health of one checked node.
#[derive(Clone, Debug)]
struct NodeHealth {
    target: String,
    hysteresis: Hysteresis,
    checks: u64,
    failed: u64,
    last_error: Option<String>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StateFile {
    #[serde(default)]
    health: BTreeMap<String, NodeState>,
    #[serde(default)]
    admin: BTreeMap<String, NodeState>,
}

/// What the operator and the checks want.
#[derive(Debug, Default)]
struct Desired {
    health: BTreeMap<String, NodeHealth>,
    admin: BTreeMap<String, NodeState>,
    /// Health remembered by the state file for nodes not yet (re)checked.
    remembered: BTreeMap<String, NodeState>,
}

impl Desired {
    fn effective(&self, config: &Config) -> NodeStates {
        let mut states = NodeStates::default();
        for n in &config.nodes {
            let health = self.health.get(&n.name).map(|h| {
                if h.hysteresis.up {
                    NodeState::Up
                } else {
                    NodeState::Down
                }
            });
            let state = self
                .admin
                .get(&n.name)
                .copied()
                .or(n.admin)
                .or(health)
                .unwrap_or(NodeState::Up);
            states.set(&n.name, state);
        }
        states
    }

    fn file(&self) -> StateFile {
        let mut health = self.remembered.clone();
        for (node, h) in &self.health {
            let s = if h.hysteresis.up {
                NodeState::Up
            } else {
                NodeState::Down
            };
            health.insert(node.clone(), s);
        }
        StateFile {
            health,
            admin: self.admin.clone(),
        }
    }
}

struct Shared {
    handle: EngineHandle,
    xdp: Option<Arc<Mutex<XdpDns>>>,
    probe: Probe,
    interval: Duration,
    rise: u32,
    fall: u32,
    state_file: Option<PathBuf>,
    desired: Mutex<Desired>,
    /// The state file needs rewriting.
    dirty: AtomicBool,
    /// Serialises reconciles (admin requests and the reconcile task).
    reconcile: Mutex<()>,
    /// Check tasks by node: the target they check and their handle.
    tasks: Mutex<HashMap<String, (String, AbortHandle)>>,
    /// The config the check tasks were started for.
    config: Mutex<Option<Arc<Config>>>,
    reconciler: Mutex<Option<AbortHandle>>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The handle the daemon keeps: admin requests, status, and stop. Clones share state.
#[derive(Clone)]
pub struct HealthControl(Arc<Shared>);

/// Starts the checks and the reconcile task (inside a tokio runtime) and returns the
/// handle admin requests go through. A `--check-ca` file that cannot be used is an
/// error: every HTTPS-checked node would go down. The first reconcile runs before this
/// returns, so states from the state file are in effect at once.
pub fn spawn(
    args: &HealthArgs,
    handle: EngineHandle,
    xdp: Option<Arc<Mutex<XdpDns>>>,
) -> Result<HealthControl, HealthError> {
    let probe = Probe::new(
        args.check_timeout,
        args.check_status,
        args.check_ca.as_deref(),
    )?;
    let mut desired = Desired::default();
    if let Some(path) = &args.state_file {
        match read_state_file(path) {
            Ok(Some(file)) => {
                tracing::info!(
                    path = %path.display(),
                    health = file.health.len(),
                    admin = file.admin.len(),
                    "node states read from the state file"
                );
                desired.remembered = file.health;
                desired.admin = file.admin;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "state file ignored"),
        }
    }
    let shared = Arc::new(Shared {
        handle,
        xdp,
        probe,
        interval: args.check_interval,
        rise: args.rise,
        fall: args.fall,
        state_file: args.state_file.clone(),
        desired: Mutex::new(desired),
        dirty: AtomicBool::new(false),
        reconcile: Mutex::new(()),
        tasks: Mutex::new(HashMap::new()),
        config: Mutex::new(None),
        reconciler: Mutex::new(None),
        wake: Notify::new(),
    });
    shared.sync_checks();
    shared.reconcile();
    let task = tokio::spawn(reconcile_loop(shared.clone()));
    *lock(&shared.reconciler) = Some(task.abort_handle());
    Ok(HealthControl(shared))
}

fn read_state_file(path: &Path) -> Result<Option<StateFile>, HealthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HealthError::StateFile {
                path: path.to_path_buf(),
                op: "read",
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| HealthError::StateFormat {
            path: path.to_path_buf(),
            source,
        })
}

fn write_state_file(path: &Path, file: &StateFile) -> Result<(), HealthError> {
    let io = |op, source| HealthError::StateFile {
        path: path.to_path_buf(),
        op,
        source,
    };
    let mut text =
        serde_json::to_string_pretty(file).map_err(|source| HealthError::StateFormat {
            path: path.to_path_buf(),
            source,
        })?;
    text.push('\n');
    // Written aside and renamed: a crash never leaves half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
}

async fn reconcile_loop(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
        shared.sync_checks();
        shared.reconcile();
    }
}

async fn check_loop(shared: Arc<Shared>, node: String, target: Target) {
    let mut tick = tokio::time::interval(shared.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = shared.probe.check(&target).await;
        if shared.record(&node, result) {
            shared.wake.notify_one();
        }
    }
}

impl Shared {
    /// Counts one check result; `true` when the node's health changed.
    fn record(&self, node: &str, result: Result<(), ProbeError>) -> bool {
        let mut d = lock(&self.desired);
        let Some(h) = d.health.get_mut(node) else {
            return false;
        };
        h.checks += 1;
        let ok = result.is_ok();
        if let Err(e) = &result {
            h.failed += 1;
            h.last_error = Some(e.to_string());
        } else {
            h.last_error = None;
        }
        if !h.hysteresis.record(ok) {
            return false;
        }
        self.dirty.store(true, Ordering::Relaxed);
        if ok {
            tracing::info!(
                node,
                check = %h.target,
                rise = self.rise,
                "node healthy again: {} good checks in a row",
                self.rise
            );
        } else {
            tracing::warn!(
                node,
                check = %h.target,
                fall = self.fall,
                error = %result.err().map(|e| e.to_string()).unwrap_or_default(),
                "node unhealthy: {} failed checks in a row",
                self.fall
            );
        }
        true
    }

    /// Starts checks for the nodes of the config in use, once per config: new nodes and
    /// changed targets get a task; removed nodes lose theirs.
    fn sync_checks(self: &Arc<Self>) {
        let engine = self.handle.load();
        let config = engine.config();
        {
            let mut seen = lock(&self.config);
            if seen.as_ref().is_some_and(|c| Arc::ptr_eq(c, config)) {
                return;
            }
            *seen = Some(config.clone());
        }
        let mut tasks = lock(&self.tasks);
        let mut d = lock(&self.desired);
        let wanted: HashMap<&str, &str> = config
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.as_str(), n.check.as_deref()?)))
            .collect();
        tasks.retain(|node, (target, task)| {
            let keep = wanted.get(node.as_str()) == Some(&target.as_str());
            if !keep {
                task.abort();
                d.health.remove(node);
            }
            keep
        });
        for (node, text) in wanted {
            if tasks.contains_key(node) {
                continue;
            }
            let target = match Target::parse(text) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(node, error = %e, "node not checked");
                    continue;
                }
            };
            let up = d.remembered.remove(node) != Some(NodeState::Down);
            d.health.insert(
                node.to_owned(),
                NodeHealth {
                    target: text.to_owned(),
                    hysteresis: Hysteresis::new(up, self.rise, self.fall),
                    checks: 0,
                    failed: 0,
                    last_error: None,
                },
            );
            let task = tokio::spawn(check_loop(self.clone(), node.to_owned(), target));
            tasks.insert(node.to_owned(), (text.to_owned(), task.abort_handle()));
        }
    }

    /// Brings the engine in use (and the kernel) to the wanted states, and the state file
    /// up to date.
    fn reconcile(&self) {
        let _one = lock(&self.reconcile);
        let engine = self.handle.load();
        let states = lock(&self.desired).effective(engine.config());
        if &states != engine.states() {
            match apply(&self.handle, self.xdp.as_deref(), &states) {
                Ok(n) => tracing::debug!(entries = n, "node states applied"),
                Err(e) => {
                    tracing::error!(error = %e, "applying node states failed; retrying in a second");
                }
            }
        }
        if self.dirty.swap(false, Ordering::Relaxed) {
            if let Some(path) = &self.state_file {
                let file = lock(&self.desired).file();
                if let Err(e) = write_state_file(path, &file) {
                    tracing::error!(error = %e, "state file not written");
                    self.dirty.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

impl HealthControl {
    /// Sets or clears (`auto`) the runtime admin state of `node` and applies it at once.
    /// Returns a one-line description; `None` for a node the config does not have.
    #[must_use]
    pub fn set_admin(&self, node: &str, state: AdminState) -> Option<String> {
        let engine = self.0.handle.load();
        let config = engine.config();
        let n = config.node(node)?;
        let (before, after) = {
            let mut d = lock(&self.0.desired);
            let before = d.effective(config).get(node);
            let previous = match state.node_state() {
                Some(s) => d.admin.insert(node.to_owned(), s),
                None => d.admin.remove(node),
            };
            if previous != state.node_state() {
                self.0.dirty.store(true, Ordering::Relaxed);
            }
            (before, d.effective(config).get(node))
        };
        self.0.reconcile();
        let why = match (state, n.admin) {
            (AdminState::Auto, Some(c)) => format!(" (the config's admin state {c} applies)"),
            (AdminState::Auto, None) if n.check.is_none() => " (not checked)".to_owned(),
            (AdminState::Auto, None) => " (health checks)".to_owned(),
            _ => String::new(),
        };
        let admin = match state.node_state() {
            Some(s) => s.to_string(),
            None => "auto".to_owned(),
        };
        tracing::info!(node, admin = %admin, from = %before, to = %after, "admin state set");
        Some(format!("{node}: admin {admin}: {before} -> {after}{why}\n"))
    }

    /// Every node of the config in use, in config order.
    #[must_use]
    pub fn status(&self) -> Vec<NodeStatus> {
        let engine = self.0.handle.load();
        let config = engine.config();
        let d = lock(&self.0.desired);
        let states = d.effective(config);
        config
            .nodes
            .iter()
            .map(|n| {
                let h = d.health.get(&n.name);
                NodeStatus {
                    node: n.name.clone(),
                    state: states.get(&n.name),
                    admin: d.admin.get(&n.name).copied(),
                    config_admin: n.admin,
                    health: h.map(|h| {
                        if h.hysteresis.up {
                            NodeState::Up
                        } else {
                            NodeState::Down
                        }
                    }),
                    check: n.check.clone(),
                    checks: h.map_or(0, |h| h.checks),
                    failed_checks: h.map_or(0, |h| h.failed),
                    last_error: h.and_then(|h| h.last_error.clone()),
                }
            })
            .collect()
    }

    /// The states answers should use under the config in use.
    #[must_use]
    pub fn states(&self) -> NodeStates {
        let engine = self.0.handle.load();
        lock(&self.0.desired).effective(engine.config())
    }

    /// The states answers should use under `config` (for a reload to compile with, so
    /// nodes it adds start in their right state).
    #[must_use]
    pub fn states_for(&self, config: &Config) -> NodeStates {
        lock(&self.0.desired).effective(config)
    }

    /// Health lines for `/metrics` (Prometheus text format).
    #[must_use]
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let status = self.status();
        let _ = writeln!(out, "# TYPE geodns_health_checks_total counter");
        for s in status.iter().filter(|s| s.check.is_some()) {
            let _ = writeln!(
                out,
                "geodns_health_checks_total{{node=\"{}\",result=\"ok\"}} {}",
                s.node,
                s.checks - s.failed_checks
            );
            let _ = writeln!(
                out,
                "geodns_health_checks_total{{node=\"{}\",result=\"failed\"}} {}",
                s.node, s.failed_checks
            );
        }
        let _ = writeln!(out, "# TYPE geodns_node_healthy gauge");
        for s in status.iter().filter(|s| s.health.is_some()) {
            let _ = writeln!(
                out,
                "geodns_node_healthy{{node=\"{}\"}} {}",
                s.node,
                u8::from(s.health == Some(NodeState::Up))
            );
        }
        let _ = writeln!(out, "# TYPE geodns_fail_open_total counter");
        let _ = writeln!(
            out,
            "geodns_fail_open_total {}",
            self.0.handle.load().fail_open_count()
        );
        out
    }

    /// Holds node-state changes off until dropped. A reload takes it around installing
    /// and swapping the engine: without an XDP lock to share (`--no-xdp`), a change
    /// could otherwise read the old engine and store it back over the reloaded one.
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        lock(&self.0.reconcile)
    }

    /// Stops every check and the reconcile task; the engine keeps its last states.
    pub fn stop(&self) {
        if let Some(t) = lock(&self.0.reconciler).take() {
            t.abort();
        }
        for (_, (_, task)) in lock(&self.0.tasks).drain() {
            task.abort();
        }
    }
}

/// The admin API, for the daemon's HTTP server (which sends every `/v1/` path here):
///
/// - `GET /v1/nodes`: every node's [`NodeStatus`], as JSON.
/// - `GET /v1/node/NAME`: one node.
/// - `POST /v1/node/NAME/STATE` with STATE `up`, `down`, `drain` or `auto`: sets the
///   runtime admin state, in the maps before the response is sent. Only from a loopback
///   `peer`: the API shares the metrics address, which may be reachable from elsewhere.
///
/// Returns the HTTP status and body.
#[must_use]
pub fn admin_request(
    control: &HealthControl,
    method: &str,
    path: &str,
    peer: IpAddr,
) -> (u16, String) {
    let path = path.split('?').next().unwrap_or(path);
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
            control
                .set_admin(&name, state)
                .map_or_else(|| not_found(&name), |msg| (200, msg))
        }
        (_, ["v1", "nodes"] | ["v1", "node", ..]) => (405, "method not allowed\n".to_owned()),
        _ => (404, "not found\n".to_owned()),
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

/// `%XX` escapes, for node names in paths.
#[must_use]
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved URL characters.
#[must_use]
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The kernel entries to rewrite to go from `old` to `new` answer sets: `Some` for new or
/// changed entries, `None` for removed ones. Unchanged entries are left alone.
#[must_use]
pub fn answer_changes(
    old: &[(AnswerKey, AnswerSet)],
    new: &[(AnswerKey, AnswerSet)],
) -> Vec<(AnswerKey, Option<AnswerSet>)> {
    let before: HashMap<AnswerKey, &AnswerSet> = old.iter().map(|(k, v)| (*k, v)).collect();
    let after: HashMap<AnswerKey, &AnswerSet> = new.iter().map(|(k, v)| (*k, v)).collect();
    let mut changes: Vec<(AnswerKey, Option<AnswerSet>)> = new
        .iter()
        .filter(|(k, v)| before.get(k) != Some(&v))
        .map(|(k, v)| (*k, Some(*v)))
        .collect();
    changes.extend(
        old.iter()
            .filter(|(k, _)| !after.contains_key(k))
            .map(|(k, _)| (*k, None)),
    );
    changes.sort_by_key(|(k, _)| *k);
    changes
}

/// Puts `states` into effect: derives the engine from the one in use, rewrites the
/// kernel answer sets that differ (never the prefix or name maps), then swaps the
/// engine. Returns how many entries were rewritten.
///
/// Holds the XDP lock from reading the engine in use to storing the new one: a reload
/// that installs and stores under the same lock cannot come between.
pub fn apply(
    handle: &EngineHandle,
    xdp: Option<&Mutex<XdpDns>>,
    states: &NodeStates,
) -> Result<usize, LoaderError> {
    let mut xdp = xdp.map(lock);
    let old: Arc<Engine> = handle.load();
    if old.states() == states {
        return Ok(0);
    }
    let new = old.with_states(states);
    let changes = answer_changes(&old.kernel_answers(), &new.kernel_answers());
    if let Some(xdp) = xdp.as_deref_mut() {
        xdp.update_answers(&changes)?;
    }
    for (node, state) in states.iter() {
        let was = old.states().get(node);
        if was != state {
            tracing::debug!(node, from = %was, to = %state, "node state in the answers");
        }
    }
    handle.store(new);
    Ok(changes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ttl: u32) -> AnswerSet {
        let mut s = AnswerSet::EMPTY;
        s.ttl = ttl;
        s
    }

    fn key(record: u16, region: u16) -> AnswerKey {
        AnswerKey { record, region }
    }

    #[test]
    fn diff_rewrites_only_what_changed() {
        let old = vec![
            (key(0, 1), set(1)),
            (key(0, 2), set(2)),
            (key(1, 1), set(3)),
        ];
        let new = vec![
            (key(0, 1), set(1)),
            (key(0, 2), set(20)),
            (key(2, 5), set(5)),
        ];
        assert_eq!(
            answer_changes(&old, &new),
            vec![
                (key(0, 2), Some(set(20))),
                (key(1, 1), None),
                (key(2, 5), Some(set(5))),
            ]
        );
        assert!(answer_changes(&old, &old).is_empty());
        assert_eq!(
            answer_changes(&[], &old),
            old.iter().map(|(k, v)| (*k, Some(*v))).collect::<Vec<_>>()
        );
        assert_eq!(
            answer_changes(&old, &[]),
            old.iter().map(|(k, _)| (*k, None)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn hysteresis_needs_fall_failures_and_rise_successes_in_a_row() {
        let mut h = Hysteresis::new(true, 2, 3);
        // Two failures, then a success: the streak starts over.
        assert!(!h.record(false));
        assert!(!h.record(false));
        assert!(!h.record(true));
        assert!(!h.record(false));
        assert!(!h.record(false));
        assert!(h.record(false), "third failure in a row");
        assert!(!h.up);
        assert!(!h.record(false));
        assert!(!h.record(true));
        assert!(!h.record(false), "a failure resets the rise streak");
        assert!(!h.record(true));
        assert!(h.record(true), "second success in a row");
        assert!(h.up);
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("198.18.2.10:80").expect("tcp"),
            Target::Tcp {
                host: "198.18.2.10".into(),
                port: 80
            }
        );
        assert_eq!(
            Target::parse("[2001:db8::1]:8080").expect("tcp v6"),
            Target::Tcp {
                host: "2001:db8::1".into(),
                port: 8080
            }
        );
        assert_eq!(
            Target::parse("http://198.18.1.10/health").expect("http"),
            Target::Http {
                tls: false,
                host: "198.18.1.10".into(),
                port: 80,
                path: "/health".into(),
                authority: "198.18.1.10".into(),
            }
        );
        assert_eq!(
            Target::parse("HTTPS://[::1]:8443?x=1").expect("https"),
            Target::Http {
                tls: true,
                host: "::1".into(),
                port: 8443,
                path: "/?x=1".into(),
                authority: "[::1]:8443".into(),
            }
        );
        assert_eq!(
            Target::parse("https://node.example").expect("https default port"),
            Target::Http {
                tls: true,
                host: "node.example".into(),
                port: 443,
                path: "/".into(),
                authority: "node.example".into(),
            }
        );
        for bad in [
            "host",
            "host:0",
            "host:99999",
            ":80",
            "http://:80/",
            "http://u@h/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines_and_ranges() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK"), None);
        let r: StatusRange = "200-399".parse().expect("range");
        assert!(r.contains(200) && r.contains(399) && !r.contains(400));
        assert_eq!(
            "204".parse::<StatusRange>(),
            Ok(StatusRange {
                low: 204,
                high: 204
            })
        );
        assert!("399-200".parse::<StatusRange>().is_err());
        assert!("abc".parse::<StatusRange>().is_err());
    }

    #[test]
    fn node_names_survive_the_path() {
        for name in ["fra1", "a b/c%d", "ü"] {
            assert_eq!(percent_decode(&percent_encode(name)), name);
        }
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1m").is_err());
    }
}
