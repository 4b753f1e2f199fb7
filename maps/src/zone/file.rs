//! Master files (RFC 1035 section 5): `$ORIGIN`, `$TTL`, `$INCLUDE` (inside the config's
//! directory), parentheses, comments, relative names.

use std::path::Path;

use hickory_proto::{
    rr::{DNSClass, Name, RecordType},
    serialize::{
        binary::{BinEncodable, BinEncoder, NameEncoding},
        txt::{parse_ttl, Parser},
    },
};

use super::{Origin, StaticZone, ZoneError, MAX_INCLUDE_DEPTH};
use crate::name;

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
