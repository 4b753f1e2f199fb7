//! A small MRT `TABLE_DUMP_V2` writer (RFC 6396), for tests, examples and the bench:
//! a `PEER_INDEX_TABLE`, then one `RIB_IPV4_UNICAST` / `RIB_IPV6_UNICAST` record per
//! prefix with each peer's route (`ORIGIN` and a 4-byte `AS_PATH`, `NEXT_HOP` for IPv4),
//! the layout `RouteViews` and RIPE RIS publish. [`write_file`] compresses by the file
//! name's extension (`.gz`, `.bz2`).
use std::{
    io::{self, Write},
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

/// One segment of an `AS_PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Seq(Vec<u32>),
    Set(Vec<u32>),
}

/// One peer's route to a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Index into the peers given to [`RibWriter::new`].
    pub peer: u16,
    pub path: Vec<Segment>,
}

impl Route {
    /// A route whose `AS_PATH` is one sequence.
    #[must_use]
    pub fn seq(peer: u16, path: &[u32]) -> Self {
        Self {
            peer,
            path: vec![Segment::Seq(path.to_vec())],
        }
    }
}

/// A peer of the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub asn: u32,
    pub ip: IpAddr,
}

const TIME: u32 = 1_700_000_000;

fn header(out: &mut impl Write, subtype: u16, len: usize) -> io::Result<()> {
    let len = u32::try_from(len).map_err(|_| io::Error::other("MRT record too long"))?;
    out.write_all(&TIME.to_be_bytes())?;
    out.write_all(&13u16.to_be_bytes())?;
    out.write_all(&subtype.to_be_bytes())?;
    out.write_all(&len.to_be_bytes())
}

/// Writes a RIB dump record by record.
pub struct RibWriter<W: Write> {
    out: W,
    seq: u32,
    body: Vec<u8>,
}

impl<W: Write> RibWriter<W> {
    /// Starts the dump with its peer index table.
    pub fn new(mut out: W, peers: &[Peer]) -> io::Result<Self> {
        let mut b = Vec::new();
        b.extend_from_slice(&Ipv4Addr::new(198, 18, 0, 1).octets());
        let view = b"geodns-test";
        b.extend_from_slice(&u16::try_from(view.len()).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(view);
        let count = u16::try_from(peers.len()).map_err(|_| io::Error::other("too many peers"))?;
        b.extend_from_slice(&count.to_be_bytes());
        for (i, p) in peers.iter().enumerate() {
            // AS4 always; bit 0: an IPv6 address.
            b.push(0b10 | u8::from(p.ip.is_ipv6()));
            b.extend_from_slice(&(u32::try_from(i).unwrap_or(0) + 1).to_be_bytes());
            match p.ip {
                IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
            }
            b.extend_from_slice(&p.asn.to_be_bytes());
        }
        header(&mut out, 1, b.len())?;
        out.write_all(&b)?;
        Ok(Self {
            out,
            seq: 0,
            body: Vec::new(),
        })
    }

    /// One prefix (host bits of `addr` are cleared) with its routes.
    pub fn prefix(&mut self, addr: IpAddr, len: u8, routes: &[Route]) -> io::Result<()> {
        let subtype: u16 = if addr.is_ipv4() { 2 } else { 4 };
        let net = crate::cidr::Cidr::new(addr, len);
        let bytes = match net.addr() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
        .into_iter()
        .take(usize::from(net.len()).div_ceil(8))
        .collect::<Vec<u8>>();
        debug_assert!(bytes.len() <= 16);
        let b = &mut self.body;
        b.clear();
        b.extend_from_slice(&self.seq.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        b.push(net.len());
        b.extend_from_slice(&bytes);
        let n = u16::try_from(routes.len()).map_err(|_| io::Error::other("too many routes"))?;
        b.extend_from_slice(&n.to_be_bytes());
        for r in routes {
            b.extend_from_slice(&r.peer.to_be_bytes());
            b.extend_from_slice(&TIME.to_be_bytes());
            let mut attrs = Vec::new();
            // ORIGIN: IGP.
            attrs.extend_from_slice(&[0x40, 1, 1, 0]);
            let mut path = Vec::new();
            for s in &r.path {
                let (kind, asns) = match s {
                    Segment::Set(v) => (1u8, v),
                    Segment::Seq(v) => (2u8, v),
                };
                path.push(kind);
                path.push(u8::try_from(asns.len()).map_err(|_| io::Error::other("long segment"))?);
                for a in asns {
                    path.extend_from_slice(&a.to_be_bytes());
                }
            }
            if path.len() > 255 {
                attrs.extend_from_slice(&[0x50, 2]);
                attrs.extend_from_slice(
                    &u16::try_from(path.len())
                        .map_err(|_| io::Error::other("long path"))?
                        .to_be_bytes(),
                );
            } else {
                attrs.extend_from_slice(&[0x40, 2, u8::try_from(path.len()).unwrap_or(0)]);
            }
            attrs.extend_from_slice(&path);
            if addr.is_ipv4() {
                attrs.extend_from_slice(&[0x40, 3, 4, 198, 18, 0, 1]);
            }
            b.extend_from_slice(
                &u16::try_from(attrs.len())
                    .map_err(|_| io::Error::other("long attributes"))?
                    .to_be_bytes(),
            );
            b.extend_from_slice(&attrs);
        }
        header(&mut self.out, subtype, self.body.len())?;
        self.out.write_all(&self.body)
    }

    /// The writer back, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a whole dump to `path`: gzip for `.gz`, bzip2 for `.bz2`, else plain.
pub fn write_file(
    path: &Path,
    peers: &[Peer],
    prefixes: impl IntoIterator<Item = (IpAddr, u8, Vec<Route>)>,
) -> io::Result<()> {
    let file = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let out: Box<dyn Write> = match ext {
        "gz" => Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        )),
        "bz2" => Box::new(bzip2::write::BzEncoder::new(
            file,
            bzip2::Compression::fast(),
        )),
        _ => Box::new(file),
    };
    let mut w = RibWriter::new(out, peers)?;
    for (addr, len, routes) in prefixes {
        w.prefix(addr, len, &routes)?;
    }
    // Dropping the encoders writes their trailers; finish them explicitly so errors
    // surface.
    let out = w.finish()?;
    drop(out);
    Ok(())
}

/// The small RIB dump of `examples/route.toml` (`examples/route-rib.mrt`, written with
/// the demo databases by `cargo run -p geodns-maps --example make-demo-db`): origins
/// over the demo's documentation space, three peers, one prefix whose peers disagree,
/// one aggregate whose only origin is an `AS_SET`.
#[must_use]
pub fn demo_rib() -> Vec<u8> {
    let ip = |s: &str| s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let peers = [
        Peer {
            asn: 65_001,
            ip: ip("198.18.0.11"),
        },
        Peer {
            asn: 65_002,
            ip: ip("198.18.0.12"),
        },
        Peer {
            asn: 65_003,
            ip: ip("2001:2::13"),
        },
    ];
    let all = |origin: u32| -> Vec<Route> {
        (0..3u16)
            .map(|p| Route::seq(p, &[65_001 + u32::from(p), 3356, origin]))
            .collect()
    };
    let prefixes: Vec<(&str, u8, Vec<Route>)> = vec![
        (
            "10.64.0.0",
            10,
            vec![Route {
                peer: 0,
                path: vec![
                    Segment::Seq(vec![65_001, 174]),
                    Segment::Set(vec![64_550, 64_551]),
                ],
            }],
        ),
        ("100.64.0.0", 10, all(64_530)),
        ("100.100.0.0", 16, all(64_531)),
        ("192.0.2.0", 24, all(64_540)),
        ("192.0.2.128", 25, all(64_520)),
        ("198.51.100.0", 24, all(64_501)),
        // The peers disagree: two see AS64510, one AS64511.
        (
            "203.0.113.0",
            24,
            vec![
                Route::seq(0, &[65_001, 64_510]),
                Route::seq(1, &[65_002, 2914, 64_510]),
                Route::seq(2, &[65_003, 64_511]),
            ],
        ),
        ("203.0.113.128", 25, all(64_500)),
        ("2001:db8::", 32, all(64_540)),
        ("2001:db8:8000::", 33, all(64_520)),
    ];
    let mut out = Vec::new();
    let write = |out: &mut Vec<u8>| -> io::Result<()> {
        let mut w = RibWriter::new(out, &peers)?;
        for (addr, len, routes) in &prefixes {
            w.prefix(ip(addr), *len, routes)?;
        }
        w.finish().map(|_| ())
    };
    // Writing to a Vec cannot fail.
    let _ = write(&mut out);
    out
}
