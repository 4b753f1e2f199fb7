//! A small `MaxMind` DB writer (tests, the demo databases and the bench), and a
//! deterministic synthetic country + ASN database generator ([`synth`]).
//!
//! Format: <https://maxmind.github.io/MaxMind-DB/>. A binary search tree of nodes with
//! two records each (24, 28 or 32 bits, the smallest that fits), 16 zero bytes, the
//! data section, then `\xAB\xCD\xEFMaxMind.com` and the metadata map. Identical records
//! share one copy in the data section. An IPv6 database keeps IPv4 networks under
//! `::/96` and, like `MaxMind`'s own, can alias `::ffff:0:0/96`, `2001::/32` and
//! `2002::/16` to that subtree ([`Writer::alias_ipv4`], [`Writer::ipv4_aliases`]).
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

/// A data-section value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Double(f64),
    Bool(bool),
    Array(Vec<Value>),
    /// Keys in the order given.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A map from `(key, value)` pairs.
    #[must_use]
    pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Self::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// A string value.
    #[must_use]
    pub fn str(s: &str) -> Self {
        Self::String(s.to_owned())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::String(s) => {
                control(TYPE_STRING, s.len(), out);
                out.extend_from_slice(s.as_bytes());
            }
            Self::U16(v) => uint(TYPE_UINT16, u64::from(*v), out),
            Self::U32(v) => uint(TYPE_UINT32, u64::from(*v), out),
            Self::U64(v) => uint(TYPE_UINT64, *v, out),
            Self::Double(v) => {
                control(TYPE_DOUBLE, 8, out);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::Bool(b) => control(TYPE_BOOL, usize::from(*b), out),
            Self::Array(items) => {
                control(TYPE_ARRAY, items.len(), out);
                for item in items {
                    item.encode(out);
                }
            }
            Self::Map(pairs) => {
                control(TYPE_MAP, pairs.len(), out);
                for (k, v) in pairs {
                    control(TYPE_STRING, k.len(), out);
                    out.extend_from_slice(k.as_bytes());
                    v.encode(out);
                }
            }
        }
    }
}

const TYPE_STRING: u8 = 2;
const TYPE_DOUBLE: u8 = 3;
const TYPE_UINT16: u8 = 5;
const TYPE_UINT32: u8 = 6;
const TYPE_MAP: u8 = 7;
const TYPE_UINT64: u8 = 9;
const TYPE_ARRAY: u8 = 11;
const TYPE_BOOL: u8 = 14;

/// Control byte(s): type in the top 3 bits (extended types in a second byte), size in
/// the low 5 bits with 1-3 extra bytes for large sizes.
fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
    let (first_type, extended) = if kind <= 7 {
        (kind << 5, None)
    } else {
        (0, Some(kind - 7))
    };
    let (size_bits, extra): (u8, &[u8]) = match size {
        0..29 => (u8::try_from(size).unwrap_or(0), &[]),
        29..285 => (29, &[0; 1]),
        285..65_821 => (30, &[0; 2]),
        _ => (31, &[0; 3]),
    };
    out.push(first_type | size_bits);
    if let Some(e) = extended {
        out.push(e);
    }
    match extra.len() {
        1 => out.push(u8::try_from(size - 29).unwrap_or(u8::MAX)),
        2 => out.extend_from_slice(&u16::try_from(size - 285).unwrap_or(u16::MAX).to_be_bytes()),
        3 => {
            let v = u32::try_from(size - 65_821)
                .unwrap_or(0x00FF_FFFF)
                .min(0x00FF_FFFF);
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
        _ => {}
    }
}

fn uint(kind: u8, v: u64, out: &mut Vec<u8>) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(kind, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

/// Why a network could not be inserted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error("an IPv4-only database cannot hold the IPv6 network {addr}/{len}")]
    Family { addr: IpAddr, len: u8 },
    #[error("prefix length {len} is too long for {addr}")]
    PrefixLen { addr: IpAddr, len: u8 },
    #[error("the database is too large for 32-bit records")]
    TooLarge,
}

/// A record of the tree while it is built: empty, a child node, or a data offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Empty,
    Node(u32),
    Data(u32),
    /// Points to the IPv4 subtree (`::/96`); resolved when the tree is written.
    Ipv4Alias,
}

/// Builds a `MaxMind` DB in memory. Later inserts win over earlier ones where they
/// overlap (a /16 inserted after its /8 splits the /8).
#[derive(Debug)]
pub struct Writer {
    ip_version: u8,
    database_type: String,
    description: String,
    /// `STATE_FLAG_ALIAS_*` of the ranges pointed at the IPv4 subtree.
    aliases: u32,
    build_epoch: u64,
    /// Node 0 is the root.
    nodes: Vec<[Slot; 2]>,
    data: Vec<u8>,
    dedup: HashMap<Vec<u8>, u32>,
    scratch: Vec<u8>,
}

impl Writer {
    /// `ip_version` 4 or 6 (anything but 4 means 6). An IPv6 database keeps IPv4
    /// networks at `::/96`.
    #[must_use]
    pub fn new(ip_version: u8, database_type: &str) -> Self {
        Self {
            ip_version: if ip_version == 4 { 4 } else { 6 },
            database_type: database_type.to_owned(),
            description: format!("{database_type} written by geodns-maps"),
            aliases: 0,
            build_epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            nodes: vec![[Slot::Empty; 2]],
            data: Vec::new(),
            dedup: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Makes `::ffff:0:0/96`, `2001::/32` and `2002::/16` point at the IPv4 subtree, as
    /// `MaxMind`'s IPv6 databases do (IPv6 databases only).
    #[must_use]
    pub fn alias_ipv4(self, on: bool) -> Self {
        self.ipv4_aliases(if on {
            geodns_common::STATE_FLAG_ALIASES
        } else {
            0
        })
    }

    /// Points only the ranges of `flags` (`STATE_FLAG_ALIAS_*`) at the IPv4 subtree.
    #[must_use]
    pub fn ipv4_aliases(mut self, flags: u32) -> Self {
        self.aliases = if self.ip_version == 6 {
            flags & geodns_common::STATE_FLAG_ALIASES
        } else {
            0
        };
        self
    }

    /// Fixes the build time (reproducible files).
    #[must_use]
    pub fn build_epoch(mut self, epoch: u64) -> Self {
        self.build_epoch = epoch;
        self
    }

    /// Inserts `addr/len` with `value`. Host bits of `addr` are ignored. In an IPv6
    /// database an IPv4 network goes to `::a.b.c.d/(96 + len)`.
    pub fn insert(&mut self, addr: IpAddr, len: u8, value: &Value) -> Result<(), WriteError> {
        let (bits, width) = match addr {
            IpAddr::V4(a) if self.ip_version == 4 => (u128::from(u32::from(a)) << 96, 32),
            IpAddr::V4(a) => (u128::from(u32::from(a)), 128),
            IpAddr::V6(_) if self.ip_version == 4 => return Err(WriteError::Family { addr, len }),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        let family_width = if addr.is_ipv4() { 32 } else { 128 };
        if len > family_width {
            return Err(WriteError::PrefixLen { addr, len });
        }
        let depth = if width == 128 && addr.is_ipv4() {
            len + 96
        } else {
            len
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        value.encode(&mut scratch);
        let offset = if let Some(o) = self.dedup.get(&scratch) {
            *o
        } else {
            let o = u32::try_from(self.data.len()).map_err(|_| WriteError::TooLarge)?;
            self.data.extend_from_slice(&scratch);
            self.dedup.insert(scratch.clone(), o);
            o
        };
        self.scratch = scratch;
        self.set(bits, depth, Slot::Data(offset));
        Ok(())
    }

    /// Sets the slot for the `depth` leading bits of `bits` (a 128-bit left-aligned
    /// value), splitting data leaves on the way so the rest of their range keeps them.
    fn set(&mut self, bits: u128, depth: u8, slot: Slot) {
        if depth == 0 {
            self.nodes[0] = [slot, slot];
            return;
        }
        let mut node = 0usize;
        for d in 0..depth {
            let bit = usize::from((bits >> (127 - d)) & 1 == 1);
            if d + 1 == depth {
                self.nodes[node][bit] = slot;
                return;
            }
            node = match self.nodes[node][bit] {
                Slot::Node(n) => n as usize,
                other => {
                    let n = self.nodes.len();
                    self.nodes.push([other, other]);
                    self.nodes[node][bit] = Slot::Node(u32::try_from(n).unwrap_or(u32::MAX));
                    n
                }
            };
        }
    }

    /// The node at the end of the `depth` leading bits, created if needed.
    fn node_at(&mut self, bits: u128, depth: u8) -> usize {
        let mut node = 0usize;
        for d in 0..depth {
            let bit = usize::from((bits >> (127 - d)) & 1 == 1);
            node = match self.nodes[node][bit] {
                Slot::Node(n) => n as usize,
                other => {
                    let n = self.nodes.len();
                    self.nodes.push([other, other]);
                    self.nodes[node][bit] = Slot::Node(u32::try_from(n).unwrap_or(u32::MAX));
                    n
                }
            };
        }
        node
    }

    /// The database file's bytes. (`&mut` because the IPv4 aliases are added to the tree
    /// here; calling it twice gives the same bytes.)
    pub fn to_bytes(&mut self) -> Result<Vec<u8>, WriteError> {
        let this = self;
        let mut ipv4_root = None;
        if this.aliases != 0 {
            ipv4_root = Some(this.node_at(0, 96));
            for (flag, start, len) in geodns_common::IPV6_ALIASES {
                if this.aliases & flag != 0 {
                    this.set(start, len, Slot::Ipv4Alias);
                }
            }
        }
        // Number the reachable nodes breadth first; orphans of overwrites disappear.
        let mut number = vec![u32::MAX; this.nodes.len()];
        let mut order = Vec::with_capacity(this.nodes.len());
        number[0] = 0;
        order.push(0usize);
        let mut i = 0;
        while i < order.len() {
            let n = order[i];
            i += 1;
            for slot in this.nodes[n] {
                if let Slot::Node(c) = slot {
                    let c = c as usize;
                    if number[c] == u32::MAX {
                        number[c] = u32::try_from(order.len()).map_err(|_| WriteError::TooLarge)?;
                        order.push(c);
                    }
                }
            }
        }
        let node_count = u32::try_from(order.len()).map_err(|_| WriteError::TooLarge)?;
        let max_pointer = u64::from(node_count) + 16 + this.data.len() as u64;
        let record_size: u16 = match max_pointer {
            0..0x0100_0000 => 24,
            0x0100_0000..0x1000_0000 => 28,
            0x1000_0000..0x1_0000_0000 => 32,
            _ => return Err(WriteError::TooLarge),
        };
        let alias_target = ipv4_root.map_or(node_count, |r| number[r]);
        let value = |slot: Slot| -> u32 {
            match slot {
                Slot::Empty => node_count,
                Slot::Node(c) => number[c as usize],
                Slot::Data(off) => node_count + 16 + off,
                Slot::Ipv4Alias => alias_target,
            }
        };
        let node_bytes = usize::from(record_size) / 4;
        let mut out = Vec::with_capacity(order.len() * node_bytes + 16 + this.data.len() + 512);
        for &n in &order {
            let [l, r] = this.nodes[n];
            let (l, r) = (value(l), value(r));
            match record_size {
                24 => {
                    out.extend_from_slice(&l.to_be_bytes()[1..]);
                    out.extend_from_slice(&r.to_be_bytes()[1..]);
                }
                28 => {
                    out.extend_from_slice(&l.to_be_bytes()[1..]);
                    out.push(u8::try_from(((l >> 20) & 0xF0) | (r >> 24)).unwrap_or(0));
                    out.extend_from_slice(&r.to_be_bytes()[1..]);
                }
                _ => {
                    out.extend_from_slice(&l.to_be_bytes());
                    out.extend_from_slice(&r.to_be_bytes());
                }
            }
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&this.data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let meta = Value::map([
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(this.build_epoch)),
            ("database_type", Value::str(&this.database_type)),
            (
                "description",
                Value::map([("en", Value::str(&this.description))]),
            ),
            ("ip_version", Value::U16(u16::from(this.ip_version))),
            ("languages", Value::Array(vec![Value::str("en")])),
            ("node_count", Value::U32(node_count)),
            ("record_size", Value::U16(record_size)),
        ]);
        meta.encode(&mut out);
        Ok(out)
    }

    /// Writes the database to `path`.
    pub fn write_to(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        let bytes = self
            .to_bytes()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        std::fs::write(path, bytes)
    }
}

/// A tiny deterministic generator (`SplitMix64`), so the synthetic database needs no
/// `rand` and is the same on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(crate::rng::GAMMA);
        crate::rng::mix(self.0)
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        crate::rng::scale(self.next_u64(), n)
    }
}

pub mod synth;

#[cfg(test)]
mod tests;

pub mod demo;
