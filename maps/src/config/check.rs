//! Validation of the raw TOML: spans to file/line/key, weights, TTLs, names, region keys,
//! candidates, the `[rrl]`, `[guard]` and `[update]` sections.
#![allow(
    clippy::wildcard_imports,
    reason = "the parent's raw types and sections"
)]
use super::*;

/// Turns spans into file, line and column.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

impl Ctx<'_> {
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = self.text[..offset].matches('\n').count() + 1;
        let start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }

    pub(super) fn err(
        &self,
        span: &Range<usize>,
        key: impl Into<String>,
        problem: ConfigProblem,
    ) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            problem,
        }
    }

    pub(super) fn syntax(&self, e: &toml::de::Error) -> ConfigError {
        let start = e.span().map_or(0, |s| s.start);
        let (line, column) = self.line_col(start);
        ConfigError::Syntax {
            file: self.file.to_owned(),
            line,
            column,
            key: key_at(self.text, start),
            message: e.message().trim().to_owned(),
        }
    }
}

/// Best-effort dotted key at `offset`: the last table header before it, plus the key on
/// the offending line.
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |p| p + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |p| offset + p);
    let line = &text[line_start..line_end];
    let mut table = String::new();
    for l in text[..line_start].lines().chain(std::iter::once(line)) {
        let t = l.trim();
        if t.starts_with('[') {
            t.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .clone_into(&mut table);
        }
    }
    let t = line.trim();
    if t.starts_with('[') {
        return table;
    }
    let key = t.split('=').next().unwrap_or("").trim();
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key.to_owned(),
        (false, false) => format!("{table}.{key}"),
    }
}

pub(super) fn check_weight(ctx: &Ctx<'_>, w: &Spanned<i64>, key: &str) -> Result<u32, ConfigError> {
    u32::try_from(*w.get_ref())
        .ok()
        .filter(|w| (1..=MAX_WEIGHT).contains(w))
        .ok_or_else(|| {
            ctx.err(
                &w.span(),
                key,
                ConfigProblem::BadWeight {
                    weight: *w.get_ref(),
                    max: MAX_WEIGHT,
                },
            )
        })
}

pub(super) fn check_ttl(ctx: &Ctx<'_>, t: &Spanned<u32>, key: &str) -> Result<u32, ConfigError> {
    let v = *t.get_ref();
    if v > MAX_TTL {
        return Err(ctx.err(
            &t.span(),
            key,
            ConfigProblem::OutOfRange {
                what: "ttl",
                value: i64::from(v),
                min: 0,
                max: i64::from(MAX_TTL),
            },
        ));
    }
    Ok(v)
}

/// An integer setting in `min..=max`, or `default` when absent.
pub(super) fn ranged(
    ctx: &Ctx<'_>,
    v: Option<&Spanned<i64>>,
    what: &'static str,
    min: i64,
    max: i64,
    default: i64,
) -> Result<i64, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    let value = *v.get_ref();
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ctx.err(
            &v.span(),
            what,
            ConfigProblem::OutOfRange {
                what,
                value,
                min,
                max,
            },
        ))
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "every value is range-checked first"
)]
pub(super) fn rrl(ctx: &Ctx<'_>, r: &RawRrl) -> Result<Rrl, ConfigError> {
    let d = Rrl::default();
    let rate = ranged(
        ctx,
        r.rate.as_ref(),
        "rrl.rate",
        0,
        10_000_000,
        d.rate.into(),
    )?;
    Ok(Rrl {
        rate: rate as u32,
        // One second of answers unless set.
        burst: ranged(
            ctx,
            r.burst.as_ref(),
            "rrl.burst",
            1,
            10_000_000,
            rate.max(1),
        )? as u32,
        slip: ranged(ctx, r.slip.as_ref(), "rrl.slip", 0, 10, d.slip.into())? as u32,
        ipv4_prefix: ranged(ctx, r.ipv4_prefix.as_ref(), "rrl.ipv4_prefix", 0, 32, 24)? as u8,
        ipv6_prefix: ranged(ctx, r.ipv6_prefix.as_ref(), "rrl.ipv6_prefix", 0, 128, 56)? as u8,
        buckets: ranged(
            ctx,
            r.buckets.as_ref(),
            "rrl.buckets",
            1,
            1 << 24,
            d.buckets.into(),
        )? as u32,
    })
}

pub(super) fn guard(ctx: &Ctx<'_>, g: &RawGuard) -> Result<Guard, ConfigError> {
    let mut out = Guard::default();
    if let Some(ports) = &g.reflector_ports {
        out.reflector_ports = ports
            .iter()
            .map(|p| {
                ranged(ctx, Some(p), "guard.reflector_ports", 1, 65535, 0)
                    .map(|p| u16::try_from(p).unwrap_or(0))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(addrs) = &g.served_addresses {
        let mut list = Vec::new();
        let (mut v4, mut v6) = (0, 0);
        for a in addrs {
            let text = a.get_ref().trim();
            let ip = text.parse::<std::net::IpAddr>().map_err(|e| {
                ctx.err(
                    &a.span(),
                    "guard.served_addresses",
                    ConfigProblem::BadAddress {
                        value: text.to_owned(),
                        reason: e.to_string(),
                    },
                )
            })?;
            let n = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
            *n += 1;
            if *n > geodns_common::MAX_SERVED {
                return Err(ctx.err(
                    &a.span(),
                    "guard.served_addresses",
                    ConfigProblem::TooManyServed {
                        max: geodns_common::MAX_SERVED,
                    },
                ));
            }
            list.push(ip);
        }
        out.served_addresses = Some(list);
    }
    Ok(out)
}

pub(super) fn parse_addrs<A: std::str::FromStr>(
    ctx: &Ctx<'_>,
    list: Option<&Spanned<OneOrMany>>,
    key: &str,
    family: &'static str,
) -> Result<Vec<A>, ConfigError> {
    let mut out = Vec::new();
    for s in &items(list) {
        let text = s.get_ref().trim();
        if let Ok(a) = text.parse::<A>() {
            out.push(a);
            continue;
        }
        let problem = match text.parse::<std::net::IpAddr>() {
            Ok(_) => ConfigProblem::FamilyMismatch {
                value: text.to_owned(),
                expected: family,
            },
            Err(e) => ConfigProblem::BadAddress {
                value: text.to_owned(),
                reason: e.to_string(),
            },
        };
        return Err(ctx.err(&s.span(), key, problem));
    }
    Ok(out)
}

pub(super) fn parse_name(
    ctx: &Ctx<'_>,
    s: &Spanned<String>,
    origin: &str,
    key: &str,
) -> Result<String, ConfigError> {
    name::absolute(s.get_ref(), origin).map_err(|e| {
        ctx.err(
            &s.span(),
            key,
            ConfigProblem::BadName {
                value: s.get_ref().clone(),
                reason: e.to_string(),
            },
        )
    })
}

/// A health-check target (`http://...`, `https://...` or `host:port`) or, with
/// `host_port` false, an HTTP base URL.
pub(super) fn check_target(
    ctx: &Ctx<'_>,
    value: Option<&Spanned<String>>,
    key: &str,
    host_port: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let text = v.get_ref().trim();
    let url = ["http://", "https://"]
        .iter()
        .any(|s| text.len() > s.len() && text.to_ascii_lowercase().starts_with(s));
    let ok = url
        || (host_port
            && !text.contains("://")
            && text.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            }));
    if ok {
        Ok(Some(text.to_owned()))
    } else {
        Err(ctx.err(
            &v.span(),
            key,
            ConfigProblem::BadTarget {
                value: text.to_owned(),
                expected: if host_port {
                    "an http:// or https:// URL, or host:port"
                } else {
                    "an http:// or https:// URL"
                },
            },
        ))
    }
}

/// Parses a map key: see [`RegionKey`].
pub(super) fn parse_region_key(text: &str) -> Result<RegionKey, ConfigProblem> {
    let t = text.trim();
    let two_letters = crate::geo::letter_code;
    let bad_country = || ConfigProblem::BadCountry {
        value: t.to_owned(),
    };
    if t == "default" {
        return Ok(RegionKey::Default);
    }
    if t == "nearest" {
        return Ok(RegionKey::Nearest);
    }
    if t.contains('/') {
        return t
            .parse()
            .map(RegionKey::Cidr)
            .map_err(|source| ConfigProblem::BadCidr {
                value: t.to_owned(),
                source,
            });
    }
    if let Some(c) = t.strip_prefix("continent:") {
        return two_letters(c)
            .filter(|c| CONTINENT_CODES.iter().any(|k| k.as_bytes() == c))
            .map(RegionKey::Continent)
            .ok_or_else(|| ConfigProblem::BadContinent {
                value: t.to_owned(),
            });
    }
    if let Some(c) = t.strip_prefix("country:") {
        return two_letters(c)
            .map(RegionKey::Country)
            .ok_or_else(bad_country);
    }
    if let Some(n) = t.strip_prefix("AS").or_else(|| t.strip_prefix("as")) {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return n
                .parse()
                .map(RegionKey::Asn)
                .map_err(|_| ConfigProblem::BadAsn {
                    value: t.to_owned(),
                });
        }
    }
    if let Some(c) = two_letters(t) {
        return Ok(RegionKey::Country(c));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad_country());
    }
    Err(ConfigProblem::BadRegionKey {
        value: t.to_owned(),
    })
}

impl std::fmt::Display for RegionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = |c: &[u8; 2]| crate::geo::code_text(*c);
        match self {
            Self::Cidr(c) => write!(f, "{c}"),
            Self::Asn(n) => write!(f, "AS{n}"),
            Self::Country(c) => f.write_str(&code(c)),
            Self::Continent(c) => write!(f, "continent:{}", code(c)),
            Self::Default => f.write_str("default"),
            Self::Nearest => f.write_str("nearest"),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Best => "best",
            Self::Spread => "spread",
            Self::Sticky => "sticky",
        })
    }
}

impl serde::Serialize for RegionKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

pub(super) fn known_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none defined".to_owned()
    } else {
        v.join(", ")
    }
}

/// Resolves candidate names and weights (`key` is the dotted path of the table).
pub(super) fn candidates(
    ctx: &Ctx<'_>,
    raw: &Spanned<RawCandidates>,
    nodes: &[NodeConfig],
    key: &str,
) -> Result<Vec<Candidate>, ConfigError> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    for (name, weight) in &raw.get_ref().0 {
        let ckey = format!("{key}.{}", name.get_ref());
        let Ok(i) = nodes.binary_search_by(|n| n.name.as_str().cmp(name.get_ref())) else {
            return Err(ctx.err(
                &name.span(),
                ckey,
                ConfigProblem::UnknownNode {
                    node: name.get_ref().clone(),
                    known: known_list(nodes.iter().map(|n| n.name.as_str())),
                },
            ));
        };
        let weight = match weight {
            Some(w) => check_weight(ctx, w, &ckey)?,
            None => nodes[i].weight,
        };
        if let Some(j) = out.iter().position(|c| c.node == *name.get_ref()) {
            return Err(ctx.err(
                &name.span(),
                ckey,
                ConfigProblem::DuplicateKey {
                    key: name.get_ref().clone(),
                    first_line: lines[j],
                },
            ));
        }
        lines.push(ctx.line_col(name.span().start).0);
        out.push(Candidate::new(name.get_ref(), weight));
    }
    if out.is_empty() {
        return Err(ctx.err(&raw.span(), key, ConfigProblem::NoCandidates));
    }
    out.sort_by(|a, b| b.weight.cmp(&a.weight).then_with(|| a.node.cmp(&b.node)));
    Ok(out)
}

/// `[update]`: the keys (secret inline, or a BIND key file as `tsig-keygen` writes it).
pub(super) fn update_policy(
    ctx: &Ctx<'_>,
    raw: Option<&Spanned<RawUpdate>>,
    base_dir: &Path,
) -> Result<UpdatePolicy, ConfigError> {
    let Some(raw) = raw else {
        return Ok(UpdatePolicy::default());
    };
    let mut keys: Vec<TsigKey> = Vec::new();
    for (i, k) in raw.get_ref().keys.iter().enumerate() {
        let key = format!("update.keys[{i}]");
        let bad = |reason: String| ctx.err(&k.span(), &key, ConfigProblem::BadKey { reason });
        let raw_key = k.get_ref();
        let (file_name, file_alg, file_secret) = match &raw_key.file {
            Some(f) => {
                let path = base_dir.join(f.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                    op: "reading TSIG key file",
                    path: path.clone(),
                    source,
                })?;
                let (n, a, s) = zone::parse_key_file(&text).ok_or_else(|| {
                    bad(format!(
                        "{}: expected key \"NAME\" {{ algorithm ...; secret \"...\"; }};",
                        path.display()
                    ))
                })?;
                (Some(n), Some(a), Some(s))
            }
            None => (None, None, None),
        };
        let name = raw_key
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .or(file_name)
            .ok_or_else(|| bad("a key needs `name` (or `file`)".to_owned()))?;
        let name = name::absolute(&name, ".").map_err(|e| bad(format!("name `{name}`: {e}")))?;
        let alg = raw_key
            .algorithm
            .as_ref()
            .map(|a| a.get_ref().clone())
            .or(file_alg)
            .unwrap_or_else(|| "hmac-sha256".to_owned());
        if !alg
            .trim_end_matches('.')
            .eq_ignore_ascii_case("hmac-sha256")
        {
            return Err(bad(format!(
                "algorithm `{alg}`: only hmac-sha256 is supported"
            )));
        }
        let secret_text = raw_key
            .secret
            .as_ref()
            .map(|s| s.get_ref().clone())
            .or(file_secret)
            .ok_or_else(|| bad("a key needs `secret` (base64) or `file`".to_owned()))?;
        let secret = zone::base64(&secret_text)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("secret: not base64 (as tsig-keygen prints it)".to_owned()))?;
        let allow = match &raw_key.allow {
            Some(list) => list
                .iter()
                .map(|l| l.get_ref().to_ascii_lowercase())
                .collect(),
            None => vec!["_acme-challenge".to_owned()],
        };
        let types = match &raw_key.types {
            Some(list) => list
                .iter()
                .map(|t| {
                    zone::parse_type(t.get_ref()).ok_or_else(|| {
                        ctx.err(
                            &t.span(),
                            format!("{key}.types"),
                            ConfigProblem::BadKey {
                                reason: format!("unknown type `{}`", t.get_ref()),
                            },
                        )
                    })
                })
                .collect::<Result<Vec<u16>, _>>()?,
            None => vec![zone::TYPE_TXT],
        };
        if types
            .iter()
            .any(|t| matches!(*t, zone::TYPE_SOA | zone::TYPE_NS))
        {
            return Err(bad("SOA and NS cannot be updated".to_owned()));
        }
        if keys.iter().any(|k| k.name == name) {
            return Err(bad(format!("key `{name}` defined twice")));
        }
        keys.push(TsigKey {
            name,
            secret,
            allow,
            types,
        });
    }
    Ok(UpdatePolicy { keys })
}
