//! [`Config`] from TOML text: parse, then validate section by section.
#![allow(
    clippy::wildcard_imports,
    reason = "the parent's raw types and the checks"
)]
use super::{check::*, *};

impl Config {
    /// Reads, parses and validates `path`. Relative paths inside are relative to the
    /// file's directory.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            op: "reading config",
            path: path.to_owned(),
            source,
        })?;
        Self::from_str_named(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `name` is used in errors, and relative paths are
    /// taken relative to `name`'s directory.
    pub fn from_str_named(text: &str, name: &str) -> Result<Self, ConfigError> {
        let ctx = Ctx { file: name, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.syntax(&e))?;
        let base_dir = Path::new(name)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Self::validate(&ctx, &raw, base_dir)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one pass over the sections, in file order"
    )]
    fn validate(ctx: &Ctx<'_>, raw: &RawConfig, base_dir: PathBuf) -> Result<Self, ConfigError> {
        // [zone]
        let z = raw.zone.get_ref();
        let origin = parse_name(ctx, &z.origin, "", "zone.origin")?;
        if origin.contains('*') {
            return Err(ctx.err(
                &z.origin.span(),
                "zone.origin",
                ConfigProblem::BadName {
                    value: z.origin.get_ref().clone(),
                    reason: "a wildcard cannot be the origin".to_owned(),
                },
            ));
        }
        let ttl = check_ttl(ctx, &z.ttl, "zone.ttl")?;
        let mut ns = Vec::new();
        for (i, n) in z.ns.iter().enumerate() {
            let key = format!("zone.ns[{i}]");
            let r = n.get_ref();
            ns.push(NsHost {
                name: parse_name(ctx, &r.name, &origin, &format!("{key}.name"))?,
                ipv4: parse_addrs(ctx, r.ipv4.as_ref(), &format!("{key}.ipv4"), "IPv4")?,
                ipv6: parse_addrs(ctx, r.ipv6.as_ref(), &format!("{key}.ipv6"), "IPv6")?,
            });
        }
        let file = z.file.as_ref().map(|f| base_dir.join(f.get_ref()));
        let mut statics = match &file {
            Some(f) => zone::load(f, &base_dir, &origin, ttl)?,
            None => StaticZone::default(),
        };
        let journal = file.as_ref().map_or_else(
            || base_dir.join(format!("{origin}jnl")),
            |f| {
                let mut j = f.clone().into_os_string();
                j.push(".jnl");
                PathBuf::from(j)
            },
        );
        let origin_wire = name::to_wire(&origin);
        let file_soa = statics.take_apex(&origin_wire, zone::TYPE_SOA);
        let file_ns = statics.take_apex(&origin_wire, zone::TYPE_NS);
        let journal_serial = zone::replay(&journal, &mut statics)?;
        statics.files.push(journal.clone());
        if let Some(set) = &file_ns {
            if let Some(first) = z.ns.first() {
                return Err(ZoneError::conflict(
                    &set.at,
                    format!(
                        "NS at the apex: also [[zone.ns]] on line {} of {}; keep one",
                        ctx.line_col(first.span().start).0,
                        ctx.file
                    ),
                )
                .into());
            }
            for rdata in &set.rdata {
                let wire = zone::rdata_name(rdata).unwrap_or_default();
                let addr = |t: u16| -> Vec<Vec<u8>> {
                    statics
                        .rrset(&wire, t)
                        .map(|s| s.rdata.clone())
                        .unwrap_or_default()
                };
                ns.push(NsHost {
                    name: name::to_presentation(&wire).unwrap_or_default(),
                    ipv4: addr(zone::TYPE_A)
                        .iter()
                        .filter_map(|b| <[u8; 4]>::try_from(&b[..]).ok().map(Ipv4Addr::from))
                        .collect(),
                    ipv6: addr(zone::TYPE_AAAA)
                        .iter()
                        .filter_map(|b| <[u8; 16]>::try_from(&b[..]).ok().map(Ipv6Addr::from))
                        .collect(),
                });
            }
        }
        if ns.is_empty() {
            return Err(ctx.err(&raw.zone.span(), "zone.ns", ConfigProblem::NoNameServers));
        }
        let toml_soa = z.mname.is_some()
            || z.rname.is_some()
            || z.serial.is_some()
            || z.refresh.is_some()
            || z.retry.is_some()
            || z.expire.is_some()
            || z.minimum.is_some();
        let zone = if let Some(set) = &file_soa {
            if toml_soa {
                return Err(ZoneError::conflict(
                    &set.at,
                    format!(
                        "SOA at the apex: also mname/rname/serial/... in [zone] of {}; keep one",
                        ctx.file
                    ),
                )
                .into());
            }
            let soa = zone::parse_soa(set.rdata.first().map_or(&[][..], |r| &r[..]))
                .ok_or_else(|| ZoneError::conflict(&set.at, "unreadable SOA".to_owned()))?;
            Zone {
                origin: origin.clone(),
                ttl,
                mname: soa.mname,
                rname: soa.rname,
                serial: soa.numbers[0],
                refresh: soa.numbers[1],
                retry: soa.numbers[2],
                expire: soa.numbers[3],
                minimum: soa.numbers[4],
                ns,
                file,
                journal,
            }
        } else {
            let mname = match &z.mname {
                Some(m) => parse_name(ctx, m, &origin, "zone.mname")?,
                None => ns[0].name.clone(),
            };
            let rname = match &z.rname {
                Some(r) => parse_name(ctx, r, &origin, "zone.rname")?,
                None => format!("hostmaster.{origin}"),
            };
            Zone {
                origin: origin.clone(),
                ttl,
                mname,
                rname,
                serial: z.serial.unwrap_or_else(default_serial),
                refresh: z.refresh.unwrap_or_else(default_refresh),
                retry: z.retry.unwrap_or_else(default_retry),
                expire: z.expire.unwrap_or_else(default_expire),
                minimum: z.minimum.unwrap_or_else(default_minimum),
                ns,
                file,
                journal,
            }
        };
        let mut zone = zone;
        if let Some(serial) = journal_serial {
            // Serial arithmetic (RFC 1982): the journal's is newer unless the configured
            // one moved past it.
            if serial.wrapping_sub(zone.serial).cast_signed() > 0 {
                zone.serial = serial;
            }
        }

        // [nodes.NAME]
        let mut nodes = Vec::new();
        for (name, n) in &raw.nodes {
            let key = format!("nodes.{}", name.get_ref());
            let ipv4 = parse_addrs(ctx, n.ipv4.as_ref(), &format!("{key}.ipv4"), "IPv4")?;
            let ipv6 = parse_addrs(ctx, n.ipv6.as_ref(), &format!("{key}.ipv6"), "IPv6")?;
            if ipv4.is_empty() && ipv6.is_empty() {
                return Err(ctx.err(
                    &name.span(),
                    key,
                    ConfigProblem::NoAddress {
                        node: name.get_ref().clone(),
                    },
                ));
            }
            let weight = match &n.weight {
                Some(w) => check_weight(ctx, w, &format!("{key}.weight"))?,
                None => 1,
            };
            for (v, what, lim) in [(&n.lat, "lat", 90.0), (&n.lon, "lon", 180.0)] {
                if let Some(v) = v {
                    let x = *v.get_ref();
                    if !(-lim..=lim).contains(&x) {
                        #[expect(
                            clippy::cast_possible_truncation,
                            reason = "only shown in the message"
                        )]
                        let value = x as i64;
                        #[expect(clippy::cast_possible_truncation, reason = "90 or 180")]
                        let lim = lim as i64;
                        return Err(ctx.err(
                            &v.span(),
                            format!("{key}.{what}"),
                            ConfigProblem::OutOfRange {
                                what,
                                value,
                                min: -lim,
                                max: lim,
                            },
                        ));
                    }
                }
            }
            let bias = match &n.bias {
                Some(b) if (0.01..=100.0).contains(b.get_ref()) => *b.get_ref(),
                Some(b) => {
                    #[expect(clippy::cast_possible_truncation, reason = "only shown")]
                    let value = *b.get_ref() as i64;
                    return Err(ctx.err(
                        &b.span(),
                        format!("{key}.bias"),
                        ConfigProblem::OutOfRange {
                            what: "bias (0.01 to 100)",
                            value,
                            min: 0,
                            max: 100,
                        },
                    ));
                }
                None => 1.0,
            };
            nodes.push(NodeConfig {
                name: name.get_ref().clone(),
                ipv4,
                ipv6,
                weight,
                bias,
                check: check_target(ctx, n.check.as_ref(), &format!("{key}.check"), true)?,
                lat: n.lat.as_ref().map(|v| *v.get_ref()),
                lon: n.lon.as_ref().map(|v| *v.get_ref()),
                admin: n.admin,
                http_base: check_target(
                    ctx,
                    n.http_base.as_ref(),
                    &format!("{key}.http_base"),
                    false,
                )?,
            });
        }

        // [geoip]
        if let Some(g) = &raw.geoip {
            let k = &g.get_ref().nearest_k;
            let max = i64::try_from(MAX_ANSWER_ADDRS).unwrap_or(8);
            if !(1..=max).contains(k.get_ref()) {
                return Err(ctx.err(
                    &k.span(),
                    "geoip.nearest_k",
                    ConfigProblem::OutOfRange {
                        what: "nearest_k",
                        value: *k.get_ref(),
                        min: 1,
                        max,
                    },
                ));
            }
        }
        let geoip = match &raw.geoip {
            Some(g) => Some(geoip(ctx, g.get_ref(), &base_dir)?),
            None => None,
        };

        // [bgp]
        let bgp = match &raw.bgp {
            Some(b) => Some(bgp(ctx, b, &base_dir)?),
            None => None,
        };

        // [maps.NAME]
        let mut maps = Vec::new();
        for (mname, table) in &raw.maps {
            let mut rules: Vec<(usize, Rule)> = Vec::new();
            for (k, cands) in table {
                let key = format!("maps.{}.\"{}\"", mname.get_ref(), k.get_ref());
                let region =
                    parse_region_key(k.get_ref()).map_err(|p| ctx.err(&k.span(), &key, p))?;
                let needs = match (region, &geoip) {
                    (RegionKey::Country(_), None) => Some(("country", "country")),
                    (RegionKey::Continent(_), g)
                        if g.as_ref().is_none_or(|g| g.continent_field.is_none()) =>
                    {
                        Some(("continent", "continent_field"))
                    }
                    (RegionKey::Asn(_), g)
                        if bgp.is_none() && g.as_ref().is_none_or(|g| g.asn.is_empty()) =>
                    {
                        Some(("ASN", "asn` or `[bgp] rib"))
                    }
                    (RegionKey::Nearest, g) if g.as_ref().is_none_or(|g| g.city.is_empty()) => {
                        Some(("nearest", "city"))
                    }
                    _ => None,
                };
                if let Some((kind, needs)) = needs {
                    return Err(ctx.err(
                        &k.span(),
                        key,
                        ConfigProblem::NeedsDatabase { kind, needs },
                    ));
                }
                let line = ctx.line_col(k.span().start).0;
                if let Some((first_line, _)) = rules.iter().find(|(_, r)| r.key == region) {
                    return Err(ctx.err(
                        &k.span(),
                        key,
                        ConfigProblem::DuplicateKey {
                            key: region.to_string(),
                            first_line: *first_line,
                        },
                    ));
                }
                let candidates = candidates(ctx, cands, &nodes, &key)?;
                if region == RegionKey::Nearest {
                    let unplaced = candidates.iter().find(|c| {
                        nodes
                            .iter()
                            .find(|n| n.name == c.node)
                            .is_none_or(|n| n.lat.is_none() || n.lon.is_none())
                    });
                    if let Some(c) = unplaced {
                        return Err(ctx.err(
                            &cands.span(),
                            key,
                            ConfigProblem::NoLocation {
                                node: c.node.clone(),
                            },
                        ));
                    }
                }
                rules.push((
                    line,
                    Rule {
                        key: region,
                        candidates,
                    },
                ));
            }
            rules.sort_by_key(|(line, _)| *line);
            maps.push(Map {
                name: mname.get_ref().clone(),
                rules: rules.into_iter().map(|(_, r)| r).collect(),
            });
        }

        // [[records]]
        let mut records: Vec<Record> = Vec::new();
        let mut record_lines: Vec<usize> = Vec::new();
        for (i, r) in raw.records.iter().enumerate() {
            let key = format!("records[{i}]");
            let rr = r.get_ref();
            let name = parse_name(ctx, &rr.name, &origin, &format!("{key}.name"))?;
            if !name::in_zone(&name::to_wire(&name), &name::to_wire(&origin)) {
                return Err(ctx.err(
                    &rr.name.span(),
                    format!("{key}.name"),
                    ConfigProblem::OutsideZone {
                        name,
                        origin: origin.clone(),
                    },
                ));
            }
            let line = ctx.line_col(rr.name.span().start).0;
            if let Some(j) = records.iter().position(|x| x.name == name) {
                return Err(ctx.err(
                    &rr.name.span(),
                    format!("{key}.name"),
                    ConfigProblem::DuplicateRecord {
                        name,
                        first_line: record_lines[j],
                    },
                ));
            }
            let Some(map) = maps.iter().position(|m| m.name == *rr.map.get_ref()) else {
                return Err(ctx.err(
                    &rr.map.span(),
                    format!("{key}.map"),
                    ConfigProblem::UnknownMap {
                        map: rr.map.get_ref().clone(),
                        known: known_list(maps.iter().map(|m| m.name.as_str())),
                    },
                ));
            };
            let ttl = match &rr.ttl {
                Some(t) => check_ttl(ctx, t, &format!("{key}.ttl"))?,
                None => ttl,
            };
            let policy = rr.policy.unwrap_or(Policy::Best);
            let max_answers = match (&rr.max_answers, policy) {
                (None, _) => 1,
                (Some(m), Policy::Best) => {
                    return Err(ctx.err(
                        &m.span(),
                        format!("{key}.max_answers"),
                        ConfigProblem::MaxAnswersWithBest,
                    ));
                }
                (Some(m), Policy::Spread | Policy::Sticky) => u8::try_from(*m.get_ref())
                    .ok()
                    .filter(|n| (1..=u8::try_from(MAX_ANSWER_ADDRS).unwrap_or(u8::MAX)).contains(n))
                    .ok_or_else(|| {
                        ctx.err(
                            &m.span(),
                            format!("{key}.max_answers"),
                            ConfigProblem::OutOfRange {
                                what: "max_answers",
                                value: *m.get_ref(),
                                min: 1,
                                max: i64::try_from(MAX_ANSWER_ADDRS).unwrap_or(8),
                            },
                        )
                    })?,
            };
            if records.len() >= usize::from(u16::MAX) {
                return Err(ctx.err(
                    &r.span(),
                    key,
                    ConfigProblem::OutOfRange {
                        what: "number of records",
                        value: i64::try_from(records.len() + 1).unwrap_or(i64::MAX),
                        min: 0,
                        max: i64::from(u16::MAX) - 1,
                    },
                ));
            }
            record_lines.push(line);
            records.push(Record {
                wildcard: name.starts_with("*."),
                name,
                map,
                ttl,
                policy,
                max_answers,
            });
        }

        // [fallback]
        if let Some((name, _)) = raw.fallback.as_ref().and_then(|f| {
            f.get_ref().0.iter().find(|(n, _)| {
                n.get_ref() == "nearest" && !nodes.iter().any(|x| x.name == "nearest")
            })
        }) {
            return Err(ctx.err(
                &name.span(),
                "fallback.nearest",
                ConfigProblem::BadValue {
                    value: "nearest".to_owned(),
                    expected: "node names: `nearest` is a map key (it ranks every network a City \
                               database locates, before `default`); the fallback answers \
                               addresses in no database, which have no location",
                },
            ));
        }
        let fallback = match &raw.fallback {
            Some(f) if !f.get_ref().0.is_empty() => candidates(ctx, f, &nodes, "fallback")?,
            Some(f) => return Err(ctx.err(&f.span(), "fallback", ConfigProblem::EmptyFallback)),
            None => {
                let end = ctx.text.len();
                return Err(ctx.err(&(end..end), "fallback", ConfigProblem::EmptyFallback));
            }
        };

        let rrl = raw
            .rrl
            .as_ref()
            .map_or(Ok(Rrl::default()), |r| rrl(ctx, r.get_ref()))?;
        let guard = raw
            .guard
            .as_ref()
            .map_or(Ok(Guard::default()), |g| guard(ctx, g.get_ref()))?;

        let update = update_policy(ctx, raw.update.as_ref(), &base_dir)?;
        let fleet = raw
            .fleet
            .as_ref()
            .map_or(Ok(Fleet::default()), |f| fleet(ctx, f.get_ref()))?;
        Ok(Self {
            file: ctx.file.to_owned(),
            base_dir,
            zone,
            nodes,
            geoip,
            bgp,
            maps,
            records,
            fallback,
            rrl,
            guard,
            statics,
            update,
            fleet,
        })
        .and_then(|c| {
            zone::check_against_records(
                &c.statics,
                &c.records,
                &record_lines,
                ctx.file,
                &origin_wire,
            )?;
            Ok(c)
        })
    }

    /// Legal but suspicious things in the config.
    #[must_use]
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let used = self.fallback.iter().any(|c| c.node == n.name)
                || self.maps.iter().any(|m| {
                    m.rules
                        .iter()
                        .any(|r| r.candidates.iter().any(|c| c.node == n.name))
                });
            if !used {
                out.push(ConfigWarning::UnusedNode {
                    node: n.name.clone(),
                });
            }
        }
        let any_v4 = self.nodes.iter().any(|n| !n.ipv4.is_empty());
        let any_v6 = self.nodes.iter().any(|n| !n.ipv6.is_empty());
        let has = |c: &Candidate, v6: bool| {
            self.node(&c.node).is_some_and(|n| {
                if v6 {
                    !n.ipv6.is_empty()
                } else {
                    !n.ipv4.is_empty()
                }
            })
        };
        for (i, m) in self.maps.iter().enumerate() {
            if !self.records.iter().any(|r| r.map == i) {
                out.push(ConfigWarning::UnusedMap {
                    map: m.name.clone(),
                });
                continue;
            }
            for r in &m.rules {
                for (v6, family, any) in [(false, "IPv4", any_v4), (true, "IPv6", any_v6)] {
                    if any && !r.candidates.iter().any(|c| has(c, v6)) {
                        out.push(ConfigWarning::NoFamily {
                            map: m.name.clone(),
                            key: r.key.to_string(),
                            family,
                        });
                    }
                }
            }
        }
        for (v6, family, any) in [(false, "IPv4", any_v4), (true, "IPv6", any_v6)] {
            if any && !self.fallback.iter().any(|c| has(c, v6)) {
                out.push(ConfigWarning::FallbackNoFamily { family });
            }
        }
        for r in &self.records {
            if self.kernel_name(r).is_none() {
                let wire = name::to_wire(&r.name);
                out.push(ConfigWarning::NameTooLong {
                    name: r.name.clone(),
                    wire_len: wire.len(),
                    labels: name::label_count(&r.name),
                    max_len: MAX_NAME_WIRE_LEN,
                    max_labels: MAX_LABELS,
                });
            }
        }
        let origin = name::to_wire(&self.zone.origin);
        for ns in &self.zone.ns {
            if name::in_zone(&name::to_wire(&ns.name), &origin)
                && ns.ipv4.is_empty()
                && ns.ipv6.is_empty()
            {
                out.push(ConfigWarning::NsWithoutGlue {
                    name: ns.name.clone(),
                });
            }
        }
        out
    }

    /// The kernel's key for a record, if its name fits the kernel's limits. A wildcard
    /// is keyed by its parent, and the names it answers are one label longer.
    #[must_use]
    pub fn kernel_name(&self, record: &Record) -> Option<NameKey> {
        if record.wildcard {
            let base = record.name.strip_prefix("*.").unwrap_or(&record.name);
            let wire = name::to_wire(base);
            // The shortest query it answers adds a one-byte label.
            if wire.len() + 2 > MAX_NAME_WIRE_LEN || name::label_count(base) + 1 > MAX_LABELS {
                return None;
            }
            name::kernel_key(&wire, true)
        } else {
            name::kernel_key(&name::to_wire(&record.name), false)
        }
    }

    #[must_use]
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.node_index(name).map(|i| &self.nodes[i])
    }

    /// Index of a node in [`Config::nodes`].
    #[must_use]
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    #[must_use]
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps.iter().find(|m| m.name == name)
    }
}

fn bgp(ctx: &Ctx<'_>, b: &Spanned<RawBgp>, base_dir: &Path) -> Result<Bgp, ConfigError> {
    let raw = b.get_ref();
    let rib: Vec<PathBuf> = items(Some(&raw.rib))
        .iter()
        .map(|p| base_dir.join(p.get_ref()))
        .collect();
    if rib.is_empty() {
        return Err(ctx.err(
            &raw.rib.span(),
            "bgp.rib",
            ConfigProblem::BadValue {
                value: "[]".to_owned(),
                expected: "at least one RIB dump (MRT TABLE_DUMP_V2 file)",
            },
        ));
    }
    let only = match raw
        .as_keys
        .as_ref()
        .map(|s| (s.span(), s.get_ref().as_str()))
    {
        None | Some((_, "bgp-first")) => false,
        Some((_, "bgp-only")) => true,
        Some((span, other)) => {
            return Err(ctx.err(
                &span,
                "bgp.as_keys",
                ConfigProblem::BadValue {
                    value: other.to_owned(),
                    expected:
                        "\"bgp-first\" (the BGP origin, then the ASN database) or \"bgp-only\"",
                },
            ))
        }
    };
    Ok(Bgp { rib, only })
}

fn geoip(ctx: &Ctx<'_>, g: &RawGeoIp, base_dir: &Path) -> Result<GeoIp, ConfigError> {
    let paths = |s: Option<&Spanned<OneOrMany>>| -> Vec<PathBuf> {
        items(s)
            .iter()
            .map(|p| base_dir.join(p.get_ref()))
            .collect()
    };
    let continent_field = match &g.continent_field {
        Some(f) if f.is_empty() => None,
        Some(f) => Some(f.clone()),
        None if g.country_field == "country.iso_code" => Some("continent.code".to_owned()),
        None => None,
    };
    let mut geoip = GeoIp {
        country: paths(Some(&g.country)),
        asn: paths(g.asn.as_ref()),
        city: paths(g.city.as_ref()),
        country_field: g.country_field.clone(),
        continent_field,
        asn_field: g.asn_field.clone(),
        latitude_field: g.latitude_field.clone(),
        longitude_field: g.longitude_field.clone(),
        nearest_k: usize::try_from(*g.nearest_k.get_ref()).unwrap_or(DEFAULT_NEAREST_K),
        sha256: Vec::new(),
    };
    for (file, digest) in &g.sha256 {
        let key = format!("geoip.sha256.\"{}\"", file.get_ref());
        let path = base_dir.join(file.get_ref());
        let known: Vec<&PathBuf> = geoip
            .country
            .iter()
            .chain(&geoip.asn)
            .chain(&geoip.city)
            .collect();
        if !known.contains(&&path) {
            let known = known
                .iter()
                .map(|p| {
                    let p = p.strip_prefix(base_dir).unwrap_or(p);
                    format!("`{}`", p.display())
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ctx.err(
                &file.span(),
                &key,
                ConfigProblem::UnknownDatabase {
                    value: file.get_ref().clone(),
                    known,
                },
            ));
        }
        let bad = || {
            ctx.err(
                &digest.span(),
                &key,
                ConfigProblem::BadDigest {
                    value: digest.get_ref().clone(),
                },
            )
        };
        let hex = digest.get_ref().trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        geoip.sha256.push((path, bytes));
    }
    Ok(geoip)
}

fn fleet(ctx: &Ctx<'_>, f: &RawFleet) -> Result<Fleet, ConfigError> {
    let Some(q) = &f.quorum else {
        return Ok(Fleet::default());
    };
    let quorum = match q.get_ref() {
        toml::Value::String(s) if s == "majority" => Some(Quorum::Majority),
        toml::Value::Integer(n) => u32::try_from(*n)
            .ok()
            .filter(|n| *n >= 1)
            .map(Quorum::Boxes),
        _ => None,
    };
    let quorum = quorum.ok_or_else(|| {
        ctx.err(
            &q.span(),
            "fleet.quorum",
            ConfigProblem::BadQuorum {
                value: q.get_ref().to_string(),
            },
        )
    })?;
    Ok(Fleet { quorum })
}
