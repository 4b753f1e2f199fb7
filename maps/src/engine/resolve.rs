//! The DNS decision for one question: geo records, static data, CNAME chains, RFC 4592
//! wildcards and referrals.
use super::{
    name, zone, AddrList, AnswerSource, Engine, GeoAnswer, IpAddr, Question, Records, Resolution,
    Rrset, StaticRr, MAX_CNAME_CHAIN, QTYPE_A, QTYPE_AAAA, QTYPE_NS, QTYPE_SOA, TYPE_CNAME,
};

/// The answer to a question that static data does not make
/// ([`Engine::resolve_quick`]), borrowed from the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quick<'e> {
    Refused,
    NxDomain,
    NoData,
    Soa,
    Ns,
    Addresses {
        addrs: QuickAddrs<'e>,
        ttl: u32,
        scope: u8,
        source: AnswerSource,
    },
}

/// The addresses of a [`Quick`] answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuickAddrs<'e> {
    /// Picked for this client.
    Picked(AddrList),
    /// An in-zone name server's own addresses.
    Glue(&'e [IpAddr]),
}

impl QuickAddrs<'_> {
    #[must_use]
    pub fn as_slice(&self) -> &[IpAddr] {
        match self {
            Self::Picked(a) => a.as_slice(),
            Self::Glue(a) => a,
        }
    }
}

impl Quick<'_> {
    /// The same decision as a [`Resolution`].
    #[must_use]
    pub fn to_resolution(&self) -> Resolution {
        match self {
            Self::Refused => Resolution::Refused,
            Self::NxDomain => Resolution::NxDomain,
            Self::NoData => Resolution::NoData,
            Self::Soa => Resolution::Soa,
            Self::Ns => Resolution::Ns,
            Self::Addresses {
                addrs,
                ttl,
                scope,
                source,
            } => Resolution::Addresses {
                addrs: addrs.as_slice().to_vec(),
                ttl: *ttl,
                scope: *scope,
                source: *source,
            },
        }
    }
}

/// What one name holds, before anything is copied.
enum Found<'e, 'w> {
    Done(Quick<'e>),
    /// Static record sets at the name (answered with the name asked as owner).
    Static(&'e [Rrset]),
    /// The delegation at or above the name (a suffix of it).
    Referral(&'w [u8]),
}

/// What one name of a chain gives.
enum Step {
    /// Ends the lookup as it is (no chain so far).
    Plain(Resolution),
    Rrset(Vec<StaticRr>),
    Cname(StaticRr, Vec<u8>),
    Referral(Vec<u8>),
}

impl Engine {
    /// The geo record at exactly this name (a `*.x` name is the wildcard record itself).
    pub(super) fn exact_geo(&self, wire: &[u8]) -> Option<usize> {
        if let Some(r) = self.exact.get(wire) {
            return Some(*r);
        }
        if wire.get(..2) == Some(&[1, b'*'][..]) {
            return name::parent(wire)
                .and_then(|p| self.wildcard.get(p))
                .copied();
        }
        None
    }

    /// The closest encloser of a name that does not exist (RFC 4592 section 3.3.1):
    /// its nearest existing ancestor (the origin at the latest).
    fn closest_encloser<'a>(&self, wire: &'a [u8]) -> &'a [u8] {
        let mut cur = name::parent(wire);
        while let Some(c) = cur {
            if c == self.origin || c.len() <= self.origin.len() || self.existing.contains(c) {
                return c;
            }
            cur = name::parent(c);
        }
        wire
    }

    /// The geo record that answers a lowercase wire name: the exact name, else, when the
    /// name does not exist, the wildcard at its closest encloser (RFC 4592, any depth).
    /// The kernel finds the same (see [`Engine::kernel_names`]).
    pub(super) fn record_for(&self, wire: &[u8]) -> Option<usize> {
        if let Some(r) = self.exact_geo(wire) {
            return Some(r);
        }
        if self.existing.contains(wire) || wire == self.origin {
            return None;
        }
        if self.config.statics.cut_in(wire, &self.origin).is_some() {
            return None;
        }
        self.wildcard.get(self.closest_encloser(wire)).copied()
    }

    /// The whole decision for one question. The client is taken as the kernel takes
    /// it: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is an IPv6 client, looked
    /// up as `a.b.c.d` (scope + 96) only where the databases alias that range; a
    /// caller with a dual-stack socket converts its peers first. CNAMEs inside the zone
    /// are followed (RFC 1034 section 4.3.2), also to geo names; wildcards match at any
    /// depth below their closest encloser (RFC 4592); names at or below a delegation
    /// get a referral.
    #[must_use]
    pub fn resolve(&self, question: &Question) -> Resolution {
        let wire = name::lowercase(&question.name);
        if name::labels(&wire).is_none() || !name::in_zone(&wire, &self.origin) {
            return Resolution::Refused;
        }
        let qtype = question.qtype;
        let client = question.client;
        let mut chain: Vec<StaticRr> = Vec::new();
        let mut cur = wire;
        for _ in 0..MAX_CNAME_CHAIN {
            let step = self.step(&cur, qtype, client);
            let mut out = Records {
                authoritative: true,
                ..Records::default()
            };
            match step {
                Step::Plain(r) if chain.is_empty() => return r,
                Step::Plain(r) => match r {
                    Resolution::NxDomain => {
                        out.nxdomain = true;
                        out.soa = true;
                    }
                    Resolution::NoData => out.soa = true,
                    Resolution::Addresses {
                        addrs,
                        ttl,
                        scope,
                        source,
                    } => {
                        out.geo = Some(GeoAnswer {
                            owner: cur.clone(),
                            addrs,
                            ttl,
                            scope,
                            source,
                        });
                    }
                    Resolution::Soa => out.answer.push(self.soa_rr()),
                    Resolution::Ns => out.answer.extend(self.ns_rrs()),
                    Resolution::Refused | Resolution::Records(_) => {}
                },
                Step::Rrset(rrs) => out.answer = rrs,
                Step::Cname(rr, target) => {
                    let seen = chain.iter().any(|c| c.owner == target) || rr.owner == target;
                    chain.push(rr);
                    if !seen && name::in_zone(&target, &self.origin) {
                        cur = target;
                        continue;
                    }
                }
                Step::Referral(cut) => {
                    self.referral(&cut, &mut out);
                    // A referral reached through a CNAME: the CNAME is ours (AA=1).
                    out.authoritative = !chain.is_empty();
                }
            }
            chain.append(&mut out.answer);
            out.answer = chain;
            return Resolution::Records(Box::new(out));
        }
        Resolution::Records(Box::new(Records {
            authoritative: true,
            answer: chain,
            ..Records::default()
        }))
    }

    /// One name of a lookup: the data there, a CNAME to follow, or a referral.
    fn step(&self, wire: &[u8], qtype: u16, client: IpAddr) -> Step {
        match self.find(wire, qtype, client) {
            Found::Done(q) => Step::Plain(q.to_resolution()),
            Found::Static(sets) => Self::static_step(sets, wire, qtype),
            Found::Referral(cut) => Step::Referral(cut.to_vec()),
        }
    }

    /// The decision for a question answered without static records (what most queries
    /// get: geo addresses, SOA, NS, glue, NODATA, NXDOMAIN, REFUSED), without copying
    /// or allocating; `None` where static data, a CNAME or a referral answers (then
    /// [`Engine::resolve`] does). `wire` is the name in lowercase wire format. Where it
    /// answers, [`Quick::to_resolution`] is what [`Engine::resolve`] returns.
    #[must_use]
    pub fn resolve_quick(&self, wire: &[u8], qtype: u16, client: IpAddr) -> Option<Quick<'_>> {
        if !name::is_plain(wire) || !name::in_zone(wire, &self.origin) {
            return Some(Quick::Refused);
        }
        match self.find(wire, qtype, client) {
            Found::Done(q) => Some(q),
            // Static sets without this type or a CNAME: NODATA (as `static_step`).
            Found::Static(sets)
                if !sets
                    .iter()
                    .any(|s| s.rtype == qtype || s.rtype == TYPE_CNAME) =>
            {
                Some(Quick::NoData)
            }
            Found::Static(_) | Found::Referral(_) => None,
        }
    }

    /// What is at one (lowercase wire) name of a lookup, borrowed from the engine.
    fn find<'e, 'w>(&'e self, wire: &'w [u8], qtype: u16, client: IpAddr) -> Found<'e, 'w> {
        let apex = wire == self.origin.as_slice();
        if apex && qtype == QTYPE_SOA {
            return Found::Done(Quick::Soa);
        }
        if apex && qtype == QTYPE_NS {
            return Found::Done(Quick::Ns);
        }
        let statics = &self.config.statics;
        if let Some(cut) = statics.cut_in(wire, &self.origin) {
            return Found::Referral(cut);
        }
        if let Some(rec) = self.exact_geo(wire) {
            return self.geo_find(rec, wire, qtype, client);
        }
        if let Some(sets) = statics.names.get(wire) {
            return Found::Static(sets);
        }
        if let Some((g4, g6)) = self.glue.get(wire) {
            let addrs = match qtype {
                QTYPE_A => g4,
                QTYPE_AAAA => g6,
                _ => return Found::Done(Quick::NoData),
            };
            if addrs.is_empty() {
                return Found::Done(Quick::NoData);
            }
            return Found::Done(Quick::Addresses {
                addrs: QuickAddrs::Glue(addrs),
                ttl: self.config.zone.ttl,
                scope: 0,
                source: AnswerSource::Glue,
            });
        }
        if apex || self.existing.contains(wire) {
            return Found::Done(Quick::NoData);
        }
        // RFC 4592: the wildcard at the closest encloser, if there is one.
        let ce = self.closest_encloser(wire);
        // `*.` and the encloser (at most 255 bytes): the owner of its static data.
        let mut star = [0u8; 2 + name::MAX_WIRE_LEN];
        let star_len = 2 + ce.len();
        let Some(star) = star.get_mut(..star_len) else {
            return Found::Done(Quick::NxDomain);
        };
        star[0] = 1;
        star[1] = b'*';
        star[2..].copy_from_slice(ce);
        if let Some(&rec) = self.wildcard.get(ce) {
            return self.geo_find(rec, star, qtype, client);
        }
        if let Some(sets) = statics.names.get(&star[..]) {
            return Found::Static(sets);
        }
        Found::Done(Quick::NxDomain)
    }

    /// A geo name (`node`: where its static data sits).
    fn geo_find<'e, 'w>(
        &'e self,
        rec: usize,
        node: &[u8],
        qtype: u16,
        client: IpAddr,
    ) -> Found<'e, 'w> {
        let v6 = match qtype {
            QTYPE_A => false,
            QTYPE_AAAA => true,
            _ => {
                return match self.config.statics.names.get(node) {
                    Some(sets) => Found::Static(sets),
                    None => Found::Done(Quick::NoData),
                }
            }
        };
        Found::Done(
            self.pick(rec, v6, client)
                .map_or(Quick::NoData, |p| Quick::Addresses {
                    addrs: QuickAddrs::Picked(p.addrs),
                    ttl: p.ttl,
                    scope: p.scope,
                    source: p.source,
                }),
        )
    }

    /// Static record sets at a name, answered with `owner` (the name asked, for wildcards).
    fn static_step(sets: &[Rrset], owner: &[u8], qtype: u16) -> Step {
        let rrs = |set: &Rrset| -> Vec<StaticRr> {
            set.rdata
                .iter()
                .map(|rd| StaticRr {
                    owner: owner.to_vec(),
                    rtype: set.rtype,
                    ttl: set.ttl,
                    rdata: rd.clone(),
                })
                .collect()
        };
        if let Some(set) = sets.iter().find(|s| s.rtype == qtype) {
            return Step::Rrset(rrs(set));
        }
        if let Some(set) = sets.iter().find(|s| s.rtype == TYPE_CNAME) {
            if let Some(rr) = rrs(set).into_iter().next() {
                if let Some(target) = zone::rdata_name(&rr.rdata) {
                    return Step::Cname(rr, target);
                }
            }
        }
        Step::Plain(Resolution::NoData)
    }

    /// NS of the delegation `cut` in authority, their in-zone addresses as glue.
    fn referral(&self, cut: &[u8], out: &mut Records) {
        let statics = &self.config.statics;
        let Some(ns) = statics.rrset(cut, zone::TYPE_NS) else {
            return;
        };
        for rd in &ns.rdata {
            out.authority.push(StaticRr {
                owner: cut.to_vec(),
                rtype: zone::TYPE_NS,
                ttl: ns.ttl,
                rdata: rd.clone(),
            });
        }
        for t in [zone::TYPE_A, zone::TYPE_AAAA] {
            for rd in &ns.rdata {
                let Some(target) = zone::rdata_name(rd) else {
                    continue;
                };
                if !name::in_zone(&target, &self.origin) {
                    continue;
                }
                if let Some(set) = statics.rrset(&target, t) {
                    for a in &set.rdata {
                        out.additional.push(StaticRr {
                            owner: target.clone(),
                            rtype: t,
                            ttl: set.ttl,
                            rdata: a.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The zone's SOA as a record (the answer to SOA at the end of a chain).
    fn soa_rr(&self) -> StaticRr {
        let z = &self.config.zone;
        let mut rdata = name::to_wire(&z.mname);
        rdata.extend_from_slice(&name::to_wire(&z.rname));
        for n in [z.serial, z.refresh, z.retry, z.expire, z.minimum] {
            rdata.extend_from_slice(&n.to_be_bytes());
        }
        StaticRr {
            owner: self.origin.clone(),
            rtype: QTYPE_SOA,
            ttl: z.ttl,
            rdata,
        }
    }

    fn ns_rrs(&self) -> Vec<StaticRr> {
        let z = &self.config.zone;
        z.ns.iter()
            .map(|n| StaticRr {
                owner: self.origin.clone(),
                rtype: QTYPE_NS,
                ttl: z.ttl,
                rdata: name::to_wire(&n.name),
            })
            .collect()
    }
}
