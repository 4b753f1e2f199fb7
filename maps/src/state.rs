//! Node states as answers see them: the vocabulary shared by the config (a node's
//! `admin` state), the engine (which candidates are answered) and health.
use std::collections::{BTreeMap, BTreeSet};

/// State of a node as answers see it. Admin state (config or admin command) overrides
/// health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Up,
    Down,
    /// Healthy but taking no new clients.
    Drain,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Drain => "drain",
        })
    }
}

/// Node name -> state, and which `Down` nodes are down only by their health checks
/// (an operator's `down`/`drain` is always honoured; a node the checks call down is
/// still answered when every candidate of its region is, see [`Engine`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStates {
    states: BTreeMap<String, NodeState>,
    unhealthy: BTreeSet<String>,
}

impl NodeStates {
    /// Unknown nodes are `Down`.
    #[must_use]
    pub fn get(&self, node: &str) -> NodeState {
        self.states.get(node).copied().unwrap_or(NodeState::Down)
    }

    /// Sets a state decided by an operator or the config (for `Down`: not a health
    /// verdict). Returns the previous state.
    pub fn set(&mut self, node: &str, state: NodeState) -> Option<NodeState> {
        self.unhealthy.remove(node);
        self.states.insert(node.to_owned(), state)
    }

    /// Sets `node` down by its health checks. Returns the previous state.
    pub fn set_unhealthy(&mut self, node: &str) -> Option<NodeState> {
        self.unhealthy.insert(node.to_owned());
        self.states.insert(node.to_owned(), NodeState::Down)
    }

    /// Whether `node` is down by its health checks alone.
    #[must_use]
    pub fn is_unhealthy(&self, node: &str) -> bool {
        self.unhealthy.contains(node)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, NodeState)> {
        self.states.iter().map(|(k, v)| (k.as_str(), *v))
    }
}
