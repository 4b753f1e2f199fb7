//! `nearest` keys: each network's ranking of the k nearest candidates by great-circle
//! distance (divided by the node's `bias`), computed here once per distinct location.
//! Networks with the same ranking share a region; the ranking becomes a rule of its own
//! (its candidates in ranking order), so a node going down moves its clients to the
//! next node of their ranking through the ordinary answer-set rewrite.
use std::collections::HashMap;

use crate::{
    config::{Candidate, Config, RegionKey, Rule},
    geo::Loc,
};

/// Mean Earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km between two points given in degrees (haversine).
#[must_use]
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1) = (a.0.to_radians(), a.1.to_radians());
    let (la2, lo2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// A map's `nearest` rule, ready to rank locations.
#[derive(Clone, Debug)]
pub(super) struct NearestRule {
    /// (latitude, longitude in degrees, bias) of each candidate, in rule order.
    points: Vec<(f64, f64, f64)>,
    k: usize,
}

impl NearestRule {
    /// The `nearest` rule of `map`, if it has one.
    pub(super) fn of(config: &Config, map: usize) -> Option<Self> {
        let rule = config.maps[map]
            .rules
            .iter()
            .find(|r| r.key == RegionKey::Nearest)?;
        let k = config
            .geoip
            .as_ref()
            .map_or(crate::config::DEFAULT_NEAREST_K, |g| g.nearest_k);
        let points = rule
            .candidates
            .iter()
            .map(|c| {
                let n = config.node(&c.node);
                (
                    n.and_then(|n| n.lat).unwrap_or(0.0),
                    n.and_then(|n| n.lon).unwrap_or(0.0),
                    n.map_or(1.0, |n| n.bias),
                )
            })
            .collect();
        Some(Self { points, k })
    }

    /// The indexes (into the rule's candidates) of the `k` nearest to `loc`, nearest
    /// first; ties by rule order.
    pub(super) fn rank(&self, loc: Loc) -> Box<[u16]> {
        let here = loc.degrees();
        let mut d: Vec<(f64, u16)> = self
            .points
            .iter()
            .enumerate()
            .map(|(i, (lat, lon, bias))| {
                (
                    distance_km(here, (*lat, *lon)) / bias,
                    u16::try_from(i).unwrap_or(u16::MAX),
                )
            })
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        d.iter().take(self.k).map(|(_, i)| *i).collect()
    }
}

/// "A ranking not seen at compile time" (a lookup after the build): no region has it.
pub(super) const UNKNOWN_RANKING: u16 = u16::MAX - 1;

/// The rankings met while compiling, interned per map. A ranking's rule index is the
/// map's number of config rules plus its id.
#[derive(Debug, Default)]
pub(super) struct Ranks {
    pub(super) lists: Vec<Vec<Box<[u16]>>>,
    ids: Vec<HashMap<Box<[u16]>, u16>>,
    /// Config rules per map (the first ranking's rule index).
    base: Vec<u16>,
    pub(super) too_many: bool,
}

impl Ranks {
    pub(super) fn new(config: &Config) -> Self {
        let maps = config.maps.len();
        Self {
            lists: vec![Vec::new(); maps],
            ids: vec![HashMap::new(); maps],
            base: config
                .maps
                .iter()
                .map(|m| u16::try_from(m.rules.len()).unwrap_or(u16::MAX))
                .collect(),
            too_many: false,
        }
    }

    /// The rule index of `ranking` in `map`, interned.
    pub(super) fn intern(&mut self, map: usize, ranking: Box<[u16]>) -> u16 {
        if let Some(id) = self.ids[map].get(&ranking) {
            return self.base[map] + id;
        }
        let id = self.lists[map].len();
        match u16::try_from(id)
            .ok()
            .and_then(|id| self.base[map].checked_add(id))
        {
            Some(rule) if rule < UNKNOWN_RANKING => {
                self.ids[map].insert(ranking.clone(), u16::try_from(id).unwrap_or(0));
                self.lists[map].push(ranking);
                rule
            }
            _ => {
                self.too_many = true;
                UNKNOWN_RANKING
            }
        }
    }

    /// The rule index of `ranking` in `map` if it was met at compile time.
    pub(super) fn find(&self, map: usize, ranking: &[u16]) -> u16 {
        self.ids[map]
            .get(ranking)
            .map_or(UNKNOWN_RANKING, |id| self.base[map] + id)
    }

    /// The rules the rankings stand for: the ranked candidates, nearest first, each
    /// with its weight times its closeness rank (k for the nearest, k - 1 for the
    /// next, ...), which is what `spread` and `sticky` draw by; `best` takes the first
    /// up one.
    pub(super) fn rules(&self, config: &Config) -> Vec<Vec<Rule>> {
        self.lists
            .iter()
            .enumerate()
            .map(|(map, lists)| {
                let Some(nearest) = config.maps[map]
                    .rules
                    .iter()
                    .find(|r| r.key == RegionKey::Nearest)
                else {
                    return Vec::new();
                };
                lists
                    .iter()
                    .map(|ranking| {
                        let k = u32::try_from(ranking.len()).unwrap_or(1);
                        Rule::ranked(
                            ranking
                                .iter()
                                .zip(0u32..)
                                .filter_map(|(i, r)| {
                                    let c = nearest.candidates.get(usize::from(*i))?;
                                    Some(Candidate::new(&c.node, c.weight * (k - r)))
                                })
                                .collect(),
                        )
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_great_circle() {
        // Frankfurt - New York is about 6,200 km; a quarter meridian is 10,008 km.
        let d = distance_km((50.11, 8.68), (40.71, -74.01));
        assert!((6150.0..6250.0).contains(&d), "{d}");
        let q = distance_km((0.0, 0.0), (90.0, 0.0));
        assert!((q - 10_007.5).abs() < 2.0, "{q}");
        assert!(distance_km((10.0, 20.0), (10.0, 20.0)).abs() < 1e-9);
    }
}
