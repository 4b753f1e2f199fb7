//! Answer sets from node states, and the whole DNS decision in userspace.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use geodns_common::{AnswerKey, AnswerSet, NameKey, NameValue, PrefixValue};

use crate::{compile::Compiled, config::Config};

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

/// Node name -> state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStates {
    states: BTreeMap<String, NodeState>,
}

impl NodeStates {
    /// Every node `Up`, except those with an admin state in the config.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let states = config
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.admin.unwrap_or(NodeState::Up)))
            .collect();
        Self { states }
    }

    /// Unknown nodes are `Down`.
    #[must_use]
    pub fn get(&self, node: &str) -> NodeState {
        self.states.get(node).copied().unwrap_or(NodeState::Down)
    }

    /// Returns the previous state.
    pub fn set(&mut self, node: &str, state: NodeState) -> Option<NodeState> {
        self.states.insert(node.to_owned(), state)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, NodeState)> {
        self.states.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// One question as the engine needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Wire format (any case).
    pub name: Vec<u8>,
    pub qtype: u16,
    /// The ECS address when the query carried a valid ECS option with a non-zero
    /// source prefix, else the packet's source address (like the kernel).
    pub client: IpAddr,
}

impl Question {
    /// From a presentation name (`www.cdn.example.net.` or without the final dot).
    #[must_use]
    pub fn new(name: &str, qtype: u16, client: IpAddr) -> Self {
        let _ = (name, qtype, client);
        unimplemented!()
    }

    #[must_use]
    pub fn from_wire(name: &[u8], qtype: u16, client: IpAddr) -> Self {
        Self {
            name: name.to_vec(),
            qtype,
            client,
        }
    }
}

/// Where an address answer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// The region's answer set (what the kernel answers too).
    Geo { region: u16 },
    /// Weighted round robin over `[fallback]`: the region has no up candidate of the
    /// family, or the address is in no database (region 0). `fail_open` when every
    /// fallback node of the family was down too and they were used anyway.
    Fallback { region: u16, fail_open: bool },
    /// Glue addresses of an in-zone NS name from `[zone]`.
    Glue,
}

/// The decision for one question; NXDOMAIN, NODATA and REFUSED are answers, not errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The name is not in our zone.
    Refused,
    NxDomain,
    /// The name exists but has no record of this type.
    NoData,
    /// SOA at the apex: build it from `engine.config().zone`.
    Soa,
    /// NS at the apex: build it from `engine.config().zone.ns`.
    Ns,
    Addresses {
        addrs: Vec<IpAddr>,
        ttl: u32,
        /// Length of the matched prefix: the ECS scope when the query had ECS.
        scope: u8,
        source: AnswerSource,
    },
}

/// Exactly what the kernel maps of one generation hold.
#[derive(Clone, Debug, Default)]
pub struct KernelMaps {
    pub prefixes_v4: Vec<([u8; 4], u8, PrefixValue)>,
    pub prefixes_v6: Vec<([u8; 16], u8, PrefixValue)>,
    pub names: Vec<(NameKey, NameValue)>,
    pub answers: Vec<(AnswerKey, AnswerSet)>,
}

/// Draws the per-query random number of the `spread` policy.
pub trait Picker: Send + Sync + std::fmt::Debug {
    /// A number uniformly in `[0, total)`; `total > 0`.
    fn below(&self, total: u32) -> u32;
}

/// Lock-free `SplitMix64`; seed it for reproducible tests.
#[derive(Debug)]
pub struct SplitMix {
    state: std::sync::atomic::AtomicU64,
}

impl SplitMix {
    #[must_use]
    pub fn seeded(seed: u64) -> Self {
        Self {
            state: std::sync::atomic::AtomicU64::new(seed),
        }
    }
}

impl Picker for SplitMix {
    fn below(&self, total: u32) -> u32 {
        let _ = total;
        unimplemented!()
    }
}

/// Why one decision was made; `geodns lookup` prints it.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct Explanation {
    /// The address looked up (the ECS prefix's address when one was given).
    pub client: IpAddr,
    pub ecs: Option<String>,
    pub prefix: String,
    pub prefix_len: u8,
    pub region: u16,
}

/// Answer sets for every (record, region) under one set of node states, plus the
/// compiled prefixes they share with other engines.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    compiled: Arc<Compiled>,
}

impl Engine {
    #[must_use]
    pub fn new(config: Arc<Config>, compiled: Arc<Compiled>, states: &NodeStates) -> Self {
        let _ = states;
        Self { config, compiled }
    }

    /// The same config and prefixes under new node states.
    #[must_use]
    pub fn with_states(&self, states: &NodeStates) -> Self {
        Self::new(self.config.clone(), self.compiled.clone(), states)
    }

    /// Replaces the random source of the `spread` policy (tests seed it).
    #[must_use]
    pub fn with_picker(self, picker: Box<dyn Picker>) -> Self {
        let _ = picker;
        self
    }

    #[must_use]
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    #[must_use]
    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    /// The whole decision for one question.
    #[must_use]
    pub fn resolve(&self, question: &Question) -> Resolution {
        let _ = question;
        unimplemented!()
    }

    /// How many fallback answers used nodes that were all down (fail open).
    #[must_use]
    pub fn fail_open_count(&self) -> u64 {
        unimplemented!()
    }

    /// Why `client` (or the ECS prefix `ecs`) gets what it gets, for every record.
    #[must_use]
    pub fn explain(&self, client: IpAddr, ecs: Option<(IpAddr, u8)>) -> Explanation {
        let _ = (client, ecs);
        unimplemented!()
    }

    /// Everything the kernel maps hold.
    #[must_use]
    pub fn kernel_maps(&self) -> KernelMaps {
        unimplemented!()
    }

    /// Only the answer sets: what changes when node states change.
    #[must_use]
    pub fn kernel_answers(&self) -> Vec<(AnswerKey, AnswerSet)> {
        unimplemented!()
    }
}
