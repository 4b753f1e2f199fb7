//! What the operator and the checks want, per node: health with hysteresis, runtime admin
//! states, the state file that remembers both across restarts, and the node states
//! answers use ([`NodeBook::effective`]).
use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    io::Write as _,
    path::{Path, PathBuf},
    pin::Pin,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
};

use geodns_maps::{Config, NodeState, NodeStates};

use super::HealthError;

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
    pub(super) fn node_state(self) -> Option<NodeState> {
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
pub(super) struct NodeHealth {
    pub(super) target: String,
    pub(super) hysteresis: Hysteresis,
    pub(super) checks: u64,
    pub(super) failed: u64,
    pub(super) last_error: Option<String>,
}

impl NodeHealth {
    fn state(&self) -> NodeState {
        if self.hysteresis.up {
            NodeState::Up
        } else {
            NodeState::Down
        }
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StateFile {
    #[serde(default)]
    health: BTreeMap<String, NodeState>,
    #[serde(default)]
    admin: BTreeMap<String, NodeState>,
}

/// What a fleet of boxes agreed on (`crate::fleet`): it replaces the local admin states
/// and the local health verdicts in [`NodeBook::effective`], so every box answers alike.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetStates {
    /// Admin states set for the whole fleet.
    pub admin: BTreeMap<String, NodeState>,
    /// Nodes down fleet-wide: seen down by a quorum of the live boxes.
    pub down: BTreeSet<String>,
}

/// Where admin states go instead of the local book (the fleet's etcd): `None` clears the
/// node's admin state (`auto`). Resolves once the state is in effect here.
pub type AdminWriter = Arc<
    dyn Fn(String, Option<NodeState>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// What the operator and the checks want.
#[derive(Debug, Default)]
pub(super) struct Desired {
    pub(super) health: BTreeMap<String, NodeHealth>,
    pub(super) admin: BTreeMap<String, NodeState>,
    /// Health remembered by the state file for nodes not yet (re)checked.
    pub(super) remembered: BTreeMap<String, NodeState>,
    /// What the fleet agreed on, when this box is in one.
    pub(super) fleet: Option<FleetStates>,
}

impl Desired {
    /// The states answers use under `config`: an admin state (runtime, then the
    /// config's) wins, else health, else up. When more than `max_down_percent` of the
    /// config's nodes are down by health at once, the checker itself is suspect (its
    /// own uplink failing looks like every node failing): health is ignored and the
    /// second value says so.
    pub(super) fn effective(&self, config: &Config, max_down_percent: u8) -> (NodeStates, bool) {
        let health = |node: &str| match &self.fleet {
            Some(f) if f.down.contains(node) => Some(NodeState::Down),
            Some(_) => None,
            None => self.health.get(node).map(NodeHealth::state),
        };
        let admin = self.fleet.as_ref().map_or(&self.admin, |f| &f.admin);
        let down = config
            .nodes
            .iter()
            .filter(|n| health(&n.name) == Some(NodeState::Down))
            .count();
        let suspect = down * 100 > config.nodes.len() * usize::from(max_down_percent);
        let mut states = NodeStates::default();
        for n in &config.nodes {
            match admin.get(&n.name).copied().or(n.admin) {
                Some(admin) => {
                    states.set(&n.name, admin);
                }
                None if !suspect && health(&n.name) == Some(NodeState::Down) => {
                    states.set_unhealthy(&n.name);
                }
                None => {
                    states.set(&n.name, NodeState::Up);
                }
            }
        }
        (states, suspect)
    }

    /// Every node of `config`, in config order.
    pub(super) fn status(&self, config: &Config, max_down_percent: u8) -> Vec<NodeStatus> {
        let (states, _) = self.effective(config, max_down_percent);
        let admin = self.fleet.as_ref().map_or(&self.admin, |f| &f.admin);
        config
            .nodes
            .iter()
            .map(|n| {
                let h = self.health.get(&n.name);
                NodeStatus {
                    node: n.name.clone(),
                    state: states.get(&n.name),
                    admin: admin.get(&n.name).copied(),
                    config_admin: n.admin,
                    health: h.map(NodeHealth::state),
                    check: n.check.clone(),
                    checks: h.map_or(0, |h| h.checks),
                    failed_checks: h.map_or(0, |h| h.failed),
                    last_error: h.and_then(|h| h.last_error.clone()),
                }
            })
            .collect()
    }

    fn file(&self) -> StateFile {
        let mut health = self.remembered.clone();
        for (node, h) in &self.health {
            health.insert(node.clone(), h.state());
        }
        StateFile {
            health,
            admin: self.admin.clone(),
        }
    }
}

/// The node book: what the checks and the operator want, shared by the health task,
/// the admin API and the control thread (which reads [`NodeBook::effective`] for every
/// engine it stores). Clones share it.
#[derive(Clone, Default)]
pub struct NodeBook(Arc<BookInner>);

#[derive(Default)]
struct BookInner {
    desired: Mutex<Desired>,
    state_file: Option<PathBuf>,
    /// The state file needs rewriting.
    dirty: AtomicBool,
    /// `--max-down-share`, in percent.
    max_down_percent: u8,
    /// The checker is suspect now (see [`Desired::effective`]).
    suspect: AtomicBool,
    /// Admin states go there (the fleet), not into this book.
    admin_writer: Mutex<Option<AdminWriter>>,
}

impl NodeBook {
    /// A book with what `state_file` remembers (a missing file is an empty book; an
    /// unreadable one is logged and ignored: the checks will tell).
    #[must_use]
    pub fn open(state_file: Option<&Path>, max_down_percent: u8) -> Self {
        let mut desired = Desired::default();
        if let Some(path) = state_file {
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
        Self(Arc::new(BookInner {
            desired: Mutex::new(desired),
            state_file: state_file.map(Path::to_path_buf),
            dirty: AtomicBool::new(false),
            max_down_percent,
            suspect: AtomicBool::new(false),
            admin_writer: Mutex::new(None),
        }))
    }

    /// The states answers use under `config`. Says loudly when the checker becomes
    /// suspect (health ignored) and when it stops being so.
    #[must_use]
    pub fn effective(&self, config: &Config) -> NodeStates {
        let (states, suspect) = self.lock().effective(config, self.0.max_down_percent);
        if self.0.suspect.swap(suspect, Ordering::Relaxed) != suspect {
            if suspect {
                tracing::error!(
                    max_down_percent = self.0.max_down_percent,
                    "more nodes down by health than --max-down-share allows: the health checker itself is suspect (its own network?); health is IGNORED and every node not taken out by an operator is answered"
                );
            } else {
                tracing::warn!("health checks are trusted again");
            }
        }
        states
    }

    /// Whether health is ignored now because too many nodes are down at once.
    #[must_use]
    pub fn suspect(&self) -> bool {
        self.0.suspect.load(Ordering::Relaxed)
    }

    /// Every node of `config`, in config order.
    #[must_use]
    pub fn status(&self, config: &Config) -> Vec<NodeStatus> {
        self.lock().status(config, self.0.max_down_percent)
    }

    /// [`Self::effective`] as the control thread takes it.
    #[must_use]
    pub fn states_fn(&self) -> crate::control::StatesFn {
        let book = self.clone();
        Arc::new(move |c: &Config| book.effective(c))
    }

    /// This box's own health verdicts: every checked node, up or down.
    #[must_use]
    pub fn own_health(&self) -> BTreeMap<String, NodeState> {
        self.lock()
            .health
            .iter()
            .map(|(node, h)| (node.clone(), h.state()))
            .collect()
    }

    /// Replaces what the fleet agreed on (`None`: this box decides alone). `true` when
    /// it changed.
    #[must_use]
    pub fn set_fleet(&self, fleet: Option<FleetStates>) -> bool {
        let mut d = self.lock();
        if d.fleet == fleet {
            return false;
        }
        d.fleet = fleet;
        true
    }

    /// Sends admin states to `writer` from now on (the fleet's store).
    pub fn set_admin_writer(&self, writer: AdminWriter) {
        *self
            .0
            .admin_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(writer);
    }

    pub(super) fn admin_writer(&self) -> Option<AdminWriter> {
        self.0
            .admin_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Desired> {
        self.0
            .desired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn mark_dirty(&self) {
        self.0.dirty.store(true, Ordering::Relaxed);
    }

    /// What the state file would hold now (health and admin states, JSON), for the
    /// daemon that takes over from this one.
    #[must_use]
    pub fn snapshot(&self) -> String {
        serde_json::to_string(&self.lock().file()).unwrap_or_default()
    }

    /// Takes the states a handing-over daemon sent ([`Self::snapshot`]) instead of the
    /// state file's: they are newer. Unreadable text is logged and ignored.
    pub fn adopt(&self, snapshot: &str) {
        match serde_json::from_str::<StateFile>(snapshot) {
            Ok(file) => {
                tracing::info!(
                    health = file.health.len(),
                    admin = file.admin.len(),
                    "node states taken over from the previous daemon"
                );
                let mut desired = self.lock();
                desired.remembered = file.health;
                desired.admin = file.admin;
            }
            Err(e) => tracing::warn!(error = %e, "node states of the previous daemon ignored"),
        }
    }

    /// Rewrites the state file if something changed since the last write.
    pub fn save_if_dirty(&self) {
        if !self.0.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let Some(path) = &self.0.state_file else {
            return;
        };
        let file = self.lock().file();
        if let Err(e) = write_state_file(path, &file) {
            tracing::error!(error = %e, "state file not written");
            self.mark_dirty();
        }
    }
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
    // Written aside, synced and renamed, then the directory synced: a crash or power
    // loss leaves the old file or the new one, never half a file or none.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("fsync", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// In a fleet, the agreed states replace the local admin states and the local
    /// health verdicts; the config's own `admin` still wins over health.
    #[test]
    fn fleet_states_replace_the_local_admin_and_health() {
        let config = Config::from_str_named(
            r#"
[zone]
origin = "cdn.example.net."
[[zone.ns]]
name = "ns1.example.org."
[nodes.a]
ipv4 = "198.18.1.1"
check = "198.18.1.1:80"
[nodes.b]
ipv4 = "198.18.1.2"
check = "198.18.1.2:80"
[nodes.c]
ipv4 = "198.18.1.3"
admin = "drain"
[nodes.d]
ipv4 = "198.18.1.4"
[maps.m]
default = ["a", "b", "c", "d"]
[[records]]
name = "www"
map = "m"
[fallback]
d = 1
"#,
            "book-test.toml",
        )
        .expect("config");
        let book = NodeBook::open(None, 100);
        {
            let mut d = book.lock();
            d.admin.insert("a".to_owned(), NodeState::Down);
            d.health.insert(
                "b".to_owned(),
                NodeHealth {
                    target: "198.18.1.2:80".to_owned(),
                    hysteresis: Hysteresis::new(false, 2, 3),
                    checks: 3,
                    failed: 3,
                    last_error: None,
                },
            );
        }
        let alone = book.effective(&config);
        assert_eq!(alone.get("a"), NodeState::Down, "local admin");
        assert_eq!(alone.get("b"), NodeState::Down, "local health");
        assert_eq!(book.own_health().get("b"), Some(&NodeState::Down));

        let fleet = FleetStates {
            admin: BTreeMap::from([("d".to_owned(), NodeState::Drain)]),
            down: BTreeSet::from(["a".to_owned(), "c".to_owned()]),
        };
        assert!(book.set_fleet(Some(fleet.clone())));
        assert!(!book.set_fleet(Some(fleet)), "unchanged");
        let agreed = book.effective(&config);
        assert_eq!(
            agreed.get("a"),
            NodeState::Down,
            "down by the fleet's quorum"
        );
        assert_eq!(agreed.get("b"), NodeState::Up, "this box alone saw it down");
        assert_eq!(agreed.get("c"), NodeState::Drain, "the config's admin wins");
        assert_eq!(agreed.get("d"), NodeState::Drain, "the fleet's admin state");
        let status = book.status(&config);
        assert_eq!(status[3].admin, Some(NodeState::Drain), "{status:?}");
        assert_eq!(status[0].admin, None, "the local admin state is not shown");
        assert!(book.set_fleet(None));
        assert_eq!(book.effective(&config).get("a"), NodeState::Down);
    }
}
