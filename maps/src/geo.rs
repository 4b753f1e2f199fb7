//! Reading `GeoIP` databases: every network with the few fields we need.
//!
//! Only the configured field paths are decoded, as borrowed strings or integers, and once
//! per data record (networks sharing a record share its data offset), so a walk costs
//! no allocation per network.
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use maxminddb::{PathElement, Reader, WithinOptions};
use serde::Deserialize;

use crate::report::{CompileError, Progress, ProgressStage};

/// What one database says about one network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Facts {
    pub country: Option<[u8; 2]>,
    pub continent: Option<[u8; 2]>,
    pub asn: Option<u32>,
    /// Where a City database puts the network.
    pub loc: Option<Loc>,
    /// The origin AS of the BGP route (`[bgp]`).
    pub bgp_asn: Option<u32>,
}

/// A location in units of 1e-4 degrees (about 11 m), so facts stay hashable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Loc {
    pub lat: i32,
    pub lon: i32,
}

impl Loc {
    /// From degrees; `None` outside the globe or not finite.
    #[expect(clippy::cast_possible_truncation, reason = "range checked first")]
    pub fn from_degrees(lat: f64, lon: f64) -> Option<Self> {
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then(|| Self {
            lat: (lat * 1e4).round() as i32,
            lon: (lon * 1e4).round() as i32,
        })
    }

    pub fn degrees(self) -> (f64, f64) {
        (f64::from(self.lat) / 1e4, f64::from(self.lon) / 1e4)
    }
}

impl Facts {
    /// `self`, with the fields it lacks taken from `other`.
    pub fn or(self, other: Self) -> Self {
        Self {
            country: self.country.or(other.country),
            continent: self.continent.or(other.continent),
            asn: self.asn.or(other.asn),
            loc: self.loc.or(other.loc),
            bgp_asn: self.bgp_asn.or(other.bgp_asn),
        }
    }
}

/// Which fields to read from one database (dotted paths split into keys).
#[derive(Clone, Debug, Default)]
pub(crate) struct Fields {
    pub country: Option<Vec<String>>,
    pub continent: Option<Vec<String>>,
    pub asn: Option<Vec<String>>,
    pub latitude: Option<Vec<String>>,
    pub longitude: Option<Vec<String>>,
}

impl Fields {
    pub fn split(path: &str) -> Vec<String> {
        path.split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A network of a database: first address (IPv4 in the low 32 bits), prefix length, and
/// an index into [`DbData::facts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Net {
    pub start: u128,
    pub len: u8,
    pub facts: u32,
}

/// Every network of one database, by family, in address order.
#[derive(Debug, Default)]
pub(crate) struct DbData {
    pub v4: Vec<Net>,
    pub v6: Vec<Net>,
    pub facts: Vec<Facts>,
}

/// A scalar as the database stores it, borrowed.
enum Scalar<'a> {
    Str(&'a str),
    Int(u64),
    Float(f64),
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            #[expect(clippy::cast_precision_loss, reason = "a coordinate")]
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                // A negative integer is only ever a coordinate here.
                Ok(u64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Self::Value, E> {
                Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_f32<E>(self, v: f32) -> Result<Self::Value, E> {
                Ok(Scalar::Float(f64::from(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Scalar::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Self::Value, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A country or continent code: two ASCII letters, uppercased.
pub(crate) fn letter_code(s: &str) -> Option<[u8; 2]> {
    match s.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// A code as text.
pub(crate) fn code_text(code: [u8; 2]) -> String {
    String::from_utf8_lossy(&code).into_owned()
}

fn code(s: &Scalar<'_>) -> Option<[u8; 2]> {
    match s {
        Scalar::Str(s) => letter_code(s),
        _ => None,
    }
}

fn asn(s: &Scalar<'_>) -> Option<u32> {
    match s {
        Scalar::Int(n) => u32::try_from(*n).ok(),
        Scalar::Str(s) => {
            let digits = s
                .strip_prefix("AS")
                .or_else(|| s.strip_prefix("as"))
                .unwrap_or(s);
            digits.parse().ok()
        }
        Scalar::Float(_) | Scalar::Other => None,
    }
}

/// A coordinate in degrees: a double or float (`MaxMind`), an integer, or a decimal
/// string (some flattened databases).
#[expect(clippy::cast_precision_loss, reason = "a coordinate")]
fn degrees(s: &Scalar<'_>) -> Option<f64> {
    match s {
        Scalar::Float(v) => Some(*v),
        Scalar::Int(n) => Some(*n as f64),
        Scalar::Str(s) => s.trim().parse().ok(),
        Scalar::Other => None,
    }
    .filter(|v: &f64| v.is_finite())
}

/// An opened database.
pub(crate) struct Db {
    pub path: PathBuf,
    pub reader: Reader<Vec<u8>>,
    /// The `STATE_FLAG_ALIAS_*` of the IPv6 ranges its tree aliases onto its IPv4
    /// tree.
    pub aliases: u32,
}

/// Which of the standard IPv6 ranges point at the IPv4 subtree (the node at `::/96`)
/// in a database's search tree: the record at the end of the range's prefix is that
/// node. Read from the raw tree (the reader's walk hides aliases, and a lookup cannot
/// tell an alias from a copy); anything out of bounds is no alias.
fn tree_aliases(bytes: &[u8], node_count: usize, record_size: u16) -> u32 {
    let node_bytes = usize::from(record_size) / 4;
    let read = |node: usize, bit: usize| -> Option<usize> {
        let at = node.checked_mul(node_bytes)?;
        let b = bytes.get(at..at + node_bytes)?;
        let be = |x: &[u8]| x.iter().fold(0usize, |acc, &v| acc << 8 | usize::from(v));
        Some(match (record_size, bit) {
            (24, 0) => be(&b[0..3]),
            (24, _) => be(&b[3..6]),
            (28, 0) => usize::from(b[3] & 0xF0) << 20 | be(&b[0..3]),
            (28, _) => usize::from(b[3] & 0x0F) << 24 | be(&b[4..7]),
            (32, 0) => be(&b[0..4]),
            (32, _) => be(&b[4..8]),
            _ => return None,
        })
    };
    // The node reached after `depth` leading bits of `bits`; `None` when the walk
    // leaves the tree (data or empty) before.
    let walk = |bits: u128, depth: u8| -> Option<usize> {
        let mut node = 0usize;
        for d in 0..depth {
            if node >= node_count {
                return None;
            }
            node = read(node, usize::from((bits >> (127 - d)) & 1 == 1))?;
        }
        Some(node)
    };
    let Some(ipv4) = walk(0, 96).filter(|n| *n < node_count) else {
        return 0;
    };
    geodns_common::IPV6_ALIASES
        .iter()
        .filter(|(_, start, len)| walk(*start, *len) == Some(ipv4))
        .fold(0, |acc, (flag, _, _)| acc | flag)
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, CompileError> {
        let bytes = std::fs::read(path).map_err(|source| CompileError::Io {
            op: "reading GeoIP database",
            path: path.to_owned(),
            source,
        })?;
        let err = |source| CompileError::Database {
            path: path.to_owned(),
            source,
        };
        // Metadata from a reader that borrows the bytes, for the raw tree walk.
        let aliases = {
            let m = Reader::from_source(&bytes[..])
                .map_err(err)?
                .metadata()
                .clone();
            match (m.ip_version, usize::try_from(m.node_count)) {
                (6, Ok(n)) => tree_aliases(&bytes, n, m.record_size),
                _ => 0,
            }
        };
        let reader = Reader::from_source(bytes).map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            reader,
            aliases,
        })
    }

    fn db_err(&self, source: maxminddb::MaxMindDbError) -> CompileError {
        CompileError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// The facts of the record at `result` (`None`: no data).
    fn decode(
        &self,
        result: &maxminddb::LookupResult<'_, Vec<u8>>,
        paths: &[Option<Vec<PathElement<'_>>>; 5],
    ) -> Result<Facts, CompileError> {
        let get = |p: &Option<Vec<PathElement<'_>>>| -> Result<Option<Scalar<'_>>, CompileError> {
            match p {
                Some(p) => result
                    .decode_path::<Scalar<'_>>(p)
                    .map_err(|e| self.db_err(e)),
                None => Ok(None),
            }
        };
        Ok(Facts {
            country: get(&paths[0])?.as_ref().and_then(code),
            continent: get(&paths[1])?.as_ref().and_then(code),
            asn: get(&paths[2])?.as_ref().and_then(asn),
            loc: match (
                get(&paths[3])?.as_ref().and_then(degrees),
                get(&paths[4])?.as_ref().and_then(degrees),
            ) {
                (Some(lat), Some(lon)) => Loc::from_degrees(lat, lon),
                _ => None,
            },
            bgp_asn: None,
        })
    }

    fn paths<'f>(fields: &'f Fields) -> [Option<Vec<PathElement<'f>>>; 5] {
        let p = |f: &'f Option<Vec<String>>| {
            f.as_ref()
                .map(|keys| keys.iter().map(|k| PathElement::Key(k.as_str())).collect())
        };
        [
            p(&fields.country),
            p(&fields.continent),
            p(&fields.asn),
            p(&fields.latitude),
            p(&fields.longitude),
        ]
    }

    /// The facts for one address (`None`: the address is in no network with data).
    pub fn lookup(
        &self,
        ip: IpAddr,
        fields: &Fields,
    ) -> Result<Option<(Facts, IpAddr, u8)>, CompileError> {
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Ok(None);
        }
        let r = self.reader.lookup(ip).map_err(|e| self.db_err(e))?;
        if !r.has_data() {
            return Ok(None);
        }
        let net = r.network().map_err(|e| self.db_err(e))?;
        Ok(Some((
            self.decode(&r, &Self::paths(fields))?,
            net.ip(),
            net.prefix(),
        )))
    }

    /// Walks every network. IPv4 networks come from the IPv4 tree (`::/96` in an IPv6
    /// database) only: the aliases `MaxMind` adds at `::ffff:0:0/96`, `2001::/32` and
    /// `2002::/16` are skipped by the reader, so each network is counted once (the
    /// compiled table translates aliased clients instead, see `Compiled::lookup`).
    pub fn read(
        &self,
        fields: &Fields,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<DbData, CompileError> {
        let paths = Self::paths(fields);
        let mut out = DbData::default();
        let mut by_offset: HashMap<usize, u32> = HashMap::new();
        let mut by_facts: HashMap<Facts, u32> = HashMap::new();
        let mut seen = [false; 4];
        let report = |n: u64, progress: &mut dyn FnMut(Progress)| {
            progress(Progress {
                stage: ProgressStage::Reading,
                path: Some(self.path.clone()),
                networks: n,
            });
        };
        let mut n: u64 = 0;
        let iter = self
            .reader
            .networks(WithinOptions::default())
            .map_err(|e| self.db_err(e))?;
        for item in iter {
            let r = item.map_err(|e| self.db_err(e))?;
            let Some(offset) = r.offset() else { continue };
            let idx = if let Some(i) = by_offset.get(&offset) {
                *i
            } else {
                let f = self.decode(&r, &paths)?;
                seen[0] |= f.country.is_some();
                seen[1] |= f.continent.is_some();
                seen[2] |= f.asn.is_some();
                seen[3] |= f.loc.is_some();
                let next = u32::try_from(out.facts.len()).unwrap_or(u32::MAX);
                let i = *by_facts.entry(f).or_insert(next);
                if i == next {
                    out.facts.push(f);
                }
                by_offset.insert(offset, i);
                i
            };
            let net = r.network().map_err(|e| self.db_err(e))?;
            match net.ip() {
                IpAddr::V4(a) => out.v4.push(Net {
                    start: u128::from(u32::from(a)),
                    len: net.prefix(),
                    facts: idx,
                }),
                IpAddr::V6(a) => {
                    let start = u128::from(a);
                    let len = net.prefix();
                    // A record above the IPv4 subtree (no `::/96` node) also answers
                    // every IPv4 address.
                    if len <= 96 && start >> 32 == 0 {
                        out.v4.push(Net {
                            start: 0,
                            len: 0,
                            facts: idx,
                        });
                    }
                    out.v6.push(Net {
                        start,
                        len,
                        facts: idx,
                    });
                }
            }
            n += 1;
            if n.is_multiple_of(65_536) {
                report(n, progress);
            }
        }
        report(n, progress);
        for (i, (field, name)) in [
            (&fields.country, "country"),
            (&fields.continent, "continent"),
            (&fields.asn, "asn"),
            (&fields.latitude, "location"),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(f) = field {
                if n > 0 && !seen[i] && name != "continent" {
                    return Err(CompileError::FieldNotFound {
                        path: self.path.clone(),
                        field: f.join("."),
                        networks: n,
                    });
                }
            }
        }
        out.v4.sort_unstable_by_key(|n| n.start);
        out.v6.sort_unstable_by_key(|n| n.start);
        Ok(out)
    }
}
