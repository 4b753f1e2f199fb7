//! Reloads: which files are watched, the compile, the shrink guard, the hand-over to
//! the control thread.
use super::*;

/// Reads of the config in one reload when RFC 2136 updates keep arriving during its
/// compile (each read then installs nothing).
const RELOAD_ATTEMPTS: usize = 3;

/// Why [`Reloader::apply`] changed nothing.
enum ApplyError {
    /// Counted and logged as a failed or refused reload.
    Failed(String),
    /// An update was journaled during the compile: read and compile again.
    Stale,
}

/// Compiles the config `config` with the node states `states` gives for it (the
/// config's own without it).
pub fn compile_config(
    config: Config,
    states: Option<&dyn Fn(&Config) -> NodeStates>,
) -> anyhow::Result<Engine> {
    crate::fleet::pins::check_pins(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.file))?;
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
    /// Reads the config at `path` and notes its files (the config, its databases, its
    /// BGP RIB dumps, the zone file and its journal)
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
            let ribs = c.bgp.iter().flat_map(|b| &b.rib);
            for f in dbs.chain(ribs).chain(&c.statics.files) {
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

/// Reloads the config and its databases.
pub(super) struct Reloader<'a> {
    pub(super) config: &'a Path,
    pub(super) control: &'a Control,
    pub(super) health: &'a HealthControl,
    pub(super) counts: &'a ReloadStats,
    pub(super) guard: ReloadArgs,
}

impl Reloader<'_> {
    /// Reloads on SIGHUP (SIGUSR1: without the shrink guard) and when the config or one
    /// of its databases changes, until SIGINT or SIGTERM.
    /// Reloads on signals and file changes until SIGINT/SIGTERM or a new daemon has
    /// taken over (`handed_over` turns true); says which.
    pub(super) async fn until_stopped(
        &self,
        signals: Signals,
        every: Duration,
        mut handed_over: tokio::sync::watch::Receiver<bool>,
        mut pushes: Option<tokio::sync::mpsc::Receiver<ConfigPush>>,
    ) -> anyhow::Result<Stop> {
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
                Some(push) = next_push(&mut pushes) => {
                    if let Some(w) = self.push(push).await {
                        watch = w;
                    }
                    continue;
                }
                _ = int.recv() => return Ok(Stop::Signal),
                _ = term.recv() => return Ok(Stop::Signal),
                _ = handed_over.wait_for(|h| *h) => return Ok(Stop::HandedOver),
            };
            watch = self.reload(why, force).await;
        }
    }

    /// Reads the config file and applies it ([`Self::apply`]). Returns the files as
    /// they were read.
    async fn reload(&self, why: &str, force: bool) -> Watch {
        // An update journaled while this reload compiles would be taken back out of the
        // answers by its install: the control thread refuses that install, and the
        // reload reads and compiles again (updates come one at a time, so this ends).
        for _ in 0..RELOAD_ATTEMPTS {
            let mark = JournalMark::take(&self.control.engine().load().config().zone.journal);
            let (config, watch) = Watch::read(self.config);
            match config {
                Ok(c) => {
                    if let Err(ApplyError::Stale) = self.apply(c, why, force, Some(mark)).await {
                        tracing::info!(
                            trigger = why,
                            "an update arrived during the reload: compiling again"
                        );
                        continue;
                    }
                }
                Err(e) => {
                    self.failed(why, format!("{e:#}"));
                }
            }
            return watch;
        }
        Watch::read(self.config).1
    }

    fn failed(&self, why: &str, error: String) -> String {
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(trigger = why, error = %error, "reload failed; the running maps stay");
        error
    }

    /// Compiles in the background; on success hands the engine to the control thread;
    /// on failure leaves everything as it was, counts it and returns why.
    async fn apply(
        &self,
        config: Config,
        why: &str,
        force: bool,
        mark: Option<JournalMark>,
    ) -> Result<(), ApplyError> {
        let started = Instant::now();
        let health = self.health.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            compile_config(config, Some(&|c: &Config| health.states_for(c)))
        })
        .await;
        // The zone serial is carried on the control thread, at the install (see
        // `Control::install_marked`).
        let engine = match compiled {
            Ok(Ok(engine)) => engine,
            Ok(Err(e)) => return Err(ApplyError::Failed(self.failed(why, format!("{e:#}")))),
            Err(e) => return Err(ApplyError::Failed(self.failed(why, e.to_string()))),
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
            return Err(ApplyError::Failed(format!(
                "refused: {shrink}, more than --max-shrink {}% allows",
                self.guard.max_shrink
            )));
        }
        match self.control.install_marked(engine, mark).await {
            Ok(_) => {}
            Err(ControlError::Stale) => return Err(ApplyError::Stale),
            Err(e) => {
                return Err(ApplyError::Failed(
                    self.failed(why, format!("installing the maps: {e}")),
                ))
            }
        }
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counts.last_us.store(us, Ordering::Relaxed);
        self.counts.ok.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            trigger = why,
            seconds = started.elapsed().as_secs_f64(),
            "reloaded"
        );
        Ok(())
    }

    /// Applies a config revision of the fleet: compiled from its text against the
    /// local files, then written over the config file (so a restart starts from it).
    /// The answer goes back to the fleet; the watched files, when it applied.
    async fn push(&self, push: ConfigPush) -> Option<Watch> {
        let why = "fleet config";
        let result = self.push_inner(&push.text, why).await;
        let applied = result.is_ok();
        let _ = push.reply.send(result);
        applied.then(|| Watch::read(self.config).1)
    }

    async fn push_inner(&self, text: &str, why: &str) -> Result<(), String> {
        let name = self.config.display().to_string();
        let config =
            Config::from_str_named(text, &name).map_err(|e| self.failed(why, e.to_string()))?;
        // Written aside first: a file that cannot be written fails before anything
        // changes; renamed over the config once the maps are in.
        let tmp = self.config.with_extension("fleet-new");
        std::fs::write(&tmp, text)
            .map_err(|e| self.failed(why, format!("writing {}: {e}", tmp.display())))?;
        if let Err(e) = self.apply(config, why, false, None).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(match e {
                ApplyError::Failed(e) => e,
                // Not without a journal mark.
                ApplyError::Stale => "an update arrived while the table was compiled".to_owned(),
            });
        }
        std::fs::rename(&tmp, self.config).map_err(|e| {
            format!(
                "in use, but not written over {}: {e}",
                self.config.display()
            )
        })
    }
}

/// The next config revision from the fleet; never, without one.
async fn next_push(
    pushes: &mut Option<tokio::sync::mpsc::Receiver<ConfigPush>>,
) -> Option<ConfigPush> {
    match pushes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
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

/// Why the daemon stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// SIGINT or SIGTERM.
    Signal,
    /// A new daemon has the sockets and the link: leave both.
    HandedOver,
}
