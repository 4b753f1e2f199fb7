//! Why a config was rejected, and what in it looks unintended.
use std::path::PathBuf;

use crate::zone::ZoneError;

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
    /// (Not a `source`: the message already holds it, and a chain would say it twice.)
    #[error("zone file {0}")]
    Zone(ZoneError),
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

impl From<ZoneError> for ConfigError {
    fn from(e: ZoneError) -> Self {
        Self::Zone(e)
    }
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
        "unknown region key `{value}`: expected `default`, `nearest`, a country (`US`), \
         `continent:EU`, `AS13335` or a CIDR (`198.51.100.0/24`)"
    )]
    BadRegionKey { value: String },
    #[error(
        "node `{node}` has no `lat` and `lon`: a `nearest` key needs both for each of its nodes"
    )]
    NoLocation { node: String },
    #[error("`{value}` is not a valid domain name: {reason}")]
    BadName { value: String, reason: String },
    #[error("`{name}` is not inside the zone `{origin}`")]
    OutsideZone { name: String, origin: String },
    #[error("node `{node}` has no address: expected ipv4 and/or ipv6")]
    NoAddress { node: String },
    #[error("`{value}`: expected {expected}")]
    BadValue {
        value: String,
        expected: &'static str,
    },
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
    #[error("`{value}` is not a database of [geoip]: expected one of {known}")]
    UnknownDatabase { value: String, known: String },
    #[error("`{value}`: expected a SHA-256 digest (64 hex digits)")]
    BadDigest { value: String },
    #[error("`{value}`: expected \"majority\" or a number of boxes of at least 1")]
    BadQuorum { value: String },
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
