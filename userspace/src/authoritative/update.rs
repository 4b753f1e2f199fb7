//! RFC 2136 dynamic updates signed with TSIG (RFC 8945, HMAC-SHA256): what ACME
//! clients (certbot's rfc2136 plugin, lego, acme.sh, cert-manager) use to publish the
//! `_acme-challenge` TXT records of DNS-01.
//!
//! Order of checks: the message parses (else FORMERR); it carries a TSIG record, last
//! (else REFUSED: unsigned updates are never accepted); the key is known and its MAC
//! is right, its time within the fudge and not seen before (else NOTAUTH with BADKEY,
//! BADSIG or BADTIME in the TSIG error); the zone is ours (NOTAUTH); prerequisites
//! (RFC 2136 section 3.2: YXDOMAIN, YXRRSET, NXDOMAIN, NXRRSET; NOTZONE for names
//! outside the zone); every update is of a name and type the key may change (owner's
//! first label in `allow`, type in `types`: else REFUSED) and keeps the zone valid.
//! Then the changes are appended to the journal and synced to disk, the engine with the
//! new data is swapped in (served from the next query), and the response goes out,
//! signed. Anything that fails changes nothing. Each applied update increments the SOA
//! serial; the journal is replayed when the config loads (start and reload), and its
//! change of mtime makes the daemon reload the kernel's name table too.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, PoisonError,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use geodns_maps::{
    config::TsigKey,
    name,
    zone::{self, Change, Origin, StaticZone, TYPE_ANY},
    Engine,
};

use super::respond::{Outcome, Transport};
use crate::control::Control;

/// RFC 2136 opcode UPDATE.
pub const OPCODE_UPDATE: u8 = 5;
use geodns_common::dns::{rtype::TSIG as TYPE_TSIG, CLASS_IN, HEADER_LEN as HEADER};
const CLASS_NONE: u16 = 254;
const CLASS_ANY: u16 = 255;
const SHA256_LEN: usize = 32;
const HMAC_SHA256: &[u8] = b"\x0bhmac-sha256\x00";
/// MACs remembered against replays; older ones are outside every fudge anyway.
const REPLAY_CACHE: usize = 4096;

/// Response codes of updates (RFC 2136 section 2.2) and TSIG errors (RFC 8945).
pub mod rcode {
    pub use geodns_common::dns::rcode::{
        BADKEY, BADSIG, BADTIME, FORMERR, NOERROR, NOTAUTH, NOTZONE, NXDOMAIN, NXRRSET, REFUSED,
        SERVFAIL, YXDOMAIN, YXRRSET,
    };
}

/// How an update ended, for `geodns_updates_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateResult {
    /// Applied: the zone changed, journaled, served.
    Applied,
    /// Accepted but nothing changed (a delete of what was not there).
    Unchanged,
    /// No TSIG, or a name or type the key may not change.
    Refused,
    /// Unknown key, bad MAC, time out of the window or replayed, zone not ours.
    NotAuth,
    /// A prerequisite failed (or a name outside the zone).
    Prerequisite,
    FormErr,
    /// The journal could not be written.
    ServFail,
}

impl UpdateResult {
    const ALL: [Self; 7] = [
        Self::Applied,
        Self::Unchanged,
        Self::Refused,
        Self::NotAuth,
        Self::Prerequisite,
        Self::FormErr,
        Self::ServFail,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
            Self::NotAuth => "notauth",
            Self::Prerequisite => "prerequisite",
            Self::FormErr => "formerr",
            Self::ServFail => "servfail",
        }
    }
}

static COUNTS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// `geodns_updates_total{result}` in the Prometheus text format.
#[must_use]
pub fn metrics_text() -> String {
    let mut p = crate::prom::Page::new();
    p.by_label(
        "geodns_updates_total",
        crate::prom::Kind::Counter,
        "RFC 2136 updates, by result.",
        "result",
        UpdateResult::ALL
            .iter()
            .map(|r| r.name())
            .zip(COUNTS.iter().map(|c| c.load(Ordering::Relaxed))),
    );
    p.finish()
}

/// Whether `msg` is an update request (QR=0, opcode 5).
#[must_use]
pub fn is_update(msg: &[u8]) -> bool {
    msg.len() >= HEADER && msg[2] & 0x80 == 0 && (msg[2] >> 3) & 0xF == OPCODE_UPDATE
}

/// MACs seen recently (against replays), by time signed.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: HashMap<Vec<u8>, u64>,
}

impl ReplayCache {
    /// Remembers `mac`; false when it was already seen.
    fn insert(&mut self, mac: &[u8], time: u64, now: u64) -> bool {
        if self.seen.contains_key(mac) {
            return false;
        }
        if self.seen.len() >= REPLAY_CACHE {
            // Anything older than the widest fudge can no longer pass the time check.
            self.seen
                .retain(|_, t| u16::try_from(now.abs_diff(*t)).is_ok());
            if self.seen.len() >= REPLAY_CACHE {
                if let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(m, _)| m.clone())
                {
                    self.seen.remove(&oldest);
                }
            }
        }
        self.seen.insert(mac.to_vec(), time);
        true
    }
}

/// What processing an update decided.
#[derive(Debug)]
pub struct Processed {
    /// `None`: drop (not a request).
    pub response: Option<Vec<u8>>,
    pub rcode: u16,
    pub result: UpdateResult,
    /// The new zone, serial and journal text, when something changed.
    pub change: Option<Applied>,
}

/// Serializes updates: one applies at a time over the engine in use.
static LOCK: Mutex<Option<ReplayCache>> = Mutex::new(None);

/// Answers one update message: verifies, applies, journals, and has the control thread
/// swap the engine in, all in one step on that thread (no other change can come
/// between reading the zone and storing the updated one). The reload the journal
/// write triggers installs the new names into the kernel moments later.
pub async fn handle(control: &Control, msg: &[u8], transport: Transport) -> Outcome {
    let _ = transport;
    let msg = msg.to_vec();
    let applied = control
        .modify(move |engine| {
            let mut guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            let cache = guard.get_or_insert_with(ReplayCache::default);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut p = process(engine, &msg, now, cache);
            let mut new = None;
            if let Some((statics, serial, entry)) = p.change.take() {
                let journal = &engine.config().zone.journal;
                match zone::journal_append(journal, &entry) {
                    Ok(()) => {
                        new = Some(engine.with_zone(statics, serial));
                        tracing::info!(journal = %journal.display(), serial, "update applied");
                    }
                    Err(e) => {
                        tracing::error!(journal = %journal.display(), error = %e, "update not applied: the journal cannot be written");
                        p.result = UpdateResult::ServFail;
                        p.rcode = rcode::SERVFAIL;
                        p.response = p.response.map(|mut r| {
                            // The same signed response cannot carry another rcode: send
                            // it unsigned (a client treats SERVFAIL as failure either way).
                            r.truncate(HEADER);
                            r[3] = (r[3] & 0xF0) | 2;
                            r[4..12].fill(0);
                            r
                        });
                    }
                }
            }
            (new, p)
        })
        .await;
    let p = match applied {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "update not applied");
            return Outcome::dropped(super::parse::Drop::Short);
        }
    };
    if p.response.is_some() {
        COUNTS[UpdateResult::ALL
            .iter()
            .position(|r| *r == p.result)
            .unwrap_or(0)]
        .fetch_add(1, Ordering::Relaxed);
    }
    Outcome {
        dropped: p.response.is_none().then_some(super::parse::Drop::Short),
        response: p.response,
        rcode: Some(p.rcode),
        qtype: None,
        truncated: false,
        slipped: false,
        source: None,
        error: None,
    }
}

/// The SOA serial across a reload: when the zone's content changed but the new
/// config's serial is not newer than the one served (the operator edited the zone file
/// or the records and kept the serial), it becomes the served one plus one, and is
/// recorded in the journal so a restart keeps it. Secondaries and caches see the change.
#[must_use]
pub fn carry_serial(old: &Engine, new: Engine) -> Engine {
    let (was, now) = (old.config().zone.serial, new.config().zone.serial);
    if now.wrapping_sub(was).cast_signed() > 0 || !new.zone_differs(old) {
        return new;
    }
    let serial = was.wrapping_add(1).max(1);
    let journal = &new.config().zone.journal;
    if let Err(e) = zone::journal_append(journal, &format!("serial {serial}\n")) {
        tracing::warn!(journal = %journal.display(), error = %e, "the new serial is not recorded; a restart goes back to the configured one");
    }
    new.with_zone(new.config().statics.clone(), serial)
}

/// One resource record of an update message; names lowercase and uncompressed.
#[derive(Clone, Debug)]
struct Rr {
    name: Vec<u8>,
    rtype: u16,
    class: u16,
    ttl: u32,
    /// Names inside decompressed (for the types whose RDATA may be compressed).
    rdata: Vec<u8>,
    /// Where the record starts in the message.
    start: usize,
}

/// A bounded reader over the message.
struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.msg.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A name at the position, pointers followed (each strictly backwards), as written
    /// (case kept).
    fn name(&mut self) -> Option<Vec<u8>> {
        let (n, end) = read_name(self.msg, self.pos)?;
        self.pos = end;
        Some(n)
    }
    fn rr(&mut self) -> Option<Rr> {
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
fn read_name(msg: &[u8], start: usize) -> Option<(Vec<u8>, usize)> {
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
fn decompress_rdata(msg: &[u8], at: usize, len: usize, rtype: u16) -> Option<Vec<u8>> {
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
struct Update {
    zone: Option<(Vec<u8>, u16, u16)>,
    /// End of the zone section (the response echoes it).
    zone_end: usize,
    prereqs: Vec<Rr>,
    updates: Vec<Rr>,
    tsig: Option<Rr>,
}

fn parse(msg: &[u8]) -> Option<Update> {
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

/// The fields of a TSIG RDATA.
struct Tsig {
    algorithm: Vec<u8>,
    time: u64,
    fudge: u16,
    mac: Vec<u8>,
    original_id: u16,
    error: u16,
    other: Vec<u8>,
}

fn parse_tsig(rdata: &[u8]) -> Option<Tsig> {
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
fn plain_name(b: &[u8]) -> Option<(Vec<u8>, usize)> {
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
fn variables(key: &[u8], time: u64, fudge: u16, error: u16, other: &[u8]) -> Vec<u8> {
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
fn tsig_rr(
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
enum Sign<'a> {
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

fn respond(msg: &[u8], u: Option<&Update>, rcode: u16, sign: &Sign<'_>, now: u64) -> Vec<u8> {
    let mut out = msg
        .get(..HEADER)
        .map_or_else(|| vec![0; HEADER], <[u8]>::to_vec);
    out[2] = 0x80 | OPCODE_UPDATE << 3;
    out[3] = u8::try_from(rcode & 0xF).unwrap_or(0);
    out[4..12].fill(0);
    if let Some(u) = u {
        if let Some(zone) = msg.get(HEADER..u.zone_end) {
            out[5] = 1;
            out.extend_from_slice(zone);
        }
    }
    let tsig = match sign {
        Sign::None => return out,
        Sign::Unsigned {
            key,
            time,
            fudge,
            id,
            error,
        } => tsig_rr(key, *time, *fudge, &[], *id, *error, &[]),
        Sign::Signed {
            key,
            key_wire,
            request_mac,
            fudge,
            id,
            error,
            other,
        } => {
            let mut data = u16::try_from(request_mac.len())
                .unwrap_or(0)
                .to_be_bytes()
                .to_vec();
            data.extend_from_slice(request_mac);
            data.extend_from_slice(&out);
            data.extend_from_slice(&variables(key_wire, now, *fudge, *error, other));
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret);
            let mac = ring::hmac::sign(&k, &data);
            tsig_rr(key_wire, now, *fudge, mac.as_ref(), *id, *error, other)
        }
    };
    out[11] = 1;
    out.extend_from_slice(&tsig);
    out
}

/// Verifies, checks and computes one update against `engine` at time `now` (seconds
/// since the epoch). Pure apart from `replay`: the caller journals and swaps.
#[must_use]
#[expect(clippy::too_many_lines, reason = "the RFC 8945 checks in their order")]
pub fn process(engine: &Engine, msg: &[u8], now: u64, replay: &mut ReplayCache) -> Processed {
    let done = |response: Vec<u8>, rcode: u16, result: UpdateResult| Processed {
        response: Some(response),
        rcode,
        result,
        change: None,
    };
    if !is_update(msg) {
        return Processed {
            response: None,
            rcode: 0,
            result: UpdateResult::FormErr,
            change: None,
        };
    }
    let Some(u) = parse(msg) else {
        return done(
            respond(msg, None, rcode::FORMERR, &Sign::None, now),
            rcode::FORMERR,
            UpdateResult::FormErr,
        );
    };
    let Some(t_rr) = &u.tsig else {
        return done(
            respond(msg, Some(&u), rcode::REFUSED, &Sign::None, now),
            rcode::REFUSED,
            UpdateResult::Refused,
        );
    };
    let Some(tsig) = parse_tsig(&t_rr.rdata) else {
        return done(
            respond(msg, Some(&u), rcode::FORMERR, &Sign::None, now),
            rcode::FORMERR,
            UpdateResult::FormErr,
        );
    };
    let key_wire = t_rr.name.clone();
    let config = engine.config();
    let key = config
        .update
        .keys
        .iter()
        .find(|k| name::to_wire(&k.name) == key_wire);
    let notauth = |error: u16| {
        let sign = Sign::Unsigned {
            key: &key_wire,
            time: tsig.time,
            fudge: tsig.fudge,
            id: tsig.original_id,
            error,
        };
        done(
            respond(msg, Some(&u), rcode::NOTAUTH, &sign, now),
            rcode::NOTAUTH,
            UpdateResult::NotAuth,
        )
    };
    let Some(key) = key.filter(|_| tsig.algorithm == HMAC_SHA256) else {
        return notauth(rcode::BADKEY);
    };
    // The request as signed: without its TSIG, ARCOUNT one less, the original ID.
    let mut signed = msg[..t_rr.start].to_vec();
    signed[..2].copy_from_slice(&tsig.original_id.to_be_bytes());
    let ar = u16::from_be_bytes([msg[10], msg[11]]).saturating_sub(1);
    signed[10..12].copy_from_slice(&ar.to_be_bytes());
    signed.extend_from_slice(&variables(
        &key_wire,
        tsig.time,
        tsig.fudge,
        tsig.error,
        &tsig.other,
    ));
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret);
    if tsig.mac.len() != SHA256_LEN || ring::hmac::verify(&k, &signed, &tsig.mac).is_err() {
        return notauth(rcode::BADSIG);
    }
    let signed_reply = |rcode: u16, error: u16, other: Vec<u8>| {
        let sign = Sign::Signed {
            key,
            key_wire: &key_wire,
            request_mac: &tsig.mac,
            fudge: tsig.fudge,
            id: tsig.original_id,
            error,
            other,
        };
        respond(msg, Some(&u), rcode, &sign, now)
    };
    // Outside the window, or seen before: BADTIME, with our time in other data.
    if now.abs_diff(tsig.time) > u64::from(tsig.fudge) || !replay.insert(&tsig.mac, tsig.time, now)
    {
        let other = now.to_be_bytes()[2..].to_vec();
        return done(
            signed_reply(rcode::NOTAUTH, rcode::BADTIME, other),
            rcode::NOTAUTH,
            UpdateResult::NotAuth,
        );
    }
    let (rc, result, change) = match apply(engine, &u, key) {
        Ok(Some(change)) => (rcode::NOERROR, UpdateResult::Applied, Some(change)),
        Ok(None) => (rcode::NOERROR, UpdateResult::Unchanged, None),
        Err((rc, result)) => (rc, result, None),
    };
    Processed {
        response: Some(signed_reply(rc, 0, Vec::new())),
        rcode: rc,
        result,
        change,
    }
}

/// The new zone, its serial and the journal text of an update.
type Applied = (StaticZone, u32, String);

/// The checks after a valid signature, and the changes: `Ok(None)` when nothing
/// changes.
fn apply(engine: &Engine, u: &Update, key: &TsigKey) -> Result<Option<Applied>, Fail> {
    let config = engine.config();
    let origin = engine.origin_wire();
    match &u.zone {
        Some((z, 6, CLASS_IN)) if z == origin => {}
        Some((_, 6, CLASS_IN)) => return Err((rcode::NOTAUTH, UpdateResult::NotAuth)),
        _ => return Err((rcode::FORMERR, UpdateResult::FormErr)),
    }
    let statics = &config.statics;
    prerequisites(engine, statics, &u.prereqs)?;
    let changes = prescan(engine, key, &u.updates)?;
    let mut next = statics.clone();
    let at = Origin {
        file: format!("update by {}", key.name),
        line: 0,
    };
    let mut applied = Vec::new();
    for c in changes {
        if next.apply(&c, &at) {
            applied.push(c);
        }
    }
    if applied.is_empty() {
        return Ok(None);
    }
    if zone::check_against_records(&next, &config.records, &[], &config.file, origin).is_err() {
        return Err((rcode::REFUSED, UpdateResult::Refused));
    }
    let serial = config.zone.serial.wrapping_add(1).max(1);
    let entry = zone::journal_entry(&applied, serial);
    Ok(Some((next, serial, entry)))
}

/// For fuzzing the update semantics past the signature (which mutated inputs rarely
/// keep valid): parses `msg` and applies it as the first key of the config would,
/// without TSIG. Never used to serve.
#[doc(hidden)]
#[must_use]
pub fn apply_unsigned(engine: &Engine, msg: &[u8]) -> Option<(u16, Option<Applied>)> {
    let u = parse(msg)?;
    let key = engine.config().update.keys.first()?;
    Some(match apply(engine, &u, key) {
        Ok(change) => (rcode::NOERROR, change),
        Err((rc, _)) => (rc, None),
    })
}

type Fail = (u16, UpdateResult);

fn in_use(engine: &Engine, statics: &StaticZone, n: &[u8]) -> bool {
    statics.names.contains_key(n) || engine.has_geo_record(n)
}

fn rrset_exists(engine: &Engine, statics: &StaticZone, n: &[u8], t: u16) -> bool {
    statics.rrset(n, t).is_some()
        || (matches!(t, zone::TYPE_A | zone::TYPE_AAAA) && engine.has_geo_record(n))
}

/// RFC 2136 section 3.2.
fn prerequisites(engine: &Engine, statics: &StaticZone, prereqs: &[Rr]) -> Result<(), Fail> {
    let prereq = UpdateResult::Prerequisite;
    let mut exact: BTreeMap<(Vec<u8>, u16), BTreeSet<Vec<u8>>> = BTreeMap::new();
    for p in prereqs {
        if !name::in_zone(&p.name, engine.origin_wire()) {
            return Err((rcode::NOTZONE, prereq));
        }
        if p.ttl != 0 {
            return Err((rcode::FORMERR, UpdateResult::FormErr));
        }
        match p.class {
            CLASS_ANY | CLASS_NONE if !p.rdata.is_empty() => {
                return Err((rcode::FORMERR, UpdateResult::FormErr))
            }
            CLASS_ANY if p.rtype == TYPE_ANY => {
                if !in_use(engine, statics, &p.name) {
                    return Err((rcode::NXDOMAIN, prereq));
                }
            }
            CLASS_ANY => {
                if !rrset_exists(engine, statics, &p.name, p.rtype) {
                    return Err((rcode::NXRRSET, prereq));
                }
            }
            CLASS_NONE if p.rtype == TYPE_ANY => {
                if in_use(engine, statics, &p.name) {
                    return Err((rcode::YXDOMAIN, prereq));
                }
            }
            CLASS_NONE => {
                if rrset_exists(engine, statics, &p.name, p.rtype) {
                    return Err((rcode::YXRRSET, prereq));
                }
            }
            CLASS_IN => {
                exact
                    .entry((p.name.clone(), p.rtype))
                    .or_default()
                    .insert(p.rdata.clone());
            }
            _ => return Err((rcode::FORMERR, UpdateResult::FormErr)),
        }
    }
    for ((n, t), want) in exact {
        let have: BTreeSet<Vec<u8>> = statics
            .rrset(&n, t)
            .map(|s| s.rdata.iter().cloned().collect())
            .unwrap_or_default();
        if have != want {
            return Err((rcode::NXRRSET, prereq));
        }
    }
    Ok(())
}

/// May `key` change `rtype` at `owner`?
fn allowed(key: &TsigKey, owner: &[u8], rtype: u16) -> bool {
    let first = owner
        .get(1..=usize::from(*owner.first().unwrap_or(&0)))
        .unwrap_or(&[]);
    key.allow.iter().any(|a| a.as_bytes() == first) && key.types.contains(&rtype)
}

/// RFC 2136 section 3.4.1, and what the key may do.
fn prescan(engine: &Engine, key: &TsigKey, updates: &[Rr]) -> Result<Vec<Change>, Fail> {
    let formerr = (rcode::FORMERR, UpdateResult::FormErr);
    let refused = (rcode::REFUSED, UpdateResult::Refused);
    let statics = &engine.config().statics;
    let meta = |t: u16| (128..=255).contains(&t) || t == 0 || t == 41;
    let mut out = Vec::new();
    for u in updates {
        if !name::in_zone(&u.name, engine.origin_wire()) {
            return Err((rcode::NOTZONE, UpdateResult::Prerequisite));
        }
        let change = match u.class {
            CLASS_IN if meta(u.rtype) => return Err(formerr),
            CLASS_IN => Change::Add {
                owner: u.name.clone(),
                rtype: u.rtype,
                ttl: u.ttl.min(geodns_maps::config::MAX_TTL),
                rdata: u.rdata.clone(),
            },
            CLASS_ANY if u.ttl != 0 || !u.rdata.is_empty() => return Err(formerr),
            CLASS_ANY if u.rtype != TYPE_ANY && meta(u.rtype) => return Err(formerr),
            CLASS_ANY => Change::DeleteRrset {
                owner: u.name.clone(),
                rtype: u.rtype,
            },
            CLASS_NONE if u.ttl != 0 || meta(u.rtype) => return Err(formerr),
            CLASS_NONE => Change::DeleteRr {
                owner: u.name.clone(),
                rtype: u.rtype,
                rdata: u.rdata.clone(),
            },
            _ => return Err(formerr),
        };
        // Below a delegation the data is the child zone's: never ours to change.
        if statics
            .cut_at_or_above(&u.name, engine.origin_wire())
            .is_some()
        {
            return Err(refused);
        }
        let ok = if u.rtype == TYPE_ANY {
            // Every record set at the name must be the key's to delete.
            let types: Vec<u16> = statics
                .names
                .get(&u.name)
                .map(|s| s.iter().map(|r| r.rtype).collect())
                .unwrap_or_default();
            !engine.has_geo_record(&u.name)
                && key.types.iter().any(|t| allowed(key, &u.name, *t))
                && types.iter().all(|t| allowed(key, &u.name, *t))
        } else {
            allowed(key, &u.name, u.rtype)
        };
        if !ok {
            return Err(refused);
        }
        out.push(change);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use geodns_maps::{Compiled, Config, NodeStates};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    /// The fuzz target's clock too.
    pub(super) const NOW: u64 = 1_780_000_000;
    const TXT: u16 = 16;

    pub(super) fn engine() -> Engine {
        let text = r#"
[zone]
origin = "cdn.example.net."
serial = 7
[[zone.ns]]
name = "ns1.example.org."
[nodes.a]
ipv4 = "198.18.1.1"
[maps.m]
default = ["a"]
[[records]]
name = "www"
map = "m"
[fallback]
a = 1
[[update.keys]]
name = "acme"
secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
"#;
        let config = Config::from_str_named(text, "update-test.toml").expect("config");
        let compiled = Compiled::build(&config, &mut |_| {}).expect("compiles");
        let states = NodeStates::from_config(&config);
        Engine::new(Arc::new(config), Arc::new(compiled), &states)
    }

    fn wire(n: &str) -> Vec<u8> {
        name::to_wire(n)
    }

    /// An RR: name, type, class, ttl, rdata.
    fn rr(n: &str, rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        let mut b = wire(n);
        b.extend_from_slice(&rtype.to_be_bytes());
        b.extend_from_slice(&class.to_be_bytes());
        b.extend_from_slice(&ttl.to_be_bytes());
        b.extend_from_slice(&u16::try_from(rdata.len()).expect("len").to_be_bytes());
        b.extend_from_slice(rdata);
        b
    }

    /// An update of `zone` with prerequisites and updates, unsigned.
    fn message(zone: &str, prereqs: &[Vec<u8>], updates: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, OPCODE_UPDATE << 3, 0, 0, 1];
        m.extend_from_slice(&u16::try_from(prereqs.len()).expect("n").to_be_bytes());
        m.extend_from_slice(&u16::try_from(updates.len()).expect("n").to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&wire(zone));
        m.extend_from_slice(&[0, 6, 0, 1]);
        for r in prereqs.iter().chain(updates) {
            m.extend_from_slice(r);
        }
        m
    }

    /// Signs `m` with `key` (the request MAC of RFC 8945 4.3.3).
    fn sign(mut m: Vec<u8>, key: &str, secret: &[u8], time: u64) -> Vec<u8> {
        let key_wire = wire(key);
        let mut data = m.clone();
        data.extend_from_slice(&variables(&key_wire, time, 300, 0, &[]));
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let mac = ring::hmac::sign(&k, &data);
        m.extend_from_slice(&tsig_rr(&key_wire, time, 300, mac.as_ref(), 0x1234, 0, &[]));
        m[11] += 1;
        m
    }

    fn add_txt(owner: &str, text: &str) -> Vec<u8> {
        let mut rd = vec![u8::try_from(text.len()).expect("len")];
        rd.extend_from_slice(text.as_bytes());
        rr(owner, TXT, CLASS_IN, 60, &rd)
    }

    const CHALLENGE: &str = "_acme-challenge.www.cdn.example.net.";

    fn run(e: &Engine, m: &[u8], cache: &mut ReplayCache) -> Processed {
        let p = process(e, m, NOW, cache);
        if let Some(r) = &p.response {
            let reply = hickory_proto::op::Message::from_vec(r).expect("the response parses");
            assert_eq!(u16::from(reply.metadata.response_code.low()), p.rcode & 0xF);
        }
        p
    }

    /// The TSIG error field of a response.
    fn tsig_error(r: &[u8]) -> u16 {
        let u = parse(r).expect("the response parses as an update message");
        let t = parse_tsig(&u.tsig.expect("a TSIG record").rdata).expect("TSIG RDATA");
        t.error
    }

    /// Writes signed updates (valid at the fuzz target's fixed time) as seeds for
    /// `cargo xtask fuzz update`.
    #[test]
    fn write_fuzz_seeds() {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
            std::path::PathBuf::from,
        );
        let dir = target.join("fuzz-seeds/update");
        std::fs::create_dir_all(&dir).expect("create the seed directory");
        let zone = "cdn.example.net.";
        let seeds = [
            message(zone, &[], &[add_txt(CHALLENGE, "tok")]),
            message(
                zone,
                &[rr(CHALLENGE, TYPE_ANY, CLASS_NONE, 0, &[])],
                &[add_txt(CHALLENGE, "a"), add_txt(CHALLENGE, "b")],
            ),
            message(
                zone,
                &[rr(CHALLENGE, TXT, CLASS_IN, 0, b"\x03tok")],
                &[rr(CHALLENGE, TXT, CLASS_NONE, 0, b"\x03tok")],
            ),
            message(zone, &[], &[rr(CHALLENGE, TYPE_ANY, CLASS_ANY, 0, &[])]),
            message(
                zone,
                &[],
                &[rr(
                    CHALLENGE,
                    5,
                    CLASS_IN,
                    60,
                    &wire("www.cdn.example.net."),
                )],
            ),
        ];
        for (i, m) in seeds.into_iter().enumerate() {
            std::fs::write(
                dir.join(format!("signed-{i}")),
                sign(m.clone(), "acme", SECRET, NOW),
            )
            .expect("write a seed");
            std::fs::write(dir.join(format!("unsigned-{i}")), m).expect("write a seed");
        }
    }

    #[test]
    fn a_signed_add_applies_once_and_a_replay_is_badtime() {
        let e = engine();
        let mut cache = ReplayCache::default();
        let m = sign(
            message("cdn.example.net.", &[], &[add_txt(CHALLENGE, "tok")]),
            "acme",
            SECRET,
            NOW,
        );
        let p = run(&e, &m, &mut cache);
        assert_eq!((p.rcode, p.result), (rcode::NOERROR, UpdateResult::Applied));
        let (zone, serial, entry) = p.change.expect("a change");
        assert_eq!(serial, 8);
        assert!(zone.rrset(&wire(CHALLENGE), TXT).is_some());
        assert!(
            entry.starts_with("add ") && entry.ends_with("serial 8\n"),
            "{entry}"
        );
        assert_eq!(tsig_error(&p.response.expect("signed")), 0);
        let p = run(&e, &m, &mut cache);
        assert_eq!((p.rcode, p.result), (rcode::NOTAUTH, UpdateResult::NotAuth));
        assert!(p.change.is_none());
        assert_eq!(tsig_error(&p.response.expect("signed")), rcode::BADTIME);
    }

    #[test]
    fn bad_signatures_times_and_keys_change_nothing() {
        let e = engine();
        let mut cache = ReplayCache::default();
        let body = message("cdn.example.net.", &[], &[add_txt(CHALLENGE, "tok")]);
        let cases = [
            (
                sign(body.clone(), "acme", SECRET, NOW - 301),
                rcode::NOTAUTH,
                Some(rcode::BADTIME),
            ),
            (
                sign(body.clone(), "acme", SECRET, NOW + 301),
                rcode::NOTAUTH,
                Some(rcode::BADTIME),
            ),
            (
                sign(body.clone(), "acme", b"another secret", NOW),
                rcode::NOTAUTH,
                Some(rcode::BADSIG),
            ),
            (
                sign(body.clone(), "other", SECRET, NOW),
                rcode::NOTAUTH,
                Some(rcode::BADKEY),
            ),
            (body.clone(), rcode::REFUSED, None),
        ];
        for (m, rc, error) in cases {
            let p = run(&e, &m, &mut cache);
            assert_eq!(p.rcode, rc, "{error:?}");
            assert!(p.change.is_none());
            if let Some(error) = error {
                assert_eq!(tsig_error(&p.response.expect("a response")), error);
            }
        }
        // A changed byte after signing: BADSIG.
        let mut m = sign(body, "acme", SECRET, NOW);
        let last_txt_byte = m.len() - 1 - rr("acme.", TYPE_TSIG, CLASS_ANY, 0, &[0; 61]).len() - 1;
        m[last_txt_byte] ^= 1;
        let p = run(&e, &m, &mut cache);
        assert_eq!(p.rcode, rcode::NOTAUTH);
        assert_eq!(tsig_error(&p.response.expect("a response")), rcode::BADSIG);
    }

    #[test]
    fn policy_zone_and_prerequisites() {
        let e = engine();
        let mut cache = ReplayCache::default();
        let mut time = NOW;
        let mut ask = |zone: &str, pre: &[Vec<u8>], up: &[Vec<u8>]| {
            time += 1;
            let p = run(
                &e,
                &sign(message(zone, pre, up), "acme", SECRET, time),
                &mut cache,
            );
            (p.rcode, p.change.is_some())
        };
        let nothing: &[Vec<u8>] = &[];
        // Names and types the key may not change.
        assert_eq!(
            ask(
                "cdn.example.net.",
                nothing,
                &[add_txt("www.cdn.example.net.", "x")]
            ),
            (rcode::REFUSED, false)
        );
        assert_eq!(
            ask(
                "cdn.example.net.",
                nothing,
                &[rr(CHALLENGE, 1, CLASS_IN, 60, &[1, 2, 3, 4])]
            ),
            (rcode::REFUSED, false)
        );
        // Another zone, a name outside ours.
        assert_eq!(
            ask("example.org.", nothing, &[add_txt(CHALLENGE, "x")]),
            (rcode::NOTAUTH, false)
        );
        assert_eq!(
            ask(
                "cdn.example.net.",
                nothing,
                &[add_txt("_acme-challenge.example.org.", "x")]
            ),
            (rcode::NOTZONE, false)
        );
        // Prerequisites: name in use / not in use, RRset exists.
        let in_use = |n: &str| rr(n, TYPE_ANY, CLASS_ANY, 0, &[]);
        let not_in_use = |n: &str| rr(n, TYPE_ANY, CLASS_NONE, 0, &[]);
        let add = [add_txt(CHALLENGE, "x")];
        assert_eq!(
            ask("cdn.example.net.", &[in_use(CHALLENGE)], &add),
            (rcode::NXDOMAIN, false)
        );
        assert_eq!(
            ask(
                "cdn.example.net.",
                &[not_in_use("www.cdn.example.net.")],
                &add
            ),
            (rcode::YXDOMAIN, false)
        );
        assert_eq!(
            ask(
                "cdn.example.net.",
                &[rr(CHALLENGE, TXT, CLASS_ANY, 0, &[])],
                &add
            ),
            (rcode::NXRRSET, false)
        );
        assert_eq!(
            ask(
                "cdn.example.net.",
                &[rr("www.cdn.example.net.", 1, CLASS_NONE, 0, &[])],
                &add
            ),
            (rcode::YXRRSET, false)
        );
        // A prerequisite with a TTL: FORMERR.
        assert_eq!(
            ask(
                "cdn.example.net.",
                &[rr(CHALLENGE, TYPE_ANY, CLASS_ANY, 5, &[])],
                &add
            ),
            (rcode::FORMERR, false)
        );
        // All met: applied. Deleting what is not there: NOERROR, no change.
        assert_eq!(
            ask("cdn.example.net.", &[not_in_use(CHALLENGE)], &add),
            (rcode::NOERROR, true)
        );
        assert_eq!(
            ask(
                "cdn.example.net.",
                nothing,
                &[rr(CHALLENGE, TXT, CLASS_ANY, 0, &[])]
            ),
            (rcode::NOERROR, false)
        );
    }

    #[test]
    fn nothing_below_a_delegation_is_ours_to_change() {
        let base = engine();
        let mut statics = base.config().statics.clone();
        let at = Origin {
            file: "test".to_owned(),
            line: 1,
        };
        statics.add(
            wire("lab.cdn.example.net."),
            zone::TYPE_NS,
            60,
            wire("ns.example.org."),
            at,
        );
        let e = base.with_zone(statics, 7);
        let mut cache = ReplayCache::default();
        let owner = "_acme-challenge.x.lab.cdn.example.net.";
        let m = sign(
            message("cdn.example.net.", &[], &[add_txt(owner, "tok")]),
            "acme",
            SECRET,
            NOW,
        );
        let p = run(&e, &m, &mut cache);
        assert_eq!((p.rcode, p.result), (rcode::REFUSED, UpdateResult::Refused));
        assert!(p.change.is_none());
    }

    #[test]
    fn malformed_updates_are_formerr_and_responses_are_never_dropped() {
        let e = engine();
        let mut cache = ReplayCache::default();
        let m = sign(
            message("cdn.example.net.", &[], &[add_txt(CHALLENGE, "tok")]),
            "acme",
            SECRET,
            NOW,
        );
        for cut in 12..m.len() {
            let p = run(&e, &m[..cut], &mut cache);
            assert!(p.response.is_some(), "cut at {cut}");
            assert!(p.change.is_none(), "cut at {cut}");
            assert_eq!(p.rcode, rcode::FORMERR, "cut at {cut}");
        }
        let mut response = m.clone();
        response[2] |= 0x80;
        assert!(
            run(&e, &response, &mut cache).response.is_none(),
            "QR=1 is not a request"
        );
    }
}
