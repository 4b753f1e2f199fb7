//! The DNS decision for one question: geo records, static data, CNAME chains, RFC 4592
//! wildcards and referrals.
use super::{
    name, zone, AnswerSource, Engine, GeoAnswer, IpAddr, Question, Records, Resolution, Rrset,
    StaticRr, MAX_CNAME_CHAIN, QTYPE_A, QTYPE_AAAA, QTYPE_NS, QTYPE_SOA, TYPE_CNAME,
};

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
        if self
            .config
            .statics
            .cut_at_or_above(wire, &self.origin)
            .is_some()
        {
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
        let apex = wire == self.origin.as_slice();
        if apex && qtype == QTYPE_SOA {
            return Step::Plain(Resolution::Soa);
        }
        if apex && qtype == QTYPE_NS {
            return Step::Plain(Resolution::Ns);
        }
        let statics = &self.config.statics;
        if let Some(cut) = statics.cut_at_or_above(wire, &self.origin) {
            return Step::Referral(cut);
        }
        if let Some(rec) = self.exact_geo(wire) {
            return self.geo_step(rec, wire, wire, qtype, client);
        }
        if let Some(sets) = statics.names.get(wire) {
            return Self::static_step(sets, wire, qtype);
        }
        if let Some((g4, g6)) = self.glue.get(wire) {
            let addrs = match qtype {
                QTYPE_A => g4,
                QTYPE_AAAA => g6,
                _ => return Step::Plain(Resolution::NoData),
            };
            if addrs.is_empty() {
                return Step::Plain(Resolution::NoData);
            }
            return Step::Plain(Resolution::Addresses {
                addrs: addrs.clone(),
                ttl: self.config.zone.ttl,
                scope: 0,
                source: AnswerSource::Glue,
            });
        }
        if apex || self.existing.contains(wire) {
            return Step::Plain(Resolution::NoData);
        }
        // RFC 4592: the wildcard at the closest encloser, if there is one.
        let ce = self.closest_encloser(wire);
        let mut star = vec![1, b'*'];
        star.extend_from_slice(ce);
        if let Some(&rec) = self.wildcard.get(ce) {
            return self.geo_step(rec, &star, wire, qtype, client);
        }
        if let Some(sets) = statics.names.get(&star) {
            return Self::static_step(sets, wire, qtype);
        }
        Step::Plain(Resolution::NxDomain)
    }

    /// A geo name (`node`: where its static data sits; `owner`: the name asked).
    fn geo_step(&self, rec: usize, node: &[u8], owner: &[u8], qtype: u16, client: IpAddr) -> Step {
        let v6 = match qtype {
            QTYPE_A => false,
            QTYPE_AAAA => true,
            _ => {
                return match self.config.statics.names.get(node) {
                    Some(sets) => Self::static_step(sets, owner, qtype),
                    None => Step::Plain(Resolution::NoData),
                }
            }
        };
        Step::Plain(self.pick(rec, v6, client).map_or(Resolution::NoData, |p| {
            Resolution::Addresses {
                addrs: p.addrs,
                ttl: p.ttl,
                scope: p.scope,
                source: p.source,
            }
        }))
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
