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

#[cfg(test)]
mod tests;
mod tsig;
mod wire;

use tsig::{parse_tsig, tsig_rr, variables, Sign};
use wire::{parse, Rr, Update};

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
