//! RFC 2136 changes: applying one to the static zone, and the journal they are appended
//! to and replayed from.

use std::path::Path;

use super::{Origin, StaticZone, ZoneError, TYPE_ANY};

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
