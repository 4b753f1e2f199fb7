//! The database's IPv6 aliases of its IPv4 tree (`::ffff:0:0/96`, `2001::/32`,
//! `2002::/16`): detected per database, followed exactly when every database has them,
//! and checked against the `maxminddb` crate's own `lookup` of the IPv6 address.
mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{asn_record, base_config, compile, place, Scratch};
use geodns_common::{IPV6_ALIASES, STATE_FLAG_ALIASES, STATE_FLAG_ALIAS_6TO4};
use geodns_maps::{mmdb::Writer, AddressFacts, CompileWarning, Compiled};
use maxminddb::{PathElement, Reader};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};

const COUNTRIES: [(&str, &str); 6] = [
    ("US", "NA"),
    ("CA", "NA"),
    ("DE", "EU"),
    ("FR", "EU"),
    ("JP", "AS"),
    ("BR", "SA"),
];

const MAPS: &str = r#"
[geoip]
country = "country.mmdb"
[maps.main]
"US" = ["us1"]
"DE" = ["eu1"]
"continent:EU" = ["eu2"]
"continent:NA" = ["us2"]
default = ["core1"]
[[records]]
name = "www"
map = "main"
"#;

/// What `maxminddb` says about `ip`: the facts as `Compiled::region_of` takes them.
/// `::/96` (the IPv4 subtree itself, deprecated IPv4-compatible addresses) is no alias
/// and in no database, as documented.
fn reference(r: &Reader<Vec<u8>>, ip: IpAddr) -> AddressFacts {
    if let IpAddr::V6(a) = ip {
        if u128::from(a) >> 32 == 0 {
            return AddressFacts::default();
        }
    }
    let res = r.lookup(ip).expect("lookup");
    let get = |path: &[PathElement<'_>]| res.decode_path::<String>(path).expect("decode");
    let mut f = AddressFacts::default();
    f.in_database = res.has_data();
    f.country = get(&[PathElement::Key("country"), PathElement::Key("iso_code")]);
    f.continent = get(&[PathElement::Key("continent"), PathElement::Key("code")]);
    f
}

fn v6(bits: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(bits))
}

#[test]
fn aliased_clients_are_looked_up_as_maxminddb_looks_them_up() {
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let scratch = Scratch::new("aliases");
        // Every subset of the three aliases over the seeds, all of them twice.
        let flags = if seed < 7 {
            [4, 8, 16, 12, 20, 24, 28][usize::try_from(seed).expect("seed")]
        } else {
            STATE_FLAG_ALIASES
        };
        let mut w = Writer::new(6, "Country").ipv4_aliases(flags);
        for _ in 0..300 {
            let len = rng.random_range(4..=32u8);
            let a = Ipv4Addr::from(rng.random::<u32>());
            let (cc, cont) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
            w.insert(IpAddr::V4(a), len, &place(cc, cont))
                .expect("insert");
        }
        // IPv6 networks elsewhere (2400::/8), and one just outside each alias range.
        for _ in 0..50 {
            let len = rng.random_range(16..=64u8);
            let a = (0x24u128 << 120) | (rng.random::<u128>() >> 8);
            w.insert(v6(a), len, &place("JP", "AS")).expect("insert");
        }
        w.insert(v6(0x2003_u128 << 112), 16, &place("BR", "SA"))
            .expect("insert");
        w.insert(v6(0x2001_0001_u128 << 96), 32, &place("FR", "EU"))
            .expect("insert");
        let bytes = w.to_bytes().expect("serialize");
        scratch.write("country.mmdb", &bytes);
        let reader = Reader::from_source(bytes).expect("valid database");
        let config = scratch.config(&base_config(MAPS));
        let c: Compiled = compile(&config);
        assert_eq!(
            c.aliases(),
            flags,
            "seed {seed}: the aliases the database has"
        );

        let mut probes: Vec<IpAddr> = Vec::new();
        for (flag, start, len) in IPV6_ALIASES {
            for _ in 0..300 {
                let host = rng.random::<u128>() >> len;
                probes.push(v6(start | host));
            }
            // The range's first and last address, and the neighbours outside it.
            let end = start | (u128::MAX >> len);
            probes.extend([v6(start), v6(end), v6(start - 1), v6(end + 1)]);
            let _ = flag;
        }
        for ip in probes {
            let want = c.region_of(&reference(&reader, ip));
            let got = c.lookup(ip);
            assert_eq!(
                Some(got.region),
                want,
                "seed {seed}: {ip} matched {} (maxminddb: {:?})",
                got.prefix,
                reference(&reader, ip)
            );
            // The scope is exact: maxminddb says the same at both ends of the prefix.
            let IpAddr::V6(p) = got.prefix.addr() else {
                panic!("an IPv6 client gets an IPv6 prefix");
            };
            let first = u128::from(p);
            let last = first
                | (u128::MAX
                    .checked_shr(u32::from(got.prefix.len()))
                    .unwrap_or(0));
            for end in [first, last] {
                assert_eq!(
                    c.region_of(&reference(&reader, v6(end))),
                    want,
                    "seed {seed}: {ip} scope {} is not exact at {}",
                    got.prefix,
                    v6(end)
                );
            }
            if let Some((range, v4, offset)) = c.alias_of(ip) {
                assert!(range.contains(ip));
                assert!(got.prefix.len() >= offset && got.prefix.len() <= offset + 32);
                let m4 = c.lookup(IpAddr::V4(v4));
                assert_eq!(m4.region, got.region);
                assert_eq!(m4.prefix.len() + offset, got.prefix.len());
            }
        }
    }
}

#[test]
fn an_alias_one_database_lacks_is_not_followed() {
    let scratch = Scratch::new("aliases-mixed");
    let mut country = Writer::new(6, "Country").alias_ipv4(true);
    country
        .insert("192.0.2.0".parse().expect("ip"), 24, &place("DE", "EU"))
        .expect("insert");
    scratch.write("country.mmdb", &country.to_bytes().expect("serialize"));
    // The ASN database aliases only 6to4.
    let mut asn = Writer::new(6, "ASN").ipv4_aliases(STATE_FLAG_ALIAS_6TO4);
    asn.insert("192.0.2.0".parse().expect("ip"), 24, &asn_record(64_500))
        .expect("insert");
    scratch.write("asn.mmdb", &asn.to_bytes().expect("serialize"));
    let config = scratch.config(&base_config(&MAPS.replace(
        "country = \"country.mmdb\"",
        "country = \"country.mmdb\"\nasn = \"asn.mmdb\"",
    )));
    let c = compile(&config);
    assert_eq!(c.aliases(), STATE_FLAG_ALIAS_6TO4);
    let off: Vec<String> = c
        .warnings()
        .iter()
        .filter_map(|w| match w {
            CompileWarning::AliasOff { range, .. } => Some(range.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        off,
        ["::ffff:0.0.0.0/96", "2001::/32"],
        "{:?}",
        c.warnings()
    );
    let de = c.lookup("192.0.2.1".parse().expect("ip")).region;
    assert_ne!(de, 0);
    assert_eq!(c.lookup("2002:c000:201::".parse().expect("ip")).region, de);
    assert_eq!(c.lookup("::ffff:192.0.2.1".parse().expect("ip")).region, 0);
    assert_eq!(c.lookup("2001:0:c000:201::".parse().expect("ip")).region, 0);

    // A config CIDR key inside an alias range switches that alias off too.
    let config = scratch.config(&base_config(&MAPS.replace(
        "\"US\" = [\"us1\"]",
        "\"US\" = [\"us1\"]\n\"2002:c000:200::/40\" = [\"eu1\"]",
    )));
    let c = compile(&config);
    assert_eq!(c.aliases(), STATE_FLAG_ALIASES & !STATE_FLAG_ALIAS_6TO4);
    let k = c.lookup("2002:c000:201::".parse().expect("ip"));
    let key = c
        .choice(k.region, 0)
        .map(|i| config.maps[0].rules[i].key.to_string());
    assert_eq!(
        key.as_deref(),
        Some("2002:c000:200::/40"),
        "the CIDR key wins"
    );
    assert_eq!(k.prefix.to_string(), "2002:c000:200::/40");
}
