//! Why a client gets what it gets: `geodns lookup` and the admin API's `/v1/lookup`.
use super::{
    node_addrs, AddressFacts, Candidate, Cidr, Engine, FallbackNode, IpAddr, Ipv4Addr, Ipv6Addr,
    NodeState, Policy, RegionKey, RuleSet, MAX_ANSWER_ADDRS, POLICY_SPREAD, POLICY_STICKY,
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
    /// For a `nearest` key: the network's ranking, nearest first.
    pub nearest: Vec<NearestCandidate>,
}

/// A candidate of a `nearest` ranking, as seen from the network's location.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct NearestCandidate {
    pub node: String,
    /// Great-circle distance from the network's location.
    pub distance_km: f64,
    /// The node's `bias`: the ranking orders by `distance_km / bias`.
    pub bias: f64,
    pub state: NodeState,
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
    /// `spread` and `sticky`: each slot's weight.
    pub weights: Vec<u32>,
    /// Addresses per answer.
    pub count: u8,
    /// `sticky`: the client prefix that was hashed and the slot (index into
    /// `addresses`) it draws, the first address of the answer.
    pub sticky: Option<StickyPick>,
}

/// The draw of a `sticky` record for the explained client.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct StickyPick {
    /// The client's /24 or /56: every address in it gets the same node.
    pub prefix: Cidr,
    pub slot: usize,
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
        let location = facts.as_ref().and_then(|f| f.location);
        let bgp = facts.as_ref().and_then(|f| f.bgp);
        let maps = (0..self.config.maps.len())
            .map(|i| self.map_choice(i, m.region, location, bgp))
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
                    .and_then(|k| self.compiled.rule(&self.config, rec.map, k))
                    .map(|r| self.candidate_states(r.candidates.iter()))
                    .unwrap_or_default();
                RecordExplanation {
                    name: rec.name.clone(),
                    map: self.config.maps[rec.map].name.clone(),
                    policy: rec.policy,
                    ttl: rec.ttl,
                    candidates,
                    kernel: rs.is_some(),
                    a: self.family_answer(rs.as_ref(), false, client),
                    aaaa: self.family_answer(rs.as_ref(), true, client),
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

    /// The key map `i` picked in `region`, and why.
    fn map_choice(
        &self,
        i: usize,
        region: u16,
        location: Option<(f64, f64)>,
        bgp: Option<crate::bgp::BgpMatch>,
    ) -> MapChoice {
        let rule = self
            .compiled
            .choice(region, i)
            .and_then(|k| self.compiled.rule(&self.config, i, k));
        let key = rule.map(|r| r.key);
        let nearest = match (rule, location) {
            (Some(r), Some(loc)) if r.key == RegionKey::Nearest => self.ranked(r, loc),
            _ => Vec::new(),
        };
        let why = match (key, region) {
            (_, 0) => {
                "the address is in no database and no config CIDR: the fallback answers".to_owned()
            }
            (Some(RegionKey::Cidr(c)), _) => {
                format!("config CIDR {c} contains the address")
            }
            (Some(RegionKey::Asn(a)), _) => match bgp {
                Some(b) if b.origin == a => format!(
                    "AS{a}: the BGP origin of {} ({} of {} peers)",
                    b.prefix, b.agree, b.peers
                ),
                _ => format!("AS{a} from the ASN database"),
            },
            (Some(k @ RegionKey::Country(_)), _) => {
                format!("country {k} from the country database")
            }
            (Some(k @ RegionKey::Continent(_)), _) => {
                format!("{k} from the country database's continent field")
            }
            (Some(RegionKey::Default), _) => {
                "no CIDR, ASN, country, continent or nearest key of this map applies".to_owned()
            }
            (Some(RegionKey::Nearest), _) => nearest_why(location.unwrap_or_default(), &nearest),
            (None, _) => {
                "no key applies and the map has no default: the fallback answers".to_owned()
            }
        };
        MapChoice {
            map: self.config.maps[i].name.clone(),
            key,
            why,
            nearest,
        }
    }

    /// The candidates of a ranking rule with their distances from `loc`.
    fn ranked(&self, rule: &crate::config::Rule, loc: (f64, f64)) -> Vec<NearestCandidate> {
        rule.candidates
            .iter()
            .filter_map(|c| {
                let n = self.config.node(&c.node)?;
                Some(NearestCandidate {
                    node: c.node.clone(),
                    distance_km: crate::compile::nearest::distance_km(
                        loc,
                        (n.lat.unwrap_or(0.0), n.lon.unwrap_or(0.0)),
                    ),
                    bias: n.bias,
                    state: self.states.get(&c.node),
                })
            })
            .collect()
    }

    fn family_answer(&self, rs: Option<&RuleSet>, v6: bool, client: IpAddr) -> FamilyAnswer {
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
                    weights: if set.policy == POLICY_SPREAD || set.policy == POLICY_STICKY {
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
                    sticky: (set.policy == POLICY_STICKY).then(|| {
                        let tags = if v6 { &set.tag_v6 } else { &set.tag_v4 };
                        let (whole, len) = if client.is_ipv6() {
                            (128, geodns_common::STICKY_PREFIX_V6)
                        } else {
                            (32, geodns_common::STICKY_PREFIX_V4)
                        };
                        let prefix = Cidr::new(client, len.min(whole));
                        let cum = if v6 { &set.cum_v6 } else { &set.cum_v4 };
                        StickyPick {
                            prefix,
                            slot: geodns_common::sticky_slot(
                                super::sticky_key(client),
                                cum,
                                tags,
                                n,
                            ),
                        }
                    }),
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
            sticky: None,
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
                if set.policy == POLICY_SPREAD || set.policy == POLICY_STICKY {
                    // A sticky set sends each node the share of client networks its
                    // weight gives it, as spread does with queries.
                    let total = f64::from(cum[n - 1].max(1));
                    let _ = write!(
                        label,
                        "{} {} of",
                        if set.policy == POLICY_STICKY {
                            "sticky"
                        } else {
                            "spread"
                        },
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

/// Why a `nearest` ranking answers: the location, each ranked node's distance (and
/// bias) and state, and which one `best` takes.
fn nearest_why((lat, lon): (f64, f64), ranked: &[NearestCandidate]) -> String {
    let first_up = ranked
        .iter()
        .find(|c| c.state == NodeState::Up)
        .map_or("none: the fallback answers", |c| c.node.as_str());
    let list: Vec<String> = ranked
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let bias = if (c.bias - 1.0).abs() > f64::EPSILON {
                format!(" / bias {} = {:.0} km", c.bias, c.distance_km / c.bias)
            } else {
                String::new()
            };
            format!(
                "{}. {} {:.0} km{bias} ({})",
                n + 1,
                c.node,
                c.distance_km,
                c.state
            )
        })
        .collect();
    format!(
        "nearest to the network's location {lat:.4}, {lon:.4} (City database): {}; the first \
         up one answers `best` ({first_up}), `spread` and `sticky` draw by weight x closeness \
         rank",
        list.join(", ")
    )
}
