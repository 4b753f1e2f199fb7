//! Static records from an RFC 1035 master file (`[zone] file = "cdn.zone"`).
//!
//! The file is split into entries here (comments, quotes and parentheses decide where
//! an entry ends), so that every error names the file and the line it starts on, the
//! directives (`$ORIGIN`, `$TTL`, `$INCLUDE`) are applied here, and `$INCLUDE` can be
//! held to the config's directory. Each resource record is then parsed by hickory-proto's
//! zone-file parser (`serialize::txt::Parser`, which knows the presentation format of
//! every type: TXT, CAA, HTTPS/SVCB with their `SvcParams`, MX, SRV, ...) and kept as
//! uncompressed wire RDATA, ready to copy into a response.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use hickory_proto::{
    rr::{DNSClass, Name, RecordType},
    serialize::{
        binary::{BinEncodable, BinEncoder, NameEncoding},
        txt::{parse_ttl, Parser},
    },
};

use crate::name;

/// Deepest chain of `$INCLUDE`s.
const MAX_INCLUDE_DEPTH: usize = 8;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
/// Meta type ANY (RFC 2136 deletions and prerequisites).
pub const TYPE_ANY: u16 = 255;

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
        let mut found = None;
        let mut cur = Some(wire);
        while let Some(c) = cur {
            if c.len() <= origin.len() {
                break;
            }
            if self.rrset(c, TYPE_NS).is_some() {
                found = Some(c.to_vec());
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

/// Reads the master file `path` for the zone `origin` (absolute presentation).
/// `base_dir` is the config's directory: `$INCLUDE` must stay inside it. `default_ttl`
/// applies until a `$TTL`.
pub fn load(
    path: &Path,
    base_dir: &Path,
    origin: &str,
    default_ttl: u32,
) -> Result<StaticZone, ZoneError> {
    let mut zone = StaticZone::default();
    let mut state = State {
        origin: origin.to_owned(),
        zone_wire: name::to_wire(origin),
        ttl: default_ttl,
        owner: None,
    };
    let root = base_dir
        .canonicalize()
        .unwrap_or_else(|_| base_dir.to_path_buf());
    read_file(path, &root, &mut state, &mut zone, 0, None)?;
    Ok(zone)
}

struct State {
    /// Current `$ORIGIN` (absolute presentation).
    origin: String,
    zone_wire: Vec<u8>,
    ttl: u32,
    /// Previous owner, absolute presentation (for entries that start with a blank).
    owner: Option<String>,
}

fn read_file(
    path: &Path,
    root: &Path,
    state: &mut State,
    zone: &mut StaticZone,
    depth: usize,
    from: Option<&Origin>,
) -> Result<(), ZoneError> {
    let shown = path.display().to_string();
    let err_from = |reason: String| match from {
        Some(o) => ZoneError {
            file: o.file.clone(),
            line: o.line,
            reason,
        },
        None => ZoneError {
            file: shown.clone(),
            line: 0,
            reason,
        },
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| err_from(format!("reading {shown}: {e}")))?;
    zone.files.push(path.to_path_buf());
    for (line, entry) in entries(&text) {
        let at = Origin {
            file: shown.clone(),
            line,
        };
        let err = |reason: String| ZoneError {
            file: shown.clone(),
            line,
            reason,
        };
        let trimmed = entry.trim_start();
        let mut words = trimmed.split_whitespace();
        let first = words.next().unwrap_or("").to_ascii_uppercase();
        match first.as_str() {
            "$ORIGIN" => {
                let o = words
                    .next()
                    .ok_or_else(|| err("$ORIGIN needs a name".into()))?;
                state.origin = absolute(o, &state.origin).map_err(err)?;
            }
            "$TTL" => {
                let t = words
                    .next()
                    .ok_or_else(|| err("$TTL needs a value".into()))?;
                state.ttl = parse_ttl(t).map_err(|e| err(format!("$TTL `{t}`: {e}")))?;
            }
            "$INCLUDE" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(err(format!(
                        "$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH} files"
                    )));
                }
                let f = words
                    .next()
                    .ok_or_else(|| err("$INCLUDE needs a file".into()))?;
                let f = f.trim_matches('"');
                let target = root.join(f);
                let canonical = target
                    .canonicalize()
                    .map_err(|e| err(format!("$INCLUDE {f}: {e}")))?;
                if !canonical.starts_with(root) {
                    return Err(err(format!(
                        "$INCLUDE {f}: outside the config's directory {}",
                        root.display()
                    )));
                }
                // RFC 1035: the included file may set its own origin; the includer's
                // origin and owner are back in force after it.
                let saved = (state.origin.clone(), state.owner.clone());
                if let Some(o) = words.next() {
                    state.origin = absolute(o, &state.origin).map_err(err)?;
                }
                read_file(&target, root, state, zone, depth + 1, Some(&at))?;
                (state.origin, state.owner) = saved;
            }
            d if d.starts_with('$') => return Err(err(format!("unknown directive `{d}`"))),
            _ => record(&entry, state, zone, &at)?,
        }
    }
    Ok(())
}

fn absolute(name: &str, origin: &str) -> Result<String, String> {
    let n = if name == "@" {
        origin.to_owned()
    } else if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.{origin}")
    };
    Name::from_ascii(&n)
        .map(|n| n.to_ascii())
        .map_err(|e| format!("bad name `{name}`: {e}"))
}

/// One resource record entry, parsed by hickory-proto's zone-file parser.
fn record(
    entry: &str,
    state: &mut State,
    zone: &mut StaticZone,
    at: &Origin,
) -> Result<(), ZoneError> {
    let err = |reason: String| ZoneError {
        file: at.file.clone(),
        line: at.line,
        reason,
    };
    let text = if entry.starts_with([' ', '\t']) {
        let owner = state
            .owner
            .as_ref()
            .ok_or_else(|| err("no owner name (the first record must name one)".into()))?;
        format!("$TTL {}\n{owner}{entry}\n", state.ttl)
    } else {
        format!("$TTL {}\n{entry}\n", state.ttl)
    };
    let origin = Name::from_ascii(&state.origin).map_err(|e| err(e.to_string()))?;
    let (_, sets) = Parser::new(text, None, Some(origin))
        .parse()
        .map_err(|e| err(e.to_string()))?;
    for set in sets.values() {
        for r in set.records_without_rrsigs() {
            if r.dns_class != DNSClass::IN {
                return Err(err(format!("class {}: only IN is served", r.dns_class)));
            }
            let owner_name = r.name.to_ascii();
            let mut owner = Vec::new();
            r.name
                .to_lowercase()
                .emit(&mut BinEncoder::new(&mut owner))
                .map_err(|e| err(e.to_string()))?;
            if !name::in_zone(&owner, &state.zone_wire) {
                return Err(err(format!(
                    "`{owner_name}` is not inside the zone `{}`",
                    name::to_presentation(&state.zone_wire).unwrap_or_default()
                )));
            }
            let rtype = r.record_type();
            if matches!(rtype, RecordType::OPT | RecordType::TSIG | RecordType::ANY)
                || u16::from(rtype) >= 128 && u16::from(rtype) <= 255
            {
                return Err(err(format!("type {rtype} cannot be a zone record")));
            }
            let mut rdata = Vec::new();
            {
                let mut enc = BinEncoder::new(&mut rdata);
                enc.set_name_encoding(NameEncoding::Uncompressed);
                r.data.emit(&mut enc).map_err(|e| err(e.to_string()))?;
            }
            zone.add(owner, u16::from(rtype), r.ttl, rdata, at.clone());
            state.owner = Some(owner_name);
        }
    }
    Ok(())
}

/// Splits a master file into entries: (line the entry starts on, its text). An entry
/// ends at a newline outside parentheses and quotes; comments run from `;` to the end
/// of the line. Blank and comment-only lines are skipped.
fn entries(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    let mut line = 1;
    let (mut depth, mut quoted, mut escaped, mut comment) = (0usize, false, false, false);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            comment = false;
            if depth == 0 && !quoted {
                if !cur.trim().is_empty() {
                    out.push((start, std::mem::take(&mut cur)));
                }
                cur.clear();
                start = line;
                continue;
            }
            cur.push(' ');
            continue;
        }
        if comment {
            continue;
        }
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            match c {
                ';' => {
                    comment = true;
                    continue;
                }
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if cur.chars().all(char::is_whitespace) && !c.is_whitespace() {
            start = line;
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push((start, cur));
    }
    out
}

/// The wire name a CNAME, NS (or other single-name) RDATA holds.
#[must_use]
pub fn rdata_name(rdata: &[u8]) -> Option<Vec<u8>> {
    name::labels(rdata)?;
    Some(name::lowercase(rdata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_join_parentheses_and_skip_comments() {
        let e =
            entries("; c\n@ IN SOA a b (\n 1 ; serial\n 2 3 4 5 )\nwww TXT \"a;b\"\n\n  TXT x\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(e[0].0, 2);
        assert!(e[0].1.contains("2 3 4 5"));
        assert_eq!(e[1], (5, "www TXT \"a;b\"".to_owned()));
        assert_eq!(e[2].0, 7);
        assert!(e[2].1.starts_with("  "));
    }
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

/// One change of an RFC 2136 update, as applied and as journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add one record to its record set (owner lowercase wire).
    Add {
        owner: Vec<u8>,
        rtype: u16,
        ttl: u32,
        rdata: Vec<u8>,
    },
    /// Delete one record set (`TYPE_ANY`: every record set at the name).
    DeleteRrset { owner: Vec<u8>, rtype: u16 },
    /// Delete one record.
    DeleteRr {
        owner: Vec<u8>,
        rtype: u16,
        rdata: Vec<u8>,
    },
}

impl StaticZone {
    /// Applies one change; returns whether the zone changed.
    pub fn apply(&mut self, change: &Change, at: &Origin) -> bool {
        match change {
            Change::Add {
                owner,
                rtype,
                ttl,
                rdata,
            } => self.add(owner.clone(), *rtype, *ttl, rdata.clone(), at.clone()),
            Change::DeleteRrset { owner, rtype } => {
                let Some(sets) = self.names.get_mut(owner) else {
                    return false;
                };
                let before = sets.len();
                sets.retain(|s| *rtype != TYPE_ANY && s.rtype != *rtype);
                let changed = sets.len() != before;
                if sets.is_empty() {
                    self.names.remove(owner);
                }
                changed
            }
            Change::DeleteRr {
                owner,
                rtype,
                rdata,
            } => {
                let Some(sets) = self.names.get_mut(owner) else {
                    return false;
                };
                let Some(set) = sets.iter_mut().find(|s| s.rtype == *rtype) else {
                    return false;
                };
                let before = set.rdata.len();
                set.rdata.retain(|r| r != rdata);
                let changed = set.rdata.len() != before;
                sets.retain(|s| !s.rdata.is_empty());
                if sets.is_empty() {
                    self.names.remove(owner);
                }
                changed
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

/// The journal's text for one applied update: its changes, then the new serial.
#[must_use]
pub fn journal_entry(changes: &[Change], serial: u32) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for c in changes {
        let _ = match c {
            Change::Add {
                owner,
                rtype,
                ttl,
                rdata,
            } => writeln!(out, "add {} {rtype} {ttl} {}", hex(owner), hex(rdata)),
            Change::DeleteRrset { owner, rtype } => {
                writeln!(out, "delrrset {} {rtype}", hex(owner))
            }
            Change::DeleteRr {
                owner,
                rtype,
                rdata,
            } => writeln!(out, "delrr {} {rtype} {}", hex(owner), hex(rdata)),
        };
    }
    let _ = writeln!(out, "serial {serial}");
    out
}

/// Appends `entry` to the journal and syncs it to disk before returning.
pub fn journal_append(path: &Path, entry: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(entry.as_bytes())?;
    f.sync_data()
}

/// Replays the journal at `path` (if it exists) over `zone`; returns the last serial.
pub fn replay(path: &Path, zone: &mut StaticZone) -> Result<Option<u32>, ZoneError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ZoneError {
                file: shown,
                line: 0,
                reason: format!("reading the journal: {e}"),
            })
        }
    };
    let mut serial = None;
    for (i, line) in text.lines().enumerate() {
        let at = Origin {
            file: shown.clone(),
            line: i + 1,
        };
        let bad = || ZoneError::conflict(&at, format!("unreadable journal line `{line}`"));
        let w: Vec<&str> = line.split_whitespace().collect();
        let unhex = |s: &str| data_encoding::HEXLOWER.decode(s.as_bytes()).ok();
        let num = |s: &str| s.parse::<u32>().ok();
        let change = match w.as_slice() {
            [] => continue,
            [c, ..] if c.starts_with(';') => continue,
            ["serial", n] => {
                serial = Some(num(n).ok_or_else(bad)?);
                continue;
            }
            ["add", o, t, ttl, r] => Change::Add {
                owner: unhex(o).ok_or_else(bad)?,
                rtype: u16::try_from(num(t).ok_or_else(bad)?).map_err(|_| bad())?,
                ttl: num(ttl).ok_or_else(bad)?,
                rdata: unhex(r).ok_or_else(bad)?,
            },
            ["delrrset", o, t] => Change::DeleteRrset {
                owner: unhex(o).ok_or_else(bad)?,
                rtype: u16::try_from(num(t).ok_or_else(bad)?).map_err(|_| bad())?,
            },
            ["delrr", o, t, r] => Change::DeleteRr {
                owner: unhex(o).ok_or_else(bad)?,
                rtype: u16::try_from(num(t).ok_or_else(bad)?).map_err(|_| bad())?,
                rdata: unhex(r).ok_or_else(bad)?,
            },
            _ => return Err(bad()),
        };
        zone.apply(&change, &at);
    }
    Ok(serial)
}
