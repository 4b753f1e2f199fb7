//! The TOML config: zone, nodes, `GeoIP` databases, maps, records, fallback.
//!
//! [`Config::from_path`] parses and validates; every error names the file, the line and
//! column, and the key. Names are stored lowercase, absolute, with a trailing dot.
mod build;
mod check;
mod error;

pub use error::{ConfigError, ConfigProblem, ConfigWarning};
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    ops::Range,
    path::{Path, PathBuf},
};

use geodns_common::{NameKey, MAX_ANSWER_ADDRS, MAX_LABELS, MAX_NAME_WIRE_LEN};
use serde::Deserialize;
use toml::Spanned;

use crate::{
    cidr::Cidr,
    name,
    state::{NodeState, NodeStates},
    zone::{self, StaticZone, ZoneError},
};

/// A validated configuration.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The file it was read from (or the name given to [`Config::from_str_named`]).
    pub file: String,
    /// Directory that relative paths in the config are relative to.
    pub base_dir: PathBuf,
    pub zone: Zone,
    /// Sorted by name.
    pub nodes: Vec<NodeConfig>,
    pub geoip: Option<GeoIp>,
    /// `[bgp]`: origin AS numbers from BGP RIB dumps.
    pub bgp: Option<Bgp>,
    /// Sorted by name.
    pub maps: Vec<Map>,
    /// In file order; the index is the kernel's record number.
    pub records: Vec<Record>,
    /// Nodes used by weighted round robin when a region has no usable candidate.
    pub fallback: Vec<Candidate>,
    /// `[rrl]`: response rate limiting.
    pub rrl: Rrl,
    /// `[guard]`: reflection defences.
    pub guard: Guard,
    /// Static record sets from `[zone] file` (SOA and NS at the apex moved into [`Zone`]),
    /// with the journal of RFC 2136 updates replayed over them.
    pub statics: StaticZone,
    /// `[update]`: who may change what through RFC 2136 updates.
    pub update: UpdatePolicy,
    /// `[fleet]`: how boxes that share node states through etcd agree.
    pub fleet: Fleet,
}

/// `[fleet]`: read by `geodns run --fleet` only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fleet {
    pub quorum: Quorum,
}

/// How many of the live boxes must see a node down for it to be down fleet-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quorum {
    /// More than half of the live boxes.
    #[default]
    Majority,
    /// At least this many boxes (never fewer than 1).
    Boxes(u32),
}

impl Quorum {
    /// How many boxes must see a node down, out of `live` boxes.
    #[must_use]
    pub fn needed(self, live: usize) -> usize {
        match self {
            Self::Majority => live / 2 + 1,
            Self::Boxes(n) => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }
}

/// `[update]`: TSIG keys and what each may change.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct UpdatePolicy {
    pub keys: Vec<TsigKey>,
}

/// `[[update.keys]]`: one HMAC-SHA256 key and the names and types it may update.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TsigKey {
    /// Absolute, lowercase (`acme.`), as in the TSIG record.
    pub name: String,
    pub secret: Vec<u8>,
    /// First labels an updated owner may have, lowercase (default `_acme-challenge`).
    pub allow: Vec<String>,
    /// Types it may add or delete (default TXT).
    pub types: Vec<u16>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("secret", &"(hidden)")
            .field("allow", &self.allow)
            .field("types", &self.types)
            .finish()
    }
}

/// `[rrl]`: response rate limiting, the same in the kernel and the fallback server
/// (UDP only; TCP is exempt). See [`crate::defence`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rrl {
    /// Answers per second per (client prefix, class, name); 0: off.
    pub rate: u32,
    /// Answers a bucket may give at once.
    pub burst: u32,
    /// Every `slip`-th query over the limit gets an empty TC=1 reply; 0: all dropped.
    pub slip: u32,
    /// Client prefix lengths that share a bucket.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Slots of the kernel's bucket table (and the most the fallback server keeps).
    pub buckets: u32,
}

impl Default for Rrl {
    fn default() -> Self {
        Self {
            rate: DEFAULT_RRL_RATE,
            burst: DEFAULT_RRL_RATE,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            buckets: DEFAULT_RRL_BUCKETS,
        }
    }
}

/// `[guard]`: which queries are never answered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Guard {
    /// Source ports dropped (port 0 always is).
    pub reflector_ports: Vec<u16>,
    /// Destination addresses answered; `None`: those of the interface the program is
    /// attached to.
    pub served_addresses: Option<Vec<std::net::IpAddr>>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            reflector_ports: geodns_common::DEFAULT_REFLECTOR_PORTS.to_vec(),
            served_addresses: None,
        }
    }
}

/// Default `[rrl] rate`: NSD's, and BIND's documented example (see the README).
pub const DEFAULT_RRL_RATE: u32 = 200;
/// Default `[rrl] buckets`: 4 MiB of kernel table (32-byte slots).
pub const DEFAULT_RRL_BUCKETS: u32 = 131_072;

/// `[zone]`: the SOA, the NS set and the default TTL.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Zone {
    /// E.g. `cdn.example.net.`
    pub origin: String,
    /// TTL of records that do not set one.
    pub ttl: u32,
    pub mname: String,
    /// The responsible mailbox as a name (`hostmaster.example.net.`).
    pub rname: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
    pub ns: Vec<NsHost>,
    /// The master file of static records (`file = "cdn.zone"`), resolved.
    pub file: Option<PathBuf>,
    /// The journal of RFC 2136 updates: `<file>.jnl`, or `<origin>jnl` in the config's
    /// directory without a zone file.
    pub journal: PathBuf,
}

/// One NS of the zone; addresses are glue (needed when the name is inside the zone).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NsHost {
    pub name: String,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

/// `[nodes.NAME]`: a point of presence.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeConfig {
    pub name: String,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    /// Weight a map uses when it lists the node by name only.
    pub weight: u32,
    /// Health-check target: a URL or `host:port`.
    pub check: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Geoproximity bias for `nearest` keys: distances to this node count divided by
    /// it (a node with bias 2 wins clients up to twice as far). Default 1.
    pub bias: f64,
    /// Administrative state; when set it overrides health checks.
    pub admin: Option<NodeState>,
    /// Base URL of the node for the HTTP redirector.
    pub http_base: Option<String>,
}

/// `[geoip]`: the databases and where their fields are.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GeoIp {
    /// Country databases (one path, or several such as separate IPv4 and IPv6 files),
    /// resolved against the config's directory. Where several cover an address, the
    /// first listed wins.
    pub country: Vec<PathBuf>,
    /// ASN databases; may name the same file as `country` (read once).
    pub asn: Vec<PathBuf>,
    /// City databases: used for the country and continent where the country databases
    /// have nothing.
    pub city: Vec<PathBuf>,
    /// Dotted path of the ISO country code: `country.iso_code` (`MaxMind`) or
    /// `country_code` (flattened databases).
    pub country_field: String,
    /// Dotted path of the continent code, if the database has one.
    pub continent_field: Option<String>,
    /// Dotted path of the AS number in the ASN database.
    pub asn_field: String,
    /// Dotted paths of a network's coordinates in the City databases (`nearest` keys).
    pub latitude_field: String,
    pub longitude_field: String,
    /// How many of the nearest candidates each network ranks (`nearest` keys): its
    /// clients move down this list as nodes go down.
    pub nearest_k: usize,
    /// `[geoip.sha256]`: databases pinned by content (resolved path, digest). A box
    /// whose file differs refuses the config rather than answer from another release.
    pub sha256: Vec<(PathBuf, [u8; 32])>,
}

/// `[bgp]`: BGP RIB dumps (MRT `TABLE_DUMP_V2`), the origin AS of every announced
/// prefix for the `AS` keys.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Bgp {
    /// The dumps (plain, `.gz` or `.bz2`), resolved against the config's directory;
    /// a prefix in several counts the peers of all.
    pub rib: Vec<PathBuf>,
    /// `AS` keys match the BGP origin only, never the ASN database.
    pub only: bool,
}

/// `[maps.NAME]`: region key -> weighted candidates.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Map {
    pub name: String,
    /// In file order.
    pub rules: Vec<Rule>,
}

/// One region key of a map and its candidates.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Rule {
    pub key: RegionKey,
    /// Sorted by weight (highest first), then node name; a ranking of a `nearest` key
    /// nearest first.
    pub candidates: Vec<Candidate>,
}

impl Rule {
    /// A `nearest` ranking as a rule of its own: its candidates nearest first (the
    /// compile makes one per ranking it meets, see `Compiled::rule`).
    #[must_use]
    pub fn ranked(candidates: Vec<Candidate>) -> Self {
        Self {
            key: RegionKey::Nearest,
            candidates,
        }
    }
}

/// A node with its weight in a map or in `[fallback]`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Candidate {
    pub node: String,
    pub weight: u32,
}

impl Candidate {
    #[must_use]
    pub fn new(node: &str, weight: u32) -> Self {
        Self {
            node: node.to_owned(),
            weight,
        }
    }
}

/// What a map rule matches; see the crate docs for the precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionKey {
    /// `"198.51.100.0/24"`
    Cidr(Cidr),
    /// `"AS13335"`
    Asn(u32),
    /// `"US"` or `"country:US"`
    Country([u8; 2]),
    /// `"continent:EU"`
    Continent([u8; 2]),
    /// `"default"`
    Default,
    /// `"nearest"`: the candidates nearest to the network's location (City database),
    /// ranked by great-circle distance divided by the node's `bias`.
    Nearest,
}

/// `[[records]]`: a served name.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Record {
    /// Absolute, lowercase, trailing dot; `*.x.example.` for a wildcard.
    pub name: String,
    pub wildcard: bool,
    /// Index into [`Config::maps`].
    pub map: usize,
    pub ttl: u32,
    pub policy: Policy,
    /// Addresses per answer for `spread` and `sticky` (1 for `best`).
    pub max_answers: u8,
}

/// How a record picks among the up candidates of its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The single up candidate with the highest weight (ties: node name).
    Best,
    /// All up candidates, chosen per query by weight.
    Spread,
    /// All up candidates, chosen per client network by weight: weighted rendezvous
    /// hashing of the client's /24 or /56 (`geodns_common::sticky_slot`), so a network
    /// keeps its node and a node that goes down moves only its own clients.
    Sticky,
}

/// Largest weight: eight of them still fit the kernel's u32 cumulative weights.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Largest TTL (RFC 2181 section 8).
pub const MAX_TTL: u32 = 0x7FFF_FFFF;

const CONTINENT_CODES: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

fn default_ttl() -> Spanned<u32> {
    Spanned::new(0..0, 60)
}
fn default_serial() -> u32 {
    1
}
fn default_refresh() -> u32 {
    7200
}
fn default_retry() -> u32 {
    3600
}
fn default_expire() -> u32 {
    1_209_600
}
fn default_minimum() -> u32 {
    60
}
fn default_country_field() -> String {
    "country.iso_code".to_owned()
}
fn default_asn_field() -> String {
    "autonomous_system_number".to_owned()
}
fn default_latitude_field() -> String {
    "location.latitude".to_owned()
}
fn default_longitude_field() -> String {
    "location.longitude".to_owned()
}
fn default_nearest_k() -> Spanned<i64> {
    Spanned::new(0..0, 4)
}

/// Default `[geoip] nearest_k`: a network's clients can fall back three times before
/// the `[fallback]` nodes answer.
pub const DEFAULT_NEAREST_K: usize = 4;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    zone: Spanned<RawZone>,
    #[serde(default)]
    nodes: BTreeMap<Spanned<String>, RawNode>,
    geoip: Option<Spanned<RawGeoIp>>,
    bgp: Option<Spanned<RawBgp>>,
    #[serde(default)]
    maps: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<RawCandidates>>>,
    #[serde(default)]
    records: Vec<Spanned<RawRecord>>,
    fallback: Option<Spanned<RawCandidates>>,
    rrl: Option<Spanned<RawRrl>>,
    guard: Option<Spanned<RawGuard>>,
    update: Option<Spanned<RawUpdate>>,
    fleet: Option<Spanned<RawFleet>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    quorum: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRrl {
    rate: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    slip: Option<Spanned<i64>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    buckets: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    #[serde(default)]
    keys: Vec<Spanned<RawKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    reflector_ports: Option<Vec<Spanned<i64>>>,
    served_addresses: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Option<Spanned<String>>,
    secret: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    algorithm: Option<Spanned<String>>,
    allow: Option<Vec<Spanned<String>>>,
    types: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    origin: Spanned<String>,
    #[serde(default = "default_ttl")]
    ttl: Spanned<u32>,
    mname: Option<Spanned<String>>,
    rname: Option<Spanned<String>>,
    serial: Option<u32>,
    refresh: Option<u32>,
    retry: Option<u32>,
    expire: Option<u32>,
    minimum: Option<u32>,
    #[serde(default)]
    ns: Vec<Spanned<RawNs>>,
    file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNs {
    name: Spanned<String>,
    ipv4: Option<Spanned<OneOrMany>>,
    ipv6: Option<Spanned<OneOrMany>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    ipv4: Option<Spanned<OneOrMany>>,
    ipv6: Option<Spanned<OneOrMany>>,
    weight: Option<Spanned<i64>>,
    check: Option<Spanned<String>>,
    lat: Option<Spanned<f64>>,
    lon: Option<Spanned<f64>>,
    bias: Option<Spanned<f64>>,
    admin: Option<NodeState>,
    http_base: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgp {
    rib: Spanned<OneOrMany>,
    /// `"bgp-first"` (default): an `AS` key matches the BGP origin, then the ASN
    /// database's AS number; `"bgp-only"`: the BGP origin only.
    as_keys: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeoIp {
    country: Spanned<OneOrMany>,
    asn: Option<Spanned<OneOrMany>>,
    city: Option<Spanned<OneOrMany>>,
    #[serde(default = "default_country_field")]
    country_field: String,
    continent_field: Option<String>,
    #[serde(default = "default_asn_field")]
    asn_field: String,
    #[serde(default = "default_latitude_field")]
    latitude_field: String,
    #[serde(default = "default_longitude_field")]
    longitude_field: String,
    #[serde(default = "default_nearest_k")]
    nearest_k: Spanned<i64>,
    #[serde(default)]
    sha256: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    name: Spanned<String>,
    map: Spanned<String>,
    ttl: Option<Spanned<u32>>,
    policy: Option<Policy>,
    max_answers: Option<Spanned<i64>>,
}

/// One string (an address, a path) or a list of them. Used as `Spanned<OneOrMany>`:
/// a single string takes the span of the whole value (see [`items`]).
struct OneOrMany(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![Spanned::new(0..0, v.to_owned())]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = s.next_element::<Spanned<String>>()? {
                    out.push(item);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The strings of a [`OneOrMany`], each with its own span (a lone string: the value's).
fn items(v: Option<&Spanned<OneOrMany>>) -> Vec<Spanned<String>> {
    let Some(v) = v else { return Vec::new() };
    v.get_ref()
        .0
        .iter()
        .map(|s| {
            let span = if s.span().is_empty() {
                v.span()
            } else {
                s.span()
            };
            Spanned::new(span, s.get_ref().clone())
        })
        .collect()
}

/// `{ node = weight, ... }` or `["node", ...]` (weights from the nodes).
struct RawCandidates(Vec<(Spanned<String>, Option<Spanned<i64>>)>);

impl<'de> Deserialize<'de> for RawCandidates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawCandidates;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of node = weight, or a list of node names")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<Spanned<String>, Spanned<i64>>()? {
                    out.push((k, Some(v)));
                }
                Ok(RawCandidates(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = s.next_element::<Spanned<String>>()? {
                    out.push((k, None));
                }
                Ok(RawCandidates(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl NodeStates {
    /// Every node `Up`, except those with an admin state in the config.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let mut states = Self::default();
        for n in &config.nodes {
            states.set(&n.name, n.admin.unwrap_or(NodeState::Up));
        }
        states
    }
}
