//! BGP origin AS from RIB dumps: MRT `TABLE_DUMP_V2` files (RFC 6396; plain, `.gz` or
//! `.bz2`), as `RouteViews` and RIPE RIS publish them, read with `bgpkit-parser`.
//!
//! Each prefix maps to its origin AS: the last AS of the `AS_PATH` of each peer's route.
//! A route whose path ends in an `AS_SET` (an aggregate: no single origin) is skipped and
//! counted; where the peers disagree, the origin most of them see wins (ties: the lowest
//! AS number), and the count of such prefixes is reported.
//!
//! The records are framed here (type, length and truncation checked against the file)
//! and each record is handed to the library whole, so a truncated or corrupt dump is an
//! error naming the file and the byte offset, never a silently shorter table.
use std::{
    io::{BufReader, Read},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bgpkit_parser::models::{AsPathSegment, MrtMessage, TableDumpV2Message, TableDumpV2Type};

use crate::cidr::Cidr;

/// MRT type `TABLE_DUMP_V2`.
const TABLE_DUMP_V2: u16 = 13;
/// The largest record taken (a RIB record of ~2,000 peers is well below).
const MAX_RECORD: u32 = 64 << 20;

/// Why a RIB dump could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BgpError {
    #[error("reading BGP RIB dump {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("BGP RIB dump {path}: {what} at byte {offset} of the MRT stream")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("BGP RIB dump {path} holds no TABLE_DUMP_V2 RIB record (not a RIB dump?)")]
    Empty { path: PathBuf },
}

/// One prefix of the table and its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BgpRoute {
    /// First address (IPv4 in the low 32 bits).
    pub start: u128,
    pub len: u8,
    /// The origin AS most peers see.
    pub origin: u32,
    /// Peers (routes) that see this origin.
    pub agree: u32,
    /// Peers (routes) with a usable origin for the prefix.
    pub peers: u32,
}

/// What reading the dumps found.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct BgpStats {
    pub files: Vec<PathBuf>,
    /// RIB records (one per prefix and file).
    pub records: u64,
    /// Routes (peer entries) read.
    pub routes: u64,
    pub prefixes_v4: u64,
    pub prefixes_v6: u64,
    /// Routes whose `AS_PATH` ends in an `AS_SET`: skipped.
    pub as_set_routes: u64,
    /// Routes without an `AS_PATH` or with an empty one: skipped.
    pub no_path_routes: u64,
    /// Prefixes left without an origin (all their routes were skipped).
    pub prefixes_without_origin: u64,
    /// Prefixes whose peers disagree on the origin (the most common one won).
    pub disagreeing_prefixes: u64,
    /// Of those, prefixes where two origins tied (the lowest AS number won).
    pub tied_prefixes: u64,
    /// Records of other kinds skipped (multicast RIBs, `RIB_GENERIC`, updates).
    pub skipped_records: u64,
    /// Time to read and decompress and parse all files, and build the table.
    pub parse: Duration,
}

impl BgpStats {
    /// Prefixes with an origin, both families.
    #[must_use]
    pub fn prefixes(&self) -> u64 {
        self.prefixes_v4 + self.prefixes_v6
    }
}

/// The origin table of one or more RIB dumps: prefixes sorted by (start, length).
#[derive(Debug, Default)]
pub struct BgpTable {
    pub v4: Vec<BgpRoute>,
    pub v6: Vec<BgpRoute>,
    pub stats: BgpStats,
}

/// A [`BgpRoute`] that matched an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BgpMatch {
    pub prefix: Cidr,
    pub origin: u32,
    /// Peers that see this origin, of `peers` with a usable origin.
    pub agree: u32,
    pub peers: u32,
}

/// Counts the bytes taken from a reader, for error offsets and truncation checks.
struct Counting<R> {
    inner: R,
    taken: u64,
}

impl<R: Read> Counting<R> {
    /// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end (no byte read).
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the stream ends {got} bytes into a {} byte read", buf.len()),
                    ))
                }
                Ok(n) => {
                    got += n;
                    self.taken += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// The decompressed contents of `path`: by magic number (gzip `1f 8b`, bzip2 `BZh`),
/// else plain.
fn open(path: &Path) -> Result<Box<dyn Read>, BgpError> {
    let io = |source| BgpError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 3];
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..]).map_err(io)? {
            0 => break,
            k => n += k,
        }
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let buffered = BufReader::with_capacity(1 << 20, file);
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(buffered),
        )),
        [b'B', b'Z', b'h'] => Box::new(BufReader::with_capacity(
            1 << 20,
            bzip2::read::MultiBzDecoder::new(buffered),
        )),
        _ => Box::new(buffered),
    })
}

/// `(start, len, origin)` of one route, or why it has none.
enum Origin {
    As(u32),
    AsSet,
    NoPath,
}

fn origin_of(attrs: &bgpkit_parser::models::Attributes) -> Origin {
    let Some(path) = attrs.as_path() else {
        return Origin::NoPath;
    };
    match path.segments.last() {
        Some(AsPathSegment::AsSequence(v)) => {
            v.last().map_or(Origin::NoPath, |a| Origin::As(a.to_u32()))
        }
        Some(AsPathSegment::AsSet(_)) => Origin::AsSet,
        // A path that ends in a confederation segment stays inside the collector's
        // confederation: no origin seen.
        Some(_) | None => Origin::NoPath,
    }
}

fn corrupt(path: &Path, offset: u64, what: String) -> BgpError {
    BgpError::Corrupt {
        path: path.to_owned(),
        offset,
        what,
    }
}

fn io_error(path: &Path, offset: u64, e: &std::io::Error) -> BgpError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        corrupt(path, offset, format!("truncated ({e})"))
    } else {
        corrupt(path, offset, format!("unreadable: {e}"))
    }
}

/// One framed MRT record.
struct Frame {
    /// Its offset in the (decompressed) stream.
    at: u64,
    kind: u16,
    subtype: u16,
}

impl<R: Read> Counting<R> {
    /// The next record, header and body, into `buf`; `None` at a clean end.
    fn record(&mut self, path: &Path, buf: &mut Vec<u8>) -> Result<Option<Frame>, BgpError> {
        let at = self.taken;
        let mut header = [0u8; 12];
        match self.fill(&mut header) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) => return Err(io_error(path, at, &e)),
        }
        let kind = u16::from_be_bytes([header[4], header[5]]);
        let subtype = u16::from_be_bytes([header[6], header[7]]);
        let length = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if length > MAX_RECORD {
            return Err(corrupt(
                path,
                at,
                format!("a record of {length} bytes (type {kind}): not an MRT stream, or corrupt"),
            ));
        }
        buf.clear();
        buf.extend_from_slice(&header);
        buf.resize(12 + length as usize, 0);
        match self.fill(&mut buf[12..]) {
            Ok(true) => {}
            Ok(false) if length == 0 => {}
            Ok(false) => {
                return Err(corrupt(
                    path,
                    at,
                    "truncated (a record header without its body)".into(),
                ))
            }
            Err(e) => return Err(io_error(path, at, &e)),
        }
        Ok(Some(Frame { at, kind, subtype }))
    }
}

/// The entry count a RIB record's body gives: the library stops early at a bad
/// entry, which must not pass for a shorter route list.
fn entry_count(body: &[u8]) -> Option<u16> {
    let prefix_len = body.get(4).copied().unwrap_or(0);
    let count_at = 5 + usize::from(prefix_len).div_ceil(8);
    body.get(count_at..count_at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// The unicast RIB entries of one framed record; `None` for records to skip.
fn rib_of(
    path: &Path,
    frame: &Frame,
    buf: &[u8],
) -> Result<Option<bgpkit_parser::models::RibAfiEntries>, BgpError> {
    let parsed = std::panic::catch_unwind(|| {
        bgpkit_parser::parse_mrt_record(&mut &buf[..]).map_err(|e| e.error.to_string())
    })
    .unwrap_or_else(|_| Err("the parser failed on it".to_owned()));
    let record = parsed.map_err(|e| corrupt(path, frame.at, format!("a bad record ({e})")))?;
    let MrtMessage::TableDumpV2Message(msg) = record.message else {
        return Err(corrupt(
            path,
            frame.at,
            "a record of another type than its header".into(),
        ));
    };
    let TableDumpV2Message::RibAfi(rib) = msg else {
        return Ok(None);
    };
    if !matches!(
        rib.rib_type,
        TableDumpV2Type::RibIpv4Unicast
            | TableDumpV2Type::RibIpv4UnicastAddPath
            | TableDumpV2Type::RibIpv6Unicast
            | TableDumpV2Type::RibIpv6UnicastAddPath
    ) {
        return Ok(None);
    }
    let entries = entry_count(&buf[12..]);
    if entries != Some(u16::try_from(rib.rib_entries.len()).unwrap_or(u16::MAX)) {
        return Err(corrupt(
            path,
            frame.at,
            format!(
                "a RIB record whose entries do not parse ({} of {})",
                rib.rib_entries.len(),
                entries.unwrap_or(0)
            ),
        ));
    }
    Ok(Some(rib))
}

/// Each route's origin of one RIB record into `out`.
fn routes_of(rib: &bgpkit_parser::models::RibAfiEntries, stats: &mut BgpStats, out: &mut Vec<Raw>) {
    let net = rib.prefix.prefix;
    let (v6, start) = match net.network() {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    };
    let len = net.prefix_len();
    let mut usable = false;
    for entry in &rib.rib_entries {
        stats.routes += 1;
        match origin_of(&entry.attributes) {
            Origin::As(origin) => {
                usable = true;
                out.push(Raw {
                    v6,
                    start,
                    len,
                    origin: Some(origin),
                });
            }
            Origin::AsSet => stats.as_set_routes += 1,
            Origin::NoPath => stats.no_path_routes += 1,
        }
    }
    if !usable {
        out.push(Raw {
            v6,
            start,
            len,
            origin: None,
        });
    }
}

/// Reads one file's RIB records into `out`: one [`Raw`] per usable route.
fn read_file(path: &Path, stats: &mut BgpStats, out: &mut Vec<Raw>) -> Result<(), BgpError> {
    let mut reader = Counting {
        inner: open(path)?,
        taken: 0,
    };
    let mut rib_records = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = reader.record(path, &mut buf)? {
        let (kind, subtype) = (frame.kind, frame.subtype);
        // PEER_INDEX_TABLE (1) and the unicast RIBs (2, 4; ADD-PATH 8, 10).
        if kind != TABLE_DUMP_V2 || !matches!(subtype, 1 | 2 | 4 | 8 | 10) {
            if kind > 64 || (kind == TABLE_DUMP_V2 && subtype > 10) {
                return Err(corrupt(
                    path,
                    frame.at,
                    format!("an unknown MRT record type {kind}/{subtype}"),
                ));
            }
            stats.skipped_records += 1;
            continue;
        }
        match rib_of(path, &frame, &buf)? {
            Some(rib) => {
                rib_records += 1;
                routes_of(&rib, stats, out);
            }
            None if subtype == 1 => {}
            None => stats.skipped_records += 1,
        }
    }
    stats.records += rib_records;
    if rib_records == 0 {
        return Err(BgpError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// One usable route (or, `origin: None`, a prefix none of whose routes was).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Raw {
    v6: bool,
    start: u128,
    len: u8,
    origin: Option<u32>,
}

/// The origin of one prefix.
struct Choice {
    origin: u32,
    agree: u32,
    peers: u32,
    /// Distinct origins seen.
    distinct: u32,
    /// Another origin had as many peers (the lowest AS number won).
    tie: bool,
}

/// The origin most routes of `group` (one prefix, sorted by origin) see; `None` when
/// none has one.
fn choose(group: &[Raw]) -> Option<Choice> {
    let mut best: Option<Choice> = None;
    let mut peers = 0u32;
    let mut distinct = 0u32;
    for run in group.chunk_by(|a, b| a.origin == b.origin) {
        let Some(origin) = run[0].origin else {
            continue;
        };
        let count = u32::try_from(run.len()).unwrap_or(u32::MAX);
        peers = peers.saturating_add(count);
        distinct += 1;
        match &mut best {
            // Ascending origins: a later one wins only with more peers.
            Some(b) if b.agree > count => {}
            Some(b) if b.agree == count => b.tie = true,
            _ => {
                best = Some(Choice {
                    origin,
                    agree: count,
                    peers: 0,
                    distinct: 0,
                    tie: false,
                });
            }
        }
    }
    best.map(|b| Choice {
        peers,
        distinct,
        ..b
    })
}

impl BgpTable {
    /// Reads every file (in order; the same prefix in several files counts the peers
    /// of all of them) and picks each prefix's origin.
    pub fn read(files: &[PathBuf]) -> Result<Self, BgpError> {
        let started = Instant::now();
        let mut stats = BgpStats {
            files: files.to_vec(),
            ..BgpStats::default()
        };
        let mut raw: Vec<Raw> = Vec::new();
        for f in files {
            read_file(f, &mut stats, &mut raw)?;
        }
        raw.sort_unstable();
        let mut table = Self::default();
        for group in raw.chunk_by(|a, b| (a.v6, a.start, a.len) == (b.v6, b.start, b.len)) {
            let first = group[0];
            let Some(choice) = choose(group) else {
                stats.prefixes_without_origin += 1;
                continue;
            };
            if choice.distinct > 1 {
                stats.disagreeing_prefixes += 1;
            }
            if choice.tie {
                stats.tied_prefixes += 1;
            }
            let route = BgpRoute {
                start: first.start,
                len: first.len,
                origin: choice.origin,
                agree: choice.agree,
                peers: choice.peers,
            };
            if first.v6 {
                table.v6.push(route);
            } else {
                table.v4.push(route);
            }
        }
        drop(raw);
        stats.prefixes_v4 = table.v4.len() as u64;
        stats.prefixes_v6 = table.v6.len() as u64;
        stats.parse = started.elapsed();
        table.stats = stats;
        Ok(table)
    }

    /// The routes of one family (`width` 32 or 128).
    pub(crate) fn family(&self, width: u8) -> &[BgpRoute] {
        if width == 32 {
            &self.v4
        } else {
            &self.v6
        }
    }

    /// The longest prefix of the table that contains `ip`.
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> Option<BgpMatch> {
        let (routes, bits, width) = match ip {
            IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a)), 32u8),
            IpAddr::V6(a) => (&self.v6, u128::from(a), 128u8),
        };
        (0..=width).rev().find_map(|len| {
            let host = u32::from(width - len);
            let start = if host >= 128 { 0 } else { bits >> host << host };
            let i = routes
                .binary_search_by(|r| (r.start, r.len).cmp(&(start, len)))
                .ok()?;
            let r = routes[i];
            Some(BgpMatch {
                prefix: Cidr::new(ip, len),
                origin: r.origin,
                agree: r.agree,
                peers: r.peers,
            })
        })
    }
}
