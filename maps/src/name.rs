//! Domain names: presentation <-> lowercase wire format, as the kernel keys them.
//!
//! The config writes names in presentation form; the kernel and [`crate::Engine`] compare
//! lowercase wire format. Only the characters hostnames use are accepted in the config
//! (letters, digits, `-`, `_`, and `*` as a whole first label), so presentation and wire
//! form map one to one without escapes.
use std::fmt::Write as _;

use geodns_common::{NameKey, MAX_LABELS, MAX_NAME_WIRE_LEN};

/// Longest name in wire format (RFC 1035).
pub const MAX_WIRE_LEN: usize = 255;

/// Why a presentation name was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("empty label")]
    EmptyLabel,
    #[error("label `{0}` is longer than 63 bytes")]
    LabelTooLong(String),
    #[error("longer than 255 bytes in wire format")]
    TooLong,
    #[error("character `{0}`: expected letters, digits, `-` or `_`")]
    BadChar(char),
    #[error("`*` is only allowed as the whole first label")]
    BadWildcard,
}

/// Makes `name` absolute and lowercase with a trailing dot. `@` is the origin; a name
/// without a trailing dot is relative to `origin` (like a zone file). `origin` must
/// itself be absolute (or empty, for the origin itself).
pub fn absolute(name: &str, origin: &str) -> Result<String, NameError> {
    let name = name.trim().to_ascii_lowercase();
    let full = if name == "@" {
        origin.to_owned()
    } else if name == "." {
        ".".to_owned()
    } else if name.ends_with('.') {
        name
    } else if origin.is_empty() || origin == "." {
        format!("{name}.")
    } else {
        format!("{name}.{origin}")
    };
    check(&full)?;
    Ok(full)
}

/// Checks an absolute lowercase presentation name.
fn check(name: &str) -> Result<(), NameError> {
    if name == "." {
        return Ok(());
    }
    let body = name.strip_suffix('.').unwrap_or(name);
    let mut wire = 1;
    for (i, label) in body.split('.').enumerate() {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong(label.to_owned()));
        }
        if label.contains('*') {
            if label != "*" || i != 0 {
                return Err(NameError::BadWildcard);
            }
        } else if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(NameError::BadChar(c));
        }
        wire += label.len() + 1;
    }
    if wire > MAX_WIRE_LEN {
        return Err(NameError::TooLong);
    }
    Ok(())
}

/// Wire format of an absolute presentation name checked by [`absolute`].
#[must_use]
pub fn to_wire(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Presentation form of a wire name (escaping bytes outside letters, digits, `-`, `_`,
/// `*` as `\DDD`); `None` if `wire` is not one well-formed uncompressed name.
#[must_use]
pub fn to_presentation(wire: &[u8]) -> Option<String> {
    let labels = labels(wire)?;
    if labels.is_empty() {
        return Some(".".to_owned());
    }
    let mut out = String::new();
    for label in labels {
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*' {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "\\{b:03}");
            }
        }
        out.push('.');
    }
    Some(out)
}

/// The labels of a wire name (without the root); `None` if malformed: a compression
/// pointer, a label running past the end, bytes after the root, or longer than 255.
#[must_use]
pub fn labels(wire: &[u8]) -> Option<Vec<&[u8]>> {
    if wire.len() > MAX_WIRE_LEN {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let len = usize::from(*wire.get(i)?);
        if len == 0 {
            return (i + 1 == wire.len()).then_some(out);
        }
        if len > 63 {
            return None;
        }
        out.push(wire.get(i + 1..i + 1 + len)?);
        i += 1 + len;
    }
}

/// Whether `wire` is a well-formed plain wire name: what [`labels`] accepts, without
/// collecting the labels.
#[must_use]
pub fn is_plain(wire: &[u8]) -> bool {
    if wire.len() > MAX_WIRE_LEN {
        return false;
    }
    let mut i = 0;
    loop {
        let Some(&len) = wire.get(i) else {
            return false;
        };
        let len = usize::from(len);
        if len == 0 {
            return i + 1 == wire.len();
        }
        if len > 63 || i + 1 + len > wire.len() {
            return false;
        }
        i += 1 + len;
    }
}

/// ASCII-lowercased copy of a wire name (length bytes are never letters).
#[must_use]
pub fn lowercase(wire: &[u8]) -> Vec<u8> {
    wire.to_ascii_lowercase()
}

/// Number of labels of an absolute presentation name (the root has none).
#[must_use]
pub fn label_count(name: &str) -> usize {
    name.split('.').filter(|l| !l.is_empty()).count()
}

/// The kernel key of a wire name, if it fits (at most [`MAX_NAME_WIRE_LEN`] bytes and
/// [`MAX_LABELS`] labels).
#[must_use]
pub fn kernel_key(wire: &[u8], wildcard: bool) -> Option<NameKey> {
    let n = labels(wire)?.len();
    if wire.len() > MAX_NAME_WIRE_LEN || n > MAX_LABELS {
        return None;
    }
    let mut key = NameKey::ZERO;
    key.wildcard = u8::from(wildcard);
    key.name[..wire.len()].copy_from_slice(wire);
    Some(key)
}

/// The wire name without its first label (`None` for the root).
#[must_use]
pub fn parent(wire: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*wire.first()?);
    if len == 0 {
        return None;
    }
    wire.get(1 + len..)
}

/// Whether wire name `name` is `zone` or below it (both lowercase).
#[must_use]
pub fn in_zone(name: &[u8], zone: &[u8]) -> bool {
    let mut cur = name;
    loop {
        if cur == zone {
            return true;
        }
        match parent(cur) {
            Some(p) => cur = p,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_names() {
        let o = "cdn.example.net.";
        assert_eq!(
            absolute("WWW", o).expect("relative"),
            "www.cdn.example.net."
        );
        assert_eq!(absolute("@", o).expect("origin"), o);
        assert_eq!(absolute("a.b.", o).expect("absolute"), "a.b.");
        assert_eq!(
            absolute("*.img", o).expect("wildcard"),
            "*.img.cdn.example.net."
        );
        assert_eq!(absolute("a.*", o), Err(NameError::BadWildcard));
        assert_eq!(absolute("a..b.", o), Err(NameError::EmptyLabel));
        assert_eq!(absolute("a b", o), Err(NameError::BadChar(' ')));
        assert!(matches!(
            absolute(&"a".repeat(64), o),
            Err(NameError::LabelTooLong(_))
        ));
        let long = format!("{}.", vec!["a".repeat(60); 5].join("."));
        assert_eq!(absolute(&long, o), Err(NameError::TooLong));
    }

    #[test]
    fn wire_round_trip() {
        let w = to_wire("www.cdn.example.net.");
        assert_eq!(w, b"\x03www\x03cdn\x07example\x03net\x00");
        assert_eq!(to_presentation(&w).as_deref(), Some("www.cdn.example.net."));
        assert_eq!(to_wire("."), b"\x00");
        assert_eq!(labels(b"\x03www\x00").expect("ok").len(), 1);
        assert_eq!(labels(b"\x03ww"), None);
        assert_eq!(labels(b"\xc0\x0c"), None);
        assert_eq!(labels(b"\x00\x00"), None);
        assert_eq!(to_presentation(b"\x01\x07\x00").as_deref(), Some("\\007."));
        assert!(in_zone(&w, &to_wire("example.net.")));
        assert!(!in_zone(
            &to_wire("xexample.net."),
            &to_wire("example.net.")
        ));
        assert_eq!(parent(&w), Some(&to_wire("cdn.example.net.")[..]));
    }

    #[test]
    fn kernel_keys() {
        let k = kernel_key(&to_wire("a.example."), true).expect("fits");
        assert_eq!(k.wildcard, 1);
        assert_eq!(&k.name[..11], b"\x01a\x07example\x00");
        assert!(k.name[11..].iter().all(|b| *b == 0));
        let many = format!("{}example.", "a.".repeat(16));
        assert!(kernel_key(&to_wire(&many), false).is_none());
        let fifteen = format!("{}example.", "a.".repeat(15));
        assert!(kernel_key(&to_wire(&fifteen), false).is_some());
    }
}
