//! Why a client gets what it gets: `geodns lookup` and the admin API's `/v1/lookup`.
use super::{
    node_addrs, AddressFacts, Candidate, Cidr, Engine, FallbackNode, IpAddr, Ipv4Addr, Ipv6Addr,
    NodeState, Policy, RegionKey, RuleSet, MAX_ANSWER_ADDRS, POLICY_SPREAD,
};

/// Why one decision was made; `geodns lookup` prints it.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct Explanation {
    /// The address looked up (the ECS prefix's address when one was given).
    pub client: IpAddr,
    /// The ECS prefix, when one was given with a non-zero length.
    pub ecs: Option<Cidr>,
    /// The matched prefix; its length is the ECS scope of the answer.
    pub prefix: Cidr,
    pub region: u16,
    /// When the client lies in an IPv6 range the databases alias onto their IPv4 tree:
    /// the range, the embedded IPv4 address it was looked up as, and the IPv4 prefix
    /// that matched (`prefix` is that prefix moved into the range).
    pub alias: Option<AliasLookup>,
    /// What the databases and config CIDRs say about the address.
    pub facts: Option<AddressFacts>,
    /// Why `facts` is missing (a database could not be read again).
    pub facts_error: Option<String>,
    /// The key each map picked for the region, and why.
    pub maps: Vec<MapChoice>,
    pub records: Vec<RecordExplanation>,
    /// The `[fallback]` nodes with their state.
    pub fallback: Vec<CandidateState>,
}

/// An aliased IPv6 client, looked up as IPv4.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct AliasLookup {
    pub range: Cidr,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix: Cidr,
}

/// The key one map picked.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct MapChoice {
    pub map: String,
    /// `None`: no rule applies (no default either), or region 0.
    pub key: Option<RegionKey>,
    pub why: String,
}

/// A candidate with its current state.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct CandidateState {
    pub node: String,
    pub weight: u32,
    pub state: NodeState,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

/// One record's decision for the explained address.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct RecordExplanation {
    pub name: String,
    pub map: String,
    pub policy: Policy,
    pub ttl: u32,
    /// The rule's candidates (empty when the map picked nothing).
    pub candidates: Vec<CandidateState>,
    /// Whether the kernel holds an answer set for this record and region.
    pub kernel: bool,
    pub a: FamilyAnswer,
    pub aaaa: FamilyAnswer,
}

/// What one family gets.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct FamilyAnswer {
    /// `geo`, `fallback` or `none`.
    pub source: &'static str,
    /// `geo`: the answer set's addresses (for `spread`, every slot); `fallback`: the
    /// nodes' addresses that round robin would cycle through.
    pub addresses: Vec<IpAddr>,
    /// `spread`: each slot's weight.
    pub weights: Vec<u32>,
    /// Addresses per answer.
    pub count: u8,
}

impl Engine {
    fn candidate_states<'a>(
        &self,
        list: impl Iterator<Item = &'a Candidate>,
    ) -> Vec<CandidateState> {
        list.map(|c| {
            let n = self.config.node(&c.node);
            CandidateState {
                node: c.node.clone(),
                weight: c.weight,
                state: self.states.get(&c.node),
                ipv4: n.map(|n| n.ipv4.clone()).unwrap_or_default(),
                ipv6: n.map(|n| n.ipv6.clone()).unwrap_or_default(),
            }
        })
        .collect()
    }

    /// Why `client` (or the ECS prefix `ecs`, when its length is not 0) gets what it
    /// gets, for every map and record.
    #[must_use]
    pub fn explain(&self, client: IpAddr, ecs: Option<(IpAddr, u8)>) -> Explanation {
        let ecs = ecs
            .filter(|(_, len)| *len > 0)
            .map(|(a, len)| Cidr::new(a, len));
        let client = ecs.map_or(client, |c| c.addr());
        let m = self.compiled.lookup(client);
        let alias = self
            .compiled
            .alias_of(client)
            .map(|(range, ipv4, offset)| AliasLookup {
                range,
                ipv4,
                ipv4_prefix: Cidr::new(IpAddr::V4(ipv4), m.prefix.len() - offset),
            });
        let (facts, facts_error) = match self.compiled.facts(client) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let maps = self
            .config
            .maps
            .iter()
            .enumerate()
            .map(|(i, map)| {
                let key = self.compiled.choice(m.region, i).map(|k| map.rules[k].key);
                let why = match (key, m.region) {
                    (_, 0) => {
                        "the address is in no database and no config CIDR: the fallback answers"
                            .to_owned()
                    }
                    (Some(RegionKey::Cidr(c)), _) => {
                        format!("config CIDR {c} contains the address")
                    }
                    (Some(RegionKey::Asn(a)), _) => format!("AS{a} from the ASN database"),
                    (Some(k @ RegionKey::Country(_)), _) => {
                        format!("country {k} from the country database")
                    }
                    (Some(k @ RegionKey::Continent(_)), _) => {
                        format!("{k} from the country database's continent field")
                    }
                    (Some(RegionKey::Default), _) => {
                        "no CIDR, ASN, country or continent key of this map applies".to_owned()
                    }
                    (None, _) => {
                        "no key applies and the map has no default: the fallback answers".to_owned()
                    }
                };
                MapChoice {
                    map: map.name.clone(),
                    key,
                    why,
                }
            })
            .collect();
        let records = self
            .config
            .records
            .iter()
            .enumerate()
            .map(|(i, rec)| {
                let rule = self.compiled.choice(m.region, rec.map);
                let rs = rule.and_then(|k| self.sets[i].get(k).copied().flatten());
                let candidates = rule
                    .map(|k| {
                        self.candidate_states(self.config.maps[rec.map].rules[k].candidates.iter())
                    })
                    .unwrap_or_default();
                RecordExplanation {
                    name: rec.name.clone(),
                    map: self.config.maps[rec.map].name.clone(),
                    policy: rec.policy,
                    ttl: rec.ttl,
                    candidates,
                    kernel: rs.is_some(),
                    a: self.family_answer(rs.as_ref(), false),
                    aaaa: self.family_answer(rs.as_ref(), true),
                }
            })
            .collect();
        Explanation {
            client,
            ecs,
            prefix: m.prefix,
            region: m.region,
            alias,
            facts,
            facts_error,
            maps,
            records,
            fallback: self.candidate_states(self.config.fallback.iter()),
        }
    }

    fn family_answer(&self, rs: Option<&RuleSet>, v6: bool) -> FamilyAnswer {
        if let Some(rs) = rs {
            let set = &rs.set;
            let n = usize::from(if v6 { set.n_v6 } else { set.n_v4 });
            if n > 0 {
                let cum = if v6 {
                    &set.cum_v6[..n]
                } else {
                    &set.cum_v4[..n]
                };
                return FamilyAnswer {
                    source: if rs.fail_open {
                        "geo (fail open: every candidate down by health)"
                    } else {
                        "geo"
                    },
                    addresses: (0..n)
                        .map(|i| {
                            if v6 {
                                IpAddr::V6(Ipv6Addr::from(set.v6[i]))
                            } else {
                                IpAddr::V4(Ipv4Addr::from(set.v4[i]))
                            }
                        })
                        .collect(),
                    weights: if set.policy == POLICY_SPREAD {
                        cum.iter()
                            .scan(0, |prev, c| {
                                let w = c - *prev;
                                *prev = *c;
                                Some(w)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    count: set.count.min(u8::try_from(n).unwrap_or(u8::MAX)),
                };
            }
        }
        let fam = &self.fallback[usize::from(v6)];
        let any_up = fam.iter().any(|f| f.up);
        let addresses: Vec<IpAddr> = fam
            .iter()
            .filter(|f| f.up || (!any_up && f.unhealthy))
            .flat_map(|f| node_addrs(&self.config.nodes[f.node], v6))
            .collect();
        FamilyAnswer {
            source: if addresses.is_empty() {
                "none"
            } else {
                "fallback"
            },
            addresses,
            weights: Vec::new(),
            count: 1,
        }
    }

    /// What `record` answers in `region` for one family, as `geodns diff` compares it: a
    /// label that identifies the answer (policy, answer count, addresses and weights;
    /// not the TTL), and the nodes it sends clients to with their shares (by weight;
    /// empty for NODATA).
    #[must_use]
    pub fn answer_of(&self, record: usize, region: u16, v6: bool) -> (String, Vec<(usize, f64)>) {
        use std::fmt::Write as _;
        let rec = &self.config.records[record];
        let rs = self
            .compiled
            .choice(region, rec.map)
            .and_then(|k| self.sets[record].get(k).copied().flatten());
        if let Some(rs) = rs {
            let set = &rs.set;
            let n = usize::from(if v6 { set.n_v6 } else { set.n_v4 });
            if n > 0 {
                let cum = if v6 { &set.cum_v6 } else { &set.cum_v4 };
                let nodes = if v6 { &rs.nodes_v6 } else { &rs.nodes_v4 };
                let addr = |i: usize| {
                    if v6 {
                        IpAddr::V6(Ipv6Addr::from(set.v6[i]))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(set.v4[i]))
                    }
                };
                let mut label = String::new();
                let mut shares: Vec<(usize, f64)> = Vec::new();
                if set.policy == POLICY_SPREAD {
                    let total = f64::from(cum[n - 1].max(1));
                    let _ = write!(
                        label,
                        "spread {} of",
                        set.count.min(u8::try_from(n).unwrap_or(u8::MAX))
                    );
                    let mut prev = 0;
                    for i in 0..n {
                        let w = cum[i] - prev;
                        prev = cum[i];
                        let _ = write!(label, " {} w{w}", addr(i));
                        let node = usize::from(nodes[i]);
                        match shares.iter_mut().find(|(k, _)| *k == node) {
                            Some(s) => s.1 += f64::from(w) / total,
                            None => shares.push((node, f64::from(w) / total)),
                        }
                    }
                } else {
                    label.push_str("best");
                    for i in 0..n {
                        let _ = write!(label, " {}", addr(i));
                    }
                    shares.push((usize::from(nodes[0]), 1.0));
                }
                return (label, shares);
            }
        }
        let fam = &self.fallback[usize::from(v6)];
        let any_up = fam.iter().any(|f| f.up);
        let used: Vec<&FallbackNode> = fam.iter().filter(|f| f.up || !any_up).collect();
        #[expect(clippy::cast_precision_loss, reason = "weights are u32")]
        let total = used.iter().map(|f| f.weight).sum::<i64>().max(1) as f64;
        if used.is_empty() {
            return ("NODATA".to_owned(), Vec::new());
        }
        if let [only] = used[..] {
            // One node: clients get its addresses every time, as from `best`.
            let node = &self.config.nodes[only.node];
            let mut label = "best".to_owned();
            for a in node_addrs(node, v6).iter().take(MAX_ANSWER_ADDRS) {
                let _ = write!(label, " {a}");
            }
            return (label, vec![(only.node, 1.0)]);
        }
        let mut label = "fallback round robin:".to_owned();
        let mut shares = Vec::new();
        for f in used {
            let node = &self.config.nodes[f.node];
            let _ = write!(label, " {} w{}", node.name, f.weight);
            for a in node_addrs(node, v6).iter().take(MAX_ANSWER_ADDRS) {
                let _ = write!(label, " {a}");
            }
            label.push(';');
            #[expect(clippy::cast_precision_loss, reason = "weights are u32")]
            shares.push((f.node, f.weight as f64 / total));
        }
        (label, shares)
    }
}
