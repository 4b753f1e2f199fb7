//! TSIG (RFC 8945) records: parsing the RDATA, the MAC input and signed responses.

use geodns_maps::{config::TsigKey, name};

use super::wire::{read_name, Reader};
use super::{CLASS_ANY, HMAC_SHA256, TYPE_TSIG};

/// The fields of a TSIG RDATA.
pub(super) struct Tsig {
    pub(super) algorithm: Vec<u8>,
    pub(super) time: u64,
    pub(super) fudge: u16,
    pub(super) mac: Vec<u8>,
    pub(super) original_id: u16,
    pub(super) error: u16,
    pub(super) other: Vec<u8>,
}

pub(super) fn parse_tsig(rdata: &[u8]) -> Option<Tsig> {
    let (algorithm, end) = read_name(rdata, 0).or_else(|| plain_name(rdata))?;
    let mut r = Reader {
        msg: rdata,
        pos: end,
    };
    let t = r.take(6)?;
    let time = t.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let fudge = r.u16()?;
    let mac_len = usize::from(r.u16()?);
    let mac = r.take(mac_len)?.to_vec();
    let original_id = r.u16()?;
    let error = r.u16()?;
    let other_len = usize::from(r.u16()?);
    let other = r.take(other_len)?.to_vec();
    (r.pos == rdata.len()).then_some(Tsig {
        algorithm: name::lowercase(&algorithm),
        time,
        fudge,
        mac,
        original_id,
        error,
        other,
    })
}

/// An uncompressed name at the start of `b` (TSIG's algorithm name is never
/// compressed; `read_name` refuses pointers before offset 12, which this is not).
pub(super) fn plain_name(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut i = 0;
    loop {
        let l = usize::from(*b.get(i)?);
        if l == 0 {
            return Some((b[..=i].to_vec(), i + 1));
        }
        if l > 63 || i + 1 + l > name::MAX_WIRE_LEN {
            return None;
        }
        i += 1 + l;
    }
}

/// The TSIG variables (RFC 8945 section 4.3.3) after the message.
pub(super) fn variables(key: &[u8], time: u64, fudge: u16, error: u16, other: &[u8]) -> Vec<u8> {
    let mut v = key.to_vec();
    v.extend_from_slice(&CLASS_ANY.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(HMAC_SHA256);
    v.extend_from_slice(&time.to_be_bytes()[2..]);
    v.extend_from_slice(&fudge.to_be_bytes());
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&u16::try_from(other.len()).unwrap_or(0).to_be_bytes());
    v.extend_from_slice(other);
    v
}

/// A TSIG record (owner `key`, HMAC-SHA256).
pub(super) fn tsig_rr(
    key: &[u8],
    time: u64,
    fudge: u16,
    mac: &[u8],
    id: u16,
    error: u16,
    other: &[u8],
) -> Vec<u8> {
    let mut rdata = HMAC_SHA256.to_vec();
    rdata.extend_from_slice(&time.to_be_bytes()[2..]);
    rdata.extend_from_slice(&fudge.to_be_bytes());
    rdata.extend_from_slice(&u16::try_from(mac.len()).unwrap_or(0).to_be_bytes());
    rdata.extend_from_slice(mac);
    rdata.extend_from_slice(&id.to_be_bytes());
    rdata.extend_from_slice(&error.to_be_bytes());
    rdata.extend_from_slice(&u16::try_from(other.len()).unwrap_or(0).to_be_bytes());
    rdata.extend_from_slice(other);
    let mut rr = key.to_vec();
    rr.extend_from_slice(&TYPE_TSIG.to_be_bytes());
    rr.extend_from_slice(&CLASS_ANY.to_be_bytes());
    rr.extend_from_slice(&0u32.to_be_bytes());
    rr.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    rr.extend_from_slice(&rdata);
    rr
}

/// How the response is signed.
pub(super) enum Sign<'a> {
    /// No TSIG record (unsigned request, or one that did not parse).
    None,
    /// A TSIG with this error and no MAC (unknown key, bad MAC: RFC 8945 5.3.2).
    Unsigned {
        key: &'a [u8],
        time: u64,
        fudge: u16,
        id: u16,
        error: u16,
    },
    /// Signed with the key over the request's MAC (and `other`, for BADTIME).
    Signed {
        key: &'a TsigKey,
        key_wire: &'a [u8],
        request_mac: &'a [u8],
        fudge: u16,
        id: u16,
        error: u16,
        other: Vec<u8>,
    },
}
