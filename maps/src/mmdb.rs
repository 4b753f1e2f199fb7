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

/// The synthetic database's schema: `MaxMind`-like field paths `country.iso_code`,
/// `continent.code` and `autonomous_system_number` in one record.
pub mod synth {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{SplitMix64, Value, WriteError, Writer};

    /// Continent codes used by the generator.
    pub const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

    /// Two-letter codes `AA`..: the first 250 of them, each on a continent.
    #[must_use]
    pub fn countries() -> Vec<([u8; 2], &'static str)> {
        (0..250u8)
            .map(|i| {
                let code = [b'A' + i / 26, b'A' + i % 26];
                (code, CONTINENTS[usize::from(i) % CONTINENTS.len()])
            })
            .collect()
    }

    /// What was generated.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SynthStats {
        pub networks_v4: usize,
        pub networks_v6: usize,
    }

    /// A config for a synthetic database at `db_file` (relative to the config's directory):
    /// 20 nodes, a map with a key for every third country, the 7 continents, 100 AS
    /// numbers, a CIDR and a default, and three records (best, wildcard, spread).
    #[must_use]
    pub fn config_toml(db_file: &str) -> String {
        use std::fmt::Write as _;
        let mut t = String::from(
            "# Generated by geodns_maps::mmdb::synth::config_toml for benches.\n\
             [zone]\norigin = \"cdn.example.net.\"\n[[zone.ns]]\nname = \"ns1.example.org.\"\n\n",
        );
        for i in 1..=20 {
            let _ = writeln!(
                t,
                "[nodes.n{i}]\nipv4 = \"198.18.{i}.1\"\nipv6 = \"2001:2:0:{i}::1\""
            );
        }
        let _ = writeln!(
            t,
            "\n[geoip]\ncountry = \"{db_file}\"\nasn = \"{db_file}\"\n\n[maps.main]\n\"198.18.0.0/15\" = [\"n1\"]"
        );
        for (k, (code, _)) in countries().iter().step_by(3).enumerate() {
            let code = crate::geo::code_text(*code);
            let _ = writeln!(
                t,
                "\"{code}\" = {{ n{} = 10, n{} = 5 }}",
                1 + k % 20,
                1 + (k + 7) % 20
            );
        }
        for (k, c) in CONTINENTS.iter().enumerate() {
            let _ = writeln!(t, "\"continent:{c}\" = [\"n{}\"]", 1 + k);
        }
        for a in (100..40_000).step_by(400) {
            let _ = writeln!(t, "\"AS{a}\" = [\"n{}\"]", 1 + a % 20);
        }
        t.push_str(
            "default = [\"n1\", \"n2\"]\n\n\
             [[records]]\nname = \"www\"\nmap = \"main\"\n\n\
             [[records]]\nname = \"*.img\"\nmap = \"main\"\n\n\
             [[records]]\nname = \"dl\"\nmap = \"main\"\npolicy = \"spread\"\nmax_answers = 2\n\n\
             [fallback]\nn1 = 1\nn2 = 1\n",
        );
        t
    }

    /// An IPv6 database with `networks` networks (70% IPv4), deterministic from `seed`.
    ///
    /// Like a real country + ASN database it is built from allocations: contiguous
    /// ranges of addresses, each with one country and AS, cut into the fewest prefixes
    /// (so lengths are mixed: IPv4 mostly /16 to /24 with many longer where a range
    /// ends off a /24 boundary; IPv6 /20 to /64), one after the other with an occasional
    /// unallocated gap. About 250 countries on 7 continents, skewed so that a few hold
    /// most ranges, and 40 000 AS numbers.
    pub fn country_asn(networks: usize, seed: u64) -> Result<(Writer, SynthStats), WriteError> {
        let mut rng = SplitMix64(seed);
        let countries = countries();
        let mut w = Writer::new(6, "GeoDNS-Synthetic-Country-ASN")
            .alias_ipv4(true)
            .build_epoch(1_700_000_000);
        let n4 = networks * 7 / 10;
        let n6 = networks - n4;
        let mut stats = SynthStats::default();
        let record = |rng: &mut SplitMix64| {
            let a = rng.below(countries.len() as u64);
            let b = rng.below(countries.len() as u64);
            let c = usize::try_from(a.min(b)).unwrap_or(0);
            let (code, continent) = countries[c];
            let asn = 1 + u32::try_from(rng.below(40_000)).unwrap_or(0);
            Value::map([
                ("continent", Value::map([("code", Value::str(continent))])),
                (
                    "country",
                    Value::map([("iso_code", Value::String(crate::geo::code_text(code)))]),
                ),
                ("autonomous_system_number", Value::U32(asn)),
            ])
        };
        for (v6, want) in [(false, n4), (true, n6)] {
            // IPv4 from 1.0.0.0 to 224.0.0.0; IPv6 from 2400:: (clear of the 6to4
            // alias at 2002::/16) to 4000::.
            let (width, mut cursor, end, unit) = if v6 {
                (128u8, 0x2400_u128 << 112, 0x4000_u128 << 112, 1u128 << 64)
            } else {
                (32u8, 1u128 << 24, 224u128 << 24, 1u128)
            };
            let mut made = 0usize;
            while made < want {
                let value = record(&mut rng);
                // Range size in units: log-uniform over a realistic span.
                let (lo, hi) = if v6 { (0u32, 28u32) } else { (3u32, 17u32) };
                let k = lo + u32::try_from(rng.below(u64::from(hi - lo))).unwrap_or(0);
                let mut size = (1u128 << k) + u128::from(rng.below(1u64 << k.min(62)));
                // Most IPv4 allocations end on a /24 boundary, most IPv6 ones on a /48.
                let round = if v6 { 1u128 << 16 } else { 256 };
                if size >= round && rng.below(10) < 8 {
                    size = size / round * round;
                }
                let size = size * unit;
                if cursor + size > end {
                    break;
                }
                crate::partition::cover(cursor, cursor + size - 1, width, |start, len| {
                    if made < want {
                        let addr = if v6 {
                            IpAddr::V6(Ipv6Addr::from(start))
                        } else {
                            IpAddr::V4(Ipv4Addr::from(u32::try_from(start).unwrap_or(0)))
                        };
                        if w.insert(addr, len, &value).is_ok() {
                            made += 1;
                        }
                    }
                });
                cursor += size;
                // An unallocated gap now and then.
                if rng.below(10) == 0 {
                    cursor += (round << rng.below(8)) * unit;
                }
            }
            if v6 {
                stats.networks_v6 = made;
            } else {
                stats.networks_v4 = made;
            }
        }
        Ok((w, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxminddb::{PathElement, Reader};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn country(code: &str) -> Value {
        Value::map([("country", Value::map([("iso_code", Value::str(code))]))])
    }

    fn lookup_country(r: &Reader<Vec<u8>>, ip: &str) -> Option<String> {
        let res = r.lookup(ip.parse().expect("ip")).expect("lookup");
        res.decode_path::<String>(&[PathElement::Key("country"), PathElement::Key("iso_code")])
            .expect("decode")
    }

    #[test]
    fn round_trips_through_maxminddb() {
        let mut w = Writer::new(6, "Test").alias_ipv4(true);
        w.insert(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8, &country("US"))
            .expect("insert");
        // Nested: splits the /8.
        w.insert(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16, &country("DE"))
            .expect("insert");
        w.insert(
            IpAddr::V6("2001:db8::".parse::<Ipv6Addr>().expect("v6")),
            32,
            &Value::map([
                ("country", Value::map([("iso_code", Value::str("JP"))])),
                ("n", Value::U64(1 << 40)),
                ("d", Value::Double(1.5)),
                ("b", Value::Bool(true)),
                ("long", Value::str(&"x".repeat(70_000))),
                ("a", Value::Array((0..300).map(Value::U32).collect())),
            ]),
        )
        .expect("insert");
        let bytes = w.to_bytes().expect("write");
        let r = Reader::from_source(bytes).expect("valid database");
        r.verify().expect("verifies");
        assert_eq!(lookup_country(&r, "10.2.3.4").as_deref(), Some("US"));
        assert_eq!(lookup_country(&r, "10.1.3.4").as_deref(), Some("DE"));
        assert_eq!(lookup_country(&r, "11.0.0.1"), None);
        assert_eq!(lookup_country(&r, "2001:db8::1").as_deref(), Some("JP"));
        // The aliases reach the IPv4 subtree.
        assert_eq!(lookup_country(&r, "::ffff:10.1.0.1").as_deref(), Some("DE"));
        assert_eq!(
            lookup_country(&r, "2002:0a00:0001::").as_deref(),
            Some("US")
        );
        let net = r
            .lookup("10.200.0.1".parse().expect("ip"))
            .expect("lookup")
            .network()
            .expect("network");
        assert_eq!(net.to_string(), "10.128.0.0/9");
        // Iteration yields each IPv4 network once (aliases skipped).
        let nets: Vec<String> = r
            .networks(maxminddb::WithinOptions::default())
            .expect("iterate")
            .map(|n| n.expect("network").network().expect("net").to_string())
            .collect();
        assert_eq!(nets.len(), 1 + 8 + 1, "{nets:?}");
    }

    #[test]
    fn ipv4_database() {
        let mut w = Writer::new(4, "Test");
        w.insert(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24, &country("FR"))
            .expect("insert");
        assert!(w
            .insert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128, &country("FR"))
            .is_err());
        let r = Reader::from_source(w.to_bytes().expect("write")).expect("valid");
        r.verify().expect("verifies");
        assert_eq!(lookup_country(&r, "192.0.2.9").as_deref(), Some("FR"));
    }

    #[test]
    fn synthetic_database_is_deterministic_and_readable() {
        let (mut writer, stats) = synth::country_asn(5_000, 7).expect("synth");
        assert_eq!(stats.networks_v4 + stats.networks_v6, 5_000);
        let first = writer.to_bytes().expect("write");
        let second = synth::country_asn(5_000, 7)
            .expect("synth")
            .0
            .to_bytes()
            .expect("write");
        assert_eq!(first, second);
        let reader = Reader::from_source(first).expect("valid");
        reader.verify().expect("verifies");
        let count = reader
            .networks(maxminddb::WithinOptions::default())
            .expect("iterate")
            .count();
        assert_eq!(count, 5_000);
    }
}

/// The demo databases committed under `examples/` (`cargo run -p geodns-maps --example
/// make-demo-db` writes them; a test checks the committed files are these bytes).
///
/// Client networks are documentation and lab space: `192.0.2.0/24`, `198.51.100.0/24`,
/// `203.0.113.0/24`, `10.0.0.0/8`, `100.64.0.0/10`, `2001:db8::/32`, `3fff::/20`.
pub mod demo {
    use std::net::IpAddr;

    use super::{Value, WriteError, Writer};

    /// File name and bytes of each demo database.
    pub fn databases() -> Result<Vec<(&'static str, Vec<u8>)>, WriteError> {
        Ok(vec![
            ("demo-country.mmdb", country()?.to_bytes()?),
            ("demo-asn.mmdb", asn()?.to_bytes()?),
        ])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    fn place(country: &str, continent: &str) -> Value {
        Value::map([
            ("continent", Value::map([("code", Value::str(continent))])),
            (
                "country",
                Value::map([
                    ("iso_code", Value::str(country)),
                    (
                        "names",
                        Value::map([("en", Value::str(&format!("Country {country}")))]),
                    ),
                ]),
            ),
        ])
    }

    /// `MaxMind` schema (`country.iso_code`, `continent.code`), IPv6 tree with the IPv4
    /// aliases. Later lines split earlier ones (nested networks).
    pub fn country() -> Result<Writer, WriteError> {
        let mut w = Writer::new(6, "GeoDNS-Demo-Country")
            .alias_ipv4(true)
            .build_epoch(1_735_689_600);
        let nets: &[(&str, u8, &str, &str)] = &[
            // Two European halves that one map key covers: they merge into a /24.
            ("192.0.2.0", 25, "DE", "EU"),
            ("192.0.2.128", 25, "FR", "EU"),
            ("198.51.100.0", 25, "US", "NA"),
            ("198.51.100.128", 26, "BR", "SA"),
            ("198.51.100.192", 26, "JP", "AS"),
            ("203.0.113.0", 25, "AU", "OC"),
            ("203.0.113.128", 25, "US", "NA"),
            // Lab space; config CIDR keys override it.
            ("198.18.0.0", 15, "NL", "EU"),
            ("10.0.0.0", 9, "DE", "EU"),
            ("10.128.0.0", 9, "US", "NA"),
            // Nested: a Canadian /16 inside a US /10.
            ("100.64.0.0", 10, "US", "NA"),
            ("100.100.0.0", 16, "CA", "NA"),
            ("2001:db8::", 33, "DE", "EU"),
            ("2001:db8:8000::", 33, "FR", "EU"),
            // Nested inside the French /33.
            ("2001:db8:abcd:1200::", 56, "US", "NA"),
            ("3fff::", 20, "JP", "AS"),
            ("2001:2::", 48, "NL", "EU"),
        ];
        for (addr, len, country, continent) in nets {
            w.insert(ip(addr), *len, &place(country, continent))?;
        }
        Ok(w)
    }

    /// `GeoLite2-ASN` schema, IPv6 tree.
    pub fn asn() -> Result<Writer, WriteError> {
        let mut w = Writer::new(6, "GeoDNS-Demo-ASN")
            .alias_ipv4(true)
            .build_epoch(1_735_689_600);
        let nets: &[(&str, u8, u32, &str)] = &[
            ("203.0.113.128", 25, 64_500, "Example Spread Networks"),
            (
                "2001:db8:abcd:1200::",
                56,
                64_500,
                "Example Spread Networks",
            ),
            ("198.51.100.0", 24, 64_501, "Example Transit"),
        ];
        for (addr, len, asn, org) in nets {
            w.insert(
                ip(addr),
                *len,
                &Value::map([
                    ("autonomous_system_number", Value::U32(*asn)),
                    ("autonomous_system_organization", Value::str(org)),
                ]),
            )?;
        }
        Ok(w)
    }
}
