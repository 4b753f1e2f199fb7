//! The TOML config: zone, nodes, `GeoIP` databases, maps, records, fallback.
//!
//! [`Config::from_path`] parses and validates; every error names the file, the line and
//! column, and the key. Names are stored lowercase, absolute, with a trailing dot.
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
    /// Sorted by weight (highest first), then node name.
    pub candidates: Vec<Candidate>,
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
    /// Addresses per answer for `spread` (1 for `best`).
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
}

/// Why a config was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong type or an unknown field.
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// The zone file (or a file it includes) is broken, or disagrees with the config.
    #[error("zone file {0}")]
    Zone(#[from] ZoneError),
    /// Well-formed TOML that does not make a valid config.
    #[error("{file}:{line}:{column}: {key}: {problem}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: String,
        problem: ConfigProblem,
    },
}

/// What is wrong with a well-formed config value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    #[error("unknown node `{node}`: expected one of the [nodes] tables ({known})")]
    UnknownNode { node: String, known: String },
    #[error("unknown map `{map}`: expected one of the [maps] tables ({known})")]
    UnknownMap { map: String, known: String },
    #[error("weight {weight}: expected a whole number from 1 to {max}")]
    BadWeight { weight: i64, max: u32 },
    #[error("duplicate record `{name}`: first defined on line {first_line}")]
    DuplicateRecord { name: String, first_line: usize },
    #[error("duplicate key `{key}` in this map: first on line {first_line}")]
    DuplicateKey { key: String, first_line: usize },
    #[error("`{value}` is not an {expected} address")]
    FamilyMismatch {
        value: String,
        expected: &'static str,
    },
    #[error("`{value}`: {reason}; expected an IP address")]
    BadAddress { value: String, reason: String },
    #[error("bad CIDR `{value}`: {source}")]
    BadCidr {
        value: String,
        source: crate::cidr::CidrParseError,
    },
    #[error("bad country code `{value}`: expected two letters (ISO 3166-1 alpha-2) such as `US`")]
    BadCountry { value: String },
    #[error("bad continent code `{value}`: expected one of AF AN AS EU NA OC SA")]
    BadContinent { value: String },
    #[error("bad AS number `{value}`: expected AS followed by a number, e.g. AS13335")]
    BadAsn { value: String },
    #[error(
        "unknown region key `{value}`: expected `default`, a country (`US`), `continent:EU`, \
         `AS13335` or a CIDR (`198.51.100.0/24`)"
    )]
    BadRegionKey { value: String },
    #[error("`{value}` is not a valid domain name: {reason}")]
    BadName { value: String, reason: String },
    #[error("`{name}` is not inside the zone `{origin}`")]
    OutsideZone { name: String, origin: String },
    #[error("node `{node}` has no address: expected ipv4 and/or ipv6")]
    NoAddress { node: String },
    #[error("{what}: expected a value from {min} to {max}, got {value}")]
    OutOfRange {
        what: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{kind} keys need `geoip.{needs}`")]
    NeedsDatabase {
        kind: &'static str,
        needs: &'static str,
    },
    #[error("the fallback list is empty: expected at least one node")]
    EmptyFallback,
    #[error("the candidate list is empty: expected at least one node")]
    NoCandidates,
    #[error("`max_answers` is only meaningful with policy = \"spread\"")]
    MaxAnswersWithBest,
    #[error("no name servers: expected at least one [[zone.ns]]")]
    NoNameServers,
    #[error("more than {max} addresses of one family (the kernel compares at most {max})")]
    TooManyServed { max: usize },
    #[error("{reason}")]
    BadKey { reason: String },
    #[error("`{value}`: expected {expected}")]
    BadTarget {
        value: String,
        expected: &'static str,
    },
}

/// Something legal but probably unintended; printed by `geodns compile`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigWarning {
    #[error("node `{node}` is in no map and not in [fallback]")]
    UnusedNode { node: String },
    #[error("map `{map}` is used by no record")]
    UnusedMap { map: String },
    #[error(
        "maps.{map}.\"{key}\": no candidate has an {family} address; {family} queries there use the fallback"
    )]
    NoFamily {
        map: String,
        key: String,
        family: &'static str,
    },
    #[error("[fallback] has no node with an {family} address")]
    FallbackNoFamily { family: &'static str },
    #[error(
        "record `{name}` is too long for the kernel ({wire_len} bytes, {labels} labels; at most {max_len} and {max_labels}): userspace answers it"
    )]
    NameTooLong {
        name: String,
        wire_len: usize,
        labels: usize,
        max_len: usize,
        max_labels: usize,
    },
    #[error("NS `{name}` is inside the zone but has no address (glue)")]
    NsWithoutGlue { name: String },
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    zone: Spanned<RawZone>,
    #[serde(default)]
    nodes: BTreeMap<Spanned<String>, RawNode>,
    geoip: Option<Spanned<RawGeoIp>>,
    #[serde(default)]
    maps: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<RawCandidates>>>,
    #[serde(default)]
    records: Vec<Spanned<RawRecord>>,
    fallback: Option<Spanned<RawCandidates>>,
    rrl: Option<Spanned<RawRrl>>,
    guard: Option<Spanned<RawGuard>>,
    update: Option<Spanned<RawUpdate>>,
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
    admin: Option<NodeState>,
    http_base: Option<Spanned<String>>,
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

/// Turns spans into file, line and column.
struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = self.text[..offset].matches('\n').count() + 1;
        let start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }

    fn err(
        &self,
        span: &Range<usize>,
        key: impl Into<String>,
        problem: ConfigProblem,
    ) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            problem,
        }
    }

    fn syntax(&self, e: &toml::de::Error) -> ConfigError {
        let start = e.span().map_or(0, |s| s.start);
        let (line, column) = self.line_col(start);
        ConfigError::Syntax {
            file: self.file.to_owned(),
            line,
            column,
            key: key_at(self.text, start),
            message: e.message().trim().to_owned(),
        }
    }
}

/// Best-effort dotted key at `offset`: the last table header before it, plus the key on
/// the offending line.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |p| p + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |p| offset + p);
    let line = &text[line_start..line_end];
    let mut table = String::new();
    for l in text[..line_start].lines().chain(std::iter::once(line)) {
        let t = l.trim();
        if t.starts_with('[') {
            t.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .clone_into(&mut table);
        }
    }
    let t = line.trim();
    if t.starts_with('[') {
        return table;
    }
    let key = t.split('=').next().unwrap_or("").trim();
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key.to_owned(),
        (false, false) => format!("{table}.{key}"),
    }
}

fn check_weight(ctx: &Ctx<'_>, w: &Spanned<i64>, key: &str) -> Result<u32, ConfigError> {
    u32::try_from(*w.get_ref())
        .ok()
        .filter(|w| (1..=MAX_WEIGHT).contains(w))
        .ok_or_else(|| {
            ctx.err(
                &w.span(),
                key,
                ConfigProblem::BadWeight {
                    weight: *w.get_ref(),
                    max: MAX_WEIGHT,
                },
            )
        })
}

fn check_ttl(ctx: &Ctx<'_>, t: &Spanned<u32>, key: &str) -> Result<u32, ConfigError> {
    let v = *t.get_ref();
    if v > MAX_TTL {
        return Err(ctx.err(
            &t.span(),
            key,
            ConfigProblem::OutOfRange {
                what: "ttl",
                value: i64::from(v),
                min: 0,
                max: i64::from(MAX_TTL),
            },
        ));
    }
    Ok(v)
}

/// An integer setting in `min..=max`, or `default` when absent.
fn ranged(
    ctx: &Ctx<'_>,
    v: Option<&Spanned<i64>>,
    what: &'static str,
    min: i64,
    max: i64,
    default: i64,
) -> Result<i64, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    let value = *v.get_ref();
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ctx.err(
            &v.span(),
            what,
            ConfigProblem::OutOfRange {
                what,
                value,
                min,
                max,
            },
        ))
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "every value is range-checked first"
)]
fn rrl(ctx: &Ctx<'_>, r: &RawRrl) -> Result<Rrl, ConfigError> {
    let d = Rrl::default();
    let rate = ranged(
        ctx,
        r.rate.as_ref(),
        "rrl.rate",
        0,
        10_000_000,
        d.rate.into(),
    )?;
    Ok(Rrl {
        rate: rate as u32,
        // One second of answers unless set.
        burst: ranged(
            ctx,
            r.burst.as_ref(),
            "rrl.burst",
            1,
            10_000_000,
            rate.max(1),
        )? as u32,
        slip: ranged(ctx, r.slip.as_ref(), "rrl.slip", 0, 10, d.slip.into())? as u32,
        ipv4_prefix: ranged(ctx, r.ipv4_prefix.as_ref(), "rrl.ipv4_prefix", 0, 32, 24)? as u8,
        ipv6_prefix: ranged(ctx, r.ipv6_prefix.as_ref(), "rrl.ipv6_prefix", 0, 128, 56)? as u8,
        buckets: ranged(
            ctx,
            r.buckets.as_ref(),
            "rrl.buckets",
            1,
            1 << 24,
            d.buckets.into(),
        )? as u32,
    })
}

fn guard(ctx: &Ctx<'_>, g: &RawGuard) -> Result<Guard, ConfigError> {
    let mut out = Guard::default();
    if let Some(ports) = &g.reflector_ports {
        out.reflector_ports = ports
            .iter()
            .map(|p| {
                ranged(ctx, Some(p), "guard.reflector_ports", 1, 65535, 0)
                    .map(|p| u16::try_from(p).unwrap_or(0))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(addrs) = &g.served_addresses {
        let mut list = Vec::new();
        let (mut v4, mut v6) = (0, 0);
        for a in addrs {
            let text = a.get_ref().trim();
            let ip = text.parse::<std::net::IpAddr>().map_err(|e| {
                ctx.err(
                    &a.span(),
                    "guard.served_addresses",
                    ConfigProblem::BadAddress {
                        value: text.to_owned(),
                        reason: e.to_string(),
                    },
                )
            })?;
            let n = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
            *n += 1;
            if *n > geodns_common::MAX_SERVED {
                return Err(ctx.err(
                    &a.span(),
                    "guard.served_addresses",
                    ConfigProblem::TooManyServed {
                        max: geodns_common::MAX_SERVED,
                    },
                ));
            }
            list.push(ip);
        }
        out.served_addresses = Some(list);
    }
    Ok(out)
}

fn parse_addrs<A: std::str::FromStr>(
    ctx: &Ctx<'_>,
    list: Option<&Spanned<OneOrMany>>,
    key: &str,
    family: &'static str,
) -> Result<Vec<A>, ConfigError> {
    let mut out = Vec::new();
    for s in &items(list) {
        let text = s.get_ref().trim();
        if let Ok(a) = text.parse::<A>() {
            out.push(a);
            continue;
        }
        let problem = match text.parse::<std::net::IpAddr>() {
            Ok(_) => ConfigProblem::FamilyMismatch {
                value: text.to_owned(),
                expected: family,
            },
            Err(e) => ConfigProblem::BadAddress {
                value: text.to_owned(),
                reason: e.to_string(),
            },
        };
        return Err(ctx.err(&s.span(), key, problem));
    }
    Ok(out)
}

fn parse_name(
    ctx: &Ctx<'_>,
    s: &Spanned<String>,
    origin: &str,
    key: &str,
) -> Result<String, ConfigError> {
    name::absolute(s.get_ref(), origin).map_err(|e| {
        ctx.err(
            &s.span(),
            key,
            ConfigProblem::BadName {
                value: s.get_ref().clone(),
                reason: e.to_string(),
            },
        )
    })
}

/// A health-check target (`http://...`, `https://...` or `host:port`) or, with
/// `host_port` false, an HTTP base URL.
fn check_target(
    ctx: &Ctx<'_>,
    value: Option<&Spanned<String>>,
    key: &str,
    host_port: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let text = v.get_ref().trim();
    let url = ["http://", "https://"]
        .iter()
        .any(|s| text.len() > s.len() && text.to_ascii_lowercase().starts_with(s));
    let ok = url
        || (host_port
            && !text.contains("://")
            && text.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            }));
    if ok {
        Ok(Some(text.to_owned()))
    } else {
        Err(ctx.err(
            &v.span(),
            key,
            ConfigProblem::BadTarget {
                value: text.to_owned(),
                expected: if host_port {
                    "an http:// or https:// URL, or host:port"
                } else {
                    "an http:// or https:// URL"
                },
            },
        ))
    }
}

/// Parses a map key: see [`RegionKey`].
fn parse_region_key(text: &str) -> Result<RegionKey, ConfigProblem> {
    let t = text.trim();
    let two_letters = crate::geo::letter_code;
    let bad_country = || ConfigProblem::BadCountry {
        value: t.to_owned(),
    };
    if t == "default" {
        return Ok(RegionKey::Default);
    }
    if t.contains('/') {
        return t
            .parse()
            .map(RegionKey::Cidr)
            .map_err(|source| ConfigProblem::BadCidr {
                value: t.to_owned(),
                source,
            });
    }
    if let Some(c) = t.strip_prefix("continent:") {
        return two_letters(c)
            .filter(|c| CONTINENT_CODES.iter().any(|k| k.as_bytes() == c))
            .map(RegionKey::Continent)
            .ok_or_else(|| ConfigProblem::BadContinent {
                value: t.to_owned(),
            });
    }
    if let Some(c) = t.strip_prefix("country:") {
        return two_letters(c)
            .map(RegionKey::Country)
            .ok_or_else(bad_country);
    }
    if let Some(n) = t.strip_prefix("AS").or_else(|| t.strip_prefix("as")) {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return n
                .parse()
                .map(RegionKey::Asn)
                .map_err(|_| ConfigProblem::BadAsn {
                    value: t.to_owned(),
                });
        }
    }
    if let Some(c) = two_letters(t) {
        return Ok(RegionKey::Country(c));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad_country());
    }
    Err(ConfigProblem::BadRegionKey {
        value: t.to_owned(),
    })
}

impl std::fmt::Display for RegionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = |c: &[u8; 2]| crate::geo::code_text(*c);
        match self {
            Self::Cidr(c) => write!(f, "{c}"),
            Self::Asn(n) => write!(f, "AS{n}"),
            Self::Country(c) => f.write_str(&code(c)),
            Self::Continent(c) => write!(f, "continent:{}", code(c)),
            Self::Default => f.write_str("default"),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Best => "best",
            Self::Spread => "spread",
        })
    }
}

impl serde::Serialize for RegionKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn known_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none defined".to_owned()
    } else {
        v.join(", ")
    }
}

/// Resolves candidate names and weights (`key` is the dotted path of the table).
fn candidates(
    ctx: &Ctx<'_>,
    raw: &Spanned<RawCandidates>,
    nodes: &[NodeConfig],
    key: &str,
) -> Result<Vec<Candidate>, ConfigError> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    for (name, weight) in &raw.get_ref().0 {
        let ckey = format!("{key}.{}", name.get_ref());
        let Ok(i) = nodes.binary_search_by(|n| n.name.as_str().cmp(name.get_ref())) else {
            return Err(ctx.err(
                &name.span(),
                ckey,
                ConfigProblem::UnknownNode {
                    node: name.get_ref().clone(),
                    known: known_list(nodes.iter().map(|n| n.name.as_str())),
                },
            ));
        };
        let weight = match weight {
            Some(w) => check_weight(ctx, w, &ckey)?,
            None => nodes[i].weight,
        };
        if let Some(j) = out.iter().position(|c| c.node == *name.get_ref()) {
            return Err(ctx.err(
                &name.span(),
                ckey,
                ConfigProblem::DuplicateKey {
                    key: name.get_ref().clone(),
                    first_line: lines[j],
                },
            ));
        }
        lines.push(ctx.line_col(name.span().start).0);
        out.push(Candidate::new(name.get_ref(), weight));
    }
    if out.is_empty() {
        return Err(ctx.err(&raw.span(), key, ConfigProblem::NoCandidates));
    }
    out.sort_by(|a, b| b.weight.cmp(&a.weight).then_with(|| a.node.cmp(&b.node)));
    Ok(out)
}

/// `[update]`: the keys (secret inline, or a BIND key file as `tsig-keygen` writes it).
fn update_policy(
    ctx: &Ctx<'_>,
    raw: Option<&Spanned<RawUpdate>>,
    base_dir: &Path,
) -> Result<UpdatePolicy, ConfigError> {
    let Some(raw) = raw else {
        return Ok(UpdatePolicy::default());
    };
    let mut keys: Vec<TsigKey> = Vec::new();
    for (i, k) in raw.get_ref().keys.iter().enumerate() {
        let key = format!("update.keys[{i}]");
        let bad = |reason: String| ctx.err(&k.span(), &key, ConfigProblem::BadKey { reason });
        let raw_key = k.get_ref();
        let (file_name, file_alg, file_secret) = match &raw_key.file {
            Some(f) => {
                let path = base_dir.join(f.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                    op: "reading TSIG key file",
                    path: path.clone(),
                    source,
                })?;
                let (n, a, s) = zone::parse_key_file(&text).ok_or_else(|| {
                    bad(format!(
                        "{}: expected key \"NAME\" {{ algorithm ...; secret \"...\"; }};",
                        path.display()
                    ))
                })?;
                (Some(n), Some(a), Some(s))
            }
            None => (None, None, None),
        };
        let name = raw_key
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .or(file_name)
            .ok_or_else(|| bad("a key needs `name` (or `file`)".to_owned()))?;
        let name = name::absolute(&name, ".").map_err(|e| bad(format!("name `{name}`: {e}")))?;
        let alg = raw_key
            .algorithm
            .as_ref()
            .map(|a| a.get_ref().clone())
            .or(file_alg)
            .unwrap_or_else(|| "hmac-sha256".to_owned());
        if !alg
            .trim_end_matches('.')
            .eq_ignore_ascii_case("hmac-sha256")
        {
            return Err(bad(format!(
                "algorithm `{alg}`: only hmac-sha256 is supported"
            )));
        }
        let secret_text = raw_key
            .secret
            .as_ref()
            .map(|s| s.get_ref().clone())
            .or(file_secret)
            .ok_or_else(|| bad("a key needs `secret` (base64) or `file`".to_owned()))?;
        let secret = zone::base64(&secret_text)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("secret: not base64 (as tsig-keygen prints it)".to_owned()))?;
        let allow = match &raw_key.allow {
            Some(list) => list
                .iter()
                .map(|l| l.get_ref().to_ascii_lowercase())
                .collect(),
            None => vec!["_acme-challenge".to_owned()],
        };
        let types = match &raw_key.types {
            Some(list) => list
                .iter()
                .map(|t| {
                    zone::parse_type(t.get_ref()).ok_or_else(|| {
                        ctx.err(
                            &t.span(),
                            format!("{key}.types"),
                            ConfigProblem::BadKey {
                                reason: format!("unknown type `{}`", t.get_ref()),
                            },
                        )
                    })
                })
                .collect::<Result<Vec<u16>, _>>()?,
            None => vec![zone::TYPE_TXT],
        };
        if types
            .iter()
            .any(|t| matches!(*t, zone::TYPE_SOA | zone::TYPE_NS))
        {
            return Err(bad("SOA and NS cannot be updated".to_owned()));
        }
        if keys.iter().any(|k| k.name == name) {
            return Err(bad(format!("key `{name}` defined twice")));
        }
        keys.push(TsigKey {
            name,
            secret,
            allow,
            types,
        });
    }
    Ok(UpdatePolicy { keys })
}

impl Config {
    /// Reads, parses and validates `path`. Relative paths inside are relative to the
    /// file's directory.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            op: "reading config",
            path: path.to_owned(),
            source,
        })?;
        Self::from_str_named(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `name` is used in errors, and relative paths are
    /// taken relative to `name`'s directory.
    pub fn from_str_named(text: &str, name: &str) -> Result<Self, ConfigError> {
        let ctx = Ctx { file: name, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.syntax(&e))?;
        let base_dir = Path::new(name)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Self::validate(&ctx, &raw, base_dir)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one pass over the sections, in file order"
    )]
    fn validate(ctx: &Ctx<'_>, raw: &RawConfig, base_dir: PathBuf) -> Result<Self, ConfigError> {
        // [zone]
        let z = raw.zone.get_ref();
        let origin = parse_name(ctx, &z.origin, "", "zone.origin")?;
        if origin.contains('*') {
            return Err(ctx.err(
                &z.origin.span(),
                "zone.origin",
                ConfigProblem::BadName {
                    value: z.origin.get_ref().clone(),
                    reason: "a wildcard cannot be the origin".to_owned(),
                },
            ));
        }
        let ttl = check_ttl(ctx, &z.ttl, "zone.ttl")?;
        let mut ns = Vec::new();
        for (i, n) in z.ns.iter().enumerate() {
            let key = format!("zone.ns[{i}]");
            let r = n.get_ref();
            ns.push(NsHost {
                name: parse_name(ctx, &r.name, &origin, &format!("{key}.name"))?,
                ipv4: parse_addrs(ctx, r.ipv4.as_ref(), &format!("{key}.ipv4"), "IPv4")?,
                ipv6: parse_addrs(ctx, r.ipv6.as_ref(), &format!("{key}.ipv6"), "IPv6")?,
            });
        }
        let file = z.file.as_ref().map(|f| base_dir.join(f.get_ref()));
        let mut statics = match &file {
            Some(f) => zone::load(f, &base_dir, &origin, ttl)?,
            None => StaticZone::default(),
        };
        let journal = file.as_ref().map_or_else(
            || base_dir.join(format!("{origin}jnl")),
            |f| {
                let mut j = f.clone().into_os_string();
                j.push(".jnl");
                PathBuf::from(j)
            },
        );
        let origin_wire = name::to_wire(&origin);
        let file_soa = statics.take_apex(&origin_wire, zone::TYPE_SOA);
        let file_ns = statics.take_apex(&origin_wire, zone::TYPE_NS);
        let journal_serial = zone::replay(&journal, &mut statics)?;
        statics.files.push(journal.clone());
        if let Some(set) = &file_ns {
            if let Some(first) = z.ns.first() {
                return Err(ZoneError::conflict(
                    &set.at,
                    format!(
                        "NS at the apex: also [[zone.ns]] on line {} of {}; keep one",
                        ctx.line_col(first.span().start).0,
                        ctx.file
                    ),
                )
                .into());
            }
            for rdata in &set.rdata {
                let wire = zone::rdata_name(rdata).unwrap_or_default();
                let addr = |t: u16| -> Vec<Vec<u8>> {
                    statics
                        .rrset(&wire, t)
                        .map(|s| s.rdata.clone())
                        .unwrap_or_default()
                };
                ns.push(NsHost {
                    name: name::to_presentation(&wire).unwrap_or_default(),
                    ipv4: addr(zone::TYPE_A)
                        .iter()
                        .filter_map(|b| <[u8; 4]>::try_from(&b[..]).ok().map(Ipv4Addr::from))
                        .collect(),
                    ipv6: addr(zone::TYPE_AAAA)
                        .iter()
                        .filter_map(|b| <[u8; 16]>::try_from(&b[..]).ok().map(Ipv6Addr::from))
                        .collect(),
                });
            }
        }
        if ns.is_empty() {
            return Err(ctx.err(&raw.zone.span(), "zone.ns", ConfigProblem::NoNameServers));
        }
        let toml_soa = z.mname.is_some()
            || z.rname.is_some()
            || z.serial.is_some()
            || z.refresh.is_some()
            || z.retry.is_some()
            || z.expire.is_some()
            || z.minimum.is_some();
        let zone = if let Some(set) = &file_soa {
            if toml_soa {
                return Err(ZoneError::conflict(
                    &set.at,
                    format!(
                        "SOA at the apex: also mname/rname/serial/... in [zone] of {}; keep one",
                        ctx.file
                    ),
                )
                .into());
            }
            let soa = zone::parse_soa(set.rdata.first().map_or(&[][..], |r| &r[..]))
                .ok_or_else(|| ZoneError::conflict(&set.at, "unreadable SOA".to_owned()))?;
            Zone {
                origin: origin.clone(),
                ttl,
                mname: soa.mname,
                rname: soa.rname,
                serial: soa.numbers[0],
                refresh: soa.numbers[1],
                retry: soa.numbers[2],
                expire: soa.numbers[3],
                minimum: soa.numbers[4],
                ns,
                file,
                journal,
            }
        } else {
            let mname = match &z.mname {
                Some(m) => parse_name(ctx, m, &origin, "zone.mname")?,
                None => ns[0].name.clone(),
            };
            let rname = match &z.rname {
                Some(r) => parse_name(ctx, r, &origin, "zone.rname")?,
                None => format!("hostmaster.{origin}"),
            };
            Zone {
                origin: origin.clone(),
                ttl,
                mname,
                rname,
                serial: z.serial.unwrap_or_else(default_serial),
                refresh: z.refresh.unwrap_or_else(default_refresh),
                retry: z.retry.unwrap_or_else(default_retry),
                expire: z.expire.unwrap_or_else(default_expire),
                minimum: z.minimum.unwrap_or_else(default_minimum),
                ns,
                file,
                journal,
            }
        };
        let mut zone = zone;
        if let Some(serial) = journal_serial {
            // Serial arithmetic (RFC 1982): the journal's is newer unless the configured
            // one moved past it.
            if serial.wrapping_sub(zone.serial).cast_signed() > 0 {
                zone.serial = serial;
            }
        }

        // [nodes.NAME]
        let mut nodes = Vec::new();
        for (name, n) in &raw.nodes {
            let key = format!("nodes.{}", name.get_ref());
            let ipv4 = parse_addrs(ctx, n.ipv4.as_ref(), &format!("{key}.ipv4"), "IPv4")?;
            let ipv6 = parse_addrs(ctx, n.ipv6.as_ref(), &format!("{key}.ipv6"), "IPv6")?;
            if ipv4.is_empty() && ipv6.is_empty() {
                return Err(ctx.err(
                    &name.span(),
                    key,
                    ConfigProblem::NoAddress {
                        node: name.get_ref().clone(),
                    },
                ));
            }
            let weight = match &n.weight {
                Some(w) => check_weight(ctx, w, &format!("{key}.weight"))?,
                None => 1,
            };
            for (v, what, lim) in [(&n.lat, "lat", 90.0), (&n.lon, "lon", 180.0)] {
                if let Some(v) = v {
                    let x = *v.get_ref();
                    if !(-lim..=lim).contains(&x) {
                        #[expect(
                            clippy::cast_possible_truncation,
                            reason = "only shown in the message"
                        )]
                        let value = x as i64;
                        #[expect(clippy::cast_possible_truncation, reason = "90 or 180")]
                        let lim = lim as i64;
                        return Err(ctx.err(
                            &v.span(),
                            format!("{key}.{what}"),
                            ConfigProblem::OutOfRange {
                                what,
                                value,
                                min: -lim,
                                max: lim,
                            },
                        ));
                    }
                }
            }
            nodes.push(NodeConfig {
                name: name.get_ref().clone(),
                ipv4,
                ipv6,
                weight,
                check: check_target(ctx, n.check.as_ref(), &format!("{key}.check"), true)?,
                lat: n.lat.as_ref().map(|v| *v.get_ref()),
                lon: n.lon.as_ref().map(|v| *v.get_ref()),
                admin: n.admin,
                http_base: check_target(
                    ctx,
                    n.http_base.as_ref(),
                    &format!("{key}.http_base"),
                    false,
                )?,
            });
        }

        // [geoip]
        let geoip = raw.geoip.as_ref().map(|g| {
            let g = g.get_ref();
            let paths = |s: Option<&Spanned<OneOrMany>>| -> Vec<PathBuf> {
                items(s)
                    .iter()
                    .map(|p| base_dir.join(p.get_ref()))
                    .collect()
            };
            let continent_field = match &g.continent_field {
                Some(f) if f.is_empty() => None,
                Some(f) => Some(f.clone()),
                None if g.country_field == "country.iso_code" => Some("continent.code".to_owned()),
                None => None,
            };
            GeoIp {
                country: paths(Some(&g.country)),
                asn: paths(g.asn.as_ref()),
                city: paths(g.city.as_ref()),
                country_field: g.country_field.clone(),
                continent_field,
                asn_field: g.asn_field.clone(),
            }
        });

        // [maps.NAME]
        let mut maps = Vec::new();
        for (mname, table) in &raw.maps {
            let mut rules: Vec<(usize, Rule)> = Vec::new();
            for (k, cands) in table {
                let key = format!("maps.{}.\"{}\"", mname.get_ref(), k.get_ref());
                let region =
                    parse_region_key(k.get_ref()).map_err(|p| ctx.err(&k.span(), &key, p))?;
                let needs = match (region, &geoip) {
                    (RegionKey::Country(_), None) => Some(("country", "country")),
                    (RegionKey::Continent(_), g)
                        if g.as_ref().is_none_or(|g| g.continent_field.is_none()) =>
                    {
                        Some(("continent", "continent_field"))
                    }
                    (RegionKey::Asn(_), g) if g.as_ref().is_none_or(|g| g.asn.is_empty()) => {
                        Some(("ASN", "asn"))
                    }
                    _ => None,
                };
                if let Some((kind, needs)) = needs {
                    return Err(ctx.err(
                        &k.span(),
                        key,
                        ConfigProblem::NeedsDatabase { kind, needs },
                    ));
                }
                let line = ctx.line_col(k.span().start).0;
                if let Some((first_line, _)) = rules.iter().find(|(_, r)| r.key == region) {
                    return Err(ctx.err(
                        &k.span(),
                        key,
                        ConfigProblem::DuplicateKey {
                            key: region.to_string(),
                            first_line: *first_line,
                        },
                    ));
                }
                let candidates = candidates(ctx, cands, &nodes, &key)?;
                rules.push((
                    line,
                    Rule {
                        key: region,
                        candidates,
                    },
                ));
            }
            rules.sort_by_key(|(line, _)| *line);
            maps.push(Map {
                name: mname.get_ref().clone(),
                rules: rules.into_iter().map(|(_, r)| r).collect(),
            });
        }

        // [[records]]
        let mut records: Vec<Record> = Vec::new();
        let mut record_lines: Vec<usize> = Vec::new();
        for (i, r) in raw.records.iter().enumerate() {
            let key = format!("records[{i}]");
            let rr = r.get_ref();
            let name = parse_name(ctx, &rr.name, &origin, &format!("{key}.name"))?;
            if !name::in_zone(&name::to_wire(&name), &name::to_wire(&origin)) {
                return Err(ctx.err(
                    &rr.name.span(),
                    format!("{key}.name"),
                    ConfigProblem::OutsideZone {
                        name,
                        origin: origin.clone(),
                    },
                ));
            }
            let line = ctx.line_col(rr.name.span().start).0;
            if let Some(j) = records.iter().position(|x| x.name == name) {
                return Err(ctx.err(
                    &rr.name.span(),
                    format!("{key}.name"),
                    ConfigProblem::DuplicateRecord {
                        name,
                        first_line: record_lines[j],
                    },
                ));
            }
            let Some(map) = maps.iter().position(|m| m.name == *rr.map.get_ref()) else {
                return Err(ctx.err(
                    &rr.map.span(),
                    format!("{key}.map"),
                    ConfigProblem::UnknownMap {
                        map: rr.map.get_ref().clone(),
                        known: known_list(maps.iter().map(|m| m.name.as_str())),
                    },
                ));
            };
            let ttl = match &rr.ttl {
                Some(t) => check_ttl(ctx, t, &format!("{key}.ttl"))?,
                None => ttl,
            };
            let policy = rr.policy.unwrap_or(Policy::Best);
            let max_answers = match (&rr.max_answers, policy) {
                (None, _) => 1,
                (Some(m), Policy::Best) => {
                    return Err(ctx.err(
                        &m.span(),
                        format!("{key}.max_answers"),
                        ConfigProblem::MaxAnswersWithBest,
                    ));
                }
                (Some(m), Policy::Spread) => u8::try_from(*m.get_ref())
                    .ok()
                    .filter(|n| (1..=u8::try_from(MAX_ANSWER_ADDRS).unwrap_or(u8::MAX)).contains(n))
                    .ok_or_else(|| {
                        ctx.err(
                            &m.span(),
                            format!("{key}.max_answers"),
                            ConfigProblem::OutOfRange {
                                what: "max_answers",
                                value: *m.get_ref(),
                                min: 1,
                                max: i64::try_from(MAX_ANSWER_ADDRS).unwrap_or(8),
                            },
                        )
                    })?,
            };
            if records.len() >= usize::from(u16::MAX) {
                return Err(ctx.err(
                    &r.span(),
                    key,
                    ConfigProblem::OutOfRange {
                        what: "number of records",
                        value: i64::try_from(records.len() + 1).unwrap_or(i64::MAX),
                        min: 0,
                        max: i64::from(u16::MAX) - 1,
                    },
                ));
            }
            record_lines.push(line);
            records.push(Record {
                wildcard: name.starts_with("*."),
                name,
                map,
                ttl,
                policy,
                max_answers,
            });
        }

        // [fallback]
        let fallback = match &raw.fallback {
            Some(f) if !f.get_ref().0.is_empty() => candidates(ctx, f, &nodes, "fallback")?,
            Some(f) => return Err(ctx.err(&f.span(), "fallback", ConfigProblem::EmptyFallback)),
            None => {
                let end = ctx.text.len();
                return Err(ctx.err(&(end..end), "fallback", ConfigProblem::EmptyFallback));
            }
        };

        let rrl = raw
            .rrl
            .as_ref()
            .map_or(Ok(Rrl::default()), |r| rrl(ctx, r.get_ref()))?;
        let guard = raw
            .guard
            .as_ref()
            .map_or(Ok(Guard::default()), |g| guard(ctx, g.get_ref()))?;

        let update = update_policy(ctx, raw.update.as_ref(), &base_dir)?;
        Ok(Self {
            file: ctx.file.to_owned(),
            base_dir,
            zone,
            nodes,
            geoip,
            maps,
            records,
            fallback,
            rrl,
            guard,
            statics,
            update,
        })
        .and_then(|c| {
            zone::check_against_records(
                &c.statics,
                &c.records,
                &record_lines,
                ctx.file,
                &origin_wire,
            )?;
            Ok(c)
        })
    }

    /// Legal but suspicious things in the config.
    #[must_use]
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let used = self.fallback.iter().any(|c| c.node == n.name)
                || self.maps.iter().any(|m| {
                    m.rules
                        .iter()
                        .any(|r| r.candidates.iter().any(|c| c.node == n.name))
                });
            if !used {
                out.push(ConfigWarning::UnusedNode {
                    node: n.name.clone(),
                });
            }
        }
        let any_v4 = self.nodes.iter().any(|n| !n.ipv4.is_empty());
        let any_v6 = self.nodes.iter().any(|n| !n.ipv6.is_empty());
        let has = |c: &Candidate, v6: bool| {
            self.node(&c.node).is_some_and(|n| {
                if v6 {
                    !n.ipv6.is_empty()
                } else {
                    !n.ipv4.is_empty()
                }
            })
        };
        for (i, m) in self.maps.iter().enumerate() {
            if !self.records.iter().any(|r| r.map == i) {
                out.push(ConfigWarning::UnusedMap {
                    map: m.name.clone(),
                });
                continue;
            }
            for r in &m.rules {
                for (v6, family, any) in [(false, "IPv4", any_v4), (true, "IPv6", any_v6)] {
                    if any && !r.candidates.iter().any(|c| has(c, v6)) {
                        out.push(ConfigWarning::NoFamily {
                            map: m.name.clone(),
                            key: r.key.to_string(),
                            family,
                        });
                    }
                }
            }
        }
        for (v6, family, any) in [(false, "IPv4", any_v4), (true, "IPv6", any_v6)] {
            if any && !self.fallback.iter().any(|c| has(c, v6)) {
                out.push(ConfigWarning::FallbackNoFamily { family });
            }
        }
        for r in &self.records {
            if self.kernel_name(r).is_none() {
                let wire = name::to_wire(&r.name);
                out.push(ConfigWarning::NameTooLong {
                    name: r.name.clone(),
                    wire_len: wire.len(),
                    labels: name::label_count(&r.name),
                    max_len: MAX_NAME_WIRE_LEN,
                    max_labels: MAX_LABELS,
                });
            }
        }
        let origin = name::to_wire(&self.zone.origin);
        for ns in &self.zone.ns {
            if name::in_zone(&name::to_wire(&ns.name), &origin)
                && ns.ipv4.is_empty()
                && ns.ipv6.is_empty()
            {
                out.push(ConfigWarning::NsWithoutGlue {
                    name: ns.name.clone(),
                });
            }
        }
        out
    }

    /// The kernel's key for a record, if its name fits the kernel's limits. A wildcard
    /// is keyed by its parent, and the names it answers are one label longer.
    #[must_use]
    pub fn kernel_name(&self, record: &Record) -> Option<NameKey> {
        if record.wildcard {
            let base = record.name.strip_prefix("*.").unwrap_or(&record.name);
            let wire = name::to_wire(base);
            // The shortest query it answers adds a one-byte label.
            if wire.len() + 2 > MAX_NAME_WIRE_LEN || name::label_count(base) + 1 > MAX_LABELS {
                return None;
            }
            name::kernel_key(&wire, true)
        } else {
            name::kernel_key(&name::to_wire(&record.name), false)
        }
    }

    #[must_use]
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.node_index(name).map(|i| &self.nodes[i])
    }

    /// Index of a node in [`Config::nodes`].
    #[must_use]
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    #[must_use]
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps.iter().find(|m| m.name == name)
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
