//! Static records from an RFC 1035 master file (`[zone] file = "cdn.zone"`).
//!
//! The file is split into entries here (comments, quotes and parentheses decide where
//! an entry ends), so that every error names the file and the line it starts on, the
//! directives (`$ORIGIN`, `$TTL`, `$INCLUDE`) are applied here, and `$INCLUDE` can be
//! held to the config's directory. Each resource record is then parsed by hickory-proto's
//! zone-file parser (`serialize::txt::Parser`, which knows the presentation format of
//! every type: TXT, CAA, HTTPS/SVCB with their `SvcParams`, MX, SRV, ...) and kept as
//! uncompressed wire RDATA, ready to copy into a response.
use std::{collections::BTreeMap, path::PathBuf};

use hickory_proto::rr::RecordType;

use crate::name;

mod file;
mod journal;

pub use file::load;
pub use journal::{journal_append, journal_entry, replay, Change};

/// Deepest chain of `$INCLUDE`s.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Meta type ANY (RFC 2136 deletions and prerequisites) is `TYPE_ANY`.
pub use geodns_common::dns::rtype::{
    A as TYPE_A, AAAA as TYPE_AAAA, ANY as TYPE_ANY, CNAME as TYPE_CNAME, NS as TYPE_NS,
    SOA as TYPE_SOA, TXT as TYPE_TXT,
};

/// Why a zone file was rejected: the file, the line its entry starts on, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
#[non_exhaustive]
pub struct ZoneError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl ZoneError {
    /// An error at the place an record set was defined.
    #[must_use]
    pub fn conflict(at: &Origin, reason: String) -> Self {
        Self {
            file: at.file.clone(),
            line: at.line,
            reason,
        }
    }
}

/// An SOA RDATA read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Soa {
    /// Absolute presentation names.
    pub mname: String,
    pub rname: String,
    /// serial, refresh, retry, expire, minimum.
    pub numbers: [u32; 5],
}

/// Reads an uncompressed SOA RDATA.
#[must_use]
pub fn parse_soa(rdata: &[u8]) -> Option<Soa> {
    let m_len = name_len(rdata)?;
    let r_len = name_len(rdata.get(m_len..)?)?;
    let nums = rdata.get(m_len + r_len..)?;
    if nums.len() != 20 {
        return None;
    }
    let mut numbers = [0u32; 5];
    for (n, c) in numbers.iter_mut().zip(nums.chunks_exact(4)) {
        *n = u32::from_be_bytes(c.try_into().ok()?);
    }
    Some(Soa {
        mname: name::to_presentation(&name::lowercase(&rdata[..m_len]))?,
        rname: name::to_presentation(&name::lowercase(&rdata[m_len..m_len + r_len]))?,
        numbers,
    })
}

/// Length of the uncompressed wire name at the start of `b`.
fn name_len(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let l = usize::from(*b.get(i)?);
        if l == 0 {
            return Some(i + 1);
        }
        if l > 63 {
            return None;
        }
        i += 1 + l;
    }
}

/// The geo records and the static data must not disagree: no static A, AAAA or CNAME
/// at a geo name, no CNAME beside other data or at the apex, no geo name at or below a
/// delegation.
pub fn check_against_records(
    statics: &StaticZone,
    records: &[crate::Record],
    record_lines: &[usize],
    config_file: &str,
    origin: &[u8],
) -> Result<(), ZoneError> {
    for (i, r) in records.iter().enumerate() {
        let wire = name::to_wire(&r.name);
        let line = record_lines.get(i).copied().unwrap_or(0);
        if let Some(sets) = statics.names.get(&wire) {
            if let Some(set) = sets
                .iter()
                .find(|s| matches!(s.rtype, TYPE_A | TYPE_AAAA | TYPE_CNAME))
            {
                return Err(ZoneError::conflict(
                    &set.at,
                    format!(
                        "{} at `{}`: the name is a geo record ([[records]] on line {line} of {config_file}), which answers A/AAAA; remove one of them",
                        type_name(set.rtype),
                        r.name
                    ),
                ));
            }
        }
        if let Some(cut) = statics.cut_at_or_above(&wire, origin) {
            let set = statics.rrset(&cut, TYPE_NS).map_or_else(
                || Origin {
                    file: String::new(),
                    line: 0,
                },
                |s| s.at.clone(),
            );
            return Err(ZoneError::conflict(
                &set,
                format!(
                    "NS at `{}` delegates `{}`, a geo record ([[records]] on line {line} of {config_file}); a delegated name is served by the child zone",
                    name::to_presentation(&cut).unwrap_or_default(),
                    r.name
                ),
            ));
        }
    }
    for (owner, sets) in &statics.names {
        if let Some(c) = sets.iter().find(|s| s.rtype == TYPE_CNAME) {
            let shown = name::to_presentation(owner).unwrap_or_default();
            if owner == origin {
                return Err(ZoneError::conflict(
                    &c.at,
                    format!("CNAME at the apex `{shown}`, which has SOA and NS"),
                ));
            }
            if sets.len() > 1 || c.rdata.len() > 1 {
                return Err(ZoneError::conflict(
                    &c.at,
                    format!("CNAME at `{shown}` beside other data (RFC 1034 section 3.6.2)"),
                ));
            }
        }
    }
    Ok(())
}

/// The mnemonic of a type.
#[must_use]
pub fn type_name(rtype: u16) -> String {
    RecordType::from(rtype).to_string()
}

/// Where an record set was defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The records of one type at one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rrset {
    pub rtype: u16,
    pub ttl: u32,
    /// Uncompressed wire RDATA, one per record, duplicates removed, in file order.
    pub rdata: Vec<Vec<u8>>,
    /// The first record's place.
    pub at: Origin,
}

/// Every static record set of the zone, by owner (lowercase wire format).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticZone {
    pub names: BTreeMap<Vec<u8>, Vec<Rrset>>,
    /// The zone file and every file it includes (watched for reloads).
    pub files: Vec<PathBuf>,
}

impl StaticZone {
    /// The record set of `rtype` at the lowercase wire name `owner`.
    #[must_use]
    pub fn rrset(&self, owner: &[u8], rtype: u16) -> Option<&Rrset> {
        self.names.get(owner)?.iter().find(|r| r.rtype == rtype)
    }

    /// Removes and returns the apex record set of `rtype`.
    pub fn take_apex(&mut self, origin: &[u8], rtype: u16) -> Option<Rrset> {
        let sets = self.names.get_mut(origin)?;
        let i = sets.iter().position(|s| s.rtype == rtype)?;
        let set = sets.remove(i);
        if sets.is_empty() {
            self.names.remove(origin);
        }
        Some(set)
    }

    /// The highest delegation (a static NS below the apex) at or above `wire`.
    #[must_use]
    pub fn cut_at_or_above(&self, wire: &[u8], origin: &[u8]) -> Option<Vec<u8>> {
        self.cut_in(wire, origin).map(<[u8]>::to_vec)
    }

    /// [`StaticZone::cut_at_or_above`] as a suffix of `wire` (no copy).
    #[must_use]
    pub fn cut_in<'a>(&self, wire: &'a [u8], origin: &[u8]) -> Option<&'a [u8]> {
        if self.names.is_empty() {
            return None;
        }
        let mut found = None;
        let mut cur = Some(wire);
        while let Some(c) = cur {
            if c.len() <= origin.len() {
                break;
            }
            if self.rrset(c, TYPE_NS).is_some() {
                found = Some(c);
            }
            cur = name::parent(c);
        }
        found
    }

    /// Adds one record (an RFC 2136 update, or a line of the file); a duplicate RDATA
    /// changes nothing. Returns whether the zone changed.
    pub fn add(
        &mut self,
        owner: Vec<u8>,
        rtype: u16,
        ttl: u32,
        rdata: Vec<u8>,
        at: Origin,
    ) -> bool {
        let sets = self.names.entry(owner).or_default();
        if let Some(set) = sets.iter_mut().find(|s| s.rtype == rtype) {
            if set.rdata.contains(&rdata) {
                return false;
            }
            set.rdata.push(rdata);
            return true;
        }
        sets.push(Rrset {
            rtype,
            ttl,
            rdata: vec![rdata],
            at,
        });
        true
    }
}

/// The wire name a CNAME, NS (or other single-name) RDATA holds.
#[must_use]
pub fn rdata_name(rdata: &[u8]) -> Option<Vec<u8>> {
    name::labels(rdata)?;
    Some(name::lowercase(rdata))
}

/// A type by mnemonic (`TXT`, `HTTPS`), `TYPE65`, or number.
#[must_use]
pub fn parse_type(text: &str) -> Option<u16> {
    let t = text.trim().to_ascii_uppercase();
    if let Ok(n) = t.parse::<u16>() {
        return Some(n);
    }
    if let Some(n) = t.strip_prefix("TYPE").and_then(|n| n.parse::<u16>().ok()) {
        return Some(n);
    }
    t.parse::<RecordType>()
        .ok()
        .map(u16::from)
        .filter(|n| !matches!(*n, 0 | TYPE_ANY))
}

/// Standard base64 (padding optional, whitespace ignored), as `tsig-keygen` prints it.
#[must_use]
pub fn base64(text: &str) -> Option<Vec<u8>> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let padded = if t.len().is_multiple_of(4) {
        t
    } else {
        format!("{t}{}", "=".repeat(4 - t.len() % 4))
    };
    data_encoding::BASE64.decode(padded.as_bytes()).ok()
}

/// A BIND key file: `key "NAME" { algorithm ALG; secret "BASE64"; };` -> (name,
/// algorithm, secret text). Comments (`#`, `//`) are skipped.
#[must_use]
pub fn parse_key_file(text: &str) -> Option<(String, String, String)> {
    let body: String = text
        .lines()
        .map(|l| {
            let l = l.split('#').next().unwrap_or("");
            l.split("//").next().unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let rest = body.trim_start().strip_prefix("key")?;
    let open = rest.find('{')?;
    let name = rest[..open].trim().trim_matches('"').to_owned();
    let inner = &rest[open + 1..rest.rfind('}')?];
    let mut alg = None;
    let mut secret = None;
    for stmt in inner.split(';') {
        let mut words = stmt.split_whitespace();
        match words.next() {
            Some("algorithm") => alg = words.next().map(|a| a.trim_matches('"').to_owned()),
            Some("secret") => secret = words.next().map(|s| s.trim_matches('"').to_owned()),
            _ => {}
        }
    }
    (!name.is_empty()).then_some((name, alg?, secret?))
}
