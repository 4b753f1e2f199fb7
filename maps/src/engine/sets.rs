//! Answer sets per (record, rule) from node states, the `[fallback]` pool and its
//! weighted round robin.

use std::net::IpAddr;

use geodns_common::{AnswerSet, MAX_ANSWER_ADDRS, POLICY_BEST, POLICY_SPREAD, POLICY_STICKY};

use crate::{
    config::{Candidate, Config, NodeConfig, Policy, Record, Rule},
    NodeState, NodeStates,
};

/// A record's answer set for one rule of its map, with the node of every slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct RuleSet {
    pub(super) set: AnswerSet,
    pub(super) nodes_v4: [u16; MAX_ANSWER_ADDRS],
    pub(super) nodes_v6: [u16; MAX_ANSWER_ADDRS],
    /// Every candidate is down by health: the set holds them all (fail open).
    pub(super) fail_open: bool,
}

/// One fallback node of one family.
#[derive(Clone, Debug)]
pub(super) struct FallbackNode {
    pub(super) node: usize,
    pub(super) weight: i64,
    pub(super) up: bool,
    /// Down by health alone: used when no fallback node is up (fail open).
    pub(super) unhealthy: bool,
}

/// Smooth weighted round robin (nginx): every pick adds each weight to its current
/// value, takes the largest, and subtracts the total from it.
#[derive(Debug, Default)]
pub(super) struct Swrr {
    pub(super) current: Vec<i64>,
}

impl Swrr {
    pub(super) fn pick(
        &mut self,
        nodes: &[FallbackNode],
        eligible: impl Fn(&FallbackNode) -> bool,
    ) -> Option<usize> {
        self.current.resize(nodes.len(), 0);
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, n) in nodes.iter().enumerate() {
            if !eligible(n) {
                continue;
            }
            self.current[i] += n.weight;
            total += n.weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

pub(super) fn node_addrs(n: &NodeConfig, v6: bool) -> Vec<IpAddr> {
    if v6 {
        n.ipv6.iter().map(|a| IpAddr::V6(*a)).collect()
    } else {
        n.ipv4.iter().map(|a| IpAddr::V4(*a)).collect()
    }
}

/// The answer set of one rule for one record under `states`: its up candidates; when
/// none is up with an address, every candidate that is down by health alone (fail
/// open within the region: a checker cut off from the nodes must not move every
/// client away, as gdnsd and Route 53 do); `None` when neither gives an address (the
/// operator took them all out: the `[fallback]` answers).
pub(super) fn rule_set(
    config: &Config,
    record: &Record,
    rule: &Rule,
    states: &NodeStates,
) -> Option<RuleSet> {
    rule_set_of(config, record, rule, |c| {
        states.get(&c.node) == NodeState::Up
    })
    .or_else(|| {
        rule_set_of(config, record, rule, |c| states.is_unhealthy(&c.node)).map(|mut rs| {
            rs.fail_open = true;
            rs
        })
    })
}

pub(super) fn rule_set_of(
    config: &Config,
    record: &Record,
    rule: &Rule,
    eligible: impl Fn(&Candidate) -> bool,
) -> Option<RuleSet> {
    let mut rs = RuleSet {
        set: AnswerSet::EMPTY,
        nodes_v4: [u16::MAX; MAX_ANSWER_ADDRS],
        nodes_v6: [u16::MAX; MAX_ANSWER_ADDRS],
        fail_open: false,
    };
    rs.set.ttl = record.ttl;
    let up: Vec<(&Candidate, usize)> = rule
        .candidates
        .iter()
        .filter(|c| eligible(c))
        .filter_map(|c| Some((c, config.node_index(&c.node)?)))
        .collect();
    for v6 in [false, true] {
        let mut n = 0usize;
        let mut cum = 0u32;
        // Candidates are sorted by weight, highest first, then name.
        for (c, i) in &up {
            let addrs = node_addrs(&config.nodes[*i], v6);
            if addrs.is_empty() {
                continue;
            }
            for a in addrs {
                if n == MAX_ANSWER_ADDRS {
                    break;
                }
                cum = cum.saturating_add(c.weight);
                let node = u16::try_from(*i).unwrap_or(u16::MAX);
                let tag = if record.policy == Policy::Sticky {
                    geodns_common::sticky_tag(&c.node)
                } else {
                    0
                };
                match a {
                    IpAddr::V4(a) => {
                        rs.set.v4[n] = a.octets();
                        rs.set.cum_v4[n] = cum;
                        rs.set.tag_v4[n] = tag;
                        rs.nodes_v4[n] = node;
                    }
                    IpAddr::V6(a) => {
                        rs.set.v6[n] = a.octets();
                        rs.set.cum_v6[n] = cum;
                        rs.set.tag_v6[n] = tag;
                        rs.nodes_v6[n] = node;
                    }
                }
                n += 1;
            }
            if record.policy == Policy::Best {
                // The best candidate that has this family: all its addresses, nothing else.
                break;
            }
        }
        let n = u8::try_from(n).unwrap_or(u8::MAX);
        if v6 {
            rs.set.n_v6 = n;
        } else {
            rs.set.n_v4 = n;
        }
    }
    let most = rs.set.n_v4.max(rs.set.n_v6);
    if most == 0 {
        return None;
    }
    (rs.set.policy, rs.set.count) = match record.policy {
        Policy::Best => (POLICY_BEST, most),
        Policy::Spread => (POLICY_SPREAD, record.max_answers.clamp(1, most)),
        Policy::Sticky => (POLICY_STICKY, record.max_answers.clamp(1, most)),
    };
    Some(rs)
}
