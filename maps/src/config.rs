//! The TOML config: zone, nodes, `GeoIP` databases, maps, records, fallback.
//!
//! [`Config::from_path`] parses and validates; every error names the file, the line and
//! column, and the key. Names are stored lowercase, absolute, with a trailing dot.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use crate::{cidr::Cidr, engine::NodeState};

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
}

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
    /// Absolute (resolved against the config's directory).
    pub country: PathBuf,
    pub asn: Option<PathBuf>,
    pub city: Option<PathBuf>,
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
    #[error("{op} {path}: {source}")]
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
    #[error(
        "bad country code `{value}`: expected two letters (ISO 3166-1 alpha-2) such as `US`"
    )]
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

impl Config {
    /// Reads, parses and validates `path`.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let _ = path;
        unimplemented!()
    }

    /// Parses and validates `text`; `name` is used in errors, and relative paths are
    /// taken relative to `name`'s directory.
    pub fn from_str_named(text: &str, name: &str) -> Result<Self, ConfigError> {
        let _ = (text, name);
        unimplemented!()
    }

    /// Legal but suspicious things in the config.
    #[must_use]
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        unimplemented!()
    }

    #[must_use]
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    #[must_use]
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps.iter().find(|m| m.name == name)
    }
}
