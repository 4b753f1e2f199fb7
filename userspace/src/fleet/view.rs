//! The fleet's keys in etcd, their values, and what the boxes agree on from them.
//!
//! Under the prefix (`--fleet-prefix`, default `/geodns`):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `PREFIX/config` | the config (TOML text); its etcd `mod_revision` is the config revision | none |
//! | `PREFIX/admin/NODE` | `up`, `down` or `drain`; no key: `auto` | none |
//! | `PREFIX/health/BOX` | the box's own health verdicts, JSON `{"node": "up"\|"down"}` | the box's |
//! | `PREFIX/status/BOX` | [`BoxStatus`] as JSON, rewritten every heartbeat | none |
//!
//! A box's health key lives as long as its lease: a box that dies or loses etcd stops
//! counting once the lease runs out. Its status key stays, with an ageing heartbeat,
//! so `geodns fleet status` shows a box that went away.
use std::collections::{BTreeMap, BTreeSet};

use geodns_maps::{NodeState, Quorum};

use crate::health::FleetStates;

/// The key layout under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// Without a trailing `/`.
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Config,
    Admin(&'a str),
    Health(&'a str),
    Status(&'a str),
    Other,
}

impl Keys {
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// Everything of the fleet: `PREFIX/`.
    #[must_use]
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    #[must_use]
    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    #[must_use]
    pub fn admin(&self, node: &str) -> String {
        format!("{}/admin/{node}", self.prefix)
    }

    #[must_use]
    pub fn health(&self, name: &str) -> String {
        format!("{}/health/{name}", self.prefix)
    }

    #[must_use]
    pub fn status(&self, name: &str) -> String {
        format!("{}/status/{name}", self.prefix)
    }

    /// `PREFIX/status/`, every box's status.
    #[must_use]
    pub fn statuses(&self) -> String {
        format!("{}/status/", self.prefix)
    }

    #[must_use]
    pub fn parse<'a>(&self, key: &'a str) -> Key<'a> {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Key::Other;
        };
        if rest == "config" {
            return Key::Config;
        }
        match rest.split_once('/') {
            Some(("admin", node)) if !node.is_empty() => Key::Admin(node),
            Some(("health", name)) if !name.is_empty() => Key::Health(name),
            Some(("status", name)) if !name.is_empty() => Key::Status(name),
            _ => Key::Other,
        }
    }
}

/// One box as `geodns fleet status` shows it (`PREFIX/status/BOX`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoxStatus {
    pub name: String,
    /// The fleet config revision in use; `None`: the box's own file (nothing pushed yet,
    /// or the pushed config never applied here).
    pub config_revision: Option<i64>,
    /// SHA-256 of the config text in use (hex).
    pub config_sha256: String,
    /// The kernel generation in use (0 without XDP).
    pub generation: u32,
    /// Each database of the config in use: its path and SHA-256 (hex), or why not.
    pub databases: Vec<(String, String)>,
    /// The last rollout that failed here, with its revision.
    pub last_error: Option<String>,
    /// The node states answers use.
    pub states: BTreeMap<String, NodeState>,
    /// Whether the box reaches etcd (it wrote this, so it does; kept for readers).
    pub connected: bool,
    /// When the box wrote this, in milliseconds since the Unix epoch.
    pub heartbeat_unix_ms: u64,
}

/// A box's own health verdicts (`PREFIX/health/BOX`).
pub type HealthView = BTreeMap<String, NodeState>;

/// The admin state stored for a node, as text.
#[must_use]
pub fn admin_value(state: NodeState) -> &'static str {
    match state {
        NodeState::Up => "up",
        NodeState::Down => "down",
        NodeState::Drain => "drain",
    }
}

fn parse_admin(value: &[u8]) -> Option<NodeState> {
    match std::str::from_utf8(value).ok()?.trim() {
        "up" => Some(NodeState::Up),
        "down" => Some(NodeState::Down),
        "drain" => Some(NodeState::Drain),
        _ => None,
    }
}

/// What this box last read of the fleet's keys (a snapshot kept up to date by the
/// watch). Status keys are not kept: no decision depends on them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirror {
    pub admin: BTreeMap<String, NodeState>,
    /// Health views of the live boxes, by box.
    pub health: BTreeMap<String, HealthView>,
    /// The config text and its revision (`mod_revision`).
    pub config: Option<(i64, String)>,
    /// The etcd revision this mirror is at.
    pub revision: i64,
}

impl Mirror {
    /// A key was written. A value that cannot be read is ignored, and logged: an
    /// admin key with garbage counts as no admin state.
    pub fn put(&mut self, keys: &Keys, key: &str, value: &[u8], mod_revision: i64) {
        match keys.parse(key) {
            Key::Config => {
                let text = String::from_utf8_lossy(value).into_owned();
                self.config = Some((mod_revision, text));
            }
            Key::Admin(node) => {
                if let Some(s) = parse_admin(value) {
                    self.admin.insert(node.to_owned(), s);
                } else {
                    tracing::warn!(key, "fleet: admin value is not up, down or drain; ignored");
                    self.admin.remove(node);
                }
            }
            Key::Health(name) => match serde_json::from_slice::<HealthView>(value) {
                Ok(view) => {
                    self.health.insert(name.to_owned(), view);
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "fleet: health view unreadable; box not counted");
                    self.health.remove(name);
                }
            },
            Key::Status(_) | Key::Other => {}
        }
    }

    /// A key was deleted (or its lease ran out).
    pub fn delete(&mut self, keys: &Keys, key: &str) {
        match keys.parse(key) {
            Key::Config => self.config = None,
            Key::Admin(node) => {
                self.admin.remove(node);
            }
            Key::Health(name) => {
                self.health.remove(name);
            }
            Key::Status(_) | Key::Other => {}
        }
    }

    /// What every box applies: the admin states, and the nodes that at least
    /// `quorum` of the live boxes see down. `own` replaces this box's view (while
    /// etcd is unreachable: its own checks go on, the other views are the last read).
    #[must_use]
    pub fn agreed(&self, quorum: Quorum, own: Option<(&str, &HealthView)>) -> FleetStates {
        let mut views: BTreeMap<&str, &HealthView> =
            self.health.iter().map(|(b, v)| (b.as_str(), v)).collect();
        if let Some((name, view)) = own {
            views.insert(name, view);
        }
        let needed = quorum.needed(views.len()).max(1);
        let mut seen_down: BTreeMap<&str, usize> = BTreeMap::new();
        for view in views.values() {
            for (node, state) in *view {
                if *state == NodeState::Down {
                    *seen_down.entry(node.as_str()).or_default() += 1;
                }
            }
        }
        let down: BTreeSet<String> = seen_down
            .into_iter()
            .filter(|(_, n)| *n >= needed)
            .map(|(node, _)| node.to_owned())
            .collect();
        FleetStates {
            admin: self.admin.clone(),
            down,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(pairs: &[(&str, NodeState)]) -> HealthView {
        pairs.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
    }

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("/geodns/");
        assert_eq!(k.all(), "/geodns/");
        assert_eq!(k.parse(&k.config()), Key::Config);
        assert_eq!(k.parse(&k.admin("fra1")), Key::Admin("fra1"));
        assert_eq!(k.parse(&k.health("box-a")), Key::Health("box-a"));
        assert_eq!(k.parse(&k.status("box-a")), Key::Status("box-a"));
        assert_eq!(k.parse("/geodns/admin/"), Key::Other);
        assert_eq!(k.parse("/geodnsx/config"), Key::Other);
        assert_eq!(k.parse("/other/config"), Key::Other);
    }

    #[test]
    fn quorum_of_live_boxes_takes_a_node_down() {
        use NodeState::{Down, Up};
        let k = Keys::new("/g");
        let mut m = Mirror::default();
        let put = |m: &mut Mirror, b: &str, v: &HealthView| {
            m.put(&k, &k.health(b), &serde_json::to_vec(v).expect("json"), 1);
        };
        put(&mut m, "a", &view(&[("fra1", Down), ("ams1", Up)]));
        put(&mut m, "b", &view(&[("fra1", Up), ("ams1", Up)]));
        put(&mut m, "c", &view(&[("fra1", Up), ("ams1", Up)]));
        // 1 of 3: up everywhere.
        assert!(m.agreed(Quorum::Majority, None).down.is_empty());
        put(&mut m, "b", &view(&[("fra1", Down), ("ams1", Up)]));
        // 2 of 3: down.
        let agreed = m.agreed(Quorum::Majority, None);
        assert_eq!(agreed.down, BTreeSet::from(["fra1".to_owned()]));
        // Quorum 3 needs all three.
        assert!(m.agreed(Quorum::Boxes(3), None).down.is_empty());
        // Box c dies (its lease runs out): 2 of 2 still down; b dies too: 1 of 1.
        m.delete(&k, &k.health("c"));
        assert_eq!(m.agreed(Quorum::Majority, None).down.len(), 1);
        m.delete(&k, &k.health("b"));
        assert_eq!(m.agreed(Quorum::Majority, None).down.len(), 1);
        // A fixed quorum of 2 with one live box: never down.
        assert!(m.agreed(Quorum::Boxes(2), None).down.is_empty());
        // This box's own view replaces its entry (etcd unreachable).
        let own = view(&[("fra1", Up)]);
        assert!(m
            .agreed(Quorum::Majority, Some(("a", &own)))
            .down
            .is_empty());
    }

    #[test]
    fn admin_keys_and_bad_values() {
        let k = Keys::new("/g");
        let mut m = Mirror::default();
        m.put(&k, &k.admin("fra1"), b"drain", 5);
        m.put(&k, &k.admin("ams1"), b"sideways", 6);
        m.put(&k, &k.health("a"), b"not json", 7);
        m.put(&k, &k.config(), b"[zone]", 8);
        assert_eq!(
            m.agreed(Quorum::Majority, None).admin,
            BTreeMap::from([("fra1".to_owned(), NodeState::Drain)])
        );
        assert!(m.health.is_empty());
        assert_eq!(m.config, Some((8, "[zone]".to_owned())));
        m.delete(&k, &k.admin("fra1"));
        assert!(m.admin.is_empty());
    }
}
