//! The wire format of an update message: a bounded reader, names with compression
//! pointers, and the four sections.

use geodns_maps::name;

use super::{HEADER, TYPE_TSIG};
/// One resource record of an update message; names lowercase and uncompressed.
#[derive(Clone, Debug)]
pub(super) struct Rr {
    pub(super) name: Vec<u8>,
    pub(super) rtype: u16,
    pub(super) class: u16,
    pub(super) ttl: u32,
    /// Names inside decompressed (for the types whose RDATA may be compressed).
    pub(super) rdata: Vec<u8>,
    /// Where the record starts in the message.
    pub(super) start: usize,
}

/// A bounded reader over the message.
pub(super) struct Reader<'a> {
    pub(super) msg: &'a [u8],
    pub(super) pos: usize,
}

impl Reader<'_> {
    pub(super) fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.msg.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    pub(super) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A name at the position, pointers followed (each strictly backwards), as written
    /// (case kept).
    pub(super) fn name(&mut self) -> Option<Vec<u8>> {
        let (n, end) = read_name(self.msg, self.pos)?;
        self.pos = end;
        Some(n)
    }
    pub(super) fn rr(&mut self) -> Option<Rr> {
        let start = self.pos;
        let name = name::lowercase(&self.name()?);
        let rtype = self.u16()?;
        let class = self.u16()?;
        let ttl = self.u32()?;
        let len = usize::from(self.u16()?);
        let rdata_at = self.pos;
        self.take(len)?;
        let rdata = decompress_rdata(self.msg, rdata_at, len, rtype)?;
        Some(Rr {
            name,
            rtype,
            class,
            ttl,
            rdata,
            start,
        })
    }
}

/// The name at `start` (uncompressed wire, case kept) and the offset past it.
pub(super) fn read_name(msg: &[u8], start: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut pos = start;
    let mut run_start = start;
    let mut end = None;
    loop {
        let b = *msg.get(pos)?;
        match b & 0xC0 {
            0 if b == 0 => {
                out.push(0);
                return Some((out, end.unwrap_or(pos + 1)));
            }
            0 => {
                let label = msg.get(pos..=pos + usize::from(b))?;
                out.extend_from_slice(label);
                if out.len() + 1 > name::MAX_WIRE_LEN {
                    return None;
                }
                pos += 1 + usize::from(b);
            }
            0xC0 => {
                let low = *msg.get(pos + 1)?;
                let target = (usize::from(b & 0x3F) << 8) | usize::from(low);
                if target < HEADER || target >= run_start {
                    return None;
                }
                end.get_or_insert(pos + 2);
                run_start = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// RDATA with its names decompressed, for the types of RFC 1035 whose RDATA may hold
/// compressed names (RFC 3597 section 4); other RDATA as sent.
pub(super) fn decompress_rdata(msg: &[u8], at: usize, len: usize, rtype: u16) -> Option<Vec<u8>> {
    let raw = msg.get(at..at + len)?;
    // (names, then this many fixed bytes): NS, CNAME, PTR; MX (2 bytes then a name); SOA.
    let (prefix, names, suffix) = match rtype {
        2 | 5 | 12 => (0, 1, 0),
        15 => (2, 1, 0),
        6 => (0, 2, 20),
        _ => return Some(raw.to_vec()),
    };
    if len == 0 {
        return Some(Vec::new());
    }
    let mut out = raw.get(..prefix)?.to_vec();
    let mut pos = at + prefix;
    for _ in 0..names {
        let (n, end) = read_name(msg, pos)?;
        out.extend_from_slice(&n);
        pos = end;
    }
    out.extend_from_slice(msg.get(pos..pos + suffix)?);
    (pos + suffix == at + len).then_some(out)
}

/// A parsed update: sections and where the TSIG record starts.
pub(super) struct Update {
    pub(super) zone: Option<(Vec<u8>, u16, u16)>,
    /// End of the zone section (the response echoes it).
    pub(super) zone_end: usize,
    pub(super) prereqs: Vec<Rr>,
    pub(super) updates: Vec<Rr>,
    pub(super) tsig: Option<Rr>,
}

pub(super) fn parse(msg: &[u8]) -> Option<Update> {
    let mut r = Reader { msg, pos: 0 };
    r.u16()?;
    r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    if counts[0] != 1 {
        return None;
    }
    let zname = name::lowercase(&r.name()?);
    let ztype = r.u16()?;
    let zclass = r.u16()?;
    let zone_end = r.pos;
    // Each record takes at least 11 bytes: a bogus count ends at the message's end.
    let mut read = |n: u16| -> Option<Vec<Rr>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(r.rr()?);
        }
        Some(v)
    };
    let prereqs = read(counts[1])?;
    let updates = read(counts[2])?;
    let mut additional = read(counts[3])?;
    if r.pos != msg.len() {
        return None;
    }
    let tsig = match additional.last() {
        Some(t) if t.rtype == TYPE_TSIG => additional.pop(),
        _ => None,
    };
    if additional.iter().any(|a| a.rtype == TYPE_TSIG) {
        return None;
    }
    Some(Update {
        zone: Some((zname, ztype, zclass)),
        zone_end,
        prereqs,
        updates,
        tsig,
    })
}
