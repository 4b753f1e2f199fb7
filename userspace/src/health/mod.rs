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
//! kernel reads ([`KernelProgram::update_answers`]; each entry update is atomic for readers).
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

pub mod admin;
pub mod book;
pub mod probe;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

pub use admin::admin_request;
pub use book::{AdminState, AdminWriter, FleetStates, Hysteresis, NodeBook, NodeStatus};
use geodns_maps::NodeState;
pub use probe::{Probe, ProbeError, StatusRange, Target};
use tokio::{sync::Notify, task::AbortHandle};

use crate::{
    control::{Control, ControlError, EngineHandle},
    loader::KernelProgram,
};
use book::NodeHealth;

/// How often the reconcile task looks at the engine in use even when nothing reported:
/// a reload swaps the engine, and a change must be in the maps within one second.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

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
    Apply(#[from] ControlError),
}

/// Why an admin state was not set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("no node named `{0}` in the config")]
    UnknownNode(String),
    #[error("not set: {0}")]
    Fleet(String),
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
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub check_interval: Duration,
    /// Time a check may take (connect, and the HTTP status line).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = crate::duration::parse)]
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
    /// When more than this many percent of all nodes are down by their checks at once,
    /// the checker is suspect (its own network failing looks the same): health is
    /// ignored, loudly, until fewer are down. 100 never suspects.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_down_share: u8,
    /// Remembers health and admin states across restarts (JSON, rewritten on change).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// The fleet box name (`--box`), named in HTTP checks' `User-Agent`.
    #[arg(skip)]
    pub box_name: Option<String>,
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
            max_down_share: 50,
            state_file: None,
            box_name: None,
        }
    }
}

struct Shared {
    control: Control,
    book: NodeBook,
    probe: Probe,
    interval: Duration,
    rise: u32,
    fall: u32,
    /// Check tasks by node: the target they check and their handle.
    tasks: Mutex<HashMap<String, (String, AbortHandle)>>,
    /// The config the check tasks were started for.
    config: Mutex<Option<Arc<geodns_maps::Config>>>,
    reconciler: Mutex<Option<AbortHandle>>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The handle the daemon keeps: admin requests, status, and stop. Clones share state.
#[derive(Clone)]
pub struct HealthControl(Arc<Shared>);

/// Starts the checks and the reconcile task (inside a tokio runtime) for the nodes of
/// the engine `control` serves, with the states `book` holds (the control thread reads
/// the same book). A `--check-ca` file that cannot be used is an error: every
/// HTTPS-checked node would go down. The first reconcile runs before this returns.
pub async fn spawn(
    args: &HealthArgs,
    control: &Control,
    book: NodeBook,
) -> Result<HealthControl, HealthError> {
    let mut probe = Probe::new(
        args.check_timeout,
        args.check_status,
        args.check_ca.as_deref(),
    )?;
    if let Some(name) = &args.box_name {
        probe = probe.with_box(name);
    }
    let shared = Arc::new(Shared {
        control: control.clone(),
        book,
        probe,
        interval: args.check_interval,
        rise: args.rise,
        fall: args.fall,
        tasks: Mutex::new(HashMap::new()),
        config: Mutex::new(None),
        reconciler: Mutex::new(None),
        wake: Notify::new(),
    });
    shared.sync_checks();
    shared.reconcile().await;
    let task = tokio::spawn(reconcile_loop(shared.clone()));
    *lock(&shared.reconciler) = Some(task.abort_handle());
    Ok(HealthControl(shared))
}

/// The control thread, the node book (from `--state-file`) and the health checks for
/// `handle`'s engine and `kernel` (already installed): what `geodns run` and
/// `geodns redirect` start, and tests with them.
pub async fn start(
    args: &HealthArgs,
    handle: &EngineHandle,
    kernel: Option<KernelProgram>,
) -> Result<(HealthControl, Control), HealthError> {
    let book = NodeBook::open(args.state_file.as_deref(), args.max_down_share);
    let control = Control::start(handle.clone(), kernel, book.states_fn())?;
    let health = spawn(args, &control, book).await?;
    Ok((health, control))
}

async fn reconcile_loop(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
        shared.sync_checks();
        shared.reconcile().await;
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
        let mut d = self.book.lock();
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
        self.book.mark_dirty();
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
        let engine = self.control.engine().load();
        let config = engine.config();
        {
            let mut seen = lock(&self.config);
            if seen.as_ref().is_some_and(|c| Arc::ptr_eq(c, config)) {
                return;
            }
            *seen = Some(config.clone());
        }
        let mut tasks = lock(&self.tasks);
        let mut d = self.book.lock();
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

    /// Brings the engine in use (and the kernel) to the wanted states through the
    /// control thread, and the state file up to date.
    async fn reconcile(&self) {
        match self.control.apply_states().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "node states applied"),
            Err(e) => {
                tracing::error!(error = %e, "applying node states failed; retrying in a second");
            }
        }
        self.book.save_if_dirty();
    }
}

impl HealthControl {
    /// Sets or clears (`auto`) the runtime admin state of `node` and applies it at once
    /// (in a fleet: writes it to the fleet's store and waits until it is in effect
    /// here). Returns a one-line description.
    pub async fn set_admin(&self, node: &str, state: AdminState) -> Result<String, AdminError> {
        let engine = self.0.control.engine().load();
        let config = engine.config();
        let n = config
            .node(node)
            .ok_or_else(|| AdminError::UnknownNode(node.to_owned()))?;
        let before = self.0.book.effective(config).get(node);
        if let Some(writer) = self.0.book.admin_writer() {
            writer(node.to_owned(), state.node_state())
                .await
                .map_err(AdminError::Fleet)?;
        } else {
            let previous = {
                let mut d = self.0.book.lock();
                match state.node_state() {
                    Some(s) => d.admin.insert(node.to_owned(), s),
                    None => d.admin.remove(node),
                }
            };
            if previous != state.node_state() {
                self.0.book.mark_dirty();
            }
        }
        let after = self.0.book.effective(config).get(node);
        self.0.reconcile().await;
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
        Ok(format!("{node}: admin {admin}: {before} -> {after}{why}\n"))
    }

    /// Every node of the config in use, in config order.
    #[must_use]
    pub fn status(&self) -> Vec<NodeStatus> {
        let engine = self.0.control.engine().load();
        let mut status = self.0.book.status(engine.config());
        // The state answers use is the engine's: the book may be a step ahead of the
        // control thread.
        for s in &mut status {
            s.state = engine.states().get(&s.node);
        }
        status
    }

    /// The states answers should use under `config` (for a reload to compile with, so
    /// nodes it adds start in their right state).
    #[must_use]
    pub fn states_for(&self, config: &geodns_maps::Config) -> geodns_maps::NodeStates {
        self.0.book.effective(config)
    }

    /// Health lines for `/metrics` (Prometheus text format).
    #[must_use]
    pub fn metrics_text(&self) -> String {
        use crate::prom::{Kind, Page};
        let mut p = Page::new();
        let status = self.status();
        p.family(
            "geodns_health_checks_total",
            Kind::Counter,
            "Health checks by node and result.",
        );
        for s in status.iter().filter(|s| s.check.is_some()) {
            let ok = s.checks - s.failed_checks;
            p.sample(
                "geodns_health_checks_total",
                &[("node", &s.node), ("result", "ok")],
                ok,
            );
            p.sample(
                "geodns_health_checks_total",
                &[("node", &s.node), ("result", "failed")],
                s.failed_checks,
            );
        }
        p.family(
            "geodns_node_healthy",
            Kind::Gauge,
            "Whether a checked node passes its checks (1).",
        );
        for s in status.iter().filter(|s| s.health.is_some()) {
            let up = u8::from(s.health == Some(NodeState::Up));
            p.sample("geodns_node_healthy", &[("node", &s.node)], up);
        }
        let engine = self.0.control.engine().load();
        p.single(
            "geodns_fail_open_total",
            Kind::Counter,
            "Answers from [fallback] nodes down by health, because none was up.",
            engine.fail_open_count(),
        );
        p.single(
            "geodns_fail_open_sets",
            Kind::Gauge,
            "(record, region) answers failing open: every candidate down by health, all answered.",
            engine.fail_open_sets(),
        );
        p.single(
            "geodns_health_suspect",
            Kind::Gauge,
            "Whether health is ignored (1) because more nodes are down than --max-down-share allows.",
            u8::from(self.0.book.suspect()),
        );
        p.finish()
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
