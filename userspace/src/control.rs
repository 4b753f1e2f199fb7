//! The one owner of the live state: the engine userspace answers with and the kernel
//! maps the XDP program answers from.
//!
//! A dedicated thread owns the loaded program ([`KernelProgram`]) and is the only writer of the
//! [`EngineHandle`]. Everything that changes what is answered sends it a message and
//! waits for the reply: a reload sends a compiled engine ([`Control::install`]), health
//! checks and the admin API ask it to bring the node states into effect
//! ([`Control::apply_states`]). The thread handles one message at a time, so an install
//! and a node-state change never interleave, and the node states it applies are always
//! read from the [`StatesFn`] against the engine it is about to store: a change that
//! arrives during a compile is applied to the new engine too.
//!
//! Installing a large table takes seconds; it runs on this thread, never on the async
//! runtime, and nothing the HTTP side reads waits for it: the map counts are published
//! after each change ([`Control::counts`]), and the XDP counters are read through a map
//! handle of their own ([`Counters`]).
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError, RwLock,
    },
};

use geodns_common::{counter, AnswerKey, AnswerSet};
use geodns_maps::{Config, Engine, NodeStates};
use tokio::sync::{mpsc, oneshot};

use crate::authoritative::kernel::kernel_maps;
use crate::loader::{Counters, InstallStats, KernelProgram, LoaderError};

/// The engine in use, shared by everything that answers in userspace. Only the control
/// thread stores into it.
#[derive(Clone)]
pub struct EngineHandle(Arc<Shared>);

struct Shared {
    engine: RwLock<Arc<Engine>>,
    /// Bumped after every store: a reader holding a [`EngineCache`] takes the lock
    /// only when it moved.
    generation: AtomicU64,
}

impl EngineHandle {
    #[must_use]
    pub fn new(engine: Engine) -> Self {
        Self(Arc::new(Shared {
            engine: RwLock::new(Arc::new(engine)),
            generation: AtomicU64::new(0),
        }))
    }

    /// The current engine (cheap: an `Arc` clone).
    #[must_use]
    pub fn load(&self) -> Arc<Engine> {
        self.0
            .engine
            .read()
            .map_or_else(|e| e.into_inner().clone(), |g| g.clone())
    }

    /// A reader's own copy of the current engine, for a loop that answers many
    /// queries: [`EngineCache::get`] costs one shared atomic load while nothing is
    /// stored, no lock and no write to memory other readers use.
    #[must_use]
    pub fn cache(&self) -> EngineCache {
        let generation = self.0.generation.load(Ordering::Acquire);
        EngineCache {
            handle: self.clone(),
            generation,
            engine: self.load(),
        }
    }

    /// Only the control thread (and unit tests of what reads the handle) store.
    pub(crate) fn store(&self, engine: Engine) {
        self.store_shared(Arc::new(engine));
    }

    fn store_shared(&self, engine: Arc<Engine>) {
        let old = {
            let mut guard = self
                .0
                .engine
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *guard, engine)
        };
        // After the store: a reader that sees the new number finds the new engine.
        self.0.generation.fetch_add(1, Ordering::Release);
        drop(old);
    }
}

/// A per-reader cache of the [`EngineHandle`]'s engine, refreshed when the handle's
/// generation moves.
pub struct EngineCache {
    handle: EngineHandle,
    generation: u64,
    engine: Arc<Engine>,
}

impl EngineCache {
    /// The engine in use now (a store is seen by the next call after it).
    pub fn get(&mut self) -> &Arc<Engine> {
        let now = self.handle.0.generation.load(Ordering::Acquire);
        if now != self.generation {
            self.generation = now;
            self.engine = self.handle.load();
        }
        &self.engine
    }
}

/// The node states answers should use under a config: health, admin and config states
/// combined (`health::NodeBook::effective`).
pub type StatesFn = Arc<dyn Fn(&Config) -> NodeStates + Send + Sync>;

/// Errors of the control thread.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("{0}")]
    Loader(#[from] LoaderError),
    #[error("the control thread has stopped")]
    Stopped,
    #[error("shadow run: {0}")]
    Shadow(&'static str),
    /// An RFC 2136 update was journaled after the engine to install read the journal:
    /// installing it would take the update back out of the answers. Compile again.
    #[error("an update arrived while the table was compiled")]
    Stale,
}

/// The zone journal's length when a reload is about to read the config (and with it
/// the journal). Updates append to the journal on the control thread, so a journal of
/// another length at install time means the compiled engine misses an update.
#[derive(Clone, Debug)]
pub struct JournalMark {
    pub path: std::path::PathBuf,
    pub len: u64,
}

impl JournalMark {
    /// The journal's length now (0 when it does not exist).
    #[must_use]
    pub fn take(path: &std::path::Path) -> Self {
        Self {
            path: path.to_path_buf(),
            len: std::fs::metadata(path).map_or(0, |m| m.len()),
        }
    }

    fn moved(&self) -> bool {
        std::fs::metadata(&self.path).map_or(0, |m| m.len()) != self.len
    }
}

/// Sizes of what is live, published after every change so `/metrics` reads them without
/// waiting for an install in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub names: usize,
    pub answers: usize,
    /// The kernel generation in use (0 without XDP).
    pub generation: u32,
}

impl Counts {
    fn of(engine: &Engine, generation: u32) -> Self {
        let sizes = engine.kernel_sizes();
        Self {
            prefixes_v4: sizes.prefixes_v4,
            prefixes_v6: sizes.prefixes_v6,
            names: sizes.names,
            answers: sizes.answers,
            generation,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;
type KernelJob = Box<dyn FnOnce(&mut KernelProgram) + Send>;
type EngineJob = Box<dyn FnOnce(&Engine) -> Option<Engine> + Send>;

/// A shadow run as the control thread holds it (see [`Control::shadow_start`]).
struct ShadowRun {
    /// The candidate, with the node states in effect.
    engine: Arc<Engine>,
    source: String,
    sample_exp: u8,
    started: std::time::SystemTime,
    /// How often a node-state change rebuilt the candidate (and cleared the counts).
    restarts: u32,
}

/// What a shadow run has counted, with both engines to read the decisions.
pub struct ShadowSnapshot {
    pub live: Arc<Engine>,
    pub candidate: Arc<Engine>,
    /// Per `geodns_common::shadow_key`, the queries counted.
    pub counts: Vec<(u64, u64)>,
    pub source: String,
    pub sample_exp: u8,
    pub started: std::time::SystemTime,
    pub restarts: u32,
}

enum Msg {
    Install(
        Box<Engine>,
        Option<JournalMark>,
        Reply<Option<InstallStats>>,
    ),
    ShadowStart(Box<Engine>, String, u8, Reply<InstallStats>),
    ShadowSnapshot(Reply<Option<ShadowSnapshot>>),
    ShadowPromote(Reply<()>),
    ShadowAbort(Reply<bool>),
    ApplyStates(Reply<usize>),
    Modify(EngineJob),
    WithKernel(KernelJob),
    Stop(oneshot::Sender<()>),
}

/// The handle to the control thread; clones talk to the same thread.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::UnboundedSender<Msg>,
    handle: EngineHandle,
    counts: Arc<Mutex<Counts>>,
    counters: Option<Arc<Counters>>,
}

impl Control {
    /// Starts the control thread with the engine `handle` holds (already installed in
    /// `kernel`, when there is one). `states` says which node states to answer with.
    pub fn start(
        handle: EngineHandle,
        kernel: Option<KernelProgram>,
        states: StatesFn,
    ) -> Result<Self, ControlError> {
        let counters = kernel
            .as_ref()
            .map(KernelProgram::counters_reader)
            .transpose()?
            .map(Arc::new);
        let generation = kernel.as_ref().map_or(0, KernelProgram::generation);
        let counts = Arc::new(Mutex::new(Counts::of(&handle.load(), generation)));
        let (tx, rx) = mpsc::unbounded_channel();
        let owner = Owner {
            handle: handle.clone(),
            kernel,
            states,
            counts: counts.clone(),
            shadow: None,
        };
        std::thread::Builder::new()
            .name("geodns-control".to_owned())
            .spawn(move || owner.run(rx))
            .map_err(|e| {
                tracing::error!(error = %e, "starting the control thread");
                ControlError::Stopped
            })?;
        Ok(Self {
            tx,
            handle,
            counts,
            counters,
        })
    }

    /// The engine in use, for answering.
    #[must_use]
    pub fn engine(&self) -> &EngineHandle {
        &self.handle
    }

    /// Installs `engine` (with the node states in effect now) into the idle kernel
    /// generation, flips to it and swaps the engine. On error nothing changed. `None`
    /// without a kernel program.
    pub async fn install(&self, engine: Engine) -> Result<Option<InstallStats>, ControlError> {
        self.install_marked(engine, None).await
    }

    /// [`Control::install`] of an engine a reload compiled from a journal of `mark`'s
    /// length: refused with [`ControlError::Stale`], changing nothing, when an update has
    /// been journaled since; otherwise its zone serial is carried over the running one's
    /// (`carry_serial`, which journals a bumped serial) on the control thread, then it
    /// is installed.
    pub async fn install_marked(
        &self,
        engine: Engine,
        mark: Option<JournalMark>,
    ) -> Result<Option<InstallStats>, ControlError> {
        self.ask(|reply| Msg::Install(Box::new(engine), mark, reply))
            .await
    }

    /// Starts a shadow run of `engine` (the candidate, from `source`): written into the
    /// idle kernel generation without switching; one answered query in `2^sample_exp`
    /// is also looked up there and counted. A shadow run already going is replaced.
    /// Needs the kernel program.
    pub async fn shadow_start(
        &self,
        engine: Engine,
        source: String,
        sample_exp: u8,
    ) -> Result<InstallStats, ControlError> {
        self.ask(|reply| Msg::ShadowStart(Box::new(engine), source, sample_exp, reply))
            .await
    }

    /// The counts of the shadow run going (`None`: none is).
    pub async fn shadow_snapshot(&self) -> Result<Option<ShadowSnapshot>, ControlError> {
        self.ask(Msg::ShadowSnapshot).await
    }

    /// Switches to the shadow run's candidate (the kernel with one update, then the
    /// engine userspace answers with) and ends the run.
    pub async fn shadow_promote(&self) -> Result<(), ControlError> {
        self.ask(Msg::ShadowPromote).await
    }

    /// Ends the shadow run without switching; false when none was going.
    pub async fn shadow_abort(&self) -> Result<bool, ControlError> {
        self.ask(Msg::ShadowAbort).await
    }

    /// Brings the node states of the engine in use (and the kernel's answer sets) to
    /// what the [`StatesFn`] says; returns how many answer entries were rewritten.
    pub async fn apply_states(&self) -> Result<usize, ControlError> {
        self.ask(Msg::ApplyStates).await
    }

    /// Runs `job` on the engine in use, on the control thread (between two changes), and
    /// stores the engine it returns, if any (with the node states in effect): a
    /// read-modify-write no other change can come between. For changes the kernel maps
    /// need not see at once (an RFC 2136 update: the reload its journal triggers
    /// installs the names). The job's second value is returned.
    pub async fn modify<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Engine) -> (Option<Engine>, T) + Send + 'static,
    ) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        let job: EngineJob = Box::new(move |engine| {
            let (new, out) = job(engine);
            let _ = tx.send(out);
            new
        });
        self.tx
            .send(Msg::Modify(job))
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)
    }

    /// Runs `job` on the kernel program, on the control thread (between two changes);
    /// `None` without a kernel program.
    pub async fn with_kernel<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut KernelProgram) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: KernelJob = Box::new(move |k| {
            let _ = tx.send(job(k));
        });
        self.tx.send(Msg::WithKernel(job)).ok()?;
        rx.await.ok()
    }

    /// Sizes of the live table and the generation in use.
    #[must_use]
    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The XDP outcome counters summed over CPUs (`None` without XDP).
    #[must_use]
    pub fn xdp_counters(&self) -> Option<Result<[u64; counter::COUNT as usize], LoaderError>> {
        self.counters.as_ref().map(|c| c.read())
    }

    /// Stops the control thread and drops the kernel program (detaching it), after the
    /// change in progress. Other clones fail from then on.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    async fn ask<T>(&self, msg: impl FnOnce(Reply<T>) -> Msg) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }
}

/// The SOA serial across a reload: when the zone's content changed but the new
/// config's serial is not newer than the one served (the operator edited the zone file
/// or the records and kept the serial), it becomes the served one plus one, and is
/// recorded in the journal so a restart keeps it. Secondaries and caches see the change.
/// Also returns the bytes it appended to the journal (0 or one `serial` line). The
/// control thread calls it at a reload's install, after checking that no update was
/// journaled since the reload read the journal.
#[must_use]
fn carry_serial(old: &Engine, new: Engine) -> (Engine, u64) {
    let (was, now) = (old.config().zone.serial, new.config().zone.serial);
    if now.wrapping_sub(was).cast_signed() > 0 || !new.zone_differs(old) {
        return (new, 0);
    }
    let serial = was.wrapping_add(1).max(1);
    let journal = &new.config().zone.journal;
    let entry = format!("serial {serial}\n");
    let appended = match geodns_maps::zone::journal_append(journal, &entry) {
        Ok(()) => entry.len() as u64,
        Err(e) => {
            tracing::warn!(journal = %journal.display(), error = %e, "the new serial is not recorded; a restart goes back to the configured one");
            0
        }
    };
    (
        new.with_zone(new.config().statics.clone(), serial),
        appended,
    )
}

/// What the control thread owns.
struct Owner {
    handle: EngineHandle,
    kernel: Option<KernelProgram>,
    states: StatesFn,
    counts: Arc<Mutex<Counts>>,
    shadow: Option<ShadowRun>,
}

impl Owner {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Install(engine, mark, reply) => {
                    let stale = mark.as_ref().is_some_and(JournalMark::moved);
                    let _ = reply.send(if stale {
                        Err(ControlError::Stale)
                    } else if mark.is_some() {
                        // A reload's engine: its serial follows the running zone's.
                        // Here, after the check and on the thread that applies
                        // updates, so a refused install leaves no serial line in the
                        // journal and no update comes between the two.
                        let current = self.handle.load();
                        let (engine, _) = carry_serial(&current, *engine);
                        self.install(engine)
                    } else {
                        self.install(*engine)
                    });
                }
                Msg::ShadowStart(engine, source, exp, reply) => {
                    let _ = reply.send(self.shadow_start(*engine, source, exp));
                }
                Msg::ShadowSnapshot(reply) => {
                    let _ = reply.send(self.shadow_snapshot());
                }
                Msg::ShadowPromote(reply) => {
                    let _ = reply.send(self.shadow_promote());
                }
                Msg::ShadowAbort(reply) => {
                    let _ = reply.send(self.shadow_abort());
                }
                Msg::ApplyStates(reply) => {
                    let _ = reply.send(self.apply_states());
                }
                Msg::Modify(job) => {
                    if let Some(new) = job(&self.handle.load()) {
                        let wanted = (self.states)(new.config());
                        let new = if &wanted == new.states() {
                            new
                        } else {
                            new.with_states(&wanted)
                        };
                        // The kernel answers the zone's static data too: it gets the
                        // change first, as with an install.
                        if let (Some(k), None) = (self.kernel.as_mut(), self.shadow.as_ref()) {
                            if let Err(e) = k.install(&kernel_maps(&new)) {
                                tracing::warn!(error = %e, "the kernel keeps its static answers until the next reload");
                            }
                        }
                        self.handle.store(new);
                        self.publish();
                    }
                }
                Msg::WithKernel(job) => {
                    if let Some(k) = self.kernel.as_mut() {
                        job(k);
                    }
                }
                Msg::Stop(done) => {
                    drop(self.kernel.take());
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    fn publish(&self) {
        let generation = self.kernel.as_ref().map_or(0, KernelProgram::generation);
        let counts = Counts::of(&self.handle.load(), generation);
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = counts;
    }

    fn install(&mut self, engine: Engine) -> Result<Option<InstallStats>, ControlError> {
        let wanted = (self.states)(engine.config());
        let engine = if &wanted == engine.states() {
            engine
        } else {
            engine.with_states(&wanted)
        };
        if let Some(run) = self.shadow.take() {
            // The install needs the idle generation the candidate is in.
            tracing::warn!(
                candidate = run.source,
                "a reload during a shadow run: the shadow run is dropped"
            );
            if let Some(k) = self.kernel.as_mut() {
                k.end_shadow()?;
            }
        }
        let stats = match self.kernel.as_mut() {
            Some(k) => Some(k.install(&kernel_maps(&engine))?),
            None => None,
        };
        self.handle.store(engine);
        self.publish();
        Ok(stats)
    }

    fn apply_states(&mut self) -> Result<usize, ControlError> {
        let old = self.handle.load();
        let wanted = (self.states)(old.config());
        if old.states() == &wanted {
            return Ok(0);
        }
        let new = old.with_states(&wanted);
        let changes = answer_changes(&old.kernel_answers(), &new.kernel_answers());
        if let Some(k) = self.kernel.as_mut() {
            k.update_answers(&changes)?;
        }
        for (node, state) in wanted.iter() {
            let was = old.states().get(node);
            if was != state {
                tracing::debug!(node, from = %was, to = %state, "node state in the answers");
            }
        }
        self.handle.store(new);
        self.publish();
        self.restage_shadow()?;
        Ok(changes.len())
    }

    /// After a node-state change: the candidate answers with the new states too, so
    /// the shadow counts compare like with like. It is rewritten into the idle
    /// generation and the counts start again.
    fn restage_shadow(&mut self) -> Result<(), ControlError> {
        let (Some(run), Some(k)) = (self.shadow.as_mut(), self.kernel.as_mut()) else {
            return Ok(());
        };
        let wanted = (self.states)(run.engine.config());
        if &wanted == run.engine.states() {
            return Ok(());
        }
        let candidate = run.engine.with_states(&wanted);
        k.stage_shadow(&kernel_maps(&candidate), run.sample_exp)?;
        run.engine = Arc::new(candidate);
        run.restarts += 1;
        run.started = std::time::SystemTime::now();
        tracing::info!(
            candidate = run.source,
            "node states changed: the shadow candidate was rebuilt, its counts start again"
        );
        Ok(())
    }

    fn shadow_start(
        &mut self,
        engine: Engine,
        source: String,
        sample_exp: u8,
    ) -> Result<InstallStats, ControlError> {
        let k = self
            .kernel
            .as_mut()
            .ok_or(ControlError::Shadow("a shadow run needs the XDP program"))?;
        let wanted = (self.states)(engine.config());
        let engine = if &wanted == engine.states() {
            engine
        } else {
            engine.with_states(&wanted)
        };
        let stats = k.stage_shadow(&kernel_maps(&engine), sample_exp)?;
        tracing::info!(candidate = source, sample_exp, "shadow run started");
        self.shadow = Some(ShadowRun {
            engine: Arc::new(engine),
            source,
            sample_exp,
            started: std::time::SystemTime::now(),
            restarts: 0,
        });
        Ok(stats)
    }

    fn shadow_snapshot(&self) -> Result<Option<ShadowSnapshot>, ControlError> {
        let (Some(run), Some(k)) = (self.shadow.as_ref(), self.kernel.as_ref()) else {
            return Ok(None);
        };
        Ok(Some(ShadowSnapshot {
            live: self.handle.load(),
            candidate: run.engine.clone(),
            counts: k.shadow_counts()?,
            source: run.source.clone(),
            sample_exp: run.sample_exp,
            started: run.started,
            restarts: run.restarts,
        }))
    }

    fn shadow_promote(&mut self) -> Result<(), ControlError> {
        let (Some(run), Some(k)) = (self.shadow.as_ref(), self.kernel.as_mut()) else {
            return Err(ControlError::Shadow("no shadow run to promote"));
        };
        k.promote()?;
        let engine = run.engine.clone();
        tracing::info!(candidate = run.source, "shadow candidate promoted");
        self.shadow = None;
        self.handle.store_shared(engine);
        self.publish();
        Ok(())
    }

    fn shadow_abort(&mut self) -> Result<bool, ControlError> {
        let Some(run) = self.shadow.take() else {
            return Ok(false);
        };
        if let Some(k) = self.kernel.as_mut() {
            k.end_shadow()?;
        }
        tracing::info!(candidate = run.source, "shadow run aborted");
        Ok(true)
    }
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

    fn demo_engine() -> Engine {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.toml");
        let config = Config::from_path(std::path::Path::new(path)).expect("demo config");
        let compiled = geodns_maps::Compiled::build(&config, &mut |_| {}).expect("compiles");
        let states = NodeStates::from_config(&config);
        Engine::new(Arc::new(config), Arc::new(compiled), &states)
    }

    #[tokio::test]
    async fn an_install_compiled_before_an_update_is_refused() {
        let states: StatesFn = Arc::new(NodeStates::from_config);
        let control =
            Control::start(EngineHandle::new(demo_engine()), None, states).expect("control thread");
        let dir = std::env::temp_dir().join(format!("geodns-mark-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let journal = dir.join("journal");
        let before = JournalMark::take(&journal);
        assert!(control
            .install_marked(demo_engine(), Some(before.clone()))
            .await
            .is_ok());
        // An update journaled after the compile read the journal.
        std::fs::write(&journal, "add www.cdn.example.net. 60 TXT \"x\"\n").expect("append");
        assert!(matches!(
            control.install_marked(demo_engine(), Some(before)).await,
            Err(ControlError::Stale)
        ));
        let after = JournalMark::take(&journal);
        assert!(control
            .install_marked(demo_engine(), Some(after))
            .await
            .is_ok());
        control.stop().await;
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// The demo engine with its journal at `journal`, and `ttl` and `serial` for its
    /// zone.
    fn engine_with(journal: &std::path::Path, ttl: u32, serial: u32) -> Engine {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.toml");
        let mut config = Config::from_path(std::path::Path::new(path)).expect("demo config");
        config.zone.journal = journal.to_path_buf();
        config.zone.ttl = ttl;
        config.zone.serial = serial;
        let compiled = geodns_maps::Compiled::build(&config, &mut |_| {}).expect("compiles");
        let states = NodeStates::from_config(&config);
        Engine::new(Arc::new(config), Arc::new(compiled), &states)
    }

    #[tokio::test]
    async fn a_refused_install_journals_no_serial_and_an_accepted_one_carries_it() {
        let dir = std::env::temp_dir().join(format!("geodns-carry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let journal = dir.join("journal");
        // Running: an update already applied (another zone, serial 11).
        let states: StatesFn = Arc::new(NodeStates::from_config);
        let control = Control::start(
            EngineHandle::new(engine_with(&journal, 31, 11)),
            None,
            states,
        )
        .expect("control thread");
        // A reload compiled before that update's journal line: refused, and the
        // journal holds only the update's line (no bumped serial of the stale zone).
        let mark = JournalMark::take(&journal);
        std::fs::write(&journal, "update line\n").expect("append");
        assert!(matches!(
            control
                .install_marked(engine_with(&journal, 30, 10), Some(mark))
                .await,
            Err(ControlError::Stale)
        ));
        assert_eq!(
            std::fs::read_to_string(&journal).expect("journal"),
            "update line\n"
        );
        // A reload of another zone that saw the journal: installed with the serial
        // after the running one, journaled.
        let mark = JournalMark::take(&journal);
        assert!(control
            .install_marked(engine_with(&journal, 30, 10), Some(mark))
            .await
            .is_ok());
        assert_eq!(control.engine().load().config().zone.serial, 12);
        assert_eq!(
            std::fs::read_to_string(&journal).expect("journal"),
            "update line\nserial 12\n"
        );
        control.stop().await;
        std::fs::remove_dir_all(&dir).expect("cleanup");
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
}
