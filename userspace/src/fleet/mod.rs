//! A fleet of boxes that answer alike: node states and the config shared through etcd
//! (`geodns run --fleet etcd://HOST:PORT --box NAME`).
//!
//! One task per daemon keeps a session with etcd: a lease of `--fleet-lease`, kept
//! alive at a third of it; a snapshot of every key under the prefix, then a watch from
//! the snapshot's revision on (so nothing is missed between the two). Every change the
//! watch brings is folded into a [`view::Mirror`], from which the box computes what the
//! fleet agrees on ([`view::Mirror::agreed`]: the admin states, and the nodes a quorum
//! of the live boxes see down), hands it to the [`NodeBook`] and asks the control thread
//! to apply it, as the health checks do. Every box computes from the same keys, so all
//! answer alike.
//!
//! The box publishes its own health verdicts under its lease (a dead box's views
//! expire with it) and a status record every heartbeat. An admin state set through the
//! local admin API goes to etcd ([`NodeBook::set_admin_writer`]) and is answered once
//! the watch has brought it back and it is in effect here.
//!
//! A new config revision is handed to the daemon's reloader ([`ConfigPush`]): it
//! compiles the text against the local databases (and their pinned SHA-256), installs
//! it and writes it over `--config`; on failure nothing changes and the error goes into
//! the status record.
//!
//! When etcd cannot be reached the box keeps serving (fail-static): the last admin
//! states and the other boxes' last views, with its own checks going on; `/metrics`
//! says `geodns_fleet_connected 0`. It retries on its own and rejoins with a fresh
//! lease, snapshot and watch.
mod args;
pub(crate) mod pins;
#[cfg(test)]
mod tests;
pub mod view;

pub use args::{parse_endpoints, Endpoints, FleetArgs};
pub use pins::{check_pins, database_files, hex, sha256};

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant, SystemTime},
};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use geodns_maps::{Config, NodeState};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::{
    control::Control,
    health::{AdminWriter, NodeBook},
};
pub use view::{BoxStatus, HealthView, Keys, Mirror};

/// Time every etcd request may take (a stopped etcd must not stall the box).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the box looks whether its own health verdicts changed.
const OWN_HEALTH_EVERY: Duration = Duration::from_millis(100);
/// How often the status record is rewritten (the heartbeat).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Errors of the fleet (the session ends, the box retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd: {0} timed out")]
    Timeout(&'static str),
    #[error("etcd: {0}")]
    Lost(&'static str),
    #[error("the control thread has stopped")]
    Stopped,
}

/// A config revision for the daemon's reloader to apply; it answers whether it did.
pub struct ConfigPush {
    pub revision: i64,
    pub text: String,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// What the box knows of its fleet, for `/metrics` and the status record.
#[derive(Default)]
struct State {
    connected: bool,
    /// Since when etcd has been unreachable (`None` while connected).
    unreachable_since: Option<Instant>,
    mirror: Mirror,
    client: Option<Client>,
    /// The lease of the session in progress.
    lease: Option<i64>,
    /// The config revision in use (`None`: the local file).
    config_revision: Option<i64>,
    /// SHA-256 of the config text in use.
    config_sha256: String,
    /// The newest revision a rollout was tried for.
    tried_revision: i64,
    last_error: Option<String>,
    /// Database hashes by path, with the file's (mtime, length) they were taken at.
    db_hashes: BTreeMap<PathBuf, (Option<(SystemTime, u64)>, String)>,
}

struct Shared {
    name: String,
    keys: Keys,
    endpoints: Vec<String>,
    lease_ttl: i64,
    control: Control,
    book: NodeBook,
    reloads: mpsc::Sender<ConfigPush>,
    state: Mutex<State>,
    /// The newest etcd revision whose admin and health keys are in effect here.
    applied: watch::Sender<i64>,
    /// The status record should be rewritten now.
    status_dirty: Notify,
    disconnects: AtomicU64,
    config_failures: AtomicU64,
}

/// The handle the daemon keeps: metrics and stop. Clones share it.
#[derive(Clone)]
pub struct Fleet {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the fleet task (inside a tokio runtime): `None` without `--fleet`. Admin
/// states set through the local API go to etcd from now on. New config revisions are
/// sent to `reloads`.
#[must_use]
pub fn start(
    args: &FleetArgs,
    config_path: &Path,
    control: &Control,
    book: &NodeBook,
    reloads: mpsc::Sender<ConfigPush>,
) -> Option<Fleet> {
    let endpoints = args.fleet.as_ref()?;
    let name = args.box_name.clone()?;
    let config_sha256 = std::fs::read(config_path)
        .map(|b| hex(&sha256(&b)))
        .unwrap_or_default();
    let (applied, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        name,
        keys: Keys::new(&args.fleet_prefix),
        endpoints: endpoints.0.clone(),
        lease_ttl: i64::try_from(args.fleet_lease.as_secs().max(2)).unwrap_or(5),
        control: control.clone(),
        book: book.clone(),
        reloads,
        state: Mutex::new(State {
            unreachable_since: Some(Instant::now()),
            config_sha256,
            ..State::default()
        }),
        applied,
        status_dirty: Notify::new(),
        disconnects: AtomicU64::new(0),
        config_failures: AtomicU64::new(0),
    });
    let writer_shared = shared.clone();
    let writer: AdminWriter = Arc::new(move |node, state| {
        let shared = writer_shared.clone();
        Box::pin(async move { shared.write_admin(&node, state).await })
    });
    book.set_admin_writer(writer);
    let task = tokio::spawn(run(shared.clone()));
    tracing::info!(
        name = %shared.name,
        endpoints = %shared.endpoints.join(","),
        prefix = %shared.keys.all(),
        "joining the fleet"
    );
    Some(Fleet {
        shared,
        task: Arc::new(Mutex::new(Some(task.abort_handle()))),
    })
}

/// How long a starting box waits for etcd to give it the fleet's config.
const BOOT_TIMEOUT: Duration = Duration::from_secs(2);

/// At start: the engine of the fleet's newest config, when etcd answers within
/// [`BOOT_TIMEOUT`], the config differs from the file at `path` and it compiles here
/// (it is then written over `path`). `None` otherwise: the daemon starts from its
/// file, and the fleet task tries the revision again (and reports why it fails).
pub async fn first_engine(
    args: &FleetArgs,
    path: &Path,
    states: &dyn Fn(&Config) -> geodns_maps::NodeStates,
) -> Option<geodns_maps::Engine> {
    let endpoints = args.fleet.as_ref()?;
    let keys = Keys::new(&args.fleet_prefix);
    let fetch = async {
        let options = ConnectOptions::new().with_connect_timeout(BOOT_TIMEOUT);
        let mut client = Client::connect(&endpoints.0, Some(options)).await?;
        client.get(keys.config(), None).await
    };
    let resp = match tokio::time::timeout(BOOT_TIMEOUT, fetch).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "fleet: no config from etcd at start; starting from the file");
            return None;
        }
        Err(_) => {
            tracing::warn!("fleet: etcd did not answer at start; starting from the file");
            return None;
        }
    };
    let kv = resp.kvs().first()?;
    let text = String::from_utf8_lossy(kv.value()).into_owned();
    if std::fs::read(path).is_ok_and(|b| b == text.as_bytes()) {
        return None;
    }
    let name = path.display().to_string();
    let engine = Config::from_str_named(&text, &name)
        .map_err(anyhow::Error::from)
        .and_then(|c| crate::daemon::reload::compile_config(c, Some(states)));
    match engine {
        Ok(engine) => {
            let tmp = path.with_extension("fleet-new");
            let written = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                tracing::error!(error = %e, path = %path.display(), "fleet: the config in use is not written over the file");
            }
            tracing::info!(
                revision = kv.mod_revision(),
                "fleet: starting on the fleet's config"
            );
            Some(engine)
        }
        Err(e) => {
            tracing::error!(revision = kv.mod_revision(), error = %format!("{e:#}"), "fleet: the fleet's config does not compile here; starting from the file");
            None
        }
    }
}

async fn run(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let error = match session(&shared).await {
            Ok(()) => FleetError::Lost("session ended"),
            Err(e) => e,
        };
        let was = shared.disconnected();
        if was {
            shared.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                error = %error,
                "fleet: etcd unreachable; serving with the last agreed states and this box's own checks, retrying"
            );
        } else {
            tracing::debug!(error = %error, "fleet: etcd still unreachable");
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        // Fail-static: own checks still count, the other boxes' last views too.
        let deadline = Instant::now() + backoff;
        while Instant::now() < deadline {
            shared.apply_offline().await;
            tokio::time::sleep(OWN_HEALTH_EVERY.min(backoff)).await;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn timed<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| FleetError::Timeout(what))?
        .map_err(FleetError::from)
}

/// Every key of the fleet as it is now, and the revision it is at.
async fn snapshot(shared: &Shared, client: &mut Client) -> Result<Mirror, FleetError> {
    let snapshot = timed(
        "get",
        client.get(shared.keys.all(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let mut mirror = Mirror {
        revision: snapshot
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision),
        ..Mirror::default()
    };
    for kv in snapshot.kvs() {
        mirror.put(
            &shared.keys,
            &String::from_utf8_lossy(kv.key()),
            kv.value(),
            kv.mod_revision(),
        );
    }
    Ok(mirror)
}

/// One connection to etcd, until something fails.
async fn session(shared: &Arc<Shared>) -> Result<(), FleetError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT);
    let mut client = timed("connect", Client::connect(&shared.endpoints, Some(options))).await?;
    let lease = timed("lease grant", client.lease_grant(shared.lease_ttl, None))
        .await?
        .id();
    let (mut keeper, mut keepalive) =
        timed("lease keep-alive", client.lease_keep_alive(lease)).await?;
    let mut own = shared.book.own_health();
    timed(
        "put health",
        client.put(
            shared.keys.health(&shared.name),
            serde_json::to_vec(&own).unwrap_or_default(),
            Some(PutOptions::new().with_lease(lease)),
        ),
    )
    .await?;
    let mirror = snapshot(shared, &mut client).await?;
    let mut watch = timed(
        "watch",
        client.watch(
            shared.keys.all(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(mirror.revision + 1),
            ),
        ),
    )
    .await?;
    shared.connected(mirror, &client);
    lock(&shared.state).lease = Some(lease);
    shared.apply().await?;
    shared.rollout();
    shared.put_status(&mut client).await?;

    let mut keep_tick = tokio::time::interval(Duration::from_millis(
        u64::try_from(shared.lease_ttl).unwrap_or(5) * 1000 / 3,
    ));
    let mut own_tick = tokio::time::interval(OWN_HEALTH_EVERY);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    for t in [&mut keep_tick, &mut own_tick, &mut heartbeat] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = keep_tick.tick() => {
                timed("lease keep-alive", keeper.keep_alive()).await?;
            }
            msg = keepalive.message() => match msg? {
                Some(r) if r.ttl() > 0 => {}
                Some(_) => return Err(FleetError::Lost("the lease expired")),
                None => return Err(FleetError::Lost("the keep-alive stream ended")),
            },
            msg = watch.message() => {
                let Some(resp) = msg? else {
                    return Err(FleetError::Lost("the watch ended"));
                };
                shared.fold(&resp)?;
                shared.apply().await?;
                shared.rollout();
            }
            _ = own_tick.tick() => {
                let now = shared.book.own_health();
                if now != own {
                    timed(
                        "put health",
                        client.put(
                            shared.keys.health(&shared.name),
                            serde_json::to_vec(&now).unwrap_or_default(),
                            Some(PutOptions::new().with_lease(lease)),
                        ),
                    )
                    .await?;
                    own = now;
                }
            }
            _ = heartbeat.tick() => shared.put_status(&mut client).await?,
            () = shared.status_dirty.notified() => shared.put_status(&mut client).await?,
        }
    }
}

impl Shared {
    /// Folds the events of one watch response into the mirror.
    fn fold(&self, resp: &etcd_client::WatchResponse) -> Result<(), FleetError> {
        if resp.canceled() {
            return Err(FleetError::Lost("the watch was cancelled (compacted?)"));
        }
        let mut st = lock(&self.state);
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key());
            match ev.event_type() {
                EventType::Put => {
                    st.mirror
                        .put(&self.keys, &key, kv.value(), kv.mod_revision());
                }
                EventType::Delete => st.mirror.delete(&self.keys, &key),
            }
        }
        if let Some(h) = resp.header() {
            st.mirror.revision = st.mirror.revision.max(h.revision());
        }
        Ok(())
    }

    /// Marks etcd reachable, with what it holds now.
    fn connected(&self, mirror: Mirror, client: &Client) {
        let mut st = lock(&self.state);
        st.mirror = mirror;
        st.client = Some(client.clone());
        st.connected = true;
        if let Some(since) = st.unreachable_since.take() {
            tracing::info!(
                name = %self.name,
                unreachable_seconds = since.elapsed().as_secs_f64(),
                "fleet: connected to etcd"
            );
        }
    }

    /// Marks etcd unreachable; `true` when it was reachable until now.
    fn disconnected(&self) -> bool {
        let mut st = lock(&self.state);
        st.client = None;
        let was = st.connected;
        st.connected = false;
        if st.unreachable_since.is_none() {
            st.unreachable_since = Some(Instant::now());
        }
        was
    }

    /// Brings what the mirror says into effect: the book, then the maps.
    async fn apply(&self) -> Result<(), FleetError> {
        let (agreed, revision) = {
            let st = lock(&self.state);
            let quorum = self.control.engine().load().config().fleet.quorum;
            (st.mirror.agreed(quorum, None), st.mirror.revision)
        };
        let changed = self.book.set_fleet(Some(agreed));
        self.control
            .apply_states()
            .await
            .map_err(|_| FleetError::Stopped)?;
        self.applied.send_replace(revision);
        if changed {
            // The states answers use are part of the status.
            self.status_dirty.notify_one();
        }
        Ok(())
    }

    /// While etcd is unreachable: the last agreed states, with this box's own view
    /// as it is now. Nothing is agreed before the first contact: the box decides alone.
    async fn apply_offline(&self) {
        let agreed = {
            let st = lock(&self.state);
            if st.mirror.revision == 0 {
                return;
            }
            let quorum = self.control.engine().load().config().fleet.quorum;
            let own = self.book.own_health();
            st.mirror.agreed(quorum, Some((&self.name, &own)))
        };
        if self.book.set_fleet(Some(agreed)) {
            if let Err(e) = self.control.apply_states().await {
                tracing::error!(error = %e, "fleet: applying node states failed");
            }
        }
    }

    /// Starts applying the newest config revision when it is newer than the last one
    /// tried.
    fn rollout(self: &Arc<Self>) {
        let (revision, text) = {
            let mut st = lock(&self.state);
            let Some((revision, text)) = st.mirror.config.clone() else {
                return;
            };
            if revision <= st.tried_revision {
                return;
            }
            st.tried_revision = revision;
            if hex(&sha256(text.as_bytes())) == st.config_sha256 {
                // Already in use (pushed from this very file, or applied before a
                // restart).
                st.config_revision = Some(revision);
                st.last_error = None;
                self.status_dirty.notify_one();
                return;
            }
            (revision, text)
        };
        let shared = self.clone();
        tokio::spawn(async move {
            tracing::info!(revision, "fleet: applying config revision");
            let (reply, answer) = oneshot::channel();
            let sha = hex(&sha256(text.as_bytes()));
            let sent = shared
                .reloads
                .send(ConfigPush {
                    revision,
                    text,
                    reply,
                })
                .await;
            let result = match sent {
                Ok(()) => answer
                    .await
                    .unwrap_or_else(|_| Err("the reloader has stopped".to_owned())),
                Err(_) => Err("the reloader has stopped".to_owned()),
            };
            {
                let mut st = lock(&shared.state);
                match result {
                    Ok(()) => {
                        tracing::info!(revision, "fleet: config revision applied");
                        st.config_revision = Some(revision);
                        st.config_sha256 = sha;
                        st.last_error = None;
                    }
                    Err(e) => {
                        shared.config_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(revision, error = %e, "fleet: config revision not applied; the config in use stays");
                        st.last_error = Some(format!("revision {revision}: {e}"));
                    }
                }
            }
            shared.status_dirty.notify_one();
        });
    }

    /// Writes (or, for `None`, deletes) the fleet admin state of `node`, then waits
    /// until the watch has brought it back and it is in effect here.
    async fn write_admin(&self, node: &str, state: Option<NodeState>) -> Result<(), String> {
        let client = lock(&self.state).client.clone();
        let Some(mut client) = client else {
            return Err(
                "etcd is unreachable: the fleet's admin states cannot change now".to_owned(),
            );
        };
        let key = self.keys.admin(node);
        let header = match state {
            Some(s) => timed("put admin", client.put(key, view::admin_value(s), None))
                .await
                .map(|r| r.header().cloned()),
            None => timed("delete admin", client.delete(key, None))
                .await
                .map(|r| r.header().cloned()),
        }
        .map_err(|e| e.to_string())?;
        let revision = header.map_or(0, |h| h.revision());
        let mut applied = self.applied.subscribe();
        let seen =
            tokio::time::timeout(REQUEST_TIMEOUT, applied.wait_for(|r| *r >= revision)).await;
        if seen.is_err() {
            tracing::warn!(
                node,
                revision,
                "fleet: admin state written, not yet seen back from etcd"
            );
        }
        Ok(())
    }

    async fn put_status(&self, client: &mut Client) -> Result<(), FleetError> {
        let status = self.status().await;
        timed(
            "put status",
            client.put(
                self.keys.status(&self.name),
                serde_json::to_vec(&status).unwrap_or_default(),
                None,
            ),
        )
        .await?;
        Ok(())
    }

    /// This box's status record.
    async fn status(&self) -> BoxStatus {
        let engine = self.control.engine().load();
        let files = database_files(engine.config());
        let known = {
            let st = lock(&self.state);
            st.db_hashes.clone()
        };
        // Hashing a database takes a while: once per file version, off the runtime.
        let hashes = tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|path| {
                    let stamp = std::fs::metadata(&path)
                        .ok()
                        .and_then(|m| Some((m.modified().ok()?, m.len())));
                    let digest = match known.get(&path) {
                        Some((s, d)) if stamp.is_some() && *s == stamp => d.clone(),
                        _ => match std::fs::read(&path) {
                            Ok(b) => hex(&sha256(&b)),
                            Err(e) => format!("unreadable: {e}"),
                        },
                    };
                    (path, (stamp, digest))
                })
                .collect::<BTreeMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        let mut st = lock(&self.state);
        st.db_hashes = hashes;
        BoxStatus {
            name: self.name.clone(),
            config_revision: st.config_revision,
            config_sha256: st.config_sha256.clone(),
            generation: self.control.counts().generation,
            databases: st
                .db_hashes
                .iter()
                .map(|(p, (_, d))| (p.display().to_string(), d.clone()))
                .collect(),
            last_error: st.last_error.clone(),
            states: engine
                .states()
                .iter()
                .map(|(n, s)| (n.to_owned(), s))
                .collect(),
            connected: st.connected,
            heartbeat_unix_ms: unix_ms(),
        }
    }
}

impl Fleet {
    /// The fleet's lines of `/metrics`.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        use crate::prom::{Kind, Page};
        let s = &self.shared;
        let st = lock(&s.state);
        let mut p = Page::new();
        p.single(
            "geodns_fleet_connected",
            Kind::Gauge,
            "Whether this box reaches the fleet's etcd (0: serving fail-static with the last agreed states and its own checks).",
            u8::from(st.connected),
        );
        p.single(
            "geodns_fleet_unreachable_seconds",
            Kind::Gauge,
            "How long etcd has been unreachable (0 while connected).",
            st.unreachable_since
                .map_or(0.0, |t| t.elapsed().as_secs_f64()),
        );
        p.single(
            "geodns_fleet_disconnects_total",
            Kind::Counter,
            "Times the connection to etcd was lost.",
            s.disconnects.load(Ordering::Relaxed),
        );
        p.single(
            "geodns_fleet_boxes",
            Kind::Gauge,
            "Live boxes of the fleet (health views under a live lease), as last read.",
            st.mirror.health.len(),
        );
        p.single(
            "geodns_fleet_config_revision",
            Kind::Gauge,
            "The fleet config revision in use (0: the local file).",
            st.config_revision.unwrap_or(0),
        );
        p.single(
            "geodns_fleet_config_failures_total",
            Kind::Counter,
            "Pushed config revisions that did not apply on this box.",
            s.config_failures.load(Ordering::Relaxed),
        );
        p.single(
            "geodns_fleet_revision",
            Kind::Gauge,
            "The etcd revision whose admin states and health views are in effect.",
            *s.applied.borrow(),
        );
        p.finish()
    }

    /// Stops the fleet task (the agreed states stay in effect) and revokes the box's
    /// lease, so the other boxes stop counting its health view at once rather than
    /// when the lease runs out.
    pub async fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
        let (client, lease) = {
            let st = lock(&self.shared.state);
            (st.client.clone(), st.lease)
        };
        if let (Some(mut client), Some(lease)) = (client, lease) {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(lease)).await;
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch (for heartbeat ages).
#[must_use]
pub fn now_unix_ms() -> u64 {
    unix_ms()
}
